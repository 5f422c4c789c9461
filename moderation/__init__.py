"""Moderation: the prompt filter, strikes and suspensions, a guild's policy and lists, and the moderation log.
This module is the whole API.

    safety = moderation.screen(conn, guild, user, specs, defaults, prompt=text, channel_nsfw=nsfw, now=now)
    specs = [core.safety.with_safety(spec, safety) for spec in specs]   # what the worker does in this channel

Behind it (private to the package): `normalize` (text folded for matching: look-alikes, accents, invisible
characters, leet, repeated letters), `wordforms` (inflections, slang, the ordinary-word dictionary), `listfile`
(the list file and what an entry may be), `promptfilter` (the pure, linear-time filter over block and allow lists),
and a guild's state in Redis: `policy`, `lists` (and their compiled filters), `strikes` (and suspensions), `log`
(events, the moderation log channel, status) and `screening` (`screen` and `decide`, which use all of them).

An asyncio caller screens without a thread, with the same logic: pipeline `screen_reads` (and `filter_reads` when
`cached_filter` misses), then `decide` (pure); a `Blocked` answer is recorded with `block_commands` and refused with
`blocked_error`. Code outside `moderation/` imports only
`moderation` (a test keeps it so).
"""

from moderation.listfile import MAX_ENTRIES, default_lists
from moderation.lists import (
    allow_add,
    allow_list,
    allow_remove,
    block_add,
    block_list,
    block_remove,
    cached_filter,
    compile_filter,
    filter_reads,
    load_filter,
)
from moderation.log import (
    Event,
    format_notice,
    log_channel_failed,
    log_channel_worked,
    record_event,
    set_log_channel,
    status_lines,
)
from moderation.policy import (
    DEFAULT_SAFETY_NEGATIVE,
    NSFW_POLICIES,
    Policy,
    language_codes,
    load_policy,
    mature_allowed,
    policy_from,
    set_policy,
)
from moderation.promptfilter import Filter, Match, check_spec, warm_up
from moderation.screening import (
    BLOCKED_DEFAULT,
    BLOCKED_MESSAGE,
    SCREEN_READS,
    Blocked,
    block_commands,
    blocked_error,
    check_default,
    decide,
    screen,
    screen_reads,
)
from moderation.strikes import (
    is_suspended,
    lift,
    record_strike,
    suspend,
    suspended_count,
    suspended_error,
    suspension,
    suspension_from,
)

__all__ = [
    "BLOCKED_DEFAULT", "BLOCKED_MESSAGE", "DEFAULT_SAFETY_NEGATIVE", "MAX_ENTRIES", "NSFW_POLICIES",
    "SCREEN_READS", "Blocked", "Event", "Filter", "Match", "Policy", "allow_add", "allow_list", "allow_remove",
    "block_add", "block_commands", "block_list", "block_remove", "blocked_error", "cached_filter", "check_default",
    "check_spec", "compile_filter", "decide", "default_lists", "filter_reads", "format_notice", "is_suspended",
    "language_codes", "lift", "load_filter", "load_policy", "log_channel_failed", "log_channel_worked",
    "mature_allowed", "policy_from", "record_event", "record_strike", "screen", "screen_reads", "set_log_channel",
    "set_policy", "status_lines", "suspend", "suspended_count", "suspended_error", "suspension", "suspension_from",
    "warm_up",
]
