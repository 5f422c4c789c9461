"""`/admin moderation ...`: the prompt filter's lists, the NSFW and image policy, the moderation log channel,
suspensions and status. Each command is authorised and audited by `bot.admin_ops.run`, like every `/admin` command;
the operations below are plain functions of plain values, and `moderation` validates (AdminInputError).

Discord nests commands at most two levels under `/admin`, so the lists are `block`/`allow` with an `action`.
"""

from __future__ import annotations

import time
from typing import Literal

import discord
import redis
from discord import app_commands

import moderation
from bot import admin_ops
from bot.admin_calls import answer, bot_of, target
from bot.admin_ops import Caller, Target
from core import audit
from core.errors import AdminInputError
from core.settings import AdminSettings

LIST_SHOWN_CHARS = 1700
"""A list longer than this is cut in the answer (Discord messages hold 2000 characters)."""

LOG_CHANNEL_TYPES = (
    discord.ChannelType.text,
    discord.ChannelType.news,
    discord.ChannelType.news_thread,
    discord.ChannelType.public_thread,
    discord.ChannelType.private_thread,
)
"""Channels a moderation log may be: ones the bot can post plain messages in (text, announcement, threads). The
`log` command offers only these; the check below still refuses any other a forged interaction names."""

NEEDED = (("view_channel", "View Channel"), ("send_messages", "Send Messages"))
"""The permissions the bot needs in the moderation log channel, with Discord's names for them."""

NEEDED_IN_THREAD = (("view_channel", "View Channel"), ("send_messages_in_threads", "Send Messages in Threads"))
"""The same for a thread: Discord checks Send Messages in Threads there, not Send Messages."""



class PostableChannel(app_commands.Transformer):
    """A channel option that Discord's picker limits to LOG_CHANNEL_TYPES (`channel_types` of the synced option);
    the value is the interaction's own channel object, resolved or not (no guild cache needed)."""

    @property
    def type(self) -> discord.AppCommandOptionType:
        return discord.AppCommandOptionType.channel

    @property
    def channel_types(self) -> list[discord.ChannelType]:
        return list(LOG_CHANNEL_TYPES)

    async def transform(
        self, interaction: discord.Interaction, value: object
    ) -> app_commands.AppCommandChannel | app_commands.AppCommandThread:
        if not isinstance(value, app_commands.AppCommandChannel | app_commands.AppCommandThread):
            raise app_commands.TransformerError(value, discord.AppCommandOptionType.channel, self)
        return value


LogChannel = app_commands.Transform[app_commands.AppCommandChannel | app_commands.AppCommandThread, PostableChannel]

group = app_commands.Group(name="moderation", description="Prompt filter, NSFW policy, image checks, log")


# -- operations (plain values in, words out) ---------------------------------------------------------------------


def edit_list(conn: redis.Redis, caller: Caller, which: str, action: str, entry: str | None) -> str:
    """`block`/`allow` with `add`, `remove` or `list`."""
    lister = moderation.block_list if which == "block" else moderation.allow_list
    if action == "list":
        entries = lister(conn, caller.guild)
        shown = ", ".join(f"`{_plain(e)}`" for e in entries)
        if len(shown) > LIST_SHOWN_CHARS:
            shown = shown[:LIST_SHOWN_CHARS].rsplit(", ", 1)[0] + ", …"
        return f"**{which.capitalize()} list** ({len(entries)} entries)\n{shown or 'empty'}"
    if action not in ("add", "remove"):
        raise AdminInputError(f"The action must be add, remove or list, not {action!r}.")
    if not entry or not entry.strip():
        raise AdminInputError(f"Give the word or phrase to {action}.")
    if action == "add":
        stored = (moderation.block_add if which == "block" else moderation.allow_add)(conn, caller.guild, entry)
        audit.record(conn, caller.guild, caller.user, f"moderation {which} add", "", stored)
        return f"`{_plain(stored)}` is now on the {which} list (matched however it is spelled or spaced)."
    removed = (moderation.block_remove if which == "block" else moderation.allow_remove)(conn, caller.guild, entry)
    if not removed:
        return f"`{_plain(entry.strip())}` is not on this server's {which} list; nothing changed."
    audit.record(conn, caller.guild, caller.user, f"moderation {which} remove", "", entry.strip())
    return f"`{_plain(entry.strip())}` is off the {which} list."


def set_policy(conn: redis.Redis, caller: Caller, changes: dict[str, object]) -> str:
    """Show the policy (no changes), or change some settings; minutes are turned into seconds here."""
    given = {name: value for name, value in changes.items() if value is not None}
    for name in ("strike_window_minutes", "suspension_minutes"):
        if name in given:
            minutes = given.pop(name)
            if not isinstance(minutes, int) or minutes < 1:
                raise AdminInputError(f"{name.replace('_', ' ')} must be a whole number of minutes, at least 1.")
            given[name.replace("_minutes", "_s")] = minutes * 60
    if given:
        moderation.set_policy(conn, caller.guild, **given)
        detail = ", ".join(f"{name}={value}" for name, value in sorted(given.items()))
        audit.record(conn, caller.guild, caller.user, "moderation policy", "", detail[:300])
    policy = moderation.load_policy(conn, caller.guild)
    head = "**Moderation policy updated**" if given else "**Moderation policy**"
    return "\n".join([
        head,
        f"NSFW: {policy.nsfw} (age-restricted: mature terms allowed only in channels Discord marks age-restricted)",
        f"Flagged images: {policy.flagged_action}",
        f"Safety negative prompt (outside age-restricted channels): {_plain(policy.safety_negative) or 'none'}",
        f"Strikes: {policy.strike_limit} blocked prompts in {policy.strike_window_s // 60} min suspend for "
        f"{policy.suspension_s // 60} min",
        f"Languages whose ordinary words stay allowed: {policy.languages or 'none'} "
        f"(available: {', '.join(moderation.language_codes())})",
    ])


def set_log(
    conn: redis.Redis, caller: Caller, channel: str | None, problem: str, missing: list[str], checked: bool, off: bool
) -> str:
    """Show, choose or turn off the moderation log channel; refuse one the bot can't post in (`missing`)."""
    if off:
        moderation.set_log_channel(conn, caller.guild, None)
        audit.record(conn, caller.guild, caller.user, "moderation log", "", "off")
        return "The moderation log is off: notices go only to the audit log (`/admin audit`)."
    if channel is None:
        policy = moderation.load_policy(conn, caller.guild)
        where = f"<#{policy.log_channel}>" if policy.log_channel else "no channel (`/admin moderation log #channel`)"
        return f"Moderation log: {where}" + (f"\nProblem: {policy.log_failure}" if policy.log_failure else "")
    if problem:
        raise AdminInputError(problem)
    moderation.set_log_channel(conn, caller.guild, channel, missing=missing)  # AdminInputError names what is missing
    audit.record(conn, caller.guild, caller.user, "moderation log", f"channel {channel}")
    note = "" if checked else (" I could not check my permissions there: if a notice can't be posted, "
                               "`/admin moderation status` will say so.")
    return f"Moderation notices (blocked prompts, flagged images) now go to <#{channel}>.{note}"


def suspend(
    conn: redis.Redis, caller: Caller, admins: AdminSettings, who: Target, minutes: float | None
) -> str:
    """Suspend a member from the bot (default: the policy's suspension length); admins cannot be."""
    if not who.is_member:
        raise AdminInputError(f"{who.mention} is not a member of this server.")
    if admin_ops.is_admin(who.user, who.role_ids, who.manage_guild, admins):
        raise AdminInputError(f"{who.mention} is an admin (Manage Server or an admin role): remove that first.")
    if minutes is not None and not minutes > 0:
        raise AdminInputError(f"A suspension lasts a positive number of minutes, not {minutes:g}.")
    seconds = round(minutes * 60) if minutes is not None else moderation.load_policy(conn, caller.guild).suspension_s
    until = moderation.suspend(conn, caller.guild, who.user, seconds=seconds, now=time.time())
    audit.record(conn, caller.guild, caller.user, "moderation suspend", who.user, f"until {int(until)}")
    return f"{who.mention} is suspended from creating images here until <t:{int(until)}:f> (`/admin moderation lift`)."


def lift(conn: redis.Redis, caller: Caller, who: Target) -> str:
    """Lift a member's suspension and forget their strikes."""
    if not moderation.lift(conn, caller.guild, who.user):
        return f"{who.mention} was not suspended; their strikes are cleared."
    audit.record(conn, caller.guild, caller.user, "moderation lift", who.user)
    return f"{who.mention} may create images again; their strikes are cleared."


def status(conn: redis.Redis, caller: Caller) -> str:
    """The policy, lists, log channel (and any problem posting there) and the workers' image safety classifiers."""
    return "\n".join(["**Moderation**", *moderation.status_lines(conn, caller.guild, now=time.time())])


def _plain(text: str) -> str:
    """Text safe inside inline code."""
    return text.replace("`", "\u02cb")


# -- Discord side -------------------------------------------------------------------------------------------------


def bot_permissions(
    interaction: discord.Interaction, channel: app_commands.AppCommandChannel | app_commands.AppCommandThread
) -> discord.Permissions | None:
    """The bot's permissions in `channel`: Discord's own figure for the interaction's channel (`app_permissions`),
    else computed from the cached guild (roles and overwrites); None when neither is at hand."""
    if channel.id == interaction.channel_id:
        return interaction.app_permissions
    resolved = channel.resolve()
    guild = interaction.guild
    me = guild.me if guild is not None else None
    if resolved is None or me is None:
        return None
    return resolved.permissions_for(me)


@group.command(name="block", description="Add, remove or list blocked words and phrases")
@app_commands.describe(action="add, remove or list", entry="a word or phrase (not a pattern)")
async def block(
    interaction: discord.Interaction, action: Literal["add", "remove", "list"], entry: str | None = None
) -> None:
    await answer(interaction, f"moderation block {action}", edit_list, "block", action, entry)


@group.command(name="allow", description="Add, remove or list allowed words (false positives, place names)")
@app_commands.describe(action="add, remove or list", entry="a word or phrase (not a pattern)")
async def allow(
    interaction: discord.Interaction, action: Literal["add", "remove", "list"], entry: str | None = None
) -> None:
    await answer(interaction, f"moderation allow {action}", edit_list, "allow", action, entry)


@group.command(name="policy", description="Show or change the NSFW policy, image action and strikes")
@app_commands.describe(
    nsfw="age-restricted: mature terms only in age-restricted channels; strict: nowhere",
    flagged="what happens to an image the safety check flags",
    safety_negative="negative prompt added outside age-restricted channels (`none` clears)",
    strike_limit="blocked prompts within the window that suspend a member",
    strike_window_minutes="the window, in minutes",
    suspension_minutes="how long that suspension lasts, in minutes",
    languages="codes of languages your members write, whose ordinary words stay allowed (e.g. sv: sex = six); none",
)
async def policy(
    interaction: discord.Interaction,
    nsfw: Literal["age-restricted", "strict"] | None = None,
    flagged: Literal["blur", "withhold"] | None = None,
    safety_negative: str | None = None,
    strike_limit: int | None = None,
    strike_window_minutes: int | None = None,
    suspension_minutes: int | None = None,
    languages: str | None = None,
) -> None:
    negative = "" if safety_negative is not None and safety_negative.strip().lower() == "none" else safety_negative
    spoken = "" if languages is not None and languages.strip().lower() == "none" else languages
    changes: dict[str, object] = {
        "nsfw": nsfw, "flagged_action": flagged, "safety_negative": negative, "strike_limit": strike_limit,
        "strike_window_minutes": strike_window_minutes, "suspension_minutes": suspension_minutes,
        "languages": spoken,
    }
    await answer(interaction, "moderation policy", set_policy, changes)


@group.command(name="log", description="Show, choose or turn off the moderation log channel")
@app_commands.describe(channel="where notices of blocked prompts and flagged images go", off="turn the log off")
async def log(
    interaction: discord.Interaction, channel: LogChannel | None = None, off: bool = False
) -> None:
    channel_id, problem, missing, checked = None, "", [], True
    if channel is not None:
        channel_id = str(channel.id)
        if channel.type not in LOG_CHANNEL_TYPES:
            problem = f"<#{channel.id}> is not a text channel: choose one where messages can be posted."
        permissions = bot_permissions(interaction, channel)
        checked = permissions is not None
        if permissions is not None:
            needed = NEEDED_IN_THREAD if isinstance(channel, app_commands.AppCommandThread) else NEEDED
            missing = [name for attr, name in needed if not getattr(permissions, attr)]
    await answer(interaction, "moderation log", set_log, channel_id, problem, missing, checked, off)


@group.command(name="suspend", description="Suspend a member from creating images (default: the policy's length)")
@app_commands.describe(member="the member", minutes="how long; default: the policy's suspension length")
async def suspend_member(interaction: discord.Interaction, member: discord.User, minutes: float | None = None) -> None:
    await answer(interaction, "moderation suspend", suspend, bot_of(interaction).admins, target(member), minutes)


@group.command(name="lift", description="Lift a member's suspension and clear their strikes")
async def lift_member(interaction: discord.Interaction, member: discord.User) -> None:
    await answer(interaction, "moderation lift", lift, target(member))


@group.command(name="status", description="Policy, lists, log channel and the image safety check in use")
async def show_status(interaction: discord.Interaction) -> None:
    await answer(interaction, "moderation status", status)
