"""The bot: a discord.py `commands.Bot` with its dependencies injected, its features loaded from extensions.

Each extension registers its own commands and persistent items (`DynamicItem`s) in its `setup`; this module imports
none of them. The hot path (`/imagine`, the buttons) talks to Redis with `aredis`, redis-py's asyncio client;
RQ's enqueue and the cold paths (`/info`, `/admin`...) are plain sync functions run by `redis_call` in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import discord
import redis
import redis.asyncio
from discord import app_commands
from discord.ext import commands
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

import moderation
from bot import aredis, errors, screening
from bot.aredis import REDIS_CONNECT_TIMEOUT_S, REDIS_RETRIES, REDIS_RETRY_CAP_S, REDIS_SOCKET_TIMEOUT_S
from bot.tree import CheckedTree
from core import metrics
from core.models import ModelRegistry
from core.settings import AdminSettings, DiscordSettings, ImageSettings, JobSettings
from quotas import TiersConfig, TierSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

EXTENSIONS = ("bot.imagine", "bot.images", "bot.describe", "bot.buttons", "bot.account", "bot.admin", "bot.components")
"""The feature modules `setup_hook` loads."""

REDIS_THREADS = 32
"""Threads that run blocking Redis calls (RQ's enqueue, admin operations), so a burst never waits on the loop."""

AFTER_ACK_CONCURRENCY = 16
"""Acknowledged commands that start their jobs at once (waiting text, delivery record, enqueue); others wait."""

AFTER_ACK_QUIET_S = 0.02
"""After-ack work starts once no interaction has been waiting for its acknowledgement for this long: a burst's
interactions arrive over tens of milliseconds, and the gaps between them are not its end."""

CLOSE_GRACE_S = 10.0
"""How long `close` waits for admitted commands to finish starting their jobs (waiting text, enqueue) before it
closes the gateway and the HTTP session."""


def connect_redis(url: str) -> redis.Redis:
    """The bot's sync Redis client: bytes responses (RQ needs them), and failures that surface well inside 3 s."""
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
        image_settings: ImageSettings | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned, intents=discord.Intents.default(), help_command=None,
            tree_cls=CheckedTree, **options,
        )
        self.settings = settings
        self.redis = redis_conn
        self.aredis = aredis.twin(redis_conn)
        self.batcher = aredis.Batcher(self.aredis)
        self.read_cache = aredis.ReadCache()
        self.registry = registry
        self.job_settings = job_settings or JobSettings()
        self.tiers = tiers or TierSettings().config()
        self.admins = admins or AdminSettings()
        self.image_settings = image_settings or ImageSettings()
        self.image_rules = self.image_settings.rules()  # image links are checked before admission (core.images)
        self._redis_pool = ThreadPoolExecutor(REDIS_THREADS, thread_name_prefix="redis")
        self._writing: set[asyncio.Task[Any]] = set()
        self._background: set[asyncio.Task[Any]] = set()
        self._before_ack = 0
        self._no_one_before_ack = asyncio.Event()
        self._no_one_before_ack.set()
        self._last_before_ack = 0.0  # event-loop time the last interaction got past its acknowledgement
        self._after_ack_slots = asyncio.Semaphore(AFTER_ACK_CONCURRENCY)
        self.tree.error(self.on_tree_error)

    async def setup_hook(self) -> None:
        await aredis.warm_up(self.aredis)
        await asyncio.to_thread(moderation.warm_up)  # before the gateway: no interaction waits for it
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        if self.settings.dev_guild_id:
            guild = discord.Object(self.settings.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
        else:
            synced = await self.tree.sync()
        log.info("synced %d commands (%s)", len(synced), self.settings.dev_guild_id or "global")

    async def redis_call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `function(self.redis, *args, **kwargs)` in a thread: sync Redis work never blocks the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._redis_pool, functools.partial(function, self.redis, *args, **kwargs))

    async def pipelined(self, commands: Sequence[tuple[str, ...]]) -> list[Any]:
        """The replies to `commands`, in one round trip on the asyncio client, together with the other commands
        asked for in the same event-loop turn (`bot.aredis.Batcher`)."""
        return await self.batcher.run(commands)

    @contextlib.contextmanager
    def before_ack(self) -> Iterator[None]:
        """`with bot.before_ack():` around what an interaction runs before it is acknowledged; `after_ack` work
        waits while any is running."""
        self._before_ack += 1
        self._no_one_before_ack.clear()
        try:
            yield
        finally:
            self._before_ack -= 1
            if not self._before_ack:
                self._last_before_ack = asyncio.get_running_loop().time()
                self._no_one_before_ack.set()

    @contextlib.asynccontextmanager
    async def after_ack(self) -> AsyncIterator[None]:
        """`async with bot.after_ack():` around work that follows an acknowledgement (starting the jobs): it runs
        once no interaction has waited for its acknowledgement for AFTER_ACK_QUIET_S, at most AFTER_ACK_CONCURRENCY
        at once. In a burst,
        Discord's 3 s go to acknowledging everyone first; the waiting texts follow."""
        loop = asyncio.get_running_loop()
        async with self._after_ack_slots:
            while True:
                if self._before_ack:
                    await self._no_one_before_ack.wait()
                elif (quiet_in := self._last_before_ack + AFTER_ACK_QUIET_S - loop.time()) > 0:
                    await asyncio.sleep(quiet_in)
                else:
                    break
            yield

    def background(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run `work` in a task the bot holds on to (the event loop keeps only weak references); best effort:
        cancelled when the bot closes."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def writing(self) -> _Writing:
        """`with bot.writing():` around work that must finish once started (admitted jobs being queued): `close`
        waits for it."""
        return _Writing(self._writing)

    @property
    def still_writing(self) -> int:
        """How many tasks are inside `writing()` now (0: every admitted command has started or refunded its jobs)."""
        return len(self._writing)

    async def report(self, interaction: discord.Interaction, error: BaseException) -> None:
        """`bot.errors.report`, posting a blocked prompt's notice to the guild's moderation log afterwards; an
        admission refusal is counted for `/metrics` after the member has their answer."""
        await errors.report(interaction, error, post_notice=self._post_notice)
        refusal = metrics.refusal_command(error, via="discord")
        if refusal is not None:
            self.background(self._count(refusal))

    async def _count(self, command: tuple[str, ...]) -> None:
        try:
            await self.aredis.execute_command(*command)
        except redis.RedisError as exc:
            log.warning("refusal not counted in the metrics (%s)", type(exc).__name__)

    async def on_tree_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        """`tree.on_error`: report the command's own exception."""
        await self.report(interaction, errors.unwrap(error))

    def _post_notice(self, interaction: discord.Interaction, notice: str) -> None:
        if notice and interaction.guild_id:  # after the member's answer, in the background
            self.background(screening.post_notice(self, self.redis, str(interaction.guild_id), notice))

    async def close(self) -> None:
        # Commands already admitted finish first, while Discord's HTTP session is still open: their waiting text
        # and their enqueue (an enqueue half done is a job lost; a refund of jobs not queued needs Redis too).
        # Closed first, every pending start failed on "Session is closed" and its member's message stayed
        # "thinking" (seen at the end of `python -m bench interactions`, which stops the bot right after a burst).
        others = [task for task in self._writing if task is not asyncio.current_task()]
        if others:
            await asyncio.wait(others, timeout=CLOSE_GRACE_S)
        await super().close()
        for task in list(self._background):
            task.cancel()
        await asyncio.to_thread(self._redis_pool.shutdown, wait=True)
        await self.aredis.aclose(close_connection_pool=True)


class _Writing:
    """Registers the current task in a set while the `with` block runs."""

    def __init__(self, tasks: set[asyncio.Task[Any]]) -> None:
        self._tasks = tasks
        self._task: asyncio.Task[Any] | None = None

    def __enter__(self) -> None:
        self._task = asyncio.current_task()
        if self._task is not None:
            self._tasks.add(self._task)

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._tasks.discard(self._task)
