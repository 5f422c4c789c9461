"""A real `python -m worker` process delivering to the Discord API emulator, its DEBUG log free of tokens."""

from __future__ import annotations

import io
from pathlib import Path

import redis
from PIL import Image

from core import keys, metrics
from core.spec import JobSpec
from tests.worker.emulated_discord import ThreadedEmulator, discord, enqueue_from_discord  # noqa: F401
from tests.worker.worker_helpers import WORKER_START_TIMEOUT_S, WorkerProcess, record, worker_processes

JOBS_TIMEOUT_S = 120.0
"""Two tiny jobs after the worker's start; generous for a busy 2-core machine."""


def test_worker_process_edits_the_original_and_posts_when_the_token_is_gone(
    redis_url: str, redis_conn: redis.Redis, tiny_spec: JobSpec, discord: ThreadedEmulator, tmp_path: Path  # noqa: F811
):
    """`python -m worker --burst` with DISCORD_API_BASE/DISCORD_TOKEN puts one grid on the deferred original and one
    in a channel post for a job without token (retried once after a 500, and the retry counted for /metrics);
    neither token is in its DEBUG log."""
    user = discord.call(lambda: discord.emu.add_user("olga"))
    discord.emu.inject("POST", r"^/channels/\d+/messages$", 500, times=1)
    edited = enqueue_from_discord(redis_conn, discord, user, tiny_spec)
    posted = enqueue_from_discord(redis_conn, discord, user, tiny_spec, keep_token=False)
    with worker_processes() as started:
        worker = WorkerProcess(redis_url, tmp_path, "deliverer", burst=True, log_level="DEBUG",
                               DISCORD_API_BASE=discord.emu.api_base, DISCORD_TOKEN=discord.emu.token)
        started.append(worker)
        assert worker.wait(WORKER_START_TIMEOUT_S + JOBS_TIMEOUT_S) == 0, worker.log()
    assert record(redis_conn, edited.job_id).state == record(redis_conn, posted.job_id).state == "done"
    original = discord.message(edited.interaction.original_id)
    assert Image.open(io.BytesIO(original.attachments[0].data)).size == (128, 128)
    assert len(original.custom_ids()) == 9
    posts = discord.emu.requests("POST", r"^/channels/\d+/messages$")
    assert [p.status for p in posts] == [500, 200]
    assert f"<@{user.id}>" in discord.message(posts[1].response["id"]).content
    [(labels, retries)] = metrics.parse([redis_conn.hgetall(keys.metrics_counters()), {}, {}]).counters[
        metrics.DISCORD_RETRIES]
    assert (labels, retries) == ({"reason": "server_error"}, 1.0)
    log = worker.log()
    assert "DEBUG" in log and "delivered to Discord" in log
    for secret in (discord.emu.token, edited.interaction.token, posted.interaction.token):
        assert secret not in log
