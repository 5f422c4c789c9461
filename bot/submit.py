"""What a command or a click does in Redis, as plain functions of plain values (the bot runs them in a thread)."""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass
from typing import Any

import redis

from bot.errors import JobExpired, NotYourJob
from core import buttons, jobs, keys, queue, userjobs, usersettings
from core import delivery as deliveries
from core.buttons import ButtonRef
from core.errors import ImagineError
from core.spec import MAX_SEED, JobSpec, Mode

OWNER_PREFIX = "discord:"


def owner_of(user_id: int | str) -> str:
    """The owner string of a Discord user's jobs."""
    return f"{OWNER_PREFIX}{user_id}"


def mention(owner: str) -> str:
    """`<@id>` for a Discord owner string, the owner itself for others (CLI jobs)."""
    return f"<@{owner[len(OWNER_PREFIX) :]}>" if owner.startswith(OWNER_PREFIX) else owner


def ahead_of_new(conn: redis.Redis, spec: JobSpec) -> int:
    """How many jobs a worker takes before a job put on `spec`'s lane now (relax waits behind all of fast)."""
    count = queue.rq_queue(conn, keys.queue_name(spec.model, spec.mode)).count
    if spec.mode == "relax":
        count += queue.rq_queue(conn, keys.queue_name(spec.model, "fast")).count
    return count


def waiting_text(spec: JobSpec, user_id: int | str, ahead: int, label: str = "") -> str:
    """The job's message until the worker takes over: `**prompt** - <@user> (Waiting to start)` and its place."""
    what = f" - {label}" if label else ""
    place = "next in the queue" if ahead == 0 else f"queued, {ahead} ahead"
    return f"**{spec.prompt}**{what} - <@{user_id}> (Waiting to start) - {spec.mode}, {place}"


def admit(
    conn: redis.Redis,
    spec: JobSpec,
    owner: str,
    delivery: deliveries.Delivery,
    interaction_token: str | None,
    *,
    kind: str = "grid",
    source: dict[str, Any] | None = None,
    job_id: str | None = None,
) -> str:
    """Save where the job's result goes, then enqueue it (a worker never sees a job without its delivery).

    `job_id` is the id admission reserved GPU time for (`bot.quotas.reserve`); a fresh one when None.

    Returns:
        The job id.

    Raises:
        redis.RedisError: Redis is unreachable.
    """
    job_id = job_id or jobs.new_job_id()
    deliveries.save(conn, job_id, delivery, interaction_token=interaction_token)
    userjobs.add(conn, owner, job_id)
    queue.enqueue(conn, spec, owner, job_id=job_id, kind=kind, source=source)
    return job_id


@dataclass(frozen=True)
class ButtonJob:
    """The job a click asks for."""

    spec: JobSpec
    kind: str
    source: dict[str, Any]
    label: str  # shown in the job's message, e.g. "Image #2"


def button_job(
    parent: jobs.JobRecord | None, ref: ButtonRef, mode: Mode, rng: random.Random | None = None
) -> ButtonJob:
    """The new job for a click on `ref`, run in the clicker's `mode`.

    Raises:
        JobExpired: the parent's record is gone.
    """
    if parent is None:
        raise JobExpired(f"This job is too old: job {ref.job_id} has expired, so its buttons no longer work.")
    rng = rng or random.SystemRandom()
    same = dataclasses.replace(parent.spec, mode=mode)
    reseeded = dataclasses.replace(same, seed=rng.randint(0, MAX_SEED), seed_random=True)
    source: dict[str, Any] = {"job_id": ref.job_id, "index": ref.index}
    if ref.action == "u":
        return ButtonJob(same, "upscale", source, f"Image #{ref.index}")
    if ref.action == "v":
        return ButtonJob(reseeded, "vary", {**source, "strength": "strong"}, f"Variations of image #{ref.index}")
    if ref.action in ("strong", "subtle"):
        label = f"Variations ({ref.action.capitalize()})"
        return ButtonJob(reseeded, "vary", {**source, "strength": ref.action}, label)
    if ref.action == "up2x":
        return ButtonJob(same, "upscale2x", source, "Upscaled (2x)")
    if ref.action == "reroll":
        return ButtonJob(reseeded, "grid", {"job_id": ref.job_id}, "Re-roll")
    raise ValueError(f"no job for button action {ref.action!r}")


def parent_and_settings(
    conn: redis.Redis, job_id: str, owner: str
) -> tuple[jobs.JobRecord | None, usersettings.UserSettings]:
    """The clicked job's record and the clicker's settings, in one thread hop."""
    return jobs.get(conn, job_id), usersettings.get(conn, owner)


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
    lines = [f"**Mode:** {saved.mode}", f"**Saved defaults:** {defaults}", "", "**Queued and running**"]
    lines += [describe(conn, r) for r in active] or ["none"]
    lines += ["", "**Recent jobs**"]
    lines += [describe(conn, r) for r in records[:recent_count]] or ["none"]
    return "\n".join(lines)


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


def show(conn: redis.Redis, job_id: str) -> Shown:
    """A job's grid (or single image) with its buttons, for `/show`.

    Raises:
        JobExpired: the record or its images are gone.
        ImagineError: the job has no result (yet).
    """
    job_id = job_id.strip().lower()
    record = jobs.get(conn, job_id) if _is_id(job_id) else None
    if record is None:
        raise JobExpired(f"There is no job {job_id} (it may have expired).")
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
        return Shown(content, name, single, buttons.single_components(job_id))
    raise JobExpired(f"The images of job {job_id} have expired.")


def _is_id(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
