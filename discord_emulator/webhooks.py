"""Interaction routes: the callback that acknowledges an interaction, then its token's webhook messages."""

from __future__ import annotations

from typing import Any

from aiohttp import web

import discord_emulator.payloads as payloads
from discord_emulator.rest import (
    DiscordError,
    Host,
    apply_message_body,
    invalid_form,
    json_response,
    no_content,
    read_body,
)
from discord_emulator.state import (
    EPHEMERAL,
    INTERACTION_ACK_DEADLINE_S,
    LOADING,
    Callback,
    Interaction,
    Message,
)

REPLY, DEFERRED_REPLY, DEFERRED_UPDATE, UPDATE_MESSAGE, MODAL = 4, 5, 6, 7, 9
APPLICATION_COMMAND, MESSAGE_COMPONENT, MODAL_SUBMIT = 2, 3, 5
CHAT_INPUT_COMMAND_MESSAGE = 20
"""Message type of a slash command's response."""


def unknown_interaction() -> DiscordError:
    return DiscordError(404, 10062, "Unknown interaction")


def invalid_token() -> DiscordError:
    return DiscordError(401, 50027, "Invalid Webhook Token")


class InteractionRoutes:
    """Handlers for `/interactions/{id}/{token}/callback` and `/webhooks/{application}/{token}/...`."""

    def __init__(self, emu: Host) -> None:
        self.emu = emu
        self.state = emu.state

    def add_to(self, router: web.UrlDispatcher, prefix: str) -> None:
        router.add_post(f"{prefix}/interactions/{{interaction}}/{{token}}/callback", self.callback)
        router.add_post(f"{prefix}/webhooks/{{app}}/{{token}}", self.followup)
        router.add_get(f"{prefix}/webhooks/{{app}}/{{token}}/messages/{{message}}", self.get_message)
        router.add_patch(f"{prefix}/webhooks/{{app}}/{{token}}/messages/{{message}}", self.edit_message)
        router.add_delete(f"{prefix}/webhooks/{{app}}/{{token}}/messages/{{message}}", self.delete_message)

    async def callback(self, request: web.Request) -> web.Response:
        i = self.state.interactions.get(request.match_info["interaction"])
        if i is None or i.token != request.match_info["token"]:
            raise unknown_interaction()
        body, files = await read_body(request)
        if i.callback is not None:
            raise DiscordError(400, 40060, "Interaction has already been acknowledged.")
        elapsed = self.state.now() - i.created_at
        if elapsed > INTERACTION_ACK_DEADLINE_S:
            raise unknown_interaction()
        kind, data = body.get("type"), body.get("data") or {}
        message = await self._respond(i, kind, data, files)
        i.callback = Callback(kind, data, elapsed)
        await self.state.notify()
        if request.query.get("with_response") not in ("1", "true", "True"):
            return no_content()
        summary: dict[str, Any] = {"id": i.id, "type": i.type}
        if message is not None:
            summary |= {
                "response_message_id": message.id,
                "response_message_loading": bool(message.flags & LOADING),
                "response_message_ephemeral": message.ephemeral,
            }
        out: dict[str, Any] = {"interaction": summary}
        if message is not None and kind in (REPLY, UPDATE_MESSAGE):
            out["resource"] = {"type": kind, "message": payloads.message(message, self.state, self.emu.url)}
        return json_response(out)

    async def _respond(self, i: Interaction, kind: Any, data: dict[str, Any], files: dict) -> Message | None:
        """Carry out one callback type; returns the message it created or updated, if any."""
        if kind in (REPLY, DEFERRED_REPLY):
            message = self._new_message(i, CHAT_INPUT_COMMAND_MESSAGE if i.type == APPLICATION_COMMAND else 0)
            if kind == REPLY:
                apply_message_body(self.emu, message, data, files, editing=False)
            else:
                message.flags = LOADING | (int(data.get("flags", 0)) & EPHEMERAL)
            self._place(i, message)
            i.original_id = message.id
            await self.emu.store_message(message)
            return message
        if kind in (DEFERRED_UPDATE, UPDATE_MESSAGE):
            if i.type not in (MESSAGE_COMPONENT, MODAL_SUBMIT) or i.message_id is None:
                raise invalid_form(
                    "type", "BASE_TYPE_CHOICES", "Interaction response type is not valid for this interaction."
                )
            i.original_id = i.message_id
            message = self.state.messages[i.message_id]
            if kind == UPDATE_MESSAGE:
                await self.emu.edit_message(message, data, files)
            return message
        if kind == MODAL and i.type in (APPLICATION_COMMAND, MESSAGE_COMPONENT):
            i.modal = data
            return None
        raise invalid_form(
            "type", "BASE_TYPE_CHOICES", f"Value {kind!r} is not a valid interaction callback type here."
        )

    def _new_message(self, i: Interaction, message_type: int) -> Message:
        return Message(
            self.state.ids.next(),
            i.channel_id,
            self.state.bot,
            type=message_type,
            interaction_id=i.id,
            webhook_id=self.state.application_id,
            application_id=self.state.application_id,
        )

    def _place(self, i: Interaction, message: Message) -> None:
        """Ephemeral messages are kept per interaction, seen only by the interaction's user."""
        if message.ephemeral:
            message.visible_to = i.user.id
            i.ephemeral_ids.append(message.id)

    def _interaction(self, request: web.Request) -> Interaction:
        if request.match_info["app"] != self.state.application_id:
            raise DiscordError(404, 10015, "Unknown Webhook")
        i = self.state.interaction_by_token(request.match_info["token"])
        if i is None or self.state.token_expired(i):
            raise invalid_token()
        return i

    def _message(self, request: web.Request, i: Interaction) -> Message:
        key = request.match_info["message"]
        message_id = i.original_id if key == "@original" else key
        if message_id not in {i.original_id, *i.followup_ids}:
            raise DiscordError(404, 10008, "Unknown Message")
        message = self.state.messages.get(message_id or "")
        if message is None or message.deleted:
            raise DiscordError(404, 10008, "Unknown Message")
        return message

    async def followup(self, request: web.Request) -> web.Response:
        i = self._interaction(request)
        body, files = await read_body(request)
        if i.callback is None:
            raise DiscordError(404, 10015, "Unknown Webhook")
        message = self._new_message(i, 0)
        apply_message_body(self.emu, message, body, files, editing=False)
        self._place(i, message)
        i.followup_ids.append(message.id)
        response = await self.emu.store_message(message)
        return response if request.query.get("wait") in ("1", "true", "True") else no_content()

    async def get_message(self, request: web.Request) -> web.Response:
        i = self._interaction(request)
        return json_response(payloads.message(self._message(request, i), self.state, self.emu.url))

    async def edit_message(self, request: web.Request) -> web.Response:
        i = self._interaction(request)
        message = self._message(request, i)
        body, files = await read_body(request)
        message.flags &= ~LOADING
        return await self.emu.edit_message(message, body, files)

    async def delete_message(self, request: web.Request) -> web.Response:
        i = self._interaction(request)
        self._message(request, i).deleted = True
        await self.state.notify()
        return no_content()
