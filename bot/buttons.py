"""The buttons under a result: persistent `DynamicItem`s whose `custom_id` (core.buttons.TEMPLATE) is their state."""

from __future__ import annotations

import re
from typing import Any

import discord
from discord.ext import commands

from bot import errors, submit
from bot.client import ImagineBot
from core import buttons
from core.buttons import ButtonRef

_ACTIONS = "|".join(buttons.ACTIONS)
assert f"(?P<act>{_ACTIONS})" in buttons.TEMPLATE, "core.buttons.TEMPLATE changed shape"


def _template(*actions: str) -> str:
    """core.buttons.TEMPLATE narrowed to some actions."""
    return buttons.TEMPLATE.replace(f"(?P<act>{_ACTIONS})", f"(?P<act>{'|'.join(actions)})")


class JobButton(discord.ui.DynamicItem[discord.ui.Button], template=buttons.TEMPLATE):
    """A button under a job's result; a click becomes a new job charged to whoever clicked (subclasses: per action)."""

    def __init__(self, ref: ButtonRef, *, label: str | None = None, emoji: str | None = None, row: int | None = None):
        button: discord.ui.Button = discord.ui.Button(
            style=discord.ButtonStyle.secondary,
            custom_id=buttons.custom_id(ref.action, ref.job_id, ref.index),
            label=label,
            emoji=emoji,
            row=row,
        )
        super().__init__(button)
        self.ref = ref

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> JobButton:
        return cls(ButtonRef(match["act"], int(match["index"]), match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        bot = interaction.client
        assert isinstance(bot, ImagineBot)
        try:
            await click(bot, interaction, self.ref)
        except Exception as exc:  # a DynamicItem's errors never reach tree.on_error
            await bot.report(interaction, exc)


class UpscaleButton(JobButton, template=_template("u")):
    """U1-U4: image k at full size."""


class VaryButton(JobButton, template=_template("v")):
    """V1-V4: a new grid of variations of image k."""


class VaryImageButton(JobButton, template=_template("strong", "subtle")):
    """Vary (Strong) / Vary (Subtle) under a single image."""


class Upscale2xButton(JobButton, template=_template("up2x")):
    """Upscale (2x) under a single image."""


class RerollButton(JobButton, template=_template("reroll")):
    """Re-roll: the same prompt with a new seed."""


class EditButton(JobButton, template=_template(*buttons.EDIT_ACTIONS)):
    """Zoom Out 2x / 1.5x, Make Square and the four pans under a single image: a new grid of the edited image."""


DYNAMIC_ITEMS: tuple[type[JobButton], ...] = (
    UpscaleButton, VaryButton, VaryImageButton, Upscale2xButton, RerollButton, EditButton,
)  # fmt: skip


async def click(bot: ImagineBot, interaction: discord.Interaction, ref: ButtonRef) -> None:
    """Read the parent job, admit the job the button asks for, acknowledge with a "thinking" message, start it."""
    async with errors.answer_within():  # Redis hanging: "try again" inside Discord's 3 s
        admitted, job = await submit.admit_click(bot, interaction, ref)  # refusals before acknowledging: ephemeral
    await submit.start_admitted(bot, interaction, admitted, [job.spec], label=job.label, kind=job.kind,
                                source=job.source)


def view_for(components: list[dict[str, Any]]) -> discord.ui.View:
    """A persistent view with the same buttons as core.buttons' raw components (for the bot's own messages)."""
    view = discord.ui.View(timeout=None)
    for row, action_row in enumerate(components):
        for raw in action_row["components"]:
            ref = buttons.parse(raw["custom_id"])
            if ref is None:
                continue
            cls = next(c for c in DYNAMIC_ITEMS if c.__discord_ui_compiled_template__.fullmatch(raw["custom_id"]))
            emoji = raw.get("emoji", {}).get("name")
            view.add_item(cls(ref, label=raw.get("label"), emoji=emoji, row=row))
    return view


async def setup(bot: commands.Bot) -> None:
    """Register the buttons, so a click on any message the bot or a worker ever posted is routed here."""
    bot.add_dynamic_items(*DYNAMIC_ITEMS)


async def teardown(bot: commands.Bot) -> None:
    bot.remove_dynamic_items(*DYNAMIC_ITEMS)
