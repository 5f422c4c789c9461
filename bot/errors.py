"""The one place errors become words: user-facing ones as ephemeral replies, the rest logged (never re-raised).

The words themselves live with the errors, in `core.errors`. A blocked prompt's moderation-log notice is posted by
whoever reports it (`ImagineBot.report` hands its poster in), after the member has their answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import discord
import redis
from discord import app_commands

from core.errors import QUEUE_UNREACHABLE, UNEXPECTED, ImagineError, PromptBlocked

log = logging.getLogger(__name__)

REPLY_MAX_CHARS = 1000
"""The longest error reply, in code points: half Discord's 2000-character limit on a message, so a reply that
repeats what a member typed (a 6000-character job id, a forged select value) still fits, even in astral characters
(two UTF-16 units each). Past it Discord refuses the reply and the member sees "This interaction failed"."""

ANSWER_DEADLINE_S = 2.0
"""What runs before an interaction's acknowledgement (reads and admission in Redis) gets this long: Discord's 3 s
window less the time to send the answer. Redis's own timeouts and retries (`bot.aredis`) can take longer when a
server hangs instead of refusing (a network cut, a stopped process)."""

NoticePoster = Callable[[discord.Interaction, str], None]
"""Posts a moderation notice for an interaction in the background (`bot.screening.post_notice`, run by the bot)."""


def user_message(error: BaseException) -> str | None:
    """The words for a user-facing error, or None when it is a bug to log."""
    if isinstance(error, ImagineError):
        return str(error) or type(error).__name__
    if isinstance(error, redis.RedisError):
        return QUEUE_UNREACHABLE
    return None


async def report(
    interaction: discord.Interaction, error: BaseException, *, post_notice: NoticePoster | None = None
) -> None:
    """Answer the interaction ephemerally with what went wrong (a follow-up when it was answered already); then hand
    a blocked prompt's notice to `post_notice`, so the moderation log never delays the member's answer."""
    text = user_message(error)
    if text is None:
        log.error("unexpected error handling %s", _describe(interaction), exc_info=error)
        text = UNEXPECTED
    elif isinstance(error, redis.RedisError):
        log.warning("redis unreachable handling %s: %s", _describe(interaction), type(error).__name__)
    text = clip(text)
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except discord.HTTPException as exc:
        log.warning("could not tell the user about an error (%s %s)", exc.status, exc.code)
    if isinstance(error, PromptBlocked) and post_notice is not None:
        post_notice(interaction, error.notice)


def clip(text: str, limit: int = REPLY_MAX_CHARS) -> str:
    """`text`, cut to `limit` code points (ending in an ellipsis when cut)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


@contextlib.asynccontextmanager
async def answer_within(seconds: float = ANSWER_DEADLINE_S) -> AsyncIterator[None]:
    """`async with answer_within():` around what must finish before the acknowledgement: past `seconds` it is
    cancelled and reported as Redis not answering (the member is told to try again in time). For reads, and for
    writes whose late landing the member can see and repeat safely (an admission is released: `bot.submit`); a
    command that writes otherwise answers when Redis does.

    Raises:
        redis.TimeoutError: the block ran out of time.
    """
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError as exc:
        raise redis.TimeoutError(f"no answer within {seconds:g} s") from exc


def unwrap(error: app_commands.AppCommandError) -> BaseException:
    """The command's own exception inside discord.py's `CommandInvokeError`."""
    return error.original if isinstance(error, app_commands.CommandInvokeError) else error


def _describe(interaction: discord.Interaction) -> str:
    """Which interaction, for logs: its kind and command or custom_id, never its token."""
    data: dict[str, Any] = dict(interaction.data or {})
    name = interaction.command.name if interaction.command else str(data.get("custom_id", "?"))
    return f"interaction {interaction.id} ({name})"
