"""The RQ worker of `python -m worker`: jobs run in its own process, each handed the worker's `Context`.

`ImagineWorker.for_context(ctx)` listens on the context's model lanes, runs jobs through `worker.jobs.ImagineJob`
bound to `ctx` (only the project's job functions, each called as `func(ctx, payload)`, failed attempts handled in
`worker.jobs`), orders the relax lanes and applies missed outcomes before each dequeue (`worker.relax`), and keeps a
running job's heartbeat short so that a killed worker's job is re-run soon. A grid job (or a variation) it dequeues
takes the waiting ones that can share its sampler call along (`worker.claim`, `worker.batch`; WORKER_BATCH_SIZE in
all): they are rendered together, then RQ performs and records each as its own. Its maintenance also redelivers
outcomes Discord did not take (`worker.redelivery`) and puts back jobs RQ lost track of (`worker.lost`).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

import redis
from rq import SimpleWorker
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.queue import Queue
from rq.registry import StartedJobRegistry
from rq.timeouts import JobTimeoutException
from rq.worker import WorkerStatus

from core import keys, queue
from core.errors import TransientGenerationError
from worker import batch, claim, lost, redelivery
from worker.context import STATS_TTL_S, Context, count_batch
from worker.jobs import ImagineJob
from worker.relax import BeforeDequeue

if TYPE_CHECKING:
    from rq.executions import Execution

log = logging.getLogger(__name__)

PUBSUB_POLL_S = 1.0
"""How often the thread listening for RQ's commands (stop, kill a job) wakes when nothing comes: the most a stopping
worker waits for it."""


class ImagineWorker(SimpleWorker):
    """An RQ worker that runs jobs in its own process (no fork: CUDA state does not survive one), with a short
    job heartbeat so that a job whose worker was killed is noticed as abandoned within `job_heartbeat_ttl_s`.

    RQ's SimpleWorker sends no heartbeat while a job runs and registers the job for its whole timeout plus 60 s,
    so a killed worker's job would wait that long; here a thread renews the job's registry entry every
    `job_monitoring_interval` seconds with a TTL of `job_heartbeat_ttl_s`.

    Its job class is `ImagineJob.bound_to(context)`: the jobs it runs, and the abandoned ones its maintenance finds
    in the started registries (RQ builds those with the worker's job class), all see `context`. RQ's log lines name
    a job by its id, never by its description (which would show a refused job's arguments).
    """

    def __init__(
        self, queues: Any, *, context: Context, job_heartbeat_ttl_s: int, job_timeout_s: int, **kwargs: Any
    ) -> None:
        super().__init__(queues, job_class=ImagineJob.bound_to(context), log_job_description=False, **kwargs)
        self.context = context
        self.job_heartbeat_ttl_s = job_heartbeat_ttl_s
        self.job_timeout_s = job_timeout_s
        self.before_dequeue = BeforeDequeue(context, self.queue_names())
        self._job_heartbeat: _JobHeartbeat | None = None
        self.batch_cap = context.settings.batch_size
        """Most grids per sampler call: WORKER_BATCH_SIZE, halved each time a batch ran out of device memory."""

    @classmethod
    def for_context(cls, ctx: Context) -> ImagineWorker:
        """A worker named `ctx.worker_name` on the lanes of `ctx.model` (fast first), tuned by `ctx.settings` so
        abandoned jobs are re-run quickly."""
        settings = ctx.settings
        return cls(
            queue.lane_names(ctx.model.name),
            name=ctx.worker_name,
            connection=ctx.conn,
            serializer=queue.SERIALIZER,
            worker_ttl=settings.worker_ttl_s,
            job_monitoring_interval=settings.job_monitoring_interval_s,
            maintenance_interval=settings.maintenance_interval_s,
            context=ctx,
            job_heartbeat_ttl_s=settings.job_heartbeat_ttl_s,
            job_timeout_s=settings.job_timeout_s,
        )

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        # RQ installs its SIGTERM/SIGINT handlers only after it has registered the worker: a stop asked for in
        # between (the worker is listed, so a supervisor may send one) would kill it outright. It is noted instead.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop_before_start)
        super().bootstrap(*args, **kwargs)

    def subscribe(self) -> None:
        # RQ's, with its listener thread waking every PUBSUB_POLL_S instead of every 60 s. At teardown RQ sends
        # UNSUBSCRIBE and then stops the thread, and redis-py's stop() (8.x) waits for it to leave: a listener that
        # read the UNSUBSCRIBE reply first sat out its whole wait, so a stopping worker hung for up to a minute.
        self.log.info("Worker %s: subscribing to channel %s", self.name, self.pubsub_channel_name)
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(
            sleep_time=PUBSUB_POLL_S, daemon=True, exception_handler=self._pubsub_exception_handler
        )

    def _stop_before_start(self, signum: int, frame: Any) -> None:
        self._stop_requested = True

    def _shutdown(self) -> None:
        # An idle worker is stopped by RQ raising StopRequested from its signal handler, wherever the main thread
        # is; code there that catches Exception (logging's emit, for one) would swallow it and the worker would
        # run on, deaf to the signal. The flag makes the stop stick: the dequeue below looks at it.
        self._stop_requested = self._stop_requested or self.get_state() != WorkerStatus.BUSY
        super()._shutdown()

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        # None ends RQ's work loop. A blocking dequeue waits one `timeout` at a time, so that a stop whose
        # StopRequested was swallowed is still seen within `timeout` seconds.
        while not self._stop_requested:
            self.before_dequeue()  # relax lanes in fair order; outcomes left unsettled applied and delivered
            if timeout is None or max_idle_time is not None:
                return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
            result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time=timeout)
            if result is not None:
                return result
        return None

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()
        try:  # outcomes Discord did not take earlier: tried again with backoff (worker.redelivery)
            redelivery.redeliver_due(self.context.conn, self.context.poster, now=time.time())
        except redis.RedisError as exc:
            log.warning("redelivery of undelivered outcomes skipped: %s", exc)
        try:  # jobs RQ lost track of (a worker killed between taking a job and starting it): put back (worker.lost)
            if lost.take_turn(self.connection, self.name, self.maintenance_interval):
                lost.sweep(self.context, now=time.time())
        except redis.RedisError as exc:
            log.warning("sweep for lost jobs skipped: %s", exc)

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
        started = [(job, queue, execution), *self._claim_batch(job)]
        if len(started) > 1:  # as RQ does when it performs a job: it is shown as started by this worker from now
            self.prepare_job_execution(job, remove_from_intermediate_queue=len(self.queues) == 1)
        self._beater().watch([(j, e) for j, _, e in started])
        try:
            members = self._render_batch(started)
            for k, (each, each_queue, each_execution) in enumerate(started):
                self.perform_job(each, each_queue, each_execution)
                self._beater().watch([(j, e) for j, _, e in started[k + 1:]])
        finally:
            self._beater().watch([])
            self.job_class.prepared.clear()  # type: ignore[attr-defined]
        if members > 1:
            count_batch(self.context, members)
        self.set_state(WorkerStatus.IDLE)

    def _claim_batch(self, job: Job) -> list[tuple[Job, Queue, Execution]]:
        """The waiting jobs that share a sampler call with `job` (`worker.claim`), up to WORKER_BATCH_SIZE in all,
        registered as started by this worker; none when `job` is not a grid or a variation, or batching is off."""
        limit = min(self.context.settings.batch_size, self.batch_cap) - 1
        first = batch.member(self.context, job) if limit > 0 else None
        if first is None:
            return []
        try:
            claimed = claim.claim(self.connection, self.queues, first.key, limit=limit,
                                  worker_name=self.name, ttl_s=self.job_heartbeat_ttl_s, now=time.time())
        except redis.RedisError as exc:
            log.warning("job %s runs alone: claiming more jobs failed: %s", job.id, exc)
            return []
        taken: list[tuple[Job, Queue, Execution]] = []
        for each in claimed:
            try:
                other = self.job_class.fetch(each.job_id, connection=self.connection, serializer=self.serializer)
            except NoSuchJobError:  # deleted since the claim saw it
                self.connection.zrem(StartedJobRegistry(each.queue.name, connection=self.connection).key,
                                     f"{each.job_id}:{each.execution_id}")
                continue
            other.timeout = self.job_timeout_s
            try:
                with self.connection.pipeline() as pipe:
                    execution = claim.register(other, each, worker_name=self.name, ttl_s=self.job_heartbeat_ttl_s,
                                               pipeline=pipe)
                    pipe.execute()
            except redis.RedisError as exc:  # it stays in the started registry: RQ's cleanup retries it
                log.warning("job %s: claimed but not registered, left to RQ's cleanup: %s", each.job_id, exc)
                continue
            self.executions[execution.id] = execution
            taken.append((other, each.queue, execution))
        return taken

    def _render_batch(self, started: list[tuple[Job, Queue, Execution]]) -> int:
        """Render together the started jobs that can be (`worker.batch.run`), leaving their outcomes for RQ to
        record as each is performed; the others are performed as lone jobs. Returns how many were batched."""
        if len(started) < 2:
            return 1
        first = batch.member(self.context, started[0][0])
        key = first.key if first is not None else None
        members = [m for j, _, _ in started if (m := batch.member(self.context, j, key)) is not None]
        if len(members) < 2:
            return 1
        outcomes: dict[str, Any] = self.job_class.prepared  # type: ignore[attr-defined]
        try:
            with self.death_penalty_class(self.job_timeout_s, JobTimeoutException, job_id=started[0][0].id):
                batch.run(self.context, members, outcomes)
        except Exception as exc:  # the time limit, out of memory...: each job not yet concluded fails its attempt
            for m in members:
                outcomes.setdefault(m.job_id, exc)
            if isinstance(exc, TransientGenerationError) and len(members) > 1:
                self.batch_cap = max(1, len(members) // 2)  # the retries (and all later batches) fit in memory
                log.warning("a batch of %d jobs ran out of memory: batches of at most %d from now on",
                            len(members), self.batch_cap)
        return len(members)

    def _beater(self) -> _JobHeartbeat:
        """The thread that renews the running job's heartbeat; one for the worker's life, started on first use (a
        thread started per job would sit on every job's path from pickup to render)."""
        if self._job_heartbeat is None:
            self._job_heartbeat = _JobHeartbeat(self)
        return self._job_heartbeat


class _JobHeartbeat:
    """Every `job_monitoring_interval` seconds while jobs run, RQ's `maintain_heartbeats` for each (a daemon thread).

    `watch(started)` starts the interval afresh for new jobs (a batch's, or one); `watch([])` stops beating, and
    returns only once no beat is in flight, so none lands after RQ has recorded a job's end.
    """

    def __init__(self, worker: ImagineWorker) -> None:
        self.worker = worker
        self.changed = threading.Condition()
        self.current: list[tuple[Job, Execution]] = []
        self.beating = False
        self.thread = threading.Thread(target=self._run, name="job-heartbeat", daemon=True)
        self.thread.start()

    def watch(self, started: list[tuple[Job, Execution]]) -> None:
        with self.changed:
            self.current = started
            self.changed.notify_all()
            while self.beating:
                self.changed.wait()

    def _run(self) -> None:
        interval = self.worker.job_monitoring_interval
        with self.changed:
            while True:
                while not self.current:
                    self.changed.wait()
                watched = self.current
                self.changed.wait(interval)  # woken early when the jobs change: then the interval starts over
                if self.current is not watched:
                    continue
                self.beating = True
                self.changed.release()
                try:
                    for job, execution in watched:
                        try:
                            self.worker.maintain_heartbeats(job, execution)
                        except redis.RedisError as exc:
                            log.warning("job %s: heartbeat failed: %s", job.id, exc)
                finally:
                    self.changed.acquire()
                    self.beating = False
                    self.changed.notify_all()
