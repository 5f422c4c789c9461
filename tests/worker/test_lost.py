"""The sweep for jobs RQ lost track of (`worker.lost`): a worker killed between taking a job off its lane and starting
it leaves the job nowhere; the sweep puts it back, or fails and concludes a job RQ ended without telling anyone, and
leaves every job RQ still has alone. The killed worker is an in-process `ImagineWorker` that stops between two of
its own steps (the real SIGKILL cannot be aimed at a millisecond's window)."""

from __future__ import annotations

import time

import redis
from rq.job import Job, JobStatus

from core import jobs, keys, queue
from quotas import ledger
from quotas.tiers import load_config
from tests.worker.test_jobs import MEMBER, SeenAtDelivery, admit, context
from tests.worker.test_relax import worker
from tests.worker.worker_helpers import record, run_in_process
from worker import lost

GRACE = lost.LOST_GRACE_S
CONFIG = load_config()


def lane(conn: redis.Redis, job_id: str) -> list[str]:
    """The ids waiting in the job's lane, first first."""
    origin = Job.fetch(job_id, connection=conn, serializer=queue.SERIALIZER).origin
    return [i.decode() for i in conn.lrange(queue.rq_queue(conn, origin).key, 0, -1)]


def taken_by_a_worker_that_dies(conn: redis.Redis, *, registered: bool = False) -> Job:
    """A worker takes the next job off its lane (and, `registered`, lists it as started, not yet marked started),
    then dies: nothing of it runs again."""
    w = worker(conn)
    taken = w.dequeue_job_and_maintain_ttl(timeout=1)
    assert taken is not None
    job, _ = taken
    if registered:
        w.prepare_execution(job)
    return job


def test_a_job_taken_by_a_worker_killed_before_it_started_goes_back_to_the_front_and_runs(
        redis_conn, tiny_engine, tiny_spec):
    """Taken off its lane by a worker that died right then: in no queue and no registry, `queued` for good. The first
    sweep after the grace only suspects it; the next, a grace later, puts it back first in its lane, and a worker
    renders it: done, charged once, its outcome delivered once."""
    job_id = admit(redis_conn, tiny_spec)
    other = admit(redis_conn, tiny_spec)
    assert taken_by_a_worker_that_dies(redis_conn).id == job_id
    assert lane(redis_conn, job_id) == [other]
    ctx = context(redis_conn)
    now = time.time()
    assert lost.sweep(ctx, now=now + GRACE) == lost.Swept()  # suspected, not yet lost
    assert lane(redis_conn, job_id) == [other]
    assert lost.sweep(ctx, now=now + 2 * GRACE) == lost.Swept(requeued=[job_id])
    assert lane(redis_conn, job_id) == [job_id, other]
    assert record(redis_conn, job_id).state == jobs.QUEUED
    poster = SeenAtDelivery()
    run_in_process(redis_conn, tiny_engine, poster=poster)
    rec = record(redis_conn, job_id)
    assert (rec.state, rec.attempt) == (jobs.DONE, 1)
    assert [d["job_id"] for d in poster.delivered].count(job_id) == 1
    assert not redis_conn.exists(keys.quota_reservation(job_id))
    assert redis_conn.zcard(keys.open_jobs()) == 0 and not redis_conn.exists(keys.lost_seen())
    assert lost.sweep(ctx, now=now + 3 * GRACE) == lost.Swept()


def test_a_job_registered_but_not_marked_started_is_dropped_by_rq_and_put_back_by_the_sweep(redis_conn, tiny_spec):
    """A worker listed the job in its started registry and died before marking it started: RQ's cleanup of the
    expired entry drops it without calling anyone (the record stays `queued`, the lane empty). The sweep puts it
    back."""
    job_id = admit(redis_conn, tiny_spec)
    job = taken_by_a_worker_that_dies(redis_conn, registered=True)
    ctx = context(redis_conn)
    now = time.time()
    assert lost.sweep(ctx, now=now + GRACE) == lost.Swept()  # in the started registry: RQ has it
    registry = queue.rq_queue(redis_conn, job.origin).started_job_registry
    registry.cleanup(now + 3600)  # its heartbeat long expired
    assert (redis_conn.zcard(registry.key), lane(redis_conn, job_id)) == (0, [])
    assert record(redis_conn, job_id).state == jobs.QUEUED
    lost.sweep(ctx, now=now + 2 * GRACE)
    assert lost.sweep(ctx, now=now + 3 * GRACE) == lost.Swept(requeued=[job_id])
    assert lane(redis_conn, job_id) == [job_id]


def test_a_job_rq_failed_without_the_callback_is_failed_refunded_and_shown(redis_conn, tiny_spec):
    """RQ gave up on a job without calling its failure callback (a job stuck in an intermediate queue): its record
    still says `queued`. Lost, it fails with a reason, its reservation is refunded and its outcome delivered, once."""
    job_id = admit(redis_conn, tiny_spec)
    job = taken_by_a_worker_that_dies(redis_conn)
    job.retries_left = 0
    w = worker(redis_conn)
    w.handle_job_failure(job, queue.rq_queue(redis_conn, job.origin), exc_string="stuck in an intermediate queue")
    assert job.get_status() == JobStatus.FAILED and record(redis_conn, job_id).state == jobs.QUEUED
    poster = SeenAtDelivery()
    ctx = context(redis_conn, poster=poster)
    now = time.time()
    lost.sweep(ctx, now=now + GRACE)
    assert lost.sweep(ctx, now=now + 2 * GRACE) == lost.Swept(failed=[job_id])
    rec = record(redis_conn, job_id)
    assert (rec.state, rec.reason) == (jobs.FAILED, lost.LOST_REASON)
    assert [(d["job_id"], d["state"], d["reserved"]) for d in poster.delivered] == [(job_id, "failed", False)]
    assert ledger.usage(redis_conn, MEMBER, CONFIG.tiers["standard"], now=now, policy=CONFIG.period).reserved_s == 0
    assert lost.sweep(ctx, now=now + 3 * GRACE) == lost.Swept() and len(poster.delivered) == 1


def test_jobs_rq_still_has_are_left_alone(redis_conn, tiny_spec):
    """Started by a live worker (in the started registry), or waiting in a lane, however long: never suspected."""
    running = admit(redis_conn, tiny_spec)
    assert taken_by_a_worker_that_dies(redis_conn, registered=True).id == running  # one that lives, here
    jobs.mark_running(redis_conn, running, "alive")
    waiting = admit(redis_conn, tiny_spec)
    ctx = context(redis_conn)
    now = time.time()
    for k in range(1, 5):
        assert lost.sweep(ctx, now=now + k * GRACE) == lost.Swept()
    assert not redis_conn.exists(keys.lost_seen())
    assert lane(redis_conn, waiting) == [waiting]


def test_a_job_that_turns_up_again_is_no_longer_suspected(redis_conn, tiny_spec):
    """Suspected once, then back in its lane: the suspicion is dropped, and a later loss counts from scratch."""
    job_id = admit(redis_conn, tiny_spec)
    job = taken_by_a_worker_that_dies(redis_conn)
    ctx = context(redis_conn)
    now = time.time()
    lost.sweep(ctx, now=now + GRACE)
    assert redis_conn.hexists(keys.lost_seen(), job_id)
    lane_key = queue.rq_queue(redis_conn, job.origin).key
    redis_conn.lpush(lane_key, job_id)
    assert lost.sweep(ctx, now=now + 2 * GRACE) == lost.Swept()
    assert not redis_conn.hexists(keys.lost_seen(), job_id)
    redis_conn.lpop(lane_key)
    assert lost.sweep(ctx, now=now + 3 * GRACE) == lost.Swept()  # suspected anew
    assert lost.sweep(ctx, now=now + 4 * GRACE) == lost.Swept(requeued=[job_id])


def test_young_jobs_are_not_looked_at_and_ended_ones_leave_the_index(redis_conn, tiny_spec):
    """A job younger than the grace is not read at all; a job that ends (here cancelled while queued) leaves the open
    jobs, and so does its suspicion."""
    job_id = admit(redis_conn, tiny_spec)
    taken_by_a_worker_that_dies(redis_conn)
    ctx = context(redis_conn)
    now = time.time()
    lost.sweep(ctx, now=now)
    assert not redis_conn.exists(keys.lost_seen())
    lost.sweep(ctx, now=now + GRACE)
    assert redis_conn.hexists(keys.lost_seen(), job_id)
    assert queue.cancel(redis_conn, job_id) == queue.CancelResult.CANCELLED
    assert redis_conn.zscore(keys.open_jobs(), job_id) is None
    assert lost.sweep(ctx, now=now + 2 * GRACE) == lost.Swept()
    assert not redis_conn.exists(keys.lost_seen())


def test_one_worker_sweeps_at_a_time(redis_conn):
    """Of two workers' maintenance within the same interval, only the first sweeps."""
    assert lost.take_turn(redis_conn, "w1", 15)
    assert not lost.take_turn(redis_conn, "w2", 15)
    redis_conn.delete(keys.lost_sweep_lock())
    assert lost.take_turn(redis_conn, "w2", 15)


def test_the_workers_maintenance_sweeps(redis_conn, tiny_spec):
    """An RQ worker's maintenance runs the sweep (here on a job lost a minute ago, suspected since): it is put back."""
    job_id = admit(redis_conn, tiny_spec)
    taken_by_a_worker_that_dies(redis_conn)
    now = time.time()
    redis_conn.zadd(keys.open_jobs(), {job_id: now - 2 * GRACE})
    redis_conn.hset(keys.lost_seen(), job_id, repr(now - GRACE - 1))
    redis_conn.delete(keys.lost_sweep_lock())  # the dying worker's own maintenance swept (and found nothing)
    worker(redis_conn).run_maintenance_tasks()
    assert lane(redis_conn, job_id) == [job_id]


def test_a_backlog_bigger_than_one_sweep_is_read_whole_over_several(redis_conn, tiny_spec, monkeypatch):
    """With room for 2 jobs a sweep and 4 older jobs waiting in the lane, the newest job, lost, is still found: each
    sweep reads on from where the last stopped, then starts again from the oldest."""
    monkeypatch.setattr(lost, "SWEEP_LIMIT", 2)
    job_id = admit(redis_conn, tiny_spec)
    taken_by_a_worker_that_dies(redis_conn)
    waiting = [queue.enqueue(redis_conn, tiny_spec, "discord:3") for _ in range(4)]
    now = time.time()
    for k, job in enumerate(waiting):  # older than the lost job
        redis_conn.zadd(keys.open_jobs(), {job: now - 100 + k})
    ctx = context(redis_conn)
    requeued = [j for k in range(1, 7) for j in lost.sweep(ctx, now=now + k * GRACE).requeued]
    assert requeued == [job_id]
    assert lane(redis_conn, job_id) == [job_id, *waiting]
