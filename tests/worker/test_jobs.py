"""The job function under a real in-process RQ worker (SimpleWorker, JSON serializer) on the real Redis and the tiny
engine: outcomes, retries, cancellation, stored images."""

from __future__ import annotations

import dataclasses
import io
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from PIL import Image
from rq import Callback, Retry
from rq.job import Job
from rq.registry import FailedJobRegistry

from core import jobs, keys, queue
from core.errors import GenerationFailed, TransientGenerationError
from core.spec import JobSpec
from tests.worker.worker_helpers import Events, record, run_in_process
from worker import jobs as worker_jobs
from worker.engine import Engine


class ScriptedEngine:
    """The real tiny engine behind a script of exceptions to raise on the first renders (an OOM cannot be made on
    a CPU test machine); it counts its renders."""

    def __init__(self, engine: Engine, *failures: BaseException) -> None:
        self.engine = engine
        self.failures = list(failures)
        self.renders = 0

    def render(self, spec: JobSpec, **kwargs: Any) -> list[Image.Image]:
        self.renders += 1
        if self.failures:
            raise self.failures.pop(0)
        return self.engine.render(spec, **kwargs)


@pytest.fixture
def outcomes() -> Iterator[list[tuple[str, str]]]:
    """(job id, state) of every final transition made in this process, through `jobs.add_final_hook`."""
    seen: list[tuple[str, str]] = []

    def hook(conn: redis.Redis, rec: jobs.JobRecord) -> None:
        seen.append((rec.job_id, rec.state))

    jobs.add_final_hook(hook)
    yield seen
    jobs.remove_final_hook(hook)


def test_job_renders_grid_and_images_into_redis(redis_conn: redis.Redis, tiny_engine: Engine, tiny_spec: JobSpec):
    """A queued job ends done with four PNGs and a 2x2 grid PNG (with a TTL), progress at the last step, GPU time."""
    job_id = queue.enqueue(redis_conn, tiny_spec, "test:owner")
    run_in_process(redis_conn, tiny_engine, image_ttl_s=3600)
    rec = record(redis_conn, job_id)
    assert (rec.state, rec.attempt, rec.step, rec.total, rec.worker) == ("done", 1, 4, 4, "test-worker")
    assert rec.gpu_s > 0
    grid = Image.open(io.BytesIO(redis_conn.get(keys.job_grid(job_id))))  # type: ignore[arg-type]
    assert grid.size == (128, 128)
    for index in range(4):
        image = Image.open(io.BytesIO(redis_conn.get(keys.job_image(job_id, index))))  # type: ignore[arg-type]
        assert image.size == (64, 64)
    assert 0 < redis_conn.ttl(keys.job_grid(job_id)) <= 3600
    assert redis_conn.hget(keys.worker_stats("test-worker"), "jobs_done") == b"1"


def test_images_are_stored_before_the_final_hooks(redis_conn, tiny_engine, tiny_spec):
    """The four images are stored after the outcome but before the final hooks (the Discord delivery, with its U
    buttons) run: the hooks find them, each identical to its tile of the grid."""
    seen: dict[str, Any] = {}
    job_id = jobs.new_job_id()
    events = Events(redis_conn, job_id)

    def hook(conn: redis.Redis, rec: jobs.JobRecord) -> None:
        seen["images"] = [conn.get(keys.job_image(rec.job_id, k)) for k in range(4)]

    jobs.add_final_hook(hook)
    try:
        queue.enqueue(redis_conn, tiny_spec, "test:owner", job_id=job_id)
        run_in_process(redis_conn, tiny_engine)
    finally:
        jobs.remove_final_hook(hook)
    events.next("outcome", 5, state="done")
    events.close()
    grid = Image.open(io.BytesIO(redis_conn.get(keys.job_grid(job_id))))  # type: ignore[arg-type]
    assert all(isinstance(png, bytes) for png in seen["images"])
    for k, png in enumerate(seen["images"]):
        tile = grid.crop(((k % 2) * 64, (k // 2) * 64, (k % 2) * 64 + 64, (k // 2) * 64 + 64))
        assert Image.open(io.BytesIO(png)).tobytes() == tile.convert("RGB").tobytes()


def test_permanent_failure_is_final_without_retry(redis_conn, tiny_engine, tiny_spec, outcomes):
    """GenerationFailed ends the job failed at the first attempt, with its message as the reason; RQ keeps it failed."""
    engine = ScriptedEngine(tiny_engine, GenerationFailed("the model produced an invalid image (NaN)"))
    job_id = queue.enqueue(redis_conn, tiny_spec, "test:owner")
    run_in_process(redis_conn, engine)
    rec = record(redis_conn, job_id)
    assert (rec.state, rec.attempt, rec.reason) == ("failed", 1, "the model produced an invalid image (NaN)")
    assert engine.renders == 1
    assert outcomes == [(job_id, "failed")]
    assert job_id in FailedJobRegistry("fast:tiny", connection=redis_conn, serializer=queue.SERIALIZER)
    assert redis_conn.get(keys.job_grid(job_id)) is None


def test_transient_failure_is_retried_once_then_done(redis_conn, tiny_engine, tiny_spec, outcomes):
    """An out-of-memory attempt is retried; the retry succeeds; the outcome hook fires once, for done only."""
    engine = ScriptedEngine(tiny_engine, TransientGenerationError("out of GPU memory"))
    job_id = queue.enqueue(redis_conn, tiny_spec, "test:owner")
    events = Events(redis_conn, job_id)
    run_in_process(redis_conn, engine)
    rec = record(redis_conn, job_id)
    assert (rec.state, rec.attempt, rec.reason) == ("done", 2, "")
    assert outcomes == [(job_id, "done")]
    events.next("outcome", 5, state="done")
    assert [e["state"] for e in events.of_type("outcome")] == ["done"]
    assert {"type": "state", "job_id": job_id, "state": "queued", "reason": "out of GPU memory"} in events.seen
    events.close()


def test_transient_failure_twice_fails_with_its_reason(redis_conn, tiny_engine, tiny_spec, outcomes):
    """Two out-of-memory attempts in a row: failed after the one retry, with the OOM message as the reason."""
    engine = ScriptedEngine(tiny_engine, TransientGenerationError("out of GPU memory"), TransientGenerationError("oom"))
    job_id = queue.enqueue(redis_conn, tiny_spec, "test:owner")
    run_in_process(redis_conn, engine)
    rec = record(redis_conn, job_id)
    assert (rec.state, rec.attempt, rec.reason) == ("failed", 2, "oom")
    assert outcomes == [(job_id, "failed")]


def test_unexpected_error_is_retried(redis_conn, tiny_engine, tiny_spec, outcomes):
    """An exception the engine does not classify may be transient: it is retried once."""
    engine = ScriptedEngine(tiny_engine, RuntimeError("CUDA error: an illegal memory access"))
    job_id = queue.enqueue(redis_conn, tiny_spec, "test:owner")
    run_in_process(redis_conn, engine)
    assert (record(redis_conn, job_id).state, engine.renders) == ("done", 2)
    assert outcomes == [(job_id, "done")]


def test_cancel_running_job_stops_within_one_step(redis_conn, tiny_engine, tiny_spec, outcomes):
    """A cancel sent at a progress event stops the render at the next step: cancelled, no images stored."""
    spec = dataclasses.replace(tiny_spec, steps=12)
    job_id = queue.enqueue(redis_conn, spec, "test:owner")
    events = Events(redis_conn, job_id)
    results: list[tuple[queue.CancelResult, int]] = []

    def cancel_at_first_progress() -> None:
        events.next("progress", 60)
        result = queue.cancel(redis_conn, job_id, reason="stop it")
        results.append((result, record(redis_conn, job_id).step))

    canceller = threading.Thread(target=cancel_at_first_progress)
    canceller.start()
    # Each step records its progress (the delay exceeds the progress throttle), so the steps are all visible.
    run_in_process(redis_conn, tiny_engine, test_step_delay_s=worker_jobs.PROGRESS_INTERVAL_S + 0.1)
    canceller.join()
    [(result, step_at_cancel)] = results
    assert result == queue.CancelResult.REQUESTED
    rec = record(redis_conn, job_id)
    assert (rec.state, rec.reason) == ("cancelled", "stop it")
    assert rec.step <= step_at_cancel + 1 < rec.total, "the render ran on past the step after the cancel"
    assert redis_conn.get(keys.job_grid(job_id)) is None
    assert redis_conn.get(keys.job_image(job_id, 0)) is None
    assert not jobs.cancel_requested(redis_conn, job_id)
    assert outcomes == [(job_id, "cancelled")]
    events.close()


def test_cancel_queued_job_never_runs(redis_conn, tiny_engine, tiny_spec, outcomes):
    """A job cancelled while queued leaves its queue; the worker never renders it."""
    engine = ScriptedEngine(tiny_engine)
    job_id = queue.enqueue(redis_conn, tiny_spec, "test:owner")
    assert queue.cancel(redis_conn, job_id) == queue.CancelResult.CANCELLED
    run_in_process(redis_conn, engine)
    assert (record(redis_conn, job_id).state, engine.renders) == ("cancelled", 0)
    assert outcomes == [(job_id, "cancelled")]


def test_job_cancelled_after_dequeue_is_skipped(redis_conn, tiny_engine, tiny_spec):
    """A job whose record turned final while RQ still held it (cancel racing a dequeue) is skipped, not rendered."""
    engine = ScriptedEngine(tiny_engine)
    job_id = queue.enqueue(redis_conn, tiny_spec, "test:owner")
    jobs.finish(redis_conn, job_id, jobs.CANCELLED, reason="raced")
    run_in_process(redis_conn, engine)
    assert engine.renders == 0
    assert Job.fetch(job_id, connection=redis_conn, serializer=queue.SERIALIZER).return_value() == {
        "job_id": job_id,
        "state": "cancelled",
    }


def test_payload_for_another_model_fails_without_retry(redis_conn, tiny_engine, tiny_spec):
    """A job on this worker's lane naming another model fails at once, saying which model this worker serves."""
    job_id = jobs.new_job_id()
    spec = dataclasses.replace(tiny_spec, model="other")
    jobs.create(redis_conn, job_id, spec, "test:owner")
    queue.rq_queue(redis_conn, "fast:tiny").enqueue_call(
        queue.JOB_FUNCTION, args=(queue.payload(job_id, spec, "test:owner"),), job_id=job_id,
        retry=Retry(max=1), on_failure=Callback(queue.FAILURE_CALLBACK),
    )
    run_in_process(redis_conn, tiny_engine)
    rec = record(redis_conn, job_id)
    assert (rec.state, rec.attempt) == ("failed", 0)
    assert rec.reason == "this worker serves model 'tiny', not 'other'"


def test_malformed_spec_fails_without_retry(redis_conn, tiny_engine, tiny_spec):
    """A payload whose spec does not parse fails at once with a reason naming the problem."""
    job_id = jobs.new_job_id()
    jobs.create(redis_conn, job_id, tiny_spec, "test:owner")
    bad = {**queue.payload(job_id, tiny_spec, "test:owner"), "spec": {"prompt": "x"}}
    queue.rq_queue(redis_conn, "fast:tiny").enqueue_call(
        queue.JOB_FUNCTION, args=(bad,), job_id=job_id,
        retry=Retry(max=1), on_failure=Callback(queue.FAILURE_CALLBACK),
    )
    run_in_process(redis_conn, tiny_engine)
    rec = record(redis_conn, job_id)
    assert rec.state == "failed"
    assert rec.reason.startswith("malformed job payload")
