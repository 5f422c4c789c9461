"""A guild's moderation state in Redis, and `screen`: the one call `/imagine` makes between parsing and admission.

    safety = modstore.screen(conn, guild, user, specs, defaults, prompt=text, channel_nsfw=channel.nsfw, now=now)
    specs = [core.safety.with_safety(spec, safety) for spec in specs]  # then admission and enqueue as before

State: the guild's lists on top of the shipped default (`moderation/default_list.txt`; admins add and remove entries,
default ones included), its policy (NSFW, flagged-image action, strike limits, moderation log channel), strikes and
suspensions. Moderation events go to the admins' audit log (`core.audit`) and, as `notice` text, to the moderation
log channel, which the bot posts to after answering the member: a channel it cannot write to is reported to admins
(`log_channel_failed`, then `/admin moderation status`) and never delays or blocks `/imagine`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace

import redis

import moderation.promptfilter as promptfilter
from core import audit, keys
from core.errors import AdminInputError, PromptBlocked, Suspended
from core.safety import FLAGGED_ACTIONS, Safety
from core.spec import JobSpec
from moderation.promptfilter import Filter, Match

NSFW_POLICIES = ("age-restricted", "strict")
"""age-restricted: mature entries allowed, no safety prompt and no output check in channels Discord marks
age-restricted; strict: every channel is treated as not age-restricted."""

DEFAULT_SAFETY_NEGATIVE = "nsfw, nudity, nude, naked, sexual, gore, blood, violence"
"""The negative prompt the worker adds to jobs outside age-restricted channels (admins may change it)."""

MAX_SAFETY_NEGATIVE_CHARS = 300
MAX_STRIKE_LIMIT = 100
MAX_STRIKE_WINDOW_S = 7 * 24 * 3600
MAX_SUSPENSION_S = 365 * 24 * 3600
NOTICE_PROMPT_CHARS = 1500
"""Prompt text quoted in a log notice is cut to this many characters (Discord messages hold 2000)."""

BLOCKED_MESSAGE = "This prompt can't be used on this server, so nothing was queued or charged."
BLOCKED_DEFAULT_HINT = " What is blocked is one of your saved defaults: change it with /settings."
"""Added when the match is in a saved /settings default (saved before its entry was blocked): the member could not
otherwise tell what to change, since the refusal repeats nothing."""


@dataclass(frozen=True)
class Policy:
    """A guild's moderation settings (defaults when its admins set nothing)."""

    nsfw: str = "age-restricted"  # one of NSFW_POLICIES
    flagged_action: str = "blur"  # one of FLAGGED_ACTIONS
    safety_negative: str = DEFAULT_SAFETY_NEGATIVE
    strike_limit: int = 3  # blocked prompts within strike_window_s that suspend the member
    strike_window_s: int = 10 * 60
    suspension_s: int = 60 * 60  # how long that suspension lasts
    log_channel: str = ""  # channel id of the moderation log; "" = none
    log_failure: str = ""  # why the last post to the log channel failed ("" = it worked or was never tried)


@dataclass(frozen=True)
class Event:
    """One moderation event: a blocked prompt (no job id: nothing was queued) or a flagged image."""

    kind: str  # "prompt blocked" or "image flagged"
    guild: str
    user: str
    at: float  # Unix time
    prompt: str
    job_id: str = ""
    detail: str = ""  # which entry matched and where, or the image and its score; for admins only


# Policy.


def load_policy(conn: redis.Redis, guild: str) -> Policy:
    """The guild's moderation settings."""
    return policy_from(conn.hgetall(keys.moderation_policy(guild)))


def policy_from(raw: Mapping[bytes | str, bytes | str]) -> Policy:
    """A guild's settings from its stored hash (`HGETALL keys.moderation_policy`)."""
    data = {_str(k): _str(v) for k, v in raw.items()}
    values: dict[str, object] = {}
    for field in fields(Policy):
        if field.name in data:
            values[field.name] = int(data[field.name]) if field.type == "int" else data[field.name]
    return Policy(**values)  # type: ignore[arg-type]


def set_policy(conn: redis.Redis, guild: str, **changes: object) -> Policy:
    """Change some settings (`/admin moderation set`); returns the new policy.

    Raises:
        AdminInputError: an unknown setting or a value out of range; nothing changed.
    """
    policy = load_policy(conn, guild)
    known = {field.name for field in fields(Policy)} - {"log_channel", "log_failure"}
    for name in changes:
        if name not in known:
            raise AdminInputError(f"no moderation setting {name!r}; choose from {', '.join(sorted(known))}")
    new = replace(policy, **changes)  # type: ignore[arg-type]
    _check_policy(new)
    conn.hset(keys.moderation_policy(guild), mapping={name: str(getattr(new, name)) for name in changes})
    return new


def _check_policy(policy: Policy) -> None:
    if policy.nsfw not in NSFW_POLICIES:
        raise AdminInputError(f"the NSFW policy must be one of {', '.join(NSFW_POLICIES)}, not {policy.nsfw!r}")
    if policy.flagged_action not in FLAGGED_ACTIONS:
        raise AdminInputError(f"flagged images may be {' or '.join(FLAGGED_ACTIONS)}, not "
                              f"{policy.flagged_action!r}")
    if len(policy.safety_negative) > MAX_SAFETY_NEGATIVE_CHARS:
        raise AdminInputError(f"the safety negative prompt may be at most {MAX_SAFETY_NEGATIVE_CHARS} characters")
    for name, value, high in (("strike_limit", policy.strike_limit, MAX_STRIKE_LIMIT),
                              ("strike_window_s", policy.strike_window_s, MAX_STRIKE_WINDOW_S),
                              ("suspension_s", policy.suspension_s, MAX_SUSPENSION_S)):
        if not isinstance(value, int) or not 1 <= value <= high:
            raise AdminInputError(f"{name} must be a whole number from 1 to {high}, not {value!r}")


# Block and allow lists: the default, plus the guild's additions, minus the default entries it removed.


def block_add(conn: redis.Redis, guild: str, entry: str) -> str:
    """Block a word or phrase; returns it as stored. Raises AdminInputError: a bad entry or a full list."""
    text = promptfilter.check_entry(entry)
    if len(block_list(conn, guild)) >= promptfilter.MAX_ENTRIES:
        raise AdminInputError(f"the block list holds {promptfilter.MAX_ENTRIES} entries already: remove some first")
    _change(conn, guild, lambda pipe: (pipe.sadd(keys.moderation_block(guild), text),
                                       pipe.srem(keys.moderation_unblock(guild), text)))
    return text


def block_remove(conn: redis.Redis, guild: str, entry: str) -> bool:
    """Stop blocking an entry (a default one too); False when it was not blocked."""
    text = " ".join(str(entry).split())
    if text not in block_list(conn, guild):
        return False
    in_default = text in _default_blocked()
    _change(conn, guild, lambda pipe: (pipe.srem(keys.moderation_block(guild), text),
                                       pipe.sadd(keys.moderation_unblock(guild), text) if in_default else None))
    return True


def allow_add(conn: redis.Redis, guild: str, entry: str) -> str:
    """Add to the allow list; returns the entry as stored. Raises AdminInputError: a bad entry or a full list."""
    text = promptfilter.check_entry(entry)
    if len(allow_list(conn, guild)) >= promptfilter.MAX_ENTRIES:
        raise AdminInputError(f"the allow list holds {promptfilter.MAX_ENTRIES} entries already: remove some first")
    _change(conn, guild, lambda pipe: pipe.sadd(keys.moderation_allow(guild), text))
    return text


def allow_remove(conn: redis.Redis, guild: str, entry: str) -> bool:
    """Remove a guild allow-list entry; False when it had none such (default allow entries stay)."""
    text = " ".join(str(entry).split())
    return bool(_change(conn, guild, lambda pipe: pipe.srem(keys.moderation_allow(guild), text))[0])


def block_list(conn: redis.Redis, guild: str) -> list[str]:
    """Every entry blocked in the guild, sorted (mature entries included)."""
    removed = _members(conn, keys.moderation_unblock(guild))
    return sorted((set(_default_blocked()) - removed) | _members(conn, keys.moderation_block(guild)))


def allow_list(conn: redis.Redis, guild: str) -> list[str]:
    """Every allow-list entry of the guild, sorted."""
    return sorted(set(promptfilter.default_lists().allow) | _members(conn, keys.moderation_allow(guild)))


_filters: dict[tuple[str, bool], tuple[str, Filter]] = {}  # compiled filters by (guild, mature allowed), with rev
_MAX_CACHED = 256


def load_filter(conn: redis.Redis, guild: str, *, mature_allowed: bool) -> Filter:
    """The guild's compiled filter for a channel (cached until the guild's lists change)."""
    rev = _str(conn.hget(keys.moderation_policy(guild), "rev") or "")
    cached = cached_filter(guild, rev, mature_allowed=mature_allowed)
    if cached is not None:
        return cached
    with conn.pipeline(transaction=False) as pipe:
        for command in filter_reads(guild):
            pipe.execute_command(*command)
        replies = pipe.execute()
    return compile_filter(guild, rev, replies, mature_allowed=mature_allowed)


def cached_filter(guild: str, rev: str, *, mature_allowed: bool) -> Filter | None:
    """The guild's compiled filter if it is cached for lists at revision `rev` (the policy hash's `rev` field)."""
    cached = _filters.get((guild, mature_allowed))
    return cached[1] if cached is not None and cached[0] == rev else None


def filter_reads(guild: str) -> list[tuple[str, ...]]:
    """The commands whose replies `compile_filter` needs: the guild's unblocked, blocked and allowed entries."""
    return [
        ("SMEMBERS", keys.moderation_unblock(guild)),
        ("SMEMBERS", keys.moderation_block(guild)),
        ("SMEMBERS", keys.moderation_allow(guild)),
    ]


def compile_filter(guild: str, rev: str, replies: Sequence[set[bytes]], *, mature_allowed: bool) -> Filter:
    """The guild's filter from the replies to `filter_reads`, cached under `rev`."""
    removed, added, allowed = ({_str(member) for member in reply} for reply in replies)
    default = promptfilter.default_lists()
    blocked = [e for e in default.blocked(mature_allowed=mature_allowed) if e not in removed] + sorted(added)
    compiled = Filter.from_lists(blocked, sorted(set(default.allow) | allowed))
    if len(_filters) >= _MAX_CACHED:
        _filters.pop(next(iter(_filters)))
    _filters[(guild, mature_allowed)] = (rev, compiled)
    return compiled


# Screening /imagine, strikes and suspensions.


def screen(
    conn: redis.Redis,
    guild: str,
    user: str,
    specs: Sequence[JobSpec],
    defaults: Mapping[str, str],
    *,
    prompt: str,
    channel_nsfw: bool,
    now: float,
) -> Safety:
    """Check one `/imagine` before admission: refuse a suspended member or a blocked prompt, else say what the worker
    must do for this channel.

    Args:
        specs: the parsed jobs (every permutation); defaults: the member's saved /settings defaults.
        prompt: the text as typed (for the moderation log only); channel_nsfw: the interaction channel's `nsfw` flag.

    Returns:
        The Safety to attach to every spec with `core.safety.with_safety`.

    Raises:
        Suspended: the member is suspended; the message says until when.
        PromptBlocked: the prompt matched the block list; the strike is recorded (perhaps suspending the member), the
            event is in the audit log, and `.notice` holds the moderation log text. The message repeats nothing.
    """
    until = suspension(conn, guild, user, now)
    policy = load_policy(conn, guild)
    mature = mature_allowed(policy, channel_nsfw)
    checked = decide(guild, user, specs, defaults, prompt=prompt, now=now, suspended_until=until, policy=policy,
                     filter_=load_filter(conn, guild, mature_allowed=mature), channel_nsfw=channel_nsfw)
    if isinstance(checked, Safety):
        return checked
    with conn.pipeline(transaction=False) as pipe:
        for command in block_commands(checked):
            pipe.execute_command(*command)
        replies = pipe.execute()
    raise blocked_error(checked, replies[-1])


SCREEN_READS = 2
"""How many replies `screen_reads`' commands give."""


def screen_reads(guild: str, user: str) -> list[tuple[str, ...]]:
    """The commands whose replies screening needs (`suspension_from`, `policy_from`); the policy hash also holds the
    lists' `rev` for `cached_filter`. Pipeline them with whatever else the caller reads."""
    return [("HGET", keys.moderation_suspended(guild), user), ("HGETALL", keys.moderation_policy(guild))]


def suspension_from(raw: bytes | str | None, now: float) -> float | None:
    """When a suspension stored as `raw` (`HGET keys.moderation_suspended`) ends, or None when it is over or absent."""
    if raw is None:
        return None
    until = float(_str(raw))
    return until if until > now else None


def suspended_error(until: float) -> Suspended:
    return Suspended(f"You are suspended from image generation on this server until <t:{int(until)}:f>.")


@dataclass(frozen=True)
class Blocked:
    """A screened prompt that matched the block list: what to record (`block_commands`) before refusing it."""

    event: Event
    match: Match
    policy: Policy


def decide(
    guild: str,
    user: str,
    specs: Sequence[JobSpec],
    defaults: Mapping[str, str],
    *,
    prompt: str,
    channel_nsfw: bool,
    now: float,
    suspended_until: float | None,
    policy: Policy,
    filter_: Filter,
) -> Safety | Blocked:
    """`screen` without I/O, from what it read: the Safety to attach, or the Blocked match to record and refuse.
    `filter_` is the guild's filter for this channel (mature entries allowed when `mature_allowed(policy, nsfw)`).

    Raises:
        Suspended: the member is suspended (`suspended_until`); the message says until when.
    """
    if suspended_until is not None:
        raise suspended_error(suspended_until)
    found = promptfilter.check_spec(filter_, specs, defaults)
    if found is not None:
        return Blocked(Event("prompt blocked", guild, user, now, prompt, detail=_matched(found)), found, policy)
    if mature_allowed(policy, channel_nsfw):
        return Safety(action=policy.flagged_action)
    return Safety(policy.safety_negative, check_outputs=True, action=policy.flagged_action)


def mature_allowed(policy: Policy, channel_nsfw: bool) -> bool:
    """Whether mature entries are allowed in a channel Discord marks (or not) age-restricted under `policy`."""
    return channel_nsfw and policy.nsfw == "age-restricted"


def block_commands(blocked: Blocked) -> list[tuple[str, ...]]:
    """The writes a blocked prompt makes: its audit entry, then its strike (the last reply goes to `blocked_error`)."""
    event, policy, now = blocked.event, blocked.policy, blocked.event.at
    entry = audit.Entry(now, event.user, event.kind, event.job_id, f"{event.detail}; prompt: {event.prompt}")
    strike = (
        "EVAL", _STRIKE, "2", keys.moderation_strikes(f"{event.guild}:{event.user}"),
        keys.moderation_suspended(event.guild), repr(now), repr(now - policy.strike_window_s),
        str(policy.strike_window_s + 1), str(policy.strike_limit), f"{now!r}:{uuid.uuid4().hex}", event.user,
        repr(now + policy.suspension_s),
    )
    return [*audit.record_commands(event.guild, entry), strike]


def blocked_error(blocked: Blocked, strike_reply: Sequence[int]) -> PromptBlocked:
    """The refusal of a blocked prompt, from the strike script's reply: neutral words, perhaps a suspension."""
    count, suspended = (int(v) for v in strike_reply)
    policy = blocked.policy
    until = blocked.event.at + policy.suspension_s if suspended else None
    message = BLOCKED_MESSAGE + (BLOCKED_DEFAULT_HINT if blocked.match.where.startswith(promptfilter.SAVED_DEFAULT)
                                 else "")
    if until is not None:
        message += f" Because of repeated blocked prompts you are suspended until <t:{int(until)}:f>."
    elif count == policy.strike_limit - 1:
        message += " One more blocked prompt soon will suspend you from the bot for a while."
    return PromptBlocked(message, notice=format_notice(blocked.event, suspended_until=until))


BLOCKED_DEFAULT = "That choice can't be saved as your default on this server (it is on the server's block list); " \
    "nothing changed."


def check_default(conn: redis.Redis, guild: str, name: str, value: str, *, channel_nsfw: bool) -> None:
    """Refuse a `/settings` default that the guild's filter blocks in this channel (no strike: it was picked from a
    menu). A default saved before its entry was blocked is still caught by `screen` at `/imagine`.

    Raises:
        PromptBlocked: the value is blocked; the message does not repeat it.
    """
    policy = load_policy(conn, guild)
    mature = mature_allowed(policy, channel_nsfw)
    found = promptfilter.check_spec(load_filter(conn, guild, mature_allowed=mature), [], {name: value})
    if found is not None:
        raise PromptBlocked(BLOCKED_DEFAULT)


_STRIKE = """
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
        _STRIKE, 2, keys.moderation_strikes(f"{guild}:{user}"), keys.moderation_suspended(guild),
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


# The moderation log.


def record_event(conn: redis.Redis, event: Event) -> None:
    """Append the event to the guild's audit log (member, time, job id, prompt text, detail)."""
    audit.record(conn, event.guild, event.user, event.kind, event.job_id,
                 f"{event.detail}; prompt: {event.prompt}", now=event.at)


def format_notice(event: Event, *, suspended_until: float | None = None) -> str:
    """The moderation log channel's text for an event. Post it with mentions disabled; it quotes the prompt."""
    prompt = event.prompt if len(event.prompt) <= NOTICE_PROMPT_CHARS else event.prompt[:NOTICE_PROMPT_CHARS] + "…"
    lines = [
        f"**{event.kind.capitalize()}** from <@{event.user}> at <t:{int(event.at)}:f>",
        f"Job: {event.job_id or 'none (nothing was queued)'}",
        f"Detail: {event.detail}",
        "Prompt: ```" + prompt.replace("`", "\u02cb") + "```",
    ]
    if suspended_until is not None:
        lines.append(f"The member is suspended until <t:{int(suspended_until)}:f> (`/admin moderation lift`).")
    return "\n".join(lines)


def set_log_channel(conn: redis.Redis, guild: str, channel: str | None, *, missing: Sequence[str] = ()) -> None:
    """Choose the moderation log channel (None: none). The bot passes the permissions it lacks there.

    Raises:
        AdminInputError: the bot lacks `missing` permissions in the channel; the message names them. Nothing changed.
    """
    if channel and missing:
        raise AdminInputError(f"I can't post in <#{channel}>: I need {', '.join(missing)} there. Give me those "
                              "permissions, or choose another channel")
    conn.hset(keys.moderation_policy(guild), mapping={"log_channel": channel or "", "log_failure": ""})


def log_channel_failed(conn: redis.Redis, guild: str, reason: str, *, now: float) -> str:
    """Record that posting to the log channel failed (the bot calls this, never retrying inline); returns the
    admins' answer, also shown by `status_lines`."""
    text = f"posting to the moderation log channel failed at <t:{int(now)}:f>: {reason}. Fix its permissions or " \
           "choose another channel with `/admin moderation log`; /imagine is not affected"
    conn.hset(keys.moderation_policy(guild), "log_failure", text)
    return text


def log_channel_worked(conn: redis.Redis, guild: str) -> None:
    """Clear a recorded failure after a post to the log channel succeeded."""
    conn.hdel(keys.moderation_policy(guild), "log_failure")


def status_lines(conn: redis.Redis, guild: str, *, now: float | None = None) -> list[str]:
    """`/admin moderation status` at `now` (None: the current time): the policy, lists, members suspended now, the
    log channel and the image safety classifiers workers run."""
    policy = load_policy(conn, guild)
    now = time.time() if now is None else now
    lines = [
        f"NSFW policy: {policy.nsfw}; flagged images: {policy.flagged_action}",
        f"Blocked entries: {len(block_list(conn, guild))}; allow entries: {len(allow_list(conn, guild))}",
        f"Strikes: {policy.strike_limit} blocked prompts in {policy.strike_window_s // 60} min suspend for "
        f"{policy.suspension_s // 60} min; suspended now: {suspended_count(conn, guild, now)}",
        f"Moderation log: <#{policy.log_channel}>" if policy.log_channel else "Moderation log: no channel chosen",
    ]
    if policy.log_failure:
        lines.append(f"Problem: {policy.log_failure}")
    reports = [json.loads(raw) for raw in conn.hvals(keys.safety_classifiers())]
    running = sorted({report["classifier"] for report in reports if report.get("classifier")})
    if running:
        lines.append(f"Image safety classifier: {', '.join(running)}")
    else:
        lines.append("Image safety classifier: none configured (WORKER_SAFETY_CLASSIFIER is empty on every worker), "
                     "so outputs are not checked; the safety negative prompt is still added")
    return lines


def _matched(found: Match) -> str:
    return f"matched block entry {found.entry!r} in {found.where}"


def _default_blocked() -> tuple[str, ...]:
    return promptfilter.default_lists().blocked(mature_allowed=False)


def _change(conn: redis.Redis, guild: str, commands: object) -> list[object]:
    """Run list changes and give the guild's lists a new `rev` in one transaction; returns the changes' results.
    A random rev, not a counter: a Redis restored or flushed never brings back a rev a process has cached."""
    with conn.pipeline() as pipe:
        commands(pipe)  # type: ignore[operator]
        pipe.hset(keys.moderation_policy(guild), "rev", uuid.uuid4().hex)
        return [result for result in pipe.execute()[:-1]]


def _members(conn: redis.Redis, key: str) -> set[str]:
    return {_str(member) for member in conn.smembers(key)}


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
