"""What the worker does before each dequeue: an RQ worker takes relax jobs in fair order, and applies and delivers
outcomes their process left unsettled."""

from __future__ import annotations

import time
from typing import Any

import redis

from core import jobs, keys, queue
from core.models import tiny_model
from core.settings import WorkerSettings
from quotas import admission, ledger
from quotas.tiers import load_config
from tests.worker.test_jobs import SeenAtDelivery
from worker import relax
from worker.context import Context
from worker.rq_worker import ImagineWorker

TIER = load_config().tiers["pro"]


def submit(conn: redis.Redis, spec, member: str, n: int, now: float) -> list[str]:
    """Admit and enqueue `n` relax jobs for `member`."""
    req = admission.AdmissionRequest(
        job_ids=tuple(jobs.new_job_id() for _ in range(n)), mode="relax", model=spec.model,
        width=spec.width, height=spec.height, steps=spec.steps, now=now,
    )
    got = admission.admit(conn, member, TIER, req)
    for job_id in got.job_ids:
        queue.enqueue(conn, spec, f"discord:{member}", job_id=job_id)
    return list(got.job_ids)


def context(conn: redis.Redis, poster: Any = None) -> Context:
    """A worker context without an engine: nothing here renders."""
    return Context(conn=conn, engine=None, model=tiny_model(), settings=WorkerSettings(device="cpu"),
                   worker_name="w", poster=poster)


def worker(conn: redis.Redis) -> ImagineWorker:
    return ImagineWorker(
        queue.lane_names("tiny"), connection=conn, serializer=queue.SERIALIZER, context=context(conn),
        job_heartbeat_ttl_s=30, job_timeout_s=60,
    )


def test_rq_worker_dequeues_relax_in_fair_order(redis_conn, tiny_spec):
    """The real RQ worker's dequeue gives another member's single job right after the burst's first job."""
    import dataclasses

    spec = dataclasses.replace(tiny_spec, mode="relax")
    now = time.time()
    burst = submit(redis_conn, spec, "g:a", 10, now)
    (single,) = submit(redis_conn, spec, "g:b", 1, now + 1)
    w = worker(redis_conn)
    taken = []
    for _ in range(3):
        result = w.dequeue_job_and_maintain_ttl(timeout=1)
        assert result is not None
        taken.append(result[0].id)
        jobs.mark_running(redis_conn, result[0].id, w.name)
    assert taken == [burst[0], single, burst[1]]


def test_before_dequeue_settles_and_delivers_outcomes_left_unsettled(redis_conn, tiny_spec):
    """A job made final by a process that died before concluding it is settled and then delivered, once, by the next
    worker's sweep; a later sweep does neither again."""
    now = time.time()
    (job_id,) = submit(redis_conn, tiny_spec, "g:a", 1, now)
    jobs.mark_running(redis_conn, job_id, "gone")
    jobs.add_gpu_seconds(redis_conn, job_id, 3.0)
    assert jobs.finish(redis_conn, job_id, jobs.DONE)  # and its process died here
    assert redis_conn.exists(keys.quota_reservation(job_id))
    poster = SeenAtDelivery()
    before = relax.BeforeDequeue(context(redis_conn, poster), queue.lane_names("tiny"), clock=lambda: now)
    before()
    assert not redis_conn.exists(keys.quota_reservation(job_id))
    assert ledger.top_users(redis_conn, "g", now=now, policy=load_config().period) == [("g:a", 3.0)]
    assert [(d["job_id"], d["state"], d["reserved"]) for d in poster.delivered] == [(job_id, "done", False)]
    before.clock = lambda: now + relax.RECONCILE_INTERVAL_S
    before()
    assert len(poster.delivered) == 1


def test_before_dequeue_survives_redis_errors(tiny_spec):
    """With Redis unreachable the sweep logs and returns: RQ's own dequeue then reports the outage."""
    conn = redis.Redis(port=1, socket_connect_timeout=0.2)
    relax.BeforeDequeue(context(conn), queue.lane_names("tiny"))()
