"""The emulator process: an aiohttp app serving REST, the gateway and attachments, plus the API tests drive it with."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import re
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

import discord_emulator.payloads as payloads
from discord_emulator.faults import Injection
from discord_emulator.gateway import CLOSE_UNKNOWN_ERROR, Gateway, Session
from discord_emulator.oauth import OAuthRoutes
from discord_emulator.pending import DEFAULT_WAIT_S, PendingInteraction
from discord_emulator.rest import FILES, JSON_BODY, BotRoutes, DiscordError, apply_message_body, json_response
from discord_emulator.state import Attachment, Interaction, Message, RequestRecord, Role, State, User
from discord_emulator.webhooks import InteractionRoutes

log = logging.getLogger(__name__)
T = TypeVar("T")

API_PREFIX = "/api/v10"
GATEWAY_PATH = "/gateway"
UNAUTHENTICATED_PREFIXES = ("/interactions/", "/webhooks/", "/oauth2/token")
"""Routes authenticated by the interaction/webhook token in the path (or the OAuth2 client's secret) instead of the
bot token."""

BEARER_PREFIX = "/users/@me"
"""Routes a user's OAuth2 access token (`Authorization: Bearer`) may call (`discord_emulator.oauth`)."""


SELECT_MENU = 3
"""Component type of a string select menu."""

MODAL_SUBMIT = 5
"""Interaction type of a submitted modal."""


class DiscordEmulator:
    """A Discord API + gateway on 127.0.0.1 for the real discord.py client; `async with DiscordEmulator() as emu`."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self.host, self.port = host, port
        self.state = State(clock)
        self.url = self.ws_url = ""
        self.injections: list[Injection] = []
        self.compression_requests: list[str] = []
        self.gateway = Gateway(self.state, "", self.compression_requests)
        self.oauth = OAuthRoutes(self.state)
        self._runner: web.AppRunner | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> DiscordEmulator:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        self.add_routes(app.router)
        app.router.add_get(GATEWAY_PATH, self.gateway.handle)
        app.router.add_get("/attachments/{channel}/{attachment}/{filename}", self._attachment)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://{self.host}:{self.port}"
        self.ws_url = self.gateway.ws_url = f"ws://{self.host}:{self.port}{GATEWAY_PATH}"
        return self

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Discord's REST routes: the bot's and the interaction webhooks' (a subclass may add its own)."""
        BotRoutes(self).add_to(router, API_PREFIX)
        InteractionRoutes(self).add_to(router, API_PREFIX)
        self.oauth.add_to(router, API_PREFIX)

    async def stop(self) -> None:
        await self.gateway.close_all()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> DiscordEmulator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def api_base(self) -> str:
        """What discord.py's `Route.BASE` must be set to."""
        return self.url + API_PREFIX

    @property
    def token(self) -> str:
        return self.state.token

    # -- setting the scene ---------------------------------------------------------------------------------------

    def add_user(self, username: str, *, roles: list[Role] | None = None, permissions: int | None = None) -> User:
        """A guild member; `permissions` adds a role with exactly those bits."""
        user = self.state.add_user(username)
        roles = list(roles or [])
        if permissions is not None:
            roles.append(self.state.add_role(f"{username}-role", permissions))
        self.state.add_member(user, roles)
        return user

    def rotate_token(self) -> str:
        """Reset the bot token as a developer would in the portal; the old one stops working everywhere."""
        self.state.token = f"{self.state.token.split('.')[0]}.{secrets.token_urlsafe(4)}.{secrets.token_urlsafe(28)}"
        return self.state.token

    def inject(
        self,
        method: str,
        path_regex: str,
        status: int,
        *,
        times: int = 1,
        retry_after: float = 0.05,
        is_global: bool = False,
        rate: float = 1.0,
        seed: int | None = None,
    ) -> Injection:
        """Answer the next `times` requests matching method ("*" for any) and a regex on the path after /api/v10;
        with `rate` < 1, only that fraction of them, drawn at random (`seed` makes the draws repeatable)."""
        injection = Injection(method.upper(), re.compile(path_regex), status, times, retry_after, is_global,
                              rate, random.Random(seed))
        self.injections.append(injection)
        return injection

    def advance_clock(self, seconds: float) -> None:
        """Move the emulator's clock forward (interaction deadlines and token expiry follow it)."""
        self.state.clock_offset_s += seconds

    # -- driving the bot -----------------------------------------------------------------------------------------

    async def send_slash_command(
        self, *, user: User, name: str, options: dict[str, Any] | None = None, channel: str | None = None
    ) -> PendingInteraction:
        """Dispatch INTERACTION_CREATE for a synced chat-input command, as Discord does when a user runs it.

        `name` may name a subcommand: "admin tier set". USER, ROLE and CHANNEL options take a `User`, `Role` or
        `Channel` (or an id) and come with their `resolved` objects; a user who is not a member arrives without
        member data.
        """
        top, *path = name.split()
        command, guild_id = self._synced_command(top)
        nested, resolved = payloads.command_options(self.state, command, path, options or {}, user.id, self.url)
        data: dict[str, Any] = {"id": command["id"], "name": top, "type": 1, "options": nested}
        if resolved:
            data["resolved"] = resolved
        if guild_id:
            data["guild_id"] = guild_id
        return await self._dispatch_interaction(2, user, channel or self.state.default_channel.id, data)

    async def click_button(self, *, user: User, message: Message | str, custom_id: str) -> PendingInteraction:
        """Dispatch INTERACTION_CREATE for a click on a button that the message carries."""
        message = message if isinstance(message, Message) else self.state.messages[message]
        button = message.find_component(custom_id)
        if button is None:
            raise ValueError(f"message {message.id} has no component {custom_id!r}; it has {message.custom_ids()}")
        if button.get("disabled"):
            raise ValueError(f"button {custom_id!r} is disabled: Discord would not let the user click it")
        if message.ephemeral and message.visible_to != user.id:
            raise ValueError("only the ephemeral message's user can see (and click) it")
        data = {"custom_id": custom_id, "component_type": button.get("type", 2)}
        return await self._dispatch_interaction(3, user, message.channel_id, data, message_id=message.id)

    async def choose(
        self, *, user: User, message: Message | str, custom_id: str, values: list[str]
    ) -> PendingInteraction:
        """Dispatch INTERACTION_CREATE for a choice in a string select menu the message carries; the values must be
        among its options and their number within its min_values..max_values, as Discord's client enforces."""
        message = message if isinstance(message, Message) else self.state.messages[message]
        select = message.find_component(custom_id)
        if select is None or select.get("type") != SELECT_MENU:
            raise ValueError(f"message {message.id} has no select menu {custom_id!r}")
        offered = {option["value"] for option in select.get("options", [])}
        if not set(values) <= offered or not select.get("min_values", 1) <= len(values) <= select.get("max_values", 1):
            raise ValueError(f"{values} is not a choice the menu {custom_id!r} offers")
        if message.ephemeral and message.visible_to != user.id:
            raise ValueError("only the ephemeral message's user can see (and use) it")
        data = {"custom_id": custom_id, "component_type": SELECT_MENU, "values": values}
        return await self._dispatch_interaction(3, user, message.channel_id, data, message_id=message.id)

    async def submit_modal(
        self, *, user: User, opened: PendingInteraction, values: dict[str, str]
    ) -> PendingInteraction:
        """Dispatch the MODAL_SUBMIT of the modal the bot answered `opened` with: each text input's value by its
        label, checked as Discord's client checks it (required inputs filled, lengths within min/max)."""
        modal = opened.record.modal
        if modal is None:
            raise ValueError("the bot did not answer that interaction with a modal")
        rows = []
        for row in modal["components"]:
            text_input = row["components"][0] if row["type"] == 1 else row["component"]
            value = values.get(text_input["label"], text_input.get("value", ""))
            if not text_input.get("min_length", 1 if text_input.get("required", True) else 0) <= len(value) <= \
                    text_input.get("max_length", 4000):
                raise ValueError(f"{text_input['label']!r}: {len(value)} characters is outside what the modal allows")
            rows.append({"type": 1, "components": [{"type": 4, "custom_id": text_input["custom_id"], "value": value}]})
        data = {"custom_id": modal["custom_id"], "components": rows}
        return await self._dispatch_interaction(MODAL_SUBMIT, user, opened.record.channel_id, data,
                                                message_id=opened.record.message_id)

    async def send_raw_command(
        self, *, user: User, name: str, options: list[Any], channel: str | None = None
    ) -> PendingInteraction:
        """Dispatch a synced command whose `options` go out exactly as given: no check of their names, types, values
        or nesting (what a broken or hostile client might get through; for fuzzing the bot's handlers)."""
        command, guild_id = self._synced_command(name)
        data: dict[str, Any] = {"id": command["id"], "name": name, "type": 1, "options": options}
        if guild_id:
            data["guild_id"] = guild_id
        return await self._dispatch_interaction(2, user, channel or self.state.default_channel.id, data)

    async def send_component(self, *, user: User, message: Message | str, data: dict[str, Any]) -> PendingInteraction:
        """Dispatch a component interaction on `message` with `data` as given: a custom_id the message may not carry,
        select `values` of any shape (click_button sends only what a real click on the message would)."""
        message = message if isinstance(message, Message) else self.state.messages[message]
        return await self._dispatch_interaction(3, user, message.channel_id, data, message_id=message.id)

    async def _dispatch_interaction(
        self, kind: int, user: User, channel: str, data: dict[str, Any], message_id: str | None = None
    ) -> PendingInteraction:
        if user.id not in self.state.members:
            raise ValueError(f"{user.username} is not a member of the guild; use emu.add_user()")
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(96)
        record = Interaction(self.state.ids.next(), token, kind, user, channel, self.state.now(), {}, message_id)
        record.payload = payloads.interaction(self.state, record, data, self.url)
        self.state.interactions[record.id] = record
        if await self.gateway.dispatch("INTERACTION_CREATE", record.payload) == 0:
            raise RuntimeError("no gateway session to dispatch INTERACTION_CREATE to; is the bot connected?")
        return PendingInteraction(self, record)

    def _synced_command(self, name: str) -> tuple[dict[str, Any], str | None]:
        for guild_id, commands in self.state.guild_commands.items():
            for command in commands:
                if command["name"] == name:
                    return command, guild_id
        for command in self.state.global_commands:
            if command["name"] == name:
                return command, None
        raise LookupError(f"/{name} was never synced; Discord shows users only synced commands")

    async def drop_gateway(self, code: int = CLOSE_UNKNOWN_ERROR, *, forget: bool = False) -> int:
        """Close the bot's websocket with a resumable code; discord.py should come back with RESUME (with `forget`,
        the session is gone and it must IDENTIFY again). Returns how many websockets were closed."""
        return await self.gateway.drop(code, forget=forget)

    # -- waiting and reading -------------------------------------------------------------------------------------

    async def wait_until(self, predicate: Callable[[], T | None], timeout: float = DEFAULT_WAIT_S) -> T:
        """The predicate's first truthy value, re-checked on every state change (no polling)."""

        async def watch() -> T:
            async with self.state.changed:
                while not (value := predicate()):
                    await self.state.changed.wait()
                return value

        return await asyncio.wait_for(watch(), timeout)

    async def wait_for_message(
        self,
        channel: str | None = None,
        predicate: Callable[[Message], bool] | None = None,
        timeout: float = DEFAULT_WAIT_S,
    ) -> Message:
        """The first public message of the channel that satisfies the predicate (oldest first)."""
        channel = channel or self.state.default_channel.id
        return await self.wait_until(
            lambda: next((m for m in self.messages(channel) if predicate is None or predicate(m)), None), timeout
        )

    async def wait_for_session(self, timeout: float = DEFAULT_WAIT_S, resumed: int = 0) -> Session:
        """A live gateway session that has been resumed at least `resumed` times."""
        return await self.wait_until(
            lambda: next((s for s in self.gateway.live_sessions() if s.resumes >= resumed), None), timeout
        )

    def messages(self, channel: str | None = None) -> list[Message]:
        """Public messages of a channel (default: #general), oldest first."""
        return self.state.channel_messages(channel or self.state.default_channel.id)

    def visible_to(self, user: User, channel: str | None = None) -> list[Message]:
        """What a user sees in a channel: public messages plus the ephemeral ones addressed to them."""
        return self.state.visible_messages(user.id, channel or self.state.default_channel.id)

    def requests(self, method: str | None = None, path_regex: str = "") -> list[RequestRecord]:
        """Recorded REST requests, optionally filtered by method and a regex on the path."""
        return [
            r
            for r in self.state.requests
            if (method is None or r.method == method.upper()) and re.search(path_regex, r.path)
        ]

    # -- shared by the route handlers ------------------------------------------------------------------------------

    async def store_message(self, message: Message) -> web.Response:
        message.created_at = time.time()
        message.snapshot(message.created_at)
        self.state.messages[message.id] = message
        await self.state.notify()
        return json_response(payloads.message(message, self.state, self.url))

    async def edit_message(self, message: Message, body: dict[str, Any], files: dict[int, Attachment]) -> web.Response:
        apply_message_body(self, message, body, files, editing=True)
        message.edited_at = time.time()
        message.snapshot(message.edited_at)
        await self.state.notify()
        return json_response(payloads.message(message, self.state, self.url))

    async def _attachment(self, request: web.Request) -> web.Response:
        upload = self.state.uploads.get(request.match_info["attachment"])
        if request.match_info["channel"] == "uploads" and upload is not None:
            return web.Response(body=upload.data, headers={"Content-Type": upload.content_type or
                                                           "application/octet-stream"})
        for message in self.state.messages.values():
            for attachment in message.attachments:
                if attachment.id == request.match_info["attachment"]:
                    ctype = attachment.content_type or "application/octet-stream"
                    return web.Response(body=attachment.data, headers={"Content-Type": ctype})
        raise web.HTTPNotFound()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX + "/"):
            return await handler(request)
        path = request.path.removeprefix(API_PREFIX)
        authorized = request.headers.get("Authorization") == f"Bot {self.state.token}"
        bearer = request.headers.get("Authorization", "").startswith("Bearer ") and path.startswith(BEARER_PREFIX)
        injection = next((i for i in self.injections if i.matches(request.method, path)), None)
        try:
            if injection is not None:
                injection.times -= 1
                injection.hits += 1
                response = injection.response()
            elif bearer and path == BEARER_PREFIX:  # a user's token: the user, not the bot
                response = await self.oauth.me(request)
            elif not authorized and not bearer and not path.startswith(UNAUTHENTICATED_PREFIXES):
                raise DiscordError(401, 0, "401: Unauthorized")
            else:
                response = await handler(request)
                resource = request.match_info.route.resource
                bucket = hashlib.sha1(f"{request.method} {resource.canonical if resource else path}".encode())
                response.headers.update(payloads.ratelimit_headers(bucket.hexdigest()[:16]))
        except web.HTTPNotFound:
            self.state.unknown_routes.append(f"{request.method} {path}")
            log.warning("discord emulator: no route for %s %s", request.method, request.path)
            response = json_response({"message": "404: Not Found", "code": 0}, 404)
        except web.HTTPMethodNotAllowed:
            self.state.unknown_routes.append(f"{request.method} {path}")
            log.warning("discord emulator: method not allowed %s %s", request.method, request.path)
            response = json_response({"message": "405: Method Not Allowed", "code": 0}, 405)
        except DiscordError as exc:
            response = json_response(exc.body(), exc.status)
        await self._record(request, path, response, authorized, injection is not None)
        return response

    async def _record(
        self, request: web.Request, path: str, response: web.Response, authorized: bool, injected: bool
    ) -> None:
        if JSON_BODY not in request and request.content_type == "application/json" and request.can_read_body:
            try:
                request[JSON_BODY] = await request.json()
            except (ValueError, RuntimeError):
                request[JSON_BODY] = None
        body = response.body if isinstance(response.body, bytes) else b""
        is_json = response.headers.get("Content-Type") == "application/json"
        self.state.requests.append(
            RequestRecord(
                method=request.method,
                path=path,
                query=dict(request.query),
                status=response.status,
                headers={k: v for k, v in request.headers.items() if k.lower() != "authorization"},
                json=request.get(JSON_BODY),
                response=json.loads(body) if is_json and body else None,
                files=request.get(FILES, []),
                authorized=authorized,
                injected=injected,
                content_type=request.content_type,
            )
        )
        await self.state.notify()
