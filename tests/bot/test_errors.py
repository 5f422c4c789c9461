"""bot/errors: user-facing errors become ephemeral replies, and no secret reaches a log line."""

from __future__ import annotations

import logging
import socket

import pytest
import redis

from bot.client import ImagineBot, connect_redis, keep_tokens_out_of_logs
from core.errors import QUEUE_UNREACHABLE
from discord_emulator import EPHEMERAL, INTERACTION_ACK_DEADLINE_S, DiscordEmulator, User
from tests.bot.conftest import running_bot


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_redis_outage_is_an_ephemeral_try_again(discord_emulator: DiscordEmulator, alice: User) -> None:
    """Redis down: /imagine and /info answer "the queue is unreachable" ephemerally, in time; the bot lives on."""
    dead = connect_redis(f"redis://127.0.0.1:{closed_port()}/0")
    async with running_bot(discord_emulator, dead) as bot:
        for name, options in (("imagine", {"prompt": "a cat"}), ("info", None)):
            pending = await discord_emulator.send_slash_command(user=alice, name=name, options=options)
            callback = await pending.wait_acknowledged()
            assert callback.elapsed_s < INTERACTION_ACK_DEADLINE_S and callback.data["flags"] & EPHEMERAL
            assert pending.ephemeral_messages[0].content == QUEUE_UNREACHABLE
        assert not bot.is_closed()


async def test_no_token_in_logs(
    discord_emulator: DiscordEmulator,
    bot: ImagineBot,
    redis_conn: redis.Redis,
    alice: User,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the bot's logging set up, even at DEBUG, no log line carries the bot token or an interaction token."""
    keep_tokens_out_of_logs()
    caplog.set_level(logging.DEBUG)
    tokens = [discord_emulator.token]
    for text in ("a {red, blue} cat", "a cat --ar 9:1"):
        pending = await discord_emulator.send_slash_command(user=alice, name="imagine", options={"prompt": text})
        await pending.wait_acknowledged()
        tokens.append(pending.token)
    await discord_emulator.wait_until(lambda: len(discord_emulator.messages()) == 2)
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert not [t for t in tokens if t in logged]
