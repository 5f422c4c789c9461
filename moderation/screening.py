"""`screen`: the one call `/imagine` and every button make between parsing and admission.

    safety = moderation.screen(conn, guild, user, specs, defaults, prompt=text, channel_nsfw=channel.nsfw, now=now)
    specs = [core.safety.with_safety(spec, safety) for spec in specs]  # then admission and enqueue as before

It reads the guild's policy (`moderation.policy`), filter (`moderation.lists`) and the member's suspension
(`moderation.strikes`); a blocked prompt is a strike and an event in the audit log, and its `notice` text goes to
the moderation log channel (`moderation.log`), which the bot posts to after answering the member. `decide` is the
same without I/O, for an asyncio caller that pipelines the reads (`screen_reads`) itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import redis

import moderation.promptfilter as promptfilter
from core import audit, keys
from core.errors import PromptBlocked
from core.safety import Safety
from core.spec import JobSpec
from moderation.lists import load_filter
from moderation.log import Event, format_notice
from moderation.policy import Policy, load_policy, mature_allowed
from moderation.promptfilter import Filter, Match
from moderation.strikes import STRIKE_SCRIPT, suspended_error, suspension

BLOCKED_MESSAGE = "This prompt can't be used on this server, so nothing was queued or charged."
BLOCKED_DEFAULT_HINT = " What is blocked is one of your saved defaults: change it with /settings."
"""Added when the match is in a saved /settings default (saved before its entry was blocked): the member could not
otherwise tell what to change, since the refusal repeats nothing."""


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
                     filter_=load_filter(conn, guild, mature_allowed=mature, languages=policy.language_list()),
                     channel_nsfw=channel_nsfw)
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


def block_commands(blocked: Blocked) -> list[tuple[str, ...]]:
    """The writes a blocked prompt makes: its audit entry, then its strike (the last reply goes to `blocked_error`)."""
    event, policy, now = blocked.event, blocked.policy, blocked.event.at
    entry = audit.Entry(now, event.user, event.kind, event.job_id, f"{event.detail}; prompt: {event.prompt}")
    strike = (
        "EVAL", STRIKE_SCRIPT, "2", keys.moderation_strikes(f"{event.guild}:{event.user}"),
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
    prompt_filter = load_filter(conn, guild, mature_allowed=mature, languages=policy.language_list())
    found = promptfilter.check_spec(prompt_filter, [], {name: value})
    if found is not None:
        raise PromptBlocked(BLOCKED_DEFAULT)


def _matched(found: Match) -> str:
    return f"matched block entry {found.entry!r} in {found.where}"
