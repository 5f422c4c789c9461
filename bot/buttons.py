"""The buttons under a result: persistent `DynamicItem`s whose `custom_id` (core.buttons.TEMPLATE) is their state;
and what some of them open first: Vary (Region)'s menu of regions, and the prompt to edit (Remix mode, Vary (Region)).
"""

from __future__ import annotations

import re
from typing import Any

import discord
from discord.ext import commands

from bot import errors, submit
from bot.client import ImagineBot
from bot.tree import mend_select
from core import buttons
from core.buttons import ButtonRef
from core.canvas import REGIONS

_ACTIONS = "|".join(buttons.ACTIONS)
assert f"(?P<act>{_ACTIONS})" in buttons.TEMPLATE, "core.buttons.TEMPLATE changed shape"


def template_of(*actions: str) -> str:
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


class UpscaleButton(JobButton, template=template_of("u")):
    """U1-U4: image k at full size."""


class VaryButton(JobButton, template=template_of("v")):
    """V1-V4: a new grid of variations of image k."""


class VaryImageButton(JobButton, template=template_of("strong", "subtle")):
    """Vary (Strong) / Vary (Subtle) under a single image."""


class Upscale2xButton(JobButton, template=template_of("up2x")):
    """Upscale (2x) under a single image."""


class RerollButton(JobButton, template=template_of("reroll")):
    """Re-roll: the same prompt with a new seed."""


class EditButton(JobButton, template=template_of(*buttons.EDIT_ACTIONS, "zoomc")):
    """Zoom Out 2x / 1.5x, Custom Zoom, Make Square and the four pans under a single image: a new grid of the
    edited image (Custom Zoom first asks for its prompt and `--zoom`)."""


class VaryRegionButton(JobButton, template=template_of("region")):
    """Vary (Region): answers with a menu of regions, seen only by the clicker; nothing is read or charged yet."""

    async def callback(self, interaction: discord.Interaction) -> None:
        bot = interaction.client
        assert isinstance(bot, ImagineBot)
        index = max(self.ref.index, 1)
        view = discord.ui.View(timeout=None)
        view.add_item(RegionSelect(self.ref.job_id, index))
        web = bot.job_settings.web_url.rstrip("/")
        if web:  # the web app's editor, where a region is drawn freely (IMAGINE_WEB_URL)
            view.add_item(discord.ui.Button(label="Draw the region on the web", emoji="🖌️",
                                            url=f"{web}/jobs/{self.ref.job_id}/region?index={index}"))
        await interaction.response.send_message(REGION_QUESTION, view=view, ephemeral=True)


REGION_QUESTION = "**Vary (Region)**: which part of the image should change? Then say what it should show."


class RegionSelect(discord.ui.DynamicItem[discord.ui.Select], template=buttons.REGION_TEMPLATE):
    """Vary (Region)'s menu: the chosen region opens the prompt (`PromptModal`), then the job is admitted."""

    def __init__(self, job_id: str, index: int) -> None:
        options = [discord.SelectOption(label=label, value=name) for name, (label, _) in REGIONS.items()]
        super().__init__(discord.ui.Select(custom_id=buttons.region_select_id(job_id, index), options=options,
                                           placeholder="Choose the region to redraw"))
        self.ref = ButtonRef("region", index, job_id)

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> RegionSelect:
        mend_select(interaction)
        return cls(match["job"], int(match["index"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        bot = interaction.client
        assert isinstance(bot, ImagineBot)
        try:
            data: dict[str, Any] = dict(interaction.data or {})
            values = data.get("values") or [""]
            await click(bot, interaction, self.ref, region=str(values[0]))
        except Exception as exc:  # a DynamicItem's errors never reach tree.on_error
            await bot.report(interaction, exc)


PROMPT_INPUT_MAX_CHARS = 4000
"""Discord's longest text input in a modal."""

MODAL_TIMEOUT_S = 15 * 60
"""How long an opened prompt waits for its submit (an interaction's token lives as long). Open prompts live in this
process: after a bot restart, a submit of one opened before gets Discord's "interaction failed"; clicking again
opens it anew."""


class PromptModal(discord.ui.Modal):
    """The prompt of a click's job, to edit before it starts: Remix mode, and Vary (Region)'s "what should it show"."""

    def __init__(self, ref: ButtonRef, prompt: str, region: str = "") -> None:
        title = f"Vary (Region): {REGIONS[region][0].lower()}" if region else \
            "Custom Zoom: --zoom 1 to 2, --ar may change" if ref.action == "zoomc" else "Remix"
        super().__init__(title=title[:45], timeout=MODAL_TIMEOUT_S)
        self.ref, self.region = ref, region
        self.prompt: discord.ui.TextInput = discord.ui.TextInput(
            label="Prompt", style=discord.TextStyle.paragraph, default=prompt[:PROMPT_INPUT_MAX_CHARS],
            max_length=PROMPT_INPUT_MAX_CHARS)
        self.add_item(self.prompt)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        bot = interaction.client
        assert isinstance(bot, ImagineBot)
        try:
            await click(bot, interaction, self.ref, prompt=self.prompt.value, region=self.region)
        except Exception as exc:
            await bot.report(interaction, exc)


DYNAMIC_ITEMS: tuple[type[JobButton], ...] = (
    UpscaleButton, VaryButton, VaryImageButton, Upscale2xButton, RerollButton, EditButton, VaryRegionButton,
)  # fmt: skip


ALL_ITEMS: tuple[type[discord.ui.DynamicItem[Any]], ...] = (*DYNAMIC_ITEMS, RegionSelect)
"""Every persistent item of this module: the buttons and Vary (Region)'s menu."""


async def click(
    bot: ImagineBot, interaction: discord.Interaction, ref: ButtonRef, *, prompt: str | None = None, region: str = ""
) -> None:
    """Read the parent job, admit the job the button asks for, acknowledge with a "thinking" message, start it; or,
    in Remix mode and for Vary (Region), first open its prompt for editing (`prompt` is what came back)."""
    async with errors.answer_within():  # Redis hanging: "try again" inside Discord's 3 s
        answer = await submit.admit_click(bot, interaction, ref, prompt=prompt, region=region)  # refusals: ephemeral
    if isinstance(answer, submit.Remix):
        await interaction.response.send_modal(PromptModal(ref, answer.prompt, region))
        return
    admitted, job = answer
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
    bot.add_dynamic_items(*ALL_ITEMS)


async def teardown(bot: commands.Bot) -> None:
    bot.remove_dynamic_items(*ALL_ITEMS)
