"""The job function: a JSON payload in, calls on the warm engine, images and an outcome in Redis out.

Failures are sorted here. A transient one (out of memory) or an unexpected exception is re-raised so that RQ runs
the job once more (`core.queue.on_failure` records the retry, or the final failure once RQ gives up). A permanent
one (`GenerationFailed`, a malformed payload) is final at once and not retried. A cancelled job ends `cancelled`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import redis
from PIL import Image
from rq import get_current_job

from core import jobs, keys
from core.errors import GenerationFailed, JobCancelled, TransientGenerationError
from core.spec import JobSpec
from worker import runtime
from worker.grid import compose_grid, encode_png

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.5
"""Least time between two progress records (the last step is always recorded)."""


def imagine(payload: dict[str, Any]) -> dict[str, Any]:
    """Render the grid of one job and store it; RQ's job function (`worker.jobs.imagine`).

    Args:
        payload: `{"job_id", "spec": JobSpec.to_dict(), "owner"}` as `core.queue.enqueue` wrote it.

    Returns:
        `{"job_id", "state"}` with the state the job ended in (or already had, when it was cancelled while queued).

    Raises:
        TransientGenerationError: the device ran out of memory (RQ retries the job once).
        GenerationFailed: a permanent failure, recorded as the job's outcome; RQ does not retry it.
    """
    rt = runtime.current()
    conn = rt.conn
    job_id, spec = _read(conn, payload, rt.model.name)
    if not jobs.mark_running(conn, job_id, rt.worker_name):
        record = jobs.get(conn, job_id)
        state = record.state if record else "unknown"
        log.info("job %s is %s already: skipped", job_id, state)
        return {"job_id": job_id, "state": state}
    try:
        images = _render(rt, job_id, spec)
    except JobCancelled:
        jobs.finish(conn, job_id, jobs.CANCELLED, reason=jobs.cancel_reason(conn, job_id))
        return {"job_id": job_id, "state": jobs.CANCELLED}
    except TransientGenerationError:
        raise
    except GenerationFailed as exc:
        _fail_without_retry(conn, job_id, str(exc))
        raise
    store_images(conn, job_id, images, ttl_s=rt.settings.image_ttl_s)
    if not jobs.finish(conn, job_id, jobs.DONE):
        record = jobs.get(conn, job_id)  # ended meanwhile by someone else (an admin's cancel of a stuck job)
        return {"job_id": job_id, "state": record.state if record else "unknown"}
    runtime.count_job_done(rt)
    return {"job_id": job_id, "state": jobs.DONE}


def store_images(conn: redis.Redis, job_id: str, images: Sequence[Image.Image], *, ttl_s: int) -> None:
    """Store the PNG of each image and of their 2x2 grid under `keys.job_image` / `keys.job_grid` for `ttl_s`."""
    with conn.pipeline(transaction=False) as pipe:
        for index, image in enumerate(images):
            pipe.set(keys.job_image(job_id, index), encode_png(image), ex=ttl_s)
        pipe.set(keys.job_grid(job_id), encode_png(compose_grid(images)), ex=ttl_s)
        pipe.execute()


def _read(conn: redis.Redis, payload: dict[str, Any], model: str) -> tuple[str, JobSpec]:
    """The job id and spec of a payload; a malformed one, or one for another model, fails without retry."""
    job_id = payload.get("job_id") if isinstance(payload, dict) else None
    if not isinstance(job_id, str) or not job_id:
        _fail_without_retry(conn, None, "malformed job payload: no job_id")
        raise GenerationFailed("malformed job payload: no job_id")
    try:
        spec = JobSpec.from_dict(payload["spec"])
    except (KeyError, TypeError, ValueError) as exc:
        reason = f"malformed job payload: {exc}"
        _fail_without_retry(conn, job_id, reason)
        raise GenerationFailed(reason) from None
    if spec.model != model:
        reason = f"this worker serves model {model!r}, not {spec.model!r}"
        _fail_without_retry(conn, job_id, reason)
        raise GenerationFailed(reason)
    return job_id, spec


def _render(rt: runtime.Runtime, job_id: str, spec: JobSpec) -> list[Image.Image]:
    """Call the warm engine, recording progress, and add the time it held the device to the job's GPU seconds."""
    progress = _Progress(rt.conn, job_id, step_delay_s=rt.settings.test_step_delay_s)
    started = time.monotonic()
    try:
        return rt.engine.render(
            spec,
            on_progress=progress,
            should_cancel=lambda: jobs.cancel_requested(rt.conn, job_id),
            preview_interval_s=rt.settings.preview_interval_s,
        )
    finally:
        jobs.add_gpu_seconds(rt.conn, job_id, time.monotonic() - started)


def _fail_without_retry(conn: redis.Redis, job_id: str | None, reason: str) -> None:
    """Record the final failure and tell RQ not to retry this attempt (its failure is not going to go away)."""
    if job_id is not None:
        jobs.finish(conn, job_id, jobs.FAILED, reason=reason)
    rq_job = get_current_job()
    if rq_job is not None:
        rq_job.retries_left = 0


class _Progress:
    """The engine's on_progress: records step/total at most every PROGRESS_INTERVAL_S, and the last step."""

    def __init__(self, conn: redis.Redis, job_id: str, *, step_delay_s: float = 0.0) -> None:
        self.conn = conn
        self.job_id = job_id
        self.step_delay_s = step_delay_s
        self.last_s = float("-inf")

    def __call__(self, step: int, total: int, preview: Image.Image | None) -> None:
        now = time.monotonic()
        if step >= total or now - self.last_s >= PROGRESS_INTERVAL_S:
            jobs.set_progress(self.conn, self.job_id, step, total)
            self.last_s = now
        if self.step_delay_s:
            time.sleep(self.step_delay_s)  # WORKER_TEST_STEP_DELAY_S: makes a job slow enough to kill mid-job
