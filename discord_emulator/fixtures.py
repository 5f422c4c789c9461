"""Pytest fixtures and helpers that run the real discord.py client against the emulator.

Use them from a conftest.py: `from discord_emulator.fixtures import discord_emulator  # noqa: F401`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import discord
import discord.gateway
import discord.http
import pytest
import yarl

from discord_emulator.control import ControlledEmulator
from discord_emulator.server import DiscordEmulator

READY_TIMEOUT_S = 5.0
GUILD_READY_TIMEOUT_S = 0.05
"""What tests pass as discord.py's `guild_ready_timeout`: on_ready fires this long after the last GUILD_CREATE."""


@contextlib.contextmanager
def route_discord_py(emu: DiscordEmulator) -> Iterator[None]:
    """Point discord.py's REST base and default gateway at the emulator, restoring both afterwards."""
    saved = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = emu.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(emu.ws_url)
    try:
        yield
    finally:
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved


@contextlib.asynccontextmanager
async def running_client(
    emu: DiscordEmulator, client: discord.Client, *, token: str | None = None, timeout: float = READY_TIMEOUT_S
) -> AsyncIterator[discord.Client]:
    """Log the client in, connect it and wait for on_ready; close it on exit. Login/connect errors propagate."""
    with route_discord_py(emu):
        await client.login(token or emu.token)
        connection = asyncio.create_task(client.connect())
        ready = asyncio.create_task(client.wait_until_ready())
        try:
            done, _ = await asyncio.wait({connection, ready}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if connection in done:
                connection.result()
                raise RuntimeError("discord.py's connect() returned before on_ready")
            if not done:
                raise TimeoutError(f"discord.py was not ready after {timeout}s")
            yield client
        finally:
            ready.cancel()
            await client.close()
            with contextlib.suppress(asyncio.CancelledError, discord.ConnectionClosed):
                await asyncio.wait_for(connection, timeout)


@pytest.fixture
async def discord_emulator() -> AsyncIterator[DiscordEmulator]:
    """A fresh emulator (with its control endpoint) on a free port for one test."""
    async with ControlledEmulator() as emu:
        yield emu
