"""The service's figures, kept in Redis by the processes that make them and exported by the web app's `/metrics`.

Workers, bots and the web app all write here; `web.metrics` reads it at each scrape and turns it into Prometheus'
text format. Through Redis rather than a metrics port per worker: workers sit behind NAT on rented GPUs, come and go,
and already reach Redis; Prometheus scrapes one target, and a restarted worker loses no counts.

- A job's outcome is counted once, by whoever made it final (`core.jobs.finish`): jobs by kind, lane and outcome,
  GPU-seconds by model, and the wait (queued to started) and render (started to done) time histograms. One Lua
  script reads the job's record and adds it all up in Redis, so the counting costs the caller one round trip.
- Admission refusals by reason: the bot and the web app count each refusal they answer (`refusal_command`).
- Discord delivery retries: each redelivery attempt of an outcome Discord did not take (`worker.redelivery`).

Counters live in one hash (`keys.metrics_counters`), fields `<name>|<label>=<value>,...`; a histogram in a hash of
its own with non-cumulative bucket counts, `sum` and `count` per label set. Label values are this project's own
words (kinds, lanes, states, model names from the registry): a label value never carries a user's text.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import redis

from core import keys
from core.errors import (
    Banned,
    ImagineError,
    PromptBlocked,
    QuotaExceeded,
    RateLimited,
    Suspended,
    TierLimit,
    TooManyJobs,
)

log = logging.getLogger(__name__)

JOBS = "jobs"
"""Counter: jobs by `kind`, `lane` and `outcome` (done, failed, cancelled)."""

GPU_SECONDS = "gpu_seconds"
"""Counter: seconds jobs held a device, by `model`."""

REFUSALS = "admission_refusals"
"""Counter: requests for jobs refused before queueing, by `reason` and `via` (discord, web)."""

DELIVERY_RETRIES = "delivery_retries"
"""Counter: redelivery attempts of outcomes Discord did not take the first time."""

DISCORD_RETRIES = "discord_retries"
"""Counter: requests to Discord's REST API the workers sent again, by `reason` (rate_limited, server_error,
unreachable); each retry of one request counts."""

WAIT = "wait_seconds"
"""Histogram: seconds from a job's creation to the start of its (latest) attempt, by `lane`."""

RENDER = "render_seconds"
"""Histogram: seconds from a done job's start to its outcome, by `kind`."""

BUCKETS_S: dict[str, tuple[float, ...]] = {
    WAIT: (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
    RENDER: (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
}
"""Upper bounds (seconds) of each histogram's buckets; an observation past the last falls in `+Inf`."""

REFUSAL_REASONS: tuple[tuple[type[ImagineError], str], ...] = (
    (Banned, "banned"),
    (RateLimited, "rate_limited"),
    (TooManyJobs, "too_many_jobs"),
    (QuotaExceeded, "quota"),
    (TierLimit, "tier_limit"),
    (PromptBlocked, "prompt_blocked"),
    (Suspended, "suspended"),
)
"""The refusals counted, by error type, with the `reason` label each is counted under."""

# KEYS: job hash, counters hash, wait histogram, render histogram.
# ARGV: wait buckets (JSON), render buckets (JSON).
_RECORD_OUTCOME = """
local f = redis.call('HMGET', KEYS[1], 'state', 'kind', 'spec', 'created_at', 'started_at', 'finished_at', 'gpu_s')
local state = f[1]
if not state then return 0 end
local kind = f[2] or 'grid'
local ok, spec = pcall(cjson.decode, f[3] or '{}')
if not ok then spec = {} end
local lane = tostring(spec['mode'] or '?')
local model = tostring(spec['model'] or '?')
redis.call('HINCRBYFLOAT', KEYS[2], 'jobs|kind=' .. kind .. ',lane=' .. lane .. ',outcome=' .. state, 1)
local gpu = tonumber(f[7] or '0') or 0
if gpu > 0 then redis.call('HINCRBYFLOAT', KEYS[2], 'gpu_seconds|model=' .. model, gpu) end
local function observe(key, labels, value, bounds)
  local index = #bounds
  for i, bound in ipairs(bounds) do
    if value <= bound then index = i - 1 break end
  end
  redis.call('HINCRBY', key, labels .. '|' .. index, 1)
  redis.call('HINCRBYFLOAT', key, labels .. '|sum', value)
  redis.call('HINCRBY', key, labels .. '|count', 1)
end
local created, started, finished = tonumber(f[4] or ''), tonumber(f[5] or ''), tonumber(f[6] or '')
if created and started then
  observe(KEYS[3], 'lane=' .. lane, math.max(0, started - created), cjson.decode(ARGV[1]))
end
if state == 'done' and started and finished then
  observe(KEYS[4], 'kind=' .. kind, math.max(0, finished - started), cjson.decode(ARGV[2]))
end
return 1
"""


def record_outcome(conn: redis.Redis, job_id: str) -> None:
    """Count a job that has just become final (call it once: `core.jobs.finish` does, for the caller that won).
    A Redis error is logged, never raised: the outcome stands without its figures."""
    try:
        conn.eval(_RECORD_OUTCOME, 4, keys.job(job_id), keys.metrics_counters(), keys.metrics_histogram(WAIT),
                  keys.metrics_histogram(RENDER), json.dumps(BUCKETS_S[WAIT]), json.dumps(BUCKETS_S[RENDER]))
    except redis.RedisError as exc:
        log.warning("job %s: outcome not counted in the metrics (%s)", job_id, type(exc).__name__)


def counter_field(name: str, **labels: str) -> str:
    """The counters hash's field for `name` with `labels` (sorted by name)."""
    return f"{name}|" + ",".join(f"{k}={labels[k]}" for k in sorted(labels))


def count_command(name: str, amount: float = 1.0, **labels: str) -> tuple[str, str, str, str]:
    """The Redis command that adds `amount` to a counter (for a caller that sends it on its own client)."""
    return ("HINCRBYFLOAT", keys.metrics_counters(), counter_field(name, **labels), repr(float(amount)))


def count(conn: redis.Redis, name: str, amount: float = 1.0, **labels: str) -> None:
    """Add `amount` to a counter; a Redis error is logged, never raised (figures never fail the work they count)."""
    try:
        conn.execute_command(*count_command(name, amount, **labels))
    except redis.RedisError as exc:
        log.warning("metric %s not counted (%s)", name, type(exc).__name__)


def refusal_reason(error: BaseException) -> str | None:
    """The `reason` label of an admission refusal, or None when `error` is not one."""
    return next((reason for kind, reason in REFUSAL_REASONS if isinstance(error, kind)), None)


def refusal_command(error: BaseException, via: str) -> tuple[str, ...] | None:
    """The command counting `error` as an admission refusal answered `via` "discord" or "web", or None."""
    reason = refusal_reason(error)
    return None if reason is None else count_command(REFUSALS, reason=reason, via=via)


@dataclass
class Histogram:
    """One label set of a histogram: non-cumulative counts per bucket (the last is `+Inf`), sum and count."""

    buckets: list[float]
    sum: float = 0.0
    count: float = 0.0


@dataclass
class Snapshot:
    """Every figure kept in Redis, parsed: counters by name -> [(labels, value)], histograms by name -> labels ->
    Histogram."""

    counters: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=lambda: defaultdict(list))
    histograms: dict[str, dict[str, Histogram]] = field(default_factory=dict)


def read_commands() -> list[tuple[str, ...]]:
    """The reads `parse` takes the replies of, in order (pipeline them)."""
    return [("HGETALL", keys.metrics_counters()), *(("HGETALL", keys.metrics_histogram(name)) for name in BUCKETS_S)]


def parse(replies: list[Mapping[bytes | str, bytes | str]]) -> Snapshot:
    """The figures from the replies to `read_commands`; a field that does not parse is skipped."""
    snapshot = Snapshot()
    for raw, value in (replies[0] or {}).items():
        name, _, labels = _text(raw).partition("|")
        try:
            snapshot.counters[name].append((labels_of(labels), float(_text(value))))
        except ValueError:
            continue
    for name, reply in zip(BUCKETS_S, replies[1:], strict=True):
        found: dict[str, Histogram] = {}
        for raw, value in (reply or {}).items():
            labels, _, slot = _text(raw).rpartition("|")
            histogram = found.setdefault(labels, Histogram([0.0] * (len(BUCKETS_S[name]) + 1)))
            try:
                number = float(_text(value))
                if slot == "sum":
                    histogram.sum = number
                elif slot == "count":
                    histogram.count = number
                else:
                    histogram.buckets[int(slot)] = number
            except (ValueError, IndexError):
                continue
        snapshot.histograms[name] = found
    return snapshot


def labels_of(text: str) -> dict[str, str]:
    """`a=1,b=2` -> {"a": "1", "b": "2"}."""
    return dict(part.split("=", 1) for part in text.split(",") if "=" in part)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
