"""What a worker process holds for as long as it lives: the warm engine, handed to each job; and the RQ worker class.

`python -m worker` builds one `Runtime` before it takes the first job and installs it here; the job function
`worker.jobs.imagine` reads it with `current()`. Nothing is loaded per job.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
from rq import SimpleWorker
from rq.job import Job
from rq.queue import Queue
from rq.worker import WorkerStatus

from core import jobs, keys, queue
from core.models import ModelInfo
from core.settings import WorkerSettings
from worker.relax import BeforeDequeue

if TYPE_CHECKING:
    from rq.executions import Execution

    from worker.delivery import Poster
    from worker.engine import Engine
    from worker.safety import SafetyClassifier

log = logging.getLogger(__name__)

STATS_TTL_S = 24 * 3600
"""How long a worker's stats hash outlives its last job."""


@dataclass
class Runtime:
    """The process-wide state a job function needs."""

    conn: redis.Redis
    engine: Engine
    model: ModelInfo
    settings: WorkerSettings
    worker_name: str
    poster: Poster | None = None  # shows jobs in Discord; None: jobs have no Discord side (CLI, tests)
    classifier: SafetyClassifier | None = None  # the image safety check (`worker.safety.load`); None: none
    safety_threshold: float = 0.5  # an image scoring at least this is flagged (WORKER_SAFETY_THRESHOLD)


_current: Runtime | None = None


def install(runtime: Runtime | None) -> None:
    """Make `runtime` the one the job function uses (None removes it); its poster delivers every outcome that this
    process makes final (`core.jobs.add_final_hook`), also those of RQ's failure callback."""
    global _current
    if _current is not None and _current.poster is not None:
        jobs.remove_final_hook(_current.poster)
    _current = runtime
    if runtime is not None and runtime.poster is not None:
        jobs.add_final_hook(runtime.poster)


def current() -> Runtime:
    """The installed runtime.

    Raises:
        RuntimeError: none is installed (the job function runs only inside `python -m worker`).
    """
    if _current is None:
        raise RuntimeError("no worker runtime installed: worker.jobs.imagine runs inside `python -m worker`")
    return _current


def default_worker_name() -> str:
    """`host.pid`: readable in `rq info`, unique per process."""
    return f"{socket.gethostname()}.{os.getpid()}"


def register_stats(runtime: Runtime, *, pipeline_loads: int, load_s: float, upscaler_loads: int = 0) -> None:
    """Write the worker's stats hash (`keys.worker_stats`): model, pipeline and upscaler loads, jobs done."""
    key = keys.worker_stats(runtime.worker_name)
    with runtime.conn.pipeline() as pipe:
        pipe.hset(
            key,
            mapping={
                "model": runtime.model.name,
                "pipeline_loads": pipeline_loads,
                "upscaler": runtime.settings.upscaler,
                "upscaler_loads": upscaler_loads,
                "load_s": round(load_s, 3),
                "pid": os.getpid(),
                "started_at": time.time(),
                "jobs_done": 0,
            },
        )
        pipe.expire(key, STATS_TTL_S)
        pipe.execute()


def count_job_done(runtime: Runtime) -> None:
    """One more job done by this worker, in its stats hash."""
    key = keys.worker_stats(runtime.worker_name)
    with runtime.conn.pipeline() as pipe:
        pipe.hincrby(key, "jobs_done", 1)
        pipe.expire(key, STATS_TTL_S)
        pipe.execute()


class ImagineWorker(SimpleWorker):
    """An RQ worker that runs jobs in its own process (no fork: CUDA state does not survive one), with a short
    job heartbeat so that a job whose worker was killed is noticed as abandoned within `job_heartbeat_ttl_s`.

    RQ's SimpleWorker sends no heartbeat while a job runs and registers the job for its whole timeout plus 60 s,
    so a killed worker's job would wait that long; here a thread renews the job's registry entry every
    `job_monitoring_interval` seconds with a TTL of `job_heartbeat_ttl_s`.
    """

    def __init__(self, *args: Any, job_heartbeat_ttl_s: int, job_timeout_s: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.job_heartbeat_ttl_s = job_heartbeat_ttl_s
        self.job_timeout_s = job_timeout_s
        self.before_dequeue = BeforeDequeue(self.connection, self.queue_names())
        self._job_heartbeat: _JobHeartbeat | None = None

    @classmethod
    def for_model(cls, conn: redis.Redis, model: str, name: str, settings: WorkerSettings) -> ImagineWorker:
        """A worker on `model`'s lanes (fast first), tuned by `settings` so abandoned jobs are re-run quickly."""
        return cls(
            queue.lane_names(model),
            name=name,
            connection=conn,
            serializer=queue.SERIALIZER,
            worker_ttl=settings.worker_ttl_s,
            job_monitoring_interval=settings.job_monitoring_interval_s,
            maintenance_interval=settings.maintenance_interval_s,
            job_heartbeat_ttl_s=settings.job_heartbeat_ttl_s,
            job_timeout_s=settings.job_timeout_s,
        )

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        self.before_dequeue()  # relax lanes in fair order; unapplied quota outcomes applied
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def register_birth(self) -> None:
        super().register_birth()
        # RQ lists a queue (`rq info`) once something was enqueued on it; list both lanes from the start.
        self.connection.sadd(Queue.redis_queues_keys, *(q.key for q in self.queues))

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        # RQ sends its three heartbeat commands one by one when it passes no pipeline (before every dequeue and
        # after every pickup): one round trip instead of four, on the path from enqueue to the job's start.
        if pipeline is None:
            with self.connection.pipeline(transaction=False) as pipe:
                self.heartbeat(timeout, pipe)
                pipe.execute()
            return
        super().heartbeat(timeout, pipeline)
        pipeline.expire(keys.worker_stats(self.name), STATS_TTL_S)

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return self.job_heartbeat_ttl_s

    def execute_job(self, job: Job, queue: Queue) -> None:
        job.timeout = self.job_timeout_s  # this worker's limit, whatever the enqueuer asked
        execution = self.prepare_execution(job)
        self._beater().watch(job, execution)
        try:
            self.perform_job(job, queue, execution)
        finally:
            self._beater().watch(None, None)
        self.set_state(WorkerStatus.IDLE)

    def _beater(self) -> _JobHeartbeat:
        """The thread that renews the running job's heartbeat; one for the worker's life, started on first use (a
        thread started per job would sit on every job's path from pickup to render)."""
        if self._job_heartbeat is None:
            self._job_heartbeat = _JobHeartbeat(self)
        return self._job_heartbeat


class _JobHeartbeat:
    """Every `job_monitoring_interval` seconds while a job runs, RQ's `maintain_heartbeats` for it (a daemon thread).

    `watch(job, execution)` starts the interval afresh for a new job; `watch(None, None)` stops beating, and returns
    only once no beat for the old job is in flight, so none lands after RQ has recorded the job's end.
    """

    def __init__(self, worker: ImagineWorker) -> None:
        self.worker = worker
        self.changed = threading.Condition()
        self.current: tuple[Job, Execution] | None = None
        self.beating = False
        self.thread = threading.Thread(target=self._run, name="job-heartbeat", daemon=True)
        self.thread.start()

    def watch(self, job: Job | None, execution: Execution | None) -> None:
        with self.changed:
            self.current = (job, execution) if job is not None and execution is not None else None
            self.changed.notify_all()
            while self.current is None and self.beating:
                self.changed.wait()

    def _run(self) -> None:
        interval = self.worker.job_monitoring_interval
        with self.changed:
            while True:
                while self.current is None:
                    self.changed.wait()
                watched = self.current
                self.changed.wait(interval)  # woken early when the job changes: then the interval starts over
                if self.current is not watched:
                    continue
                job, execution = watched
                self.beating = True
                self.changed.release()
                try:
                    self.worker.maintain_heartbeats(job, execution)
                except redis.RedisError as exc:
                    log.warning("job %s: heartbeat failed: %s", job.id, exc)
                finally:
                    self.changed.acquire()
                    self.beating = False
                    self.changed.notify_all()
