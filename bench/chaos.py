"""`python -m bench chaos`: members' jobs through every fault at once, then a count of what became of each one.

Every part is its own process, as in production: a redis-server with an append-only file, the Discord API emulator
(`python -m discord_emulator`), one `python -m bot` and two `python -m worker` on the tiny pipeline. `members`
coroutines of this process act as members through the emulator's control endpoint (`discord_emulator/control.py`):
each one in turn runs /imagine, clicks U, V or re-roll under its latest grid, or runs /imagine then /cancel, one job
at a time, no faster than the free tier's requests per minute, until `jobs` jobs were asked for in all. Meanwhile a
controller:

- kills the longest-running worker with SIGKILL every `kill_every_s` and starts a new one in its place;
- stops Redis (SIGTERM: it writes its AOF) `redis_restarts` times, spread over the run, and starts it again from
  its AOF after REDIS_DOWN_S;
- answers `error_rate` of every Discord REST call with a 429 or a 500/502 (the emulator's injection), from the first
  job to the last;
- closes the bot's gateway websocket once, half-way.

Then the faults stop and the bench waits until every job is final and every outcome delivered, and counts, reading
Redis and the emulator (`bench.chaos_count`): each job must be final with its outcome shown exactly once (a done
job's image posted in exactly one message revision, a failed one confirmed by Discord, a cancelled one by Discord or
the /cancel reply); each member's ledger must balance (every reservation applied once: none left, nothing held, the
fast time charged equal to the GPU time of their done jobs). A command the bot refused with an answer (Redis down:
"try again") made no job and is counted as refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import redis

from bench.chaos_count import Fault, count, job_ids, job_of, outcome_shown, recoveries, running_jobs, settled
from bench.chaos_procs import MODEL, POLL_S, RedisProcess, Workers, quietly
from bench.interactions import EmulatorProcess, live_sessions, start_bot, start_emulator, stop
from core import buttons, jobs, keys

LANES = tuple(keys.queue_name(MODEL.name, mode) for mode in ("fast", "relax"))

REDIS_DOWN_S = 3.0
"""How long Redis stays stopped at each restart."""

MEMBER_PACE_S = 10.5
"""Least time between two jobs of one member: the free tier allows 6 requests a minute."""

JOB_WAIT_S = 180.0
"""How long a member waits for its job's outcome before it goes on (the job is still counted at the end)."""

ANSWER_WAIT_S = 10.0
"""How long a member waits for a command to make a job or be answered otherwise (refused, or not answered)."""

SETTLE_TIMEOUT_S = 180.0
"""After the faults stop, how long every job may take to end and every outcome to be delivered."""

FAULT_RECOVERY_LIMIT_S = 120.0
"""What a fault's recovery must stay under (the issue's 2 minutes)."""


ACTIONS = (("imagine", 4), ("u", 2), ("v", 2), ("reroll", 1), ("cancel", 1))
"""What a member does next, with its weight; a button needs a grid to click under, else it runs /imagine."""


@dataclass(frozen=True)
class ChaosConfig:
    """The size of the run and of its faults."""

    jobs: int = 200  # job-making commands and clicks in all
    members: int = 20  # members acting at once
    kill_every_s: float = 20.0  # a worker is SIGKILLed this often
    redis_restarts: int = 2  # Redis restarts from its AOF, spread over the run
    gateway_drops: int = 1  # gateway websocket closes, spread over the run
    error_rate: float = 0.1  # fraction of Discord REST calls answered with a 429 or 5xx
    seed: int = 1  # members' choices and the injected faults' draws


@dataclass
class Submitted:
    """One job-making command or click, and what came of it as the member saw it."""

    member: str
    action: str
    interaction_id: str
    job_id: str | None = None
    answer: str = ""  # "job", "refused" (answered without a job), "unanswered"
    text: str = ""  # what a refusal said


_T0 = time.monotonic()


def note(text: str) -> None:
    """A progress line on stderr (the JSON figures go to stdout): what a stuck run was doing shows in its log."""
    print(f"[chaos {time.monotonic() - _T0:6.1f} s] {text}", file=sys.stderr, flush=True)


# -- members -----------------------------------------------------------------------------------------------------


class Driver:
    """The members' side: commands and clicks through the emulator's control endpoint, outcomes read from Redis."""

    def __init__(self, http: aiohttp.ClientSession, control: str, conn: redis.Redis, config: ChaosConfig) -> None:
        self.http, self.control, self.conn, self.config = http, control, conn, config
        self.submitted: list[Submitted] = []
        self.budget = config.jobs

    async def post(self, route: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """A control POST; None when nothing was dispatched (no live gateway session: the drop)."""
        async with self.http.post(f"{self.control}/{route}", json=body) as response:
            answer: dict[str, Any] = await response.json()
            return answer if response.status == 200 else None

    async def interaction(self, interaction_id: str) -> dict[str, Any]:
        async with self.http.get(f"{self.control}/interactions/{interaction_id}") as response:
            answer: dict[str, Any] = await response.json()
            return answer

    async def dispatch(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST until the bot is there to receive it (the gateway comes back within seconds of a drop)."""
        while (sent := await self.post(route, body)) is None:
            await asyncio.sleep(POLL_S)
        return sent

    async def member(self, name: str, rng: random.Random) -> None:
        """One member's jobs, one at a time, until the run's budget of jobs is spent."""
        grid: tuple[str, str] | None = None  # (message id, job id) of the member's latest grid
        owner = ""
        last_at = 0.0
        while self.budget > 0:
            self.budget -= 1
            action = rng.choices([a for a, _ in ACTIONS], [w for _, w in ACTIONS])[0]
            if action in ("u", "v", "reroll") and grid is None:
                action = "imagine"
            await asyncio.sleep(max(0.0, last_at + MEMBER_PACE_S - time.monotonic()))
            last_at = time.monotonic()
            before = await self.latest_job(owner) if owner else None
            if action in ("imagine", "cancel"):
                prompt = f"a lighthouse in a storm, number {rng.randrange(10**6)}"
                options = {"prompt": prompt}
                sent = await self.dispatch("command", {"user": name, "command": "imagine", "options": options})
            else:
                assert grid is not None
                index = 0 if action == "reroll" else rng.randint(1, 4)
                custom_id = buttons.custom_id(action, grid[1], index)
                sent = await self.dispatch("click", {"user": name, "message_id": grid[0], "custom_id": custom_id})
            owner = f"discord:{sent['user_id']}"
            record = Submitted(name, action, sent["id"])
            self.submitted.append(record)
            record.job_id = await self.new_job(owner, before, sent["id"], record)
            note(f"{name}: {action} -> {record.job_id or record.answer}")
            if record.job_id is None:
                continue
            if action == "cancel":
                await self.dispatch("command", {"user": name, "command": "cancel"})
            final = await self.outcome(record.job_id)
            note(f"{name}: job {record.job_id} " + (final.state if final is not None else "NOT FINAL OR NOT SHOWN"))
            if final is not None and final.state == jobs.DONE and final.kind in ("grid", "vary"):
                shown = (await self.interaction(sent["id"]))["original"]
                if shown and shown["png_revisions"] and job_of(shown["custom_ids"]) == record.job_id:
                    grid = (shown["id"], record.job_id)

    async def latest_job(self, owner: str) -> str | None:
        value = await quietly(lambda: self.conn.lindex(keys.user_jobs(owner), 0))
        return value.decode() if isinstance(value, bytes) else None

    async def new_job(self, owner: str, before: str | None, interaction_id: str, record: Submitted) -> str | None:
        """The job the command made (the member's newest); None when it was answered without one, or not at all."""
        deadline = time.monotonic() + ANSWER_WAIT_S
        while time.monotonic() < deadline:
            latest = await self.latest_job(owner)
            if latest is not None and latest != before:
                record.answer = "job"
                return latest
            seen = await self.interaction(interaction_id)
            said = seen["ephemerals"] or seen["followups"] or ([seen["original"]] if seen["acked"] == 4 else [])
            if said:  # an answer in words (ephemeral, a follow-up or a message in reply), and no job
                record.answer, record.text = "refused", said[0]["content"][:80]
                return None
            await asyncio.sleep(POLL_S)
        record.answer = "unanswered"
        return None

    async def outcome(self, job_id: str) -> jobs.JobRecord | None:
        """The job's record once it is final and its outcome delivered; None if that takes over JOB_WAIT_S."""
        deadline = time.monotonic() + JOB_WAIT_S
        while time.monotonic() < deadline:
            record = await quietly(lambda: jobs.get(self.conn, job_id))
            if record is not None and await quietly(functools.partial(outcome_shown, self.conn, record)):
                return record
            await asyncio.sleep(POLL_S)
        return None


# -- faults ------------------------------------------------------------------------------------------------------


class Controller:
    """Causes the faults while the members act: worker kills on a clock, Redis restarts and gateway drops at
    fractions of the jobs asked for, Discord errors throughout."""

    def __init__(self, http: aiohttp.ClientSession, emu: EmulatorProcess, redis_proc: RedisProcess,
                 workers: Workers, conn: redis.Redis, config: ChaosConfig, driver: Driver) -> None:  # fmt: skip
        self.http, self.emu, self.redis_proc, self.workers = http, emu, redis_proc, workers
        self.conn, self.config, self.driver = conn, config, driver
        self.faults: list[Fault] = []
        self.injected = 0

    def due(self, count: int, offset: float) -> list[float]:
        """Fractions of the run at which `count` faults of one kind happen."""
        return [(i + offset) / (count + 1) for i in range(count)]

    async def run(self, done: asyncio.Event) -> None:
        restarts = self.due(self.config.redis_restarts, 1.0)
        drops = self.due(self.config.gateway_drops, 0.75)
        last_kill = time.monotonic()
        while not done.is_set():
            progress = len(self.driver.submitted) / max(1, self.config.jobs)
            if time.monotonic() - last_kill >= self.config.kill_every_s:
                await self.kill_worker()
                last_kill = time.monotonic()
            if restarts and progress >= restarts[0]:
                restarts.pop(0)
                await self.restart_redis()
            if drops and progress >= drops[0]:
                drops.pop(0)
                await self.drop_gateway()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), POLL_S)

    async def inject_errors(self) -> None:
        """`error_rate` of the REST calls: a third 429, a third 500, a third 502 (the ones discord.py retries)."""
        share = self.config.error_rate / 3
        for n, status in enumerate((429, 500, 502)):
            rate = share / (1 - n * share)  # each draws only from the calls the ones before it let through
            body = {"method": "*", "path": "^/", "status": status, "times": 10**9, "rate": rate,
                    "seed": self.config.seed + n}  # fmt: skip
            async with self.http.post(f"{self.emu.control}/inject", json=body) as response:
                response.raise_for_status()

    async def lift_errors(self) -> None:
        async with self.http.delete(f"{self.emu.control}/inject") as response:
            self.injected = int((await response.json())["hits"])

    async def kill_worker(self) -> None:
        running = await quietly(lambda: running_jobs(self.conn))
        name = self.workers.kill_oldest()
        killed_at = time.time()
        replacement = self.workers.start()
        fault = Fault("worker_sigkill", killed_at, killed_at, {"worker": name})
        fault.detail["jobs_running"] = [j for j, worker in (running or {}).items() if worker == name]
        self.faults.append(fault)
        note(f"SIGKILLed worker {name} (running {fault.detail['jobs_running']}), started {replacement}")
        fault.ended_at = await self.workers.ready(self.conn, replacement)
        note(f"worker {replacement} ready")

    async def restart_redis(self) -> None:
        stopped_at = time.time()
        note("stopping Redis")
        await asyncio.to_thread(self.redis_proc.stop)
        await asyncio.sleep(REDIS_DOWN_S)
        await asyncio.to_thread(self.redis_proc.start)
        note("Redis started again from its AOF")
        self.faults.append(Fault("redis_restart_from_aof", stopped_at, time.time()))

    async def drop_gateway(self) -> None:
        dropped_at = time.time()
        note("dropping the bot's gateway connection")
        async with self.http.post(f"{self.emu.control}/drop", json={}) as response:
            response.raise_for_status()
        await live_sessions(self.http, self.emu, 1, FAULT_RECOVERY_LIMIT_S)
        note("the bot is connected again")
        self.faults.append(Fault("gateway_drop", dropped_at, time.time()))


# -- the run -----------------------------------------------------------------------------------------------------


async def _run(config: ChaosConfig, workdir: Path) -> dict[str, Any]:
    started = time.monotonic()
    redis_proc = RedisProcess(workdir)
    redis_proc.start()
    conn = redis.Redis.from_url(redis_proc.url, socket_timeout=5)
    emu = await start_emulator(workdir / "emulator.log")
    workers = Workers(redis_proc.url, emu, workdir)
    bot: asyncio.subprocess.Process | None = None
    try:
        async with aiohttp.ClientSession() as http:
            bot = await start_bot(http, emu, "bot", redis_proc.url, workdir / "bot.log", {"MODEL": MODEL.source})
            names = [workers.start() for _ in range(2)]
            await asyncio.gather(*(workers.ready(conn, n) for n in names))
            driver = Driver(http, emu.control, conn, config)
            controller = Controller(http, emu, redis_proc, workers, conn, config, driver)
            await controller.inject_errors()
            done = asyncio.Event()
            chaos = asyncio.ensure_future(controller.run(done))
            rngs = [random.Random(config.seed * 1000 + m) for m in range(config.members)]
            await asyncio.gather(*(driver.member(f"member{m}", rngs[m]) for m in range(config.members)))
            done.set()
            await chaos
            await controller.lift_errors()
            note("members done, faults lifted: waiting for every job to settle")
            lifted = time.monotonic()
            deadline = lifted + SETTLE_TIMEOUT_S
            while not await quietly(lambda: settled(conn, LANES)) and time.monotonic() < deadline:
                await asyncio.sleep(POLL_S)
            settle_s = time.monotonic() - lifted if time.monotonic() < deadline else None
            note(f"settled in {settle_s:.1f} s" if settle_s is not None else "NOT SETTLED: counting anyway")
            async with http.get(f"{emu.control}/messages") as response:
                messages = await response.json()
            figures = count(conn, messages, emu.env["DEV_GUILD_ID"])
            records = [r for r in (jobs.get(conn, j) for j in job_ids(conn)) if r is not None]
            faults = recoveries(controller.faults, records, settle_s)
    finally:
        workers.stop_all()
        if bot is not None:
            await stop(bot)
        await stop(emu.proc)
        conn.close()
        redis_proc.stop()
    answers = {a: sum(1 for s in driver.submitted if s.answer == a) for a in ("job", "refused", "unanswered")}
    refusals: dict[str, int] = {}
    for s in driver.submitted:
        if s.answer == "refused":
            refusals[s.text] = refusals.get(s.text, 0) + 1
    recovered = [f["recovered_s"] for f in faults]
    worst = None if None in recovered else max(recovered, default=0.0)
    return {
        "config": vars(config) | {"redis_down_s": REDIS_DOWN_S},
        "wall_s": round(time.monotonic() - started, 1),
        "jobs_submitted": len(driver.submitted),
        "answers": answers,
        "refusals": refusals,
        **{k: v for k, v in figures.items() if k != "ledgers"},
        "discord_calls_faulted": controller.injected,
        "faults": faults,
        "worst_recovery_s": worst,
        "all_recovered_within_2_min": worst is not None and worst <= FAULT_RECOVERY_LIMIT_S,
        "ledgers": figures["ledgers"],
    }


def run(config: ChaosConfig, keep: Path | None = None) -> dict[str, Any]:
    """Start everything, run the members and the faults, count; the JSON figures (logs in `keep`, if given)."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        return asyncio.run(_run(config, keep))
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(_run(config, Path(tmp)))


