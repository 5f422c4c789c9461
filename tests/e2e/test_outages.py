"""Outages survived, with the real processes: the gateway connection dropped, Redis unreachable and restarted from
its append-only file, and Discord's API unreachable from the worker. After each, commands work again, every job
has one outcome shown once, and every member's ledger balances."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from core import jobs, keys
from discord_emulator import INTERACTION_TOKEN_TTL_S, DiscordEmulator, Injection, Message
from tests.e2e.conftest import WORKER_NAME
from tests.e2e.helpers import (
    RESULT_TIMEOUT_S,
    BotProcess,
    eventually,
    grid_ids,
    imagine,
    job_of,
    on_edit,
    png,
    png_revisions,
    result,
    settled,
)

BOT_EDIT = 2
"""A deferred /imagine's original has 2 revisions after the bot's waiting text: "thinking", then that text."""

WORKER_TRIES = 5
"""Attempts the worker makes of one request before it gives the delivery up (`worker.discord_http.MAX_TRIES`)."""

DOWN = 10**9
"""`times` of an injected fault that lasts until the test lifts it."""


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


async def test_discord_unreachable_from_the_worker_the_grid_arrives_once_it_is_back(
    discord: DiscordEmulator, bot: BotProcess, redis_conn: redis.Redis
) -> None:
    """From the bot's waiting edit on, Discord answers 503 to every webhook and channel request: the worker renders
    the job, gives up its delivery after its retries and leaves it to its maintenance, whose next try fails too.
    Meanwhile the interaction token expires (the emulator's clock moves past its 15 minutes). Once Discord is back,
    the grid is posted once as a channel message with its buttons (the original never shows it), and nothing is
    left to redeliver. The outage is as long as it takes to see two failed rounds (about 25 s, not 2 minutes):
    what follows does not depend on its length, only on the token having expired."""
    outage: list[Injection] = []

    def cut_after_the_bots_edit(message: Message) -> None:
        if message.interaction_id and len(message.history) == BOT_EDIT and not outage:
            outage.append(discord.inject("*", r"^/(webhooks|channels)/", 503, times=DOWN))

    on_edit(discord, cut_after_the_bots_edit)
    alice = discord.add_user("alice")
    pending = await imagine(discord, alice, "a red barn --seed 11")
    job_id = await eventually(
        lambda: next((k.decode() for k in redis_conn.zrange(keys.undelivered(), 0, -1)), None),
        RESULT_TIMEOUT_S, "the worker to leave the undelivered outcome to its maintenance")
    assert jobs.get(redis_conn, job_id).state == jobs.DONE  # type: ignore[union-attr]
    await eventually(lambda: int(redis_conn.hget(keys.undelivered_tries(), job_id) or 0) >= 1,
                     RESULT_TIMEOUT_S, "a failed retry by the worker's maintenance")
    assert outage[0].hits >= WORKER_TRIES + 1
    discord.advance_clock(INTERACTION_TOKEN_TTL_S)
    outage[0].times = 0  # Discord is back
    back_at = time.monotonic()

    posted = await discord.wait_for_message(predicate=has_png_and_not(pending.record.original_id),
                                            timeout=RESULT_TIMEOUT_S)
    print(f"grid posted {time.monotonic() - back_at:.1f} s after Discord came back")
    await settled(redis_conn, WORKER_NAME, job_id)
    assert job_of(posted) == job_id and posted.custom_ids() == grid_ids(job_id)
    assert png(posted).size == (128, 128) and f"<@{alice.id}>" in posted.content
    assert [r.status for r in discord.requests("POST", r"^/channels/\d+/messages$") if not r.injected] == [200]
    original = pending.original
    assert original is not None and png_revisions(original) == []
    assert [m.id for m in discord.messages() if png_revisions(m)] == [posted.id]
    assert not redis_conn.exists(keys.undelivered(), keys.undelivered_tries())


def has_png_and_not(message_id: str | None) -> Callable[[Message], bool]:
    """A message other than `message_id` showing a PNG."""
    return lambda m: m.id != message_id and bool(png_revisions(m))
