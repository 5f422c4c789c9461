"""The job flow of a batch: several grid jobs (or several variations) rendered in one sampler call, each otherwise a
job of its own.

`worker.rq_worker.ImagineWorker` claims the jobs (`worker.claim`), keeps those whose payloads `member` accepts, and
calls `run`. Each job goes through the steps of `worker.jobs.imagine`: marked running (`begin`), a variation's
source image read (`worker.kinds.vary_start`; a job whose source is gone fails alone, before the call), rendered
(here all together, `Engine.render_batch`, each with its own progress, previews and cancel), checked, stored, made
final and concluded (`complete`). What differs is only who pays for the call: each job's `gpu_s` is the call's
time times its share of the rows. The outcomes land in `outcomes` by job id, as the job function would have
returned or raised them; RQ then performs each job, which hands back its outcome
(`worker.jobs.ImagineJob.prepared`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image
from rq.job import Job

from core import jobs, queue
from core.errors import GenerationFailed, JobCancelled, MalformedPayload, TransientGenerationError
from core.images import EXTRAS_KEY as IMAGES_KEY
from core.payload import JobPayload, check_fits
from core.spec import JobSpec
from worker import kinds
from worker.batch_render import Rows
from worker.claim import BATCHED_KINDS, BatchKey
from worker.context import Context
from worker.delivery import LiveMessage
from worker.jobs import begin, close_live, complete, end_cancelled, end_job, live_message, progress_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Member:
    """A job of a batch: its RQ job (for its retries), its checked spec, kind and source, and its `BatchKey`."""

    rq_job: Job
    spec: JobSpec
    kind: str
    source: dict[str, Any]
    key: BatchKey

    @property
    def job_id(self) -> str:
        return self.rq_job.id


def member(ctx: Context, rq_job: Job, key: BatchKey | None = None) -> Member | None:
    """`rq_job` as a member of a batch of `key` (any key when None), or None: it is not a well-formed grid or
    variation job of this worker's model and of that key. A job refused here runs alone, where its failure is
    recorded as always."""
    if rq_job.func_name not in queue.JOB_FUNCTIONS or rq_job.instance is not None or len(rq_job.args) != 1:
        return None
    try:
        checked = JobPayload.from_json(rq_job.args[0])
        if checked.job_id != rq_job.id or checked.kind not in BATCHED_KINDS or checked.spec.model != ctx.model.name:
            return None
        if IMAGES_KEY in checked.spec.extras:  # an image prompt or blend starts from its images: it runs alone
            return None
        check_fits(checked.spec, ctx.model, checked.kind)
    except (MalformedPayload, GenerationFailed):
        return None
    source = checked.source_dict()
    own = BatchKey.of(checked.spec, checked.kind, source.get("strength"))
    if key is not None and own != key:
        return None
    return Member(rq_job, checked.spec, checked.kind, source, own)


def run(ctx: Context, members: Sequence[Member], outcomes: dict[str, Any]) -> None:
    """Render `members` in one call and conclude each; each job's outcome (a return value, or the exception its job
    function would have raised) is put in `outcomes` as soon as it is known."""
    # 2. Mark each running; one final already is skipped, as a lone job is.
    running: list[Member] = []
    for m in members:
        skipped = begin(ctx, m.job_id)
        if skipped is None:
            running.append(m)
        else:
            outcomes[m.job_id] = skipped
    # 3. A variation's source image, before the call: a job whose source is gone (or that is cancelled meanwhile)
    #    ends alone, as it would have alone.
    starts: dict[str, kinds.Start] = {}
    strength = None
    if running and running[0].kind == "vary":
        strength = kinds.vary_strength(running[0].source)  # one strength per batch (`BatchKey`)
        for m in list(running):
            try:
                starts[m.job_id] = kinds.vary_start(ctx, m.job_id, m.spec, m.source,
                                                    lambda job_id=m.job_id: jobs.cancel_requested(ctx.conn, job_id))
            except Exception as exc:
                running.remove(m)
                outcomes[m.job_id] = _ended_alone(ctx, m, exc)
    if not running:
        return
    # 4. Render them together, each showing progress on its own Discord message.
    lives = {m.job_id: live_message(ctx, m.job_id) for m in running}
    rows = [_rows(ctx, m, lives[m.job_id], slowed=k == 0, image=starts[m.job_id].image if starts else None)
            for k, m in enumerate(running)]
    started = time.monotonic()
    try:
        results = ctx.engine.render_batch(rows, preview_interval_s=ctx.settings.preview_interval_s,
                                          strength=strength)
    except JobCancelled:  # every job was cancelled, each ended as its cancel was seen
        results = [None] * len(running)
    except BaseException as exc:  # out of memory, the time limit...: each job's attempt failed (RQ retries it)
        _share_gpu_time(ctx, running, time.monotonic() - started, starts)
        for m in running:
            outcomes[m.job_id] = exc
        raise
    finally:
        for live in lives.values():
            close_live(live)  # before the outcomes: no progress edit may follow them
    share_s = (time.monotonic() - started) / len(running)  # every job has four rows: equal shares
    log.info("rendered a batch of %d %ss (%s)", len(running), running[0].kind, ", ".join(m.job_id for m in running))
    # 5. and 6. Per job: store and make final, then conclude.
    for m, result in zip(running, results, strict=True):
        start = starts.get(m.job_id)
        gpu_s = share_s + (start.gpu_s if start else 0.0)
        if result is None:
            jobs.add_gpu_seconds(ctx.conn, m.job_id, gpu_s)  # recorded, never charged: a cancel refunds
            outcomes[m.job_id] = {"job_id": m.job_id, "state": jobs.CANCELLED}
        elif isinstance(result, GenerationFailed):
            jobs.add_gpu_seconds(ctx.conn, m.job_id, gpu_s)
            outcomes[m.job_id] = _ended_alone(ctx, m, result)  # a broken model stays broken
        else:
            try:
                output = kinds.grid_of(ctx, m.spec, result, gpu_s=gpu_s, kind=m.kind, strength=strength or 1.0,
                                       work=start.work if start else 0.0)
                outcomes[m.job_id] = complete(ctx, m.job_id, m.spec, output)
            except Exception as exc:  # Redis gone mid-way: this job's attempt failed, RQ retries it
                outcomes[m.job_id] = exc


def _ended_alone(ctx: Context, m: Member, exc: Exception) -> Any:
    """The outcome of a job that ends on its own before or in the call, as `worker.jobs.imagine` ends it: cancelled
    (refunded), failed for good (GenerationFailed: not retried), or its attempt failed (anything else: RQ retries)."""
    if isinstance(exc, JobCancelled):
        end_cancelled(ctx, m.job_id)
        return {"job_id": m.job_id, "state": jobs.CANCELLED}
    if isinstance(exc, GenerationFailed) and not isinstance(exc, TransientGenerationError):
        end_job(ctx, m.job_id, jobs.FAILED, str(exc))
        m.rq_job.retries_left = 0
    return exc


def _rows(ctx: Context, m: Member, live: LiveMessage | None, *, slowed: bool, image: Image.Image | None) -> Rows:
    """The job's hooks in the batch: progress on its record and message, its cancel flag, and when its cancel is
    seen, its end at once (its rows are dropped); a variation's source image."""
    job_id = m.job_id

    def dropped() -> None:
        close_live(live)
        end_cancelled(ctx, job_id)

    return Rows(m.spec, progress_of(ctx, job_id, m.spec, live, slowed=slowed),
                lambda: jobs.cancel_requested(ctx.conn, job_id), dropped, image)


def _share_gpu_time(ctx: Context, members: Sequence[Member], seconds: float, starts: dict[str, kinds.Start]
                    ) -> None:
    """A failed call's time, split equally, added to each job's `gpu_s` with the time it spent recreating its source
    image (as a lone failed attempt's is)."""
    for m in members:
        start = starts.get(m.job_id)
        jobs.add_gpu_seconds(ctx.conn, m.job_id, seconds / len(members) + (start.gpu_s if start else 0.0))
