"""Fixtures for the emulator's own tests: the emulator and a tiny discord.py bot with an /imagine-like tree."""

from tests.discord_emulator.fixtures import discord_emulator  # noqa: F401
