"""Grids per minute with batching against one job at a time, on a saturating mixed load through Redis and a warm
worker; and the latency of a single job on an idle worker, which batching must not slow.

Two warm `python -m worker` processes run side by side on one Redis of their own, each on its own database (so each
sees only its own lanes): one with WORKER_BATCH_SIZE=B, one with 1. Rounds alternate between them (the order flips
every round), so that the other programs sharing the machine slow both alike. A round enqueues the whole mixed load
at once (most grids at the model's default size, some at other sizes, some Upscale and Vary button jobs on grids
made before timing) and times it from the first enqueue to the last job's outcome.

Before the workers start, the sampler alone is timed in this process (`sampler_ceiling`): one grid a call against
B grids a call, alternating. Its ratio is the most batching can give on this machine and model; the job ratio above
can only approach it (in the shuffled mix, other sizes and variations rarely wait next to their own kind, so they
mostly run alone; upscales copy their parent's image; and per-job work is not shared).
"""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from bench.redis_server import redis_server
from core import jobs, keys, queue
from core.prompt import parse
from core.settings import ModelSettings
from core.spec import JobSpec

WORKER_START_TIMEOUT_S = 300.0
JOB_TIMEOUT_S = 900.0
OTHER_SIZES = ("--ar 3:2", "--ar 2:3", "--ar 16:9")
"""Aspect ratios of the load's grids that are not at the default size."""


@dataclasses.dataclass(frozen=True)
class Mix:
    """What the load is made of, as fractions of its jobs (the rest: grids at the default size)."""

    other_sizes: float = 0.15
    upscales: float = 0.075
    variations: float = 0.075


def run(
    *, jobs_per_round: int, rounds: int, batch_size: int, idle_runs: int, threads: int = 0, mix: Mix = Mix()
) -> dict[str, Any]:
    registry = ModelSettings().registry()
    ceiling = sampler_ceiling(registry, batch_size, runs=max(idle_runs, 1), threads=threads)
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp)) as url:
        base = url.rsplit("/", 1)[0]
        modes = {"batched": (f"{base}/1", batch_size), "one_at_a_time": (f"{base}/2", 1)}
        conns = {mode: redis.Redis.from_url(u) for mode, (u, _) in modes.items()}
        procs = {mode: _start_worker(u, f"bench-{mode}", b, threads) for mode, (u, b) in modes.items()}
        try:
            for mode, proc in procs.items():
                _wait_for_worker(conns[mode], f"bench-{mode}", proc)
            specs = _specs(registry, jobs_per_round, mix)
            parents = {mode: _run_all(conns[mode], [(s, "grid", None) for s in specs[:2]])[1] for mode in modes}
            per_minute: dict[str, list[float]] = {mode: [] for mode in modes}
            load: list[float] = []
            for r in range(rounds):
                order = list(modes) if r % 2 == 0 else list(reversed(modes))
                for mode in order:
                    load.append(os.getloadavg()[0])
                    work = _load(specs, parents[mode], mix, seed=r)
                    elapsed_s, _ = _run_all(conns[mode], work)
                    per_minute[mode].append(len(work) / elapsed_s * 60)
            latency_ms: dict[str, list[float]] = {mode: [] for mode in modes}
            for i in range(idle_runs):
                for mode in (list(modes) if i % 2 == 0 else list(reversed(modes))):
                    elapsed_s, _ = _run_all(conns[mode], [(specs[0], "grid", None)])
                    latency_ms[mode].append(elapsed_s * 1000)
            stats = {mode: conns[mode].hgetall(keys.worker_stats(f"bench-{mode}")) for mode in modes}
        finally:
            for proc in procs.values():
                proc.send_signal(signal.SIGTERM)
            for proc in procs.values():
                proc.wait(timeout=120)
    med = {mode: statistics.median(v) for mode, v in per_minute.items()}
    idle = {mode: statistics.median(v) for mode, v in latency_ms.items()}
    batched_stats = stats["batched"]
    return {
        "throughput_ratio": round(med["batched"] / med["one_at_a_time"], 3),
        "jobs_per_minute": {mode: round(v, 2) for mode, v in med.items()},
        "jobs_per_minute_by_round": {mode: [round(x, 2) for x in v] for mode, v in per_minute.items()},
        "idle_latency_ratio": round(idle["batched"] / idle["one_at_a_time"], 3),
        "idle_latency_ms": {mode: round(v, 1) for mode, v in idle.items()},
        "idle_latency_ms_all": {mode: [round(x, 1) for x in v] for mode, v in latency_ms.items()},
        "sampler_ceiling": ceiling,
        "batches": int(batched_stats.get(b"batches", 0)),
        "batched_jobs": int(batched_stats.get(b"batched_jobs", 0)),
        "batch_size": batch_size,
        "jobs_per_round": jobs_per_round,
        "rounds": rounds,
        "mix": dataclasses.asdict(mix),
        "model": specs[0].model,
        "default_size": f"{specs[0].width}x{specs[0].height}",
        "steps": specs[0].steps,
        "cpus": os.cpu_count(),
        "worker_threads": threads or "torch default",
        "load_average_at_rounds": [round(x, 2) for x in load],
    }


def sampler_ceiling(registry: Any, batch_size: int, *, runs: int, threads: int = 0) -> dict[str, Any]:
    """Milliseconds per image of the default model's sampler alone (no Redis, no delivery), one grid a call against
    `batch_size` grids a call (`Engine.render` / `Engine.render_batch`, as the two workers call them), alternating
    `runs` times; `ratio` is their quotient, the ceiling of `throughput_ratio`."""
    import torch

    from worker.batch_render import Rows
    from worker.engine import Engine

    if threads:
        torch.set_num_threads(threads)
    info = registry.default
    engine = Engine.load(info)  # the worker's device: CUDA when there is one
    specs = [parse(f"bench ceiling {i} --seed {i}", registry)[0] for i in range(batch_size)]
    engine.render(specs[0])  # warm-up
    calls = {"one_grid": (lambda: engine.render(specs[0]), 4),
             "batched": (lambda: engine.render_batch([Rows(spec) for spec in specs]), 4 * batch_size)}
    per_image: dict[str, list[float]] = {mode: [] for mode in calls}
    for i in range(runs):
        for mode in (list(calls) if i % 2 == 0 else list(reversed(calls))):
            call, images = calls[mode]
            started = time.perf_counter()
            call()
            per_image[mode].append((time.perf_counter() - started) * 1000 / images)
    med = {mode: statistics.median(v) for mode, v in per_image.items()}
    return {"ratio": round(med["one_grid"] / med["batched"], 3),
            "ms_per_image": {mode: round(v, 1) for mode, v in med.items()},
            "ms_per_image_all": {mode: [round(x, 1) for x in v] for mode, v in per_image.items()},
            "grids_per_call": batch_size, "model": info.name}


def _specs(registry: Any, count: int, mix: Mix) -> list[JobSpec]:
    """`count` grid specs: distinct prompts and seeds, `mix.other_sizes` of them at other aspect ratios."""
    others = round(count * mix.other_sizes)
    specs = []
    for k in range(count):
        size = f" {OTHER_SIZES[k % len(OTHER_SIZES)]}" if k >= count - others else ""
        specs.append(parse(f"a red circle number {k} on a blue background --seed {k}{size}", registry)[0])
    return specs


def _load(specs: list[JobSpec], parents: list[str], mix: Mix, *, seed: int) -> list[tuple[JobSpec, str, Any]]:
    """The round's jobs in a shuffled order: grids, and Upscale and Vary jobs on `parents`."""
    n = len(specs)
    upscales, variations = round(n * mix.upscales), round(n * mix.variations)
    grids = specs[: n - upscales - variations]
    work: list[tuple[JobSpec, str, Any]] = [(s, "grid", None) for s in grids]
    for k in range(upscales):
        work.append((specs[0], "upscale", {"job_id": parents[k % len(parents)], "index": 1 + k % 4}))
    for k in range(variations):
        source = {"job_id": parents[k % len(parents)], "index": 1 + k % 4, "strength": "strong"}
        work.append((dataclasses.replace(specs[0], seed=1000 + k), "vary", source))
    random.Random(seed).shuffle(work)
    return work


def _run_all(conn: redis.Redis, work: list[tuple[JobSpec, str, Any]]) -> tuple[float, list[str]]:
    """Enqueue every job at once, wait for all their outcomes; seconds from the first enqueue to the last outcome."""
    started = time.perf_counter()
    ids = [queue.enqueue(conn, spec, "bench", kind=kind, source=source) for spec, kind, source in work]
    for job_id in ids:
        record = jobs.wait(conn, job_id, timeout_s=JOB_TIMEOUT_S)
        if record.state != jobs.DONE:
            raise RuntimeError(f"bench job {job_id} ({record.kind}) ended {record.state}: {record.reason}")
    return time.perf_counter() - started, ids


def _start_worker(url: str, name: str, batch_size: int, threads: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": url, "WORKER_BATCH_SIZE": str(batch_size)}
    if threads:  # on a shared machine, torch's threads spin against other programs' (OMP_NUM_THREADS)
        env["OMP_NUM_THREADS"] = str(threads)
    return subprocess.Popen([sys.executable, "-m", "worker", "--name", name, "--log-level", "WARNING"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for_worker(conn: redis.Redis, name: str, proc: subprocess.Popen[bytes]) -> None:
    """Until the worker registered itself (it does so once its pipeline is loaded)."""
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    while not conn.exists(keys.worker_stats(name)):
        if proc.poll() is not None:
            raise RuntimeError(f"worker {name} exited with status {proc.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker {name} did not get ready in time")
        time.sleep(0.05)  # waiting on another process to load a model: there is no event to subscribe to
