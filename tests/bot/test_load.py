"""A burst of /imagine: every interaction is acknowledged and every job queued (how fast is `bench interactions`')."""

from __future__ import annotations

import pytest
import redis

from bench.interactions import burst, summary
from bot.client import ImagineBot
from core import queue
from discord_emulator import DiscordEmulator
from tests.bot.conftest import eventually


@pytest.mark.solo
async def test_200_interactions_at_once_are_all_acknowledged_and_queued(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis
) -> None:
    """200 /imagine delivered at once: each one acknowledged (deferred), and all 200 jobs end up queued."""
    latencies = await burst(discord_emulator, 200)
    figures = summary(latencies)
    print(figures)
    assert len(latencies) == 200 and None not in latencies, figures  # None: Discord's window closed first
    await eventually(lambda: queue.rq_queue(redis_conn, "fast:tiny").count == 200, timeout=30)
