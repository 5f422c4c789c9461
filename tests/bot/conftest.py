"""Fixtures for the bot's tests: the emulator, a real Redis, and ImagineBot connected to both in-process."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis
from pydantic import SecretStr

from bot.client import ImagineBot
from core import delivery as deliveries
from core import jobs, keys, prompt
from core.delivery import Delivery
from core.models import ModelRegistry, tiny_model
from core.safety import Safety, with_safety
from core.settings import AdminSettings, DiscordSettings, JobSettings
from core.spec import JobSpec
from discord_emulator import DiscordEmulator, Message, PendingInteraction, User
from discord_emulator.fixtures import GUILD_READY_TIMEOUT_S, discord_emulator, running_client  # noqa: F401
from quotas.tiers import MAX_FAST_GPU_S, Tier, TiersConfig, load_config

REGISTRY = ModelRegistry((tiny_model(), tiny_model("other")))

OPEN = Tier("open", MAX_FAST_GPU_S, True, 1000, 1000, 1000, 100, 10_000)
OPEN_TIERS = dataclasses.replace(load_config(), tiers={**load_config().tiers, "open": OPEN}, default_tier="open")
"""The shipped tiers plus a default tier that limits nothing, so tests about other things never meet a quota."""


@contextlib.asynccontextmanager
async def running_bot(
    emu: DiscordEmulator,
    conn: redis.Redis,
    *,
    tiers: TiersConfig = OPEN_TIERS,
    admins: AdminSettings | None = None,
    **settings: Any,
) -> AsyncIterator[ImagineBot]:
    """An ImagineBot logged in to the emulator (commands synced by its setup_hook); closed on exit."""
    discord_settings = DiscordSettings(
        discord_token=SecretStr(emu.token), discord_api_base=emu.api_base, discord_gateway_url=emu.ws_url, **settings
    )
    bot = ImagineBot(
        settings=discord_settings,
        redis_conn=conn,
        registry=REGISTRY,
        job_settings=JobSettings(),
        tiers=tiers,
        admins=admins or AdminSettings(admin_role_ids="", admin_user_ids=""),
        guild_ready_timeout=GUILD_READY_TIMEOUT_S,
    )
    async with running_client(emu, bot):
        yield bot


@pytest.fixture
async def bot(discord_emulator: DiscordEmulator, redis_conn: redis.Redis) -> AsyncIterator[ImagineBot]:  # noqa: F811
    async with running_bot(discord_emulator, redis_conn) as client:
        yield client


@pytest.fixture
def alice(discord_emulator: DiscordEmulator) -> User:  # noqa: F811
    return discord_emulator.add_user("alice")


@pytest.fixture
def bob(discord_emulator: DiscordEmulator) -> User:  # noqa: F811
    return discord_emulator.add_user("bob")


MANAGE_GUILD = 1 << 5
"""Discord's Manage Server permission bit."""


@pytest.fixture
def admin(discord_emulator: DiscordEmulator) -> User:  # noqa: F811
    """A member with Manage Server."""
    return discord_emulator.add_user("admin", permissions=MANAGE_GUILD)


def done_job(
    conn: redis.Redis, text: str = "a red cat --seed 7", owner: str = "discord:1", *, guild: str = "",
    channel: str = "", nsfw: bool = False,
) -> tuple[str, JobSpec]:
    """A finished job record, as the worker leaves it; with `guild`, made in that server's `channel` (age-restricted
    when `nsfw`: its outputs skipped the safety check), as the bot records it."""
    (spec,) = prompt.parse(text, REGISTRY)
    job_id = jobs.new_job_id()
    if guild:
        spec = with_safety(spec, Safety(check_outputs=not nsfw))
        owner_id = owner.removeprefix("discord:")
        deliveries.save(conn, job_id, Delivery("1", channel or "1", owner_id, guild), interaction_token=None)
    jobs.create(conn, job_id, spec, owner)
    jobs.mark_running(conn, job_id, "test-worker")
    jobs.finish(conn, job_id, jobs.DONE)
    return job_id, spec


def store_images(conn: redis.Redis, job_id: str, count: int = 4) -> None:
    """Store a done job's images as the worker does (placeholder bytes: the bot only checks they are there)."""
    for k in range(count):
        conn.set(keys.job_image(job_id, k), b"\x89PNG image")


async def post_result(emu: DiscordEmulator, components: list[dict[str, Any]], content: str = "result") -> Message:
    """A channel message carrying raw components, as the worker posts them with the bot token."""
    url = f"{emu.api_base}/channels/{emu.state.default_channel.id}/messages"
    headers = {"Authorization": f"Bot {emu.token}"}
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.post(url, json={"content": content, "components": components}) as response,
    ):
        assert response.status == 200
        posted = await response.json()
    return emu.state.messages[posted["id"]]


async def choose(emu: DiscordEmulator, user: User, message: Message, custom_id: str, value: str) -> PendingInteraction:
    """A user picking `value` in a select menu the message carries."""
    return await emu.choose(user=user, message=message, custom_id=custom_id, values=[value])


def rq_job_keys(conn: redis.Redis) -> list[bytes]:
    return list(conn.scan_iter("rq:job:*"))


async def eventually(predicate: Any, timeout: float = 5.0) -> Any:
    """The predicate's first truthy value: waits for a Redis-side condition (the emulator's wait_until sees only
    the emulator's own state), re-checked every few ms; fails after `timeout` seconds."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.005)
    return value


def job_ids(conn: redis.Redis, owner: str) -> list[str]:
    """The owner's job ids, newest first (core.userjobs' list)."""
    from core import keys

    return [i.decode() for i in conn.lrange(keys.user_jobs(owner), 0, -1)]
