"""Fixtures of the web app's tests: the app and the emulator on free ports, and members signed in through OAuth2."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
import redis

from discord_emulator import User
from tests.web.site import Site


@pytest.fixture
async def site(redis_conn: redis.Redis, redis_url: str) -> AsyncIterator[Site]:
    """The web app and the emulator, on a flushed Redis."""
    running = await Site.start(redis_url)
    yield running
    await running.stop()


async def sign_in(site: Site, user: User) -> aiohttp.ClientSession:
    """A client that went through "Sign in with Discord" as `user` (authorize, consent, callback): it holds the
    session cookie. Close it."""
    client = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with client.get(site.url + "/login", allow_redirects=False) as response:
        assert response.status == 302
        consent = response.headers["Location"]
    async with client.get(consent) as response:
        page = await response.text()
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page))
    fields = {k: v.replace("&amp;", "&") for k, v in fields.items()}
    async with client.post(site.emu.url + "/oauth2/authorize", data={**fields, "user_id": user.id},
                           allow_redirects=False) as response:
        back = response.headers["Location"]
    async with client.get(back, allow_redirects=False) as response:
        assert response.status == 302, await response.text()
    return client


def csrf_of(page: str) -> str:
    """The CSRF token a page carries."""
    found = re.search(r'<meta name="csrf-token" content="([^"]+)">', page)
    assert found, "the page carries no CSRF token"
    return found.group(1)


async def press(client: aiohttp.ClientSession, site: Site, job_id: str, action: str, index: int = 0
                ) -> tuple[int, str]:
    """A job page's button, pressed as the page's script does (the page's CSRF token, JSON asked for): the answer's
    status and body."""
    async with client.get(f"{site.url}/jobs/{job_id}") as response:
        token = csrf_of(await response.text())
    async with client.post(f"{site.url}/jobs/{job_id}/action", data={"action": action, "index": index},
                           headers={"X-CSRF-Token": token, "Accept": "application/json"}) as response:
        return response.status, await response.text()
