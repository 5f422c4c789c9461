"""`python -m worker` as a real process on the real Redis: warm model, shutdown, a killed worker's job, failures."""

from __future__ import annotations

import dataclasses
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from rq import Queue, Retry
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from bench.redis_server import free_port
from core import jobs, keys, queue
from core.errors import MalformedPayload
from core.spec import JobSpec
from quotas import admission, ledger
from quotas.tiers import load_config
from tests.worker.worker_helpers import Events, WorkerProcess, record, wait_until, worker_processes

ABANDONED_JOB_DEADLINE_S = 120.0
"""A job whose worker was SIGKILLed must be finished by another worker within this long."""

STANDARD = dataclasses.replace(load_config().tiers["standard"], max_steps=100)  # the slowed job runs 60 steps
MEMBER = ledger.member_id(1, 2)
"""A member whose fast time the killed job was admitted against."""


def test_worker_renders_jobs_with_one_pipeline_load(redis_url, redis_conn, tiny_spec, tmp_path):
    """A burst worker renders three queued jobs into grids in Redis, having loaded its pipeline once, and exits 0."""
    job_ids = [queue.enqueue(redis_conn, dataclasses.replace(tiny_spec, seed=s), "test:owner") for s in (1, 2, 3)]
    with worker_processes() as started:
        started.append(worker := WorkerProcess(redis_url, tmp_path, "burst", burst=True))
        assert worker.wait(timeout_s=180) == 0, worker.log()
    for job_id in job_ids:
        assert record(redis_conn, job_id).state == "done"
        assert redis_conn.get(keys.job_grid(job_id)).startswith(b"\x89PNG")  # type: ignore[union-attr]
    stats = redis_conn.hgetall(keys.worker_stats("burst"))
    assert (stats[b"model"], stats[b"pipeline_loads"], stats[b"jobs_done"]) == (b"tiny", b"1", b"3")
    assert "loaded model tiny" in worker.log()


def test_rq_info_lists_lanes_and_worker_then_sigterm_exits(redis_url, redis_conn, tmp_path):
    """`rq info` with the JSON serializer shows both lanes and the worker; SIGTERM to an idle worker exits 0."""
    with worker_processes() as started:
        started.append(worker := WorkerProcess(redis_url, tmp_path, "listed"))
        worker.wait_registered(redis_conn)
        info = subprocess.run(
            [str(Path(sys.executable).parent / "rq"), "info", "--url", redis_url,
             "--serializer", "rq.serializers.JSONSerializer"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout
        assert "fast:tiny" in info and "relax:tiny" in info and "listed" in info, info
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout_s=60) == 0, worker.log()


def test_sigterm_during_job_finishes_it_then_exits_0(redis_url, redis_conn, tiny_spec, tmp_path):
    """SIGTERM mid-job: the job still ends done with its grid, then the worker exits with status 0."""
    with worker_processes() as started:
        started.append(worker := WorkerProcess(redis_url, tmp_path, "term", WORKER_TEST_STEP_DELAY_S="0.5"))
        worker.wait_registered(redis_conn)
        events = Events(redis_conn, job_id := jobs.new_job_id())
        queue.enqueue(redis_conn, dataclasses.replace(tiny_spec, steps=8), "test:owner", job_id=job_id)
        events.next("progress", 60)
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout_s=60) == 0, worker.log()
        events.close()
    rec = record(redis_conn, job_id)
    assert (rec.state, rec.step, rec.total) == ("done", 8, 8)
    assert redis_conn.exists(keys.job_grid(job_id))


def test_job_of_killed_worker_is_finished_by_another(redis_url, redis_conn, tiny_spec, tmp_path):
    """SIGKILL mid-job: another worker re-runs it within 2 minutes; one outcome (done), no failure recorded; the
    member's fast time is charged once, with the GPU time of the attempt that finished, and nothing stays reserved."""
    # Both workers run the production RQ tuning (WorkerSettings defaults). The first is slowed down so that it is
    # still rendering once the second has started; the second renders at full speed.
    with worker_processes() as started:
        started.append(first := WorkerProcess(redis_url, tmp_path, "first", WORKER_TEST_STEP_DELAY_S="5"))
        first.wait_registered(redis_conn)
        events = Events(redis_conn, job_id := jobs.new_job_id())
        spec = dataclasses.replace(tiny_spec, steps=60)
        request = admission.AdmissionRequest(job_ids=(job_id,), mode="fast", model=spec.model, width=spec.width,
                                             height=spec.height, steps=spec.steps)
        admission.admit(redis_conn, MEMBER, STANDARD, request)
        queue.enqueue(redis_conn, spec, "test:owner", job_id=job_id)
        events.next("progress", 60)
        started.append(second := WorkerProcess(redis_url, tmp_path, "second"))
        second.wait_registered(redis_conn)
        assert (record(redis_conn, job_id).state, record(redis_conn, job_id).worker) == ("running", "first")
        first.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        first.wait(timeout_s=30)
        events.next("outcome", ABANDONED_JOB_DEADLINE_S)
        recovery_s = time.monotonic() - killed_at
        # the worker settles the reservation right after publishing the outcome: wait for it while the worker lives
        wait_until(lambda: not redis_conn.exists(keys.quota_reservation(job_id)), 30, "the reservation to be settled")
        print(f"\njob of the killed worker finished {recovery_s:.1f} s after the kill")
        events.close()
    rec = record(redis_conn, job_id)
    assert recovery_s < ABANDONED_JOB_DEADLINE_S
    assert (rec.state, rec.attempt, rec.worker, rec.reason) == ("done", 2, "second", "")
    assert [e["state"] for e in events.of_type("outcome")] == ["done"]
    retries = [e for e in events.of_type("state") if e["state"] == "queued"]
    assert [e["reason"] for e in retries] == ["the worker running it stopped responding"]
    assert redis_conn.exists(keys.job_grid(job_id))
    usage = ledger.usage(redis_conn, MEMBER, STANDARD, now=time.time(), policy=load_config().period)
    assert usage.used_s == pytest.approx(rec.gpu_s, rel=1e-3) and rec.gpu_s > 0
    assert (usage.reserved_s, usage.active_fast) == (0, 0)


def test_batch_of_killed_worker_is_rerun_each_job_charged_once(redis_url, redis_conn, tiny_spec, tmp_path):
    """SIGKILL mid-batch: the three jobs the worker rendered together, all shown by RQ as started by it, are each
    re-run by another worker and done once, on their second attempt; each member is charged its job's GPU time
    once and nothing stays reserved."""
    tight = {"WORKER_JOB_MONITORING_INTERVAL_S": "1", "WORKER_JOB_HEARTBEAT_TTL_S": "2",
             "WORKER_MAINTENANCE_INTERVAL_S": "1", "WORKER_WORKER_TTL_S": "16", "WORKER_BATCH_SIZE": "3"}
    spec = dataclasses.replace(tiny_spec, steps=30)
    members = [ledger.member_id(1, 10 + k) for k in range(3)]
    job_ids = [jobs.new_job_id() for _ in members]
    for k, (member, job_id) in enumerate(zip(members, job_ids, strict=True)):
        request = admission.AdmissionRequest(job_ids=(job_id,), mode="fast", model=spec.model, width=spec.width,
                                             height=spec.height, steps=spec.steps)
        admission.admit(redis_conn, member, STANDARD, request)
        queue.enqueue(redis_conn, dataclasses.replace(spec, seed=k), "test:owner", job_id=job_id)
    started_jobs = StartedJobRegistry("fast:tiny", connection=redis_conn, serializer=queue.SERIALIZER)
    with worker_processes() as started:
        started.append(first := WorkerProcess(redis_url, tmp_path, "first", WORKER_TEST_STEP_DELAY_S="1", **tight))
        wait_until(lambda: all(record(redis_conn, j).step > 0 for j in job_ids), 120, "the batch to be rendering")
        assert {record(redis_conn, j).worker for j in job_ids} == {"first"}
        assert set(started_jobs.get_job_ids(cleanup=False)) == set(job_ids)  # what `rq info` counts as started
        assert {Job.fetch(j, connection=redis_conn, serializer=queue.SERIALIZER).worker_name for j in job_ids} == {
            "first"}
        started.append(second := WorkerProcess(redis_url, tmp_path, "second", **tight))
        second.wait_registered(redis_conn)  # while the batch renders: the lanes are empty, it waits
        assert {record(redis_conn, j).state for j in job_ids} == {"running"}
        first.signal(signal.SIGKILL)
        first.wait(timeout_s=30)
        wait_until(lambda: all(record(redis_conn, j).final for j in job_ids), ABANDONED_JOB_DEADLINE_S,
                   "the killed batch's jobs to be re-run")
        wait_until(lambda: not any(redis_conn.exists(keys.quota_reservation(j)) for j in job_ids), 30,
                   "the reservations to be settled")
    policy = load_config().period
    for member, job_id in zip(members, job_ids, strict=True):
        rec = record(redis_conn, job_id)
        assert (rec.state, rec.attempt, rec.worker) == ("done", 2, "second")
        usage = ledger.usage(redis_conn, member, STANDARD, now=time.time(), policy=policy)
        assert usage.used_s == pytest.approx(rec.gpu_s, rel=1e-3) and usage.reserved_s == pytest.approx(0, abs=1e-9)


def test_job_longer_than_its_heartbeat_ttl_is_kept_alive(redis_url, redis_conn, tiny_spec, tmp_path):
    """A job running for several heartbeat TTLs is not taken for abandoned while its worker beats: registry sweeps
    (what any worker's maintenance runs) all through it leave it alone; it ends done on its first attempt, and the
    next job, on the same worker, too (the heartbeat thread outlives each job)."""
    tight = {"WORKER_JOB_MONITORING_INTERVAL_S": "1", "WORKER_JOB_HEARTBEAT_TTL_S": "2"}
    started_jobs = StartedJobRegistry("fast:tiny", connection=redis_conn, serializer=queue.SERIALIZER)

    def swept_and_final(job_id: str) -> bool:
        started_jobs.cleanup()  # an abandoned job would be retried here: a `queued` state event, attempt 2
        return record(redis_conn, job_id).final

    with worker_processes() as started:
        started.append(busy := WorkerProcess(redis_url, tmp_path, "busy", WORKER_TEST_STEP_DELAY_S="0.5", **tight))
        busy.wait_registered(redis_conn)
        first, second = jobs.new_job_id(), jobs.new_job_id()
        events = Events(redis_conn, first)
        queue.enqueue(redis_conn, dataclasses.replace(tiny_spec, steps=14), "test:owner", job_id=first)  # ~7 s
        wait_until(lambda: swept_and_final(first), 120, "the long job to end")
        queue.enqueue(redis_conn, dataclasses.replace(tiny_spec, steps=6), "test:owner", job_id=second)
        wait_until(lambda: swept_and_final(second), 120, "the second job to end")
        events.next("outcome", 5)
        events.close()
    rec = record(redis_conn, first)
    assert (rec.state, rec.attempt, rec.worker) == ("done", 1, "busy")
    assert [e["state"] for e in events.of_type("state")] == ["running"]
    assert rec.finished_at - rec.started_at > 2 * 2  # more than two heartbeat TTLs
    assert (record(redis_conn, second).state, record(redis_conn, second).attempt) == ("done", 1)


def test_specs_a_model_cannot_render_fail_at_the_door_without_retry(redis_url, redis_conn, tiny_spec: JobSpec,
                                                                     tmp_path):
    """A width that is not a multiple of the model's (which used to reach the pipeline: a ValueError, retried
    once) is refused by the payload check: failed on no attempt, not retried, the reason naming it; an infinite
    guidance scale (which used to give NaN images) cannot even be enqueued."""
    with pytest.raises(MalformedPayload, match="spec.guidance_scale"):
        queue.enqueue(redis_conn, dataclasses.replace(tiny_spec, guidance_scale=math.inf), "test:owner")
    odd_id = queue.enqueue(redis_conn, dataclasses.replace(tiny_spec, width=60), "test:owner")  # not a multiple of 8
    with worker_processes() as started:
        started.append(worker := WorkerProcess(redis_url, tmp_path, "failing", burst=True))
        assert worker.wait(timeout_s=180) == 0, worker.log()
    odd = record(redis_conn, odd_id)
    assert (odd.state, odd.attempt) == ("failed", 0) and "not a multiple of 8" in odd.reason
    failed = FailedJobRegistry("fast:tiny", connection=redis_conn, serializer=queue.SERIALIZER)
    assert odd_id in failed


def test_hand_made_os_system_job_is_refused_unrun(redis_url, redis_conn, tmp_path):
    """The hardening probe: an `os.system("touch <file>")` job put on `fast:tiny` by hand is refused by a burst
    worker: no file, the RQ job failed with the reason and not retried, counted once, logged by id and function
    name but never with its argument."""
    target = tmp_path / "x"
    probe = Queue("fast:tiny", connection=redis_conn, serializer=JSONSerializer).enqueue_call(
        "os.system", args=(f"touch {target}",)
    )
    with worker_processes() as started:
        started.append(worker := WorkerProcess(redis_url, tmp_path, "guarded", burst=True))
        assert worker.wait(timeout_s=180) == 0, worker.log()
    assert not target.exists()
    job = Job.fetch(probe.id, connection=redis_conn, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.FAILED
    assert probe.id in FailedJobRegistry("fast:tiny", connection=redis_conn, serializer=JSONSerializer)
    failure = job.latest_result()
    assert failure is not None and "JobRefused" in failure.exc_string and "os.system" in failure.exc_string
    assert [r.type for r in job.results()] == [failure.type]  # one attempt: its retry (none asked) not used either
    assert queue.rq_queue(redis_conn, "fast:tiny").count == 0
    assert redis_conn.hgetall(keys.refused_jobs()) == {b"os.system": b"1"}
    assert redis_conn.get(keys.refused_jobs_total()) == b"1"
    log = worker.log()
    assert probe.id in log and "os.system" in log
    assert str(target) not in log and "touch" not in log


def test_cancel_running_job_in_worker_process(redis_url, redis_conn: redis.Redis, tiny_spec, tmp_path):
    """Cancelling a job a worker process is rendering stops it within a step: cancelled, no grid, worker lives on."""
    with worker_processes() as started:
        started.append(worker := WorkerProcess(redis_url, tmp_path, "cancel", WORKER_TEST_STEP_DELAY_S="0.6"))
        worker.wait_registered(redis_conn)
        events = Events(redis_conn, job_id := jobs.new_job_id())
        queue.enqueue(redis_conn, dataclasses.replace(tiny_spec, steps=20), "test:owner", job_id=job_id)
        events.next("progress", 60)
        assert queue.cancel(redis_conn, job_id) == queue.CancelResult.REQUESTED
        step_at_cancel = record(redis_conn, job_id).step
        events.next("outcome", 30, state="cancelled")
        events.close()
        rec = record(redis_conn, job_id)
        assert rec.step <= step_at_cancel + 1 < rec.total
        assert not redis_conn.exists(keys.job_grid(job_id))
        wait_until(lambda: redis_conn.hget(f"rq:worker:{worker.name}", "state") == b"idle", 30, "the worker idle")
        assert worker.proc.poll() is None


def test_unreachable_redis_exits_1_without_logging_the_password(redis_conn, tmp_path):
    """A worker that cannot reach Redis exits 1, naming host and port in its log but never REDIS_URL's password."""
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    with worker_processes() as started:
        started.append(worker := WorkerProcess(url, tmp_path, "no-redis"))
        assert worker.wait(timeout_s=120) == 1, worker.log()
    assert "cannot reach Redis at 127.0.0.1:" in worker.log()
    assert "hunter2" not in worker.log()


def test_malformed_payloads_fail_once_without_retry_with_their_reason(redis_url, redis_conn, tiny_spec, tmp_path):
    """`python -m worker` given forged payloads on its lane (an unknown field, NaN guidance, a negative width, a
    huge prompt, a payload whose job id is not its job's): each job fails on its one attempt (RQ's retry unused),
    its record says why, and a good job behind them renders."""
    good = queue.payload("00" * 16, tiny_spec, "test:owner")
    forged = {
        "unknown field": {**good, "admin": True},
        "NaN guidance": {**good, "spec": {**good["spec"], "guidance_scale": math.nan}},
        "negative width": {**good, "spec": {**good["spec"], "width": -64}},
        "huge prompt": {**good, "spec": {**good["spec"], "prompt": "x" * 100_000}},
        "another job's id": {**good, "job_id": "ff" * 16},
    }
    lane = Queue("fast:tiny", connection=redis_conn, serializer=JSONSerializer)
    ids = {}
    for label, payload in forged.items():
        ids[label] = job_id = jobs.new_job_id()
        jobs.create(redis_conn, job_id, tiny_spec, "test:owner")
        carried = payload if label == "another job's id" else {**payload, "job_id": job_id}
        lane.enqueue_call(queue.JOB_FUNCTION, args=(carried,), job_id=job_id, retry=Retry(max=queue.RETRIES))
    fine = queue.enqueue(redis_conn, tiny_spec, "test:owner")
    with worker_processes() as started:
        started.append(worker := WorkerProcess(redis_url, tmp_path, "door", burst=True))
        assert worker.wait(timeout_s=180) == 0, worker.log()
    failed = FailedJobRegistry("fast:tiny", connection=redis_conn, serializer=JSONSerializer)
    expected = {
        "unknown field": "unknown field(s) 'admin'",
        "NaN guidance": "spec.guidance_scale is not a finite number",
        "negative width": "spec.width must be a whole number",
        "huge prompt": "spec.prompt is a string longer than",
        "another job's id": "job_id is not the id of the job that carries it",
    }
    for label, job_id in ids.items():
        rec = record(redis_conn, job_id)
        assert (rec.state, rec.attempt) == ("failed", 0), label  # refused before it was marked running
        assert rec.reason.startswith("malformed job payload: ") and expected[label] in rec.reason, rec.reason
        assert job_id in failed.get_job_ids(), label
        assert Job.fetch(job_id, connection=redis_conn, serializer=JSONSerializer).retries_left == 0, label
    assert record(redis_conn, fine).state == "done"
    assert not redis_conn.exists(keys.job("ff" * 16))  # the forged id named no job, and none was made for it
    assert worker.log().count("malformed job payload") >= len(forged)
