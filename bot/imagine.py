"""`/imagine`: the command. The flow it runs (parse, screen, admit, acknowledge, start jobs) is `bot.submit`'s."""

from __future__ import annotations

import discord
from discord import Interaction, app_commands
from discord.ext import commands

from bot import errors, images, submit
from bot.client import ImagineBot


class Imagine(commands.Cog):
    """The `/imagine` command."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="imagine", description="Create images from a prompt")
    @app_commands.describe(prompt="what to imagine, then --parameters (e.g. --ar 16:9 --seed 7)",
                           image="an image to start from (an image prompt, weighed by --iw)")
    async def imagine(self, interaction: Interaction, prompt: str, image: discord.Attachment | None = None) -> None:
        async with errors.answer_within():  # Redis hanging: "try again" inside Discord's 3 s
            if image is not None:  # an image prompt: its link goes first, as if typed
                prompt = f"{images.attachment_link(image, self.bot.image_rules)} {prompt}"
            admitted, specs = await submit.admit_prompt(self.bot, interaction, prompt)  # refusals: bot.errors answers
        await submit.start_admitted(self.bot, interaction, admitted, specs)


async def setup(bot: commands.Bot) -> None:
    assert isinstance(bot, ImagineBot)
    await bot.add_cog(Imagine(bot))
