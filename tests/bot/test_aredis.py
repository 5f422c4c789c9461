"""The hot path's Redis helpers (bot.aredis) against a real Redis: batching, scripts by SHA, reads as one script."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio

from bot import aredis


@pytest.fixture
async def aconn(redis_conn: redis.Redis) -> AsyncIterator[redis.asyncio.Redis]:
    conn = aredis.twin(redis_conn)
    yield conn
    await conn.aclose(close_connection_pool=True)


async def test_callers_in_one_loop_turn_share_one_round_trip(aconn: redis.asyncio.Redis, redis_conn: redis.Redis):
    """Commands asked for in the same event-loop turn go out as one pipeline; each caller gets its own replies."""
    redis_conn.set("a", "1")
    redis_conn.hset("h", "f", "v")
    batcher = aredis.Batcher(aconn)
    sent: list[int] = []
    real = aconn.pipeline

    def counting(*args, **kwargs):
        sent.append(1)
        return real(*args, **kwargs)

    aconn.pipeline = counting  # type: ignore[method-assign]
    first, second = await asyncio.gather(batcher.run([("GET", "a"), ("GET", "b")]), batcher.run([("HGETALL", "h")]))
    assert (first, second, len(sent)) == ([b"1", None], [{b"f": b"v"}], 1)


async def test_a_failed_command_fails_only_its_caller(aconn: redis.asyncio.Redis, redis_conn: redis.Redis):
    """One caller's error (a wrong-type command) is raised to that caller; the others in the batch get replies."""
    redis_conn.set("s", "x")
    batcher = aredis.Batcher(aconn)
    bad, good = await asyncio.gather(batcher.run([("GET", "s"), ("HGETALL", "s")]), batcher.run([("GET", "s")]),
                                     return_exceptions=True)
    assert isinstance(bad, redis.ResponseError) and good == [b"x"]


async def test_script_runs_by_sha_and_loads_itself_after_a_flush(aconn: redis.asyncio.Redis, redis_conn: redis.Redis):
    """A script is sent by SHA; when Redis does not know it (restart, SCRIPT FLUSH) its text is sent once more."""
    script = aredis.Script("return redis.call('INCR', KEYS[1]) + tonumber(ARGV[1])")
    batcher = aredis.Batcher(aconn)
    redis_conn.script_flush()
    assert await script.run(batcher, ["n"], [10]) == 11
    assert redis_conn.script_exists(script.sha) == [True]
    assert await script.run(batcher, ["n"], [10]) == 12


async def test_reads_as_one_script_answer_like_a_pipeline(aconn: redis.asyncio.Redis, redis_conn: redis.Redis):
    """`read` gives the replies a pipeline of the same commands gives (a hash as a dict, a missing key as None)."""
    redis_conn.hset("h", mapping={"a": "1", "b": "2"})
    redis_conn.set("k", "v")
    commands = [("HGETALL", "h"), ("HGETALL", "none"), ("GET", "k"), ("GET", "none"), ("HGET", "h", "b")]
    assert await aredis.read(aredis.Batcher(aconn), commands) == await aredis.pipelined(aconn, commands)


async def test_a_guarded_script_runs_only_on_what_the_caller_assumed(
    aconn: redis.asyncio.Redis, redis_conn: redis.Redis
):
    """A guarded script runs when the reads answer what was assumed (a missing key, a hash, a string); otherwise it
    does nothing and answers `stale` with the reads' replies, which the caller then learns."""
    script = aredis.guarded("return redis.call('INCR', KEYS[1])")
    batcher, cache = aredis.Batcher(aconn), aredis.ReadCache()
    reads = [("HGETALL", "h"), ("GET", "k"), ("HGET", "h", "a")]
    assumed = cache.assume(reads)  # nothing seen yet: no such keys
    assert await script.run(batcher, ["n"], aredis.guard_args(reads, assumed)) == 1
    redis_conn.hset("h", mapping={"a": "1", "b": "2"})
    redis_conn.set("k", "v")
    stale = await script.run(batcher, ["n"], aredis.guard_args(reads, assumed))
    assert stale[0] == b"stale" and redis_conn.get("n") == b"1"
    cache.learn(reads, stale[1])
    assert aredis.as_replies(reads, cache.assume(reads)) == await aredis.pipelined(aconn, reads)
    assert await script.run(batcher, ["n"], aredis.guard_args(reads, cache.assume(reads))) == 2


async def test_warm_up_opens_connections_before_the_first_command(aconn: redis.asyncio.Redis):
    """`warm_up` leaves its connections open and idle in the pool, ready for a burst's first batches."""
    await aredis.warm_up(aconn, 4)
    pool = aconn.connection_pool
    assert len(pool._available_connections) == 4  # type: ignore[attr-defined]
    assert all(c.is_connected for c in pool._available_connections)  # type: ignore[attr-defined]
