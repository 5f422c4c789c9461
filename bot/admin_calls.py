"""What every `/admin` command does with its interaction: who called (`caller`), whom it names (`target`), and
`answer`: authorise and run the operation in a Redis thread (`bot.admin_ops.run`), then reply ephemerally."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import discord

from bot import admin_ops
from bot.admin_ops import Caller, Target
from bot.client import ImagineBot
from bot.members import role_ids
from quotas import TiersConfig


def caller(interaction: discord.Interaction) -> Caller:
    """Who ran the command, with the permissions Discord computed for them in this channel."""
    permissions = interaction.permissions
    return Caller(
        guild=str(interaction.guild_id or ""),
        user=str(interaction.user.id),
        role_ids=role_ids(interaction.user),
        manage_guild=permissions.manage_guild or permissions.administrator,
    )


def target(user: discord.User | discord.Member) -> Target:
    """The member an option names; a user who is not in the server arrives without member data."""
    if not isinstance(user, discord.Member):
        return Target(str(user.id), is_member=False)
    permissions = user.resolved_permissions or user.guild_permissions
    return Target(str(user.id), role_ids(user), permissions.manage_guild or permissions.administrator)


def bot_of(interaction: discord.Interaction) -> ImagineBot:
    assert isinstance(interaction.client, ImagineBot)
    return interaction.client


def tiers_of(interaction: discord.Interaction) -> TiersConfig:
    """The deployment's tiers, as the bot was given them."""
    return bot_of(interaction).tiers


async def answer(interaction: discord.Interaction, command: str, op: Callable[..., str], *args: Any) -> None:
    """Authorise, run `op` in a Redis thread, and answer ephemerally without pinging anyone it names."""
    bot = bot_of(interaction)
    text = await bot.redis_call(admin_ops.run, bot.admins, caller(interaction), command, op, *args)
    await interaction.response.send_message(text, ephemeral=True, allowed_mentions=discord.AllowedMentions.none())
