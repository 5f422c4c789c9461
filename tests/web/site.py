"""A running web app aimed at the Discord emulator and a real Redis, and the jobs the tests give its members."""

from __future__ import annotations

import io
import socket
import time
from dataclasses import dataclass

import aiohttp
import redis
from aiohttp import web
from PIL import Image

from core import jobs, keys, prompt, userjobs
from core.models import ModelRegistry, tiny_model
from core.safety import Safety, with_safety
from core.settings import AdminSettings
from discord_emulator import DiscordEmulator, User
from quotas import load_config
from web.app import Services, build_services, close_services, make_runner
from web.settings import WebSettings

REGISTRY = ModelRegistry((tiny_model(),))
SECRET = "test-session-secret-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Site:
    """The emulator and the web app, both on 127.0.0.1; `url` is the web app's."""

    emu: DiscordEmulator
    services: Services
    runner: web.AppRunner
    http: aiohttp.ClientSession
    url: str

    @classmethod
    async def start(cls, redis_url: str, *, admin_ids: str = "") -> Site:
        emu = await DiscordEmulator().start()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        settings = WebSettings(public_url=url, port=port, session_secret=SECRET,  # type: ignore[arg-type]
                               discord_client_id=emu.state.application_id,
                               discord_client_secret=emu.state.oauth.client_secret,  # type: ignore[arg-type]
                               discord_authorize_url=emu.url + "/oauth2/authorize", guild_ids=emu.state.guild_id)
        http = aiohttp.ClientSession()
        services = build_services(settings, redis_url=redis_url, api_base=emu.api_base, registry=REGISTRY,
                                  tiers=load_config(), admins=AdminSettings(admin_user_ids=admin_ids), http=http)
        runner = make_runner(services)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return cls(emu, services, runner, http, url)

    async def stop(self) -> None:
        await self.runner.cleanup()
        await close_services(self.services)
        await self.http.close()
        await self.emu.stop()


def png(size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def seed_job(
    conn: redis.Redis, user: User | str, text: str, *, created_at: float | None = None, kind: str = "grid",
    state: str = jobs.DONE, visibility: str = jobs.PUBLIC, color: tuple[int, int, int] = (200, 80, 40),
    checked: bool = True,
) -> str:
    """A job of `user` as the bot and a worker leave it: recorded, in the member's lists, and (when done) with its
    grid and four images stored; `checked`: made outside an age-restricted channel (its outputs checked)."""
    owner = f"discord:{user.id if isinstance(user, User) else user}"
    spec = with_safety(prompt.parse(text, REGISTRY)[0], Safety(check_outputs=checked))
    job_id = jobs.new_job_id()
    jobs.create(conn, job_id, spec, owner, kind=kind)
    created_at = time.time() if created_at is None else created_at
    with conn.pipeline() as pipe:
        pipe.hset(keys.job(job_id), "created_at", repr(created_at))
        for command in userjobs.add_writes(owner, job_id, now=created_at):
            pipe.execute_command(*command)
        pipe.execute()
    if state == jobs.QUEUED:
        return job_id
    jobs.mark_running(conn, job_id, "test-worker")
    if state == jobs.DONE:
        def stage(pipe: redis.client.Pipeline) -> None:
            pipe.set(keys.job_grid(job_id), png((spec.width * 2, spec.height * 2), color))
            for index in range(4):
                pipe.set(keys.job_image(job_id, index), png((spec.width, spec.height), color))
        jobs.finish(conn, job_id, jobs.DONE, stage=stage)
    elif state != jobs.RUNNING:
        jobs.finish(conn, job_id, state, reason="test")  # type: ignore[arg-type]
    if visibility:
        jobs.set_visibility(conn, job_id, visibility)
    return job_id
