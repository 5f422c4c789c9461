"""Acknowledgement latency of `/imagine` under a burst: N interactions delivered at once, to our bot and to the floor.

Every part runs in its own process, as in production: a redis-server, the Discord API emulator
(`python -m discord_emulator`), then one bot at a time pointed at it: the floor (`python -m bench.floor_bot`, a bare
discord.py bot that only defers) and the real one (`python -m bot`). For each, the bench waits until its gateway
session is live, sends one warm-up interaction, then asks the emulator's control endpoint to deliver N `/imagine`
at once and reads back each one's latency from the INTERACTION_CREATE dispatch to the callback's arrival, measured
by the emulator's clock. `--cpu-hog N` keeps N busy-looping processes running while both are measured.

An interaction not acknowledged within Discord's 3 s is left out of `acknowledged` and counts as 3 s in the
percentiles (a lower bound: Discord has answered "Unknown interaction" by then).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.redis_server import redis_server
from discord_emulator.__main__ import READY_LINE
from discord_emulator.control import CONTROL_PREFIX, ack_latencies
from discord_emulator.control import burst as emulator_burst
from discord_emulator.server import API_PREFIX, DiscordEmulator
from discord_emulator.state import INTERACTION_ACK_DEADLINE_S

REPO = Path(__file__).resolve().parents[1]
PROMPT = "a lighthouse at dusk --ar 16:9"

EMULATOR_START_TIMEOUT_S = 30.0
BOT_START_TIMEOUT_S = 120.0
"""A bot process imports discord.py, logs in and syncs its commands: tens of seconds on a busy 2-core machine."""
STOP_TIMEOUT_S = 20.0
"""A process that has not exited this long after SIGINT is killed."""
LOG_TAIL_CHARS = 3000

BOTS = {"floor": "bench.floor_bot", "bot": "bot"}
"""What is measured, in order: name in the JSON -> module run with `python -m`."""


# -- figures -----------------------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, `q` in [0, 1]."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(latencies: list[float | None]) -> dict[str, Any]:
    """count, acknowledged (within 3 s), p50_s, p99_s, max_s; an unacknowledged one counts as 3 s."""
    seconds = [INTERACTION_ACK_DEADLINE_S if s is None else s for s in latencies]
    return {
        "count": len(latencies),
        "acknowledged": sum(1 for s in latencies if s is not None),
        "p50_s": round(percentile(seconds, 0.5), 4),
        "p99_s": round(percentile(seconds, 0.99), 4),
        "max_s": round(max(seconds), 4),
    }


async def burst(emu: DiscordEmulator, count: int, prompt: str = PROMPT) -> list[float | None]:
    """In process: `count` /imagine at once to the bot connected to `emu`; each one's ack latency (None: not in 3 s).

    Returns once each acknowledged command has shown "Waiting to start", so that closing the bot cuts nothing short.
    """
    pending = await emulator_burst(emu, count, "imagine", {"prompt": prompt})
    acknowledged = [p for p in pending if p.record.callback]
    await asyncio.gather(*(p.wait_original(lambda m: "Waiting to start" in m.content, 60) for p in acknowledged))
    return ack_latencies(pending)


# -- processes ---------------------------------------------------------------------------------------------------------


def tail(path: Path) -> str:
    return path.read_text(errors="replace")[-LOG_TAIL_CHARS:] if path.exists() else "(no log)"


async def stop(proc: asyncio.subprocess.Process) -> None:
    """SIGINT (Ctrl-C), then SIGKILL if it lingers."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@contextlib.contextmanager
def cpu_hogs(count: int) -> Iterator[None]:
    """`count` processes that spin a core each until the block ends."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


@dataclass
class EmulatorProcess:
    """`python -m discord_emulator` on a free port, and the bot environment it printed."""

    proc: asyncio.subprocess.Process
    env: dict[str, str]
    """DISCORD_API_BASE, DISCORD_GATEWAY_URL, DISCORD_TOKEN, DEV_GUILD_ID."""

    @property
    def control(self) -> str:
        return self.env["DISCORD_API_BASE"].removesuffix(API_PREFIX) + CONTROL_PREFIX


async def start_emulator(log_path: Path) -> EmulatorProcess:
    """Start the emulator; returns once it printed its settings (it is listening by then)."""
    with open(log_path, "wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "discord_emulator", "--port", "0",
            cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=log,
        )  # fmt: skip
    assert proc.stdout is not None
    env: dict[str, str] = {}
    try:
        async with asyncio.timeout(EMULATOR_START_TIMEOUT_S):
            while (line := (await proc.stdout.readline()).decode()) and line.strip() != READY_LINE:
                name, sep, value = line.strip().partition("=")
                if sep and name.isupper():
                    env[name] = value
    except TimeoutError:
        line = ""
    if not line:
        await stop(proc)
        raise RuntimeError(f"python -m discord_emulator did not start:\n{tail(log_path)}")
    return EmulatorProcess(proc, env)


async def live_sessions(http: aiohttp.ClientSession, emu: EmulatorProcess, live: int, timeout_s: float) -> None:
    """Until exactly `live` gateway sessions are connected to the emulator."""
    params = {"live": str(live), "timeout_s": str(timeout_s)}
    async with http.get(f"{emu.control}/sessions", params=params) as response:
        if response.status != 200:
            raise RuntimeError(f"waited {timeout_s:g} s for {live} live gateway session(s): {await response.json()}")


async def start_bot(
    http: aiohttp.ClientSession,
    emu: EmulatorProcess,
    module: str,
    redis_url: str,
    log_path: Path,
    extra_env: dict[str, str] | None = None,
) -> asyncio.subprocess.Process:
    """`python -m <module>` aimed at the emulator; returns once its gateway session is live (commands synced)."""
    env = os.environ | emu.env | {"REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"} | (extra_env or {})
    with open(log_path, "wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    connected = asyncio.ensure_future(live_sessions(http, emu, 1, BOT_START_TIMEOUT_S))
    exited = asyncio.ensure_future(proc.wait())
    await asyncio.wait({connected, exited}, return_when=asyncio.FIRST_COMPLETED)
    if not connected.done():
        connected.cancel()
        raise RuntimeError(f"python -m {module} exited with {proc.returncode} before it connected:\n{tail(log_path)}")
    exited.cancel()
    try:
        connected.result()
    except RuntimeError:
        await stop(proc)
        raise
    return proc


async def remote_burst(http: aiohttp.ClientSession, emu: EmulatorProcess, count: int) -> list[float | None]:
    """Ask the emulator to deliver `count` /imagine at once; each one's ack latency (None: not within 3 s)."""
    body = {"count": count, "command": "imagine", "options": {"prompt": PROMPT}}
    async with http.post(f"{emu.control}/burst", json=body) as response:
        answer = await response.json()
        if response.status != 200:
            raise RuntimeError(f"the emulator refused the burst: {answer}")
        return list(answer["latencies_s"])


async def measure(
    http: aiohttp.ClientSession, emu: EmulatorProcess, module: str, count: int, redis_url: str, log_path: Path
) -> dict[str, Any]:
    """Start one bot, warm it up with one interaction, time a burst of `count`, stop it; the burst's summary."""
    proc = await start_bot(http, emu, module, redis_url, log_path)
    try:
        await remote_burst(http, emu, 1)
        latencies = await remote_burst(http, emu, count)
    finally:
        await stop(proc)
    await live_sessions(http, emu, 0, STOP_TIMEOUT_S)
    return summary(latencies)


async def _run(count: int, cpu_hog: int, redis_url: str, workdir: Path) -> dict[str, Any]:
    emu = await start_emulator(workdir / "emulator.log")
    try:
        async with aiohttp.ClientSession() as http:
            with cpu_hogs(cpu_hog):
                figures = {
                    name: await measure(http, emu, module, count, redis_url, workdir / f"{name}.log")
                    for name, module in BOTS.items()
                }
    finally:
        await stop(emu.proc)
    floor_p99 = figures["floor"]["p99_s"]
    ratio = round(figures["bot"]["p99_s"] / floor_p99, 2) if floor_p99 else None
    return {"n": count, "cpu_hog": cpu_hog, **figures, "p99_ratio": ratio}


def run(count: int = 200, cpu_hog: int = 0) -> dict[str, Any]:
    """Start Redis and the emulator; measure the floor then the bot, each in its own process; the JSON figures."""
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp)) as url:
        return asyncio.run(_run(count, cpu_hog, url, Path(tmp)))
