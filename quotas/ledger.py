"""The GPU-time ledger: reservations made by admission, settled or refunded exactly once by the job's final outcome.

`quotas.admission.admit` writes one reservation per job (`keys.quota_reservation`). The job's outcome applies it:
`settle` charges the GPU-seconds the worker measured (`JobRecord.gpu_s`, all attempts together) and releases the
hold; `refund` releases it in full. Each is one Lua script that deletes the reservation in the same step as it
charges, so a second call (two processes, a retry, the backstop) finds nothing and changes nothing.

Who applies an outcome, durably: the reservation itself is the to-do item. The process that made the final
transition calls `apply_outcome` right after it (the worker in `worker.jobs.conclude`, the bot after a cancel); if
that process died in between, `reconcile` (run by the workers before they dequeue, and for a member before each of
their admissions) finds reservations whose job record is final, or gone, and applies them. Nothing is lost across
restarts: the reservation and the job record are both in Redis. So `core.jobs`' transition script needs no change.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

from core import jobs, keys
from core.errors import AdminInputError
from core.spec import GRID_SIZE
from quotas.tiers import PeriodPolicy, Tier, period_bounds

log = logging.getLogger(__name__)

DEFAULT_S_PER_MPX_STEP = 0.3
"""GPU-seconds per megapixel-step before a model has settled jobs: a 512x512 grid of four, 25 steps, in ~8 s on a
consumer GPU (RTX 3090 class) with an SD 1.5-sized UNet."""

SPEED_EMA_ALPHA = 0.2
"""Weight of the latest settled job in the model's moving-average speed."""

JOB_OVERHEAD_S = 1.0
"""GPU-seconds a job costs beyond its steps (text encoding, VAE decode), added to every estimate."""

RESERVATION_GRACE_S = 15 * 60
"""A reservation whose job record does not exist this long after admission is refunded (the enqueue failed)."""

BALANCE_RETENTION_S = 90 * 24 * 3600
"""How long a period's balance and usage stay in Redis after the period ends (for admins' usage questions)."""

MAX_GRANT_S = 31 * 24 * 3600
"""Largest single grant: more GPU time than a month has is a typo."""

# KEYS: reservation, reservations index, balance, usage, active, model speed.
# ARGV: job id, GPU-seconds to charge (-1: refund), EMA alpha, default speed, per-job overhead seconds.
# Returns 1 when it applied the reservation, 0 when there was none (applied already, or never admitted).
_APPLY = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local r = redis.call('HMGET', KEYS[1], 'member', 'lane', 'reserved_s', 'free', 'model', 'mpx_steps')
local member, lane, reserved, free, model, mpx = r[1], r[2], tonumber(r[3]) or 0, r[4], r[5], tonumber(r[6]) or 0
if reserved > 0 then redis.call('HINCRBYFLOAT', KEYS[3], 'reserved_s', -reserved) end
local gpu = tonumber(ARGV[2])
if gpu > 0 and free ~= '1' then
  redis.call('HINCRBYFLOAT', KEYS[3], lane == 'fast' and 'used_s' or 'relax_s', gpu)
  redis.call('ZINCRBY', KEYS[4], gpu, member)
  if mpx > 0 then
    local old = tonumber(redis.call('HGET', KEYS[6], model)) or tonumber(ARGV[4])
    local alpha = tonumber(ARGV[3])
    local sample = math.max(gpu - tonumber(ARGV[5]), 0) / mpx
    redis.call('HSET', KEYS[6], model, tostring(old + alpha * (sample - old)))
  end
end
redis.call('HDEL', KEYS[5], ARGV[1])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""


@dataclass(frozen=True)
class Usage:
    """A member's fast time this period (what `/info` and `/admin usage` show)."""

    used_s: float  # fast GPU-seconds charged
    relax_s: float  # relax GPU-seconds used (not charged)
    reserved_s: float  # held for fast jobs queued or running
    granted_s: float  # extra fast time an admin granted this period
    allowance_s: float  # the tier's fast time plus grants
    left_s: float  # allowance - used - reserved (never below 0)
    period_start: float  # Unix time
    resets_at: float  # Unix time the next period starts
    active_fast: int  # fast jobs queued or running
    active_relax: int  # relax jobs queued or running


def member_id(guild_id: int | str, user_id: int | str) -> str:
    """The ledger's name for one member of one guild: `<guild id>:<user id>`."""
    return f"{guild_id}:{user_id}"


def guild_of(member: str) -> str:
    return member.split(":", 1)[0]


def mpx_steps(width: int, height: int, steps: int, images: int = GRID_SIZE) -> float:
    """The work of one job in megapixel-steps: pixels of all its images times sampling steps."""
    return width * height * images / 1e6 * steps


def speed(conn: redis.Redis, model: str) -> float:
    """The model's measured GPU-seconds per megapixel-step (DEFAULT_S_PER_MPX_STEP before any settled job)."""
    value = conn.hget(keys.model_speed(), model)
    return float(value) if value else DEFAULT_S_PER_MPX_STEP


def estimate_s(conn: redis.Redis, model: str, width: int, height: int, steps: int) -> float:
    """The GPU-seconds one grid job of this size and steps is expected to take on `model`."""
    return JOB_OVERHEAD_S + speed(conn, model) * mpx_steps(width, height, steps)


def settle(conn: redis.Redis, job_id: str, gpu_s: float) -> bool:
    """Charge a finished job's measured GPU time and release its reservation. Idempotent and atomic.

    Fast jobs are charged to the fast balance of the period they were admitted in; relax jobs to relax usage;
    upscale-only jobs to nothing. Every charge counts in the member's usage (relax's fair order) and updates the
    model's measured speed.

    Args:
        conn: Redis client.
        job_id: the job.
        gpu_s: GPU-seconds the job held the device (the record's `gpu_s`).

    Returns:
        True when this call settled it; False when there was nothing to settle (settled or refunded already).

    Raises:
        redis.RedisError: Redis is unreachable (nothing changed; call again).
    """
    return _apply(conn, job_id, max(0.0, gpu_s))


def refund(conn: redis.Redis, job_id: str) -> bool:
    """Release a job's reservation in full, charging nothing (final failure, cancel, timeout). Idempotent, atomic.

    Returns:
        True when this call refunded it; False when there was nothing to refund.

    Raises:
        redis.RedisError: Redis is unreachable (nothing changed; call again).
    """
    return _apply(conn, job_id, -1.0)


def apply_outcome(conn: redis.Redis, job_id: str, *, now: float | None = None) -> bool:
    """Settle or refund a job by its record's final state; nothing while it is still queued or running.

    A job whose record is gone is refunded once its reservation is older than RESERVATION_GRACE_S (`now` needed).

    Returns:
        True when this call applied the job's reservation.
    """
    record = jobs.get(conn, job_id)
    if record is None:
        if now is None:
            return False
        admitted = conn.hget(keys.quota_reservation(job_id), "admitted_at")
        if admitted is None or float(admitted) > now - RESERVATION_GRACE_S:
            return False
        return refund(conn, job_id)
    if record.state == jobs.DONE:
        return settle(conn, job_id, record.gpu_s)
    if record.state in jobs.FINAL_STATES:
        return refund(conn, job_id)
    return False


def reconcile(conn: redis.Redis, *, now: float, limit: int = 500) -> list[str]:
    """Apply the outcome of every reserved job that is final (or long gone): the backstop for a process that died
    between a job's final transition and its `apply_outcome`.

    Returns:
        The ids of the jobs whose reservation this call applied (their outcome may not have been delivered either).
    """
    ids = [_text(i) for i in conn.zrange(keys.quota_reservations(), 0, limit - 1)]
    return [job_id for job_id in ids if apply_outcome(conn, job_id, now=now)]


def reconcile_member(conn: redis.Redis, member: str, *, now: float) -> int:
    """`reconcile` for one member's admitted jobs (admission runs it so that finished jobs free their places)."""
    ids = conn.hkeys(keys.quota_active(member))
    return sum(apply_outcome(conn, _text(i), now=now) for i in ids)


def usage(conn: redis.Redis, member: str, tier: Tier, *, now: float, policy: PeriodPolicy) -> Usage:
    """The member's fast time this period: used, reserved, granted, left, and when it resets."""
    start, end = period_bounds(now, policy)
    values = conn.hmget(keys.quota_balance(member, int(start)), "used_s", "relax_s", "reserved_s", "granted_s")
    used, relax, reserved, granted = (float(v) if v else 0.0 for v in values)
    lanes = [_text(v) for v in conn.hvals(keys.quota_active(member))]
    allowance = tier.fast_gpu_s + granted
    return Usage(
        used_s=used,
        relax_s=relax,
        reserved_s=max(0.0, reserved),
        granted_s=granted,
        allowance_s=allowance,
        left_s=max(0.0, allowance - used - max(0.0, reserved)),
        period_start=start,
        resets_at=end,
        active_fast=lanes.count("fast"),
        active_relax=lanes.count("relax"),
    )


def grant(conn: redis.Redis, member: str, seconds: float, *, now: float, policy: PeriodPolicy) -> float:
    """Add extra fast time to the member's current period (`/admin quota grant`); it does not roll over.

    Returns:
        The period's total granted seconds after this grant.

    Raises:
        AdminInputError: `seconds` is not positive or more than MAX_GRANT_S.
    """
    if not seconds > 0 or seconds > MAX_GRANT_S:
        raise AdminInputError(f"a grant must be more than 0 and at most {MAX_GRANT_S // 3600} hours of GPU time")
    start, end = period_bounds(now, policy)
    key = keys.quota_balance(member, int(start))
    with conn.pipeline() as pipe:
        pipe.hincrbyfloat(key, "granted_s", seconds)
        pipe.expireat(key, int(end + BALANCE_RETENTION_S))
        total = pipe.execute()[0]
    return float(total)


def reset(conn: redis.Redis, member: str, *, now: float, policy: PeriodPolicy) -> None:
    """Forget the member's fast and relax usage and grants this period (`/admin quota reset`); holds stay."""
    start, _ = period_bounds(now, policy)
    with conn.pipeline() as pipe:
        pipe.hdel(keys.quota_balance(member, int(start)), "used_s", "relax_s", "granted_s")
        pipe.zrem(keys.quota_usage(guild_of(member), int(start)), member)
        pipe.delete(keys.quota_told(member, int(start)))
        pipe.execute()


def top_users(
    conn: redis.Redis, guild: str, *, now: float, policy: PeriodPolicy, limit: int = 10
) -> list[tuple[str, float]]:
    """The guild's members who used the most GPU time this period (both lanes), most first: `(member, seconds)`."""
    start, _ = period_bounds(now, policy)
    key = keys.quota_usage(guild, int(start))
    rows: list[tuple[bytes, float]] = conn.zrevrange(key, 0, limit - 1, withscores=True)  # type: ignore[assignment]
    return [(_text(member), float(score)) for member, score in rows]


def _apply(conn: redis.Redis, job_id: str, gpu_s: float) -> bool:
    """Run the apply script with the keys the reservation names (they never change once written)."""
    fields = conn.hmget(keys.quota_reservation(job_id), "balance_key", "usage_key", "active_key")
    if fields[0] is None:
        return False
    balance, usage_key, active = (_text(f) for f in fields)
    applied = conn.eval(
        _APPLY,
        6,
        keys.quota_reservation(job_id),
        keys.quota_reservations(),
        balance,
        usage_key,
        active,
        keys.model_speed(),
        job_id,
        repr(gpu_s),
        SPEED_EMA_ALPHA,
        DEFAULT_S_PER_MPX_STEP,
        JOB_OVERHEAD_S,
    )
    if applied:
        log.debug("job %s: reservation %s", job_id, "refunded" if gpu_s < 0 else f"settled at {gpu_s:.2f} s")
    return bool(applied)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
