"""A Discord API emulator (REST + gateway) that the real discord.py client talks to, for end-to-end tests.

    async with DiscordEmulator() as emu, running_client(emu, bot):
        pending = await emu.send_slash_command(user=alice, name="imagine", options={"prompt": "a cat"})
        await pending.wait_acknowledged()

See `fixtures.py` for the pytest fixtures and `openapi.py` for the check against Discord's OpenAPI description.
"""

from discord_emulator.server import DiscordEmulator, Injection, PendingInteraction
from discord_emulator.state import (
    ATTACHMENT_SIZE_LIMIT_BYTES,
    EPHEMERAL,
    INTERACTION_ACK_DEADLINE_S,
    INTERACTION_TOKEN_TTL_S,
    LOADING,
    Attachment,
    Callback,
    Message,
    RequestRecord,
    User,
)

__all__ = [
    "ATTACHMENT_SIZE_LIMIT_BYTES",
    "EPHEMERAL",
    "INTERACTION_ACK_DEADLINE_S",
    "INTERACTION_TOKEN_TTL_S",
    "LOADING",
    "Attachment",
    "Callback",
    "DiscordEmulator",
    "Injection",
    "Message",
    "PendingInteraction",
    "RequestRecord",
    "User",
]
