"""Moderation: the prompt filter, strikes and suspensions, a guild's policy and lists, and the moderation log.
This module is the whole API.

    safety = moderation.screen(conn, guild, user, specs, defaults, prompt=text, channel_nsfw=nsfw, now=now)
    specs = [core.safety.with_safety(spec, safety) for spec in specs]   # what the worker does in this channel

Behind it (private to the package): `normalize` (text folded for matching: case, look-alikes, accents, spacing),
`promptfilter` (the pure, linear-time filter over block and allow lists) and `store` (a guild's state in Redis,
screening, strikes, suspensions, events and log channel status).

An asyncio caller screens without a thread, with the same logic: pipeline `screen_reads` (and `filter_reads` when
`cached_filter` misses), then `decide` (pure); a `Blocked` answer is recorded with `block_commands` and refused with
`blocked_error`. Code outside `moderation/` imports only
`moderation` (a test keeps it so).
"""

from moderation.promptfilter import MAX_ENTRIES, Filter, Match, check_spec
from moderation.store import (
    BLOCKED_MESSAGE,
    DEFAULT_SAFETY_NEGATIVE,
    NSFW_POLICIES,
    SCREEN_READS,
    Blocked,
    Event,
    Policy,
    allow_add,
    allow_list,
    allow_remove,
    block_add,
    block_commands,
    block_list,
    block_remove,
    blocked_error,
    cached_filter,
    check_default,
    compile_filter,
    decide,
    filter_reads,
    format_notice,
    is_suspended,
    lift,
    load_filter,
    load_policy,
    log_channel_failed,
    log_channel_worked,
    mature_allowed,
    policy_from,
    record_event,
    record_strike,
    screen,
    screen_reads,
    set_log_channel,
    set_policy,
    status_lines,
    suspend,
    suspended_count,
    suspended_error,
    suspension,
    suspension_from,
)

__all__ = [
    "BLOCKED_MESSAGE", "DEFAULT_SAFETY_NEGATIVE", "MAX_ENTRIES", "NSFW_POLICIES", "SCREEN_READS", "Blocked", "Event",
    "Filter", "Match", "Policy", "allow_add", "allow_list", "allow_remove", "block_add", "block_commands",
    "block_list", "block_remove", "blocked_error", "cached_filter", "check_default", "check_spec", "compile_filter",
    "decide", "filter_reads", "format_notice", "is_suspended", "lift", "load_filter", "load_policy",
    "log_channel_failed", "log_channel_worked", "mature_allowed", "policy_from", "record_event", "record_strike",
    "screen", "screen_reads", "set_log_channel", "set_policy", "status_lines", "suspend", "suspended_count",
    "suspended_error", "suspension", "suspension_from",
]
