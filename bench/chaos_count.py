"""What became of each job of a `python -m bench chaos` run, read from Redis and the emulator's messages.

`bench.chaos` causes the faults and records each as a `Fault`; this module reads the state they left: which jobs
exist and run (`job_ids`, `running_jobs`), whether everything has settled, whether each outcome was shown exactly
once (`count`), whether each member's ledger balances (`ledger`), and how long each fault took to recover from
(`recoveries`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis

import quotas
from core import buttons, jobs, keys


@dataclass
class Fault:
    """One fault the controller caused, and when (Unix time) it began and ended."""

    kind: str
    started_at: float
    ended_at: float
    detail: dict[str, Any] = field(default_factory=dict)


def job_ids(conn: redis.Redis) -> list[str]:
    """Every job record's id."""
    found = (k.decode().split(":") for k in conn.scan_iter(f"{keys.PREFIX}:job:*", count=1000))
    return [parts[2] for parts in found if len(parts) == 3]


def running_jobs(conn: redis.Redis) -> dict[str, str]:
    """Running jobs' ids -> the worker running them."""
    records = (jobs.get(conn, j) for j in job_ids(conn))
    return {r.job_id: r.worker for r in records if r is not None and r.state == jobs.RUNNING}


def settled(conn: redis.Redis, lanes: tuple[str, ...]) -> bool:
    """Nothing left to do: lanes empty, every job final with its outcome delivered, no outcome waiting to be."""
    if any(conn.llen(f"rq:queue:{lane}") for lane in lanes) or conn.zcard(keys.undelivered()):
        return False
    for job_id in job_ids(conn):
        record = jobs.get(conn, job_id)
        if record is not None and not outcome_shown(conn, record):
            return False
    return True


def outcome_shown(conn: redis.Redis, record: jobs.JobRecord) -> bool:
    """The job is final and its outcome shown: confirmed by Discord, or, for a job cancelled before it started, told
    in the /cancel reply (its waiting message is not edited)."""
    if not record.final:
        return False
    return record.state == jobs.CANCELLED or bool(conn.exists(keys.job_final_delivered(record.job_id)))


def job_of(custom_ids: list[str]) -> str | None:
    """The job a result message shows, read from its buttons (a failed job's message has only its re-roll)."""
    refs = [r for r in (buttons.parse(c) for c in custom_ids) if r is not None]
    ids = {r.job_id for r in refs if r.action != "reroll"} or {r.job_id for r in refs}
    return ids.pop() if len(ids) == 1 else None


def ledger(conn: redis.Redis, member: str, records: list[jobs.JobRecord]) -> dict[str, Any]:
    """A member's ledger: every reservation applied once (settled for a done job, refunded otherwise), none left
    and nothing held, and the fast time charged equal to the GPU time of the done fast jobs."""
    left = sum(1 for r in records if conn.exists(keys.quota_reservation(r.job_id)))
    balances = [conn.hgetall(k) for k in conn.scan_iter(keys.quota_balance(member, 0).removesuffix("0") + "*")]
    used = sum(float(b.get(b"used_s", 0)) for b in balances)
    held = sum(float(b.get(b"reserved_s", 0)) for b in balances)
    charged = sum(r.gpu_s for r in records if r.state == jobs.DONE and r.spec.mode == "fast")
    settled_n = sum(1 for r in records if r.final and r.state == jobs.DONE) if not left else 0
    refunded = sum(1 for r in records if r.final and r.state != jobs.DONE) if not left else 0
    active = int(conn.hlen(keys.quota_active(member)))
    balanced = left == 0 and active == 0 and abs(held) < 1e-6 and abs(used - charged) < 1e-6
    return {"reserved": len(records), "settled": settled_n, "refunded": refunded, "left": left, "active": active,
            "held_s": round(held, 6), "charged_s": round(used, 4), "gpu_s": round(charged, 4),
            "balanced": balanced}  # fmt: skip


def count(conn: redis.Redis, messages: list[dict[str, Any]], guild_id: str) -> dict[str, Any]:
    """What became of every job in Redis, as Discord showed it; and each member's ledger."""
    posts: dict[str, int] = {}
    for message in messages:
        job_id = job_of(message["custom_ids"])
        if job_id is not None and not message["ephemeral"]:
            posts[job_id] = posts.get(job_id, 0) + message["png_revisions"]
    records = [r for r in (jobs.get(conn, j) for j in job_ids(conn)) if r is not None]
    exactly_once, duplicates, lost, grids, grids_once = 0, 0, 0, 0, 0
    problems: list[str] = []
    for r in records:
        shown = posts.get(r.job_id, 0)
        if not r.final:
            lost += 1
            problems.append(f"{r.job_id}: {r.state}, never final")
        elif r.state == jobs.DONE and shown == 0 or not outcome_shown(conn, r):
            lost += 1
            problems.append(f"{r.job_id}: {r.state}, outcome never shown")
        elif r.state == jobs.DONE and shown > 1 or r.state != jobs.DONE and shown > 0:
            duplicates += 1
            problems.append(f"{r.job_id}: {r.state}, image posted {shown} times")
        else:
            exactly_once += 1
        if r.kind in ("grid", "vary") and r.state == jobs.DONE:
            grids += 1
            grids_once += shown == 1
    by_owner: dict[str, list[jobs.JobRecord]] = {}
    for r in records:
        by_owner.setdefault(r.owner, []).append(r)
    ledgers = {owner.removeprefix("discord:"): ledger(conn, quotas.member_id(guild_id, owner.removeprefix("discord:")),
                                                      owned) for owner, owned in sorted(by_owner.items())}
    states = {s: sum(1 for r in records if r.state == s) for s in sorted({r.state for r in records})}
    return {"jobs": len(records), "states": states, "exactly_one_outcome": exactly_once, "grids_done": grids,
            "grids_posted_exactly_once": grids_once, "duplicates": duplicates, "lost": lost,
            "problems": problems[:20], "ledgers_balanced": all(v["balanced"] for v in ledgers.values()),
            "ledgers": ledgers}  # fmt: skip


def recoveries(faults: list[Fault], records: list[jobs.JobRecord], settle_s: float | None) -> list[dict[str, Any]]:
    """Seconds from each fault's start until the system was whole again: for a killed worker, its replacement up and
    the job it was running ended; for a Redis restart or a gateway drop, the first job asked for after it ended."""
    finished = {r.job_id: r.finished_at for r in records}
    out: list[dict[str, Any]] = []
    start = min((f.started_at for f in faults), default=0.0)
    for f in faults:
        if f.kind == "worker_sigkill":
            ends = [f.ended_at] + [finished.get(j) for j in f.detail["jobs_running"]]
            back = None if None in ends else max(e for e in ends if e is not None)
        else:
            after = [r.finished_at for r in records if r.created_at >= f.ended_at and r.finished_at is not None]
            back = min(after, default=None)
        out.append({"fault": f.kind, "at_s": round(f.started_at - start, 1), **{k: v for k, v in f.detail.items()
                    if k == "worker"}, "recovered_s": None if back is None else round(back - f.started_at, 2)})
    if settle_s is not None:
        out.append({"fault": "discord_errors", "recovered_s": round(settle_s, 2)})
    return out
