"""The Discord API emulator on a thread of its own, for tests whose worker side is synchronous (RQ, urllib).

The bot's part is played here with plain HTTP: an interaction arrives, is deferred (the "thinking" original
message), and its Delivery is saved with the token before the job is enqueued, as the bot does.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import redis
from pydantic import SecretStr

from core import delivery, jobs, queue
from core.delivery import Delivery
from core.spec import JobSpec
from discord_emulator import DiscordEmulator, Message, User
from discord_emulator.state import Interaction
from worker.delivery import Poster
from worker.discord_http import DiscordHTTP

T = TypeVar("T")
WAIT_S = 30.0
"""How long a test waits for the emulator to see something (a busy 2-core machine renders slowly)."""

DEFERRED_REPLY = 5
APPLICATION_COMMAND = 2


class ThreadedEmulator:
    """A DiscordEmulator served by an event loop on a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="discord-emulator", daemon=True)
        self.thread.start()
        self.emu: DiscordEmulator = self.run(DiscordEmulator().start())

    def run(self, coro: Any, timeout: float = WAIT_S) -> Any:
        """Run a coroutine on the emulator's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the emulator's loop (where its state changes), and return its result."""

        async def wrapper() -> T:
            return fn()

        return self.run(wrapper())

    def wait_until(self, predicate: Callable[[], T | None], timeout: float = WAIT_S) -> T:
        """The predicate's first truthy value, re-checked on each emulator state change."""
        return self.run(self.emu.wait_until(predicate, timeout), timeout + 5)

    def close(self) -> None:
        self.run(self.emu.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def poster(self, min_edit_interval_s: float = 0.2) -> Poster:
        """The worker's poster aimed at this emulator with its bot token; retries wait 10 ms, edits 0.2 s apart."""
        http = DiscordHTTP(self.emu.api_base, SecretStr(self.emu.token), backoff_base_s=0.01)
        return Poster(http, min_edit_interval_s=min_edit_interval_s)

    def deferred_interaction(self, user: User) -> Interaction:
        """An /imagine interaction by `user`, acknowledged with a deferred reply: its original is "thinking"."""
        state = self.emu.state

        def create() -> Interaction:
            token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(96)
            record = Interaction(state.ids.next(), token, APPLICATION_COMMAND, user, state.default_channel.id,
                                 state.now(), {})
            state.interactions[record.id] = record
            return record

        record = self.call(create)
        url = f"{self.emu.api_base}/interactions/{record.id}/{record.token}/callback"
        request = urllib.request.Request(url, data=json.dumps({"type": DEFERRED_REPLY}).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=WAIT_S).close()
        return record

    def message(self, message_id: str | None) -> Message:
        message = self.emu.state.messages.get(message_id or "")
        assert message is not None, f"no message {message_id}"
        return message


@dataclass
class DiscordJob:
    """A job enqueued as the bot enqueues one, with the interaction it came from."""

    job_id: str
    interaction: Interaction
    user: User


def enqueue_from_discord(
    conn: redis.Redis,
    discord: ThreadedEmulator,
    user: User,
    spec: JobSpec,
    *,
    kind: str = "grid",
    source: dict[str, Any] | None = None,
    keep_token: bool = True,
) -> DiscordJob:
    """Defer an interaction, save the job's Delivery (with the token unless not `keep_token`), enqueue the job."""
    interaction = discord.deferred_interaction(user)
    job_id = jobs.new_job_id()
    state = discord.emu.state
    target = Delivery(state.application_id, interaction.channel_id, user.id, state.guild_id)
    delivery.save(conn, job_id, target, interaction_token=interaction.token if keep_token else None)
    queue.enqueue(conn, spec, f"discord:{user.id}", job_id=job_id, kind=kind, source=source)
    return DiscordJob(job_id, interaction, user)


@pytest.fixture
def discord() -> Iterator[ThreadedEmulator]:
    """A fresh emulator on a free port, served from a background thread."""
    emulator = ThreadedEmulator()
    try:
        yield emulator
    finally:
        emulator.close()
