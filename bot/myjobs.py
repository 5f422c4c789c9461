"""A member's own jobs, in words: `/info`'s job lines, `/cancel` and `/show`, as plain functions of plain values
(the bot runs them in a Redis thread). `/admin cancel` cancels through here too."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

import quotas
from bot.members import mention
from core import buttons, jobs, keys, queue, reposting, userjobs, usersettings
from core import delivery as deliveries
from core.errors import ImagineError, JobExpired, NotYourJob
from core.models import ModelRegistry
from core.reposting import Place

INFO_JOBS_MAX_CHARS = 1400
"""The most characters `/info`'s job lines take: with its tier lines the reply stays under Discord's 2000-character
limit on a message however many jobs a member has (past it Discord refuses the reply)."""


def describe(conn: redis.Redis, record: jobs.JobRecord) -> str:
    """One line about a job for `/info`: id, prompt, state (with queue position or progress)."""
    state: str = record.state
    if record.state == jobs.QUEUED:
        ahead = queue.position(conn, record.job_id)
        state = "queued" if ahead is None else f"queued, {ahead} ahead"
    elif record.state == jobs.RUNNING and record.total:
        state = f"running, {100 * record.step // record.total}%"
    elif record.reason and record.state != jobs.DONE:
        state = f"{record.state} ({record.reason})"
    return f"`{record.job_id}` **{_short(record.spec.prompt)}** - {state} ({record.spec.mode})"


def info_text(conn: redis.Redis, owner: str, recent_count: int = 10) -> str:
    """What `/info` shows: the user's mode and defaults, jobs queued and running, recent jobs."""
    saved = usersettings.get(conn, owner)
    records = userjobs.recent(conn, owner)
    active = [r for r in records if r.state in jobs.ACTIVE_STATES]
    defaults = " ".join(f"--{k} {v}" for k, v in sorted(saved.defaults.items())) or "none"
    visibility = "stealth (new images private on the web gallery)" if saved.stealth else "public"
    lines = [f"**Mode:** {saved.mode}", f"**Visibility:** {visibility}", f"**Saved defaults:** {defaults}", "",
             "**Queued and running**"]
    lines += [describe(conn, r) for r in active] or ["none"]
    lines += ["", "**Recent jobs**"]
    lines += [describe(conn, r) for r in records[:recent_count]] or ["none"]
    return _fit(lines, INFO_JOBS_MAX_CHARS)


def cancel_job(conn: redis.Redis, owner: str, job_id: str | None, *, admin: bool) -> str:
    """Cancel `job_id` (default: the owner's newest queued or running job); words for the user.

    Raises:
        JobExpired: no such job.
        NotYourJob: the job is someone else's and `admin` is False.
        ImagineError: the owner has nothing to cancel.
    """
    if job_id is None:
        active = userjobs.active(conn, owner)
        if not active:
            raise ImagineError("You have no queued or running job to cancel.")
        record: jobs.JobRecord | None = active[0]
    else:
        record = jobs.get(conn, job_id.strip().lower())
    if record is None:
        raise JobExpired(f"There is no job {job_id} (it may have expired).")
    if record.owner != owner and not admin:
        raise NotYourJob(f"Job {record.job_id} is not yours: only its owner or a Manage Server admin can cancel it.")
    reason = "cancelled by its owner" if record.owner == owner else "cancelled by an admin"
    result = queue.cancel(conn, record.job_id, reason=reason)
    if result is queue.CancelResult.CANCELLED:
        quotas.apply_outcome(conn, record.job_id)  # this call made the job final: its reservation is refunded now
        return f"Cancelled job `{record.job_id}` (**{_short(record.spec.prompt)}**) before it started."
    if result is queue.CancelResult.REQUESTED:
        return f"Stopping job `{record.job_id}` (**{_short(record.spec.prompt)}**): it ends within a step."
    return f"Job `{record.job_id}` had already finished; nothing to cancel."


@dataclass(frozen=True)
class Shown:
    """A job's result to post again."""

    content: str
    filename: str
    image: bytes
    components: list[dict[str, Any]]


def show(conn: redis.Redis, job_id: str, place: Place, registry: ModelRegistry) -> Shown:
    """A job's grid (or single image) with its buttons, for `/show` in `place` (`core.reposting.check_show`: the
    caller's own job or, for an admin, any job of this server; only in that server; a job made in an age-restricted
    channel only in an age-restricted channel).

    Raises:
        JobExpired: the record or its images are gone.
        RepostRefused: it may not be shown here; nothing is posted.
        ImagineError: the job has no result (yet).
    """
    job_id = job_id.strip().lower()
    record = jobs.get(conn, job_id) if _is_id(job_id) else None
    if record is None:
        raise JobExpired(f"There is no job {job_id} (it may have expired).")
    reposting.check_show(record.owner, record.spec, deliveries.load(conn, job_id), place)
    if record.state != jobs.DONE:
        raise ImagineError(f"Job {job_id} is {record.state}: it has no result to show.")
    spec = record.spec
    content = f"**{spec.prompt}** --seed {spec.seed} --{spec.mode} - {mention(record.owner)} (job `{job_id}`)"
    # Images the worker's safety check blurred are shown behind a spoiler again (`keys.job_flagged`).
    flagged = conn.get(keys.job_flagged(job_id))
    name = f"SPOILER_{job_id}.png" if flagged and json.loads(flagged).get("action") == "blur" else f"{job_id}.png"
    grid = conn.get(keys.job_grid(job_id))
    if isinstance(grid, bytes):
        return Shown(content, name, grid, buttons.grid_components(job_id))
    single = conn.get(keys.job_image(job_id, 0))
    if isinstance(single, bytes):
        components = buttons.image_components(job_id, (spec.width, spec.height), registry.get(spec.model))
        return Shown(content, name, single, components)
    raise JobExpired(f"The images of job {job_id} have expired.")


def _fit(lines: list[str], limit: int) -> str:
    """The lines joined, the first of them only when all do not fit in `limit` characters (then ending in "…")."""
    kept: list[str] = []
    for line in lines:
        if sum(len(k) + 1 for k in kept) + len(line) + 2 > limit:
            return "\n".join([*kept, "…"])
        kept.append(line)
    return "\n".join(kept)


def _is_id(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
