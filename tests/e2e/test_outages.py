"""Outages survived, with the real processes: the gateway connection dropped, Redis unreachable and restarted from
its append-only file, and Discord's API unreachable from the worker. After each, commands work again, every job
has one outcome shown once, and every member's ledger balances."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import redis

import quotas
from bench.redis_server import free_port, redis_server
from core import buttons, jobs, keys, prompt, queue
from core.errors import QUEUE_UNREACHABLE
from core.settings import ModelSettings
from discord_emulator import INTERACTION_TOKEN_TTL_S, DiscordEmulator, Injection, Message, User
from quotas import TierSettings, Who
from tests.e2e.conftest import WORKER_NAME
from tests.e2e.helpers import (
    RESULT_TIMEOUT_S,
    BotProcess,
    assert_ledger_balanced,
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
from tests.worker.worker_helpers import WorkerProcess, wait_until

BOT_EDIT = 2
"""A deferred /imagine's original has 2 revisions after the bot's waiting text: "thinking", then that text."""

WORKER_TRIES = 5
"""Attempts the worker makes of one request before it gives the delivery up (`worker.discord_http.MAX_TRIES`)."""

REDIS_OUTAGE_S = 30.0
"""How long the Redis outage test keeps redis-server stopped."""

ANSWER_WITHIN_S = 3.0
"""Discord's acknowledgement window: a member hears "try again" within it."""

WAITING_JOBS = 100
"""Jobs waiting in Redis when it restarts from its AOF: one each of as many members (the free tier's limit)."""

DRAIN_TIMEOUT_S = 240.0
"""How long one worker on the tiny model may take for WAITING_JOBS jobs on a busy 2-core machine."""

DOWN = 10**9
"""`times` of an injected fault that lasts until the test lifts it."""


async def imagine_gets_its_grid_once(discord: DiscordEmulator, redis_conn: redis.Redis, prompt: str) -> None:
    """A new member's /imagine of `prompt` gets its grid, with its buttons, in exactly one revision of its message."""
    message = await result(await imagine(discord, discord.add_user("alice"), prompt))
    job_id = job_of(message)
    await settled(redis_conn, WORKER_NAME, job_id)
    assert len(png_revisions(message)) == 1 and message.custom_ids() == grid_ids(job_id)


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

    await imagine_gets_its_grid_once(discord, redis_conn, "a lighthouse --seed 3")


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

    await imagine_gets_its_grid_once(discord, redis_conn, "a windmill --seed 4")


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


@contextlib.contextmanager
def redis_paused(conn: redis.Redis) -> Iterator[float]:
    """redis-server stopped with SIGSTOP (connections hang, as across a network cut) until the block ends; yields
    the monotonic time it stopped."""
    pid = int(conn.info("server")["process_id"])
    os.kill(pid, signal.SIGSTOP)
    try:
        yield time.monotonic()
    finally:
        os.kill(pid, signal.SIGCONT)


async def told_to_try_again(discord: DiscordEmulator, user: User, send: Callable[[], object]) -> float:
    """Run `send` (a command or click by `user`); returns the seconds until the member saw an ephemeral "try again"
    message, which must be within ANSWER_WITHIN_S and show no traceback."""
    before = {m.id for m in discord.state.messages.values()}
    started = time.monotonic()
    await send()  # type: ignore[misc]
    answer = await discord.wait_until(
        lambda: next((m for m in discord.state.messages.values() if m.id not in before and m.ephemeral
                      and m.visible_to == user.id), None), timeout=ANSWER_WITHIN_S + 2)
    elapsed = time.monotonic() - started
    assert answer.content == QUEUE_UNREACHABLE and elapsed < ANSWER_WITHIN_S, (answer.content, elapsed)
    return elapsed


async def test_redis_unreachable_for_30_s_members_are_told_to_try_again_and_everything_recovers(
    discord: DiscordEmulator, bot: BotProcess, redis_conn: redis.Redis
) -> None:
    """redis-server is stopped for 30 s while a job renders. During it, /imagine and a U1 click are each answered
    with an ephemeral "try again" within 3 s, no traceback shown. After it, with no restart of anything, the
    running job's grid arrives once, a new /imagine gets its grid, and each member's ledger balances."""
    alice, bob = discord.add_user("alice"), discord.add_user("bob")
    first = await result(await imagine(discord, alice, "a quiet harbor --seed 1"))
    await settled(redis_conn, WORKER_NAME, job_of(first))
    running = await imagine(discord, alice, "a long road --seed 2 --q 2")
    owner_jobs = keys.user_jobs(f"discord:{alice.id}")
    job_id = await eventually(lambda: (j := redis_conn.lindex(owner_jobs, 0)) and j.decode() != job_of(first)
                              and j.decode(), RESULT_TIMEOUT_S, "the second job to be queued")
    await eventually(lambda: (r := jobs.get(redis_conn, job_id)) and r.state == jobs.RUNNING, RESULT_TIMEOUT_S,
                     "the second job to start")

    with redis_paused(redis_conn) as stopped_at:
        async def run_imagine() -> None:
            await discord.send_slash_command(user=bob, name="imagine", options={"prompt": "a storm"})

        async def click_u1() -> None:
            await discord.click_button(user=bob, message=first, custom_id=buttons.custom_id("u", job_of(first), 1))

        figures = [await told_to_try_again(discord, bob, run_imagine), await told_to_try_again(discord, bob, click_u1)]
        await eventually(lambda: time.monotonic() - stopped_at >= REDIS_OUTAGE_S, REDIS_OUTAGE_S + 5, "the outage")
    back_at = time.monotonic()

    grid = await result(running)
    print(f"try again after {figures[0]:.2f} s (/imagine), {figures[1]:.2f} s (U1); running job's grid "
          f"{time.monotonic() - back_at:.1f} s after Redis came back")
    after = await result(await imagine(discord, bob, "a calm sea --seed 3"))
    print(f"a new /imagine's grid {time.monotonic() - back_at:.1f} s after Redis came back")
    await settled(redis_conn, WORKER_NAME, job_of(after))
    assert job_of(grid) == job_id and len(png_revisions(grid)) == 1
    assert [len(png_revisions(m)) for m in discord.messages() if png_revisions(m)] == [1, 1, 1]
    assert all("Traceback" not in m.content for m in discord.state.messages.values())
    for user, made in ((alice, [job_of(first), job_id]), (bob, [job_of(after)])):
        assert_ledger_balanced(redis_conn, quotas.member_id(discord.state.guild_id, user.id), made)


def test_redis_restarted_from_its_aof_with_100_jobs_waiting_runs_each_once_and_charges_each_once(
    tmp_path: Path,
) -> None:
    """100 admitted jobs wait in a redis-server with an append-only file; it restarts from that file, then a worker
    (the tiny model, no step delay) starts: every job runs once, ends done, and every member's ledger balances."""
    port, config = free_port(), TierSettings().config()
    registry = ModelSettings().registry()  # MODEL=builtin:tiny (tests/conftest.py)
    members = [Who("1000", str(2000 + n)) for n in range(WAITING_JOBS)]
    made: dict[str, list[str]] = {}
    with redis_server(tmp_path, appendonly=True, port=port) as url:
        conn = redis.Redis.from_url(url)
        for n, who in enumerate(members):
            (spec,) = prompt.parse(f"a lantern --seed {n}", registry)
            (job_id,) = quotas.reserve(conn, config, who, [spec]).job_ids
            queue.enqueue(conn, spec, f"discord:{who.user}", job_id=job_id)
            made.setdefault(who.member, []).append(job_id)
        conn.close()
    with redis_server(tmp_path, appendonly=True, port=port) as url:
        conn = redis.Redis.from_url(url)
        assert conn.llen("rq:queue:" + keys.queue_name("tiny", "fast")) == WAITING_JOBS
        worker = WorkerProcess(url, tmp_path, "aof-worker", WORKER_TEST_STEP_DELAY_S="0")
        try:
            started = time.monotonic()
            all_ids = [j for ids in made.values() for j in ids]
            # concluded, not only final: a job's quota is settled right after its record turns final (worker.jobs)
            wait_until(lambda: all((r := jobs.get(conn, j)) is not None and r.final
                                   and not conn.exists(keys.quota_reservation(j)) for j in all_ids),
                       DRAIN_TIMEOUT_S, f"{WAITING_JOBS} jobs to end and be settled")
            print(f"{WAITING_JOBS} jobs done {time.monotonic() - started:.1f} s after the worker started")
        finally:
            worker.stop()
        records = [jobs.get(conn, j) for j in all_ids]
        assert [r.state for r in records if r is not None] == [jobs.DONE] * WAITING_JOBS
        assert {r.attempt for r in records if r is not None} == {1}
        for member, ids in made.items():
            assert assert_ledger_balanced(conn, member, ids) > 0
        conn.close()
