"""A user's recent jobs, newest first: what `/info` lists and what `/cancel` without a job id picks from."""

from __future__ import annotations

import time

import redis

from core import jobs, keys

KEPT_JOBS = 50
"""How many of a user's job ids are kept (older ones fall off the list)."""

GALLERY_KEPT = 10_000
"""How many of a user's job ids the web gallery's index keeps (`keys.user_gallery`; the oldest fall off)."""

LIST_TTL_S = jobs.RECORD_TTL_S
"""The list expires with the records it points at when the user stops using the bot."""


def add(conn: redis.Redis, owner: str, job_id: str) -> None:
    """Remember that `owner` asked for `job_id` (call it before the job is enqueued)."""
    with conn.pipeline() as pipe:
        for command in add_writes(owner, job_id):
            pipe.execute_command(*command)
        pipe.execute()


def add_writes(owner: str, job_id: str, *, now: float | None = None) -> list[tuple[str | int | float, ...]]:
    """The Redis commands `add` runs, for a caller that sends them with other writes (`core.queue.enqueue_call`):
    the recent list, and the gallery's index scored by `now` (the job's creation time)."""
    key, gallery = keys.user_jobs(owner), keys.user_gallery(owner)
    at = repr(time.time() if now is None else now)
    return [("LPUSH", key, job_id), ("LTRIM", key, 0, KEPT_JOBS - 1), ("EXPIRE", key, LIST_TTL_S),
            ("ZADD", gallery, at, job_id), ("ZREMRANGEBYRANK", gallery, 0, -GALLERY_KEPT - 1),
            ("EXPIRE", gallery, LIST_TTL_S)]


def recent(conn: redis.Redis, owner: str, limit: int = KEPT_JOBS) -> list[jobs.JobRecord]:
    """The user's jobs whose records still exist, newest first."""
    ids = conn.lrange(keys.user_jobs(owner), 0, limit - 1)
    found = (jobs.get(conn, i.decode() if isinstance(i, bytes) else str(i)) for i in ids)
    return [record for record in found if record is not None]


def active(conn: redis.Redis, owner: str) -> list[jobs.JobRecord]:
    """The user's queued and running jobs, newest first."""
    return [record for record in recent(conn, owner) if record.state in jobs.ACTIVE_STATES]
