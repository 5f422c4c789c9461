"""Enqueueing on RQ lanes with the JSON serializer, queue positions, cancel (real Redis)."""

from __future__ import annotations

import json
import zlib

import pytest
import redis
from rq.job import Job, JobStatus

from core import jobs, queue
from tests.core.test_jobs import make_spec


def test_enqueue_puts_json_payload_on_the_lane(redis_conn: redis.Redis):
    """The RQ job has our id, the dotted job function (one the workers run), one JSON payload (no pickle), one retry
    and no callback (failures are the worker's job class's business)."""
    spec = make_spec()
    job_id = queue.enqueue(redis_conn, spec, "discord:42")
    raw = redis_conn.hget(f"rq:job:{job_id}", "data")
    assert json.loads(zlib.decompress(raw))[0] == queue.JOB_FUNCTION  # type: ignore[arg-type]  # JSON, not pickle
    job = Job.fetch(job_id, connection=redis_conn, serializer=queue.SERIALIZER)
    assert job.func_name == "worker.jobs.imagine"
    assert job.args == [{"job_id": job_id, "spec": spec.to_dict(), "owner": "discord:42", "kind": "grid", "source": {}}]
    assert (job.origin, job.retries_left, job.description) == ("fast:tiny", 1, f"imagine {job_id}")
    assert job.func_name in queue.JOB_FUNCTIONS
    assert job.failure_callback is None
    assert jobs.get(redis_conn, job_id).state == "queued"  # type: ignore[union-attr]


def test_relax_mode_uses_the_relax_lane(redis_conn):
    """A relax spec goes to relax:<model>."""
    job_id = queue.enqueue(redis_conn, make_spec(mode="relax"), "discord:42")
    assert queue.rq_queue(redis_conn, "relax:tiny").get_job_ids() == [job_id]
    assert queue.lane_names("tiny") == ["fast:tiny", "relax:tiny"]


def test_position_counts_fast_jobs_ahead_of_relax(redis_conn):
    """Fast jobs are numbered in order; a relax job waits behind every fast job of its model."""
    fast = [queue.enqueue(redis_conn, make_spec(seed=s), "o") for s in range(3)]
    relax = queue.enqueue(redis_conn, make_spec(mode="relax"), "o")
    assert [queue.position(redis_conn, j) for j in fast] == [0, 1, 2]
    assert queue.position(redis_conn, relax) == 3


def test_position_of_running_or_unknown_job_is_none(redis_conn):
    """Only a waiting job has a position."""
    job_id = queue.enqueue(redis_conn, make_spec(), "o")
    jobs.mark_running(redis_conn, job_id, "w1")
    assert queue.position(redis_conn, job_id) is None
    assert queue.position(redis_conn, "0" * 32) is None


def test_cancel_queued_job_at_once(redis_conn):
    """A queued job is cancelled on the spot and leaves its RQ queue."""
    job_id = queue.enqueue(redis_conn, make_spec(), "o")
    assert queue.cancel(redis_conn, job_id, reason="changed my mind") == queue.CancelResult.CANCELLED
    rec = jobs.get(redis_conn, job_id)
    assert (rec.state, rec.reason) == ("cancelled", "changed my mind")  # type: ignore[union-attr]
    assert queue.rq_queue(redis_conn, "fast:tiny").count == 0
    assert Job.fetch(job_id, connection=redis_conn, serializer=queue.SERIALIZER).get_status() == JobStatus.CANCELED


def test_cancel_running_job_raises_the_flag(redis_conn):
    """A running job stays running, with the flag its worker reads set."""
    job_id = queue.enqueue(redis_conn, make_spec(), "o")
    jobs.mark_running(redis_conn, job_id, "w1")
    assert queue.cancel(redis_conn, job_id) == queue.CancelResult.REQUESTED
    assert jobs.get(redis_conn, job_id).state == "running"  # type: ignore[union-attr]
    assert jobs.cancel_requested(redis_conn, job_id)


def test_cancel_final_or_unknown_job(redis_conn):
    """Cancelling a finished job is too late; an unknown id raises LookupError."""
    job_id = queue.enqueue(redis_conn, make_spec(), "o")
    jobs.finish(redis_conn, job_id, jobs.DONE)
    assert queue.cancel(redis_conn, job_id) == queue.CancelResult.TOO_LATE
    assert not jobs.cancel_requested(redis_conn, job_id)
    with pytest.raises(LookupError):
        queue.cancel(redis_conn, "0" * 32)


def test_only_the_imagine_function_is_a_job_function():
    """The allow-list the workers check names exactly the function the bot enqueues."""
    assert queue.JOB_FUNCTIONS == frozenset({queue.JOB_FUNCTION}) == frozenset({"worker.jobs.imagine"})


def test_redis_location_never_shows_the_password():
    """Messages and logs name Redis by host, port and db only."""
    assert queue.redis_location("redis://:s3cret@redis:6380/2") == "redis:6380/2"
    assert queue.redis_location("redis://user:s3cret@localhost") == "localhost:6379/0"
