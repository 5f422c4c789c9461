"""What a worker process holds for as long as it lives, handed to every job: the warm engine, Redis, Discord delivery.

`python -m worker` builds one `Context` before it takes the first job and hands it to `worker.rq_worker.ImagineWorker`,
whose job class passes it to each job function as its first argument, as arq hands `ctx` (`worker.jobs.ImagineJob`).
Nothing is loaded per job and nothing is looked up in a module global. Also the worker's stats hash.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis

from core import keys
from core.images import Rules
from core.models import ModelInfo
from core.settings import WorkerSettings

if TYPE_CHECKING:
    from worker.delivery import Poster
    from worker.describe import Describer
    from worker.engine import Engine
    from worker.safety import SafetyClassifier

STATS_TTL_S = 24 * 3600
"""How long a worker's stats hash outlives its last job."""


@dataclass(frozen=True)
class Context:
    """What a job function needs besides its payload; one per worker process."""

    conn: redis.Redis
    engine: Engine
    model: ModelInfo
    settings: WorkerSettings
    worker_name: str
    poster: Poster | None = None  # shows jobs in Discord; None: jobs have no Discord side (CLI, tests)
    classifier: SafetyClassifier | None = None  # the image safety check (`worker.safety.load`); None: none
    safety_threshold: float = 0.5  # an image scoring at least this is flagged (WORKER_SAFETY_THRESHOLD)
    image_rules: Rules = Rules()  # where members' images may be fetched from (`core.settings.ImageSettings`)
    describer: Describer | None = None  # /describe and the words of image prompts (`worker.describe.load`)


def default_worker_name() -> str:
    """`host.pid`: readable in `rq info`, unique per process."""
    return f"{socket.gethostname()}.{os.getpid()}"


def register_stats(ctx: Context, *, pipeline_loads: int, load_s: float, upscaler_loads: int = 0) -> None:
    """Write the worker's stats hash (`keys.worker_stats`): model, pipeline and upscaler loads, jobs done."""
    key = keys.worker_stats(ctx.worker_name)
    with ctx.conn.pipeline() as pipe:
        pipe.hset(
            key,
            mapping={
                "model": ctx.model.name,
                "pipeline_loads": pipeline_loads,
                "upscaler": ctx.settings.upscaler,
                "upscaler_loads": upscaler_loads,
                "load_s": round(load_s, 3),
                "pid": os.getpid(),
                "started_at": time.time(),
                "jobs_done": 0,
            },
        )
        pipe.expire(key, STATS_TTL_S)
        pipe.execute()


def count_job_done(ctx: Context, *, gpu_s: float = 0.0) -> None:
    """One more job done by this worker, and the GPU-seconds it took, in its stats hash (the admins' dashboard)."""
    key = keys.worker_stats(ctx.worker_name)
    with ctx.conn.pipeline() as pipe:
        pipe.hincrby(key, "jobs_done", 1)
        if gpu_s > 0:
            pipe.hincrbyfloat(key, "gpu_s", gpu_s)
        pipe.expire(key, STATS_TTL_S)
        pipe.execute()


def count_batch(ctx: Context, size: int) -> None:
    """One more sampler call that rendered `size` jobs' grids together, in the worker's stats hash (`batches`,
    `batched_jobs`)."""
    key = keys.worker_stats(ctx.worker_name)
    with ctx.conn.pipeline() as pipe:
        pipe.hincrby(key, "batches", 1)
        pipe.hincrby(key, "batched_jobs", size)
        pipe.expire(key, STATS_TTL_S)
        pipe.execute()
