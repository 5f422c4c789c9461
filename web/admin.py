"""The admins' dashboard: queue depth per lane, running jobs, workers, usage this period, tier grants, bans, the
audit log and the moderation log, for the admin's server. Read through the owning modules' synchronous APIs
(`quotas`, `core.audit`, `core.jobs`, RQ's registries), in a thread: a page an admin opens now and then, not a hot
path. Read only, like `/admin queue`: RQ's cleanup of abandoned jobs is the workers' business."""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field

import redis
from rq import Queue, Worker
from rq.registry import StartedJobRegistry

import quotas
from core import audit, jobs, keys, queue
from core.audit import Entry

MODERATION_ACTIONS = frozenset({"prompt blocked", "image flagged"})
"""Audit entries that are moderation events (`moderation.record_event`): the moderation log."""

LOG_ENTRIES = 50
"""Entries of each log shown."""

TOP_MEMBERS = 20
"""Members in the usage chart."""

RUNNING_SHOWN = 25
"""Running jobs listed (the count is exact)."""


@dataclass(frozen=True)
class Lane:
    name: str
    waiting: int
    running: int


@dataclass(frozen=True)
class WorkerRow:
    name: str
    model: str
    state: str
    current_job: str
    jobs_done: int
    gpu_s: float
    last_heartbeat: float | None  # Unix time


@dataclass(frozen=True)
class Dashboard:
    lanes: list[Lane]
    running: list[jobs.JobRecord]
    running_count: int
    workers: list[WorkerRow]
    usage: list[tuple[str, float]]  # (user id, GPU-seconds this period), most first
    grants: list[tuple[str, quotas.Grant]]
    bans: dict[str, str]
    audit: list[Entry]
    moderation: list[Entry]
    refused_total: int
    now: float = field(default_factory=time.time)


def dashboard(conn: redis.Redis, tiers: quotas.TiersConfig, guild: str) -> Dashboard:
    """Everything the dashboard shows for `guild`."""
    now = time.time()
    lanes, running_ids = lanes_and_running(conn)
    running = [r for r in (jobs.get(conn, i) for i in running_ids[:RUNNING_SHOWN]) if r is not None]
    usage = [(member.split(":", 1)[-1], seconds)
             for member, seconds in quotas.top_users(conn, guild, now=now, policy=tiers.period, limit=TOP_MEMBERS)]
    entries = audit.latest(conn, guild, audit.MAX_ENTRIES)
    return Dashboard(
        lanes=lanes, running=running, running_count=len(running_ids), workers=workers(conn), usage=usage,
        grants=quotas.grants(conn, guild), bans=quotas.bans(conn, guild),
        audit=[e for e in entries if e.action not in MODERATION_ACTIONS][:LOG_ENTRIES],
        moderation=[e for e in entries if e.action in MODERATION_ACTIONS][:LOG_ENTRIES],
        refused_total=int(conn.get(keys.refused_jobs_total()) or 0), now=now,
    )


def lanes_and_running(conn: redis.Redis) -> tuple[list[Lane], list[str]]:
    """Waiting and running jobs of each RQ lane (`describe:<model>`, `fast:<model>`, `relax:<model>`), and the
    running jobs' ids."""
    lanes: list[Lane] = []
    running: list[str] = []
    for rq_queue in sorted(Queue.all(connection=conn, serializer=queue.SERIALIZER), key=lambda q: q.name):
        if rq_queue.name.split(":", 1)[0] not in queue.LANES:
            continue
        started = StartedJobRegistry(queue=rq_queue).get_job_ids(cleanup=False)
        lanes.append(Lane(rq_queue.name, rq_queue.count, len(started)))
        running += started
    return lanes, running


def workers(conn: redis.Redis) -> list[WorkerRow]:
    """Live workers (RQ's registry) with their model, jobs done and GPU-seconds (`worker.context`'s stats hash)."""
    rows = []
    for worker in sorted(Worker.all(connection=conn, serializer=queue.SERIALIZER), key=lambda w: w.name):
        stats = {_text(k): _text(v) for k, v in conn.hgetall(keys.worker_stats(worker.name)).items()}
        beat = worker.last_heartbeat
        rows.append(WorkerRow(worker.name, stats.get("model", "?"), str(worker.get_state()),
                              worker.get_current_job_id() or "", int(stats.get("jobs_done") or 0),
                              float(stats.get("gpu_s") or 0.0), beat.timestamp() if beat else None))
    return rows


def usage_chart(usage: list[tuple[str, float]], *, width: int = 560, bar_h: int = 18) -> str:
    """An inline SVG bar chart of GPU-minutes per member, labelled by user id (escaped: it is markup)."""
    if not usage:
        return ""
    top = max(seconds for _, seconds in usage) or 1.0
    label_w, gap = 170, 4
    height = len(usage) * (bar_h + gap)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="GPU minutes per member this period" '
             f'width="{width}" height="{height}" class="chart">']
    for row, (user, seconds) in enumerate(usage):
        y = row * (bar_h + gap)
        w = max(1, round((width - label_w - 70) * seconds / top))
        parts.append(f'<text x="0" y="{y + bar_h - 4}" class="label">{html.escape(user)}</text>'
                     f'<rect x="{label_w}" y="{y}" width="{w}" height="{bar_h}" class="bar"/>'
                     f'<text x="{label_w + w + 6}" y="{y + bar_h - 4}">{seconds / 60:.1f} min</text>')
    parts.append("</svg>")
    return "".join(parts)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
