"""The job function and everything that follows a job's outcome, in the order it happens.

`python -m worker` builds one `Context` (the warm engine, Redis, Discord delivery) and runs jobs through
`ImagineJob`, the RQ job class at the bottom of this file: it runs only the functions named in
`core.queue.JOB_FUNCTIONS` (any other job is refused unrun, counted, and not retried) and calls them as
`func(ctx, payload)`. `imagine` then: reads the payload, marks the job running, renders it (`worker.kinds`),
stores the images and makes the job final (`core.jobs.finish`, the one transition), and concludes it: `conclude`
settles the job's quota (`quotas.apply_outcome`), then delivers the outcome to Discord (`ctx.poster`).

Failures end in the same `conclude`. A permanent one (`GenerationFailed`, a malformed payload) is final at once and
not retried; a cancelled job ends `cancelled`. Any other failed attempt (out of memory, an unexpected exception, the
worker's time limit, or a worker killed mid-job, which RQ's registry cleanup finds in some worker's maintenance)
reaches `attempt_failed` through `ImagineJob.failure_callback`: queued again for RQ's one retry, or failed for good
and concluded. An outcome whose process died before concluding it is concluded by `worker.relax` (the quota
reconcile backstop). Each step happens once however often it is reached: the transition is a Lua script, the
quota is applied once, and a delivered job is not delivered again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, ClassVar

import redis
from PIL import Image
from rq import get_current_job
from rq.job import Job
from rq.registry import AbandonedJobError
from rq.timeouts import JobTimeoutException
from rq.utils import import_attribute

import quotas
from core import jobs, keys, queue
from core.errors import (
    GenerationFailed,
    ImagineError,
    JobCancelled,
    JobRefused,
    MalformedPayload,
    TransientGenerationError,
)
from core.payload import JOB_ID, JobPayload, check_fits
from core.safety import safety_of
from core.spec import JobSpec
from worker import kinds, output_check
from worker.context import Context, count_job_done
from worker.delivery import LiveMessage
from worker.grid import encode_pngs

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.5
"""Least time between two progress records (the last step is always recorded)."""


def imagine(ctx: Context, payload: Any) -> dict[str, Any]:
    """Make the images of one job, store them, and conclude it; RQ's job function (`worker.jobs.imagine`).

    Args:
        ctx: the worker's context (handed by `ImagineJob`).
        payload: `{"job_id", "spec": JobSpec.to_dict(), "owner", "kind", "source"}` as `core.queue.payload` wrote it.

    Returns:
        `{"job_id", "state"}` with the state the job ended in (or already had, when it was cancelled while queued).

    Raises:
        TransientGenerationError: the device ran out of memory (RQ retries the job once).
        GenerationFailed: a permanent failure, recorded and concluded as the job's outcome; RQ does not retry it.
        MalformedPayload: the payload is not one this project writes (`core.payload`); failed, not retried.
    """
    conn = ctx.conn
    # 1. Read the payload.
    job_id, spec, kind, source = _read(ctx, payload)
    # 2. Mark it running (unless it is final already).
    skipped = begin(ctx, job_id)
    if skipped is not None:
        return skipped
    # 3. Render it, showing progress on its Discord message.
    live = live_message(ctx, job_id)
    try:
        progress = progress_of(ctx, job_id, spec, live)
        hooks = kinds.Hooks(progress, lambda: jobs.cancel_requested(conn, job_id), ctx.settings.preview_interval_s)
        output = kinds.make(ctx, job_id, kind, spec, source, hooks)
    except JobCancelled:
        close_live(live)
        end_cancelled(ctx, job_id)
        return {"job_id": job_id, "state": jobs.CANCELLED}
    except GenerationFailed as exc:
        close_live(live)
        if not isinstance(exc, TransientGenerationError):
            _fail_without_retry(ctx, job_id, str(exc))
        raise
    finally:
        close_live(live)  # before the outcome: no progress edit may follow it
    # 4. and 5.
    return complete(ctx, job_id, spec, output)


def begin(ctx: Context, job_id: str) -> dict[str, Any] | None:
    """Step 2 of a job: mark it running. None when it should be rendered; else what the job function returns for a
    job that is final already (one whose outcome was not delivered yet is concluded now)."""
    if jobs.mark_running(ctx.conn, job_id, ctx.worker_name):
        return None
    record = jobs.get(ctx.conn, job_id)
    state = record.state if record else "unknown"
    log.info("job %s is %s already: skipped", job_id, state)
    if record is not None and record.state == jobs.DONE:
        conclude(ctx, record)  # an attempt that died between its outcome and its delivery
    return {"job_id": job_id, "state": state}


def progress_of(ctx: Context, job_id: str, spec: JobSpec, live: LiveMessage | None, *, slowed: bool = True
                ) -> _Progress:
    """The job's on_progress: its record and its live Discord message; no previews of images the safety check has
    not seen yet. `slowed`: this one sleeps WORKER_TEST_STEP_DELAY_S per step (one job of a batch does)."""
    previews = not (safety_of(spec).check_outputs and ctx.classifier is not None)
    delay_s = ctx.settings.test_step_delay_s if slowed else 0.0
    return _Progress(ctx.conn, job_id, live, step_delay_s=delay_s, previews=previews)


def end_cancelled(ctx: Context, job_id: str) -> None:
    """A job whose cancel the render saw: final `cancelled` with its cancel reason, refunded and shown."""
    end_job(ctx, job_id, jobs.CANCELLED, jobs.cancel_reason(ctx.conn, job_id))


def complete(ctx: Context, job_id: str, spec: JobSpec, output: kinds.Output) -> dict[str, Any]:
    """Steps 4 and 5 of a rendered job: store its images and make it done, then settle its quota and deliver it."""
    conn = ctx.conn
    # 4. Store the images and make the job done: the shown PNG is written in the round trip that publishes the
    # outcome; a grid's four images right after it, before the grid is delivered with its buttons.
    ttl_s = ctx.settings.image_ttl_s
    if not jobs.finish(conn, job_id, jobs.DONE, stage=lambda pipe: stage_output(pipe, job_id, output, ttl_s=ttl_s),
                       after_outcome=lambda: store_images(conn, job_id, output.later, ttl_s=ttl_s)):
        record = jobs.get(conn, job_id)  # ended meanwhile by someone else (an admin's cancel of a stuck job)
        return {"job_id": job_id, "state": record.state if record else "unknown"}
    count_job_done(ctx, gpu_s=output.gpu_s)
    # 5. Settle its quota, then deliver it.
    record = jobs.get(conn, job_id)
    if record is not None:
        conclude(ctx, record)
    if output.report:
        output_check.report(conn, ctx.poster.http if ctx.poster else None, job_id, spec, output.report)
    return {"job_id": job_id, "state": jobs.DONE}


def conclude(ctx: Context, record: jobs.JobRecord) -> None:
    """What follows a job's final record, in order: settle its quota (charge its GPU time when done, refund it
    otherwise), then show its outcome in Discord. Each happens once however often this is called."""
    quotas.apply_outcome(ctx.conn, record.job_id)
    if ctx.poster is not None:
        ctx.poster.deliver_outcome(ctx.conn, record)


def attempt_failed(ctx: Context, job_id: str, exc: BaseException | None, *, retries_left: int) -> None:
    """After an attempt raised, ran out of time, or was abandoned by a killed worker: with retries left the job is
    queued again (RQ re-runs it); without, it fails with a reason for the user and is concluded. A job the attempt
    made final already (a permanent failure) keeps its own reason."""
    reason = failure_reason(exc)
    if retries_left > 0:
        if jobs.mark_retrying(ctx.conn, job_id, reason):
            log.info("job %s: attempt failed (%s); RQ retries it", job_id, reason)
    elif end_job(ctx, job_id, jobs.FAILED, reason):
        log.warning("job %s failed: %s", job_id, reason)


def failure_reason(exc: BaseException | None) -> str:
    """Words for the user about why an attempt failed."""
    if isinstance(exc, AbandonedJobError):
        return "the worker running it stopped responding"
    if isinstance(exc, JobTimeoutException):
        return "it took longer than the worker's time limit"
    if isinstance(exc, ImagineError) and str(exc):
        return str(exc)
    name = type(exc).__name__ if exc is not None else "unknown error"
    return f"the worker hit an unexpected error ({name})"


def stage_output(pipe: redis.client.Pipeline, job_id: str, output: kinds.Output, *, ttl_s: int) -> None:
    """Queue on `pipe` the writes of each image's PNG (`keys.job_image`), the PNG the job is shown as
    (`keys.job_grid`) and which images the safety check replaced (`keys.job_flagged`), for `ttl_s`; and the GPU
    time that made them (the job's `gpu_s`) and the work it rendered (`quotas.record_work`)."""
    for index, png in enumerate(output.images):
        pipe.set(keys.job_image(job_id, index), png, ex=ttl_s)
    pipe.set(keys.job_grid(job_id), output.shown, ex=ttl_s)
    if output.prompts:
        pipe.set(keys.job_prompts(job_id), json.dumps(list(output.prompts)), ex=ttl_s)
    output_check.save_flags(pipe, job_id, output.flagged, output.action, ttl_s=ttl_s)
    if output.gpu_s > 0:
        pipe.hincrbyfloat(keys.job(job_id), "gpu_s", output.gpu_s)
    quotas.record_work(pipe, job_id, output.work, ttl_s=ttl_s)


def store_images(conn: redis.Redis, job_id: str, images: Sequence[Image.Image], *, ttl_s: int) -> None:
    """Encode (in parallel) and store `images` as the job's `keys.job_image` 0..n-1, for `ttl_s`."""
    if not images:
        return
    with conn.pipeline(transaction=False) as pipe:
        for index, png in enumerate(encode_pngs(images)):
            pipe.set(keys.job_image(job_id, index), png, ex=ttl_s)
        pipe.execute()


def end_job(ctx: Context, job_id: str, state: jobs.State, reason: str) -> bool:
    """Make the job final in `state` and conclude it; False (and nothing else) when it was final already."""
    if not jobs.finish(ctx.conn, job_id, state, reason=reason):
        return False
    record = jobs.get(ctx.conn, job_id)
    if record is not None:
        conclude(ctx, record)
    return True


def _read(ctx: Context, payload: Any) -> tuple[str, JobSpec, str, dict[str, Any]]:
    """Job id, spec, kind and source of a payload, checked whole by `core.payload` before anything else; a malformed
    one, or one for another model, fails without retry. Its job id must be the RQ job's own: a payload can fail
    only the job it came in."""
    rq_job = get_current_job()
    try:
        checked = JobPayload.from_json(payload)
        if rq_job is not None and checked.job_id != rq_job.id:
            raise MalformedPayload("job_id is not the id of the job that carries it")
    except MalformedPayload as exc:
        reason = f"malformed job payload: {exc}"
        log.warning("job %s refused: %s", _shown(rq_job.id if rq_job else None), reason)
        ours = rq_job.id if rq_job is not None else payload.get("job_id") if isinstance(payload, dict) else None
        _fail_without_retry(ctx, ours if isinstance(ours, str) and JOB_ID.fullmatch(ours) else None, reason)
        raise MalformedPayload(reason) from None
    job_id, spec = checked.job_id, checked.spec
    try:
        if spec.model != ctx.model.name:
            raise GenerationFailed(f"this worker serves model {ctx.model.name!r}, not {spec.model!r}")
        check_fits(spec, ctx.model, checked.kind)
    except (GenerationFailed, MalformedPayload) as exc:
        reason = str(exc) if isinstance(exc, GenerationFailed) else f"malformed job payload: {exc}"
        _fail_without_retry(ctx, job_id, reason)
        raise GenerationFailed(reason) from None
    return job_id, spec, checked.kind, checked.source_dict()


def live_message(ctx: Context, job_id: str) -> LiveMessage | None:
    """Progress edits of the job's Discord message, when it has one; starts with `(Waiting to start)`."""
    if ctx.poster is None:
        return None
    live = ctx.poster.live(ctx.conn, job_id, min_interval_s=ctx.settings.preview_interval_s)
    if live is not None:
        live.started()
    return live


def close_live(live: LiveMessage | None) -> None:
    """Stop the job's progress edits (None: it has no message)."""
    if live is not None:
        live.close()


def _fail_without_retry(ctx: Context, job_id: str | None, reason: str) -> None:
    """Fail the job for good and conclude it, and tell RQ not to retry this attempt (its failure is not going to go
    away)."""
    if job_id is not None:
        end_job(ctx, job_id, jobs.FAILED, reason)
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


class ImagineJob(Job):
    """RQ's job as this project's worker runs it: only a function of `core.queue.JOB_FUNCTIONS`, called as
    `func(ctx, *args)`; a failed attempt handled by `attempt_failed`; no callback a job names is ever imported.

    The context is a class attribute of a per-worker subclass made once at start, `ImagineJob.bound_to(ctx)`, which
    the worker uses as its `job_class`. RQ builds jobs from that class alone (`job_class.fetch`), both the ones the
    worker dequeues and the abandoned ones its maintenance finds in the started registries, so both see `ctx`.

    A job naming any other function (a hand-made `os.system` job, say) is refused before anything is imported: it
    fails without retry with a `JobRefused` reason in RQ's FailedJobRegistry, its id and function name (never its
    arguments) are logged, and it is counted in `keys.refused_jobs`. No job record is touched: it is not ours.
    """

    context: ClassVar[Context | None] = None
    prepared: ClassVar[dict[str, Any]] = {}
    """Outcomes of jobs the worker rendered in a batch (`worker.batch`), by job id: performing such a job returns
    its outcome (or raises its error) instead of calling the job function, so RQ records each job as its own."""

    @classmethod
    def bound_to(cls, ctx: Context) -> type[ImagineJob]:
        """A subclass whose jobs are handed `ctx`."""
        return type(cls.__name__, (cls,), {"context": ctx, "prepared": {}})

    @property
    def func(self) -> Callable[..., Any]:
        """The job function, imported only when it is one of `core.queue.JOB_FUNCTIONS`.

        Raises:
            JobRefused: it is not.
        """
        name = self.func_name
        if name not in queue.JOB_FUNCTIONS or self.instance is not None:
            raise JobRefused(f"job function {_shown(name)!r} is not one of this project's job functions; not run")
        return import_attribute(name)

    def _execute(self) -> Any:
        ctx = self.context
        if ctx is None:
            raise RuntimeError("ImagineJob runs only as ImagineJob.bound_to(ctx), inside `python -m worker`")
        try:
            func = self.func
        except JobRefused:
            self.retries_left = 0  # it would be refused again
            _count_refused(ctx.conn, self.id, self.func_name)
            raise
        if self.id in self.prepared:
            outcome = self.prepared.pop(self.id)
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        return func(ctx, *self.args, **self.kwargs)

    @property
    def failure_callback(self) -> Callable[..., None]:
        """What RQ calls after a failed attempt (also for an abandoned one, from its registry cleanup)."""
        return self._attempt_failed

    @property
    def success_callback(self) -> None:
        return None

    @property
    def stopped_callback(self) -> None:
        return None

    def _attempt_failed(
        self,
        job: Job,
        connection: redis.Redis,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.context is None or isinstance(exc, JobRefused):
            return
        attempt_failed(self.context, self.id, exc, retries_left=self.retries_left or 0)


def _shown(name: str | None) -> str:
    """A job's function name as logged and counted: it is the sender's choice, so cut to a bounded length."""
    return (name or "")[: keys.REFUSED_NAME_MAX_CHARS]


def _count_refused(conn: redis.Redis, job_id: str, name: str | None) -> None:
    """Log a refused job by id and function name (never its arguments) and count it for admins."""
    log.warning("job %s refused: its function %r is not one of this project's job functions", job_id, _shown(name))
    try:
        with conn.pipeline() as pipe:
            pipe.hincrby(keys.refused_jobs(), _shown(name), 1)
            pipe.incr(keys.refused_jobs_total())
            pipe.execute()
    except redis.RedisError as exc:
        log.warning("job %s: refusal not counted: %s", job_id, exc)
