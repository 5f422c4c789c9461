"""The admins' audit log: every change made with `/admin`, and every refused attempt, newest first, in Redis."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import redis

from core import keys

MAX_ENTRIES = 1000
"""Entries kept per guild; older ones are dropped as new ones arrive."""


@dataclass(frozen=True)
class Entry:
    """One admin action."""

    at: float  # Unix time
    actor: str  # Discord user id of who ran the command
    action: str  # e.g. "tier set", "ban", "denied"
    target: str = ""  # the member, tier, role or job acted on
    detail: str = ""  # what changed, in words


def record(
    conn: redis.Redis,
    guild: str,
    actor: str,
    action: str,
    target: str = "",
    detail: str = "",
    *,
    now: float | None = None,
) -> Entry:
    """Append one entry to the guild's log (and drop the oldest beyond MAX_ENTRIES)."""
    entry = Entry(time.time() if now is None else now, str(actor), action, str(target), detail)
    with conn.pipeline() as pipe:
        for command in record_commands(guild, entry):
            pipe.execute_command(*command)
        pipe.execute()
    return entry


def record_commands(guild: str, entry: Entry) -> list[tuple[str, ...]]:
    """The Redis commands that append `entry` to the guild's log (for a caller that pipelines them itself)."""
    return [
        ("LPUSH", keys.audit_log(guild), json.dumps(asdict(entry))),
        ("LTRIM", keys.audit_log(guild), "0", str(MAX_ENTRIES - 1)),
    ]


def latest(conn: redis.Redis, guild: str, count: int = 10) -> list[Entry]:
    """The guild's `count` most recent entries, newest first."""
    rows = conn.lrange(keys.audit_log(guild), 0, max(0, count - 1))
    return [Entry(**json.loads(row)) for row in rows]
