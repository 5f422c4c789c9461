"""The worker's side of quotas and fair relax order: what the RQ worker does before each dequeue.

Called from `worker.rq_worker.ImagineWorker.dequeue_job_and_maintain_ttl`. Before the worker takes its next job, the
relax lanes it listens on are put into fair order (`quotas.order_relax`) and, every RECONCILE_INTERVAL_S, the
outcomes of jobs that ended without their reservation being applied are applied (`quotas.reconcile`: a process that
died between a job's final transition and its settlement) and then delivered, through the same
`worker.jobs.conclude` as every other outcome (delivery happens once: a job already shown is not shown again). A
Redis error here is logged and the worker carries on in RQ's own order: fairness must never stop the GPU.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import redis

import quotas
from core import jobs, queue
from worker.context import Context
from worker.jobs import conclude

log = logging.getLogger(__name__)

RECONCILE_INTERVAL_S = 30.0
"""How often one worker sweeps for unapplied outcomes (each sweep reads the unsettled reservations)."""


class BeforeDequeue:
    """Call it right before dequeueing: orders the relax lanes among `queue_names`, reconciles now and then."""

    def __init__(
        self, ctx: Context, queue_names: Sequence[str], *, clock: Callable[[], float] = time.time
    ) -> None:
        self.ctx = ctx
        self.relax_lanes = [name for name in queue_names if name.startswith(f"{queue.LANES[-1]}:")]
        self.clock = clock
        self.last_reconcile_s = float("-inf")

    def __call__(self) -> None:
        conn, now = self.ctx.conn, self.clock()
        try:
            if now - self.last_reconcile_s >= RECONCILE_INTERVAL_S:
                self.last_reconcile_s = now
                applied = quotas.reconcile(conn, now=now)
                if applied:
                    log.info("applied %d job outcome(s) that their process had left unsettled", len(applied))
                for job_id in applied:
                    record = jobs.get(conn, job_id)
                    if record is not None:
                        conclude(self.ctx, record)  # settled already; delivered now unless it was
            for lane in self.relax_lanes:
                quotas.order_relax(conn, lane, now=now)
        except redis.RedisError as exc:
            log.warning("fair relax order skipped: %s", exc)
