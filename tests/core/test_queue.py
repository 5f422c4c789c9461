"""Enqueueing on RQ lanes with the JSON serializer, queue positions, cancel, and the failure callback (real Redis)."""

from __future__ import annotations

import json
import zlib

import pytest
import redis
from rq.job import Job, JobStatus
from rq.registry import AbandonedJobError
from rq.timeouts import JobTimeoutException

from core import jobs, queue
from core.errors import TransientGenerationError
from tests.core.test_jobs import make_spec


def test_enqueue_puts_json_payload_on_the_lane(redis_conn: redis.Redis):
    """The RQ job has our id, the dotted job function, one JSON payload (no pickle), one retry and our callback."""
    spec = make_spec()
    job_id = queue.enqueue(redis_conn, spec, "discord:42")
    raw = redis_conn.hget(f"rq:job:{job_id}", "data")
    assert json.loads(zlib.decompress(raw))[0] == queue.JOB_FUNCTION  # type: ignore[arg-type]  # JSON, not pickle
    job = Job.fetch(job_id, connection=redis_conn, serializer=queue.SERIALIZER)
    assert job.func_name == "worker.jobs.imagine"
    assert job.args == [{"job_id": job_id, "spec": spec.to_dict(), "owner": "discord:42", "kind": "grid", "source": {}}]
    assert (job.origin, job.retries_left, job.description) == ("fast:tiny", 1, f"imagine {job_id}")
    assert job.failure_callback is queue.on_failure
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


@pytest.mark.parametrize(
    ("retries_left", "state"),
    [(1, "queued"), (0, "failed")],
)
def test_failure_callback_is_final_only_without_retries(redis_conn, retries_left, state):
    """The failure callback records a retry while RQ has retries left, and the final failure only after."""
    job_id = queue.enqueue(redis_conn, make_spec(), "o")
    jobs.mark_running(redis_conn, job_id, "w1")
    job = Job.fetch(job_id, connection=redis_conn, serializer=queue.SERIALIZER)
    job.retries_left = retries_left
    error = TransientGenerationError("out of GPU memory")
    queue.on_failure(job, redis_conn, type(error), error, None)
    rec = jobs.get(redis_conn, job_id)
    assert (rec.state, rec.reason) == (state, "out of GPU memory")  # type: ignore[union-attr]


def test_failure_callback_after_final_state_changes_nothing(redis_conn):
    """A job the job function already failed (permanent error) keeps its own reason when the callback runs."""
    job_id = queue.enqueue(redis_conn, make_spec(), "o")
    jobs.finish(redis_conn, job_id, jobs.FAILED, reason="NaN")
    job = Job.fetch(job_id, connection=redis_conn, serializer=queue.SERIALIZER)
    job.retries_left = 0
    queue.on_failure(job, redis_conn, ValueError, ValueError("x"), None)
    assert jobs.get(redis_conn, job_id).reason == "NaN"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (AbandonedJobError(), "the worker running it stopped responding"),
        (JobTimeoutException("x"), "it took longer than the worker's time limit"),
        (TransientGenerationError("out of GPU memory"), "out of GPU memory"),
        (KeyError("k"), "the worker hit an unexpected error (KeyError)"),
    ],
)
def test_failure_reasons_are_words_for_users(error, reason):
    """Each kind of failed attempt gets a reason a user can read (no traceback)."""
    assert queue.failure_reason(error) == reason


def test_redis_location_never_shows_the_password():
    """Messages and logs name Redis by host, port and db only."""
    assert queue.redis_location("redis://:s3cret@redis:6380/2") == "redis:6380/2"
    assert queue.redis_location("redis://user:s3cret@localhost") == "localhost:6379/0"
