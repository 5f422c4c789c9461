"""An interaction the emulator dispatched to the bot, as a test holds it: wait for the bot's answer and read it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from discord_emulator.state import Callback, Interaction, Message, State

T = TypeVar("T")

DEFAULT_WAIT_S = 5.0
"""How long a test waits for the bot by default."""


class Emulator(Protocol):
    """What a pending interaction needs of the emulator (`DiscordEmulator`): its state, and waiting on it."""

    state: State

    async def wait_until(self, predicate: Callable[[], T | None], timeout: float = DEFAULT_WAIT_S) -> T: ...


@dataclass
class PendingInteraction:
    """An interaction the emulator dispatched; await its acknowledgement and read what the bot answered."""

    emu: Emulator
    record: Interaction

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def token(self) -> str:
        return self.record.token

    async def wait_acknowledged(self, timeout: float = DEFAULT_WAIT_S) -> Callback:
        """The callback (type, data, seconds from dispatch) once the bot acknowledged the interaction."""
        return await self.emu.wait_until(lambda: self.record.callback, timeout)

    async def wait_original(
        self, predicate: Callable[[Message], bool] | None = None, timeout: float = DEFAULT_WAIT_S
    ) -> Message:
        """The interaction's "original" message once it exists (and satisfies the predicate)."""

        def ready() -> Message | None:
            message = self.emu.state.messages.get(self.record.original_id or "")
            return message if message and (predicate is None or predicate(message)) else None

        return await self.emu.wait_until(ready, timeout)

    @property
    def original(self) -> Message | None:
        return self.emu.state.messages.get(self.record.original_id or "")

    @property
    def followups(self) -> list[Message]:
        return [self.emu.state.messages[m] for m in self.record.followup_ids]

    @property
    def ephemeral_messages(self) -> list[Message]:
        """Ephemeral messages this interaction produced (seen only by its user), oldest first."""
        return [self.emu.state.messages[m] for m in self.record.ephemeral_ids]

    def expire(self) -> None:
        """Make the token answer 401 50027 from now on, as 15 minutes after the interaction."""
        self.record.expired = True
