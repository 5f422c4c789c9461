"""`/imagine`: the command. The flow it runs (parse, screen, admit, acknowledge, start jobs) is `bot.submit`'s."""

from __future__ import annotations

from discord import Interaction, app_commands
from discord.ext import commands

from bot import errors, submit
from bot.client import ImagineBot


class Imagine(commands.Cog):
    """The `/imagine` command."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="imagine", description="Create images from a prompt")
    @app_commands.describe(prompt="what to imagine, then --parameters (e.g. --ar 16:9 --seed 7)")
    async def imagine(self, interaction: Interaction, prompt: str) -> None:
        async with errors.answer_within():  # Redis hanging: "try again" inside Discord's 3 s
            admitted, specs = await submit.admit_prompt(self.bot, interaction, prompt)  # refusals: bot.errors answers
        await submit.start_admitted(self.bot, interaction, admitted, specs)


async def setup(bot: commands.Bot) -> None:
    assert isinstance(bot, ImagineBot)
    await bot.add_cog(Imagine(bot))
