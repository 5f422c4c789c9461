"""Strikes and suspensions: blocked prompts counted in a sliding window (a Lua script, atomic), and members
suspended by it or by an admin."""

from __future__ import annotations

import uuid

import redis

from core import keys
from core.errors import AdminInputError, Suspended
from moderation.policy import MAX_SUSPENSION_S, Policy, text_of


def suspension_from(raw: bytes | str | None, now: float) -> float | None:
    """When a suspension stored as `raw` (`HGET keys.moderation_suspended`) ends, or None when it is over or absent."""
    if raw is None:
        return None
    until = float(text_of(raw))
    return until if until > now else None


def suspended_error(until: float) -> Suspended:
    return Suspended(f"You are suspended from image generation on this server until <t:{int(until)}:f>.")


STRIKE_SCRIPT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[3])
local count = redis.call('ZCARD', KEYS[1])
if count >= tonumber(ARGV[4]) then
    redis.call('HSET', KEYS[2], ARGV[6], ARGV[7])
    redis.call('DEL', KEYS[1])
    return {count, 1}
end
return {count, 0}
"""


def record_strike(conn: redis.Redis, guild: str, user: str, policy: Policy, *, now: float) -> tuple[int, float | None]:
    """Count a blocked prompt (atomically); returns (strikes in the window, the suspension's end if it suspended)."""
    until = now + policy.suspension_s
    count, suspended = conn.eval(
        STRIKE_SCRIPT, 2, keys.moderation_strikes(f"{guild}:{user}"), keys.moderation_suspended(guild),
        repr(now), repr(now - policy.strike_window_s), policy.strike_window_s + 1, policy.strike_limit,
        f"{now!r}:{uuid.uuid4().hex}", user, repr(until),
    )
    return int(count), until if suspended else None


def suspension(conn: redis.Redis, guild: str, user: str, now: float) -> float | None:
    """When the member's suspension ends, or None when they are not suspended."""
    return suspension_from(conn.hget(keys.moderation_suspended(guild), user), now)


_COUNT_SUSPENDED = """
local count = 0
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
    local untl = tonumber(entries[i + 1])
    if untl and untl > tonumber(ARGV[1]) then
        count = count + 1
    else
        redis.call('HDEL', KEYS[1], entries[i])
    end
end
return count
"""


def suspended_count(conn: redis.Redis, guild: str, now: float) -> int:
    """Members of the guild suspended at `now`; suspensions that ended are dropped from Redis on the way (atomically,
    so a suspension renewed meanwhile is never lost)."""
    return int(conn.eval(_COUNT_SUSPENDED, 1, keys.moderation_suspended(guild), repr(now)))


def is_suspended(conn: redis.Redis, guild: str, user: str, now: float) -> bool:
    """Whether the member is suspended from the bot now."""
    return suspension(conn, guild, user, now) is not None


def suspend(conn: redis.Redis, guild: str, user: str, *, seconds: int, now: float) -> float:
    """Suspend a member for `seconds` (an admin's decision); returns when it ends. Raises AdminInputError."""
    if not 1 <= seconds <= MAX_SUSPENSION_S:
        raise AdminInputError(f"a suspension lasts from 1 second to {MAX_SUSPENSION_S // 86400} days")
    conn.hset(keys.moderation_suspended(guild), user, repr(now + seconds))
    return now + seconds


def lift(conn: redis.Redis, guild: str, user: str) -> bool:
    """Lift a member's suspension and forget their strikes; False when they were not suspended."""
    with conn.pipeline() as pipe:
        pipe.hdel(keys.moderation_suspended(guild), user)
        pipe.delete(keys.moderation_strikes(f"{guild}:{user}"))
        removed, _ = pipe.execute()
    return bool(removed)
