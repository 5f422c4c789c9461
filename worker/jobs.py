"""The job function: a JSON payload in, calls on the warm engine, images and an outcome in Redis out.

Failures are sorted here. A transient one (out of memory) or an unexpected exception is re-raised so that RQ runs
the job once more (`core.queue.on_failure` records the retry, or the final failure once RQ gives up). A permanent
one (`GenerationFailed`, a malformed payload) is final at once and not retried. A cancelled job ends `cancelled`.
Discord sees it through `worker.delivery`: progress edits while it runs, then its outcome from the final hook.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import redis
from PIL import Image
from rq import get_current_job

from core import jobs, keys, queue
from core.errors import GenerationFailed, JobCancelled, TransientGenerationError
from core.safety import safety_of
from core.spec import JobSpec
from worker import kinds, output_check, runtime
from worker.delivery import LiveMessage
from worker.grid import encode_pngs

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.5
"""Least time between two progress records (the last step is always recorded)."""


def imagine(payload: dict[str, Any]) -> dict[str, Any]:
    """Make the images of one job and store them; RQ's job function (`worker.jobs.imagine`).

    Args:
        payload: `{"job_id", "spec": JobSpec.to_dict(), "owner", "kind", "source"}` as `core.queue.payload` wrote it.

    Returns:
        `{"job_id", "state"}` with the state the job ended in (or already had, when it was cancelled while queued).

    Raises:
        TransientGenerationError: the device ran out of memory (RQ retries the job once).
        GenerationFailed: a permanent failure, recorded as the job's outcome; RQ does not retry it.
    """
    rt = runtime.current()
    conn = rt.conn
    job_id, spec, kind, source = _read(conn, payload, rt.model.name)
    if not jobs.mark_running(conn, job_id, rt.worker_name):
        record = jobs.get(conn, job_id)
        state = record.state if record else "unknown"
        log.info("job %s is %s already: skipped", job_id, state)
        if record is not None and record.state == jobs.DONE and rt.poster is not None:
            rt.poster.deliver_outcome(conn, record)  # an attempt that died between its outcome and its delivery
        return {"job_id": job_id, "state": state}
    live = _live_message(rt, job_id)
    try:
        # No previews of images the safety check has not seen yet.
        previews = not (safety_of(spec).check_outputs and rt.classifier is not None)
        progress = _Progress(conn, job_id, live, step_delay_s=rt.settings.test_step_delay_s, previews=previews)
        hooks = kinds.Hooks(progress, lambda: jobs.cancel_requested(conn, job_id), rt.settings.preview_interval_s)
        output = kinds.make(rt, job_id, kind, spec, source, hooks)
    except JobCancelled:
        _close(live)
        jobs.finish(conn, job_id, jobs.CANCELLED, reason=jobs.cancel_reason(conn, job_id))
        return {"job_id": job_id, "state": jobs.CANCELLED}
    except GenerationFailed as exc:
        _close(live)
        if not isinstance(exc, TransientGenerationError):
            _fail_without_retry(conn, job_id, str(exc))
        raise
    finally:
        _close(live)  # before any outcome: no progress edit may follow it (the final hook, `rt.poster`, posts it)
    ttl_s = rt.settings.image_ttl_s
    # The shown PNG is written in the round trip that publishes the outcome; a grid's four images right after it,
    # before the final hooks post the grid with its buttons to Discord.
    if not jobs.finish(conn, job_id, jobs.DONE, stage=lambda pipe: stage_output(pipe, job_id, output, ttl_s=ttl_s),
                       after_outcome=lambda: store_images(conn, job_id, output.later, ttl_s=ttl_s)):
        record = jobs.get(conn, job_id)  # ended meanwhile by someone else (an admin's cancel of a stuck job)
        return {"job_id": job_id, "state": record.state if record else "unknown"}
    runtime.count_job_done(rt)
    if output.report:
        output_check.report(rt, job_id, spec, output.report)
    return {"job_id": job_id, "state": jobs.DONE}


def stage_output(pipe: redis.client.Pipeline, job_id: str, output: kinds.Output, *, ttl_s: int) -> None:
    """Queue on `pipe` the writes of each image's PNG (`keys.job_image`), the PNG the job is shown as
    (`keys.job_grid`) and which images the safety check replaced (`keys.job_flagged`), for `ttl_s`; and the GPU
    time that made them (the job's `gpu_s`)."""
    for index, png in enumerate(output.images):
        pipe.set(keys.job_image(job_id, index), png, ex=ttl_s)
    pipe.set(keys.job_grid(job_id), output.shown, ex=ttl_s)
    output_check.save_flags(pipe, job_id, output.flagged, output.action, ttl_s=ttl_s)
    if output.gpu_s > 0:
        pipe.hincrbyfloat(keys.job(job_id), "gpu_s", output.gpu_s)


def store_images(conn: redis.Redis, job_id: str, images: Sequence[Image.Image], *, ttl_s: int) -> None:
    """Encode (in parallel) and store `images` as the job's `keys.job_image` 0..n-1, for `ttl_s`."""
    if not images:
        return
    with conn.pipeline(transaction=False) as pipe:
        for index, png in enumerate(encode_pngs(images)):
            pipe.set(keys.job_image(job_id, index), png, ex=ttl_s)
        pipe.execute()


def _read(conn: redis.Redis, payload: dict[str, Any], model: str) -> tuple[str, JobSpec, str, dict[str, Any]]:
    """Job id, spec, kind and source of a payload; a malformed one, or one for another model, fails without retry."""
    job_id = payload.get("job_id") if isinstance(payload, dict) else None
    if not isinstance(job_id, str) or not job_id:
        _fail_without_retry(conn, None, "malformed job payload: no job_id")
        raise GenerationFailed("malformed job payload: no job_id")
    kind, source = payload.get("kind") or "grid", payload.get("source") or {}
    try:
        spec = JobSpec.from_dict(payload["spec"])
        if kind not in queue.KINDS or not isinstance(source, dict):
            raise ValueError(f"unknown kind {kind!r}")
    except (KeyError, TypeError, ValueError) as exc:
        reason = f"malformed job payload: {exc}"
        _fail_without_retry(conn, job_id, reason)
        raise GenerationFailed(reason) from None
    if spec.model != model:
        reason = f"this worker serves model {model!r}, not {spec.model!r}"
        _fail_without_retry(conn, job_id, reason)
        raise GenerationFailed(reason)
    return job_id, spec, kind, source


def _live_message(rt: runtime.Runtime, job_id: str) -> LiveMessage | None:
    """Progress edits of the job's Discord message, when it has one; starts with `(Waiting to start)`."""
    if rt.poster is None:
        return None
    live = rt.poster.live(rt.conn, job_id, min_interval_s=rt.settings.preview_interval_s)
    if live is not None:
        live.started()
    return live


def _close(live: LiveMessage | None) -> None:
    if live is not None:
        live.close()


def _fail_without_retry(conn: redis.Redis, job_id: str | None, reason: str) -> None:
    """Record the final failure and tell RQ not to retry this attempt (its failure is not going to go away)."""
    if job_id is not None:
        jobs.finish(conn, job_id, jobs.FAILED, reason=reason)
    rq_job = get_current_job()
    if rq_job is not None:
        rq_job.retries_left = 0


class _Progress:
    """The engine's on_progress: records step/total at most every PROGRESS_INTERVAL_S (and the last step), and hands
    each step to the job's live Discord message, which sends at its own bounded rate."""

    def __init__(
        self,
        conn: redis.Redis,
        job_id: str,
        live: LiveMessage | None = None,
        *,
        step_delay_s: float = 0.0,
        previews: bool = True,
    ) -> None:
        self.conn = conn
        self.job_id = job_id
        self.live = live
        self.step_delay_s = step_delay_s
        self.previews = previews
        self.last_s = float("-inf")

    def __call__(self, step: int, total: int, preview: Image.Image | None) -> None:
        now = time.monotonic()
        if step >= total or now - self.last_s >= PROGRESS_INTERVAL_S:
            jobs.set_progress(self.conn, self.job_id, step, total)
            self.last_s = now
        if self.live is not None and step < total:
            self.live.progress(step, total, preview if self.previews else None)
        if self.step_delay_s:
            time.sleep(self.step_delay_s)  # WORKER_TEST_STEP_DELAY_S: makes a job slow enough to kill mid-job
