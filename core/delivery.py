"""Where a job's result goes in Discord, written by the bot at enqueue time and read by the worker.

The interaction token is a secret with a 15-minute life: it is stored apart from everything else, under a key that
expires before the token does, and never travels in RQ's job arguments (RQ logs those at INFO).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import redis

from core import keys

INTERACTION_TOKEN_TTL_S = 15 * 60
"""Discord accepts edits and follow-ups on an interaction's webhook for this long after the interaction."""

INTERACTION_TOKEN_MARGIN_S = 60
"""The worker stops using a token this long before it expires, and posts a channel message instead."""

DELIVERY_TTL_S = 30 * 24 * 3600
"""How long the delivery record of a job is kept (as long as the job record)."""


@dataclass(frozen=True)
class Delivery:
    """The Discord side of one job. Ids are strings (snowflakes); empty when unknown."""

    application_id: str
    channel_id: str
    user_id: str
    guild_id: str = ""
    message_id: str = ""  # the message that shows this job (known once the original response or a post exists)


def save(conn: redis.Redis, job_id: str, delivery: Delivery, *, interaction_token: str | None) -> None:
    """Record where the job's messages go; keep the interaction token until shortly before it expires.

    Args:
        conn: Redis client.
        job_id: the job.
        delivery: the Discord ids.
        interaction_token: the token of the interaction that created the job, or None (e.g. CLI jobs).
    """
    with conn.pipeline() as pipe:
        for command in save_writes(job_id, delivery, interaction_token=interaction_token):
            pipe.execute_command(*command)
        pipe.execute()


def save_writes(job_id: str, delivery: Delivery, *, interaction_token: str | None) -> list[tuple[str | int, ...]]:
    """The Redis commands `save` runs, for a caller that sends them with other writes (`core.queue.enqueue_call`)."""
    fields = [item for name, value in asdict(delivery).items() for item in (name, str(value))]
    writes: list[tuple[str | int, ...]] = [
        ("HSET", keys.job_delivery(job_id), *fields),
        ("EXPIRE", keys.job_delivery(job_id), DELIVERY_TTL_S),
    ]
    if interaction_token:
        ttl = INTERACTION_TOKEN_TTL_S - INTERACTION_TOKEN_MARGIN_S
        writes.append(("SET", keys.job_interaction_token(job_id), interaction_token, "EX", ttl))
    return writes


def load(conn: redis.Redis, job_id: str) -> Delivery | None:
    """The job's delivery record, or None for a job with no Discord side."""
    data = conn.hgetall(keys.job_delivery(job_id))
    if not data:
        return None
    fields = {k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
              for k, v in data.items()}
    return Delivery(**{name: fields.get(name, "") for name in Delivery.__dataclass_fields__})


def interaction_token(conn: redis.Redis, job_id: str) -> str | None:
    """The interaction token while it is still safe to use, else None."""
    value = conn.get(keys.job_interaction_token(job_id))
    return value.decode() if isinstance(value, bytes) else value


def set_message_id(conn: redis.Redis, job_id: str, message_id: str) -> None:
    """Remember which message shows the job, so a retried attempt edits it instead of posting another."""
    conn.hset(keys.job_delivery(job_id), "message_id", message_id)
