"""Who a member is, as one interaction describes them: `quotas.Who` (guild, user and role ids from its payload), the
owner string their jobs carry, whether they are an admin of this bot here, and the `Place` a result would be posted
in (`core.reposting`)."""

from __future__ import annotations

import discord

from bot import screening
from core.reposting import Place
from core.settings import AdminSettings
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


def role_ids(user: discord.abc.User) -> tuple[str, ...]:
    """Role ids straight from the interaction's member object (`Member.roles` drops roles not in the cache)."""
    return tuple(str(r) for r in getattr(user, "_roles", ()))


def is_admin(user: str, roles: tuple[str, ...], manage_guild: bool, admins: AdminSettings) -> bool:
    """Manage Server, or a configured admin user or role."""
    return manage_guild or user in admins.users() or bool(admins.roles() & set(roles))


def place(interaction: discord.Interaction, admins: AdminSettings) -> Place:
    """Where this interaction would post a result, and whether its user is an admin of this server."""
    permissions = interaction.permissions
    admin = bool(interaction.guild_id) and is_admin(
        str(interaction.user.id), role_ids(interaction.user), permissions.manage_guild or permissions.administrator,
        admins,
    )
    return Place(
        guild_id=str(interaction.guild_id or ""),
        channel_id=str(interaction.channel_id or ""),
        channel_nsfw=screening.channel_nsfw(interaction),
        caller=owner_of(interaction.user.id),
        caller_is_admin=admin,
    )
