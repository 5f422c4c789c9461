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
import math
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

REFUND = -1.0
"""The GPU time `_apply` is given for a refund."""

# KEYS: reservation, reservations index, balance, usage, active, model speed.
# ARGV: job id, GPU-seconds to charge (-1: refund), EMA alpha, default speed, per-job overhead seconds,
#       megapixel-steps the job actually rendered (-1: the reservation's estimate of them), the key template of the
#       users' usage across servers (`keys.user_usage`, its period read off the guild usage key's end).
# Returns 1 when it applied the reservation, 0 when there was none (applied already, or never admitted).
# Every value is checked before the first write, so an error changes nothing.
_APPLY = """
local function finite(x) return x ~= nil and x == x and x ~= math.huge and x ~= -math.huge end
local gpu, work = tonumber(ARGV[2]), tonumber(ARGV[6])
if not finite(gpu) or (gpu < 0 and gpu ~= -1) then return redis.error_reply('invalid GPU time ' .. ARGV[2]) end
if not finite(work) or (work < 0 and work ~= -1) then return redis.error_reply('invalid work ' .. ARGV[6]) end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local r = redis.call('HMGET', KEYS[1], 'member', 'lane', 'reserved_s', 'free', 'model', 'mpx_steps')
local member, lane, reserved, free, model, mpx = r[1], r[2], tonumber(r[3]) or 0, r[4], r[5], tonumber(r[6]) or 0
if not finite(reserved) then reserved = 0 end
if not finite(mpx) then mpx = 0 end
if work >= 0 then mpx = work end
if reserved > 0 then redis.call('HINCRBYFLOAT', KEYS[3], 'reserved_s', -reserved) end
if gpu > 0 and free ~= '1' then
  redis.call('HINCRBYFLOAT', KEYS[3], lane == 'fast' and 'used_s' or 'relax_s', gpu)
  redis.call('ZINCRBY', KEYS[4], gpu, member)
  local user, period = string.match(member, ':(.+)$'), string.match(KEYS[4], ':(%d+)$')
  if user and period then
    local across = string.format(ARGV[7], period)
    redis.call('ZINCRBY', across, gpu, user)
    local ttl = redis.call('TTL', KEYS[3])
    if ttl > 0 then redis.call('EXPIRE', across, ttl) end
  end
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


def settle(conn: redis.Redis, job_id: str, gpu_s: float, *, work: float | None = None) -> bool:
    """Charge a finished job's measured GPU time and release its reservation. Idempotent and atomic.

    Fast jobs are charged to the fast balance of the period they were admitted in; relax jobs to relax usage;
    free upscale copies to nothing. Every charge counts in the member's usage (relax's fair order) and updates the
    model's measured speed with this job's seconds per megapixel-step.

    Args:
        conn: Redis client.
        job_id: the job.
        gpu_s: GPU-seconds the job held the device (the record's `gpu_s`).
        work: megapixel-steps the job actually rendered (`record_work`); None: the reservation's estimate of them.

    Returns:
        True when this call settled it; False when there was nothing to settle (settled or refunded already).

    Raises:
        ValueError: `gpu_s` or `work` is negative or not finite (nothing changed).
        redis.RedisError: Redis is unreachable (nothing changed; call again).
    """
    if not (math.isfinite(gpu_s) and gpu_s >= 0):
        raise ValueError(f"job {job_id}: cannot settle a GPU time of {gpu_s!r} s")
    if work is not None and not (math.isfinite(work) and work >= 0):
        raise ValueError(f"job {job_id}: cannot settle a work of {work!r} megapixel-steps")
    return _apply(conn, job_id, gpu_s, REFUND if work is None else work)


def record_work(conn: redis.Redis | redis.client.Pipeline, job_id: str, mpx_steps: float, *, ttl_s: int) -> None:
    """Note the megapixel-steps a job actually rendered (the worker, with its outcome): `settle` learns the model's
    speed from it rather than from admission's estimate."""
    if math.isfinite(mpx_steps) and mpx_steps >= 0:
        conn.set(keys.job_work(job_id), repr(float(mpx_steps)), ex=ttl_s)


def _recorded_work(conn: redis.Redis, job_id: str) -> float | None:
    value = conn.get(keys.job_work(job_id))
    try:
        work = float(_text(value)) if value is not None else None
    except ValueError:
        return None
    return work if work is not None and math.isfinite(work) and work >= 0 else None


def refund(conn: redis.Redis, job_id: str) -> bool:
    """Release a job's reservation in full, charging nothing (final failure, cancel, timeout). Idempotent, atomic.

    Returns:
        True when this call refunded it; False when there was nothing to refund.

    Raises:
        redis.RedisError: Redis is unreachable (nothing changed; call again).
    """
    return _apply(conn, job_id, REFUND)


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
        gpu_s = record.gpu_s
        if not (math.isfinite(gpu_s) and gpu_s >= 0):  # a corrupt measurement: charge what was reserved
            log.warning("job %s: measured GPU time %r is not a time; charging its estimate", job_id, gpu_s)
            estimate = conn.hget(keys.quota_reservation(job_id), "estimate_s")
            return settle(conn, job_id, float(estimate or 0.0))
        return settle(conn, job_id, gpu_s, work=_recorded_work(conn, job_id))
    if record.state in jobs.FINAL_STATES:
        return refund(conn, job_id)
    return False


def reconcile(conn: redis.Redis, *, now: float, limit: int = 500) -> list[str]:
    """Apply the outcome of reserved jobs that are final (or long gone): the backstop for a process that died
    between a job's final transition and its `apply_outcome`.

    Each call reads the next `limit` reservations by admission time, after the last one the previous call read (a
    cursor in Redis, `keys.quota_reconcile_cursor`), and starts over from the oldest once it reached the newest: every
    reservation is read within one walk, however many older ones wait before it (a relax backlog).

    Returns:
        The ids of the jobs whose reservation this call applied (their outcome may not have been delivered either).
    """
    index = keys.quota_reservations()
    cursor = conn.get(keys.quota_reconcile_cursor())
    score, last = _cursor(cursor)
    rows: list[tuple[bytes, float]] = []
    if last:  # the rest of the ties at the cursor's score (equal scores are ordered by id), then the later ones
        ties: list[bytes] = conn.zrangebyscore(index, score, score)  # type: ignore[assignment]
        rows = [(t, score) for t in ties if _text(t) > last][:limit]
    if len(rows) < limit:
        low = f"({score!r}" if last else "-inf"
        later: list[tuple[bytes, float]] = conn.zrangebyscore(  # type: ignore[assignment]
            index, low, "+inf", start=0, num=limit - len(rows), withscores=True)
        rows += later
    if len(rows) < limit:
        conn.delete(keys.quota_reconcile_cursor())  # the walk reached the newest: the next one starts over
    else:
        conn.set(keys.quota_reconcile_cursor(), f"{float(rows[-1][1])!r} {_text(rows[-1][0])}")
    ids = [_text(member) for member, _ in rows]
    return [job_id for job_id in ids if apply_outcome(conn, job_id, now=now)]


def _cursor(value: object) -> tuple[float, str]:
    """`(score, job id)` of a stored cursor; `(-inf, "")` for none (or a malformed one)."""
    if value is None:
        return float("-inf"), ""
    score, _, last = _text(value).partition(" ")
    try:
        parsed = float(score)
    except ValueError:
        return float("-inf"), ""
    return (parsed, last) if math.isfinite(parsed) and last else (float("-inf"), "")


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
    """Forget the member's fast and relax usage and grants this period (`/admin quota reset`); holds stay. Their
    use in this server also leaves their usage across servers (relax's fair order); use elsewhere stays."""
    start, _ = period_bounds(now, policy)
    usage_key = keys.quota_usage(guild_of(member), int(start))
    here = float(conn.zscore(usage_key, member) or 0.0)
    with conn.pipeline() as pipe:
        pipe.hdel(keys.quota_balance(member, int(start)), "used_s", "relax_s", "granted_s")
        pipe.zrem(usage_key, member)
        if here > 0:
            pipe.zincrby(keys.user_usage(int(start)), -here, member.split(":", 1)[1])
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


def _apply(conn: redis.Redis, job_id: str, gpu_s: float, work: float = REFUND) -> bool:
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
        repr(float(work)),
        keys.user_usage("%s"),
    )
    if applied:
        log.debug("job %s: reservation %s", job_id, "refunded" if gpu_s < 0 else f"settled at {gpu_s:.2f} s")
    return bool(applied)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
