"""Enqueueing jobs on the RQ lanes, their queue position, and cancelling them.

The worker side is named, never imported: the job function is the dotted name `worker.jobs.imagine` and its one
argument is a JSON payload, through RQ's JSON serializer (no pickle: a Redis someone can write to must not run code).
For the same reason a worker runs only the functions named in JOB_FUNCTIONS (`worker.jobs.ImagineJob` refuses any
other before importing it). The payload carries no secrets. What happens when an attempt fails (a retry, the final
failure) is the worker's business: `worker.jobs.ImagineJob`, not a callback named here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import redis
from rq import Queue, Retry
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from core import jobs, keys
from core.payload import KINDS, JobPayload
from core.spec import JobSpec

log = logging.getLogger(__name__)

JOB_FUNCTION = "worker.jobs.imagine"
"""The job function, by dotted name: importing it would pull in torch."""

JOB_FUNCTIONS: frozenset[str] = frozenset({JOB_FUNCTION})
"""Every function a worker may run, by dotted name; a job naming any other is refused unrun (hardening issue)."""

SERIALIZER = JSONSerializer
DESCRIBE_LANE = "describe"
"""The lane of `/describe` jobs: light (a caption, about one image's render at most), they go before every render
instead of waiting behind a long queue; they are still charged to the member's fast or relax time."""

LANES = (DESCRIBE_LANE, "fast", "relax")
"""Lanes of one model, in the order a worker takes them."""


def lane_of(spec: JobSpec, kind: str) -> str:
    """The RQ queue a job of `kind` waits on: the describe lane, or its mode's (`fast:<model>`, `relax:<model>`)."""
    return keys.queue_name(spec.model, DESCRIBE_LANE if kind == "describe" else spec.mode)


def lanes_ahead(spec: JobSpec, kind: str) -> list[str]:
    """The queues whose jobs a worker takes before a job of `kind` put on its lane now, its own last: describe jobs
    wait only behind describe jobs, fast ones behind those too, relax ones behind all."""
    mine = DESCRIBE_LANE if kind == "describe" else spec.mode
    return [keys.queue_name(spec.model, lane) for lane in LANES[: LANES.index(mine) + 1]]

RETRIES = 1
"""An attempt that failed transiently, or whose worker died, runs once more."""

RESULT_TTL_S = 3600
"""How long RQ keeps a finished job's return value (the job record in `core.jobs` is what counts)."""

FAILURE_TTL_S = 7 * 24 * 3600
"""How long RQ keeps a failed job in its FailedJobRegistry, for operators (`rq info`)."""


class CancelResult(StrEnum):
    """What `cancel` did."""

    CANCELLED = "cancelled"  # it was queued: it is cancelled now and will not run
    REQUESTED = "requested"  # it is running: the worker stops it within one sampling step
    TOO_LATE = "too_late"  # it was final already


def lane_names(model: str) -> list[str]:
    """The queues a worker of `model` listens on, fast first."""
    return [keys.queue_name(model, mode) for mode in LANES]


def rq_queue(conn: redis.Redis, name: str) -> Queue:
    """An RQ queue with this project's serializer."""
    return Queue(name, connection=conn, serializer=SERIALIZER)


SINGLE_IMAGE_KINDS = frozenset({"upscale", "upscale2x"})
"""Kinds whose result is one image (`keys.job_image(job, 0)`) rather than a 2x2 grid."""


def payload(
    job_id: str, spec: JobSpec, owner: str, *, kind: str = "grid", source: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The job function's one argument (plain JSON, no secrets).

    `source` names what a button job starts from: `{"job_id": parent, "index": k}` plus, for variations,
    `"strength"` ("strong" or "subtle").
    """
    if kind not in KINDS:
        raise ValueError(f"unknown job kind {kind!r}")
    return {"job_id": job_id, "spec": spec.to_dict(), "owner": owner, "kind": kind, "source": source or {}}


def checked_payload(
    job_id: str, spec: JobSpec, owner: str, *, kind: str = "grid", source: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`payload`, checked as the worker will check it (`core.payload.JobPayload`), before anything is written.

    Raises:
        MalformedPayload: the job is not one a worker would run (an infinite guidance, a bad source...).
    """
    data = payload(job_id, spec, owner, kind=kind, source=source)
    JobPayload.from_json(data)
    return data


# KEYS: the job record. ARGV: 1 the record's created_at (tells this very call run again), 2 how many record
#       arguments follow (field, value, ...), those, then each write as its argument count and its arguments.
# Returns 1 when the job is recorded and queued (now, or by this same call before), 0 when another job has the id.
# One script, so that no failure leaves a `queued` record outside a queue, or a queued job without its record.
ENQUEUE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'created_at') == ARGV[1] then return 1 end
  return 0
end
local n = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], unpack(ARGV, 3, 2 + n))
local i = 3 + n
while i <= #ARGV do
  local argc = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + argc))
  i = i + 1 + argc
end
return 1
"""

_RQ_RECORDER = redis.Redis()
"""A client RQ writes its enqueue onto, on pipelines that are never executed (`rq_writes`): it never connects."""

_RQ_VERSION = (7, 0, 0)
"""What a recording queue tells RQ the server's version is: RQ asks it (INFO) only to keep it on the job object."""


@dataclass(frozen=True)
class EnqueueCall:
    """`ENQUEUE_SCRIPT`'s keys and arguments for one job (sans I/O: the sync `enqueue` and the bot's asyncio
    client send the very same call)."""

    job_id: str
    keys: tuple[str, ...]
    args: tuple[Any, ...]

    def result(self, answer: object) -> str:
        """The job id once the script ran.

        Raises:
            ValueError: another job has this id (nothing was written).
        """
        if not int(answer):  # type: ignore[call-overload]
            raise ValueError(f"job {self.job_id} already exists")
        return self.job_id


def rq_writes(spec: JobSpec, owner: str, *, job_id: str, kind: str, source: dict[str, Any] | None) -> list[tuple]:
    """The commands RQ's own `enqueue_call` writes to put the job on its lane (the queues' set, the job hash, the
    push), recorded on a pipeline that is never executed: the same keys and fields a worker expects, whichever
    client sends them."""
    lane = Queue(lane_of(spec, kind), connection=_RQ_RECORDER, serializer=SERIALIZER)
    lane.redis_server_version = _RQ_VERSION
    pipe = _RQ_RECORDER.pipeline()
    lane.enqueue_call(
        JOB_FUNCTION,
        args=(checked_payload(job_id, spec, owner, kind=kind, source=source),),
        job_id=job_id,
        description=f"imagine {job_id}",
        retry=Retry(max=RETRIES, enqueue_at_front=True),
        result_ttl=RESULT_TTL_S,
        failure_ttl=FAILURE_TTL_S,
        pipeline=pipe,
    )
    return [args for args, _ in pipe.command_stack]


def enqueue_call(
    spec: JobSpec,
    owner: str,
    *,
    job_id: str | None = None,
    kind: str = "grid",
    source: dict[str, Any] | None = None,
    writes: Sequence[tuple[Any, ...]] = (),
    private: bool = False,
) -> EnqueueCall:
    """The `ENQUEUE_SCRIPT` call that records the job, applies `writes` (its delivery, the owner's job list), and
    puts it on its lane and among the open jobs (`keys.open_jobs`), in one atomic step. Arguments as for `enqueue`."""
    job_id = job_id or jobs.new_job_id()
    record = jobs.new_record(spec, owner, kind=kind, source=source, private=private)
    fields = [item for pair in record.items() for item in pair]
    args: list[Any] = [record["created_at"], len(fields), *fields]
    opened = ("ZADD", keys.open_jobs(), record["created_at"], job_id)  # out again at its final move (core.jobs)
    for command in [*writes, opened, *rq_writes(spec, owner, job_id=job_id, kind=kind, source=source)]:
        args += [len(command), *command]
    return EnqueueCall(job_id, (keys.job(job_id),), tuple(args))


def enqueue(
    conn: redis.Redis,
    spec: JobSpec,
    owner: str,
    *,
    job_id: str | None = None,
    kind: str = "grid",
    source: dict[str, Any] | None = None,
    writes: Sequence[tuple[Any, ...]] = (),
    private: bool = False,
) -> str:
    """Record a job and put it on its lane (`lane_of`: `describe:`, `fast:` or `relax:<model>`), in one atomic step.

    Args:
        conn: Redis client (bytes responses, as RQ needs).
        spec: what to render; `spec.model` and `spec.mode` pick the lane.
        owner: who asked for it.
        job_id: the id to use; a fresh one when None.
        kind: one of KINDS.
        source: the parent job and image for button jobs (see `payload`).
        writes: more commands to apply in the same step (`core.delivery.save_writes`, `core.userjobs.add_writes`).
        private: a stealth job (`quotas.Admission.private`): recorded hidden, its images only for its owner.

    Returns:
        The job id (also RQ's job id).

    Raises:
        ValueError: a job with this id exists (nothing was written).
        redis.RedisError: Redis is unreachable (nothing was enqueued, or all of it was).
    """
    call = enqueue_call(spec, owner, job_id=job_id, kind=kind, source=source, writes=writes, private=private)
    try:
        return call.result(conn.eval(ENQUEUE_SCRIPT, len(call.keys), *call.keys, *call.args))
    except redis.ResponseError:  # a write failed inside the script (Redis keeps the writes before it): end the job
        jobs.finish(conn, call.job_id, jobs.FAILED, reason="the job could not be queued")
        raise


def position(conn: redis.Redis, job_id: str) -> int | None:
    """How many jobs a worker of the same model takes before this one (0: it is next).

    A relax job waits behind every fast job of its model, since workers take the fast lane first; every render
    waits behind the describe jobs, and a describe job only behind those before it (`lanes_ahead`).

    Returns:
        The number of jobs ahead, or None when the job is not waiting in a queue (running, final or unknown).
    """
    record = jobs.get(conn, job_id)
    if record is None or record.state != jobs.QUEUED:
        return None
    *before, own = lanes_ahead(record.spec, record.kind)
    index = rq_queue(conn, own).get_job_position(job_id)
    if index is None:
        return None
    return index + sum(rq_queue(conn, lane).count for lane in before)


def cancel(conn: redis.Redis, job_id: str, *, reason: str = "cancelled by its owner") -> CancelResult:
    """Cancel a job: at once when it is queued, within one sampling step when it is running.

    Args:
        conn: Redis client.
        job_id: the job.
        reason: recorded as the job's reason (shown to the user).

    Returns:
        CANCELLED (it was queued; removed from its queue), REQUESTED (it is running; the worker reads the cancel
        flag) or TOO_LATE (it was done, failed or cancelled already).

    Raises:
        LookupError: there is no such job.
    """
    record = jobs.get(conn, job_id)
    if record is None:
        raise LookupError(f"no job {job_id}")
    if record.state == jobs.QUEUED and jobs.finish(conn, job_id, jobs.CANCELLED, reason=reason):
        _drop_from_queue(conn, job_id)
        # No worker will run it, so none would show the outcome: its message still says "Waiting to start". The
        # workers' maintenance delivers outcomes listed here (worker.redelivery), due now.
        conn.zadd(keys.undelivered(), {job_id: time.time()}, nx=True)
        return CancelResult.CANCELLED
    # Running, or it started between the read and the move: the worker stops at its next step.
    if jobs.request_cancel(conn, job_id, reason):
        return CancelResult.REQUESTED
    return CancelResult.TOO_LATE


def redis_location(url: str) -> str:
    """`host:port/db` of a Redis URL, for messages and logs: never the password."""
    parts = urlsplit(url)
    db = parts.path.lstrip("/") or "0"
    return f"{parts.hostname or 'localhost'}:{parts.port or 6379}/{db}"


def _drop_from_queue(conn: redis.Redis, job_id: str) -> None:
    """Remove a cancelled job from its RQ queue (a worker that dequeued it anyway skips it: the record is final)."""
    try:
        rq_job = Job.fetch(job_id, connection=conn, serializer=SERIALIZER)
        if rq_job.get_status() in (JobStatus.QUEUED, JobStatus.SCHEDULED):
            rq_job.cancel()
    except (NoSuchJobError, InvalidJobOperation):
        pass
