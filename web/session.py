"""Who is signed in: a signed (itsdangerous), HttpOnly, SameSite=Lax session cookie, and its CSRF token.

The cookie holds the member's Discord id and name, the server they use the app in, their role ids there, whether
Discord said they have Manage Server there, and a random CSRF token; nothing secret (no access token). Its signature
and age are checked on every request; a forged or expired one is treated as no session (and logged, without the
cookie's value). Every state-changing request carries the CSRF token (a form field or the `X-CSRF-Token` header) and,
when the browser sends one, an Origin of this app's own.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import asdict, dataclass

from aiohttp import web
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from core.settings import AdminSettings

log = logging.getLogger(__name__)

COOKIE = "imagine_session"
"""The session cookie's name."""

OAUTH_COOKIE = "imagine_oauth"
"""The cookie holding a sign-in in progress: its `state`, PKCE verifier and where to go after (10 minutes)."""

OAUTH_MAX_AGE_S = 10 * 60
"""How long a sign-in may take between leaving for Discord and coming back."""

CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"

MANAGE_GUILD = 1 << 5
ADMINISTRATOR = 1 << 3
"""Discord permission bits: Manage Server, and Administrator (which implies it)."""


@dataclass(frozen=True)
class Session:
    """A signed-in member."""

    user: str  # Discord user id
    name: str  # their username, for the page header
    guild: str  # the server they use the app in
    roles: tuple[str, ...]  # their role ids there
    manage_guild: bool  # Manage Server (or Administrator) there, as Discord said at sign-in
    csrf: str  # the token every state-changing request must carry

    @property
    def owner(self) -> str:
        """The owner string of their jobs (as the bot writes it)."""
        return f"discord:{self.user}"

    def is_admin(self, admins: AdminSettings) -> bool:
        """Manage Server, or one of the bot's configured admin users or roles (the bot's own rule)."""
        return self.manage_guild or self.user in admins.users() or bool(admins.roles() & set(self.roles))


def has_manage_guild(permissions: str | int) -> bool:
    """Whether a permissions bit set (Discord sends it as a decimal string) includes Manage Server."""
    try:
        bits = int(permissions)
    except (TypeError, ValueError):
        return False
    return bool(bits & (MANAGE_GUILD | ADMINISTRATOR))


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


class Cookies:
    """Signs and checks this app's cookies."""

    def __init__(self, secret: str, *, max_age_s: int, secure: bool) -> None:
        self._session = URLSafeTimedSerializer(secret, salt="imagine-web-session")
        self._oauth = URLSafeTimedSerializer(secret, salt="imagine-web-oauth")
        self.max_age_s = max_age_s
        self.secure = secure

    def set_session(self, response: web.StreamResponse, session: Session) -> None:
        value = self._session.dumps({**asdict(session), "roles": list(session.roles)})
        response.set_cookie(COOKIE, value, max_age=self.max_age_s, httponly=True, samesite="Lax",
                            secure=self.secure, path="/")

    def read_session(self, request: web.Request) -> Session | None:
        """The request's session; None when it has none, or a forged, tampered or expired one (logged)."""
        value = request.cookies.get(COOKIE)
        if not value:
            return None
        try:
            data = self._session.loads(value, max_age=self.max_age_s)
            return Session(str(data["user"]), str(data["name"]), str(data["guild"]),
                           tuple(str(r) for r in data["roles"]), bool(data["manage_guild"]), str(data["csrf"]))
        except SignatureExpired:
            return None
        except (BadSignature, KeyError, TypeError, ValueError):
            log.warning("refused a session cookie that does not verify (%d characters) from %s",
                        len(value), request.remote)
            return None

    def set_oauth(self, response: web.StreamResponse, state: str, verifier: str, next_path: str) -> None:
        value = self._oauth.dumps({"state": state, "verifier": verifier, "next": next_path})
        response.set_cookie(OAUTH_COOKIE, value, max_age=OAUTH_MAX_AGE_S, httponly=True, samesite="Lax",
                            secure=self.secure, path="/auth")

    def read_oauth(self, request: web.Request) -> dict[str, str] | None:
        value = request.cookies.get(OAUTH_COOKIE)
        if not value:
            return None
        try:
            data = self._oauth.loads(value, max_age=OAUTH_MAX_AGE_S)
            return {k: str(data[k]) for k in ("state", "verifier", "next")}
        except (BadSignature, KeyError, TypeError):
            log.warning("refused a sign-in cookie that does not verify, from %s", request.remote)
            return None

    @staticmethod
    def clear(response: web.StreamResponse) -> None:
        response.del_cookie(COOKIE, path="/")
        response.del_cookie(OAUTH_COOKIE, path="/auth")


def csrf_ok(request: web.Request, session: Session, form_value: str | None) -> bool:
    """Whether a state-changing request carries the session's CSRF token."""
    given = request.headers.get(CSRF_HEADER) or form_value or ""
    return secrets.compare_digest(given.encode(), session.csrf.encode())


def safe_next(path: str) -> str:
    """A path on this app to go to after signing in; anything else (another site, `//evil`) goes home."""
    if path.startswith("/") and not path.startswith("//") and "\\" not in path:
        return path
    return "/"
