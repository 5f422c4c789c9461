"""Helpers for tests that run the worker: real `python -m worker` processes, in-process RQ workers, event waits."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis
from rq import Worker

from core import jobs, keys
from core.images import Rules
from core.models import tiny_model
from core.settings import WorkerSettings
from worker import safety
from worker.context import Context, register_stats
from worker.rq_worker import ImagineWorker

REPO = Path(__file__).resolve().parents[2]
WORKER_START_TIMEOUT_S = 90.0
"""A worker imports torch and diffusers and builds the tiny pipeline: slow on a busy 2-core machine."""

POLL_S = 0.05
"""Interval of polls of Redis state that has no event to wait on (a worker's registration)."""


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(POLL_S)


class Events:
    """A subscription to one job's events, opened before the job is enqueued so that none is missed."""

    def __init__(self, conn: redis.Redis, job_id: str) -> None:
        self.pubsub = conn.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(keys.job_events(job_id))
        self.seen: list[dict[str, Any]] = []

    def next(self, kind: str, timeout_s: float, **match: Any) -> dict[str, Any]:
        """The next event of type `kind` whose fields equal `match`; fails after `timeout_s` seconds."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            message = self.pubsub.get_message(timeout=left)
            if message is None or message["type"] != "message":
                continue
            event = json.loads(message["data"])
            self.seen.append(event)
            if event["type"] == kind and all(event.get(k) == v for k, v in match.items()):
                return event
        raise AssertionError(f"no {kind} event {match} within {timeout_s:g} s; saw {self.seen}")

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.seen if e["type"] == kind]

    def close(self) -> None:
        self.pubsub.close()


class Outcomes:
    """The outcome events of every job (`keys.job_events`), subscribed to before the jobs run: one event per final
    transition, so what a test reads here is what each job ended as, once."""

    def __init__(self, conn: redis.Redis) -> None:
        self.pubsub = conn.pubsub(ignore_subscribe_messages=True)
        self.pubsub.psubscribe(keys.job_events("*"))

    def take(self, count: int, timeout_s: float = 10.0) -> list[tuple[str, str]]:
        """The next `count` outcomes as (job id, state), in the order they happened; fails after `timeout_s`."""
        found: list[tuple[str, str]] = []
        deadline = time.monotonic() + timeout_s
        while len(found) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"only {found} of {count} outcomes within {timeout_s:g} s")
            message = self.pubsub.get_message(timeout=left)
            if message is not None and message["type"] == "pmessage":
                event = json.loads(message["data"])
                if event["type"] == "outcome":
                    found.append((event["job_id"], event["state"]))
        return found

    def close(self) -> None:
        self.pubsub.close()


class WorkerProcess:
    """`python -m worker` in a subprocess, its log in a file."""

    def __init__(
        self, redis_url: str, log_dir: Path, name: str, *, burst: bool = False, log_level: str = "INFO", **env: str
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        environment = {
            **os.environ,
            "REDIS_URL": redis_url,
            "WORKER_DEVICE": "cpu",
            "OMP_NUM_THREADS": "1",  # the test machine's cores are shared
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        args = [sys.executable, "-m", "worker", "--name", name, "--log-level", log_level]
        args += ["--burst"] if burst else []
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(args, cwd=REPO, env=environment, stdout=log, stderr=subprocess.STDOUT)

    def wait_registered(self, conn: redis.Redis) -> None:
        """Until RQ lists this worker (it has loaded its model and listens on its lanes)."""

        def registered() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited with {self.proc.returncode}:\n{self.log()}")
            return any(w.name == self.name for w in Worker.all(connection=conn))

        wait_until(registered, WORKER_START_TIMEOUT_S, f"worker {self.name} to register")

    def signal(self, signum: signal.Signals) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout_s: float) -> int:
        return self.proc.wait(timeout=timeout_s)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@contextlib.contextmanager
def worker_processes() -> Iterator[list[WorkerProcess]]:
    """A list to put started workers in; any still running at the end are killed."""
    started: list[WorkerProcess] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()


def run_in_process(
    conn: redis.Redis,
    engine: Any,
    *,
    name: str = "test-worker",
    poster: Any = None,
    classifier: Any = None,
    safety_threshold: float = 0.5,
    image_rules: Any = None,
    describer: Any = None,
    **settings: Any,
) -> None:
    """Work the tiny model's lanes with an in-process `ImagineWorker` until they are empty (burst), `engine` warm;
    `poster` (a `worker.delivery.Poster`) shows the jobs in Discord; `image_rules` say where input images may come
    from (`core.images.Rules`); `describer` answers /describe (`worker.describe`); `classifier` checks outputs (as
    `python -m worker` with WORKER_SAFETY_CLASSIFIER), and is reported for /admin moderation status."""
    worker_settings = WorkerSettings(device="cpu", **settings)
    info = tiny_model()
    ctx = Context(conn=conn, engine=engine, model=info, settings=worker_settings, worker_name=name, poster=poster,
                  classifier=classifier, safety_threshold=safety_threshold, image_rules=image_rules or Rules(),
                  describer=describer)
    register_stats(ctx, pipeline_loads=1, load_s=0.0)
    safety.report(conn, name, classifier, now=time.time())
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)}
    try:
        ImagineWorker.for_context(ctx).work(burst=True, logging_level="WARNING")
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def record(conn: redis.Redis, job_id: str) -> jobs.JobRecord:
    """The job's record, which must exist."""
    found = jobs.get(conn, job_id)
    assert found is not None, f"no record of job {job_id}"
    return found
