"""`/imagine`: parse, screen (moderation), admit (tier, quota), acknowledge, then one message and one queued job
per grid asked for."""

from __future__ import annotations

import dataclasses
import logging

import discord
import redis
from discord import app_commands
from discord.ext import commands

import quotas
from bot import quota, screening, submit
from bot.client import ImagineBot
from bot.errors import QUEUE_UNREACHABLE
from core import prompt, usersettings
from core.delivery import Delivery
from core.spec import JobSpec
from quotas import Admission

log = logging.getLogger(__name__)


def delivery_for(interaction: discord.Interaction, message_id: str = "") -> Delivery:
    """Where a job started by this interaction is shown."""
    return Delivery(
        application_id=str(interaction.application_id),
        channel_id=str(interaction.channel_id or ""),
        user_id=str(interaction.user.id),
        guild_id=str(interaction.guild_id or ""),
        message_id=message_id,
    )


async def start_job(
    bot: ImagineBot,
    interaction: discord.Interaction,
    spec: JobSpec,
    *,
    original: bool,
    label: str = "",
    kind: str = "grid",
    source: dict | None = None,
    job_id: str | None = None,
) -> str:
    """Show the job's waiting message (the original response, or a follow-up), save its delivery, enqueue it.

    The message is written before the job is enqueued, so this edit can never land after one of the worker's.
    """
    owner = submit.owner_of(interaction.user.id)
    ahead = await bot.redis_call(submit.ahead_of_new, spec)
    text = submit.waiting_text(spec, interaction.user.id, ahead, label)
    if original:
        await interaction.edit_original_response(content=text)
        message_id = ""  # the worker edits @original while the token lives
    else:
        message_id = str((await interaction.followup.send(text, wait=True)).id)
    try:
        delivery = delivery_for(interaction, message_id)
        return await bot.redis_call(
            submit.admit, spec, owner, delivery, interaction.token, kind=kind, source=source, job_id=job_id
        )
    except redis.RedisError:
        failed = f"**{spec.prompt}** - <@{interaction.user.id}> (not queued: {QUEUE_UNREACHABLE.lower()})"
        if original:
            await interaction.edit_original_response(content=failed)
        raise


class Imagine(commands.Cog):
    """The `/imagine` command."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="imagine", description="Create images from a prompt")
    @app_commands.describe(prompt="what to imagine, then --parameters (e.g. --ar 16:9 --seed 7)")
    async def imagine(self, interaction: discord.Interaction, prompt: str) -> None:
        saved = await self.bot.redis_call(usersettings.get, submit.owner_of(interaction.user.id))
        specs = parse_prompt(self.bot, prompt, saved)  # a PromptError is answered ephemerally by bot.errors
        specs = await screening.screen(self.bot, interaction, specs, saved.defaults, prompt)  # before any charge
        admitted = await self.bot.redis_call(quotas.reserve, self.bot.tiers, quota.who(interaction), specs)
        await start_admitted(self.bot, interaction, admitted, specs)


async def start_admitted(
    bot: ImagineBot,
    interaction: discord.Interaction,
    admitted: Admission,
    specs: list[JobSpec],
    *,
    label: str = "",
    kind: str = "grid",
    source: dict | None = None,
) -> None:
    """Acknowledge, then start each admitted job in the admitted lane; refund every job that did not get queued."""
    started = 0
    try:
        await interaction.response.defer(thinking=True)
        for spec, job_id in zip(specs, admitted.job_ids, strict=True):
            spec = dataclasses.replace(spec, mode=admitted.mode)
            await start_job(
                bot, interaction, spec, original=started == 0, label=label, kind=kind, source=source, job_id=job_id
            )
            started += 1
    except BaseException:
        try:
            await bot.redis_call(quotas.release_unqueued, admitted.job_ids[started:])
        except Exception as exc:  # Redis down, or the bot shutting down: the ledger's backstop refunds them later
            log.warning("could not refund %d unqueued jobs (%s)", len(admitted.job_ids) - started, type(exc).__name__)
        raise
    if admitted.tell:
        await interaction.followup.send(quotas.moved_to_relax_text(admitted), ephemeral=True)


def parse_prompt(bot: ImagineBot, text: str, saved: usersettings.UserSettings) -> list[JobSpec]:
    """The prompt's jobs under this bot's caps, the user's saved defaults and mode."""
    caps = bot.job_settings
    return prompt.parse(
        text,
        bot.registry,
        max_jobs=caps.max_jobs_per_command,
        max_chars=caps.max_prompt_chars,
        defaults=saved.defaults,
        default_mode=saved.mode,
    )


async def setup(bot: commands.Bot) -> None:
    assert isinstance(bot, ImagineBot)
    await bot.add_cog(Imagine(bot))
