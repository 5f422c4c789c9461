"""What the end-to-end tests do with the real processes: start and stop `python -m bot`, wait for the shared worker
to settle, read what the user sees in the emulator, hook the emulator's edits, and read everything Redis stores."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis
from PIL import Image

from core import buttons, jobs, keys, queue
from core.models import tiny_model
from discord_emulator import DiscordEmulator, Message, PendingInteraction, User
from discord_emulator.gateway import Session

REPO = Path(__file__).resolve().parents[2]

BOT_START_TIMEOUT_S = 60.0
"""`python -m bot` imports discord.py, logs in and syncs its commands: seconds on a busy 2-core machine."""

BOT_STOP_TIMEOUT_S = 20.0
"""A bot that has not exited this long after SIGINT (or SIGTERM) is killed."""

RESULT_TIMEOUT_S = 60.0
"""How long a test waits for a job's result to show in Discord (a few seconds on an idle machine)."""

POLL_S = 0.02
"""Interval of polls of Redis state, which publishes no event for what these waits look for."""

MODEL = tiny_model()
LANES = tuple(keys.queue_name(MODEL.name, mode) for mode in queue.LANES)

DEFERRED_REPLY = 5


def bot_env(emu: DiscordEmulator, redis_url: str) -> dict[str, str]:
    """The environment of a bot process aimed at the emulator: the tiny default model, the shipped tiers, global
    command sync; nothing of the caller's DISCORD_/MODEL/IMAGINE_ settings leaks in."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DISCORD_", "DEV_GUILD", "MODEL", "REDIS_URL", "IMAGINE_"))}
    return env | {
        "DISCORD_TOKEN": emu.token,
        "DISCORD_API_BASE": emu.api_base,
        "DISCORD_GATEWAY_URL": emu.ws_url,
        "REDIS_URL": redis_url,
        "MODEL": MODEL.source,
        "PYTHONUNBUFFERED": "1",
        **image_env(emu.port),
    }


def image_env(port: int) -> dict[str, str]:
    """Tests only: images may come from the emulator's attachments, over http on 127.0.0.1:<port>."""
    return {"IMAGINE_IMAGE_TEST_ALLOW_HTTP": "1", "IMAGINE_IMAGE_TEST_TRUSTED_ORIGINS": f"127.0.0.1:{port}"}


class BotProcess:
    """`python -m bot --log-level DEBUG` in a subprocess, stdout and stderr in a log file."""

    def __init__(self, emu: DiscordEmulator, redis_url: str, log_path: Path) -> None:
        self.emu, self.redis_url, self.log_path = emu, redis_url, log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.session: Session | None = None

    async def start(self) -> BotProcess:
        """Spawn the bot; returns once the emulator saw its IDENTIFY (after its command sync) on a new session."""
        known = set(self.emu.gateway.sessions)
        with open(self.log_path, "wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "--log-level", "DEBUG",
                cwd=REPO, env=bot_env(self.emu, self.redis_url), stdout=log, stderr=subprocess.STDOUT,
            )
        identified = asyncio.ensure_future(self.emu.wait_until(
            lambda: next((s for s in self.emu.gateway.live_sessions() if s.id not in known), None),
            BOT_START_TIMEOUT_S,
        ))
        exited = asyncio.ensure_future(self.proc.wait())
        await asyncio.wait({identified, exited}, return_when=asyncio.FIRST_COMPLETED)
        if exited.done():
            identified.cancel()
            raise AssertionError(f"python -m bot exited with {exited.result()} before it connected:\n{self.log()}")
        exited.cancel()
        self.session = identified.result()
        assert "imagine" in {c["name"] for c in self.emu.state.global_commands}, self.emu.state.global_commands
        return self

    async def stop(self, signum: signal.Signals = signal.SIGINT) -> int:
        """Send `signum` (SIGINT: Ctrl-C; SIGTERM: what `docker stop` sends), kill it if it lingers; its exit code."""
        assert self.proc is not None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signum)
            try:
                await asyncio.wait_for(self.proc.wait(), BOT_STOP_TIMEOUT_S)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        assert self.proc.returncode is not None
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


async def eventually(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """The predicate's first truthy value, polled every POLL_S without blocking the event loop (the emulator runs
    on it); fails after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(POLL_S)
    return value


def quiet(conn: redis.Redis, worker_name: str) -> bool:
    """The worker has nothing left to do: both lanes empty, every job final, the RQ worker idle."""
    if any(conn.llen(f"rq:queue:{lane}") for lane in LANES):
        return False
    if conn.hget(f"rq:worker:{worker_name}", "state") != b"idle":
        return False
    for key in conn.scan_iter(f"{keys.PREFIX}:job:*"):
        parts = key.decode().split(":")
        record = jobs.get(conn, parts[2]) if len(parts) == 3 else None  # the record, not a job's other keys
        if record is not None and not record.final:
            return False
    return True


async def settled(conn: redis.Redis, worker_name: str, job_id: str | None = None) -> None:
    """Until the worker is quiet (and `job_id`'s outcome was confirmed by Discord): nothing more will be sent."""
    await eventually(
        lambda: (job_id is None or conn.exists(keys.job_final_delivered(job_id))) and quiet(conn, worker_name),
        RESULT_TIMEOUT_S,
        f"the worker to settle{f' after job {job_id}' if job_id else ''}",
    )


# -- what the user sees --------------------------------------------------------------------------------------------


def has_png(message: Message) -> bool:
    return any(a.filename.endswith(".png") for a in message.attachments)


def png(message: Message) -> Image.Image:
    """The message's one attachment, decoded (fully) as a PNG."""
    assert len(message.attachments) == 1, message.attachments
    image = Image.open(io.BytesIO(message.attachments[0].data))
    assert image.format == "PNG"
    image.load()
    return image


def png_revisions(message: Message) -> list[int]:
    """Indexes of the message's revisions that show a PNG (a final result)."""
    return [n for n, r in enumerate(message.history) if any(a.filename.endswith(".png") for a in r.attachments)]


def job_of(message: Message) -> str:
    """The job a result message shows, read from its buttons' custom_ids."""
    refs = [buttons.parse(c) for c in message.custom_ids()]
    job_ids = {r.job_id for r in refs if r is not None and r.action != "reroll"} or {r.job_id for r in refs if r}
    assert len(job_ids) == 1, message.custom_ids()
    return job_ids.pop()


def grid_ids(job_id: str) -> list[str]:
    return [c["custom_id"] for row in buttons.grid_components(job_id) for c in row["components"]]


def single_ids(job_id: str, *, square: bool = False) -> list[str]:
    return [c["custom_id"] for row in buttons.single_components(job_id, square=square) for c in row["components"]]


async def imagine(emu: DiscordEmulator, user: User, prompt: str) -> PendingInteraction:
    """`user` runs `/imagine prompt`; returns once the bot deferred it (type 5) within Discord's 3 s."""
    pending = await emu.send_slash_command(user=user, name="imagine", options={"prompt": prompt})
    callback = await pending.wait_acknowledged()
    assert callback.type == DEFERRED_REPLY and callback.elapsed_s < 3.0, callback
    return pending


async def click(emu: DiscordEmulator, user: User, message: Message, action: str, index: int = 0) -> PendingInteraction:
    """`user` clicks the button `action`/`index` of the job `message` shows; returns once the bot deferred it."""
    pending = await emu.click_button(user=user, message=message,
                                     custom_id=buttons.custom_id(action, job_of(message), index))
    callback = await pending.wait_acknowledged()
    assert callback.type == DEFERRED_REPLY and callback.elapsed_s < 3.0, callback
    return pending


async def result(pending: PendingInteraction) -> Message:
    """The interaction's original message once it shows a PNG result."""
    return await pending.wait_original(has_png, RESULT_TIMEOUT_S)


def on_edit(emu: DiscordEmulator, callback: Callable[[Message], None]) -> None:
    """Run `callback(message)` right after the emulator applied an edit, before it answers whoever edited: a test
    changes Discord's behaviour at an exact point of the flow (after the bot's edit, before the worker's)."""
    edit = emu.edit_message

    async def edited(message: Message, body: dict[str, Any], files: dict) -> Any:
        response = await edit(message, body, files)
        callback(message)
        return response

    emu.edit_message = edited  # type: ignore[method-assign]


# -- what Redis stores -----------------------------------------------------------------------------------------------


def stored(conn: redis.Redis) -> Iterator[tuple[str, bytes]]:
    """(key, bytes) for every value Redis holds, of every type: hash fields and values, list, set and sorted-set
    members, stream entries; a zlib-compressed value (RQ's job `data`) also decompressed."""
    for raw_key in conn.scan_iter():
        key = raw_key.decode()
        kind = conn.type(raw_key).decode()
        values: list[bytes] = [raw_key]
        if kind == "string":
            values.append(conn.get(raw_key))  # type: ignore[arg-type]
        elif kind == "hash":
            values += [b for pair in conn.hgetall(raw_key).items() for b in pair]  # type: ignore[union-attr]
        elif kind == "list":
            values += conn.lrange(raw_key, 0, -1)  # type: ignore[operator]
        elif kind == "set":
            values += list(conn.smembers(raw_key))  # type: ignore[arg-type]
        elif kind == "zset":
            values += conn.zrange(raw_key, 0, -1)  # type: ignore[operator]
        elif kind == "stream":
            values += [b for _, entry in conn.xrange(raw_key) for pair in entry.items() for b in pair]  # type: ignore[union-attr]
        for value in values:
            yield key, value
            with contextlib.suppress(zlib.error):
                yield key, zlib.decompress(value)


def assert_ledger_balanced(conn: redis.Redis, member: str, job_ids: list[str]) -> float:
    """Every reservation the member's jobs made was applied exactly once: none is left, nothing is held any more,
    and the fast time charged is the GPU time of their done fast jobs, each counted once. Returns that time."""
    assert not [j for j in job_ids if conn.exists(keys.quota_reservation(j))], "reservations left unapplied"
    assert conn.hlen(keys.quota_active(member)) == 0, conn.hgetall(keys.quota_active(member))
    records = [jobs.get(conn, j) for j in job_ids]
    charged = sum(r.gpu_s for r in records if r is not None and r.state == jobs.DONE and r.spec.mode == "fast")
    balances = [conn.hgetall(k) for k in conn.scan_iter(keys.quota_balance(member, 0).removesuffix("0") + "*")]
    used = sum(float(b.get(b"used_s", 0)) for b in balances)  # type: ignore[union-attr]
    reserved = sum(float(b.get(b"reserved_s", 0)) for b in balances)  # type: ignore[union-attr]
    assert abs(reserved) < 1e-6 and abs(used - charged) < 1e-6, (used, reserved, charged)
    return charged
