"""The bot: a discord.py `commands.Bot` with its dependencies injected, its features loaded from extensions."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import discord
import redis
from discord.ext import commands
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

import quotas
import quotas.ledger  # the outcome hook: to be replaced by explicit calls (house issue)
from bot import errors
from core.models import ModelRegistry
from core.settings import AdminSettings, DiscordSettings, JobSettings
from quotas import TiersConfig, TierSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

EXTENSIONS = ("bot.imagine", "bot.buttons", "bot.account", "bot.admin")
"""The feature modules `setup_hook` loads."""

REDIS_THREADS = 32
"""Threads that run blocking Redis calls, so a burst of interactions never waits on the event loop."""


REDIS_CONNECT_TIMEOUT_S = 0.5
"""A Redis that does not accept a connection within this counts as unreachable."""

REDIS_SOCKET_TIMEOUT_S = 2.0
"""A command Redis does not answer within this fails (the user is told to try again)."""

REDIS_RETRIES = 2
"""Retries of a failed Redis command, with backoff capped at REDIS_RETRY_CAP_S: redis-py's default (3 retries,
up to about 4 s against a refused port) would outlast Discord's 3-second acknowledgement window."""

REDIS_RETRY_CAP_S = 0.2


def connect_redis(url: str) -> redis.Redis:
    """The bot's Redis client: bytes responses (RQ needs them), and failures that surface well inside 3 s."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
        socket_timeout=REDIS_SOCKET_TIMEOUT_S,
        retry=Retry(ExponentialBackoff(cap=REDIS_RETRY_CAP_S, base=0.05), REDIS_RETRIES),
        health_check_interval=30,
    )


TOKEN_LOGGERS = ("discord.webhook.async_", "discord.webhook.sync", "discord.gateway", "discord.http")
"""discord.py loggers whose DEBUG lines print webhook URLs or whole gateway events, which carry interaction tokens."""


def keep_tokens_out_of_logs() -> None:
    """Cap discord.py's webhook loggers at INFO, whatever the root level: their DEBUG lines contain tokens."""
    for name in TOKEN_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)


class ImagineBot(commands.Bot):
    """The `/imagine` bot. Every piece of state lives in Redis; the process can restart at any time."""

    def __init__(
        self,
        *,
        settings: DiscordSettings,
        redis_conn: redis.Redis,
        registry: ModelRegistry,
        job_settings: JobSettings | None = None,
        tiers: TiersConfig | None = None,
        admins: AdminSettings | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned, intents=discord.Intents.default(), help_command=None, **options
        )
        self.settings = settings
        self.redis = redis_conn
        self.registry = registry
        self.job_settings = job_settings or JobSettings()
        self.tiers = tiers or TierSettings().config()
        self.admins = admins or AdminSettings()
        self._redis_pool = ThreadPoolExecutor(REDIS_THREADS, thread_name_prefix="redis")
        self.tree.error(errors.on_tree_error)

    async def setup_hook(self) -> None:
        from bot import account, buttons

        quotas.ledger.install_outcome_hook()  # a cancel from this process refunds its reservation at once
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        self.add_dynamic_items(*buttons.DYNAMIC_ITEMS, *account.DYNAMIC_ITEMS)
        if self.settings.dev_guild_id:
            guild = discord.Object(self.settings.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
        else:
            synced = await self.tree.sync()
        log.info("synced %d commands (%s)", len(synced), self.settings.dev_guild_id or "global")

    async def redis_call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `function(self.redis, *args, **kwargs)` in a thread: Redis never blocks the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._redis_pool, functools.partial(function, self.redis, *args, **kwargs))

    async def close(self) -> None:
        await super().close()
        # Let Redis work already handed to the pool finish (an enqueue half done is a job lost or a job that lands
        # after the bot said it stopped), without blocking the event loop while it does.
        await asyncio.to_thread(self._redis_pool.shutdown, wait=True)
