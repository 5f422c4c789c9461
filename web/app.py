"""The aiohttp application: the middlewares and the routes, on the services built by `web.__main__`.

Why aiohttp: the project already depends on it (the emulator, the worker's Discord client), it serves
server-sent events and static files itself, and its test server runs in the tests' event loop; Starlette or FastAPI
would add a framework, an ASGI server and a form parser for the same pages.
"""

from __future__ import annotations

import aiohttp
import redis
import redis.asyncio as aredis
from aiohttp import web

import quotas
from core.models import ModelRegistry
from core.settings import AdminSettings
from web import pages
from web.actions import Deps
from web.base import HERE, MAX_BODY_BYTES, MAX_LINE_BYTES, SERVICES, Services, guard, sessions, templates
from web.oauth import DiscordOAuth
from web.session import Cookies
from web.settings import WebSettings

SHUTDOWN_TIMEOUT_S = 5.0
"""On shutdown, how long open requests (a page's progress stream) may run before they are cancelled."""


def make_runner(services: Services) -> web.AppRunner:
    """The runner of the application on `services` (set it up, then start a site on it)."""
    return web.AppRunner(make_app(services), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)


def make_app(services: Services) -> web.Application:
    """The application with every route; `services` is what its handlers use."""
    app = web.Application(middlewares=[guard, sessions], client_max_size=MAX_BODY_BYTES,
                          handler_args={"max_line_size": MAX_LINE_BYTES})
    app[SERVICES] = services
    pages.add_routes(app.router)
    app.router.add_static("/static", HERE / "static")
    return app


REDIS_TIMEOUT_S = 5.0
"""A command of the sync client (the routes' threads: admission, enqueue, dashboard) that Redis does not answer
within this fails with 503 "try again", and an admission's reservation is released (`web.actions`), instead of
holding a thread of the pool for as long as Redis hangs."""


def build_services(
    settings: WebSettings, *, redis_url: str, api_base: str, registry: ModelRegistry, tiers: quotas.TiersConfig,
    admins: AdminSettings, http: aiohttp.ClientSession,
) -> Services:
    """The services of one web process: both Redis clients on `redis_url` (settings in the URL, such as
    `?socket_timeout=1`, win over `REDIS_TIMEOUT_S`), the cookies' signer, the OAuth2 client (Discord's REST API at
    `api_base`)."""
    return Services(
        settings=settings,
        aconn=aredis.Redis.from_url(redis_url),
        deps=Deps(redis.Redis.from_url(redis_url, socket_connect_timeout=REDIS_TIMEOUT_S,
                                       socket_timeout=REDIS_TIMEOUT_S), tiers, registry),
        cookies=Cookies(settings.session_secret.get_secret_value(), max_age_s=settings.session_max_age_s,
                        secure=settings.secure_cookies),
        oauth=DiscordOAuth(settings, api_base.rstrip("/"), http),
        admins=admins,
        templates=templates(),
    )


async def close_services(services: Services) -> None:
    await services.aconn.aclose()
    services.conn.close()
