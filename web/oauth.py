"""Sign in with Discord: OAuth2's authorization code flow with `state` and PKCE (S256), scopes `identify guilds
guilds.members.read`; then logout.

    GET  /login            -> Discord's consent screen, with a fresh state and code challenge (kept in a signed cookie)
    GET  /auth/callback    <- Discord, with `code` and `state`: the state is checked, the code exchanged (with the
                              verifier), the member's servers and roles read, the session cookie set
    POST /logout           the session cookie is cleared (CSRF-checked like every POST)

Tokens are used once, at sign-in, and never stored or logged.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from web.session import Cookies, Session, has_manage_guild, new_csrf, safe_next
from web.settings import WebSettings

log = logging.getLogger(__name__)

SCOPES = "identify guilds guilds.members.read"
"""Who they are, which servers they are in (with their permissions there), their roles in ours (for tiers)."""

DISCORD_TIMEOUT_S = 10.0
"""Longest wait for one call to Discord during sign-in."""


class SignInFailed(Exception):
    """Discord did not confirm who the member is; the message is safe to show and to log (no token in it)."""


@dataclass(frozen=True)
class DiscordOAuth:
    """The OAuth2 client: where Discord is and who this app is."""

    settings: WebSettings
    api_base: str  # Discord's REST API base (`DISCORD_API_BASE`)
    http: aiohttp.ClientSession

    def authorize_url(self, state: str, verifier: str) -> str:
        query = {"response_type": "code", "client_id": self.settings.discord_client_id, "scope": SCOPES,
                 "redirect_uri": self.settings.redirect_uri, "state": state,
                 "code_challenge": challenge(verifier), "code_challenge_method": "S256"}
        return f"{self.settings.discord_authorize_url}?{urlencode(query)}"

    async def member(self, code: str, verifier: str) -> Session:
        """Exchange the code and read the member's identity, servers and roles.

        Raises:
            SignInFailed: Discord refused the code, or the member is in none of `WEB_GUILD_IDS`.
        """
        token = await self._token(code, verifier)
        headers = {"Authorization": f"Bearer {token}"}
        me = await self._get("/users/@me", headers)
        guilds = await self._get("/users/@me/guilds", headers)
        ours = [g for g in guilds if isinstance(g, dict) and str(g.get("id")) in self.settings.guilds()]
        if not ours:
            raise SignInFailed("You are not a member of a server this app serves.")
        guild = ours[0]
        member = await self._get(f"/users/@me/guilds/{guild['id']}/member", headers)
        manage = bool(guild.get("owner")) or has_manage_guild(guild.get("permissions", "0"))
        return Session(str(me["id"]), str(me.get("global_name") or me.get("username") or me["id"]),
                       str(guild["id"]), tuple(str(r) for r in member.get("roles", [])), manage, new_csrf())

    async def _token(self, code: str, verifier: str) -> str:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.settings.redirect_uri,
                "code_verifier": verifier}
        auth = aiohttp.encode_basic_auth(self.settings.discord_client_id,
                                         self.settings.discord_client_secret.get_secret_value())
        async with self.http.post(f"{self.api_base}/oauth2/token", data=form, headers={"Authorization": auth},
                                  timeout=aiohttp.ClientTimeout(total=DISCORD_TIMEOUT_S)) as response:
            body = await response.json(content_type=None)
            if response.status != 200 or not isinstance(body, dict) or "access_token" not in body:
                error = body.get("error", "?") if isinstance(body, dict) else "?"
                raise SignInFailed(f"Discord refused the sign-in code (HTTP {response.status}, {error}).")
            return str(body["access_token"])

    async def _get(self, path: str, headers: dict[str, str]) -> Any:
        async with self.http.get(self.api_base + path, headers=headers,
                                 timeout=aiohttp.ClientTimeout(total=DISCORD_TIMEOUT_S)) as response:
            if response.status != 200:
                raise SignInFailed(f"Discord answered HTTP {response.status} to GET {path}.")
            return await response.json()


def challenge(verifier: str) -> str:
    """PKCE's S256 code challenge (RFC 7636)."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


async def login(request: web.Request, oauth: DiscordOAuth, cookies: Cookies) -> web.StreamResponse:
    """Leave for Discord's consent screen, remembering a fresh state and verifier in a signed cookie."""
    state, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(48)
    response = redirect(oauth.authorize_url(state, verifier))
    cookies.set_oauth(response, state, verifier, safe_next(request.query.get("next", "/")))
    return response


async def callback(request: web.Request, oauth: DiscordOAuth, cookies: Cookies) -> web.StreamResponse:
    """Back from Discord: check the state, exchange the code, set the session.

    Raises:
        web.HTTPBadRequest: the state does not match the sign-in this browser started (or there is none), or
            Discord sent an error instead of a code.
        web.HTTPForbidden: Discord refused the code, or the member is not in one of our servers.
    """
    pending = cookies.read_oauth(request)
    state, code = request.query.get("state", ""), request.query.get("code", "")
    if pending is None or not state or not secrets.compare_digest(state.encode(), pending["state"].encode()):
        log.warning("sign-in refused: OAuth2 state mismatch, from %s", request.remote)
        raise web.HTTPBadRequest(text="This sign-in was not started here, or it took too long: sign in again.")
    if not code:
        raise web.HTTPBadRequest(text=f"Discord did not sign you in ({request.query.get('error', 'no code')[:40]}).")
    try:
        session = await oauth.member(code, pending["verifier"])
    except SignInFailed as exc:
        log.warning("sign-in refused: %s", exc)
        raise web.HTTPForbidden(text=str(exc)) from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("sign-in failed: Discord unreachable (%s)", type(exc).__name__)
        raise web.HTTPBadGateway(text="Discord could not be reached: try again.") from None
    response = redirect(pending["next"])
    Cookies.clear(response)
    cookies.set_session(response, session)
    log.info("member %s signed in (server %s%s)", session.user, session.guild, ", Manage Server" if
             session.manage_guild else "")
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    response = redirect("/")
    Cookies.clear(response)
    return response


def redirect(location: str) -> web.Response:
    """A 302 that carries cookies (a raised `HTTPFound` would be answered without the ones set on it)."""
    return web.Response(status=302, headers={"Location": location})
