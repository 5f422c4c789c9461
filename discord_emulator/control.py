"""The control endpoint: what a benchmark in another process asks of the emulator over HTTP, under `/_emulator/`.

- `GET /_emulator/sessions?live=N&timeout_s=T`: answers once exactly N gateway sessions are live (a bot process
  connected, after its command sync, or disconnected); 504 if that has not happened after T seconds.
- `POST /_emulator/burst` `{"count": N, "command": "imagine", "options": {...}}`: N new members each run the command
  at once; answers `{"latencies_s": [...]}`, each interaction's seconds from INTERACTION_CREATE to its callback, or
  null where no callback came within Discord's 3 s.
- `POST /_emulator/drop` `{"code": 4000, "forget": false}`: close every live gateway websocket with `code` (a
  resumable one by default); with `forget` the sessions are gone too, so the bot must IDENTIFY again. Answers
  `{"dropped": N}`.
- `POST /_emulator/command` `{"user": "ann", "command": "imagine", "options": {...}}`: the member named `user` (made
  a member on first use) runs the command; answers the interaction (below) at once, without waiting for the bot.
- `POST /_emulator/click` `{"user": "ann", "message_id": "...", "custom_id": "..."}`: the member clicks a button the
  message carries; answers the interaction. 409 for a button the message lacks or the member cannot click.
- `GET /_emulator/interactions/{id}`: `{"id", "token", "user", "user_id", "acked": callback type or null, "ack_s",
  "original", "followups", "ephemerals"}`, each message as in `/messages`.
- `GET /_emulator/messages`: every message, oldest first: `{"id", "channel_id", "content", "custom_ids",
  "ephemeral", "visible_to", "interaction_id", "deleted", "png_revisions"}` (how many of its revisions showed a PNG).
- `POST /_emulator/inject` `{"method": "*", "path": "^/", "status": 503, "times": N, "rate": 0.1, "seed": 1}`: a
  fault (`DiscordEmulator.inject`); `DELETE /_emulator/inject` lifts every fault and answers `{"hits": N}`, how
  many requests the faults answered in all.

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
from discord_emulator.state import INTERACTION_ACK_DEADLINE_S, Interaction, Message, User

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
        router.add_post(f"{CONTROL_PREFIX}/command", self.command)
        router.add_post(f"{CONTROL_PREFIX}/click", self.click)
        router.add_get(f"{CONTROL_PREFIX}/interactions/{{id}}", self.interaction)
        router.add_get(f"{CONTROL_PREFIX}/messages", self.messages)
        router.add_post(f"{CONTROL_PREFIX}/inject", self.inject)
        router.add_delete(f"{CONTROL_PREFIX}/inject", self.lift)

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

    async def command(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            pending = await self.emu.send_slash_command(
                user=self._member(str(body["user"])), name=str(body["command"]), options=body.get("options")
            )
        except (LookupError, RuntimeError, ValueError) as exc:  # no such command synced, no bot connected
            return json_response({"error": str(exc)}, 409)
        return json_response(self._interaction(pending.record))

    async def click(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            pending = await self.emu.click_button(
                user=self._member(str(body["user"])), message=str(body["message_id"]), custom_id=str(body["custom_id"])
            )
        except (LookupError, RuntimeError, ValueError) as exc:  # no such message or button, no bot connected
            return json_response({"error": str(exc)}, 409)
        return json_response(self._interaction(pending.record))

    async def interaction(self, request: web.Request) -> web.Response:
        record = self.emu.state.interactions.get(request.match_info["id"])
        if record is None:
            return json_response({"error": "no such interaction"}, 404)
        return json_response(self._interaction(record))

    async def messages(self, request: web.Request) -> web.Response:
        return json_response([message_summary(m) for m in self.emu.state.messages.values()])

    async def inject(self, request: web.Request) -> web.Response:
        body = await request.json()
        injection = self.emu.inject(
            str(body.get("method", "*")), str(body.get("path", "^/")), int(body["status"]),
            times=int(body.get("times", 1)), rate=float(body.get("rate", 1.0)), seed=body.get("seed"),
        )  # fmt: skip
        return json_response({"status": injection.status, "rate": injection.rate})

    async def lift(self, request: web.Request) -> web.Response:
        hits = sum(i.hits for i in self.emu.injections)
        for injection in self.emu.injections:
            injection.times = 0
        return json_response({"hits": hits})

    def _member(self, username: str) -> User:
        """The guild member with this username, made one on first use."""
        state = self.emu.state
        found = next((u for u in state.users.values() if u.username == username and u.id in state.members), None)
        return found or self.emu.add_user(username)

    def _interaction(self, record: Interaction) -> dict[str, Any]:
        messages = self.emu.state.messages
        callback = record.callback
        return {
            "id": record.id,
            "token": record.token,
            "user": record.user.username,
            "user_id": record.user.id,
            "acked": callback.type if callback else None,
            "ack_s": callback.elapsed_s if callback else None,
            "original": message_summary(original) if (original := messages.get(record.original_id or "")) else None,
            "followups": [message_summary(messages[m]) for m in record.followup_ids],
            "ephemerals": [message_summary(messages[m]) for m in record.ephemeral_ids],
        }


def message_summary(message: Message) -> dict[str, Any]:
    """What the control endpoint tells about a message."""
    return {
        "id": message.id,
        "channel_id": message.channel_id,
        "content": message.content,
        "custom_ids": message.custom_ids(),
        "ephemeral": message.ephemeral,
        "visible_to": message.visible_to,
        "interaction_id": message.interaction_id,
        "deleted": message.deleted,
        "png_revisions": sum(1 for r in message.history if any(a.filename.endswith(".png") for a in r.attachments)),
    }


class ControlledEmulator(DiscordEmulator):
    """The emulator with the control endpoint: what `python -m discord_emulator` serves."""

    def add_routes(self, router: web.UrlDispatcher) -> None:
        super().add_routes(router)
        ControlRoutes(self).add_to(router)
