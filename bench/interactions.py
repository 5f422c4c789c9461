"""Acknowledgement latency of `/imagine` under a burst: N interactions delivered at once to the real bot.

A real redis-server, the Discord API emulator and ImagineBot in one process (the emulator's clock measures from the
INTERACTION_CREATE dispatch to the callback, as Discord does). Prints p50/p99/max in seconds.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from pydantic import SecretStr

from bench.redis_server import redis_server
from bot.client import ImagineBot
from core.models import ModelRegistry, tiny_model
from core.settings import DiscordSettings, JobSettings
from discord_emulator import DiscordEmulator, PendingInteraction
from discord_emulator.fixtures import GUILD_READY_TIMEOUT_S, running_client


async def burst(emu: DiscordEmulator, count: int, prompt: str = "a lighthouse at dusk --ar 16:9") -> list[float]:
    """Deliver `count` /imagine interactions at once (one user each); the seconds each took to be acknowledged."""
    users = [emu.add_user(f"user{i}") for i in range(count)]
    pending: list[PendingInteraction] = await asyncio.gather(
        *(emu.send_slash_command(user=u, name="imagine", options={"prompt": prompt}) for u in users)
    )
    callbacks = await asyncio.gather(*(p.wait_acknowledged(timeout=30) for p in pending))
    # Let every command finish its work (waiting message, delivery, enqueue) before anyone closes the bot.
    await asyncio.gather(*(p.wait_original(lambda m: "Waiting to start" in m.content, timeout=60) for p in pending))
    return [c.elapsed_s for c in callbacks]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(latencies: list[float]) -> dict[str, Any]:
    return {
        "count": len(latencies),
        "ack_p50_s": round(statistics.median(latencies), 4),
        "ack_p99_s": round(percentile(latencies, 0.99), 4),
        "ack_max_s": round(max(latencies), 4),
        "under_3s": sum(1 for v in latencies if v < 3.0),
    }


async def _run(count: int, redis_url: str) -> dict[str, Any]:
    conn = redis.Redis.from_url(redis_url)
    conn.flushall()
    async with DiscordEmulator() as emu:
        settings = DiscordSettings(
            discord_token=SecretStr(emu.token), discord_api_base=emu.api_base, discord_gateway_url=emu.ws_url
        )
        bot = ImagineBot(
            settings=settings,
            redis_conn=conn,
            registry=ModelRegistry((tiny_model(),)),
            job_settings=JobSettings(),
            guild_ready_timeout=GUILD_READY_TIMEOUT_S,
        )
        async with running_client(emu, bot):
            started = time.perf_counter()
            latencies = await burst(emu, count)
            result = summary(latencies) | {"all_waiting_messages_wall_s": round(time.perf_counter() - started, 3)}
    conn.close()
    return result


def run(count: int = 200) -> dict[str, Any]:
    """Start Redis, the emulator and the bot; deliver `count` /imagine at once; their ack latency figures."""
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp)) as url:
        return asyncio.run(_run(count, url))
