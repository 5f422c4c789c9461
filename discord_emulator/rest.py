"""REST routes a bot calls with its token: identity, gateway, application commands, channels, members.

Also the message-body helpers (JSON or multipart with `payload_json` + `files[n]`) that webhooks.py shares.
"""

from __future__ import annotations

import json
import re
from typing import Any, Protocol

from aiohttp import web

import discord_emulator.payloads as payloads
from discord_emulator.state import ATTACHMENT_SIZE_LIMIT_BYTES, EPHEMERAL, Attachment, Message, State


class Host(Protocol):
    """What the route handlers need of the emulator that serves them (`server.DiscordEmulator` is one)."""

    state: State
    url: str
    ws_url: str

    async def store_message(self, message: Message) -> web.Response: ...

    async def edit_message(
        self, message: Message, body: dict[str, Any], files: dict[int, Attachment]
    ) -> web.Response: ...


MESSAGE_CONTENT_MAX_CHARS = 2000
CUSTOM_ID_MAX_CHARS = 100
ACTION_ROWS_MAX = 5
SETTABLE_FLAGS = EPHEMERAL | (1 << 2) | (1 << 12) | (1 << 15)
"""Message flags a sender may set: EPHEMERAL, SUPPRESS_EMBEDS, SUPPRESS_NOTIFICATIONS, IS_COMPONENTS_V2."""
FILES_FIELD = re.compile(r"files\[(\d+)\]")
JSON_BODY = web.RequestKey("discord_emulator_json", object)
"""The request's JSON payload (or multipart payload_json), kept on the request for the request log."""
FILES = web.RequestKey("discord_emulator_files", list)
"""Name, filename, size and content type of each uploaded `files[n]` part, for the request log."""


class DiscordError(Exception):
    """An error answered the way Discord does: HTTP status plus `{"code": ..., "message": ...}`."""

    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status, self.code, self.message, self.errors = status, code, message, errors

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors:
            out["errors"] = self.errors
        return out


def invalid_form(field_name: str, code: str, message: str) -> DiscordError:
    return DiscordError(
        400, 50035, "Invalid Form Body", {field_name: {"_errors": [{"code": code, "message": message}]}}
    )


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response whose Content-Type is exactly `application/json` (discord.py compares it literally)."""
    response = web.Response(body=json.dumps(body).encode(), status=status, headers=headers)
    response.headers["Content-Type"] = "application/json"
    return response


def no_content() -> web.Response:
    return web.Response(status=204)


async def read_body(request: web.Request) -> tuple[dict[str, Any], dict[int, Attachment]]:
    """The JSON payload (from the body or from multipart `payload_json`) and the uploaded `files[n]` by index.

    Both are also stored on the request for the request log.
    """
    files: dict[int, Attachment] = {}
    if request.content_type == "multipart/form-data":
        payload: Any = {}
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            assert not isinstance(part, type(reader)), "nested multipart is not something Discord accepts"
            if part.name == "payload_json":
                payload = json.loads(await part.text())
            elif part.name and (match := FILES_FIELD.fullmatch(part.name)):
                data = await part.read()
                if len(data) > ATTACHMENT_SIZE_LIMIT_BYTES:
                    raise DiscordError(413, 40005, "Request entity too large")
                ctype = part.headers.get("Content-Type")
                files[int(match[1])] = Attachment("", part.filename or f"file{match[1]}", bytes(data), ctype)
        request[FILES] = [
            {"field": f"files[{n}]", "filename": a.filename, "size": len(a.data), "content_type": a.content_type}
            for n, a in files.items()
        ]
    elif request.can_read_body:
        payload = await request.json()
    else:
        payload = {}
    request[JSON_BODY] = payload
    return payload, files


def check_components(components: list[dict[str, Any]]) -> None:
    """The component limits the bot must respect (Discord answers 400 50035 otherwise)."""
    if len(components) > ACTION_ROWS_MAX:
        raise invalid_form("components", "BASE_TYPE_MAX_LENGTH", f"Must be {ACTION_ROWS_MAX} or fewer in length.")
    stack = list(components)
    while stack:
        item = stack.pop()
        custom_id = item.get("custom_id")
        if custom_id is not None and not 1 <= len(custom_id) <= CUSTOM_ID_MAX_CHARS:
            raise invalid_form("custom_id", "BASE_TYPE_BAD_LENGTH", f"Must be between 1 and {CUSTOM_ID_MAX_CHARS}.")
        stack.extend(item.get("components", []))


def apply_message_body(
    emu: Host, message: Message, body: dict[str, Any], files: dict[int, Attachment], *, editing: bool
) -> None:
    """Set a message's content, embeds, components and attachments from a create or edit body."""
    if "content" in body:
        content = body["content"] or ""
        if len(content) > MESSAGE_CONTENT_MAX_CHARS:
            raise invalid_form("content", "BASE_TYPE_MAX_LENGTH", f"Must be {MESSAGE_CONTENT_MAX_CHARS} or fewer.")
        message.content = content
    if "embeds" in body:
        message.embeds = list(body["embeds"] or [])
    if "components" in body:
        message.components = list(body["components"] or [])
        check_components(message.components)
    if not editing and body.get("flags"):
        message.flags |= int(body["flags"]) & SETTABLE_FLAGS
    for attachment in files.values():
        attachment.id = emu.state.ids.next()
    if body.get("attachments") is not None:
        # `attachments` lists what the message keeps: existing ones by id, new uploads by their files[n] index.
        existing = {a.id: a for a in message.attachments}
        kept: list[Attachment] = []
        for entry in body["attachments"]:
            key = str(entry["id"])
            if key in existing:
                kept.append(existing[key])
            elif key.isdigit() and int(key) in files:
                new = files.pop(int(key))
                new.filename = entry.get("filename") or new.filename
                new.description = entry.get("description")
                kept.append(new)
            else:
                raise invalid_form("attachments", "ATTACHMENT_NOT_FOUND", f"Unknown attachment {key}")
        message.attachments = kept + list(files.values())
    elif files:
        message.attachments = (message.attachments if editing else []) + list(files.values())
    if not (message.content or message.embeds or message.attachments or message.components):
        raise DiscordError(400, 50006, "Cannot send an empty message")


class BotRoutes:
    """Handlers for routes authenticated with the bot token."""

    def __init__(self, emu: Host) -> None:
        self.emu = emu
        self.state = emu.state

    def add_to(self, router: web.UrlDispatcher, prefix: str) -> None:
        r = router
        r.add_get(f"{prefix}/users/@me", self.get_me)
        r.add_get(f"{prefix}/gateway", self.get_gateway)
        r.add_get(f"{prefix}/gateway/bot", self.get_gateway_bot)
        r.add_get(f"{prefix}/oauth2/applications/@me", self.get_application)
        r.add_get(f"{prefix}/applications/@me", self.get_application)
        r.add_get(f"{prefix}/applications/{{app}}", self.get_application)
        r.add_get(f"{prefix}/applications/{{app}}/commands", self.get_commands)
        r.add_put(f"{prefix}/applications/{{app}}/commands", self.put_commands)
        r.add_get(f"{prefix}/applications/{{app}}/guilds/{{guild}}/commands", self.get_commands)
        r.add_put(f"{prefix}/applications/{{app}}/guilds/{{guild}}/commands", self.put_commands)
        r.add_get(f"{prefix}/channels/{{channel}}", self.get_channel)
        r.add_get(f"{prefix}/channels/{{channel}}/messages", self.list_messages)
        r.add_post(f"{prefix}/channels/{{channel}}/messages", self.create_message)
        r.add_get(f"{prefix}/channels/{{channel}}/messages/{{message}}", self.get_message)
        r.add_patch(f"{prefix}/channels/{{channel}}/messages/{{message}}", self.edit_message)
        r.add_delete(f"{prefix}/channels/{{channel}}/messages/{{message}}", self.delete_message)
        r.add_get(f"{prefix}/guilds/{{guild}}/members/{{user}}", self.get_member)

    async def get_me(self, request: web.Request) -> web.Response:
        return json_response(payloads.me(self.state.bot))

    async def get_gateway(self, request: web.Request) -> web.Response:
        return json_response({"url": self.emu.ws_url})

    async def get_gateway_bot(self, request: web.Request) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 86_400_000, "max_concurrency": 1}
        return json_response({"url": self.emu.ws_url, "shards": 1, "session_start_limit": limit})

    async def get_application(self, request: web.Request) -> web.Response:
        app = request.match_info.get("app", self.state.application_id)
        if app not in ("@me", self.state.application_id):
            raise DiscordError(404, 10002, "Unknown Application")
        return json_response(payloads.application(self.state))

    def _check_scope(self, request: web.Request) -> str | None:
        if request.match_info["app"] != self.state.application_id:
            raise DiscordError(403, 50001, "Missing Access")
        guild = request.match_info.get("guild")
        if guild is not None and guild != self.state.guild_id:
            raise DiscordError(403, 50001, "Missing Access")
        return guild

    async def get_commands(self, request: web.Request) -> web.Response:
        guild = self._check_scope(request)
        return json_response(self.state.guild_commands.get(guild, []) if guild else self.state.global_commands)

    async def put_commands(self, request: web.Request) -> web.Response:
        guild = self._check_scope(request)
        body, _ = await read_body(request)
        old = {
            c["name"]: c for c in (self.state.guild_commands.get(guild, []) if guild else self.state.global_commands)
        }
        stored = [payloads.command(self.state, sent, old.get(sent["name"]), guild) for sent in body or []]
        if guild:
            self.state.guild_commands[guild] = stored
        else:
            self.state.global_commands = stored
        await self.state.notify()
        return json_response(stored)

    def _channel(self, request: web.Request) -> str:
        channel = request.match_info["channel"]
        if channel not in self.state.channels:
            raise DiscordError(404, 10003, "Unknown Channel")
        return channel

    def _message(self, request: web.Request) -> Message:
        channel = self._channel(request)
        message = self.state.messages.get(request.match_info["message"])
        if message is None or message.channel_id != channel or message.deleted or message.ephemeral:
            raise DiscordError(404, 10008, "Unknown Message")
        return message

    async def get_channel(self, request: web.Request) -> web.Response:
        return json_response(payloads.channel(self.state.channels[self._channel(request)], self.state))

    async def list_messages(self, request: web.Request) -> web.Response:
        messages = self.state.channel_messages(self._channel(request))
        limit = min(int(request.query.get("limit", 50)), 100)
        if "before" in request.query:
            messages = [m for m in messages if int(m.id) < int(request.query["before"])]
        if "after" in request.query:
            messages = [m for m in messages if int(m.id) > int(request.query["after"])]
        newest_first = list(reversed(messages))[:limit]
        return json_response([payloads.message(m, self.state, self.emu.url) for m in newest_first])

    async def create_message(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        body, files = await read_body(request)
        message = Message(self.state.ids.next(), channel, self.state.bot)
        apply_message_body(self.emu, message, body, files, editing=False)
        message.flags &= ~EPHEMERAL  # channel messages are never ephemeral
        return await self.emu.store_message(message)

    async def get_message(self, request: web.Request) -> web.Response:
        return json_response(payloads.message(self._message(request), self.state, self.emu.url))

    async def edit_message(self, request: web.Request) -> web.Response:
        message = self._message(request)
        if message.author.id != self.state.bot.id:
            raise DiscordError(403, 50005, "Cannot edit a message authored by another user")
        body, files = await read_body(request)
        return await self.emu.edit_message(message, body, files)

    async def delete_message(self, request: web.Request) -> web.Response:
        message = self._message(request)
        message.deleted = True
        await self.state.notify()
        return no_content()

    async def get_member(self, request: web.Request) -> web.Response:
        member = self.state.members.get(request.match_info["user"])
        if request.match_info["guild"] != self.state.guild_id:
            raise DiscordError(404, 10004, "Unknown Guild")
        if member is None:
            raise DiscordError(404, 10007, "Unknown Member")
        return json_response(payloads.member(member))
