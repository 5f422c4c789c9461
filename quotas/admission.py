"""Admission: may this member queue these jobs now, in which lane, and what GPU time do they hold?

`check_request` is the pure part (what the tier allows at all). `admit` is the rest, one Lua script so that 100
simultaneous commands from one member against a cap of 3 admit exactly 3: ban, rate limit, places (queued or running
jobs, fast running jobs), the fast balance, and one reservation per job (`quotas.ledger` settles or refunds them).
Call `admit` before enqueueing; enqueue with the job ids and the lane it returns. The script's call is built by
`admit_call` and its answer read by `AdmitCall.result`, without I/O, so an asyncio caller runs the very same step.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

import quotas.ledger as ledger
from core import keys
from core.errors import Banned, QuotaExceeded, RateLimited, TierLimit, TooManyJobs
from core.spec import GRID_SIZE, Mode
from quotas.tiers import PeriodPolicy, Tier, period_bounds

RATE_WINDOW_S = 60
"""The rate limit counts requests in the last 60 s (a sliding window)."""

MONTHLY = PeriodPolicy()
"""Periods starting on the 1st of each month (what `admit` uses when given no policy)."""

FREE_KINDS = frozenset({"upscale"})
"""Job kinds that cost no GPU time when their image is stored (U1-U4 copy an image out of its grid), as in
Midjourney; one whose image expired renders it again and is charged (`AdmissionRequest.free`)."""

# KEYS: banned hash, rate zset, active hash, balance hash, told flag, reservations index, then one reservation per job.
# ARGV: 1 user id, 2 now, 3 requests per minute, 4 window s, 5 mode, 6 relax allowed (1/0), 7 max running fast,
#       8 max waiting, 9 estimate s of each job (JSON), 10 free (1/0), 11 tier fast s, 12 balance expire-at,
#       13 member, 14 model of each job (JSON), 15 mpx-steps of each job (JSON), 16 usage key, 17 job ids (JSON),
#       18 active key, 19 balance key, 20 max running relax, 21 unique request id (the same call run again is not
#       counted again).
# Returns {"banned", reason} | {"duplicate", job id} | {"rate", retry at} | {"waiting", active}
#       | {"running", active fast} | {"quota", left} | {"ok", lane, moved (1/0), tell (1/0), left}.
ADMIT_SCRIPT = """
local reason = redis.call('HGET', KEYS[1], ARGV[1])
if reason then return {'banned', reason} end
local ids = cjson.decode(ARGV[17])
local n = #ids
local seen = {}
for i, id in ipairs(ids) do
  if seen[id] or redis.call('EXISTS', KEYS[6 + i]) == 1 then return {'duplicate', id} end
  seen[id] = true
end
local now, window = tonumber(ARGV[2]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
local again = redis.call('ZSCORE', KEYS[2], ARGV[21])
if not again and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return {'rate', tostring(tonumber(oldest[2]) + window)}
end
redis.call('ZADD', KEYS[2], now, ARGV[21])
redis.call('EXPIRE', KEYS[2], window + 1)
local lanes = redis.call('HVALS', KEYS[3])
local fast = 0
for _, lane in ipairs(lanes) do if lane == 'fast' then fast = fast + 1 end end
if #lanes + n > tonumber(ARGV[8]) then return {'waiting', tostring(#lanes)} end
local lane, moved, tell = ARGV[5], 0, 0
local estimates, models, works = cjson.decode(ARGV[9]), cjson.decode(ARGV[14]), cjson.decode(ARGV[15])
local total = 0
for i = 1, n do total = total + tonumber(estimates[i]) end
local holding = false
local b = redis.call('HMGET', KEYS[4], 'used_s', 'reserved_s', 'granted_s')
local left = tonumber(ARGV[11]) + (tonumber(b[3]) or 0) - (tonumber(b[1]) or 0) - (tonumber(b[2]) or 0)
if lane == 'fast' and ARGV[10] ~= '1' then
  if left < total then
    if ARGV[6] ~= '1' then return {'quota', tostring(left)} end
    lane, moved = 'relax', 1
    if redis.call('SET', KEYS[5], '1', 'NX', 'EXAT', ARGV[12]) then tell = 1 end
  else
    holding = true
  end
end
if lane == 'fast' and fast + n > tonumber(ARGV[7]) then return {'running', tostring(fast)} end
for i, id in ipairs(ids) do
  local hold = holding and estimates[i] or '0'
  redis.call('HSET', KEYS[6 + i], 'member', ARGV[13], 'lane', lane, 'reserved_s', hold,
    'estimate_s', estimates[i], 'free', ARGV[10], 'model', models[i], 'mpx_steps', works[i], 'admitted_at', ARGV[2],
    'balance_key', ARGV[19], 'usage_key', ARGV[16], 'active_key', ARGV[18], 'relax_cap', ARGV[20])
  redis.call('ZADD', KEYS[6], now, id)
  redis.call('HSET', KEYS[3], id, lane)
end
if not holding then total = 0 end
if total > 0 then redis.call('HINCRBYFLOAT', KEYS[4], 'reserved_s', total) end
redis.call('EXPIREAT', KEYS[4], ARGV[12])
return {'ok', lane, moved, tell, tostring(left - total)}
"""


@dataclass(frozen=True)
class Render:
    """What one job renders: the work its estimate, pixel limit and step limit come from."""

    model: str  # registry name
    width: int  # pixels of one output image (twice the source's sides for Upscale (2x))
    height: int
    steps: int  # sampling steps actually run (after --quality, --stop and an image-to-image strength)
    images: int = GRID_SIZE  # images rendered (4 for a grid or variations, 1 for an upscale)

    @property
    def mpx_steps(self) -> float:
        """The work in megapixel-steps: pixels of all its images times sampling steps."""
        return ledger.mpx_steps(self.width, self.height, self.steps, self.images)


@dataclass(frozen=True)
class AdmissionRequest:
    """The jobs one command or button asks for (all admitted together, or none)."""

    job_ids: tuple[str, ...]  # one per job (permutations x --repeat), from `core.jobs.new_job_id`
    mode: Mode  # the lane the member asked for (their /fast or /relax setting)
    model: str  # registry name
    width: int  # pixels of one image
    height: int
    steps: int  # sampling steps actually run (after --quality and --stop)
    kind: str = "grid"  # `core.queue.KINDS`; see `free`
    now: float = field(default_factory=time.time)  # Unix time
    images: int = GRID_SIZE  # images each job renders
    renders: tuple[Render, ...] = ()  # each job's own render, in `job_ids` order; () means every job renders the
    #                                   request's model, width, height, steps and images
    free: bool | None = None  # costs no GPU time; None: when `kind` is in FREE_KINDS
    stealth: bool = False  # the member's /stealth is on: their jobs are private if their tier allows it

    @property
    def is_free(self) -> bool:
        return self.kind in FREE_KINDS if self.free is None else self.free

    def each(self) -> tuple[Render, ...]:
        """Each job's render, in `job_ids` order."""
        if self.renders:
            return self.renders
        one = Render(self.model, self.width, self.height, self.steps, self.images)
        return tuple(one for _ in self.job_ids)


@dataclass(frozen=True)
class Admission:
    """What admission decided: the lane and what the member should be told."""

    job_ids: tuple[str, ...]
    mode: Mode  # the lane to enqueue on (relax when fast time ran out)
    moved_to_relax: bool  # asked for fast, got relax because the fast balance cannot cover it
    tell: bool  # the first move to relax this period: say so (later ones go quietly)
    estimate_s: float  # GPU-seconds reserved for the largest job (0 in relax and for free jobs)
    fast_left_s: float  # fast time left after this admission
    resets_at: float  # Unix time the fast balance resets
    private: bool = False  # stealth: the jobs' images are private to the member on the web (`core.jobs.HIDDEN`)


def check_request(tier: Tier, request: AdmissionRequest) -> None:
    """Raise TierLimit when the tier does not allow this request at all (before anything is counted).

    Raises:
        TierLimit: no jobs, too many jobs for one command, a model outside the tier, too many pixels or steps, or
            relax asked for by a tier without it; the message names the limit and how to get more.
    """
    n = len(request.job_ids)
    if n < 1:
        raise TierLimit("this command creates no jobs")
    if len(set(request.job_ids)) != n or (request.renders and len(request.renders) != n):
        raise ValueError("an admission needs one distinct job id per job")
    if n > tier.max_jobs_per_command:
        raise TierLimit(
            f"this command would create {n} jobs; the {tier.name} tier allows {tier.max_jobs_per_command} per command "
            "(fewer {a, b} options or a smaller --repeat). /subscribe tells how to get a higher tier."
        )
    for render in request.each():
        check_render(tier, render, request.kind)
    if request.mode == "relax" and not tier.relax and not request.is_free:
        raise TierLimit(f"the {tier.name} tier has no relax mode: switch to /fast. /subscribe tells how to get it.")


def check_render(tier: Tier, render: Render, kind: str = "grid") -> None:
    """Raise TierLimit when the tier does not allow one job's render (model, pixels, steps)."""
    if not tier.allows_model(render.model):
        raise TierLimit(f"the {tier.name} tier cannot use model {render.model!r}; it can use {', '.join(tier.models)}")
    if render.width * render.height > tier.max_pixels:
        if kind == "upscale2x":
            raise TierLimit(
                f"Upscale (2x) would make a {render.width}x{render.height} image, more pixels than the {tier.name} "
                f"tier allows ({tier.max_pixels}): this image is as large as your tier makes them. "
                "/subscribe tells how to get a higher tier."
            )
        raise TierLimit(
            f"{render.width}x{render.height} is more pixels than the {tier.name} tier allows ({tier.max_pixels})"
        )
    if render.steps > tier.max_steps:
        raise TierLimit(f"{render.steps} steps is more than the {tier.name} tier allows ({tier.max_steps}): "
                        "use a lower --quality")


class AdmissionUnanswered(redis.RedisError):
    """Redis took the admission script and its answer never came (the connection broke, or the wait timed out): the
    script may have run and reserved `job_ids`, the member gets "try again". Release them once Redis answers
    (`quotas.release_when_back`), or the member is held at their cap until the ledger's backstop."""

    def __init__(self, job_ids: tuple[str, ...]) -> None:
        super().__init__("the admission script's answer never came")
        self.job_ids = job_ids


def admit(
    conn: redis.Redis, member: str, tier: Tier, request: AdmissionRequest, *, policy: PeriodPolicy = MONTHLY
) -> Admission:
    """Admit a command's jobs in one atomic step: check, count, and reserve their estimated fast time.

    Args:
        conn: Redis client.
        member: `ledger.member_id(guild, user)`.
        tier: the member's tier (`quotas.tiers.resolve`, with the guild's overrides applied).
        request: the jobs and what they render.
        policy: the accounting period.

    Returns:
        The lane and reservation; enqueue the jobs with `job_ids` on `mode`. Each job then holds its place until its
        final outcome settles or refunds it (`quotas.ledger`).

    Raises:
        TierLimit: see `check_request` (nothing counted).
        Banned: an admin banned the member (nothing counted).
        RateLimited: more than the tier's requests in the last minute.
        TooManyJobs: the member's queued and running jobs, or running fast jobs, are at the tier's caps.
        QuotaExceeded: the fast balance cannot cover the jobs and the tier has no relax mode.
        AdmissionUnanswered: the script was sent and its answer never came (it may have reserved the jobs).
        redis.RedisError: Redis is unreachable (nothing reserved).
    """
    check_request(tier, request)
    ledger.reconcile_member(conn, member, now=request.now)  # jobs that just ended free their places first
    speeds = {model: ledger.speed(conn, model) for model in {r.model for r in request.each()}}
    call = admit_call(member, tier, request, s_per_mpx_step=speeds, policy=policy)
    try:
        answer = conn.eval(ADMIT_SCRIPT, len(call.keys), *call.keys, *call.args)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise AdmissionUnanswered(call.request.job_ids) from exc
    return call.result(answer)


@dataclass(frozen=True)
class AdmitCall:
    """The admission script's keys and arguments for one request, and how to read its answer (sans I/O: the sync
    `admit` and the bot's asyncio client run the same call). Running it twice counts one request (same request id)."""

    keys: tuple[str, ...]
    args: tuple[Any, ...]
    tier: Tier
    request: AdmissionRequest
    estimate_s: float
    resets_at: float

    def result(self, answer: list[Any]) -> Admission:
        """The admission the script's answer means.

        Raises:
            Banned, RateLimited, TooManyJobs, QuotaExceeded: as for `admit`.
        """
        return _result(self, [_text(v) for v in answer])


def admit_call(
    member: str, tier: Tier, request: AdmissionRequest, *, s_per_mpx_step: float | Mapping[str, float],
    policy: PeriodPolicy = MONTHLY,
) -> AdmitCall:
    """The `ADMIT_SCRIPT` call for a request already checked with `check_request`; `s_per_mpx_step` is the measured
    speed (`ledger.speed`) of the request's model, or of each model by name (a model not in it: the default)."""
    guild, user = member.split(":", 1)
    start, end = period_bounds(request.now, policy)
    period = int(start)
    free = request.is_free
    mode = "fast" if free and not tier.relax else request.mode  # a free U button of a tier without relax
    renders = request.each()
    works = [0.0 if free else r.mpx_steps for r in renders]
    estimates = [0.0 if free else ledger.JOB_OVERHEAD_S + _speed(s_per_mpx_step, r.model) * work
                 for r, work in zip(renders, works, strict=True)]
    keys_ = (
        keys.banned(guild),
        keys.quota_rate(member),
        keys.quota_active(member),
        keys.quota_balance(member, period),
        keys.quota_told(member, period),
        keys.quota_reservations(),
        *(keys.quota_reservation(job_id) for job_id in request.job_ids),
    )
    argv: tuple[Any, ...] = (
        user, repr(request.now), tier.requests_per_minute, RATE_WINDOW_S, mode, int(tier.relax),
        tier.max_running_fast, tier.max_waiting, json.dumps([repr(e) for e in estimates]), int(free), tier.fast_gpu_s,
        int(end + ledger.BALANCE_RETENTION_S), member, json.dumps([r.model for r in renders]),
        json.dumps([repr(w) for w in works]),
        keys.quota_usage(guild, period), json.dumps(list(request.job_ids)), keys.quota_active(member),
        keys.quota_balance(member, period), tier.max_running_relax, uuid.uuid4().hex,
    )
    return AdmitCall(keys_, argv, tier, request, max(estimates, default=0.0), end)


def _speed(speeds: float | Mapping[str, float], model: str) -> float:
    if isinstance(speeds, Mapping):
        return float(speeds.get(model) or ledger.DEFAULT_S_PER_MPX_STEP)
    return speeds


def _result(call: AdmitCall, answer: list[str]) -> Admission:
    tier, request, end = call.tier, call.request, call.resets_at
    status = answer[0]
    if status == "banned":
        raise Banned(f"You can't create images on this server ({answer[1] or 'banned by an admin'}). "
                     "Ask a server admin if you think this is a mistake.")
    if status == "duplicate":  # a caller's bug: refused before anything was counted or reserved
        raise ValueError(f"job {answer[1]} is admitted already (or twice in one admission)")
    if status == "rate":
        wait_s = max(1, round(float(answer[1]) - request.now))
        raise RateLimited(f"Slow down: the {tier.name} tier allows {tier.requests_per_minute} requests a minute. "
                          f"Try again in {wait_s} s.")
    if status == "waiting":
        raise TooManyJobs(f"You have {answer[1]} jobs queued or running; the {tier.name} tier allows "
                          f"{tier.max_waiting} at once. Wait for one to finish.")
    if status == "running":
        relax = ", or use /relax" if tier.relax else ""
        raise TooManyJobs(f"You have {answer[1]} fast jobs queued or running; the {tier.name} tier allows "
                          f"{tier.max_running_fast} at once. Wait for one to finish{relax}.")
    if status == "quota":
        raise QuotaExceeded(
            f"Your fast GPU time for this period is used up; it resets on {_date(end)}. The {tier.name} tier has no "
            "relax mode: /subscribe tells how to get a higher tier, or ask an admin for extra minutes."
        )
    lane: Mode = "relax" if answer[1] == "relax" else "fast"
    return Admission(
        job_ids=request.job_ids,
        mode=lane,
        moved_to_relax=answer[2] == "1",
        tell=answer[3] == "1",
        estimate_s=call.estimate_s if lane == "fast" else 0.0,
        fast_left_s=max(0.0, float(answer[4])),
        resets_at=end,
        private=request.stealth and tier.stealth,
    )


def moved_to_relax_text(admission: Admission) -> str:
    """What to tell a member the first time their fast time ran out this period."""
    return (f"Your fast GPU time for this period is used up, so your jobs run in relax mode (after fast jobs, in "
            f"fair order) until it resets on {_date(admission.resets_at)}. /subscribe tells how to get more.")


def ban(conn: redis.Redis, guild: str, user: str, reason: str = "") -> None:
    """Refuse every later admission of this member in this guild (`/admin ban`); their queued jobs stay."""
    conn.hset(keys.banned(guild), user, reason or "banned by an admin")


def unban(conn: redis.Redis, guild: str, user: str) -> bool:
    """Lift a ban. Returns False when the member was not banned."""
    return bool(conn.hdel(keys.banned(guild), user))


def ban_reason(conn: redis.Redis, guild: str, user: str) -> str | None:
    """The reason the member is banned, or None when they are not."""
    value = conn.hget(keys.banned(guild), user)
    return _text(value) if value is not None else None


def bans(conn: redis.Redis, guild: str) -> dict[str, str]:
    """The guild's banned members: user id -> reason (the admins' dashboard)."""
    return {_text(user): _text(reason) for user, reason in conn.hgetall(keys.banned(guild)).items()}


def _date(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
