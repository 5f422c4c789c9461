"""A user's own things: `/info`, `/settings` (and its selects), `/prefer remix`, `/fast`, `/relax`, `/subscribe`,
`/cancel`, `/show`.
What they do with jobs is `bot.myjobs`'; the settings' choices and their check are here."""

from __future__ import annotations

import io
import re
from typing import Any

import discord
import redis
from discord import app_commands
from discord.ext import commands

import moderation
import quotas
from bot import errors, myjobs, screening
from bot.buttons import view_for
from bot.client import ImagineBot
from bot.members import owner_of, place, who
from bot.tree import mend_select
from core import prompt, usersettings
from core.errors import ImagineError
from core.models import ModelRegistry

ASPECTS = ("1:1", "2:3", "3:2", "4:5", "5:4", "3:4", "4:3", "16:9", "9:16", "21:9")
"""The `--ar` choices `/settings` offers."""

STYLIZE = {"50": "low (50)", "100": "med (100)", "250": "high (250)", "750": "very high (750)"}
"""The `--stylize` choices `/settings` offers, as Midjourney's buttons."""

RESET = "default"
"""Select value that forgets a saved default."""

SETTINGS_TEMPLATE = r"imagine:settings:(?P<name>mode|ar|stylize|model|remix)"

SETTING_ROWS = ("mode", "ar", "stylize", "model", "remix")
"""The `/settings` selects, one per row (Discord allows five)."""


def choices(name: str, registry: ModelRegistry) -> dict[str, str]:
    """The values a settings select offers -> their labels."""
    if name == "mode":
        return {"fast": "Fast mode", "relax": "Relax mode"}
    if name == "remix":
        return {"off": "Remix mode: off", "on": "Remix mode: on (edit the prompt on V, Vary, Zoom, Pan, re-roll)"}
    if name == "ar":
        return {RESET: "Aspect ratio: default (1:1)", **{a: f"Aspect ratio {a}" for a in ASPECTS}}
    if name == "stylize":
        return {RESET: "Stylize: default (100)", **{v: f"Stylize {label}" for v, label in STYLIZE.items()}}
    if name == "model":
        default = registry.default.name
        return {RESET: f"Model: default ({default})", **{m.name: f"Model {m.name}" for m in registry.models[:24]}}
    raise ValueError(f"no setting {name!r}")


def save_choice(
    conn: redis.Redis, owner: str, name: str, value: str, registry: ModelRegistry, *, guild: str = "dm",
    channel_nsfw: bool = False,
) -> usersettings.UserSettings:
    """Store one select's choice, refusing values the select never offered (custom_ids can be forged) and defaults
    the guild's block list covers (`bot.screening.check_default`)."""
    if value not in choices(name, registry):
        raise ImagineError(f"{value!r} is not a choice for {name}")
    if name not in ("mode", "remix") and value != RESET:
        moderation.check_default(conn, guild, name, value, channel_nsfw=channel_nsfw)
    if name == "mode":
        usersettings.set_mode(conn, owner, value)
    elif name == "remix":
        usersettings.set_remix(conn, owner, value == "on")
    else:
        usersettings.set_default(conn, owner, name, None if value == RESET else value)
    return usersettings.get(conn, owner)


def settings_text(saved: usersettings.UserSettings) -> str:
    defaults = " ".join(f"--{k} {v}" for k, v in sorted(saved.defaults.items())) or "none"
    remix = "on" if saved.remix else "off"
    return (f"**Your settings** - mode: **{saved.mode}**, remix: **{remix}**, defaults: {defaults}\n"
            "Parameters in a prompt always win.")


class SettingSelect(discord.ui.DynamicItem[discord.ui.Select], template=SETTINGS_TEMPLATE):
    """One `/settings` select; its custom_id names the setting, so it works after restarts."""

    def __init__(self, name: str, registry: ModelRegistry, current: str = "", row: int | None = None) -> None:
        options = [
            discord.SelectOption(label=label, value=value, default=value == current)
            for value, label in choices(name, registry).items()
        ]
        super().__init__(discord.ui.Select(custom_id=f"imagine:settings:{name}", options=options, row=row))
        self.name = name

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> SettingSelect:
        assert isinstance(interaction.client, ImagineBot)
        mend_select(interaction)
        return cls(match["name"], interaction.client.registry)

    async def callback(self, interaction: discord.Interaction) -> None:
        bot = interaction.client
        assert isinstance(bot, ImagineBot)
        try:
            data: dict[str, Any] = dict(interaction.data or {})
            values = data.get("values") or [RESET]
            owner = owner_of(interaction.user.id)
            saved = await bot.redis_call(save_choice, owner, self.name, str(values[0]), bot.registry,
                                         guild=screening.guild_of(interaction),
                                         channel_nsfw=screening.channel_nsfw(interaction))
            await interaction.response.edit_message(content=settings_text(saved), view=settings_view(saved, bot))
        except Exception as exc:  # a DynamicItem's errors never reach tree.on_error
            await bot.report(interaction, exc)


DYNAMIC_ITEMS = (SettingSelect,)


def settings_view(saved: usersettings.UserSettings, bot: ImagineBot) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    current = {"mode": saved.mode, "remix": "on" if saved.remix else "off",
               **{n: saved.defaults.get(n, RESET) for n in usersettings.DEFAULT_NAMES}}
    for row, name in enumerate(SETTING_ROWS):
        view.add_item(SettingSelect(name, bot.registry, current[name], row=row))
    return view


class Account(commands.Cog):
    """Commands about the user's own settings and jobs."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="info", description="Your tier, fast time left, mode, queued and running jobs")
    async def info(self, interaction: discord.Interaction) -> None:
        async with errors.answer_within():  # reads only: past it, "try again" inside Discord's 3 s
            tier = await self.bot.redis_call(quotas.tier_lines, self.bot.tiers, who(interaction))
            text = await self.bot.redis_call(myjobs.info_text, owner_of(interaction.user.id))
        await interaction.response.send_message("\n".join([*tier, text]), ephemeral=True)

    @app_commands.command(name="subscribe", description="How to get a higher tier on this server")
    async def subscribe(self, interaction: discord.Interaction) -> None:
        async with errors.answer_within():
            text = await self.bot.redis_call(quotas.subscribe_text, self.bot.tiers, who(interaction))
        await interaction.response.send_message(text, ephemeral=True)

    @app_commands.command(name="settings", description="Your default mode, aspect ratio, stylize and model")
    async def settings(self, interaction: discord.Interaction) -> None:
        async with errors.answer_within():
            saved = await self.bot.redis_call(usersettings.get, owner_of(interaction.user.id))
        await interaction.response.send_message(
            settings_text(saved), view=settings_view(saved, self.bot), ephemeral=True
        )

    prefer = app_commands.Group(name="prefer", description="Your preferences: Remix mode, a suffix, custom options")
    option = app_commands.Group(name="option", description="Custom --options that stand for parameters",
                                parent=prefer)

    @prefer.command(name="suffix", description="Text added to the end of every prompt you write")
    @app_commands.describe(text="e.g. --ar 16:9 --stylize 250; leave out to remove your suffix")
    async def prefer_suffix(self, interaction: discord.Interaction, text: str = "") -> None:
        saved = await self.bot.redis_call(usersettings.set_suffix, owner_of(interaction.user.id), text)
        await interaction.response.send_message(
            f"Every prompt of yours now ends with `{saved}`." if saved else "Your suffix is removed.", ephemeral=True)

    @option.command(name="set", description="Make --name stand for the text you give")
    @app_commands.describe(name="the option's name, used as --name", value="what it stands for, e.g. --ar 16:9")
    async def option_set(self, interaction: discord.Interaction, name: str, value: str) -> None:
        name, value = prompt.check_option(name, value, self.bot.registry)  # PromptError: answered ephemerally
        await self.bot.redis_call(usersettings.set_option, owner_of(interaction.user.id), name, value)
        await interaction.response.send_message(f"`--{name}` now stands for `{value}`.", ephemeral=True)

    @option.command(name="list", description="Your custom options and your suffix")
    async def option_list(self, interaction: discord.Interaction) -> None:
        saved = (await self.bot.redis_call(usersettings.get, owner_of(interaction.user.id))).preferences
        lines = [f"`--{name}` = `{value}`" for name, value in sorted(saved.options.items())] or ["No custom options."]
        if saved.suffix:
            lines.append(f"Suffix: `{saved.suffix}`")
        await interaction.response.send_message("\n".join(lines), ephemeral=True)

    @option.command(name="delete", description="Forget a custom option")
    @app_commands.describe(name="the option's name")
    async def option_delete(self, interaction: discord.Interaction, name: str) -> None:
        gone = await self.bot.redis_call(usersettings.delete_option, owner_of(interaction.user.id), name)
        shown = name.strip().lower().removeprefix("--")[:40]
        await interaction.response.send_message(
            f"`--{shown}` is forgotten." if gone else f"You have no option `--{shown}`.", ephemeral=True)

    @prefer.command(name="remix", description="Remix mode on or off: edit the prompt on V, Vary, Zoom, Pan, re-roll")
    async def prefer_remix(self, interaction: discord.Interaction) -> None:
        on = await self.bot.redis_call(usersettings.toggle_remix, owner_of(interaction.user.id))
        text = ("Remix mode is **on**: V, Vary, Zoom, Pan and re-roll first open the prompt for you to edit."
                if on else "Remix mode is **off**.")
        await interaction.response.send_message(text, ephemeral=True)

    @app_commands.command(name="fast", description="Run your next jobs in fast mode")
    async def fast(self, interaction: discord.Interaction) -> None:
        await self._mode(interaction, "fast")

    @app_commands.command(name="relax", description="Run your next jobs in relax mode")
    async def relax(self, interaction: discord.Interaction) -> None:
        await self._mode(interaction, "relax")

    async def _mode(self, interaction: discord.Interaction, mode: str) -> None:
        await self.bot.redis_call(quotas.check_mode, self.bot.tiers, who(interaction), mode)
        await self.bot.redis_call(usersettings.set_mode, owner_of(interaction.user.id), mode)
        await interaction.response.send_message(f"Your jobs now run in **{mode}** mode.", ephemeral=True)

    @app_commands.command(name="stealth", description="Make your next images private on the web gallery")
    async def stealth(self, interaction: discord.Interaction) -> None:
        await self.bot.redis_call(quotas.check_stealth, self.bot.tiers, who(interaction))
        await self.bot.redis_call(usersettings.set_stealth, owner_of(interaction.user.id), True)
        await interaction.response.send_message(
            "Stealth mode is **on**: your next images are private on the web gallery (you and this server's admins "
            "see them). In Discord they are posted as always.", ephemeral=True)

    @app_commands.command(name="public", description="Make your next images public on the web gallery")
    async def public(self, interaction: discord.Interaction) -> None:
        await self.bot.redis_call(usersettings.set_stealth, owner_of(interaction.user.id), False)
        await interaction.response.send_message(
            "Public mode is **on**: your next images can be seen on the web gallery by this server's members.",
            ephemeral=True)

    @app_commands.command(name="cancel", description="Cancel your latest queued or running job (or the one named)")
    @app_commands.describe(job_id="the job to cancel; default: your latest queued or running job")
    async def cancel(self, interaction: discord.Interaction, job_id: str | None = None) -> None:
        permissions = interaction.permissions
        admin = permissions.manage_guild or permissions.administrator
        owner = owner_of(interaction.user.id)
        text = await self.bot.redis_call(myjobs.cancel_job, owner, job_id, admin=admin)
        await interaction.response.send_message(text, ephemeral=True)

    @app_commands.command(name="show", description="Post a job's result again, with its buttons")
    @app_commands.describe(job_id="the job id (shown by /info)")
    async def show(self, interaction: discord.Interaction, job_id: str) -> None:
        async with errors.answer_within():
            where = place(interaction, self.bot.admins)
            shown = await self.bot.redis_call(myjobs.show, job_id, where, self.bot.registry)
        await interaction.response.send_message(
            shown.content,
            file=discord.File(io.BytesIO(shown.image), shown.filename),
            view=view_for(shown.components),
            allowed_mentions=discord.AllowedMentions.none(),
        )


async def setup(bot: commands.Bot) -> None:
    assert isinstance(bot, ImagineBot)
    bot.add_dynamic_items(*DYNAMIC_ITEMS)
    await bot.add_cog(Account(bot))


async def teardown(bot: commands.Bot) -> None:
    bot.remove_dynamic_items(*DYNAMIC_ITEMS)
