"""Moderation in members' commands: the screen between parsing and admission, and the moderation log channel.

    specs = await moderation.screen(bot, interaction, specs, saved.defaults, prompt)  # PromptBlocked, Suspended

A refusal is answered by `bot.errors.report` (ephemeral, neutral, nothing charged or queued), which then hands
its `notice` to `post_later`: the moderation log channel gets it after the member has their answer, and a channel
the bot cannot write to is recorded for `/admin moderation status`, never failing or slowing `/imagine`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

import discord

import moderation
from core.errors import Suspended
from core.safety import with_safety
from core.spec import JobSpec

if TYPE_CHECKING:
    from bot.client import ImagineBot  # bot.client imports bot.errors, which imports this module

log = logging.getLogger(__name__)

_posting: set[asyncio.Task[bool]] = set()
"""Notices being posted (a reference, so the event loop does not drop a running task)."""


def guild_of(interaction: discord.Interaction) -> str:
    """The guild whose moderation applies ("dm" outside a server: the shipped default lists)."""
    return str(interaction.guild_id) if interaction.guild_id else "dm"


def channel_nsfw(interaction: discord.Interaction) -> bool:
    """Whether Discord marks the interaction's channel age-restricted (a thread follows its parent)."""
    is_nsfw = getattr(interaction.channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False


async def screen(
    bot: ImagineBot, interaction: discord.Interaction, specs: list[JobSpec], defaults: Mapping[str, str], prompt: str
) -> list[JobSpec]:
    """The specs carrying what the worker must do in this channel (safety negative prompt, output check).

    Raises:
        Suspended: the member is suspended here.
        PromptBlocked: something that reaches the model is blocked (strike, audit entry; `.notice` for the log).
    """
    safety = await bot.redis_call(
        moderation.screen, guild_of(interaction), str(interaction.user.id), specs, defaults, prompt=prompt,
        channel_nsfw=channel_nsfw(interaction), now=time.time(),
    )
    return [with_safety(spec, safety) for spec in specs]


async def screen_click(bot: ImagineBot, interaction: discord.Interaction, spec: JobSpec, kind: str) -> JobSpec:
    """A button's job, screened like a prompt when it runs the model; a U (a copy of an image the worker already
    checked) is refused only to a suspended member.

    Raises:
        Suspended, PromptBlocked: as for `screen`.
    """
    if kind != "upscale":
        (spec,) = await screen(bot, interaction, [spec], {}, spec.prompt)
        return spec
    until = await bot.redis_call(moderation.suspension, guild_of(interaction), str(interaction.user.id), time.time())
    if until is not None:
        raise Suspended(f"You are suspended from image generation on this server until <t:{int(until)}:f>.")
    return spec


def post_later(interaction: discord.Interaction, notice: str) -> None:
    """Post `notice` to the guild's moderation log channel in the background (call it after answering)."""
    if not notice or not interaction.guild_id:
        return
    bot = cast("ImagineBot", interaction.client)
    task = asyncio.get_running_loop().create_task(post_notice(bot, str(interaction.guild_id), notice))
    _posting.add(task)
    task.add_done_callback(_posting.discard)


async def post_notice(bot: ImagineBot, guild: str, notice: str) -> bool:
    """Post to the guild's moderation log channel with mentions disabled; True when Discord took it. A 403 or 404
    (no permission, channel gone) is recorded with `moderation.log_channel_failed` for the admins."""
    redis_call = bot.redis_call
    try:
        policy = await redis_call(moderation.load_policy, guild)
        if not policy.log_channel:
            return False
        channel = bot.get_partial_messageable(int(policy.log_channel), guild_id=int(guild))
        try:
            await channel.send(notice, allowed_mentions=discord.AllowedMentions.none())
        except (discord.Forbidden, discord.NotFound) as exc:
            why = f"Discord answered {exc.status} ({exc.text or 'no reason given'})"
            await redis_call(moderation.log_channel_failed, guild, why, now=time.time())
            log.warning("guild %s: moderation log channel refused a notice: %s", guild, why)
            return False
        if policy.log_failure:
            await redis_call(moderation.log_channel_worked, guild)
        return True
    except Exception as exc:  # a notice must never break anything else
        log.warning("guild %s: moderation log notice not posted: %s", guild, type(exc).__name__)
        return False
