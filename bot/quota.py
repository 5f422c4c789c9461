"""Who a member is, as one interaction describes them (`quotas.Who`): guild, user and role ids from its payload."""

from __future__ import annotations

import discord

from quotas import DM_GUILD, Who


def who(interaction: discord.Interaction) -> Who:
    """The interaction's member; role ids straight from its payload (`Member.roles` drops roles not cached)."""
    roles = getattr(interaction.user, "_roles", ())  # discord.Member's ids from the interaction's member object
    guild = str(interaction.guild_id) if interaction.guild_id else DM_GUILD
    return Who(guild, str(interaction.user.id), tuple(str(r) for r in roles))
