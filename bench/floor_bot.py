"""The floor of `python -m bench interactions`: a bare discord.py bot whose `/imagine` defers at once, nothing else.

`python -m bench.floor_bot`, with DISCORD_TOKEN, DISCORD_API_BASE, DISCORD_GATEWAY_URL and DEV_GUILD_ID as for
`python -m bot`. Whatever acknowledgement latency it shows is discord.py's and the machine's, not ours.
"""

from __future__ import annotations

import logging

import discord
import discord.gateway
import discord.http
import yarl
from discord import app_commands

from core.settings import DiscordSettings


class FloorBot(discord.Client):
    """/imagine prompt: defer, and that is all."""

    def __init__(self, guild_id: int | None) -> None:
        super().__init__(intents=discord.Intents.default())
        self.guild = discord.Object(guild_id) if guild_id else None
        self.tree = app_commands.CommandTree(self)
        self.tree.command(name="imagine", description="Defer and do nothing")(self.imagine)

    async def setup_hook(self) -> None:
        if self.guild is not None:
            self.tree.copy_global_to(guild=self.guild)
        await self.tree.sync(guild=self.guild)

    async def imagine(self, interaction: discord.Interaction, prompt: str) -> None:
        await interaction.response.defer()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = DiscordSettings()
    if settings.discord_token is None:
        raise SystemExit("floor_bot: DISCORD_TOKEN is not set")
    discord.http.Route.BASE = settings.discord_api_base.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)
    FloorBot(settings.dev_guild_id).run(settings.discord_token.get_secret_value(), log_handler=None)


if __name__ == "__main__":
    main()
