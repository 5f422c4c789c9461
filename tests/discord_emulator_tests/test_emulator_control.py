"""The control endpoint a benchmark in another process drives the emulator with: sessions and bursts."""

from __future__ import annotations

import aiohttp

from discord_emulator import INTERACTION_ACK_DEADLINE_S, DiscordEmulator
from discord_emulator.control import CONTROL_PREFIX
from discord_emulator.fixtures import running_client
from tests.discord_emulator_tests.tiny_bot import TinyBot


async def test_burst_reports_each_acknowledgement_latency(discord_emulator: DiscordEmulator, bot: TinyBot) -> None:
    """POST burst: N members run /imagine at once; every one acknowledged, each with its latency under 3 s."""
    url = discord_emulator.url + CONTROL_PREFIX
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/sessions", params={"live": "1", "timeout_s": "5"}) as response:
            assert response.status == 200 and await response.json() == {"live": 1}
        body = {"count": 3, "command": "imagine", "options": {"prompt": "a cat"}}
        async with http.post(f"{url}/burst", json=body) as response:
            latencies = (await response.json())["latencies_s"]
    assert len(latencies) == 3 and all(0 <= s < INTERACTION_ACK_DEADLINE_S for s in latencies), latencies
    assert [p for (p, *_) in bot.seen[1:]] == ["imagine"] * 3


async def test_unanswered_interactions_are_null_and_session_waits_time_out(discord_emulator: DiscordEmulator) -> None:
    """A bot gone after its command sync: the burst's latencies are null after 3 s; waiting for a live session 504s."""
    client = TinyBot()
    async with running_client(discord_emulator, client):
        await client.tree.sync()
    url = discord_emulator.url + CONTROL_PREFIX
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/sessions", params={"live": "1", "timeout_s": "0.1"}) as response:
            assert response.status == 504 and await response.json() == {"live": 0, "wanted": 1}
        async with http.post(f"{url}/burst", json={"count": 2, "options": {"prompt": "a cat"}}) as response:
            assert await response.json() == {"latencies_s": [None, None]}
        async with http.post(f"{url}/burst", json={"count": 1, "command": "nope"}) as response:
            assert response.status == 409 and "never synced" in (await response.json())["error"]


async def test_drop_closes_the_gateway_and_the_bot_resumes_or_identifies_again(
    discord_emulator: DiscordEmulator, bot: TinyBot
) -> None:
    """POST drop: the live websocket closes and the client RESUMEs its session; with `forget` the session is gone,
    so it IDENTIFYs on a new one."""
    url = discord_emulator.url + CONTROL_PREFIX
    (first,) = discord_emulator.gateway.live_sessions()
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/drop", json={}) as response:
            assert await response.json() == {"dropped": 1}
        assert await discord_emulator.wait_for_session(timeout=10, resumed=1) is first
        async with http.post(f"{url}/drop", json={"forget": True}) as response:
            assert await response.json() == {"dropped": 1}
    second = await discord_emulator.wait_until(lambda: next(iter(discord_emulator.gateway.live_sessions()), None), 10)
    assert second.id != first.id and list(discord_emulator.gateway.sessions) == [second.id]
