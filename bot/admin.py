"""`/admin ...`: the server admins' commands. Thin: each turns the interaction into plain values and calls
`bot.admin_ops.run`, which checks the caller's rights on every call (Discord's default permissions can be overridden
by server owners, and an interaction can be forged), runs the operation and audits it. `/admin moderation` is
`bot.admin_moderation`'s group, added here; the helpers both use are `bot.admin_calls`'."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot import admin_ops, admin_queue
from bot.admin_calls import answer, bot_of, target, tiers_of
from bot.admin_moderation import group as moderation

AUDIT_SHOWN = 10
"""Entries `/admin audit` shows by default."""

admin = app_commands.Group(
    name="admin",
    description="Run this server's image bot (tiers, quotas, bans, queue, moderation)",
    guild_only=True,
    default_permissions=discord.Permissions(manage_guild=True),
)
tier = app_commands.Group(name="tier", description="Members' tiers", parent=admin)
quota = app_commands.Group(name="quota", description="Members' fast GPU time", parent=admin)


@tier.command(name="set", description="Give a member a tier (for some days, or for good)")
@app_commands.describe(member="the member", tier="tier name", days="how long; empty = until cleared")
async def tier_set(
    interaction: discord.Interaction, member: discord.User, tier: str, days: float | None = None
) -> None:
    await answer(interaction, "tier set", admin_ops.tier_set, tiers_of(interaction), target(member), tier, days)


@tier.command(name="clear", description="Remove the tier an admin gave a member")
async def tier_clear(interaction: discord.Interaction, member: discord.User) -> None:
    await answer(interaction, "tier clear", admin_ops.tier_clear, target(member))


@tier.command(name="roles", description="List role -> tier mappings, or map a role to a tier (`none` unmaps)")
@app_commands.describe(role="the Discord role", tier="tier name, or none")
async def tier_roles(
    interaction: discord.Interaction, role: discord.Role | None = None, tier: str | None = None
) -> None:
    role_id = str(role.id) if role is not None else None
    await answer(interaction, "tier roles", admin_ops.tier_roles, tiers_of(interaction), role_id, tier)


@tier.command(name="default", description="Set the tier of members with no given tier or mapped role")
@app_commands.describe(tier="tier name, or `default` for the deployment's default")
async def tier_default(interaction: discord.Interaction, tier: str) -> None:
    await answer(interaction, "tier default", admin_ops.tier_default, tiers_of(interaction), tier)


@tier.command(name="show", description="The server's tiers and role map, or one member's tier")
async def tier_show(interaction: discord.Interaction, member: discord.User | None = None) -> None:
    who = target(member) if member is not None else None
    await answer(interaction, "tier show", admin_ops.tier_show, tiers_of(interaction), who)


@quota.command(name="grant", description="Give a member extra fast minutes this period")
async def quota_grant(interaction: discord.Interaction, member: discord.User, minutes: float) -> None:
    await answer(interaction, "quota grant", admin_ops.quota_grant, tiers_of(interaction), target(member), minutes)


@quota.command(name="reset", description="Reset a member's fast time used this period")
async def quota_reset(interaction: discord.Interaction, member: discord.User) -> None:
    await answer(interaction, "quota reset", admin_ops.quota_reset, tiers_of(interaction), target(member))


@admin.command(name="usage", description="A member's usage this period, or the top users")
async def usage(interaction: discord.Interaction, member: discord.User | None = None) -> None:
    who = target(member) if member is not None else None
    await answer(interaction, "usage", admin_ops.usage, tiers_of(interaction), who)


@admin.command(name="ban", description="Stop a member from creating images here")
async def ban(interaction: discord.Interaction, member: discord.User, reason: str | None = None) -> None:
    await answer(interaction, "ban", admin_ops.ban, bot_of(interaction).admins, target(member), reason)


@admin.command(name="unban", description="Let a banned member create images again")
async def unban(interaction: discord.Interaction, member: discord.User) -> None:
    await answer(interaction, "unban", admin_ops.unban, target(member))


@admin.command(name="queue", description="Jobs waiting per lane, running jobs, live workers and their models")
async def queue(interaction: discord.Interaction) -> None:
    await answer(interaction, "queue", lambda conn, _caller: admin_queue.overview(conn))


@admin.command(name="cancel", description="Cancel any member's job (its fast time is refunded)")
async def cancel(interaction: discord.Interaction, job_id: str) -> None:
    await answer(interaction, "cancel", admin_ops.cancel, job_id)


@admin.command(name="limits", description="Show a tier's limits here, or change one (value `default` resets it)")
@app_commands.describe(tier="tier name", limit=f"one of: {', '.join(admin_ops.LIMIT_FIELDS)}", value="new value")
async def limits(
    interaction: discord.Interaction, tier: str, limit: str | None = None, value: str | None = None
) -> None:
    await answer(interaction, "limits", admin_ops.limits, tiers_of(interaction), tier, limit, value)


@admin.command(name="announce-text", description="Show or set what /subscribe tells members (`none` clears)")
async def announce_text(interaction: discord.Interaction, text: str | None = None) -> None:
    await answer(interaction, "announce-text", admin_ops.announce_text, tiers_of(interaction), text)


@admin.command(name="audit", description="The latest admin actions")
async def audit(interaction: discord.Interaction, count: int = AUDIT_SHOWN) -> None:
    await answer(interaction, "audit", admin_ops.audit_text, count)


async def setup(bot: commands.Bot) -> None:
    admin.add_command(moderation, override=True)
    bot.tree.add_command(admin)


async def teardown(bot: commands.Bot) -> None:
    bot.tree.remove_command(admin.name)
