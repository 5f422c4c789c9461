"""Quotas as members meet them: admission of a command's jobs (all or none), the release of jobs that did not get
queued, `/info`'s tier and quota lines, `/relax`'s check, `/subscribe`'s text. `Who` is all they need of a member."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

import quotas.admission as admission
import quotas.ledger as ledger
import quotas.tierstore as tierstore
from core import jobs, keys
from core.errors import TierLimit
from core.spec import GRID_SIZE, JobSpec
from quotas.admission import Admission, AdmissionRequest, Render
from quotas.tiers import Assignment, TiersConfig, apply_policy, resolve

log = logging.getLogger(__name__)

DM_GUILD = "dm"
"""The guild name of commands run outside a server. Image commands are refused there (`check_place`): bans, tiers and
usage are a server's, so a DM would be a way around them."""

DM_REFUSAL = "Image commands work only in a server: use me in a channel of a server I am in."


@dataclass(frozen=True)
class Who:
    """A member as one interaction describes them: roles arrive with every interaction, so no API call is needed."""

    guild: str
    user: str
    role_ids: tuple[str, ...] = ()

    @property
    def member(self) -> str:
        return ledger.member_id(self.guild, self.user)


def steps_run(spec: JobSpec, strength: float = 1.0) -> int:
    """Sampling steps the job actually runs: its steps, cut short by `--stop`, and for an image-to-image job the
    last `strength` fraction of them."""
    return max(1, math.ceil(spec.steps * spec.stop / 100 * strength))


def render_of(spec: JobSpec, kind: str = "grid", *, strength: float = 1.0) -> Render:
    """What a job of `kind` renders from `spec`: a grid, variations, an edit or a drawn region render four images of
    the spec's size (variations only the last `strength` of the steps); an upscale, Upscale (2x) or the re-render of
    an expired image one. The spec of an Upscale (2x) job has the output's size (twice its source's sides)."""
    images = GRID_SIZE if kind in ("grid", "vary", "edit", "region_mask") else 1
    return Render(spec.model, spec.width, spec.height, steps_run(spec, strength), images)


def check_place(member: Who) -> None:
    """Refuse image commands outside a server.

    Raises:
        TierLimit: the member is in a DM.
    """
    if member.guild == DM_GUILD:
        raise TierLimit(DM_REFUSAL)


def assignment(conn: redis.Redis, config: TiersConfig, member: Who, *, now: float) -> Assignment:
    """The member's tier (grant > best role > guild default) with the guild's overrides applied."""
    return tierstore.assignment(conn, config, member.guild, member.user, list(member.role_ids), now=now)


def reserve(
    conn: redis.Redis, config: TiersConfig, member: Who, specs: list[JobSpec], *, kind: str = "grid",
    strength: float = 1.0, stored: bool = True, stealth: bool = False,
) -> Admission:
    """Admit one command's jobs (all or none) in one atomic step; enqueue them with the returned ids and lane.

    Every job is checked against the tier (pixels, steps, model) and reserves the estimate of what it renders
    (`render_of`). `strength`: the image-to-image strength of a variation. `stored`: for an upscale (U1-U4), whether
    its source image is still stored: a copy is free, re-rendering an expired one is charged like any render.
    `stealth`: the member's /stealth is on; the admission says `private` when their tier allows it too.

    Raises:
        TierLimit, Banned, RateLimited, TooManyJobs, QuotaExceeded: see `quotas.admission.admit` (nothing enqueued);
            TierLimit also outside a server (`check_place`).
    """
    check_place(member)
    now = time.time()
    tier = assignment(conn, config, member, now=now).tier
    request = _request(specs, kind, now, strength=strength, stored=stored, stealth=stealth)
    return admission.admit(conn, member.member, tier, request, policy=config.period)


ADMISSION_READS = 3
"""How many replies `reserve_reads`' commands give (`plan_reserve` takes them in that order)."""


def reserve_reads(member: Who) -> list[tuple[str, ...]]:
    """The Redis commands whose replies `plan_reserve` needs: the guild's tier policy, the member's grant, the
    models' measured speeds. Run them in one pipeline with whatever else the caller reads."""
    return [
        ("GET", keys.tier_policy(member.guild)),
        ("HGETALL", keys.tier_grant(member.member)),
        ("HGETALL", keys.model_speed()),
    ]


def plan_reserve(
    config: TiersConfig, member: Who, specs: list[JobSpec], replies: list[Any], *, kind: str = "grid",
    now: float | None = None, strength: float = 1.0, stored: bool = True, stealth: bool = False,
) -> admission.AdmitCall:
    """`reserve` without I/O: from the replies to `reserve_reads`, the admission script's call (run it with
    `admission.ADMIT_SCRIPT`, read its answer with `AdmitCall.result`).

    Raises:
        TierLimit: a spec is beyond the member's tier, or the member is outside a server (nothing counted).
    """
    check_place(member)
    now = time.time() if now is None else now
    policy = tierstore.parse_policy(replies[0])
    effective = apply_policy(config, policy)
    grant = tierstore.parse_grant(replies[1] or {})
    tier = resolve(effective, policy, role_ids=member.role_ids, grant=grant, now=now).tier
    request = _request(specs, kind, now, strength=strength, stored=stored, stealth=stealth)
    admission.check_request(tier, request)
    speeds = {_text(k): float(_text(v)) for k, v in (replies[2] or {}).items()}
    return admission.admit_call(member.member, tier, request, s_per_mpx_step=speeds, policy=config.period)


RELEASE_RETRY_S = 2.0
"""Seconds between two tries to refund unqueued jobs while Redis is unreachable (`release_when_back`)."""

RELEASE_RETRY_FOR_S = 5 * 60
"""How long a front end keeps trying; after that (or if it stops) the ledger's backstop refunds the jobs after its
grace (`quotas.ledger.RESERVATION_GRACE_S`)."""

RELEASE_RECHECK_S = 2.0
"""After releasing the jobs of an admission whose answer never came, release them once more this long after, for an
admission command that reached a hung Redis after the first release."""


def release_when_back(conn: redis.Redis, job_ids: Iterable[str], *, retry_s: float = RELEASE_RETRY_S,
                      for_s: float = RELEASE_RETRY_FOR_S, recheck_s: float = RELEASE_RECHECK_S) -> bool:
    """Blocking (a thread's work): `release_unqueued` once Redis answers, and once more `recheck_s` later; whether
    it did within `for_s`. For the jobs of an `admission.AdmissionUnanswered` (the asyncio bot's own loop is
    `bot.submit.release_later`)."""
    job_ids = list(job_ids)
    deadline = time.monotonic() + for_s
    while True:
        try:
            release_unqueued(conn, job_ids)
            time.sleep(recheck_s)
            release_unqueued(conn, job_ids)
        except redis.RedisError:
            if time.monotonic() + retry_s > deadline:
                return False
            time.sleep(retry_s)
            continue
        log.info("released %d jobs whose admission went unanswered", len(job_ids))
        return True


def release_unqueued(conn: redis.Redis, job_ids: Iterable[str]) -> None:
    """Give back what admission reserved for jobs that did not get queued (idempotent).

    A job whose record exists was enqueued after all (or failed to be: then it is final) and keeps its reservation
    until its outcome applies it.
    """
    for job_id in job_ids:
        if jobs.get(conn, job_id) is None:
            ledger.refund(conn, job_id)
        else:
            ledger.apply_outcome(conn, job_id)


def _request(specs: list[JobSpec], kind: str, now: float, *, strength: float, stored: bool, stealth: bool
             ) -> AdmissionRequest:
    """One command's jobs, each with its own render (model, size, steps), so each reserves its own estimate."""
    if not specs:
        raise TierLimit("this command creates no jobs")
    renders = tuple(render_of(spec, kind, strength=strength) for spec in specs)
    first = renders[0]
    free = kind in admission.FREE_KINDS and stored
    ids = tuple(jobs.new_job_id() for _ in specs)
    return AdmissionRequest(ids, specs[0].mode, first.model, first.width, first.height, first.steps, kind, now,
                            images=first.images, renders=renders, free=free, stealth=stealth)


def check_stealth(conn: redis.Redis, config: TiersConfig, member: Who) -> None:
    """Refuse `/stealth` for a tier without stealth images.

    Raises:
        TierLimit: the member's tier does not allow stealth.
    """
    tier = assignment(conn, config, member, now=time.time()).tier
    if not tier.stealth:
        raise TierLimit(f"The {tier.name} tier has no stealth mode: your images stay public on the web gallery. "
                        "/subscribe tells how to get a tier with stealth.")


def check_mode(conn: redis.Redis, config: TiersConfig, member: Who, mode: str) -> None:
    """Refuse `/relax` for a tier without relax mode.

    Raises:
        TierLimit: the member's tier has no relax mode.
    """
    tier = assignment(conn, config, member, now=time.time()).tier
    if mode == "relax" and not tier.relax:
        raise TierLimit(
            f"The {tier.name} tier has no relax mode, so your jobs stay in fast mode. "
            "/subscribe tells how to get a tier with relax."
        )


def minutes(seconds: float) -> str:
    """GPU time in words: `12.5 min` or `3.2 h`."""
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def date(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M UTC")


def source_text(assigned: Assignment) -> str:
    """How the tier was assigned, for `/info` and `/admin tier show`."""
    if assigned.source == "grant":
        until = f" until {date(assigned.expires_at)}" if assigned.expires_at else ""
        return f"given by an admin{until}"
    if assigned.source == "role":
        return f"from your role <@&{assigned.role_id}>"
    return "the server's default tier"


def tier_lines(conn: redis.Redis, config: TiersConfig, member: Who, *, now: float | None = None) -> list[str]:
    """`/info`'s tier and quota lines: tier and how it was assigned, fast time used and left, relax, job counts."""
    now = time.time() if now is None else now
    assigned = assignment(conn, config, member, now=now)
    tier = assigned.tier
    use = ledger.usage(conn, member.member, tier, now=now, policy=config.period)
    granted = f" (including {minutes(use.granted_s)} granted)" if use.granted_s else ""
    relax = "available (unlimited, after fast jobs)" if tier.relax else "not in this tier"
    lines = [
        f"**Tier:** {tier.name} ({source_text(assigned)})",
        f"**Fast time:** {minutes(use.used_s)} used, {minutes(use.left_s)} left of {minutes(use.allowance_s)}"
        f"{granted}; resets {date(use.resets_at)}",
        f"**Relax mode:** {relax}",
        f"**Jobs:** {use.active_fast} fast and {use.active_relax} relax queued or running "
        f"(at most {tier.max_waiting} at once, {tier.max_running_fast} in fast)",
    ]
    reason = admission.ban_reason(conn, member.guild, member.user)
    if reason is not None:
        lines.append(f"**Banned:** {reason}")
    return lines


DEFAULT_SUBSCRIBE_TEXT = "This server's admins have not said how to get a higher tier yet: ask one of them."


def subscribe_text(conn: redis.Redis, config: TiersConfig, member: Who) -> str:
    """`/subscribe`: the admins' text, the member's tier, and the tiers there are."""
    policy = tierstore.load_policy(conn, member.guild)
    tier = assignment(conn, config, member, now=time.time()).tier
    names = ", ".join(tierstore.effective_config(conn, member.guild, config).tiers)
    return f"{policy.subscribe_text or DEFAULT_SUBSCRIBE_TEXT}\n\nYour tier: **{tier.name}**. Tiers: {names}."


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
