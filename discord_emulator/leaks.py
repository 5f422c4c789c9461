"""Secret scanning over everything the bot sent to the emulator: a token or key must never show up in any of it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from discord_emulator.server import DiscordEmulator


def leaks(emu: DiscordEmulator, secret: str) -> list[str]:
    """Where `secret` appears in recorded requests (headers minus Authorization, query, bodies, file names),
    gateway frames (IDENTIFY/RESUME tokens are redacted), or any message's content, embeds, components or bytes."""
    if not secret:
        raise ValueError("an empty secret matches everything")
    found: list[str] = []
    for n, r in enumerate(emu.state.requests):
        parts = {"headers": r.headers, "query": r.query, "json": r.json, "files": r.files}
        found += [f"request {n} {r.method} {r.path} {k}" for k, v in parts.items() if secret in json.dumps(v)]
        if secret in r.path:
            found.append(f"request {n} {r.method} path")
    found += [f"gateway frame {n}" for n, f in enumerate(emu.gateway.received) if secret in json.dumps(f)]
    needle = secret.encode()
    for m in emu.state.messages.values():
        for revision in m.history:
            text = json.dumps([revision.content, revision.embeds, revision.components])
            if secret in text or any(needle in a.data or secret in a.filename for a in revision.attachments):
                found.append(f"message {m.id} in channel {m.channel_id}")
                break
    return found
