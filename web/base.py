"""What every route shares: the services the app is handed, its middlewares, and how pages and errors answer.

Middlewares, outermost first: `guard` (an oversized query string is refused with 414; a member-facing error
becomes a page or JSON with its status; anything else is logged and answered 500; a `Server-Timing` header gives
the server's time on the request, which `python -m bench gallery` reads), then `sessions` (reads the
signed session cookie; a state-changing request needs a session, the CSRF token and, when sent, our Origin).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import redis
import redis.asyncio as aredis
from aiohttp import web

from core import metrics
from core.errors import (
    Banned,
    ImagineError,
    JobExpired,
    NotYourJob,
    PromptBlocked,
    QuotaExceeded,
    RateLimited,
    RepostRefused,
    Suspended,
    TierLimit,
    TooManyJobs,
)
from core.settings import AdminSettings
from web.actions import Deps
from web.oauth import DiscordOAuth
from web.session import CSRF_FIELD, Cookies, Session, csrf_ok
from web.settings import WebSettings

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent

MAX_QUERY_CHARS = 2048
"""Longest query string served; a longer one is refused with 414 (no filter needs more)."""

MAX_LINE_BYTES = 16 * 1024
"""aiohttp's own limit on the request line: above MAX_QUERY_CHARS, so that the 414 is ours and says why."""

MAX_BODY_BYTES = 4 * 1024 * 1024
"""Largest request body (a Vary (Region) mask is at most `web.region.MAX_MASK_BYTES`, base64 in a form)."""

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

STATUS_OF: tuple[tuple[type[ImagineError], int], ...] = (
    (RateLimited, 429), (TooManyJobs, 429), (QuotaExceeded, 429),
    (Banned, 403), (Suspended, 403), (TierLimit, 403), (PromptBlocked, 403), (RepostRefused, 403),
    (JobExpired, 404), (NotYourJob, 404),
)
"""HTTP status of each member-facing error; any other `ImagineError` (a bad prompt, a bad mask) is 400."""


@dataclass(frozen=True)
class Services:
    """What the routes use, built once at the entry point (`web.__main__`) and handed in."""

    settings: WebSettings
    aconn: aredis.Redis  # the member pages' reads and the progress events
    deps: Deps  # the subsystems' synchronous APIs (admission, enqueue, dashboard), run in threads
    cookies: Cookies
    oauth: DiscordOAuth
    admins: AdminSettings
    templates: jinja2.Environment

    @property
    def conn(self) -> redis.Redis:
        return self.deps.conn

    def is_admin(self, session: Session | None) -> bool:
        return session is not None and session.is_admin(self.admins)


SERVICES = web.AppKey("services", Services)
SESSION: web.RequestKey[Session | None] = web.RequestKey("session")
"""`request[SESSION]`: the signed-in member, or None."""


def templates() -> jinja2.Environment:
    """The Jinja2 templates beside this package (HTML autoescaped)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["when"] = lambda unix: datetime.fromtimestamp(float(unix), UTC).strftime("%Y-%m-%d %H:%M UTC")
    return env


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    if len(request.query_string) > MAX_QUERY_CHARS:
        log.warning("refused %s %s: query string of %d characters", request.method, request.path,
                    len(request.query_string))
        return web.Response(status=414, text="The query string is too long.")
    started = time.perf_counter()
    try:
        response = await handler(request)
    except web.HTTPException:
        raise
    except ImagineError as exc:
        status = next((code for kind, code in STATUS_OF if isinstance(exc, kind)), 400)
        refusal = metrics.refusal_command(exc, via="web")
        if refusal is not None:
            await _count(request, refusal)
        return answer(request, str(exc) or type(exc).__name__, status)
    except redis.RedisError as exc:
        log.warning("%s %s: Redis unreachable (%s)", request.method, request.path, type(exc).__name__)
        return answer(request, "The queue is unreachable right now: try again in a moment.", 503)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return answer(request, "Something went wrong on our side.", 500)
    if not response.prepared:  # a stream (progress events) has sent its headers already
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
    return response


@web.middleware
async def sessions(request: web.Request, handler: Handler) -> web.StreamResponse:
    services = request.app[SERVICES]
    session = services.cookies.read_session(request)
    request[SESSION] = session
    if request.method not in SAFE_METHODS:
        if session is None:
            log.warning("refused %s %s: not signed in", request.method, request.path)
            return answer(request, "Sign in first.", 401)
        origin = request.headers.get("Origin")
        if origin is not None and origin != services.settings.origin:
            log.warning("refused %s %s: cross-site Origin", request.method, request.path)
            return answer(request, "Cross-site request refused.", 403)
        form = await request.post() if request.content_type in _FORMS else {}
        value = form.get(CSRF_FIELD)
        if not csrf_ok(request, session, value if isinstance(value, str) else None):
            log.warning("refused %s %s from member %s: missing or wrong CSRF token", request.method, request.path,
                        session.user)
            return answer(request, "This form has expired: reload the page and try again.", 403)
    return await handler(request)


_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


def wants_json(request: web.Request) -> bool:
    return "application/json" in request.headers.get("Accept", "") or request.path == "/metrics"


def answer(request: web.Request, message: str, status: int) -> web.Response:
    """An error as JSON (for the page's scripts) or as a page."""
    if wants_json(request):
        return web.json_response({"error": message}, status=status)
    return render(request, "error.html", {"message": message, "status": status}, status=status)


def render(request: web.Request, name: str, context: dict[str, Any], *, status: int = 200) -> web.Response:
    """A template with the signed-in member, their admin rights and CSRF token in its context."""
    services = request.app[SERVICES]
    session: Session | None = request.get(SESSION)
    body = services.templates.get_template(name).render(
        session=session, admin=services.is_admin(session), csrf=session.csrf if session else "", **context)
    return web.Response(text=body, status=status, content_type="text/html", headers=PAGE_HEADERS)


PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
"""Every page: scripts, styles and images from this app only (no inline script runs), never framed."""


async def _count(request: web.Request, command: tuple[str, ...]) -> None:
    try:
        await request.app[SERVICES].aconn.execute_command(*command)
    except redis.RedisError as exc:
        log.warning("refusal not counted in the metrics (%s)", type(exc).__name__)
