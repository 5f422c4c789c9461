"""Faults the emulator answers instead of Discord's real reply: rate limits (429, with the headers discord.py reads)
and server errors, for a number of requests or a fraction of them (`DiscordEmulator.inject`)."""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field

from aiohttp import web

import discord_emulator.payloads as payloads
from discord_emulator.rest import json_response


@dataclass
class Injection:
    """A fault to answer instead of the real handler: `times` more requests matching method and path regex (with
    `rate` < 1, each matching request draws: only that fraction of them is answered with the fault)."""

    method: str
    path: re.Pattern[str]
    status: int
    times: int
    retry_after_s: float
    is_global: bool
    rate: float = 1.0
    rng: random.Random = field(default_factory=random.Random)
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if not (self.times > 0 and self.method in ("*", method) and self.path.search(path)):
            return False
        return self.rate >= 1.0 or self.rng.random() < self.rate

    def response(self) -> web.Response:
        if self.status != 429:
            return json_response({"message": f"{self.status}: Emulated server error", "code": 0}, self.status)
        headers = payloads.ratelimit_headers("emulated-injected", self.retry_after_s, remaining=0)
        # discord.py takes a 429 without Via for a Cloudflare ban and does not retry it.
        headers |= {"Via": "1.1 google", "Retry-After": str(math.ceil(self.retry_after_s))}
        headers |= {"X-RateLimit-Scope": "global" if self.is_global else "user"}
        if self.is_global:
            headers["X-RateLimit-Global"] = "true"
        body = {
            "message": "You are being rate limited.",
            "retry_after": self.retry_after_s,
            "global": self.is_global,
            "code": 0,
        }
        return json_response(body, 429, headers)
