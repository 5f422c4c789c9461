"""Enqueueing on RQ lanes with the JSON serializer, queue positions, cancel (real Redis)."""

from __future__ import annotations

import contextlib
import json
import zlib

import pytest
import redis
from rq import Retry
from rq.job import Job, JobStatus

from core import jobs, keys, queue
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


def test_enqueue_writes_the_rq_job_exactly_as_rq_does(redis_conn: redis.Redis):
    """The job hash and queue entries our one script writes are those of RQ's own `enqueue_call` (timestamps aside)."""
    spec = make_spec()
    ours = queue.enqueue(redis_conn, spec, "o")
    theirs = jobs.new_job_id()
    queue.rq_queue(redis_conn, "fast:tiny").enqueue_call(
        queue.JOB_FUNCTION, args=(queue.payload(theirs, spec, "o"),), job_id=theirs, description=f"imagine {theirs}",
        retry=Retry(max=queue.RETRIES, enqueue_at_front=True), result_ttl=queue.RESULT_TTL_S,
        failure_ttl=queue.FAILURE_TTL_S,
    )

    def fields(job_id: str) -> dict[bytes, bytes]:
        raw = redis_conn.hgetall(f"rq:job:{job_id}")
        raw[b"data"] = zlib.decompress(raw[b"data"]).replace(job_id.encode(), b"ID")
        raw[b"description"] = raw[b"description"].replace(job_id.encode(), b"ID")
        return {k: v for k, v in raw.items() if k not in (b"created_at", b"enqueued_at")}

    assert fields(ours) == fields(theirs)
    assert redis_conn.lrange("rq:queue:fast:tiny", 0, -1) == [ours.encode(), theirs.encode()]
    assert redis_conn.ttl(f"rq:job:{ours}") == redis_conn.ttl(f"rq:job:{theirs}") == -1


class _DiesAfter(redis.Redis):
    """A client whose connection is lost after `allowed` commands (the process or network dying mid-enqueue)."""

    def __init__(self, conn: redis.Redis, allowed: int) -> None:
        super().__init__(connection_pool=conn.connection_pool)
        self.allowed = allowed

    def execute_command(self, *args, **options):
        if self.allowed <= 0:
            raise redis.ConnectionError("connection lost")
        self.allowed -= 1
        return super().execute_command(*args, **options)


@pytest.mark.parametrize("allowed", [0, 1])
def test_a_failed_enqueue_leaves_no_queued_record_outside_a_queue(redis_conn: redis.Redis, allowed: int):
    """Recording the job and putting it on its lane is one step: a connection lost at any point leaves both or
    neither, never a record `queued` forever with nothing in a queue (quota-holes issue)."""
    dying = _DiesAfter(redis_conn, allowed)
    job_id = jobs.new_job_id()
    with contextlib.suppress(redis.ConnectionError):
        queue.enqueue(dying, make_spec(), "o", job_id=job_id)
    record = jobs.get(redis_conn, job_id)
    in_queue = job_id.encode() in redis_conn.lrange("rq:queue:fast:tiny", 0, -1)
    assert (record is not None and record.state == jobs.QUEUED) == in_queue
    assert in_queue == (allowed >= 1) == redis_conn.exists(f"rq:job:{job_id}")


def test_enqueue_that_fails_inside_redis_ends_the_record(redis_conn: redis.Redis):
    """A write Redis refuses inside the step (the lane's key of the wrong type) leaves the record final, not queued."""
    redis_conn.set("rq:queue:fast:tiny", "not a list")
    job_id = jobs.new_job_id()
    with pytest.raises(redis.ResponseError):
        queue.enqueue(redis_conn, make_spec(), "o", job_id=job_id)
    assert jobs.get(redis_conn, job_id).state == jobs.FAILED  # type: ignore[union-attr]


def test_enqueue_refuses_an_id_in_use_and_writes_nothing(redis_conn: redis.Redis):
    """A second job with the same id is refused before anything is written."""
    job_id = queue.enqueue(redis_conn, make_spec(), "o")
    with pytest.raises(ValueError, match="already exists"):
        queue.enqueue(redis_conn, make_spec(mode="relax"), "o", job_id=job_id)
    assert queue.rq_queue(redis_conn, "relax:tiny").get_job_ids() == []


def test_enqueue_sent_twice_counts_once(redis_conn: redis.Redis):
    """The same call run again (a retry after a lost reply) answers the job id and queues nothing more."""
    call = queue.enqueue_call(make_spec(), "o")
    first = redis_conn.eval(queue.ENQUEUE_SCRIPT, len(call.keys), *call.keys, *call.args)
    again = redis_conn.eval(queue.ENQUEUE_SCRIPT, len(call.keys), *call.keys, *call.args)
    assert call.result(first) == call.result(again) == call.job_id
    assert redis_conn.llen("rq:queue:fast:tiny") == 1


def test_a_job_is_open_from_its_enqueue_to_its_final_move(redis_conn: redis.Redis):
    """The open jobs (`keys.open_jobs`, walked for jobs RQ lost) hold each enqueued job, scored by its created_at,
    through a retry, until its final move: done, failed, or cancelled while queued; and a failed enqueue's too."""
    done, failed, cancelled = (queue.enqueue(redis_conn, make_spec(), "o") for _ in range(3))
    created = jobs.get(redis_conn, done).created_at  # type: ignore[union-attr]
    assert redis_conn.zscore(keys.open_jobs(), done) == created
    assert jobs.mark_running(redis_conn, done, "w") and jobs.mark_retrying(redis_conn, done, "oom")
    assert jobs.mark_running(redis_conn, done, "w")
    assert redis_conn.zcard(keys.open_jobs()) == 3
    assert jobs.finish(redis_conn, done, jobs.DONE) and jobs.finish(redis_conn, failed, jobs.FAILED, reason="x")
    assert queue.cancel(redis_conn, cancelled) == queue.CancelResult.CANCELLED
    redis_conn.set("rq:queue:fast:tiny", "not a list")
    with pytest.raises(redis.ResponseError):
        queue.enqueue(redis_conn, make_spec(), "o")
    assert redis_conn.zcard(keys.open_jobs()) == 0


def test_relax_mode_uses_the_relax_lane(redis_conn):
    """A relax spec goes to relax:<model>."""
    job_id = queue.enqueue(redis_conn, make_spec(mode="relax"), "discord:42")
    assert queue.rq_queue(redis_conn, "relax:tiny").get_job_ids() == [job_id]
    assert queue.lane_names("tiny") == ["describe:tiny", "fast:tiny", "relax:tiny"]


def test_position_counts_fast_jobs_ahead_of_relax(redis_conn):
    """Fast jobs are numbered in order; a relax job waits behind every fast job of its model."""
    fast = [queue.enqueue(redis_conn, make_spec(seed=s), "o") for s in range(3)]
    relax = queue.enqueue(redis_conn, make_spec(mode="relax"), "o")
    assert [queue.position(redis_conn, j) for j in fast] == [0, 1, 2]
    assert queue.position(redis_conn, relax) == 3


def test_describe_jobs_have_a_lane_ahead_of_every_render(redis_conn):
    """/describe jobs wait on describe:<model>, which workers take first: a describe job waits only behind the
    describe jobs before it, and every render waits behind the describe jobs too; both still carry their mode."""
    fast = queue.enqueue(redis_conn, make_spec(), "o")
    relax = queue.enqueue(redis_conn, make_spec(mode="relax"), "o")
    described = [queue.enqueue(redis_conn, make_spec(mode=m), "o", kind="describe") for m in ("relax", "fast")]
    assert queue.rq_queue(redis_conn, "describe:tiny").get_job_ids() == described
    assert [queue.position(redis_conn, j) for j in described] == [0, 1]
    assert (queue.position(redis_conn, fast), queue.position(redis_conn, relax)) == (2, 3)
    assert jobs.get(redis_conn, described[0]).spec.mode == "relax"  # charged to relax time, like any relax job
    assert queue.lanes_ahead(make_spec(mode="relax"), "describe") == ["describe:tiny"]
    assert queue.lanes_ahead(make_spec(mode="relax"), "grid") == ["describe:tiny", "fast:tiny", "relax:tiny"]


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
