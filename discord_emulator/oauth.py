"""Discord's OAuth2 authorization code flow, for a web app's "Sign in with Discord" (with PKCE).

- `GET /oauth2/authorize?response_type=code&client_id=&redirect_uri=&scope=&state=&code_challenge=
  &code_challenge_method=S256`: Discord's consent screen. Here: one "Authorize as <name>" button per guild member
  (the emulator has no login), and a "Cancel" that redirects with `error=access_denied` as Discord does.
- `POST /oauth2/authorize`: the button; redirects to `redirect_uri?code=...&state=...`.
- `POST /api/v10/oauth2/token` (form: `grant_type=authorization_code`, `code`, `redirect_uri`, `code_verifier`; the
  client id and secret in the form or as HTTP Basic): `{"access_token", "token_type": "Bearer", "expires_in",
  "refresh_token", "scope"}`; `400 {"error": "invalid_grant"}` for a code that is unknown, used, expired, issued to
  another redirect URI, or whose PKCE verifier does not match; `401 {"error": "invalid_client"}` for a bad secret.
- With `Authorization: Bearer <access token>`: `GET /api/v10/users/@me` (scope `identify`),
  `GET /api/v10/users/@me/guilds` (scope `guilds`; `MyGuildResponse` objects with the member's `permissions`), and
  `GET /api/v10/users/@me/guilds/{guild}/member` (scope `guilds.members.read`: the member with their role ids).

A code is single-use and lives CODE_TTL_S, as Discord's. The client id is the application id; the client secret is
`State.oauth.client_secret`.
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
import time
from urllib.parse import urlencode

from aiohttp import BasicAuth, web

import discord_emulator.payloads as payloads
from discord_emulator.rest import DiscordError, json_response
from discord_emulator.state import Code, OAuthStore, State, Token

CODE_TTL_S = 10 * 60
"""Seconds an authorization code can be exchanged (Discord: 10 minutes)."""

TOKEN_TTL_S = 7 * 24 * 3600
"""Seconds an access token is valid (Discord: a week)."""

SCOPES = frozenset({"identify", "guilds", "guilds.members.read", "email"})
"""Scopes the emulator grants; any other in a request is refused with `invalid_scope`."""


def s256(verifier: str) -> str:
    """PKCE's S256 challenge of a verifier (RFC 7636: base64url of its SHA-256, unpadded)."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


class OAuthRoutes:
    """The consent screen, the token endpoint and the Bearer-authenticated user routes."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.store: OAuthStore = state.oauth

    def add_to(self, router: web.UrlDispatcher, api_prefix: str) -> None:
        router.add_get("/oauth2/authorize", self.consent)
        router.add_post("/oauth2/authorize", self.authorize)
        router.add_post(f"{api_prefix}/oauth2/token", self.token)
        router.add_get(f"{api_prefix}/users/@me/guilds", self.my_guilds)
        router.add_get(f"{api_prefix}/users/@me/guilds/{{guild}}/member", self.my_member)

    # -- the browser's side -------------------------------------------------------------------------------------

    async def consent(self, request: web.Request) -> web.Response:
        query = request.query
        problem = self._check_request(query.get("response_type", ""), query.get("client_id", ""),
                                      query.get("scope", ""), query.get("code_challenge_method", "S256"))
        if problem or not query.get("redirect_uri"):
            return web.Response(status=400, text=f"Invalid OAuth2 request: {problem or 'redirect_uri is missing'}")
        hidden = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                         for k, v in query.items())
        people = [m.user for m in self.state.members.values() if not m.user.bot]
        buttons = "".join(f'<button name="user_id" value="{u.id}">Authorize as {html.escape(u.username)}</button>'
                          for u in people)
        body = (f"<!doctype html><title>Discord</title><h1>{html.escape(self.state.guild_name)} wants to access "
                f"your account</h1><p>Scopes: {html.escape(query.get('scope', ''))}</p>"
                f'<form method="post" action="/oauth2/authorize">{hidden}{buttons}'
                f'<button name="user_id" value="">Cancel</button></form>')
        return web.Response(text=body, content_type="text/html")

    async def authorize(self, request: web.Request) -> web.Response:
        form = await request.post()
        redirect_uri, state = str(form.get("redirect_uri", "")), str(form.get("state", ""))
        user_id = str(form.get("user_id", ""))
        if not redirect_uri:
            return web.Response(status=400, text="redirect_uri is missing")
        if not user_id:
            raise web.HTTPFound(_with_query(redirect_uri, {"error": "access_denied", "state": state}))
        if user_id not in self.state.members:
            return web.Response(status=400, text="unknown user")
        code = secrets.token_urlsafe(24)
        self.store.codes[code] = Code(user_id, redirect_uri, tuple(str(form.get("scope", "")).split()),
                                      str(form.get("code_challenge", "")), time.time())
        raise web.HTTPFound(_with_query(redirect_uri, {"code": code, "state": state}))

    # -- the web app's server side ------------------------------------------------------------------------------

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        client_id, secret = str(form.get("client_id", "")), str(form.get("client_secret", ""))
        if "Authorization" in request.headers:
            try:
                basic = BasicAuth.decode(request.headers["Authorization"])
                client_id, secret = basic.login, basic.password
            except ValueError:
                return json_response({"error": "invalid_client"}, 401)
        if client_id != self.state.application_id or not secrets.compare_digest(secret, self.store.client_secret):
            return json_response({"error": "invalid_client"}, 401)
        if form.get("grant_type") != "authorization_code":
            return json_response({"error": "unsupported_grant_type"}, 400)
        code = self.store.codes.pop(str(form.get("code", "")), None)  # single use, whatever follows
        verifier = str(form.get("code_verifier", ""))
        if (code is None or time.time() - code.issued_at > CODE_TTL_S
                or code.redirect_uri != form.get("redirect_uri")
                or (code.challenge and not secrets.compare_digest(s256(verifier), code.challenge))):
            return json_response({"error": "invalid_grant"}, 400)
        access = secrets.token_urlsafe(30)
        self.store.tokens[access] = Token(code.user_id, code.scopes, time.time() + TOKEN_TTL_S)
        return json_response({"access_token": access, "token_type": "Bearer", "expires_in": TOKEN_TTL_S,
                              "refresh_token": secrets.token_urlsafe(30), "scope": " ".join(code.scopes)})

    def bearer_user(self, request: web.Request, scope: str) -> str:
        """The user a Bearer token was issued to, when it carries `scope`.

        Raises:
            DiscordError: 401 for a missing, unknown or expired token; 403 for one without the scope.
        """
        header = request.headers.get("Authorization", "")
        token = self.store.tokens.get(header.removeprefix("Bearer ")) if header.startswith("Bearer ") else None
        if token is None or token.expires_at < time.time():
            raise DiscordError(401, 0, "401: Unauthorized")
        if scope not in token.scopes:
            raise DiscordError(403, 50001, "Missing Access")
        return token.user_id

    async def me(self, request: web.Request) -> web.Response:
        return json_response(payloads.me(self.state.users[self.bearer_user(request, "identify")]))

    async def my_guilds(self, request: web.Request) -> web.Response:
        user_id = self.bearer_user(request, "guilds")
        if user_id not in self.state.members:
            return json_response([])
        return json_response([{
            "id": self.state.guild_id, "name": self.state.guild_name, "icon": None, "banner": None,
            "owner": user_id == self.state.owner.id, "permissions": str(self.state.permissions(user_id)),
            "features": [],
        }])

    async def my_member(self, request: web.Request) -> web.Response:
        user_id = self.bearer_user(request, "guilds.members.read")
        member = self.state.members.get(user_id)
        if request.match_info["guild"] != self.state.guild_id or member is None:
            raise DiscordError(404, 10004, "Unknown Guild")
        return json_response(payloads.member(member))

    def _check_request(self, response_type: str, client_id: str, scope: str, method: str) -> str:
        if response_type != "code":
            return "response_type must be code"
        if client_id != self.state.application_id:
            return "unknown client_id"
        unknown = set(scope.split()) - SCOPES
        if unknown or not scope:
            return f"invalid scope {' '.join(sorted(unknown))}"
        if method != "S256":
            return "code_challenge_method must be S256"
        return ""


def _with_query(url: str, params: dict[str, str]) -> str:
    return url + ("&" if "?" in url else "?") + urlencode(params)
