"""Fixtures for the emulator's own tests: the emulator, and the tiny bot connected to it with its commands synced."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from discord_emulator import DiscordEmulator
from discord_emulator.fixtures import discord_emulator, running_client  # noqa: F401
from tests.discord_emulator_tests.tiny_bot import TinyBot


@pytest.fixture
async def bot(discord_emulator: DiscordEmulator) -> AsyncIterator[TinyBot]:  # noqa: F811
    """The tiny bot, ready, with its global commands synced."""
    client = TinyBot()
    async with running_client(discord_emulator, client):
        await client.tree.sync()
        yield client
