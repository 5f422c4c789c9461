"""Jobs RQ lost track of: found by a sweep of the open jobs, then put back on their lane or failed and concluded.

A worker on several lanes takes a job with BLPOP (RQ keeps no intermediate queue for more than one lane) and only
then registers it as started; it marks it `started` a step later still. A worker killed in between (SIGKILL, the OOM
killer, a lost machine, Redis gone for that moment) leaves the job in no queue and no registry, or in the started
registry but not marked started: RQ's cleanup drops such an entry without calling anyone. Nothing would ever run the
job again and its record would say `queued` for good; the member would wait forever and their quota stay reserved.
RQ can also fail a job without the failure callback (one stuck in an intermediate queue), leaving its record open.

So every maintenance one worker (`take_turn`) reads the open jobs (`keys.open_jobs`: put on a lane and not final)
older than LOST_GRACE_S, and where RQ has each: waiting in its lane, taken by a worker (its intermediate queue or
started registry), or waiting for a time (scheduled, deferred) is fine. Any other is suspected (`keys.lost_seen`);
suspected again LOST_GRACE_S later (a live worker is in that gap for milliseconds), it is lost:
- RQ still means to run it (queued or started, not anywhere): it goes back to the front of its lane, and a record
  left `running` is `queued` again. It costs no retry: the attempt never got going.
- RQ ended it (failed, stopped, canceled, finished) or has no such job: it fails for good and is concluded
  (refunded, its outcome shown), as any failure is (`worker.jobs.end_job`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from core import jobs, keys, queue
from worker.context import Context
from worker.jobs import end_job

log = logging.getLogger(__name__)

LOST_GRACE_S = 30.0
"""How long a job must be open before it is looked at, and how long it must stay nowhere before it is lost."""

SWEEP_LIMIT = 2000
"""Most open jobs one sweep reads: the next ones after where the last sweep stopped (`keys.lost_sweep_cursor`), so
that a backlog bigger than this is read whole over a few sweeps, its newest jobs too."""

WAITING_FOR_A_TIME = frozenset({JobStatus.SCHEDULED, JobStatus.DEFERRED})
RQ_MEANS_TO_RUN = frozenset({JobStatus.QUEUED, JobStatus.STARTED, JobStatus.CREATED})

LOST_REASON = "the worker that took it stopped before it started"


@dataclass
class Swept:
    """What one sweep did: ids of the jobs it put back on their lane, and of those it failed."""

    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def take_turn(conn: redis.Redis, worker_name: str, seconds: float) -> bool:
    """Whether this worker sweeps now: True for one worker in each `seconds`."""
    return bool(conn.set(keys.lost_sweep_lock(), worker_name, nx=True, px=max(1, int(seconds * 1000))))


def sweep(ctx: Context, *, now: float, grace_s: float = LOST_GRACE_S) -> Swept:
    """Find the open jobs RQ has nowhere, and put back or fail those that stayed so for `grace_s` (see the module)."""
    conn = ctx.conn
    swept = Swept()
    ids = _next_open(conn, now - grace_s)
    nowhere = whereabouts(conn, ids)
    seen = dict(zip(ids, conn.hmget(keys.lost_seen(), ids), strict=True)) if ids else {}
    lost: dict[str, str] = {}
    with conn.pipeline(transaction=False) as pipe:
        for job_id in ids:
            first = seen[job_id]
            if job_id not in nowhere:
                if first is not None:
                    pipe.hdel(keys.lost_seen(), job_id)  # it turned up: a later loss counts from then
            elif first is None:
                pipe.hset(keys.lost_seen(), job_id, repr(now))
            elif now - float(first) >= grace_s:
                lost[job_id] = nowhere[job_id]
        pipe.execute()
    for job_id, status in lost.items():
        record = jobs.get(conn, job_id)
        if record is None or record.final:  # it ended since it was read
            conn.zrem(keys.open_jobs(), job_id)
        elif status in RQ_MEANS_TO_RUN and _put_back(conn, job_id, record):
            swept.requeued.append(job_id)
        elif end_job(ctx, job_id, jobs.FAILED, LOST_REASON):
            swept.failed.append(job_id)
        conn.hdel(keys.lost_seen(), job_id)
    _forget_closed(conn)
    if swept.requeued or swept.failed:
        log.warning("lost jobs: %d put back on their lane %s, %d failed %s",
                    len(swept.requeued), swept.requeued, len(swept.failed), swept.failed)  # fmt: skip
    return swept


def _next_open(conn: redis.Redis, created_before: float) -> list[str]:
    """The next SWEEP_LIMIT open jobs created before `created_before`, after the cursor; from the oldest again once
    the cursor reached the newest."""
    cursor = _text(conn.get(keys.lost_sweep_cursor()))
    rows = conn.zrangebyscore(keys.open_jobs(), f"({cursor}" if cursor else "-inf", created_before, start=0,
                              num=SWEEP_LIMIT, withscores=True)
    if len(rows) < SWEEP_LIMIT:
        conn.delete(keys.lost_sweep_cursor())
    else:
        conn.set(keys.lost_sweep_cursor(), repr(float(rows[-1][1])))
    return [_text(job_id) for job_id, _ in rows]


def whereabouts(conn: redis.Redis, ids: list[str]) -> dict[str, str]:
    """RQ's status of each of `ids` that RQ has in no queue or registry it works from ("" when it has no such job);
    the jobs RQ has somewhere are left out."""
    if not ids:
        return {}
    with conn.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(Job.key_for(job_id), "status", "origin")
        rows = [(_text(s), _text(o)) for s, o in pipe.execute()]
    lanes = sorted({origin for _, origin in rows if origin})
    with conn.pipeline(transaction=False) as pipe:
        for lane in lanes:
            rq_lane = queue.rq_queue(conn, lane)
            pipe.lrange(rq_lane.key, 0, -1)
            pipe.lrange(rq_lane.intermediate_queue_key, 0, -1)
            pipe.zrange(rq_lane.started_job_registry.key, 0, -1)  # "<job id>:<execution id>"
        listed = pipe.execute()
    taken = {_text(entry).partition(":")[0] for entries in listed for entry in entries}
    return {job_id: status for job_id, (status, _) in zip(ids, rows, strict=True)
            if job_id not in taken and status not in WAITING_FOR_A_TIME}  # fmt: skip


def _put_back(conn: redis.Redis, job_id: str, record: jobs.JobRecord) -> bool:
    """The lost job at the front of its lane again, its record `queued`; False when RQ has no such job after all."""
    try:
        rq_job = Job.fetch(job_id, connection=conn, serializer=queue.SERIALIZER)
    except NoSuchJobError:
        return False
    if record.state == jobs.RUNNING:
        jobs.mark_retrying(conn, job_id, LOST_REASON)
    queue.rq_queue(conn, rq_job.origin).enqueue_job(rq_job, at_front=True)
    return True


def _forget_closed(conn: redis.Redis) -> None:
    """Drop suspicions of jobs that are not open any more (they ended while suspected)."""
    suspects = [_text(i) for i in conn.hkeys(keys.lost_seen())]
    if not suspects:
        return
    with conn.pipeline(transaction=False) as pipe:
        for job_id in suspects:
            pipe.zscore(keys.open_jobs(), job_id)
        scores = pipe.execute()
    closed = [job_id for job_id, score in zip(suspects, scores, strict=True) if score is None]
    if closed:
        conn.hdel(keys.lost_seen(), *closed)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else "" if value is None else str(value)
