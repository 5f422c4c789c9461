"""Least-privilege Redis: a redis-server loading the ACL file docker-compose.yml renders (deploy/redis, rendered by
the same script with test passwords), a real `python -m worker` as the `worker` user and a real `python -m bot` as
the `bot` user. The Midjourney flow works through to the posted grid, a button, /cancel and admin commands, with no
NOPERM in either log; FLUSHALL, CONFIG, KEYS and the like are refused to both users, and the default user is off."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from bench.redis_server import free_port, redis_server
from core import jobs, keys
from discord_emulator import DiscordEmulator
from discord_emulator.state import make_token
from tests.bot.conftest import MANAGE_GUILD
from tests.e2e.helpers import RESULT_TIMEOUT_S, BotProcess, click, eventually, imagine, job_of, result, settled
from tests.worker.worker_helpers import WORKER_START_TIMEOUT_S, WorkerProcess, wait_until

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "redis" / "users.acl.template"
RENDER = ROOT / "deploy" / "redis" / "render-acl.sh"
WORKER_NAME = "acl-worker"

REFUSED = [
    ("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "*"), ("CONFIG", "SET", "appendonly", "no"), ("KEYS", "*"),
    ("DEBUG", "SLEEP", "0"), ("MODULE", "LIST"), ("SHUTDOWN", "NOSAVE"), ("MONITOR",), ("ACL", "LIST"),
    ("SCRIPT", "FLUSH"), ("FUNCTION", "FLUSH"), ("REPLICAOF", "NO", "ONE"), ("CLIENT", "KILL", "ID", "1"),
    ("SET", "other:key", "x"),  # outside imagine:* and rq:*
]
"""Commands neither user may run (the last: a key outside the users' patterns)."""


@dataclass(frozen=True)
class AclRedis:
    url: str
    bot_url: str
    worker_url: str


def render_acl(out: Path, bot_password: str, worker_password: str) -> None:
    """The ACL file as the redis service renders it at start (deploy/redis/render-acl.sh)."""
    env = {**os.environ, "REDIS_BOT_PASSWORD": bot_password, "REDIS_WORKER_PASSWORD": worker_password}
    subprocess.run(["sh", str(RENDER), str(TEMPLATE), str(out)], env=env, check=True, timeout=30)


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedis]:
    """A redis-server with the deployment's ACL, rendered with fresh test passwords."""
    workdir = tmp_path_factory.mktemp("acl-redis")
    bot_password, worker_password = secrets.token_hex(16), secrets.token_hex(16)
    render_acl(workdir / "users.acl", bot_password, worker_password)
    assert bot_password not in (workdir / "users.acl").read_text()  # only its hash is written
    # DEBUG and MODULE are enabled here so that it is the ACL, not their own switches, that refuses them.
    switches = ("--enable-debug-command", "yes", "--enable-module-command", "yes")
    with redis_server(workdir, acl_file=workdir / "users.acl", extra_args=switches) as url:
        where = url.removeprefix("redis://")
        yield AclRedis(url, f"redis://bot:{bot_password}@{where}", f"redis://worker:{worker_password}@{where}")


@pytest.fixture(scope="module")
def acl_worker(acl_redis: AclRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WorkerProcess, int,
                                                                                                    str]]:
    """`python -m worker` as the `worker` user, its Discord on a reserved port; ready once RQ registered it."""
    port, token = free_port(), make_token(str(secrets.randbits(60)))
    process = WorkerProcess(
        acl_redis.worker_url, tmp_path_factory.mktemp("acl-worker"), WORKER_NAME, log_level="DEBUG",
        DISCORD_API_BASE=f"http://127.0.0.1:{port}/api/v10", DISCORD_TOKEN=token, WORKER_TEST_STEP_DELAY_S="0.5",
    )
    conn = redis.Redis.from_url(acl_redis.bot_url)
    try:
        def started() -> bool:
            if process.proc.poll() is not None:
                raise AssertionError(f"the worker exited with {process.proc.returncode}:\n{process.log()}")
            return bool(conn.exists(f"rq:worker:{WORKER_NAME}"))

        wait_until(started, WORKER_START_TIMEOUT_S, "the worker's RQ registration")
        yield process, port, token
    finally:
        conn.close()
        process.stop()


@pytest.fixture
async def acl_discord(acl_worker: tuple[WorkerProcess, int, str]) -> AsyncIterator[DiscordEmulator]:
    _, port, token = acl_worker
    emu = DiscordEmulator(port=port)
    emu.state.token = token
    await emu.start()
    try:
        yield emu
    finally:
        await emu.stop()


async def test_bot_and_worker_run_the_whole_flow_as_their_own_users(
    acl_redis: AclRedis, acl_worker: tuple[WorkerProcess, int, str], acl_discord: DiscordEmulator, tmp_path: Path
) -> None:
    """As `bot` and `worker`: /imagine to the posted grid, U1 to its image, /cancel of a running job, and admin
    commands (moderation, queue, audit, cancel) all work, and neither process hit a NOPERM."""
    worker, _, _ = acl_worker
    emu = acl_discord
    conn = redis.Redis.from_url(acl_redis.bot_url)
    bot = await BotProcess(emu, acl_redis.bot_url, tmp_path / "bot.log").start()
    try:
        alice = emu.add_user("alice")
        admin = emu.add_user("admin", permissions=MANAGE_GUILD)
        grid = await result(await imagine(emu, alice, "a red cat --seed 7"))
        job_id = job_of(grid)
        await settled(conn, WORKER_NAME, job_id)
        assert jobs.get(conn, job_id).state == jobs.DONE  # type: ignore[union-attr]

        upscaled = await result(await click(emu, alice, grid, "u", 1))
        await settled(conn, WORKER_NAME, job_of(upscaled))

        slow = await imagine(emu, alice, "a slow fox --q 2")
        slow_id = await eventually(lambda: _newest_job(conn, f"discord:{alice.id}", exclude={job_id}),
                                   RESULT_TIMEOUT_S, "the slow job's record")
        await eventually(lambda: jobs.get(conn, slow_id).state == jobs.RUNNING,  # type: ignore[union-attr]
                         RESULT_TIMEOUT_S, "the slow job to run")
        assert f"Stopping job `{slow_id}`" in await _reply(emu, alice, "cancel")
        await eventually(lambda: jobs.get(conn, slow_id).state == jobs.CANCELLED,  # type: ignore[union-attr]
                         RESULT_TIMEOUT_S, "the slow job to be cancelled")
        await slow.wait_original(lambda m: "ancel" in m.content, RESULT_TIMEOUT_S)

        assert "now on the block list" in await _reply(emu, admin, "admin moderation block", action="add",
                                                       entry="lighthouse")
        assert "**Moderation**" in await _reply(emu, admin, "admin moderation status")
        await _reply(emu, admin, "admin queue")
        assert "moderation block add" in await _reply(emu, admin, "admin audit")
        assert await _reply(emu, admin, "admin cancel", job_id=job_id)  # a done job: nothing to cancel, said so
        await settled(conn, WORKER_NAME)
    finally:
        await bot.stop()
        conn.close()
    assert "NOPERM" not in bot.log(), bot.log()
    assert "NOPERM" not in worker.log(), worker.log()


@pytest.mark.parametrize("user", ["bot", "worker"])
@pytest.mark.parametrize("command", REFUSED, ids=[" ".join(c) for c in REFUSED])
def test_dangerous_commands_are_refused_to_both_users(acl_redis: AclRedis, user: str, command: tuple[str, ...]
                                                      ) -> None:
    """FLUSHALL, FLUSHDB, CONFIG, KEYS, DEBUG, MODULE, SHUTDOWN, MONITOR, ACL, SCRIPT/FUNCTION FLUSH, REPLICAOF,
    CLIENT KILL and keys outside the project's are NOPERM for the bot and the workers alike."""
    conn = redis.Redis.from_url(acl_redis.bot_url if user == "bot" else acl_redis.worker_url)
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            conn.execute_command(*command)
        assert conn.ping()
    finally:
        conn.close()


def test_default_user_is_off_and_a_wrong_password_is_refused(acl_redis: AclRedis) -> None:
    """Without a user (the default user) nothing runs; a wrong password does not log in."""
    anonymous = redis.Redis.from_url(acl_redis.url)
    wrong = redis.Redis.from_url(acl_redis.bot_url.replace("bot:", "bot:x", 1))
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):
            anonymous.set(keys.job("ab" * 16), "x")
        with pytest.raises(redis.exceptions.AuthenticationError):
            wrong.ping()
    finally:
        anonymous.close()
        wrong.close()


async def _reply(emu: DiscordEmulator, user, name: str, **options) -> str:  # type: ignore[no-untyped-def]
    """Run a command and return its one ephemeral reply."""
    pending = await emu.send_slash_command(user=user, name=name, options=options or None)
    await pending.wait_acknowledged()
    await emu.wait_until(lambda: pending.ephemeral_messages, RESULT_TIMEOUT_S)
    return pending.ephemeral_messages[0].content


def _newest_job(conn: redis.Redis, owner: str, *, exclude: set[str]) -> str | None:
    for key in conn.scan_iter(f"{keys.PREFIX}:job:*"):
        parts = key.decode().split(":")
        if len(parts) == 3 and parts[2] not in exclude:
            record = jobs.get(conn, parts[2])
            if record is not None and record.owner == owner and record.kind == "grid":
                return parts[2]
    return None
