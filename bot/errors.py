"""The one place errors become words: user-facing ones as ephemeral replies, the rest logged (never re-raised)."""

from __future__ import annotations

import logging
from typing import Any

import discord
import redis
from discord import app_commands

from bot import screening
from core.errors import ImagineError, PromptBlocked

log = logging.getLogger(__name__)

QUEUE_UNREACHABLE = "The queue is unreachable, try again in a minute."
UNEXPECTED = "Something went wrong on our side; it has been logged. Try again in a minute."


class JobExpired(ImagineError):
    """A button or command names a job whose record (or images) Redis no longer holds."""


class NotYourJob(ImagineError):
    """Someone tried to act on another user's job without Manage Server."""


def user_message(error: BaseException) -> str | None:
    """The words for a user-facing error, or None when it is a bug to log."""
    if isinstance(error, ImagineError):
        return str(error) or type(error).__name__
    if isinstance(error, redis.RedisError):
        return QUEUE_UNREACHABLE
    return None


async def report(interaction: discord.Interaction, error: BaseException) -> None:
    """Answer the interaction ephemerally with what went wrong (a follow-up when it was answered already)."""
    text = user_message(error)
    if text is None:
        log.error("unexpected error handling %s", _describe(interaction), exc_info=error)
        text = UNEXPECTED
    elif isinstance(error, redis.RedisError):
        log.warning("redis unreachable handling %s: %s", _describe(interaction), type(error).__name__)
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except discord.HTTPException as exc:
        log.warning("could not tell the user about an error (%s %s)", exc.status, exc.code)
    if isinstance(error, PromptBlocked):
        screening.post_later(interaction, error.notice)  # after the member's answer, never delaying it


async def on_tree_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
    """`tree.on_error`: unwrap the command's exception and report it."""
    original = error.original if isinstance(error, app_commands.CommandInvokeError) else error
    await report(interaction, original)


def _describe(interaction: discord.Interaction) -> str:
    """Which interaction, for logs: its kind and command or custom_id, never its token."""
    data: dict[str, Any] = dict(interaction.data or {})
    name = interaction.command.name if interaction.command else str(data.get("custom_id", "?"))
    return f"interaction {interaction.id} ({name})"
