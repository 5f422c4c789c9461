"""`python -m bench gallery`: the web gallery of a member with 1,000 jobs, server time per request.

A redis-server of its own, one member's 1,000 done jobs recorded as the bot records them (record, lists, gallery
index), and the web app in this process. Each page is requested `runs` times with the member's session cookie; the
figure is the app's own time on the request (its `Server-Timing` header: from the first middleware to the response,
Redis round trips included, the socket and the client excluded), plus the client's round trip for comparison.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import redis
from aiohttp import web

from bench.redis_server import free_port, redis_server
from core import jobs, keys, prompt, userjobs
from core.models import ModelRegistry, tiny_model
from core.settings import AdminSettings
from quotas import load_config
from web.app import build_services, close_services, make_app
from web.session import COOKIE, Session
from web.settings import WebSettings

USER = "100000000000000001"
GUILD = "200000000000000002"
MODELS = ModelRegistry((tiny_model(), tiny_model("tiny-b")))

PAGES = {
    "first page": "/gallery",
    "page 20": "/gallery?page=20",
    "prompt text": "/gallery?q=lighthouse",
    "model and kind": "/gallery?model=tiny-b&kind=grid",
    "date range": "/gallery?since=2024-03-01&until=2024-03-31",
}
"""The requests measured (24 jobs a page, the default)."""


def seed(conn: redis.Redis, owner: str, count: int) -> None:
    """`count` done jobs of `owner`, one a day back from 2024-12-31, with prompts and models that vary."""
    subjects = ("a lighthouse", "a cat", "a harbour", "a kettle", "a forest")
    with conn.pipeline(transaction=False) as pipe:
        for n in range(count):
            spec = prompt.parse(f"{subjects[n % 5]} number {n} --model {MODELS.models[n % 2].name}", MODELS)[0]
            job_id = jobs.new_job_id()
            created = 1_735_603_200 - n * 86_400.0
            record = jobs.new_record(spec, owner)
            record |= {"state": jobs.DONE, "created_at": repr(created), "finished_at": repr(created + 5)}
            pipe.hset(keys.job(job_id), mapping=record)
            for command in userjobs.add_writes(owner, job_id, now=created):
                pipe.execute_command(*command)
        pipe.execute()


async def measure(redis_url: str, runs: int) -> dict[str, Any]:
    port = free_port()
    settings = WebSettings(public_url=f"http://127.0.0.1:{port}", session_secret="bench-secret-0123456789",
                           discord_client_id="1", discord_client_secret="unused",  # type: ignore[arg-type]
                           guild_ids=GUILD)
    async with aiohttp.ClientSession() as http:
        services = build_services(settings, redis_url=redis_url, api_base="http://127.0.0.1:9", registry=MODELS,
                                  tiers=load_config(), admins=AdminSettings(), http=http)
        runner = web.AppRunner(make_app(services), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        signed = web.Response()
        services.cookies.set_session(signed, Session(USER, "bench", GUILD, (), False, "x"))
        cookie = signed.cookies[COOKIE].value
        figures: dict[str, Any] = {}
        try:
            async with aiohttp.ClientSession(cookies={COOKIE: cookie}) as client:
                for name, path in PAGES.items():
                    server_ms, client_ms, shown = [], [], 0
                    for _ in range(runs + 1):  # the first is a warm-up
                        started = time.perf_counter()
                        async with client.get(f"http://127.0.0.1:{port}{path}") as response:
                            body = await response.text()
                            assert response.status == 200, body[:200]
                        client_ms.append((time.perf_counter() - started) * 1000)
                        server_ms.append(float(response.headers["Server-Timing"].split("dur=")[1]))
                        shown = body.count('class="card"')
                    figures[name] = {"path": path, "jobs_shown": shown, **stats("server_ms", server_ms[1:]),
                                     **stats("client_ms", client_ms[1:])}
        finally:
            await runner.cleanup()
            await close_services(services)
    return figures


def stats(prefix: str, values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {f"{prefix}_median": round(statistics.median(ordered), 2),
            f"{prefix}_p95": round(ordered[max(0, round(0.95 * len(ordered)) - 1)], 2),
            f"{prefix}_max": round(ordered[-1], 2)}


def run(*, jobs_count: int = 1000, runs: int = 30) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp)) as url:
        conn = redis.Redis.from_url(url)
        seed(conn, f"discord:{USER}", jobs_count)
        conn.close()
        pages = asyncio.run(measure(url, runs))
    return {"member_jobs": jobs_count, "runs_per_page": runs, "target_server_ms": 200, "pages": pages}
