"""The processes of a `python -m bench chaos` run that it stops and starts: redis-server with its append-only file,
and the workers (killed with SIGKILL and replaced)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from bench.interactions import REPO, EmulatorProcess
from bench.redis_server import free_port, redis_command, wait_ready
from core.models import tiny_model

MODEL = tiny_model()
"""The pipeline the workers render with."""

WORKER_START_TIMEOUT_S = 120.0
"""A worker imports torch and builds the tiny pipeline: seconds, more on a busy 2-core machine."""

POLL_S = 0.5
"""Interval of a member's and the controller's polls (Redis publishes nothing they could wait on instead)."""


async def quietly(read: Callable[[], Any]) -> Any:
    """`read()` (a Redis read), or None while Redis is down: the bench's own reads ride out its restarts."""
    try:
        return read()
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
        return None


class RedisProcess:
    """redis-server with an append-only file on a fixed port, stopped and started again from that file."""

    def __init__(self, workdir: Path) -> None:
        self.workdir, self.port = workdir, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = redis_command(self.workdir, self.port, appendonly=True)
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_ready(self.proc, self.url, self.workdir)

    def stop(self) -> None:
        """SIGTERM: redis-server flushes its AOF and exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


class Workers:
    """The worker processes; each replacement gets a new name (RQ keeps a dead worker's name registered a while)."""

    def __init__(self, redis_url: str, emu: EmulatorProcess, workdir: Path) -> None:
        self.workdir, self.started = workdir, 0
        self.env = os.environ | {
            "REDIS_URL": redis_url, "MODEL": MODEL.source, "WORKER_DEVICE": "cpu", "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1", "DISCORD_API_BASE": emu.env["DISCORD_API_BASE"],
            "DISCORD_TOKEN": emu.env["DISCORD_TOKEN"],
        }  # fmt: skip
        self.running: dict[str, tuple[subprocess.Popen[bytes], float]] = {}

    def start(self) -> str:
        self.started += 1
        name = f"chaos-worker-{self.started}"
        with open(self.workdir / f"{name}.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "worker", "--name", name], cwd=REPO, env=self.env,
                                    stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        self.running[name] = (proc, time.time())
        return name

    async def ready(self, conn: redis.Redis, name: str) -> float:
        """Until the worker registered with RQ; the Unix time it did."""
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        while not await quietly(lambda: conn.exists(f"rq:worker:{name}")):
            proc = self.running[name][0]
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {name} did not start (exit {proc.returncode}); see its log")
            await asyncio.sleep(POLL_S)
        return time.time()

    def kill_oldest(self) -> str:
        name = min(self.running, key=lambda n: self.running[n][1])
        proc, _ = self.running.pop(name)
        proc.kill()
        proc.wait()
        return name

    def stop_all(self) -> None:
        for proc, _ in self.running.values():
            proc.terminate()
        for proc, _ in self.running.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
