"""The job function under a real in-process RQ worker (SimpleWorker, JSON serializer) on the real Redis and the tiny
engine: outcomes, retries, cancellation, stored images, what follows an outcome (quota, then delivery), the failure
path of an attempt, and the refusal of jobs whose function is not ours."""

from __future__ import annotations

import dataclasses
import io
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from PIL import Image
from rq import Retry
from rq.job import Job, JobStatus
from rq.registry import AbandonedJobError, FailedJobRegistry
from rq.timeouts import JobTimeoutException

from core import jobs, keys, queue
from core.errors import GenerationFailed, TransientGenerationError
from core.models import tiny_model
from core.settings import WorkerSettings
from core.spec import JobSpec
from quotas import admission, ledger
from quotas.tiers import load_config
from tests.core.test_jobs import make_spec
from tests.worker.worker_helpers import Events, Outcomes, record, run_in_process
from worker import jobs as worker_jobs
from worker.context import Context
from worker.engine import Engine
from worker.rq_worker import ImagineWorker


class ScriptedEngine:
    """The real tiny engine behind a script of exceptions to raise on the first renders (an OOM cannot be made on
    a CPU test machine); it counts its renders."""

    def __init__(self, engine: Engine, *failures: BaseException) -> None:
        self.engine = engine
        self.failures = list(failures)
        self.renders = 0
        self.adapter = engine.adapter

    def render(self, spec: JobSpec, **kwargs: Any) -> list[Image.Image]:
        self.renders += 1
        if self.failures:
            raise self.failures.pop(0)
        return self.engine.render(spec, **kwargs)


class SeenAtDelivery:
    """A stand-in for `worker.delivery.Poster` (no Discord side): records, for each outcome it is handed, the job's
    state, its four stored images and whether its reservation was still unapplied at that moment."""

    http = None

    def __init__(self) -> None:
        self.delivered: list[dict[str, Any]] = []

    def live(self, conn: redis.Redis, job_id: str, *, min_interval_s: float) -> None:
        return None

    def deliver_outcome(self, conn: redis.Redis, rec: jobs.JobRecord) -> bool:
        self.delivered.append({
            "job_id": rec.job_id, "state": rec.state,
            "images": [conn.get(keys.job_image(rec.job_id, k)) for k in range(4)],
            "reserved": bool(conn.exists(keys.quota_reservation(rec.job_id))),
        })
        return True


@pytest.fixture
def outcomes(redis_conn: redis.Redis) -> Iterator[Outcomes]:
    """The outcome events of every job, subscribed before the test enqueues anything."""
    seen = Outcomes(redis_conn)
    yield seen
    seen.close()


def admit(conn: redis.Redis, spec: JobSpec) -> str:
    """Admit one fast job of `spec` for a member (a reservation of its estimated GPU time) and enqueue it."""
    job_id = jobs.new_job_id()
    request = admission.AdmissionRequest(job_ids=(job_id,), mode="fast", model=spec.model, width=spec.width,
                                         height=spec.height, steps=spec.steps)
    admission.admit(conn, MEMBER, load_config().tiers["standard"], request)
    queue.enqueue(conn, spec, "discord:2", job_id=job_id)
    return job_id


MEMBER = ledger.member_id(1, 2)


def context(conn: redis.Redis, engine: Any = None, poster: Any = None) -> Context:
    """A worker context on the tiny model, as `python -m worker` builds it."""
    return Context(conn=conn, engine=engine, model=tiny_model(), settings=WorkerSettings(device="cpu"),
                   worker_name="test-worker", poster=poster)


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


def test_images_are_stored_and_quota_settled_before_delivery(redis_conn, tiny_engine, tiny_spec):
    """`conclude` runs after the outcome: the four images are stored and the job's reservation is settled by the time
    the outcome is delivered (the grid with its U buttons), once; each image is identical to its tile of the grid."""
    poster = SeenAtDelivery()
    job_id = admit(redis_conn, tiny_spec)
    run_in_process(redis_conn, tiny_engine, poster=poster)
    [seen] = poster.delivered
    assert (seen["job_id"], seen["state"], seen["reserved"]) == (job_id, "done", False)
    grid = Image.open(io.BytesIO(redis_conn.get(keys.job_grid(job_id))))  # type: ignore[arg-type]
    assert all(isinstance(png, bytes) for png in seen["images"])
    for k, png in enumerate(seen["images"]):
        tile = grid.crop(((k % 2) * 64, (k // 2) * 64, (k % 2) * 64 + 64, (k // 2) * 64 + 64))
        assert Image.open(io.BytesIO(png)).tobytes() == tile.convert("RGB").tobytes()
    usage = ledger.usage(redis_conn, MEMBER, load_config().tiers["standard"], now=time.time(),
                         policy=load_config().period)
    assert usage.used_s == pytest.approx(record(redis_conn, job_id).gpu_s, rel=1e-3)


def test_permanent_failure_is_refunded_then_delivered(redis_conn, tiny_engine, tiny_spec):
    """A job that fails for good is concluded like a done one: its reservation is refunded in full (nothing charged)
    before its failure is delivered, once."""
    poster = SeenAtDelivery()
    job_id = admit(redis_conn, tiny_spec)
    run_in_process(redis_conn, ScriptedEngine(tiny_engine, GenerationFailed("NaN")), poster=poster)
    assert [(d["job_id"], d["state"], d["reserved"]) for d in poster.delivered] == [(job_id, "failed", False)]
    usage = ledger.usage(redis_conn, MEMBER, load_config().tiers["standard"], now=time.time(),
                         policy=load_config().period)
    assert (usage.used_s, usage.reserved_s, usage.active_fast) == (0, 0, 0)


def test_permanent_failure_is_final_without_retry(redis_conn, tiny_engine, tiny_spec, outcomes):
    """GenerationFailed ends the job failed at the first attempt, with its message as the reason; RQ keeps it failed."""
    engine = ScriptedEngine(tiny_engine, GenerationFailed("the model produced an invalid image (NaN)"))
    job_id = queue.enqueue(redis_conn, tiny_spec, "test:owner")
    run_in_process(redis_conn, engine)
    rec = record(redis_conn, job_id)
    assert (rec.state, rec.attempt, rec.reason) == ("failed", 1, "the model produced an invalid image (NaN)")
    assert engine.renders == 1
    assert outcomes.take(1) == [(job_id, "failed")]
    assert job_id in FailedJobRegistry("fast:tiny", connection=redis_conn, serializer=queue.SERIALIZER)
    assert redis_conn.get(keys.job_grid(job_id)) is None


def test_transient_failure_is_retried_once_then_done(redis_conn, tiny_engine, tiny_spec, outcomes):
    """An out-of-memory attempt is retried; the retry succeeds; the one outcome is done."""
    engine = ScriptedEngine(tiny_engine, TransientGenerationError("out of GPU memory"))
    job_id = queue.enqueue(redis_conn, tiny_spec, "test:owner")
    events = Events(redis_conn, job_id)
    run_in_process(redis_conn, engine)
    rec = record(redis_conn, job_id)
    assert (rec.state, rec.attempt, rec.reason) == ("done", 2, "")
    assert outcomes.take(1) == [(job_id, "done")]
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
    assert outcomes.take(1) == [(job_id, "failed")]


def test_unexpected_error_is_retried(redis_conn, tiny_engine, tiny_spec, outcomes):
    """An exception the engine does not classify may be transient: it is retried once."""
    engine = ScriptedEngine(tiny_engine, RuntimeError("CUDA error: an illegal memory access"))
    job_id = queue.enqueue(redis_conn, tiny_spec, "test:owner")
    run_in_process(redis_conn, engine)
    assert (record(redis_conn, job_id).state, engine.renders) == ("done", 2)
    assert outcomes.take(1) == [(job_id, "done")]


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
    assert outcomes.take(1) == [(job_id, "cancelled")]
    events.close()


def test_cancel_queued_job_never_runs(redis_conn, tiny_engine, tiny_spec, outcomes):
    """A job cancelled while queued leaves its queue; the worker never renders it."""
    engine = ScriptedEngine(tiny_engine)
    job_id = queue.enqueue(redis_conn, tiny_spec, "test:owner")
    assert queue.cancel(redis_conn, job_id) == queue.CancelResult.CANCELLED
    run_in_process(redis_conn, engine)
    assert (record(redis_conn, job_id).state, engine.renders) == ("cancelled", 0)
    assert outcomes.take(1) == [(job_id, "cancelled")]


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
        retry=Retry(max=1),
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
        retry=Retry(max=1),
    )
    run_in_process(redis_conn, tiny_engine)
    rec = record(redis_conn, job_id)
    assert rec.state == "failed"
    assert rec.reason.startswith("malformed job payload")


@pytest.mark.parametrize(("retries_left", "state"), [(1, "queued"), (0, "failed")])
def test_failed_attempt_is_final_only_without_retries(redis_conn, retries_left, state):
    """A failed attempt records a retry while RQ has retries left, and the final failure only after."""
    job_id = queue.enqueue(redis_conn, make_spec(), "o")
    jobs.mark_running(redis_conn, job_id, "w1")
    worker_jobs.attempt_failed(context(redis_conn), job_id, TransientGenerationError("out of GPU memory"),
                               retries_left=retries_left)
    rec = record(redis_conn, job_id)
    assert (rec.state, rec.reason) == (state, "out of GPU memory")


def test_failed_attempt_after_final_state_changes_nothing(redis_conn):
    """A job the job function already failed (permanent error) keeps its own reason and is not delivered again."""
    poster = SeenAtDelivery()
    job_id = queue.enqueue(redis_conn, make_spec(), "o")
    jobs.finish(redis_conn, job_id, jobs.FAILED, reason="NaN")
    worker_jobs.attempt_failed(context(redis_conn, poster=poster), job_id, ValueError("x"), retries_left=0)
    assert record(redis_conn, job_id).reason == "NaN"
    assert poster.delivered == []


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
    assert worker_jobs.failure_reason(error) == reason


@pytest.mark.parametrize(("retries_left", "state"), [(1, "queued"), (0, "failed")])
def test_abandoned_job_found_by_registry_cleanup_goes_through_the_failure_path(redis_conn, retries_left, state):
    """A job whose worker died (its heartbeat expired) and that a worker's maintenance finds in the started registry
    reaches `attempt_failed` through the worker's job class: retried while it has retries left; else failed,
    refunded and delivered once."""
    poster = SeenAtDelivery()
    ctx = context(redis_conn, poster=poster)
    job_id = admit(redis_conn, make_spec())
    dead = ImagineWorker.for_context(ctx)
    rq_job, rq_queue = dead.dequeue_job_and_maintain_ttl(timeout=1)
    rq_job.retries_left = retries_left
    rq_job.save()
    dead.prepare_execution(rq_job)  # in the started registry, with a heartbeat TTL
    dead.prepare_job_execution(rq_job)  # STARTED; then the worker "dies"
    jobs.mark_running(redis_conn, job_id, dead.name)
    registry = rq_queue.started_job_registry  # built with the worker's job class, as its maintenance builds it
    registry.cleanup(timestamp=time.time() + 3600)  # as if the heartbeat had long expired
    rec = record(redis_conn, job_id)
    assert (rec.state, rec.reason) == (state, "the worker running it stopped responding")
    if state == "queued":
        assert queue.rq_queue(redis_conn, "fast:tiny").get_job_ids() == [job_id]
        assert poster.delivered == [] and redis_conn.exists(keys.quota_reservation(job_id))
    else:
        assert [(d["job_id"], d["state"], d["reserved"]) for d in poster.delivered] == [(job_id, "failed", False)]


@pytest.mark.parametrize("function", ["worker.jobs.not_a_job", "worker.cli.main"])
def test_job_naming_another_function_is_refused_unrun(redis_conn, tiny_engine, tiny_spec, function, caplog):
    """A job naming a function outside `core.queue.JOB_FUNCTIONS` is refused before it is imported or called: failed
    in RQ with the reason, its retry unused, counted per name, logged by id and name (not its arguments); the job
    record that shares its id is left alone."""
    job_id = queue.enqueue(redis_conn, tiny_spec, "o")  # a real job with this id, waiting
    queue.rq_queue(redis_conn, "fast:tiny").remove(job_id)
    queue.rq_queue(redis_conn, "fast:tiny").enqueue_call(function, args=("secret-argument",), job_id=job_id,
                                                         retry=Retry(max=1))
    with caplog.at_level("INFO"):
        run_in_process(redis_conn, tiny_engine)
    rq_job = Job.fetch(job_id, connection=redis_conn, serializer=queue.SERIALIZER)
    assert rq_job.get_status() == JobStatus.FAILED
    assert job_id in FailedJobRegistry("fast:tiny", connection=redis_conn, serializer=queue.SERIALIZER)
    failure = rq_job.latest_result()
    assert failure is not None and "JobRefused" in failure.exc_string and function in failure.exc_string
    assert queue.rq_queue(redis_conn, "fast:tiny").count == 0  # not retried
    assert redis_conn.hgetall(keys.refused_jobs()) == {function.encode(): b"1"}
    assert redis_conn.get(keys.refused_jobs_total()) == b"1"
    assert (record(redis_conn, job_id).state, record(redis_conn, job_id).attempt) == ("queued", 0)
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refusals and job_id in refusals[0] and function in refusals[0]
    assert "secret-argument" not in caplog.text


def test_job_class_without_a_context_runs_nothing(redis_conn):
    """RQ's plain use of the job class (no worker context bound) cannot run the job function."""
    job_id = queue.enqueue(redis_conn, make_spec(), "o")
    rq_job = worker_jobs.ImagineJob.fetch(job_id, connection=redis_conn, serializer=queue.SERIALIZER)
    with pytest.raises(RuntimeError, match="bound_to"):
        rq_job.perform()
    assert record(redis_conn, job_id).state == "queued"

