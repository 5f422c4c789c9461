"""A tiny discord.py bot shaped like /imagine: defer, progress edit, final edit with a grid file and U buttons."""

from __future__ import annotations

import io
from typing import Any

import discord
from discord import app_commands

from discord_emulator.fixtures import GUILD_READY_TIMEOUT_S

GRID_PNG = b"\x89PNG\r\n\x1a\n" + b"emulated-grid" * 8
"""Bytes the bot uploads as its grid (the emulator stores and serves them; it does not decode images)."""
JOB_ID = "abc123"


class Upscale(discord.ui.DynamicItem[discord.ui.Button], template=r"imagine:u(?P<i>[1-4]):(?P<job>[0-9a-f]+)"):
    """A U button whose state lives in its custom_id, so it survives a bot restart."""

    def __init__(self, i: int, job: str) -> None:
        super().__init__(discord.ui.Button(label=f"U{i}", custom_id=f"imagine:u{i}:{job}"))
        self.i, self.job = i, job

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: Any) -> Upscale:
        return cls(int(match["i"]), match["job"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer()
        original = await interaction.original_response()
        interaction.client.seen.append(("upscale", self.i, self.job, original.id))  # type: ignore[attr-defined]
        await interaction.edit_original_response(content=f"{original.content} (U{self.i} requested)")


def grid_view(job: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for i in (1, 2):
        view.add_item(Upscale(i, job))
    return view


class TinyBot(discord.Client):
    """discord.Client with a command tree: /imagine, /secret; `seen` records what the handlers saw."""

    def __init__(self) -> None:
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=GUILD_READY_TIMEOUT_S)
        self.tree = app_commands.CommandTree(self)
        self.seen: list[tuple[Any, ...]] = []
        self.tree.command(name="imagine", description="Render a prompt")(self.imagine)
        self.tree.command(name="secret", description="Reply only to the caller")(self.secret)

    async def setup_hook(self) -> None:
        self.add_dynamic_items(Upscale)

    async def on_ready(self) -> None:
        self.seen.append(("ready",))

    async def imagine(self, interaction: discord.Interaction, prompt: str) -> None:
        channel = interaction.channel
        self.seen.append(("imagine", prompt, getattr(channel, "nsfw", None)))
        await interaction.response.defer()
        await interaction.edit_original_response(content=f"**{prompt}** - 50%")
        await interaction.edit_original_response(
            content=f"**{prompt}** - done",
            attachments=[discord.File(io.BytesIO(GRID_PNG), "grid.png")],
            view=grid_view(JOB_ID),
        )
        await interaction.followup.send(f"Job {JOB_ID} finished")

    async def secret(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message("only you can see this", ephemeral=True)
