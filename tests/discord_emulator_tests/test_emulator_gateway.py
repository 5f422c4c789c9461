"""The gateway and login as discord.py sees them: READY, GUILD_CREATE, bad tokens, RESUME."""

from __future__ import annotations

import aiohttp
import discord
import pytest

from discord_emulator import DiscordEmulator
from discord_emulator.fixtures import route_discord_py, running_client
from tests.discord_emulator_tests.tiny_bot import TinyBot


async def test_login_ready_and_guild_create(discord_emulator: DiscordEmulator) -> None:
    """discord.py logs in, gets READY then GUILD_CREATE and fires on_ready with the guild's channels and nsfw flags."""
    client = TinyBot()
    async with running_client(discord_emulator, client):
        assert client.seen == [("ready",)]
        assert str(client.user.id) == discord_emulator.state.bot.id
        (guild,) = client.guilds
        channels = {c.name: c for c in guild.text_channels}
        assert set(channels) == {"general", "nsfw-art"}
        assert channels["nsfw-art"].is_nsfw() and not channels["general"].is_nsfw()
        assert guild.me is not None and guild.me.guild_permissions.attach_files
    assert discord_emulator.compression_requests == ["zlib-stream"]


async def test_bad_token_is_login_failure(discord_emulator: DiscordEmulator) -> None:
    """A token the API rejects (GET /users/@me -> 401) makes discord.py raise LoginFailure."""
    client = TinyBot()
    with route_discord_py(discord_emulator), pytest.raises(discord.LoginFailure):
        await client.login("MTIz.bad.token")
    await client.close()
    (record,) = discord_emulator.requests("GET", "/users/@me")
    assert (
        record.status == 401
        and not record.authorized
        and record.response == {"message": "401: Unauthorized", "code": 0}
    )


async def test_identify_with_reset_token_closes_4004(discord_emulator: DiscordEmulator) -> None:
    """A token reset between login and IDENTIFY closes the gateway with 4004; discord.py raises ConnectionClosed."""
    client = TinyBot()
    with route_discord_py(discord_emulator):
        await client.login(discord_emulator.token)
        discord_emulator.rotate_token()
        with pytest.raises(discord.ConnectionClosed) as caught:
            await client.connect()
    await client.close()
    assert caught.value.code == 4004


async def test_raw_identify_with_wrong_token_gets_4004(discord_emulator: DiscordEmulator) -> None:
    """The gateway sends HELLO first and answers an IDENTIFY with a wrong token by closing with 4004."""
    async with aiohttp.ClientSession() as session, session.ws_connect(discord_emulator.ws_url) as ws:
        hello = await ws.receive_json()
        assert hello["op"] == 10 and hello["d"]["heartbeat_interval"] > 0
        await ws.send_json({"op": 2, "d": {"token": "wrong", "intents": 0, "properties": {}}})
        await ws.receive()
        assert ws.close_code == 4004


async def test_resume_after_drop_replays_missed_dispatch(discord_emulator: DiscordEmulator, bot: TinyBot) -> None:
    """After the emulator drops the websocket, discord.py RESUMEs and gets the dispatch it missed meanwhile."""
    alice = discord_emulator.add_user("alice")
    await discord_emulator.drop_gateway()
    pending = await discord_emulator.send_slash_command(user=alice, name="secret")
    session = await discord_emulator.wait_for_session(resumed=1)
    callback = await pending.wait_acknowledged()
    assert callback.type == 4
    assert session.resumes == 1 and session.replayed >= 1 and len(discord_emulator.gateway.sessions) == 1
    resume = [f for f in discord_emulator.gateway.received if f["op"] == 6]
    assert resume and resume[0]["d"]["token"] == "<redacted>"
