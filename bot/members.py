"""Who a member is, as one interaction describes them: `quotas.Who` (guild, user and role ids from its payload) and
the owner string their jobs carry."""

from __future__ import annotations

import discord

from quotas import DM_GUILD, Who

OWNER_PREFIX = "discord:"


def who(interaction: discord.Interaction) -> Who:
    """The interaction's member; role ids straight from its payload (`Member.roles` drops roles not cached)."""
    roles = getattr(interaction.user, "_roles", ())  # discord.Member's ids from the interaction's member object
    guild = str(interaction.guild_id) if interaction.guild_id else DM_GUILD
    return Who(guild, str(interaction.user.id), tuple(str(r) for r in roles))


def owner_of(user_id: int | str) -> str:
    """The owner string of a Discord user's jobs."""
    return f"{OWNER_PREFIX}{user_id}"


def mention(owner: str) -> str:
    """`<@id>` for a Discord owner string, the owner itself for others (CLI jobs)."""
    return f"<@{owner[len(OWNER_PREFIX) :]}>" if owner.startswith(OWNER_PREFIX) else owner
