"""A user's recent jobs, newest first: what `/info` lists and what `/cancel` without a job id picks from."""

from __future__ import annotations

import redis

from core import jobs, keys

KEPT_JOBS = 50
"""How many of a user's job ids are kept (older ones fall off the list)."""

LIST_TTL_S = jobs.RECORD_TTL_S
"""The list expires with the records it points at when the user stops using the bot."""


def add(conn: redis.Redis, owner: str, job_id: str) -> None:
    """Remember that `owner` asked for `job_id` (call it before the job is enqueued)."""
    key = keys.user_jobs(owner)
    with conn.pipeline() as pipe:
        pipe.lpush(key, job_id)
        pipe.ltrim(key, 0, KEPT_JOBS - 1)
        pipe.expire(key, LIST_TTL_S)
        pipe.execute()


def recent(conn: redis.Redis, owner: str, limit: int = KEPT_JOBS) -> list[jobs.JobRecord]:
    """The user's jobs whose records still exist, newest first."""
    ids = conn.lrange(keys.user_jobs(owner), 0, limit - 1)
    found = (jobs.get(conn, i.decode() if isinstance(i, bytes) else str(i)) for i in ids)
    return [record for record in found if record is not None]


def active(conn: redis.Redis, owner: str) -> list[jobs.JobRecord]:
    """The user's queued and running jobs, newest first."""
    return [record for record in recent(conn, owner) if record.state in jobs.ACTIVE_STATES]
