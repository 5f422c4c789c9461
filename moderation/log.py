"""The moderation log: events in the admins' audit log (`core.audit`), their notice text for the moderation log
channel, that channel's choice and failures, and `/admin moderation status`."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from core import audit, keys
from core.errors import AdminInputError
from moderation.lists import allow_list, block_list
from moderation.policy import load_policy
from moderation.strikes import suspended_count

NOTICE_PROMPT_CHARS = 1500
"""Prompt text quoted in a log notice is cut to this many characters (Discord messages hold 2000)."""


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
