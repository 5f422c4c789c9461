"""The control endpoint: what a benchmark in another process asks of the emulator over HTTP, under `/_emulator/`.

- `GET /_emulator/sessions?live=N&timeout_s=T`: answers once exactly N gateway sessions are live (a bot process
  connected, after its command sync, or disconnected); 504 if that has not happened after T seconds.
- `POST /_emulator/burst` `{"count": N, "command": "imagine", "options": {...}}`: N new members each run the command
  at once; answers `{"latencies_s": [...]}`, each interaction's seconds from INTERACTION_CREATE to its callback, or
  null where no callback came within Discord's 3 s.
- `POST /_emulator/drop` `{"code": 4000, "forget": false}`: close every live gateway websocket with `code` (a
  resumable one by default); with `forget` the sessions are gone too, so the bot must IDENTIFY again. Answers
  `{"dropped": N}`.

These routes are not Discord's: they need no token, so serve the emulator on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import web

from discord_emulator.gateway import CLOSE_UNKNOWN_ERROR
from discord_emulator.rest import json_response
from discord_emulator.server import DiscordEmulator, PendingInteraction
from discord_emulator.state import INTERACTION_ACK_DEADLINE_S

CONTROL_PREFIX = "/_emulator"
DEFAULT_SESSION_WAIT_S = 60.0


async def burst(
    emu: DiscordEmulator, count: int, command: str = "imagine", options: dict[str, Any] | None = None
) -> list[PendingInteraction]:
    """Dispatch `count` slash commands at once, one new member each; returns once each was acknowledged or its
    INTERACTION_ACK_DEADLINE_S has passed (Discord forgets it then)."""
    users = [emu.add_user(f"member{i}") for i in range(count)]
    pending = await asyncio.gather(*(emu.send_slash_command(user=u, name=command, options=options) for u in users))
    latest = max(p.record.created_at for p in pending)
    # A callback that arrives after the deadline is answered 404 and never recorded: waiting longer shows nothing.
    remaining_s = latest + INTERACTION_ACK_DEADLINE_S - emu.state.now()
    with contextlib.suppress(TimeoutError):
        await emu.wait_until(lambda: all(p.record.callback for p in pending), max(remaining_s, 0.0))
    return list(pending)


def ack_latencies(pending: list[PendingInteraction]) -> list[float | None]:
    """Each interaction's seconds from INTERACTION_CREATE to its callback; None where none came within 3 s."""
    return [p.record.callback.elapsed_s if p.record.callback else None for p in pending]


class ControlRoutes:
    """Handlers of the control endpoint."""

    def __init__(self, emu: DiscordEmulator) -> None:
        self.emu = emu

    def add_to(self, router: web.UrlDispatcher) -> None:
        router.add_get(f"{CONTROL_PREFIX}/sessions", self.sessions)
        router.add_post(f"{CONTROL_PREFIX}/burst", self.burst)
        router.add_post(f"{CONTROL_PREFIX}/drop", self.drop)

    async def sessions(self, request: web.Request) -> web.Response:
        live = int(request.query.get("live", 1))
        timeout_s = float(request.query.get("timeout_s", DEFAULT_SESSION_WAIT_S))
        gateway = self.emu.gateway
        try:
            await self.emu.wait_until(lambda: len(gateway.live_sessions()) == live or None, timeout_s)
        except TimeoutError:
            return json_response({"live": len(gateway.live_sessions()), "wanted": live}, 504)
        return json_response({"live": live})

    async def burst(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            pending = await burst(self.emu, int(body["count"]), body.get("command", "imagine"), body.get("options"))
        except (LookupError, RuntimeError, ValueError) as exc:  # no such command synced, no bot connected
            return json_response({"error": str(exc)}, 409)
        return json_response({"latencies_s": ack_latencies(pending)})


    async def drop(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        code, forget = int(body.get("code", CLOSE_UNKNOWN_ERROR)), bool(body.get("forget"))
        dropped = await self.emu.drop_gateway(code, forget=forget)
        return json_response({"dropped": dropped})


class ControlledEmulator(DiscordEmulator):
    """The emulator with the control endpoint: what `python -m discord_emulator` serves."""

    def add_routes(self, router: web.UrlDispatcher) -> None:
        super().add_routes(router)
        ControlRoutes(self).add_to(router)
