"""`python -m bot` as a process: configuration errors and a rejected token are one line, never a traceback."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest

from discord_emulator import DiscordEmulator, User

START_TIMEOUT_S = 60.0


def bot_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "DEV_GUILD", "MODEL", "REDIS_URL"))}
    env.update({"MODEL": "builtin:tiny", **values})
    return env


def test_missing_token_exits_2_with_one_line() -> None:
    """No DISCORD_TOKEN: exit status 2 and a single explanatory line on stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "bot"], env=bot_env(), capture_output=True, text=True, timeout=START_TIMEOUT_S
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "DISCORD_TOKEN" in lines[0], done.stderr


async def run_bot(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


async def test_rejected_token_exits_1_with_one_line(discord_emulator: DiscordEmulator) -> None:
    """A token the API refuses: exit status 1, one line on stderr, no traceback, the token not printed."""
    emu = discord_emulator
    bad = emu.token[:-4] + ("AAAA" if not emu.token.endswith("AAAA") else "BBBB")
    env = bot_env(DISCORD_TOKEN=bad, DISCORD_API_BASE=emu.api_base, DISCORD_GATEWAY_URL=emu.ws_url)
    process = await run_bot(env)
    _, stderr = await asyncio.wait_for(process.communicate(), START_TIMEOUT_S)
    text = stderr.decode()
    assert process.returncode == 1
    errors = [line for line in text.splitlines() if line.startswith("bot:")]
    assert len(errors) == 1 and "rejected" in errors[0]
    assert "Traceback" not in text and bad not in text


@pytest.mark.parametrize("guild", ["", "mine"])
async def test_process_syncs_and_answers_imagine(
    discord_emulator: DiscordEmulator, redis_url: str, redis_conn, guild: str
) -> None:
    """The real process syncs globally when DEV_GUILD_ID is "" (compose) or to the guild when set, then defers
    /imagine; SIGTERM (docker stop) ends it with status 0; its logs never carry the bot token."""
    emu = discord_emulator
    env = bot_env(
        DISCORD_TOKEN=emu.token,
        DISCORD_API_BASE=emu.api_base,
        DISCORD_GATEWAY_URL=emu.ws_url,
        DEV_GUILD_ID=emu.state.guild_id if guild else "",
        REDIS_URL=redis_url,
    )
    process = await run_bot(env)
    try:
        synced = await emu.wait_until(
            lambda: emu.state.guild_commands.get(emu.state.guild_id) if guild else emu.state.global_commands,
            START_TIMEOUT_S,
        )
        assert "imagine" in {c["name"] for c in synced}
        await emu.wait_for_session(START_TIMEOUT_S)
        user: User = emu.add_user("alice")
        pending = await emu.send_slash_command(user=user, name="imagine", options={"prompt": "a cat"})
        assert (await pending.wait_acknowledged()).type == 5
        await pending.wait_original(lambda m: "Waiting to start" in m.content)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), START_TIMEOUT_S)
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert emu.token not in stderr.decode() and "Traceback" not in stderr.decode()
