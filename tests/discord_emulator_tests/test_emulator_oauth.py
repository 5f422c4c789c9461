"""The emulator's OAuth2 authorization code flow (with PKCE), as a web app's "Sign in with Discord" uses it."""

from __future__ import annotations

import secrets
from urllib.parse import parse_qs, urlsplit

import aiohttp

from discord_emulator import DiscordEmulator
from discord_emulator.oauth import s256
from discord_emulator.openapi import load_checker

REDIRECT = "http://127.0.0.1:1/auth/callback"


async def authorize(emu: DiscordEmulator, client: aiohttp.ClientSession, user_id: str, challenge: str) -> str:
    """Consent as `user_id`; the code the redirect carries (and the state comes back unchanged)."""
    query = {"response_type": "code", "client_id": emu.state.application_id, "scope": "identify guilds",
             "redirect_uri": REDIRECT, "state": "s1", "code_challenge": challenge, "code_challenge_method": "S256"}
    async with client.get(emu.url + "/oauth2/authorize", params=query) as response:
        assert response.status == 200 and "Authorize as" in await response.text()
    async with client.post(emu.url + "/oauth2/authorize", data={**query, "user_id": user_id},
                           allow_redirects=False) as response:
        location = urlsplit(response.headers["Location"])
    params = parse_qs(location.query)
    assert location.path == "/auth/callback" and params["state"] == ["s1"]
    return params["code"][0]


async def exchange(emu: DiscordEmulator, client: aiohttp.ClientSession, code: str, verifier: str,
                   secret: str | None = None) -> tuple[int, dict]:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier,
            "client_id": emu.state.application_id, "client_secret": secret or emu.state.oauth.client_secret}
    async with client.post(emu.api_base + "/oauth2/token", data=form) as response:
        return response.status, await response.json()


async def test_code_flow_with_pkce_gives_the_member_and_their_guild(discord_emulator: DiscordEmulator) -> None:
    """A code exchanged with its PKCE verifier gives a Bearer token that reads the member and their guild with
    their permissions; the answers match Discord's OpenAPI schemas."""
    emu = discord_emulator
    ann = emu.add_user("ann", permissions=1 << 5)
    verifier = secrets.token_urlsafe(48)
    async with aiohttp.ClientSession() as client:
        code = await authorize(emu, client, ann.id, s256(verifier))
        status, token = await exchange(emu, client, code, verifier)
        assert status == 200 and token["token_type"] == "Bearer" and token["scope"] == "identify guilds"
        bearer = {"Authorization": f"Bearer {token['access_token']}"}
        async with client.get(emu.api_base + "/users/@me", headers=bearer) as response:
            assert (await response.json())["id"] == ann.id
        async with client.get(emu.api_base + "/users/@me/guilds", headers=bearer) as response:
            (guild,) = await response.json()
        async with client.get(f"{emu.api_base}/users/@me/guilds/{emu.state.guild_id}/member",
                              headers=bearer) as response:
            assert response.status == 403  # guilds.members.read was not asked for
    assert guild["id"] == emu.state.guild_id and int(guild["permissions"]) & (1 << 5)
    checker = load_checker()
    if checker is not None:
        user_calls = [r for r in emu.state.requests if r.path.startswith("/users/@me") and r.status == 200]
        assert len(user_calls) == 2 and [str(v) for v in checker.check_all(user_calls)] == []


async def test_bad_verifier_reused_code_and_bad_secret_are_refused(discord_emulator: DiscordEmulator) -> None:
    """A wrong PKCE verifier is `invalid_grant` and spends the code (its reuse is refused too); a wrong client secret
    is `invalid_client`; a request without a token reads nothing."""
    emu = discord_emulator
    ann = emu.add_user("ann")
    verifier = secrets.token_urlsafe(48)
    async with aiohttp.ClientSession() as client:
        code = await authorize(emu, client, ann.id, s256(verifier))
        assert await exchange(emu, client, code, "not-the-verifier") == (400, {"error": "invalid_grant"})
        assert await exchange(emu, client, code, verifier) == (400, {"error": "invalid_grant"})
        fresh = await authorize(emu, client, ann.id, s256(verifier))
        assert (await exchange(emu, client, fresh, verifier, secret="wrong"))[0] == 401
        async with client.get(emu.api_base + "/users/@me/guilds") as response:
            assert response.status == 401
