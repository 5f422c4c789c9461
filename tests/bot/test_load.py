"""A burst of /imagine: every interaction is acknowledged inside Discord's 3-second window."""

from __future__ import annotations

import redis

from bench.interactions import burst, summary
from bot.client import ImagineBot
from core import queue
from discord_emulator import INTERACTION_ACK_DEADLINE_S, DiscordEmulator
from tests.bot.conftest import eventually


async def test_200_interactions_at_once_are_all_acknowledged_in_time(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis
) -> None:
    """200 /imagine delivered at once: each deferred in < 3 s, and all 200 jobs end up queued."""
    latencies = await burst(discord_emulator, 200)
    figures = summary(latencies)
    print(figures)
    assert max(latencies) < INTERACTION_ACK_DEADLINE_S, figures
    await eventually(lambda: queue.rq_queue(redis_conn, "fast:tiny").count == 200, timeout=30)
