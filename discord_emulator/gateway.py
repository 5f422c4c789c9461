"""The gateway websocket: HELLO, heartbeats, IDENTIFY -> READY + GUILD_CREATE, RESUME, dispatches, close codes."""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

import discord_emulator.payloads as payloads

if TYPE_CHECKING:
    from discord_emulator.state import State

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_MS = 41_250
"""Milliseconds between heartbeats that HELLO asks for (Discord's usual value)."""

DISPATCH, HEARTBEAT, IDENTIFY, RESUME, RECONNECT, REQUEST_MEMBERS, INVALID_SESSION, HELLO, HEARTBEAT_ACK = (
    0,
    1,
    2,
    6,
    7,
    8,
    9,
    10,
    11,
)
CLOSE_AUTHENTICATION_FAILED = 4004
CLOSE_UNKNOWN_ERROR = 4000
"""A resumable close code: the client should RESUME."""


@dataclass
class Session:
    """A gateway session: survives its websocket so that a client can RESUME it."""

    id: str
    seq: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)
    """Every dispatch sent in this session, so that RESUME can replay those after the client's last sequence."""
    ws: web.WebSocketResponse | None = None
    identify: dict[str, Any] = field(default_factory=dict)
    resumes: int = 0
    replayed: int = 0
    """Dispatches re-sent on RESUME because the client had not received them."""


class Gateway:
    """The gateway side of the emulator; `handle` is the aiohttp websocket route."""

    def __init__(self, state: State, ws_url: str, compression_requests: list[str]) -> None:
        self.state = state
        self.ws_url = ws_url
        self.sessions: dict[str, Session] = {}
        self.compression_requests = compression_requests
        """The `compress` query value of each connection (the emulator always answers with plain text frames)."""
        self.received: list[dict[str, Any]] = []
        """Every payload clients sent, tokens redacted."""

    def live_sessions(self) -> list[Session]:
        return [s for s in self.sessions.values() if s.ws is not None and not s.ws.closed]

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        # discord.py asks for compress=zlib-stream (or zstd-stream); it decompresses only binary frames and reads
        # text frames as plain JSON, so the emulator never compresses.
        self.compression_requests.append(request.query.get("compress", ""))
        await ws.send_json({"op": HELLO, "d": {"heartbeat_interval": HEARTBEAT_INTERVAL_MS}, "s": None, "t": None})
        session: Session | None = None
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            self._record(frame)
            op, d = frame.get("op"), frame.get("d")
            if op == HEARTBEAT:
                await ws.send_json({"op": HEARTBEAT_ACK, "d": None, "s": None, "t": None})
            elif op == IDENTIFY:
                if d.get("token") != self.state.token:
                    await ws.close(code=CLOSE_AUTHENTICATION_FAILED, message=b"Authentication failed.")
                    break
                session = Session(id=secrets.token_hex(16), ws=ws, identify=d)
                self.sessions[session.id] = session
                await self._ready(session)
            elif op == RESUME:
                session = await self._resume(ws, d)
            elif op == REQUEST_MEMBERS and session is not None:
                await self.dispatch_to(session, "GUILD_MEMBERS_CHUNK", self._members_chunk(d))
        await self.state.notify()
        return ws

    async def _ready(self, session: Session) -> None:
        state = self.state
        ready = {
            "v": 10,
            "user": {**payloads.me(state.bot), "bot": True},
            "guilds": [{"id": state.guild_id, "unavailable": True}],
            "session_id": session.id,
            "resume_gateway_url": self.ws_url,
            "session_type": "normal",
            "application": {"id": state.application_id, "flags": 1 << 19},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "auth_session_id_hash": secrets.token_hex(8),
            "_trace": ['["emulated-gateway",{"micros":1}]'],
        }
        await self.dispatch_to(session, "READY", ready)
        await self.dispatch_to(session, "GUILD_CREATE", payloads.guild_create(state))

    async def _resume(self, ws: web.WebSocketResponse, d: dict[str, Any]) -> Session | None:
        session = self.sessions.get(d.get("session_id", ""))
        if session is None or d.get("token") != self.state.token:
            await ws.send_json({"op": INVALID_SESSION, "d": False, "s": None, "t": None})
            return None
        session.ws = ws
        session.resumes += 1
        last = d.get("seq") or 0
        for frame in session.sent:
            if frame["s"] > last:
                session.replayed += 1
                await ws.send_json(frame)
        await self.dispatch_to(session, "RESUMED", {"_trace": ['["emulated-gateway",{"micros":1}]']})
        return session

    def _members_chunk(self, d: dict[str, Any]) -> dict[str, Any]:
        members = [payloads.member(m) for m in self.state.members.values()]
        chunk = {"guild_id": self.state.guild_id, "members": members, "chunk_index": 0, "chunk_count": 1}
        if d.get("nonce"):
            chunk["nonce"] = d["nonce"]
        return chunk

    async def dispatch_to(self, session: Session, event: str, data: dict[str, Any]) -> None:
        """Send one dispatch (op 0) with the session's next sequence number; kept for RESUME replay."""
        session.seq += 1
        frame = {"op": DISPATCH, "t": event, "s": session.seq, "d": data}
        session.sent.append(frame)
        if session.ws is not None and not session.ws.closed:
            await session.ws.send_json(frame)
        await self.state.notify()

    async def dispatch(self, event: str, data: dict[str, Any]) -> int:
        """Send a dispatch to every session (live, or waiting to RESUME); returns how many sessions got it."""
        sessions = list(self.sessions.values())
        for session in sessions:
            await self.dispatch_to(session, event, data)
        return len(sessions)

    async def drop(self, code: int = CLOSE_UNKNOWN_ERROR, *, forget: bool = False) -> int:
        """Close every live websocket as Discord does on a gateway hiccup; sessions stay resumable unless `forget`
        (then a RESUME is answered INVALID_SESSION and the client must IDENTIFY again). Returns how many closed."""
        live = self.live_sessions()
        if forget:
            self.sessions.clear()
        for session in live:
            assert session.ws is not None
            await session.ws.close(code=code, message=b"Emulated disconnect")
        return len(live)

    async def close_all(self) -> None:
        for session in self.live_sessions():
            assert session.ws is not None
            await session.ws.close(code=1001, message=b"Emulator shutting down")

    def _record(self, frame: dict[str, Any]) -> None:
        d = frame.get("d")
        if isinstance(d, dict) and "token" in d:
            frame = {**frame, "d": {**d, "token": "<redacted>"}}
        self.received.append(frame)
