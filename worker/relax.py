"""The worker's side of quotas and fair relax order: a hook the RQ worker runs before each dequeue.

Wired into `worker.runtime.ImagineWorker.dequeue_job_and_maintain_ttl`. Before the worker takes its next job, the
relax lanes it listens on are put into fair order (`quotas.quotas.order_relax`) and, every RECONCILE_INTERVAL_S, the
outcomes of jobs that ended without their reservation being applied are applied (`quotas.quotas.reconcile`: a
process that died between a job's final transition and its settlement). A Redis error here is logged and the
worker carries on in RQ's own order: fairness must never stop the GPU.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import redis

import quotas
import quotas.ledger  # the outcome hook: to be replaced by explicit calls (house issue)
from core import queue

log = logging.getLogger(__name__)

RECONCILE_INTERVAL_S = 30.0
"""How often one worker sweeps for unapplied outcomes (each sweep reads the unsettled reservations)."""


class BeforeDequeue:
    """Call it right before dequeueing: orders the relax lanes among `queue_names`, reconciles now and then."""

    def __init__(
        self, conn: redis.Redis, queue_names: Sequence[str], *, clock: Callable[[], float] = time.time
    ) -> None:
        self.conn = conn
        self.relax_lanes = [name for name in queue_names if name.startswith(f"{queue.LANES[1]}:")]
        self.clock = clock
        self.last_reconcile_s = float("-inf")
        quotas.ledger.install_outcome_hook()  # this process's final transitions settle at once

    def __call__(self) -> None:
        now = self.clock()
        try:
            if now - self.last_reconcile_s >= RECONCILE_INTERVAL_S:
                self.last_reconcile_s = now
                applied = quotas.reconcile(self.conn, now=now)
                if applied:
                    log.info("applied %d job outcome(s) that their process had left unsettled", applied)
            for lane in self.relax_lanes:
                quotas.order_relax(self.conn, lane, now=now)
        except redis.RedisError as exc:
            log.warning("fair relax order skipped: %s", exc)
