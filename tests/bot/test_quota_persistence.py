"""Balances, grants, bans and waiting jobs survive Redis restarting from its append-only file, and a bot restart."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import redis

import quotas
from bench.chaos_procs import RedisProcess
from bench.redis_server import free_port, redis_server
from bot import submit
from core import keys, prompt
from core.errors import QUEUE_UNREACHABLE
from discord_emulator import DiscordEmulator, User
from quotas import TierSettings, Who
from tests.bot.conftest import REGISTRY, eventually, running_bot
from tests.bot.test_admin import run
from tests.redisproxy import holding_one_reply


def snapshot(conn: redis.Redis) -> dict[bytes, Any]:
    """Every key of this project and of RQ with its whole value (rate-limit windows left out: they expire)."""
    readers = {
        b"hash": conn.hgetall,
        b"list": lambda k: conn.lrange(k, 0, -1),
        b"zset": lambda k: conn.zrange(k, 0, -1, withscores=True),
        b"set": conn.smembers,
        b"string": conn.get,
    }
    return {
        key: readers[conn.type(key)](key)  # type: ignore[index]
        for key in sorted(conn.scan_iter("*"))
        if not key.endswith(b":rate")
    }


async def test_redis_restart_from_aof_and_bot_restart_lose_nothing(
    discord_emulator: DiscordEmulator, tmp_path: Path, alice: User, bob: User, admin: User
) -> None:
    """Two waiting jobs with their fast-time holds, a grant, a tier and a ban: after redis-server restarts from its
    AOF every key is exactly as before, and a restarted bot reports the same jobs and balances."""
    port = free_port()
    with redis_server(tmp_path, appendonly=True, port=port) as url:
        conn = redis.Redis.from_url(url)
        async with running_bot(discord_emulator, conn):
            for prompt in ("a cat", "a dog"):
                pending = await discord_emulator.send_slash_command(
                    user=alice, name="imagine", options={"prompt": prompt}
                )
                await pending.wait_original(lambda m: "Waiting to start" in m.content)
            await eventually(lambda: conn.llen("rq:queue:fast:tiny") == 2)
            assert "Granted" in await run(discord_emulator, admin, "admin quota grant", member=bob, minutes=30.0)
            assert "**pro**" in await run(discord_emulator, admin, "admin tier set", member=bob, tier="pro")
            carol = discord_emulator.add_user("carol")
            assert "banned" in await run(discord_emulator, admin, "admin ban", member=carol, reason="spam")
        before = snapshot(conn)
        conn.close()
    assert any(b":balance:" in k for k in before) and any(b":grant" in k for k in before)
    with redis_server(tmp_path, appendonly=True, port=port) as url:
        conn = redis.Redis.from_url(url)
        assert snapshot(conn) == before
        async with running_bot(discord_emulator, conn):
            pending = await discord_emulator.send_slash_command(user=alice, name="info")
            await pending.wait_acknowledged()
            info = pending.ephemeral_messages[0].content
            usage = await run(discord_emulator, admin, "admin usage", member=bob)
            banned = await run(discord_emulator, admin, "admin usage", member=carol)
        conn.close()
    assert "**Jobs:** 2 fast and 0 relax" in info and "queued, 0 ahead" in info and "queued, 1 ahead" in info
    assert "**Tier:** pro (given by an admin)" in usage and "(including 30.0 min granted)" in usage
    assert "**Banned:** spam" in banned


async def test_jobs_not_queued_while_redis_was_down_are_refunded_once_it_is_back(
    discord_emulator: DiscordEmulator, tmp_path: Path
) -> None:
    """A command admitted just before Redis went down, whose job never got queued: the bot keeps trying to refund it
    and does so once Redis is back from its AOF, so nothing stays held until the ledger's 15-minute backstop."""
    port, who = free_port(), Who(discord_emulator.state.guild_id, "4242")
    (spec,) = prompt.parse("a kite --seed 1", REGISTRY)
    with redis_server(tmp_path, appendonly=True, port=port) as url:
        admitted = quotas.reserve(redis.Redis.from_url(url), TierSettings().config(), who, [spec])
    conn = redis.Redis.from_url(url, socket_timeout=2)
    async with running_bot(discord_emulator, conn) as bot:
        retry = asyncio.ensure_future(submit.release_later(bot, admitted.job_ids))
        await asyncio.sleep(quotas.RELEASE_RETRY_S * 1.5)  # one try against a stopped Redis
        assert not retry.done()
        with redis_server(tmp_path, appendonly=True, port=port):
            await asyncio.wait_for(retry, quotas.RELEASE_RETRY_S * 3)
            assert not conn.exists(keys.quota_reservation(admitted.job_ids[0]))
            assert conn.hlen(keys.quota_active(who.member)) == 0


async def test_an_admission_whose_answer_redis_never_sent_is_released_once_it_is_back(
    discord_emulator: DiscordEmulator, tmp_path: Path, alice: User
) -> None:
    """Redis runs /imagine's admission script and stops before its answer reaches the bot (as `python -m bench
    chaos` once caught it doing): the member is told the queue is unreachable, so once Redis is back from its AOF the
    bot releases what the script reserved; the member is not held at their cap for the ledger's 15-minute backstop."""
    who = Who(discord_emulator.state.guild_id, str(alice.id))
    redis_proc = RedisProcess(tmp_path)  # redis-server with its AOF on a fixed port, stopped and started again
    redis_proc.start()
    direct = redis.Redis.from_url(redis_proc.url, socket_timeout=2)
    try:
        direct.script_load(submit.GUARDED_ADMIT.text)  # EVALSHA runs it: the command the proxy holds the answer of
        async with holding_one_reply(redis_proc.port, submit.GUARDED_ADMIT.sha.encode()) as proxy_port:
            conn = redis.Redis.from_url(f"redis://127.0.0.1:{proxy_port}/0", socket_timeout=2)
            async with running_bot(discord_emulator, conn):
                pending = await discord_emulator.send_slash_command(user=alice, name="imagine",
                                                                    options={"prompt": "a kite"})
                await eventually(lambda: direct.hlen(keys.quota_active(who.member)) == 1)  # the script ran
                redis_proc.stop()  # SIGTERM: Redis writes its AOF and stops, the answer unsent
                await pending.wait_acknowledged()
                assert [m.content for m in pending.ephemeral_messages] == [QUEUE_UNREACHABLE]
                await asyncio.to_thread(redis_proc.start)
                await eventually(lambda: direct.hlen(keys.quota_active(who.member)) == 0,
                                 timeout=quotas.RELEASE_RETRY_S * 3)
                assert direct.zcard(keys.quota_reservations()) == 0 and not direct.keys(f"{keys.PREFIX}:job:*")
            conn.close()
    finally:
        redis_proc.stop()
        direct.close()
