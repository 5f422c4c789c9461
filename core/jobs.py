"""The job record in Redis: the source of truth of a job's outcome.

A job moves `queued -> running -> done | failed | cancelled`, and `running -> queued` when RQ retries it. Each move is
one Lua script, so two processes racing to end a job (the worker finishing it, the owner cancelling it, RQ's cleanup
of an abandoned attempt) cannot both win: `finish` returns True to exactly one caller. That caller reacts to the
outcome itself: the worker settles the job's quota and delivers it (`worker.jobs.conclude`), the bot refunds a job it
cancelled; anyone else can wait for the `outcome` event on `keys.job_events`. Nothing here calls back into them.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import redis

from core import keys, metrics
from core.spec import JobSpec

log = logging.getLogger(__name__)

State = Literal["queued", "running", "done", "failed", "cancelled"]
QUEUED: State = "queued"
RUNNING: State = "running"
DONE: State = "done"
FAILED: State = "failed"
CANCELLED: State = "cancelled"
FINAL_STATES: frozenset[str] = frozenset({DONE, FAILED, CANCELLED})
ACTIVE_STATES: frozenset[str] = frozenset({QUEUED, RUNNING})

PUBLIC = ""
HIDDEN = "hidden"
DELETED = "deleted"
VISIBILITIES = (PUBLIC, HIDDEN, DELETED)
"""Who sees a job's images besides admins: anyone signed in (public, as on Midjourney); only its owner (hidden);
nobody (deleted by its owner: soft, the record and images stay for admins until they expire)."""

RECORD_TTL_S = 30 * 24 * 3600
"""How long a job record stays in Redis after it reached a final state."""

CANCEL_FLAG_TTL_S = 24 * 3600
"""How long a cancel request waits for a running job to see it (it is deleted when the job ends)."""

WAIT_RECHECK_S = 2.0
"""While waiting on events, re-read the record this often: pub/sub drops messages when nobody is subscribed."""

# KEYS: job hash, events channel, cancel flag, open jobs index.
# ARGV: allowed previous states (JSON list), fields to set (JSON object), new state, "1" to count an attempt,
#       event JSON to publish ("" for none), seconds to expire the record after (0: keep; else the move is final: it
#       also drops the cancel flag and takes the job out of the open jobs), the job id.
# Returns {1, previous state} when the move happened, {0, current state} when not ("" for a missing job).
_TRANSITION = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {0, ''} end
local allowed = false
for _, s in ipairs(cjson.decode(ARGV[1])) do
  if s == state then allowed = true end
end
if not allowed then return {0, state} end
local fields = cjson.decode(ARGV[2])
for k, v in pairs(fields) do redis.call('HSET', KEYS[1], k, v) end
redis.call('HSET', KEYS[1], 'state', ARGV[3])
if ARGV[4] == '1' then redis.call('HINCRBY', KEYS[1], 'attempt', 1) end
if tonumber(ARGV[6]) > 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[6])
  redis.call('DEL', KEYS[3])
  redis.call('ZREM', KEYS[4], ARGV[7])
end
if ARGV[5] ~= '' then redis.call('PUBLISH', KEYS[2], ARGV[5]) end
return {1, state}
"""

# KEYS: job hash. ARGV: field/value pairs. Creates the hash unless it exists; returns 1 when created.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""

# KEYS: job hash, events channel. ARGV: step, total, event JSON. Progress only counts while the job runs.
_PROGRESS = """
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'step', ARGV[1], 'total', ARGV[2])
redis.call('PUBLISH', KEYS[2], ARGV[3])
return 1
"""


@dataclass(frozen=True)
class JobRecord:
    """One job as stored in its hash."""

    job_id: str
    state: State
    spec: JobSpec
    owner: str  # who asked for it: "discord:<user id>", "cli:<login>"
    attempt: int  # how many times a worker started it (2 after one retry)
    created_at: float  # Unix time
    started_at: float | None  # Unix time the latest attempt started
    finished_at: float | None  # Unix time it reached a final state
    reason: str  # why it failed or was cancelled, in words for the user; "" otherwise
    step: int  # sampling steps done in the current attempt
    total: int  # sampling steps of the current attempt (0 before the first progress report)
    worker: str  # name of the worker that ran the latest attempt
    gpu_s: float  # seconds the job held the device, all attempts together
    kind: str = "grid"  # what it makes: one of `core.queue.KINDS`
    source: dict[str, Any] = field(default_factory=dict)  # the parent image of a button job (`core.queue.payload`)
    visibility: str = PUBLIC  # PUBLIC, HIDDEN or DELETED (`set_visibility`)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


def new_job_id() -> str:
    """A fresh job id (uuid4 hex): used as the record key and as the RQ job id."""
    return uuid.uuid4().hex


def create(
    conn: redis.Redis,
    job_id: str,
    spec: JobSpec,
    owner: str,
    *,
    kind: str = "grid",
    source: dict[str, Any] | None = None,
) -> JobRecord:
    """Record a new job in state `queued`.

    Args:
        conn: Redis client.
        job_id: the id from `new_job_id`.
        spec: what to render.
        owner: who asked for it (shown to admins, used for quotas).
        kind: what the job makes (`core.queue.KINDS`); kept so that a later job can tell what its parent was.
        source: the parent image of a button job, as in `core.queue.payload`.

    Returns:
        The stored record.

    Raises:
        ValueError: a job with this id already exists.
        redis.RedisError: Redis is unreachable.
    """
    fields = new_record(spec, owner, kind=kind, source=source)
    pairs = [item for pair in fields.items() for item in pair]
    if not conn.eval(_CREATE, 1, keys.job(job_id), *pairs):
        raise ValueError(f"job {job_id} already exists")
    return _from_hash(job_id, {k.encode(): v.encode() for k, v in fields.items()})


def new_record(
    spec: JobSpec, owner: str, *, kind: str = "grid", source: dict[str, Any] | None = None, private: bool = False
) -> dict[str, str]:
    """The fields of a new job's record, in state `queued` (what `create` writes); `private`: a stealth job, made
    HIDDEN (its owner may make it public on the web)."""
    fields = {"state": QUEUED, "spec": spec.to_json(), "owner": owner, "attempt": "0", "created_at": repr(time.time()),
              "kind": kind, "source": json.dumps(source or {}, sort_keys=True)}
    if private:
        fields["visibility"] = HIDDEN
    return fields


def get(conn: redis.Redis, job_id: str) -> JobRecord | None:
    """The job's record, or None when there is none (never created, or expired)."""
    data = conn.hgetall(keys.job(job_id))
    return _from_hash(job_id, data) if data else None  # type: ignore[arg-type]


def mark_running(conn: redis.Redis, job_id: str, worker: str) -> bool:
    """Start an attempt: `queued -> running` (also `running -> running` when a killed attempt left it running).

    Returns:
        True when the worker should render it; False when the job is final already (cancelled while queued, or
        finished by an earlier attempt) or unknown.
    """
    event = _event(job_id, "state", state=RUNNING, worker=worker)
    fields = {"started_at": repr(time.time()), "worker": worker, "step": 0, "total": 0}
    moved, _ = _transition(conn, job_id, ACTIVE_STATES, RUNNING, fields, event, count_attempt=True)
    return moved


def mark_retrying(conn: redis.Redis, job_id: str, reason: str) -> bool:
    """`running -> queued`: RQ will run the job again after a failed or abandoned attempt.

    Returns:
        True when the record moved; False when it was not running (final already, or queued).
    """
    event = _event(job_id, "state", state=QUEUED, reason=reason)
    moved, _ = _transition(conn, job_id, {RUNNING}, QUEUED, {"reason": reason}, event)
    return moved


def set_progress(conn: redis.Redis, job_id: str, step: int, total: int) -> None:
    """Record `step` of `total` sampling steps and publish a `progress` event (ignored unless the job is running)."""
    event = _event(job_id, "progress", step=step, total=total)
    conn.eval(_PROGRESS, 2, keys.job(job_id), keys.job_events(job_id), step, total, event)


def add_gpu_seconds(conn: redis.Redis, job_id: str, seconds: float) -> None:
    """Add the time one attempt held the device to the job's `gpu_s`."""
    if seconds > 0:
        conn.hincrbyfloat(keys.job(job_id), "gpu_s", seconds)


def finish(
    conn: redis.Redis,
    job_id: str,
    state: State,
    *,
    reason: str = "",
    stage: Callable[[redis.client.Pipeline], None] | None = None,
    after_outcome: Callable[[], None] | None = None,
) -> bool:
    """Move the job into a final state, once: the only place an outcome happens.

    Publishes one `outcome` event when this call made the move; what follows from the outcome (quota, delivery) is
    the caller's next step, taken only when this returns True.

    Args:
        conn: Redis client.
        job_id: the job.
        state: `done`, `failed` or `cancelled`.
        reason: why it failed or was cancelled, in words for the user.
        stage: queues writes (the job's images) that Redis applies right before the move, in the same round trip.
        after_outcome: called once this call made the move, after the event; an error it raises is logged, and the
            outcome stands (this still returns True).

    Returns:
        True when this call moved the job into `state`; False when it was final already (or unknown): then nothing
        reacts again.

    Raises:
        ValueError: `state` is not a final state.
    """
    if state not in FINAL_STATES:
        raise ValueError(f"{state!r} is not a final state")
    event = _event(job_id, "outcome", state=state, reason=reason)
    fields = {"finished_at": repr(time.time()), "reason": reason}
    moved, previous = _transition(conn, job_id, ACTIVE_STATES, state, fields, event, expire_s=RECORD_TTL_S,
                                  stage=stage)
    if not moved:
        log.debug("job %s: %s ignored, it is %s", job_id, state, previous or "unknown")
        return False
    metrics.record_outcome(conn, job_id)  # once: only the caller that made the move gets here
    if after_outcome is not None:
        try:
            after_outcome()
        except Exception:  # the outcome stands; the caller must still settle and deliver it
            log.exception("job %s: after the %s outcome", job_id, state)
    return True


def request_cancel(conn: redis.Redis, job_id: str, reason: str = "cancelled") -> bool:
    """Raise the cancel flag that a running job's `should_cancel` reads (it stops within one sampling step).

    Returns:
        True when the flag is set; False when the job is final already or unknown.
    """
    record = get(conn, job_id)
    if record is None or record.final:
        return False
    conn.set(keys.job_cancel(job_id), reason, ex=CANCEL_FLAG_TTL_S)
    return True


def cancel_requested(conn: redis.Redis, job_id: str) -> bool:
    """Whether the job's cancellation was requested."""
    return bool(conn.exists(keys.job_cancel(job_id)))


def cancel_reason(conn: redis.Redis, job_id: str) -> str:
    """The reason given with the job's cancel request ("cancelled" when there is none)."""
    value = conn.get(keys.job_cancel(job_id))
    return value.decode() if isinstance(value, bytes) and value else "cancelled"


def wait(
    conn: redis.Redis,
    job_id: str,
    *,
    timeout_s: float,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> JobRecord:
    """Block until the job is final, passing each event of `keys.job_events` to `on_event`.

    Returns:
        The final record.

    Raises:
        LookupError: there is no such job.
        TimeoutError: it was not final after `timeout_s` seconds.
        redis.RedisError: Redis is unreachable.
    """
    deadline = time.monotonic() + timeout_s
    with _own_connection(conn) as listener, listener.pubsub(ignore_subscribe_messages=True) as pubsub:
        pubsub.subscribe(keys.job_events(job_id))
        record = get(conn, job_id)  # read after subscribing, so no event between the two is lost
        # Subscribed before the outcome, this listener will receive its event, after every earlier one; the record
        # (read on another connection) can turn final while they are still on their way.
        outcome_coming = record is not None and not record.final

        def hand_on(message: dict[str, Any] | None) -> bool:
            """Pass a published event to `on_event`; True when it is the outcome's."""
            if message is None or message["type"] != "message":
                return False
            event = json.loads(message["data"])
            if on_event is not None:
                on_event(event)
            return bool(event.get("type") == "outcome")

        while True:
            if record is None:
                raise LookupError(f"no job {job_id}")
            if record.final:
                # Hand on the events still unread: up to the outcome's when it is coming, else those already here.
                grace = WAIT_RECHECK_S if outcome_coming else 0.0
                while (message := pubsub.get_message(timeout=grace)) is not None and not hand_on(message):
                    pass
                return record
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"job {job_id} is still {record.state} after {timeout_s:g} s")
            message = pubsub.get_message(timeout=min(left, WAIT_RECHECK_S))
            if message is not None and message["type"] == "message":
                if not hand_on(message):
                    continue
                outcome_coming = False  # here already: nothing is left to wait for once the record shows it
            record = get(conn, job_id)


@contextmanager
def _own_connection(conn: redis.Redis) -> Iterator[redis.Redis]:
    """A client like `conn` on a pool of its own, for a subscription. Closing a subscription drops its connection;
    taken from `conn`'s pool, that dropped connection would be the one the caller's next command gets, and that
    command would first reconnect (on the path from a job's outcome to its grid bytes)."""
    pool = conn.connection_pool
    own = redis.ConnectionPool(connection_class=pool.connection_class, **pool.connection_kwargs)
    try:
        yield redis.Redis(connection_pool=own)
    finally:
        own.disconnect()


def _transition(
    conn: redis.Redis,
    job_id: str,
    allowed: frozenset[str] | set[str],
    state: State,
    fields: dict[str, Any],
    event: str,
    *,
    count_attempt: bool = False,
    expire_s: int = 0,
    stage: Callable[[redis.client.Pipeline], None] | None = None,
) -> tuple[bool, str]:
    args = (
        _TRANSITION,
        4,
        keys.job(job_id),
        keys.job_events(job_id),
        keys.job_cancel(job_id),
        keys.open_jobs(),
        json.dumps(sorted(allowed)),
        json.dumps({k: str(v) for k, v in fields.items()}),
        state,
        "1" if count_attempt else "0",
        event,
        expire_s,
        job_id,
    )
    if stage is None:
        moved, previous = conn.eval(*args)
    else:
        with conn.pipeline(transaction=False) as pipe:
            stage(pipe)
            pipe.eval(*args)
            moved, previous = pipe.execute()[-1]
    return bool(moved), previous.decode() if isinstance(previous, bytes) else str(previous)


def _event(job_id: str, kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, "job_id": job_id, **fields})


def set_visibility(conn: redis.Redis, job_id: str, visibility: str) -> bool:
    """Set who sees the job's images (`VISIBILITIES`); False when there is no such job."""
    if visibility not in VISIBILITIES:
        raise ValueError(f"unknown visibility {visibility!r}")
    return bool(conn.eval(_SET_IF_EXISTS, 1, keys.job(job_id), "visibility", visibility))


# KEYS: job hash. ARGV: field, value. Sets the field of an existing job only (never creates a partial record).
_SET_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


def from_hash(job_id: str, data: dict[bytes, bytes]) -> JobRecord:
    """A record from its hash as HGETALL returns it (for a caller that read it on its own client)."""
    return _from_hash(job_id, data)


def _from_hash(job_id: str, data: dict[bytes, bytes]) -> JobRecord:
    text = {k.decode(): v.decode() for k, v in data.items()}

    def number(name: str) -> float | None:
        return float(text[name]) if text.get(name) else None

    return JobRecord(
        job_id=job_id,
        state=text["state"],  # type: ignore[arg-type]
        spec=JobSpec.from_json(text["spec"]),
        owner=text.get("owner", ""),
        attempt=int(text.get("attempt") or 0),
        created_at=number("created_at") or 0.0,
        started_at=number("started_at"),
        finished_at=number("finished_at"),
        reason=text.get("reason", ""),
        step=int(text.get("step") or 0),
        total=int(text.get("total") or 0),
        worker=text.get("worker", ""),
        gpu_s=number("gpu_s") or 0.0,
        kind=text.get("kind") or "grid",
        source=json.loads(text["source"]) if text.get("source") else {},
        visibility=text.get("visibility", PUBLIC),
    )
