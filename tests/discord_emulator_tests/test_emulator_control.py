"""The control endpoint a benchmark in another process drives the emulator with: sessions, bursts, drops, members'
commands and clicks, reads of interactions and messages, and injected faults."""

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


async def test_command_click_and_reads_drive_a_member_through_http(
    discord_emulator: DiscordEmulator, bot: TinyBot
) -> None:
    """POST command as a named member, GET its interaction (grid with buttons), POST click on a button of it, GET
    messages: the same member each time, what each message showed, and 409 for a button the message lacks."""
    url = discord_emulator.url + CONTROL_PREFIX
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/command", json={"user": "ann", "command": "imagine",
                                                     "options": {"prompt": "a cat"}}) as response:
            sent = await response.json()
        assert sent["user"] == "ann" and sent["token"]
        await discord_emulator.wait_until(lambda: discord_emulator.state.interactions[sent["id"]].followup_ids, 5)
        async with http.get(f"{url}/interactions/{sent['id']}") as response:
            seen = await response.json()
        original = seen["original"]
        assert seen["acked"] == 5 and original["png_revisions"] == 1, seen
        assert original["custom_ids"] == ["imagine:u1:abc123", "imagine:u2:abc123"]
        assert [f["content"] for f in seen["followups"]] == ["Job abc123 finished"]
        click = {"user": "ann", "message_id": original["id"], "custom_id": "imagine:u2:abc123"}
        async with http.post(f"{url}/click", json=click) as response:
            clicked = await response.json()
        await discord_emulator.wait_until(lambda: any(s[0] == "upscale" for s in bot.seen), 5)
        async with http.post(f"{url}/click", json=click | {"custom_id": "imagine:u4:abc123"}) as response:
            assert response.status == 409 and "no component" in (await response.json())["error"]
        async with http.get(f"{url}/messages") as response:
            messages = await response.json()
        async with http.get(f"{url}/interactions/0") as response:
            assert response.status == 404
    assert clicked["user"] == "ann" and clicked["id"] != sent["id"]
    assert [u.username for u in discord_emulator.state.users.values()].count("ann") == 1
    assert bot.seen[-1] == ("upscale", 2, "abc123", int(original["id"]))
    assert [m["id"] for m in messages] == [original["id"], seen["followups"][0]["id"]]


async def test_inject_answers_a_fraction_of_calls_with_the_fault_until_lifted(
    discord_emulator: DiscordEmulator, bot: TinyBot
) -> None:
    """POST inject with rate 0.5 (seeded): about half the matching requests get the fault, the others pass; DELETE
    lifts it and reports the hits, after which no request is faulted."""
    url = discord_emulator.url + CONTROL_PREFIX
    async with aiohttp.ClientSession() as http:
        fault = {"method": "GET", "path": "^/users/@me$", "status": 502, "times": 1000, "rate": 0.5, "seed": 7}
        async with http.post(f"{url}/inject", json=fault) as response:
            assert await response.json() == {"status": 502, "rate": 0.5}
        headers = {"Authorization": f"Bot {discord_emulator.token}"}
        statuses = []
        for _ in range(40):
            async with http.get(discord_emulator.api_base + "/users/@me", headers=headers) as response:
                statuses.append(response.status)
        async with http.delete(f"{url}/inject") as response:
            hits = (await response.json())["hits"]
        async with http.get(discord_emulator.api_base + "/users/@me", headers=headers) as response:
            assert response.status == 200
    assert hits == statuses.count(502) and 10 <= hits <= 30, statuses
    assert set(statuses) == {200, 502}
