"""End-to-end fixtures: one real `python -m worker` for all e2e tests; per test, the Discord API emulator (in this
process, on the port the worker was told at start), a Redis holding nothing but that worker's registration, and real
`python -m bot` processes. Both processes log at DEBUG to files: the bots' in the test's tmp_path, the worker's in the
session's tmp dir."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from bench.redis_server import free_port
from core import keys
from discord_emulator import DiscordEmulator
from discord_emulator.state import make_token
from tests.e2e.helpers import LANES, RESULT_TIMEOUT_S, BotProcess, eventually, image_env, quiet
from tests.worker.worker_helpers import WORKER_START_TIMEOUT_S, WorkerProcess, wait_until

WORKER_NAME = "e2e-worker"

STEP_DELAY_S = 0.25
"""The shared worker sleeps this long after each sampling step (WORKER_TEST_STEP_DELAY_S): a 4-step grid takes
about 1 s, shorter than the worker's 1.5 s between two edits of a message, and an 8-step one (`--q 2`) about 2 s,
long enough for a `(NN%)` edit with its preview."""

PREVIEW_INTERVAL_S = 0.5
"""WORKER_PREVIEW_INTERVAL_S: a preview every two steps, so the `(NN%)` edit at 1.5 s carries one."""

WORKER_KEYS = frozenset({
    keys.worker_stats(WORKER_NAME),
    f"rq:worker:{WORKER_NAME}",
    "rq:workers",
    *(f"rq:workers:{lane}" for lane in LANES),
    "rq:queues",
})
"""What the worker writes to Redis at start-up (its stats hash and RQ's registration of it and its lanes): all that
a test's Redis holds when it starts."""

MAINTENANCE_KEYS = frozenset({"rq:clean_groups", "imagine:jobs:lost-sweep"})
"""RQ's maintenance lock and the sweep for lost jobs' (`worker.lost`), which an idle worker sets (with a TTL) every
maintenance interval whatever else happens."""


@dataclass
class SharedWorker:
    """The e2e tests' worker process, and what it was told about Discord."""

    process: WorkerProcess
    name: str
    bot_token: str
    discord_port: int

    def log(self) -> str:
        return self.process.log()


@pytest.fixture(scope="package")
def worker(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedWorker]:
    """`python -m worker` on the tiny model at DEBUG, its Discord at 127.0.0.1:<a port reserved for these tests'
    emulators> with a bot token of its own; ready once its stats key and RQ registration are in Redis. Package
    scope: it is killed after the last e2e test, before other packages' tests share the session's Redis and lanes."""
    port, token = free_port(), make_token(str(secrets.randbits(60)))
    # Earlier packages' tests flush Redis when they start, not when they end: jobs one of them left on the tiny
    # lanes would be the new worker's first work, racing the per-test cleanup below.
    redis.Redis.from_url(redis_url).flushall()
    process = WorkerProcess(
        redis_url, tmp_path_factory.mktemp("e2e-worker"), WORKER_NAME, log_level="DEBUG",
        DISCORD_API_BASE=f"http://127.0.0.1:{port}/api/v10", DISCORD_TOKEN=token,
        WORKER_TEST_STEP_DELAY_S=str(STEP_DELAY_S), WORKER_PREVIEW_INTERVAL_S=str(PREVIEW_INTERVAL_S),
        **image_env(port),
    )
    conn = redis.Redis.from_url(redis_url)
    try:
        def started() -> bool:
            if process.proc.poll() is not None:
                raise AssertionError(f"the worker exited with {process.proc.returncode}:\n{process.log()}")
            return all(conn.exists(key) for key in WORKER_KEYS)

        wait_until(started, WORKER_START_TIMEOUT_S, "the worker's stats key and RQ registration")
        yield SharedWorker(process, WORKER_NAME, token, port)
    finally:
        conn.close()
        process.stop()


@pytest.fixture
def redis_conn(redis_url: str, worker: SharedWorker) -> Iterator[redis.Redis]:
    """The session's Redis with every key deleted but the shared worker's start-up keys (the worker is idle: the
    previous test waited for it), so each test starts from a just-started deployment."""
    conn = redis.Redis.from_url(redis_url)
    assert worker.process.proc.poll() is None, f"the shared worker died:\n{worker.log()}"
    stale = [k for k in conn.scan_iter() if k.decode() not in WORKER_KEYS]
    if stale:
        conn.delete(*stale)
    assert {k.decode() for k in conn.scan_iter()} == WORKER_KEYS
    yield conn
    conn.close()


@pytest.fixture
async def discord(worker: SharedWorker, redis_conn: redis.Redis) -> AsyncIterator[DiscordEmulator]:
    """The emulator on the worker's Discord port with the worker's bot token; on exit it waits until the worker
    has nothing left to send (so nothing of this test reaches the next one's emulator), then stops."""
    emu = DiscordEmulator(port=worker.discord_port)
    emu.state.token = worker.bot_token
    await emu.start()
    try:
        yield emu
        await eventually(lambda: quiet(redis_conn, worker.name), RESULT_TIMEOUT_S, "the worker to finish its jobs")
    finally:
        await emu.stop()


LOG_TAIL_LINES = 40
BOTS = pytest.StashKey[list[BotProcess]]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A failed test's report ends with the tails of its bots' logs (the worker's is in the session's tmp dir)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed:
        for bot in item.stash.get(BOTS, []):
            tail = "\n".join(bot.log().splitlines()[-LOG_TAIL_LINES:])
            report.sections.append((f"{bot.log_path.name} (last {LOG_TAIL_LINES} lines)", tail))


@pytest.fixture
async def start_bot(
    discord: DiscordEmulator, redis_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[[], Awaitable[BotProcess]]]:
    """Starts a `python -m bot` process (logs in tmp_path/bot-N.log) and waits until it is connected; every one
    still running at the end is stopped (SIGINT, then SIGKILL)."""
    started: list[BotProcess] = []
    request.node.stash[BOTS] = started

    async def start() -> BotProcess:
        bot = BotProcess(discord, redis_url, tmp_path / f"bot-{len(started) + 1}.log")
        started.append(bot)
        return await bot.start()

    yield start
    for bot in started:
        if bot.proc is not None:
            await bot.stop()


@pytest.fixture
async def bot(start_bot: Callable[[], Awaitable[BotProcess]]) -> BotProcess:
    """One connected `python -m bot` process."""
    return await start_bot()
