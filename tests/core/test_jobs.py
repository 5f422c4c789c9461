"""The job record on a real Redis: states, the once-only final transition, progress, cancel flag, waiting."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from core import jobs, keys
from core.models import tiny_model
from core.spec import JobSpec, PromptPart


def make_spec(**changes: object) -> JobSpec:
    """A small tiny-model spec."""
    info = tiny_model()
    fields: dict[str, object] = dict(
        prompt="a red cat", parts=(PromptPart("a red cat"),), negative_prompt="", width=64, height=64, aspect="1:1",
        seed=7, chaos=0, stylize=100, guidance_scale=info.guidance, quality=1.0, steps=info.steps, stop=100,
        tile=False, mode="fast", model=info.name,
    )
    fields.update(changes)
    return JobSpec(**fields)  # type: ignore[arg-type]


@pytest.fixture
def job_id(redis_conn: redis.Redis) -> str:
    """A job created in state queued."""
    new = jobs.new_job_id()
    jobs.create(redis_conn, new, make_spec(), "test:owner")
    return new


@pytest.fixture
def events(redis_conn: redis.Redis, job_id: str) -> Iterator[redis.client.PubSub]:
    """A subscription to the job's events."""
    pubsub = redis_conn.pubsub()
    pubsub.subscribe(keys.job_events(job_id))
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
    yield pubsub
    pubsub.close()


def drain(pubsub: redis.client.PubSub) -> list[dict]:
    """Every event published so far (PUBLISH is synchronous: a message sent before now is already buffered)."""
    out = []
    while (message := pubsub.get_message(timeout=0.2)) is not None:
        if message["type"] == "message":
            out.append(json.loads(message["data"]))
    return out


def test_create_records_a_queued_job(redis_conn, job_id):
    """A new record is queued, with its spec, owner and no attempt yet."""
    rec = jobs.get(redis_conn, job_id)
    assert rec is not None
    assert (rec.state, rec.spec, rec.owner, rec.attempt, rec.final) == ("queued", make_spec(), "test:owner", 0, False)
    assert rec.created_at > 0 and rec.started_at is None and rec.finished_at is None


def test_create_twice_is_refused(redis_conn, job_id):
    """Creating a record under an existing id raises instead of overwriting it."""
    with pytest.raises(ValueError, match="already exists"):
        jobs.create(redis_conn, job_id, make_spec(seed=1), "someone:else")
    assert jobs.get(redis_conn, job_id).owner == "test:owner"  # type: ignore[union-attr]


def test_unknown_job_is_none(redis_conn):
    """get() of an id never created is None."""
    assert jobs.get(redis_conn, "0" * 32) is None


def test_mark_running_counts_attempts_and_names_worker(redis_conn, job_id):
    """Each start counts an attempt and records the worker; a retry goes back to queued and starts again."""
    assert jobs.mark_running(redis_conn, job_id, "w1")
    assert jobs.mark_retrying(redis_conn, job_id, "out of memory")
    assert jobs.get(redis_conn, job_id).state == "queued"  # type: ignore[union-attr]
    assert jobs.mark_running(redis_conn, job_id, "w2")
    rec = jobs.get(redis_conn, job_id)
    assert (rec.state, rec.attempt, rec.worker) == ("running", 2, "w2")  # type: ignore[union-attr]


def test_final_job_does_not_start_or_retry(redis_conn, job_id):
    """Once final, a job is not started again nor sent back to the queue."""
    assert jobs.finish(redis_conn, job_id, jobs.CANCELLED, reason="owner")
    assert not jobs.mark_running(redis_conn, job_id, "w1")
    assert not jobs.mark_retrying(redis_conn, job_id, "x")
    assert jobs.get(redis_conn, job_id).state == "cancelled"  # type: ignore[union-attr]


def test_final_transition_happens_once_under_a_race(redis_conn, job_id, events):
    """Twelve threads race to end the job: exactly one wins (the one caller that goes on to settle and deliver it),
    and one outcome event follows, with the winner's state."""
    jobs.mark_running(redis_conn, job_id, "w1")
    barrier = threading.Barrier(12)
    wins: list[tuple[bool, str]] = []

    def end(state: jobs.State) -> None:
        conn = redis.Redis(connection_pool=redis_conn.connection_pool)
        barrier.wait()
        wins.append((jobs.finish(conn, job_id, state, reason=state), state))

    threads = [threading.Thread(target=end, args=(s,)) for s in ("done", "failed", "cancelled") * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rec = jobs.get(redis_conn, job_id)
    assert rec is not None and [state for won, state in wins if won] == [rec.state]
    outcomes = [e for e in drain(events) if e["type"] == "outcome"]
    assert outcomes == [{"type": "outcome", "job_id": job_id, "state": rec.state, "reason": rec.reason}]


def test_finish_applies_staged_writes_then_after_outcome(redis_conn, job_id, events):
    """stage's writes are in Redis when the outcome is published; after_outcome runs once the move is made, and a
    failing one does not undo it (finish still returns True: the caller goes on to settle and deliver). A second
    finish stages its writes but calls nothing."""
    jobs.mark_running(redis_conn, job_id, "w1")
    order: list[str] = []

    def stage(pipe: redis.client.Pipeline) -> None:
        pipe.set(keys.job_grid(job_id), b"grid")

    def after_outcome() -> None:
        order.append("after_outcome")
        assert redis_conn.get(keys.job_grid(job_id)) == b"grid"
        raise RuntimeError("storing the images failed")

    assert jobs.finish(redis_conn, job_id, jobs.DONE, stage=stage, after_outcome=after_outcome)
    assert not jobs.finish(redis_conn, job_id, jobs.FAILED, stage=stage, after_outcome=after_outcome)
    assert order == ["after_outcome"]
    assert [e["state"] for e in drain(events) if e["type"] == "outcome"] == ["done"]
    assert jobs.get(redis_conn, job_id).state == jobs.DONE  # type: ignore[union-attr]


def test_finish_rejects_non_final_state(redis_conn, job_id):
    """finish() only moves into done, failed or cancelled."""
    with pytest.raises(ValueError, match="not a final state"):
        jobs.finish(redis_conn, job_id, jobs.RUNNING)


def test_final_record_expires_and_drops_cancel_flag(redis_conn, job_id):
    """A final record gets RECORD_TTL_S and its cancel flag is removed."""
    jobs.mark_running(redis_conn, job_id, "w1")
    assert jobs.request_cancel(redis_conn, job_id, "stop")
    assert jobs.cancel_requested(redis_conn, job_id) and jobs.cancel_reason(redis_conn, job_id) == "stop"
    jobs.finish(redis_conn, job_id, jobs.CANCELLED, reason="stop")
    assert 0 < redis_conn.ttl(keys.job(job_id)) <= jobs.RECORD_TTL_S
    assert not jobs.cancel_requested(redis_conn, job_id)
    assert not jobs.request_cancel(redis_conn, job_id)


def test_progress_counts_only_while_running(redis_conn, job_id, events):
    """Progress before the start is ignored; while running it is stored and published."""
    jobs.set_progress(redis_conn, job_id, 1, 4)
    jobs.mark_running(redis_conn, job_id, "w1")
    jobs.set_progress(redis_conn, job_id, 2, 4)
    rec = jobs.get(redis_conn, job_id)
    assert (rec.step, rec.total) == (2, 4)  # type: ignore[union-attr]
    assert [e for e in drain(events) if e["type"] == "progress"] == [
        {"type": "progress", "job_id": job_id, "step": 2, "total": 4}
    ]


def test_gpu_seconds_add_up_over_attempts(redis_conn, job_id):
    """Each attempt's device time adds to gpu_s."""
    jobs.add_gpu_seconds(redis_conn, job_id, 1.25)
    jobs.add_gpu_seconds(redis_conn, job_id, 0.5)
    assert jobs.get(redis_conn, job_id).gpu_s == pytest.approx(1.75)  # type: ignore[union-attr]


def test_wait_returns_final_record_and_passes_events(redis_conn, job_id):
    """wait() hands progress events to on_event and returns once the outcome arrives."""
    seen: list[dict] = []
    jobs.mark_running(redis_conn, job_id, "w1")

    def work() -> None:
        conn = redis.Redis(connection_pool=redis_conn.connection_pool)
        deadline = time.monotonic() + 10
        # Publish once wait() has subscribed (pub/sub keeps nothing for later subscribers): poll the subscriber count.
        while conn.pubsub_numsub(keys.job_events(job_id))[0][1] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        for step in (1, 2, 3, 4):
            jobs.set_progress(conn, job_id, step, 4)
        jobs.finish(conn, job_id, jobs.DONE)

    worker = threading.Thread(target=work)
    worker.start()
    rec = jobs.wait(redis_conn, job_id, timeout_s=30, on_event=seen.append)
    worker.join()
    assert rec.state == "done"
    assert [e["step"] for e in seen if e["type"] == "progress"] == [1, 2, 3, 4]


def test_wait_returns_at_once_when_final(redis_conn, job_id):
    """A job final before the wait needs no event."""
    jobs.finish(redis_conn, job_id, jobs.FAILED, reason="broken")
    assert jobs.wait(redis_conn, job_id, timeout_s=0.01).reason == "broken"


def test_wait_times_out_and_knows_unknown_jobs(redis_conn, job_id):
    """wait() raises TimeoutError past its deadline, LookupError for a job that does not exist."""
    with pytest.raises(TimeoutError, match="still queued"):
        jobs.wait(redis_conn, job_id, timeout_s=0.2)
    with pytest.raises(LookupError):
        jobs.wait(redis_conn, "f" * 32, timeout_s=1)
