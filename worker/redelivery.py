"""Outcomes Discord did not take, delivered again later: a Discord outage never loses a grid.

A delivery that fails with an error that may go away (Discord unreachable, 5xx, a 429 too long to wait for) puts
the job in `keys.undelivered`, scored with the time of its next attempt; so does cancelling a queued job
(`core.queue.cancel`), which no worker will run, due at once. Every worker's maintenance
(`worker.rq_worker.ImagineWorker.run_maintenance_tasks`, every WORKER_MAINTENANCE_INTERVAL_S, idle or between jobs)
claims the jobs that are due, atomically pushing each one's next attempt back by its backoff, and delivers them
through `Poster.deliver_outcome`, which sends nothing for a job already shown. A job leaves the set once delivered,
once it has nowhere to go (its delivery record expired, its record is gone), or after MAX_TRIES attempts.
"""

from __future__ import annotations

import logging
from typing import Protocol

import redis

from core import jobs, keys, metrics

log = logging.getLogger(__name__)

FIRST_RETRY_S = 5.0
"""Seconds from a failed delivery to the first retry; each later retry waits twice as long, up to MAX_BACKOFF_S."""

MAX_BACKOFF_S = 120.0
"""Longest wait between two delivery attempts of one outcome."""

MAX_TRIES = 40
"""Retries of one outcome before the workers give up on it (over an hour at MAX_BACKOFF_S; /show still has it)."""

BATCH = 20
"""Outcomes one maintenance run tries at most (each try is one request to Discord)."""

class Deliverer(Protocol):
    """What shows outcomes in Discord (`worker.delivery.Poster`)."""

    def deliver_outcome(self, conn: redis.Redis, record: jobs.JobRecord, *, tries: int | None = None) -> bool: ...


# KEYS: undelivered, tries. ARGV: now, batch, first retry s, max backoff s.
# Returns the due job ids, each with its next attempt already pushed back: two workers never try one together.
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(due) do
  local tries = redis.call('HINCRBY', KEYS[2], id, 1)
  local wait = math.min(tonumber(ARGV[3]) * 2 ^ (tries - 1), tonumber(ARGV[4]))
  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + wait, id)
end
return due
"""


def remember(conn: redis.Redis, job_id: str, *, now: float) -> None:
    """Note that the job's final outcome did not reach Discord: a worker's maintenance tries again from
    `now + FIRST_RETRY_S` (a job already waiting keeps its place in the backoff)."""
    conn.zadd(keys.undelivered(), {job_id: now + FIRST_RETRY_S}, nx=True)


def forget(conn: redis.Redis | redis.client.Pipeline, job_id: str) -> None:
    """The job's outcome needs no further attempt (delivered, or nowhere to go)."""
    conn.zrem(keys.undelivered(), job_id)
    conn.hdel(keys.undelivered_tries(), job_id)


def claim_due(conn: redis.Redis, *, now: float, batch: int = BATCH) -> list[str]:
    """The undelivered jobs whose next attempt is due, at most `batch`, each pushed back by its backoff."""
    due = conn.eval(_CLAIM, 2, keys.undelivered(), keys.undelivered_tries(), repr(now), batch,
                    FIRST_RETRY_S, MAX_BACKOFF_S)
    return [d.decode() if isinstance(d, bytes) else str(d) for d in due]


def redeliver_due(conn: redis.Redis, poster: Deliverer | None, *, now: float) -> int:
    """Try once more to deliver each due outcome (one request each, no waiting inside: the backoff is the set's).

    Returns:
        How many were delivered now.
    """
    if poster is None:
        return 0
    delivered = 0
    due = claim_due(conn, now=now)
    if due:
        metrics.count(conn, metrics.DELIVERY_RETRIES, len(due))
    for job_id in due:
        record = jobs.get(conn, job_id)
        if record is not None and record.final and poster.deliver_outcome(conn, record, tries=1):
            delivered += 1
            log.info("job %s: outcome delivered on a later try", job_id)
            continue
        tries = int(conn.hget(keys.undelivered_tries(), job_id) or 0)
        if record is None or not record.final or not conn.exists(keys.job_delivery(job_id)) or \
                conn.exists(keys.job_final_delivered(job_id)):
            forget(conn, job_id)  # nothing to show, or nowhere to show it any more
        elif tries >= MAX_TRIES and conn.zscore(keys.undelivered(), job_id) is not None:
            log.warning("job %s: gave up delivering its outcome after %d tries", job_id, tries)
            forget(conn, job_id)
    return delivered
