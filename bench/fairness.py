"""Fair relax order against first-in-first-out: the same simulated load through the real admission, ledger and
ordering code on a Redis (REDIS_URL), side by side.

The load (relax lane, one simulated GPU unless `--gpus`): a Pro member's 40-job command at t=0; a member who used
30 GPU-minutes earlier this period queueing 10 at t=10; a steady member with one job every 30 s; a member with two
4-job commands of bigger images; three light members with one job each. Time is simulated (a job takes its GPU
seconds, nothing sleeps); each job is admitted, recorded, queued on an RQ relax list, ordered (fair) or not (FIFO),
taken, run and settled through the real code, so the fair order sees real usage and running jobs.

Per member: jobs, demand (GPU-seconds asked for), mean and max wait (seconds from admission to start), the most jobs
of *other* members that started while one of its jobs waited, and its GPU share while it had jobs in the system
(demand divided by the time from a job's admission to its end, over the union of its jobs). Jain's fairness index is
taken over those shares: 1.0 means every member got the same share of the GPU while they were waiting for it (what
fair queuing aims at); FIFO gives a burst the whole GPU and a light member behind it almost none. Equal *waits* are
not the aim: a member who asks for 40 jobs should wait longer than one who asks for one. A member with past usage is
deliberately served less (Midjourney's "ordered by how much you have used"), so it lowers the fair order's index.
Commands refused because the member was at the tier's queued-or-running cap are counted, not run.
Keys live under a random bench guild and model and are deleted afterwards.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import defaultdict
from typing import Any

import redis
from rq import Queue

import quotas
from core import jobs, keys
from core.errors import ImagineError
from core.settings import RedisSettings
from core.spec import JobSpec, PromptPart
from quotas import load_config

# (member, tier, [(arrival s, jobs in the command)], GPU-seconds per job, image side in pixels)
LOAD: list[tuple[str, str, list[tuple[float, int]], float, int]] = [
    ("burst", "pro", [(0.0, 40)], 10.0, 512),
    ("heavy-past", "pro", [(10.0, 10)], 10.0, 512),
    ("steady", "standard", [(5.0 + 30.0 * i, 1) for i in range(12)], 10.0, 512),
    ("big-pair", "standard", [(20.0, 4), (200.0, 4)], 22.5, 768),
    ("light-1", "standard", [(60.0, 1)], 10.0, 512),
    ("light-2", "standard", [(120.0, 1)], 10.0, 512),
    ("light-3", "standard", [(300.0, 1)], 10.0, 512),
]
PAST_USAGE_S = {"heavy-past": 1800.0}
"""GPU-seconds some members used earlier this period."""

START_S = 1_800_000_000.0
"""Simulated Unix time of t=0 (mid-period, so no rollover happens during the run)."""


def _spec(model: str, side: int) -> JobSpec:
    return JobSpec(
        prompt="bench", parts=(PromptPart("bench"),), negative_prompt="", width=side, height=side, aspect="1:1",
        seed=1, chaos=0, stylize=100, guidance_scale=7.0, quality=1.0, steps=25, stop=100, tile=False,
        mode="relax", model=model,
    )


def simulate(conn: redis.Redis, *, fair: bool, gpus: int) -> dict[str, Any]:
    """Run the load once; returns the per-member figures and Jain's index."""
    config = load_config()
    guild, model = f"bench-{uuid.uuid4().hex[:8]}", f"bench-{uuid.uuid4().hex[:8]}"
    lane = keys.queue_name(model, "relax")
    list_key = Queue.redis_queue_namespace_prefix + lane
    arrivals = sorted(
        (START_S + at, name, n, gpu_s, side) for name, _, commands, gpu_s, side in LOAD for at, n in commands
    )
    tiers = {name: config.tiers[tier] for name, tier, *_ in LOAD}
    owner: dict[str, str] = {}
    duration: dict[str, float] = {}
    arrived: dict[str, float] = {}
    started: dict[str, float] = {}
    start_order: list[str] = []
    created: list[str] = []
    refused: dict[str, int] = defaultdict(int)
    try:
        for name, seconds in PAST_USAGE_S.items():
            req = quotas.AdmissionRequest((jobs.new_job_id(),), "relax", model, 512, 512, 25, now=START_S - 3600)
            quotas.settle(conn, quotas.admit(conn, f"{guild}:{name}", tiers[name], req).job_ids[0], seconds)
        now, running, pending = START_S, [], list(arrivals)
        while pending or running or conn.llen(list_key):
            for end, job_id in sorted(r for r in running if r[0] <= now):
                running.remove((end, job_id))
                jobs.add_gpu_seconds(conn, job_id, duration[job_id])
                if jobs.finish(conn, job_id, jobs.DONE):
                    quotas.apply_outcome(conn, job_id)  # as the worker does right after a job's outcome
            while pending and pending[0][0] <= now:
                at, name, n, gpu_s, side = pending.pop(0)
                req = quotas.AdmissionRequest(
                    tuple(jobs.new_job_id() for _ in range(n)), "relax", model, side, side, 25, now=at
                )
                try:
                    admitted = quotas.admit(conn, f"{guild}:{name}", tiers[name], req).job_ids
                except ImagineError:
                    refused[name] += n  # a member at the tier's waiting cap (FIFO makes that happen)
                    continue
                for job_id in admitted:
                    jobs.create(conn, job_id, _spec(model, side), name)
                    conn.rpush(list_key, job_id)
                    created.append(job_id)
                    owner[job_id], duration[job_id], arrived[job_id] = name, gpu_s, at
            if len(running) < gpus and conn.llen(list_key):
                if fair:
                    quotas.order_relax(conn, lane, now=now)
                job_id = _text(conn.lpop(list_key))
                jobs.mark_running(conn, job_id, "bench")
                started[job_id] = now
                start_order.append(job_id)
                running.append((now + duration[job_id], job_id))
                continue
            if not running and not pending:
                break
            now = min([r[0] for r in running] + [p[0] for p in pending[:1]])
        return _figures(owner, duration, arrived, started, start_order, refused)
    finally:
        _clean(conn, guild, model, created)


def _figures(
    owner: dict[str, str],
    duration: dict[str, float],
    arrived: dict[str, float],
    started: dict[str, float],
    start_order: list[str],
    refused: dict[str, int],
) -> dict[str, Any]:
    position = {job_id: i for i, job_id in enumerate(start_order)}
    per: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"jobs": 0, "demand_s": 0.0, "waits": [], "others": 0, "spans": []}
    )
    for job_id, name in owner.items():
        row = per[name]
        row["jobs"] += 1
        row["demand_s"] += duration[job_id]
        row["waits"].append(started[job_id] - arrived[job_id])
        row["spans"].append((arrived[job_id], started[job_id] + duration[job_id]))
        ahead = [j for j in start_order[: position[job_id]] if owner[j] != name and started[j] >= arrived[job_id]]
        row["others"] = max(row["others"], len(ahead))
    members = {}
    for name, row in per.items():
        waits = row.pop("waits")
        share = row["demand_s"] / _union_length(row["spans"])
        members[name] = {
            "jobs": row["jobs"],
            "refused_at_cap": refused.get(name, 0),
            "demand_s": round(row["demand_s"], 1),
            "mean_wait_s": round(sum(waits) / len(waits), 1),
            "max_wait_s": round(max(waits), 1),
            "max_jobs_of_others_while_waiting": row["others"],
            "gpu_share_while_waiting": round(share, 3),
        }
    shares = [m["gpu_share_while_waiting"] for m in members.values()]
    new = [m["gpu_share_while_waiting"] for name, m in members.items() if name not in PAST_USAGE_S]
    return {"members": members, "jain_index": _jain(shares), "jain_index_without_past_usage": _jain(new)}


def _jain(values: list[float]) -> float:
    """Jain's fairness index: (sum x)^2 / (n * sum x^2); 1.0 when all are equal, 1/n when one gets everything."""
    return round(sum(values) ** 2 / (len(values) * sum(v * v for v in values)), 3)


def _union_length(spans: list[tuple[float, float]]) -> float:
    """Total length of the union of intervals."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def _clean(conn: redis.Redis, guild: str, model: str, job_ids: list[str]) -> None:
    """Delete every key the run wrote (it shares the Redis with whatever else uses REDIS_URL)."""
    for pattern in (f"{keys.PREFIX}:member:{guild}:*", f"{keys.PREFIX}:guild:{guild}:*"):
        for key in conn.scan_iter(match=pattern, count=500):
            conn.delete(key)
    for job_id in job_ids:
        conn.delete(keys.job(job_id), keys.quota_reservation(job_id))
        conn.zrem(keys.quota_reservations(), job_id)
    conn.delete(Queue.redis_queue_namespace_prefix + keys.queue_name(model, "relax"))
    conn.hdel(keys.model_speed(), model)


def run(*, gpus: int = 1) -> dict[str, Any]:
    """FIFO and fair order on the same load; figures side by side."""
    conn = redis.Redis.from_url(RedisSettings().redis_url)
    try:
        fifo, ours = simulate(conn, fair=False, gpus=gpus), simulate(conn, fair=True, gpus=gpus)
    finally:
        conn.close()
    return {
        "gpus": gpus,
        "load": [dataclasses.asdict(_Load(*row)) for row in LOAD],
        "past_usage_s": PAST_USAGE_S,
        "fifo": fifo,
        "fair": ours,
    }


@dataclasses.dataclass
class _Load:
    member: str
    tier: str
    commands: list[tuple[float, int]]  # (arrival s, jobs)
    gpu_s_per_job: float
    side_px: int


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
