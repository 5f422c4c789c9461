"""What the queue costs: enqueue -> grid bytes through Redis and a warm worker, against the same render in-process.

Both are measured side by side in one run, alternating, with the same spec (same seeds and steps), so that a busy
machine slows both alike. "Direct" includes composing and encoding the grid PNG: the product in both cases is the
grid's bytes. Also: a Zoom Out 2x job of U1 through the queue against the same inpainting call in-process, and one
batched 4-image call against four single-image calls.
"""

from __future__ import annotations

import dataclasses
import io
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis

from core import jobs, keys, queue
from core.prompt import parse
from core.settings import ModelSettings, RedisSettings
from core.spec import JobSpec

WORKER_START_TIMEOUT_S = 300.0
JOB_TIMEOUT_S = 300.0


def _timed(fn: Callable[[], Any], samples: list[float]) -> None:
    started = time.perf_counter()
    fn()
    samples.append((time.perf_counter() - started) * 1000.0)


def _start_worker(url: str, name: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": url}
    return subprocess.Popen(
        [sys.executable, "-m", "worker", "--name", name, "--log-level", "WARNING"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_for_worker(conn: redis.Redis, name: str, proc: subprocess.Popen[bytes]) -> None:
    """Until the worker registered itself (it does so once its pipeline is loaded)."""
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    while not conn.exists(keys.worker_stats(name)):
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited with status {proc.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError("the worker did not get ready in time")
        time.sleep(0.05)  # waiting on another process to load a model: there is no event to subscribe to


def _redis_commands(conn: redis.Redis) -> int:
    """Commands the Redis server has run so far (all clients): the bench's, the worker's, and Lua's own calls."""
    stats = conn.info("commandstats")
    return sum(int(entry["calls"]) for entry in stats.values())


def _finished(conn: redis.Redis, job_id: str) -> bytes:
    """The grid of a finished job (or its one image), raising when it did not end done."""
    record = jobs.wait(conn, job_id, timeout_s=JOB_TIMEOUT_S)
    data = conn.get(keys.job_grid(job_id))
    if record.state != jobs.DONE or not isinstance(data, bytes):
        raise RuntimeError(f"bench job {job_id} ended {record.state}: {record.reason}")
    return data


def _zoom_pair(conn: redis.Redis, engine: Any, spec: JobSpec, model: Any) -> tuple[Callable[[], bytes], ...]:
    """Zoom Out 2x of U1 of a grid of `spec`: through the queue, and the same inpainting call in this process."""
    from PIL import Image

    from core.canvas import Edit, plan
    from worker import editing
    from worker.grid import compose_grid, encode_png

    grid = queue.enqueue(conn, spec, "bench")
    _finished(conn, grid)
    upscale = queue.enqueue(conn, spec, "bench", kind="upscale", source={"job_id": grid, "index": 1})
    _finished(conn, upscale)
    source = Image.open(io.BytesIO(conn.get(keys.job_image(upscale, 0)) or b""))
    edit = Edit("zoom", zoom=2.0)
    layout = plan(edit, source.size, multiple=model.multiple, max_pixels=model.pixels)
    zoom_spec = dataclasses.replace(spec, width=layout.canvas[0], height=layout.canvas[1])

    def through_queue() -> bytes:
        return _finished(conn, queue.enqueue(conn, zoom_spec, "bench", kind="edit",
                                             source={"job_id": upscale, "index": 1, **edit.to_source()}))

    def direct() -> bytes:
        start, mask = editing.start(layout, source)
        images = engine.inpaint(zoom_spec, start, mask)
        return encode_png(compose_grid([editing.finish(layout, start, image) for image in images]))

    return through_queue, direct


def run(*, runs: int, prompt: str) -> dict[str, Any]:
    from worker.engine import Engine
    from worker.grid import compose_grid, encode_png

    url = RedisSettings().redis_url
    registry = ModelSettings().registry()
    spec: JobSpec = parse(prompt, registry)[0]
    engine = Engine.load(registry.get(spec.model) or registry.default)
    conn = redis.Redis.from_url(url)
    name = f"bench-{uuid.uuid4().hex[:8]}"
    proc = _start_worker(url, name)
    try:
        _wait_for_worker(conn, name, proc)

        def through_queue() -> bytes:
            job_id = queue.enqueue(conn, spec, "bench")
            record = jobs.wait(conn, job_id, timeout_s=JOB_TIMEOUT_S)
            grid = conn.get(keys.job_grid(job_id))
            if record.state != jobs.DONE or not isinstance(grid, bytes):
                raise RuntimeError(f"bench job {job_id} ended {record.state}: {record.reason}")
            return grid

        def direct() -> bytes:
            return encode_png(compose_grid(engine.render(spec)))

        def batched() -> None:
            engine.render(spec)

        def sequential() -> None:
            for k in range(4):
                engine.render(spec, indices=(k,))

        through_queue(), direct(), sequential()  # warm-up: first calls allocate and compile
        zoom_queue, zoom_direct = _zoom_pair(conn, engine, spec, registry.get(spec.model) or registry.default)
        zoom_queue(), zoom_direct()
        samples: dict[str, list[float]] = {"queue": [], "direct": [], "batch": [], "sequential": [],
                                           "zoom_queue": [], "zoom_direct": []}
        commands_before = _redis_commands(conn)
        for _ in range(runs):
            _timed(through_queue, samples["queue"])
            _timed(direct, samples["direct"])
        commands_per_job = (_redis_commands(conn) - commands_before) / runs
        for _ in range(runs):
            _timed(zoom_queue, samples["zoom_queue"])
            _timed(zoom_direct, samples["zoom_direct"])
            _timed(batched, samples["batch"])
            _timed(sequential, samples["sequential"])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        conn.close()

    med = {kind: statistics.median(values) for kind, values in samples.items()}
    return {
        "overhead_ratio": round(med["queue"] / med["direct"], 3),
        "queue_ms": round(med["queue"], 1),
        "direct_ms": round(med["direct"], 1),
        "zoom_overhead_ratio": round(med["zoom_queue"] / med["zoom_direct"], 3),
        "zoom_queue_ms": round(med["zoom_queue"], 1),
        "zoom_direct_ms": round(med["zoom_direct"], 1),
        "batch_vs_sequential_ratio": round(med["batch"] / med["sequential"], 3),
        "batch_ms": round(med["batch"], 1),
        "sequential_ms": round(med["sequential"], 1),
        "redis_commands_per_job": round(commands_per_job, 1),
        "runs": runs,
        "model": spec.model,
        "size": f"{spec.width}x{spec.height}",
        "steps": spec.steps,
    }
