"""What the emulated Discord knows: users, one guild, channels, members, messages with edit history, interactions."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import itertools
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DISCORD_EPOCH_MS = 1_420_070_400_000
"""Milliseconds since the Unix epoch at which Discord snowflakes start counting."""

INTERACTION_TOKEN_TTL_S = 15 * 60
"""Seconds an interaction token accepts webhook calls (edits, follow-ups) after the interaction was created."""

INTERACTION_ACK_DEADLINE_S = 3.0
"""Seconds Discord waits for the interaction callback before the interaction is unknown (404, code 10062)."""

ATTACHMENT_SIZE_LIMIT_BYTES = 10 * 1024 * 1024
"""Largest upload per file a bot may send in a guild without boosts (Discord: 10 MiB)."""

EPHEMERAL = 1 << 6
"""Message flag: only the invoking user sees the message."""

LOADING = 1 << 7
"""Message flag: the 'Bot is thinking...' placeholder of a deferred interaction response."""

ADMINISTRATOR = 1 << 3
ALL_PERMISSIONS = (1 << 51) - 1
DEFAULT_EVERYONE_PERMISSIONS = (
    (1 << 6) | (1 << 10) | (1 << 11) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 18) | (1 << 31)
)
"""@everyone: add reactions, view channel, send messages, embed links, attach files, read history,
external emojis, use application commands."""


def iso(ts: float) -> str:
    """ISO 8601 timestamp as Discord writes it."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


class Snowflakes:
    """Increasing snowflake ids from the wall clock, like Discord's."""

    def __init__(self) -> None:
        self._counter = itertools.count()
        self._last = 0

    def next(self) -> str:
        """A new, strictly increasing snowflake id as Discord serialises it (a decimal string)."""
        value = ((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) | (next(self._counter) & 0xFFF)
        self._last = value = max(value, self._last + 1)
        return str(value)


@dataclass
class User:
    id: str
    username: str
    bot: bool = False
    global_name: str | None = None


@dataclass
class Role:
    id: str
    name: str
    permissions: int
    position: int = 0


@dataclass
class Member:
    user: User
    role_ids: list[str] = field(default_factory=list)
    joined_at: float = field(default_factory=time.time)
    nick: str | None = None


@dataclass
class Channel:
    id: str
    name: str
    nsfw: bool = False
    type: int = 0
    position: int = 0
    overwrites: list[dict[str, Any]] = field(default_factory=list)
    """Discord's permission overwrite objects: {"id", "type" (0 role, 1 member), "allow", "deny"} (strings)."""


@dataclass
class Attachment:
    id: str
    filename: str
    data: bytes
    content_type: str | None = None
    description: str | None = None


@dataclass
class Revision:
    """One version of a message's visible content; `Message.history` holds them oldest first."""

    at: float
    content: str
    embeds: list[dict[str, Any]]
    attachments: list[Attachment]
    components: list[dict[str, Any]]
    flags: int


@dataclass
class Message:
    id: str
    channel_id: str
    author: User
    type: int = 0
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    """Components exactly as the bot sent them (Discord's echo adds numeric ids; see payloads)."""
    flags: int = 0
    created_at: float = field(default_factory=time.time)
    edited_at: float | None = None
    interaction_id: str | None = None
    webhook_id: str | None = None
    application_id: str | None = None
    deleted: bool = False
    visible_to: str | None = None
    """For an ephemeral message: the only user id that sees it."""
    history: list[Revision] = field(default_factory=list)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    def snapshot(self, at: float) -> None:
        """Append the current content to the history (called after creation and after each edit)."""
        self.history.append(
            Revision(at, self.content, list(self.embeds), list(self.attachments), list(self.components), self.flags)
        )

    def custom_ids(self) -> list[str]:
        """Every custom_id among the message's components, in order."""
        found: list[str] = []

        def walk(items: list[dict[str, Any]]) -> None:
            for item in items:
                if "custom_id" in item:
                    found.append(item["custom_id"])
                walk(item.get("components", []))

        walk(self.components)
        return found

    def find_component(self, custom_id: str) -> dict[str, Any] | None:
        """The component with this custom_id, or None."""
        stack = list(self.components)
        while stack:
            item = stack.pop()
            if item.get("custom_id") == custom_id:
                return item
            stack.extend(item.get("components", []))
        return None


@dataclass
class Callback:
    """An interaction's acknowledgement as the bot sent it."""

    type: int
    data: dict[str, Any]
    elapsed_s: float
    """Seconds from the INTERACTION_CREATE dispatch to the callback's arrival."""


@dataclass
class Interaction:
    id: str
    token: str
    type: int
    user: User
    channel_id: str
    created_at: float
    payload: dict[str, Any]
    message_id: str | None = None
    """For a component interaction: the message the component is on."""
    callback: Callback | None = None
    original_id: str | None = None
    followup_ids: list[str] = field(default_factory=list)
    ephemeral_ids: list[str] = field(default_factory=list)
    modal: dict[str, Any] | None = None
    expired: bool = False


@dataclass
class RequestRecord:
    """One REST request the emulator answered; headers never include Authorization."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    headers: dict[str, str]
    json: Any
    response: Any
    files: list[dict[str, Any]] = field(default_factory=list)
    authorized: bool = False
    injected: bool = False
    content_type: str = ""


@dataclass
class Code:
    user_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    challenge: str
    issued_at: float


@dataclass
class Token:
    user_id: str
    scopes: tuple[str, ...]
    expires_at: float


@dataclass
class OAuthStore:
    """The emulated application's OAuth2 state (`discord_emulator.oauth`)."""

    client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    codes: dict[str, Code] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)


class State:
    """Everything the emulated Discord stores; every change notifies `changed` waiters."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.ids = Snowflakes()
        self.clock = clock
        self.clock_offset_s = 0.0
        self.changed = asyncio.Condition()
        self.application_id = self.ids.next()
        self.bot = User(self.application_id, "imagine-bot", bot=True)
        self.token = make_token(self.bot.id)
        self.guild_id = self.ids.next()
        self.guild_name = "Emulated Guild"
        self.owner = User(self.ids.next(), "owner")
        self.roles: dict[str, Role] = {self.guild_id: Role(self.guild_id, "@everyone", DEFAULT_EVERYONE_PERMISSIONS)}
        self.users: dict[str, User] = {}
        self.members: dict[str, Member] = {}
        self.channels: dict[str, Channel] = {}
        self.messages: dict[str, Message] = {}
        self.uploads: dict[str, Attachment] = {}  # files members attached to command options (type 11), by id
        self.interactions: dict[str, Interaction] = {}
        self.global_commands: list[dict[str, Any]] = []
        self.guild_commands: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[RequestRecord] = []
        self.unknown_routes: list[str] = []
        self.oauth = OAuthStore()
        bot_role = self.add_role("imagine-bot", ALL_PERMISSIONS & ~ADMINISTRATOR, position=1)
        self.add_member(self.bot, roles=[bot_role])
        self.add_member(self.owner, roles=[self.add_role("admin", ADMINISTRATOR, position=2)])
        self.default_channel = self.add_channel("general")
        self.nsfw_channel = self.add_channel("nsfw-art", nsfw=True)

    def now(self) -> float:
        """The emulator's clock (monotonic seconds plus whatever a test advanced it by)."""
        return self.clock() + self.clock_offset_s

    def add_role(self, name: str, permissions: int, position: int = 0) -> Role:
        role = Role(self.ids.next(), name, permissions, position)
        self.roles[role.id] = role
        return role

    def add_user(self, username: str, *, bot: bool = False) -> User:
        user = User(self.ids.next(), username, bot=bot)
        self.users[user.id] = user
        return user

    def add_member(self, user: User, roles: list[Role] | None = None) -> Member:
        self.users[user.id] = user
        member = Member(user, [r.id for r in roles or []])
        self.members[user.id] = member
        return member

    def add_channel(self, name: str, *, nsfw: bool = False) -> Channel:
        channel = Channel(self.ids.next(), name, nsfw=nsfw, position=len(self.channels))
        self.channels[channel.id] = channel
        return channel

    def permissions(self, user_id: str) -> int:
        """A member's guild-level permissions: @everyone plus their roles; ADMINISTRATOR or owner means all."""
        if user_id == self.owner.id:
            return ALL_PERMISSIONS
        member = self.members.get(user_id)
        bits = self.roles[self.guild_id].permissions
        for role_id in member.role_ids if member else []:
            bits |= self.roles[role_id].permissions
        return ALL_PERMISSIONS if bits & ADMINISTRATOR else bits

    def channel_permissions(self, user_id: str, channel_id: str) -> int:
        """A member's permissions in a channel: guild permissions, then the channel's @everyone, role and member
        overwrites (Discord's order: deny before allow at each level); ADMINISTRATOR overrides them all."""
        bits = self.permissions(user_id)
        if bits & ADMINISTRATOR or user_id == self.owner.id:
            return ALL_PERMISSIONS
        member = self.members.get(user_id)
        role_ids = set(member.role_ids) if member else set()
        overwrites = self.channels[channel_id].overwrites if channel_id in self.channels else []
        levels = [[o for o in overwrites if o["id"] == self.guild_id],
                  [o for o in overwrites if o["type"] == 0 and o["id"] in role_ids],
                  [o for o in overwrites if o["type"] == 1 and o["id"] == user_id]]
        for level in levels:
            deny = allow = 0
            for overwrite in level:
                deny |= int(overwrite.get("deny", 0))
                allow |= int(overwrite.get("allow", 0))
            bits = (bits & ~deny) | allow
        return bits

    def channel_messages(self, channel_id: str) -> list[Message]:
        """Non-ephemeral, undeleted messages of a channel, oldest first."""
        return [m for m in self.messages.values() if m.channel_id == channel_id and not m.deleted and not m.ephemeral]

    def visible_messages(self, user_id: str, channel_id: str) -> list[Message]:
        """What this user sees in the channel: its messages plus ephemeral ones addressed to them, oldest first."""
        return [
            m
            for m in self.messages.values()
            if m.channel_id == channel_id and not m.deleted and (not m.ephemeral or m.visible_to == user_id)
        ]

    def interaction_by_token(self, token: str) -> Interaction | None:
        return next((i for i in self.interactions.values() if i.token == token), None)

    def token_expired(self, interaction: Interaction) -> bool:
        return interaction.expired or self.now() - interaction.created_at > INTERACTION_TOKEN_TTL_S

    async def notify(self) -> None:
        """Wake everything waiting on a state change."""
        async with self.changed:
            self.changed.notify_all()


def make_token(user_id: str) -> str:
    """A bot token shaped like Discord's: base64(user id) . timestamp part . HMAC part."""
    head = base64.urlsafe_b64encode(user_id.encode()).decode().rstrip("=")
    return f"{head}.{secrets.token_urlsafe(4)}.{secrets.token_urlsafe(28)}"
