"""Moderation in members' commands: the screen between parsing and admission, and the moderation log channel.

The screen runs on what the command's one read round trip brought back (`moderation.screen_reads`' replies):

    specs = await screening.screen(conn, interaction, specs, saved.defaults, prompt, replies, now)

A refusal (`Suspended`, `PromptBlocked`) is answered by `bot.errors.report` (ephemeral, neutral, nothing charged or
queued), which then hands a blocked prompt's `notice` to `post_notice`: the moderation log channel gets it after the
member has their answer, and a channel the bot cannot write to is recorded for `/admin moderation status`, never
failing or slowing `/imagine`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import discord
import redis
import redis.asyncio

import moderation
from bot.aredis import pipelined
from core.safety import with_safety
from core.spec import JobSpec

log = logging.getLogger(__name__)

class Unrecorded(Exception):
    """`screen` would block the prompt, but was told not to record anything (its replies are a guess)."""


def guild_of(interaction: discord.Interaction) -> str:
    """The guild whose moderation applies ("dm" outside a server: the shipped default lists)."""
    return str(interaction.guild_id) if interaction.guild_id else "dm"


def channel_nsfw(interaction: discord.Interaction) -> bool:
    """Whether Discord marks the interaction's channel age-restricted (a thread follows its parent)."""
    is_nsfw = getattr(interaction.channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False


def reads(interaction: discord.Interaction) -> list[tuple[str, ...]]:
    """The commands whose replies `screen` and `check_suspension` take (`moderation.SCREEN_READS` of them)."""
    return moderation.screen_reads(guild_of(interaction), str(interaction.user.id))


async def screen(
    conn: redis.asyncio.Redis,
    interaction: discord.Interaction,
    specs: list[JobSpec],
    defaults: Mapping[str, str],
    prompt: str,
    replies: Sequence[Any],
    now: float,
    *,
    record: bool = True,
) -> list[JobSpec]:
    """The specs carrying what the worker must do in this channel (safety negative prompt, output check). No round
    trip unless the guild's lists changed since they were compiled, or the prompt is blocked.

    Raises:
        Suspended: the member is suspended here.
        PromptBlocked: something that reaches the model is blocked (strike, audit entry; `.notice` for the log).
        Unrecorded: with `record=False` (replies not yet confirmed by Redis), instead of recording a block.
    """
    check_suspension(replies, now)
    guild, user = guild_of(interaction), str(interaction.user.id)
    raw_policy = replies[1] or {}
    policy = moderation.policy_from(raw_policy)
    rev = raw_policy.get(b"rev", b"").decode()
    mature = moderation.mature_allowed(policy, channel_nsfw(interaction))
    filter_ = moderation.cached_filter(guild, rev, mature_allowed=mature)
    if filter_ is None:
        filter_ = await guild_filter(conn, guild, rev, mature, policy.language_list())
    checked = moderation.decide(guild, user, specs, defaults, prompt=prompt, channel_nsfw=channel_nsfw(interaction),
                                now=now, suspended_until=None, policy=policy, filter_=filter_)
    if isinstance(checked, moderation.Blocked):
        if not record:
            raise Unrecorded("blocked on replies not yet confirmed")
        written = await pipelined(conn, moderation.block_commands(checked))
        raise moderation.blocked_error(checked, written[-1])
    return [with_safety(spec, checked) for spec in specs]


_compiling: dict[tuple[str, str, bool], asyncio.Task[moderation.Filter]] = {}
"""The compiles under way, by (guild, lists' rev, mature allowed)."""


async def guild_filter(
    conn: redis.asyncio.Redis, guild: str, rev: str, mature: bool, languages: Sequence[str]
) -> moderation.Filter:
    """Read and compile the guild's lists at `rev` once, however many interactions ask at the same time: a burst
    right after a start or a list change would otherwise compile them once each (about 20 ms of CPU apiece with
    the default list) and push every acknowledgement past Discord's deadline. The compile is a task of its own, so
    an interaction that gives up waiting does not cancel it for the others."""
    key = (guild, rev, mature)
    task = _compiling.get(key)
    if task is None:
        task = asyncio.create_task(_compile(conn, guild, rev, mature, tuple(languages)))
        _compiling[key] = task
        task.add_done_callback(lambda _: _compiling.pop(key, None))
    return await asyncio.shield(task)


async def _compile(
    conn: redis.asyncio.Redis, guild: str, rev: str, mature: bool, languages: tuple[str, ...]
) -> moderation.Filter:
    lists = await pipelined(conn, moderation.filter_reads(guild))
    return moderation.compile_filter(guild, rev, lists, mature_allowed=mature, languages=languages)


def check_suspension(replies: Sequence[Any], now: float) -> None:
    """Refuse a suspended member.

    Raises:
        Suspended: the member is suspended here; the message says until when.
    """
    until = moderation.suspension_from(replies[0], now)
    if until is not None:
        raise moderation.suspended_error(until)


async def post_notice(bot: discord.Client, conn: redis.Redis, guild: str, notice: str) -> bool:
    """Post to the guild's moderation log channel with mentions disabled; True when Discord took it. A 403 or 404
    (no permission, channel gone) is recorded with `moderation.log_channel_failed` for the admins. Off the hot path:
    its Redis calls run in a thread with the sync client."""
    try:
        policy = await asyncio.to_thread(moderation.load_policy, conn, guild)
        if not policy.log_channel:
            return False
        channel = bot.get_partial_messageable(int(policy.log_channel), guild_id=int(guild))
        try:
            await channel.send(notice, allowed_mentions=discord.AllowedMentions.none())
        except (discord.Forbidden, discord.NotFound) as exc:
            why = f"Discord answered {exc.status} ({exc.text or 'no reason given'})"
            await asyncio.to_thread(moderation.log_channel_failed, conn, guild, why, now=time.time())
            log.warning("guild %s: moderation log channel refused a notice: %s", guild, why)
            return False
        if policy.log_failure:
            await asyncio.to_thread(moderation.log_channel_worked, conn, guild)
        return True
    except Exception as exc:  # a notice must never break anything else
        log.warning("guild %s: moderation log notice not posted: %s", guild, type(exc).__name__)
        return False
