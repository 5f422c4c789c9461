"""The buttons of a job from the web (re-roll, U1-U4, V1-V4 under a grid; Vary, Upscale (2x), Zoom Out, Make
Square and the pans under a single image), through the very steps a click in Discord takes (`bot.submit`), with the
synchronous front of each subsystem (run in a thread by the routes):

    1. the job the button asks for                  core.buttonjobs.button_job (the bot's own)
    2. where its image may be shown                 core.reposting.check_place (`check_origin`)
    3. screening                                     moderation.screen (suspension, block list, safety)
    4. admission and reservation                     quotas.reserve (bans, rate, places, fast time, tier limits)
    5. record and enqueue, in one atomic step        core.queue.enqueue (with the member's job lists)
       or, when that fails, the reservation back    quotas.release_unqueued

A web job has no Discord delivery record: the worker renders it and stores its images, and the page follows its
progress from the job's events (`web.pages.events`).
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

import moderation
import quotas
from core import buttons, jobs, queue, reposting, userjobs, usersettings
from core.buttonjobs import (
    FROM_STORED_IMAGE,
    button_job,
    check_editable,
    check_upscale2x,
    read_parent,
    with_edited_prompt,
)
from core.buttons import ButtonRef
from core.delivery import Delivery
from core.errors import RepostRefused
from core.images import Rules
from core.models import ModelRegistry
from core.queue import SINGLE_IMAGE_KINDS
from core.safety import with_safety
from core.settings import ImageSettings, JobSettings
from core.spec import VARY_STRENGTH, JobSpec
from web.session import Session

WEB_CHANNEL = "web"
"""The `channel_id` of the place a web job's image is shown in (`core.reposting.Place`): not an age-restricted one."""

UNLABELLED = {"reroll": "Re-roll", "panl": "Pan left", "panr": "Pan right", "panu": "Pan up", "pand": "Pan down"}
"""Words for the buttons Discord shows as an emoji alone."""


def buttons_for(record: jobs.JobRecord, registry: ModelRegistry, *, remix: bool = False) -> list[tuple[str, int, str]]:
    """The buttons Discord shows under the job (`core.buttons`: a grid's, or a single image's for its size and
    model), as (action, image index, label). Those that first ask for a prompt in Discord (Vary (Region), Custom
    Zoom) are left out: the web has its own region editor. A `/describe` has none: its answer is its prompts.

    `remix`: the buttons that take an edited prompt instead (`core.buttons.REMIX_ACTIONS`: re-roll, V1-V4, Vary,
    Zoom, Pan), Custom Zoom among them."""
    if record.kind == "describe":
        return []
    if record.kind in SINGLE_IMAGE_KINDS:
        size = (record.spec.width, record.spec.height)
        rows = buttons.image_components(record.job_id, size, registry.get(record.spec.model))
    else:
        rows = buttons.grid_components(record.job_id)
    found = []
    for row in rows:
        for component in row["components"]:
            ref = buttons.parse(component["custom_id"])
            if ref is None or ref.action == "region":
                continue
            if (ref.action in buttons.REMIX_ACTIONS) if remix else (ref.action not in buttons.ASK_ACTIONS):
                found.append((ref.action, ref.index, component.get("label") or UNLABELLED.get(ref.action, ref.action)))
    return found


@dataclass(frozen=True)
class Deps:
    """What an action needs, built once by the app."""

    conn: redis.Redis
    tiers: quotas.TiersConfig
    registry: ModelRegistry
    job_settings: JobSettings = field(default_factory=JobSettings)  # IMAGINE_*, as the bot reads them
    image_rules: Rules = field(default_factory=lambda: ImageSettings().rules())


def who(session: Session) -> quotas.Who:
    return quotas.Who(session.guild, session.user, session.roles)


def place(session: Session, admin: bool) -> reposting.Place:
    return reposting.Place(session.guild, WEB_CHANNEL, False, session.owner, admin)


def press(deps: Deps, session: Session, admin: bool, job_id: str, action: str, index: int, prompt: str | None = None
          ) -> str:
    """Run one button of a job for the signed-in member; the new job's id. With `prompt`, one of the buttons that
    take an edited prompt (Remix, Custom Zoom: `buttons_for(..., remix=True)`), with that prompt as in Discord.

    Raises:
        ValueError: not a button the web offers (bad action or index).
        PromptError: the edited prompt does not parse (nothing queued or charged).
        JobExpired, EditRefused, RepostRefused, TierLimit, Suspended, PromptBlocked, Banned, RateLimited, TooManyJobs,
            QuotaExceeded: as in Discord (nothing queued or charged).
        redis.RedisError: Redis is unreachable.
    """
    conn, now = deps.conn, time.time()
    ref = ButtonRef(action, index, job_id)
    read = read_parent(conn, ref)
    parent = read.record
    offered = buttons_for(parent, deps.registry, remix=prompt is not None) if parent is not None else []
    if parent is not None and (action, index) not in {(a, i) for a, i, _ in offered}:
        raise ValueError(f"no button {action[:20]!r} {index} under this job" + (" that takes a prompt" if prompt
                                                                                   is not None else ""))
    saved = usersettings.get(conn, session.owner)
    job = button_job(parent, ref, saved.mode, registry=deps.registry)
    check_editable(job, read)
    if prompt is not None:
        job = with_edited_prompt(job, action, prompt, functools.partial(one_prompt, deps, saved))
    if job.kind == "upscale2x":
        check_upscale2x(deps.registry, job.spec)
    if parent is not None and job.kind in FROM_STORED_IMAGE:
        check_origin(parent.spec, read.origin, place(session, admin))
    strength = VARY_STRENGTH.get(str(job.source.get("strength") or "strong"), 1.0) if job.kind == "vary" else 1.0
    spec = screened(conn, session, job.spec, now=now)  # every click, U1-U4 too, as in Discord
    return admit_and_enqueue(deps, session, spec, kind=job.kind, source=job.source, stealth=saved.stealth,
                             strength=strength, stored=read.stored)


def one_prompt(deps: Deps, saved: usersettings.UserSettings, text: str) -> JobSpec:
    """The one job an edited prompt asks for, parsed as the bot parses it (`bot.submit.one_prompt`).

    Raises:
        PromptError: it does not parse, or asks for several jobs.
    """
    return usersettings.one_job(usersettings.parse_prompt(text, saved, deps.registry, caps=deps.job_settings,
                                                          image_rules=deps.image_rules))


def check_origin(spec: JobSpec, origin: Delivery | None, here: reposting.Place) -> None:
    """The repost rules for a button that starts from a stored image (`core.reposting.check_place`); a job made on
    the web has no Discord origin: the gallery shows it only to whoever may see it, and an image made unchecked
    (in an age-restricted channel) is never re-used here.

    Raises:
        RepostRefused: the message names the reason.
    """
    if origin is not None:
        reposting.check_place(spec, origin, here)
    elif reposting.made_unchecked(spec):
        raise RepostRefused(reposting.AGE_RESTRICTED)


def screened(conn: redis.Redis, session: Session, spec: JobSpec, *, now: float) -> JobSpec:
    """The spec as moderation lets it run here: screened against the guild's current lists, with the safety of a
    channel that is not age-restricted.

    Raises:
        Suspended, PromptBlocked: refused (the strike and the event are recorded by moderation).
    """
    safety = moderation.screen(conn, session.guild, session.user, [spec], {}, prompt=spec.prompt,
                               channel_nsfw=False, now=now)
    return with_safety(spec, safety)


def admit_and_enqueue(
    deps: Deps, session: Session, spec: JobSpec, *, kind: str, source: dict[str, Any], stealth: bool,
    strength: float = 1.0, stored: bool = True, writes_for: Callable[[str], list[tuple[Any, ...]]] | None = None,
) -> str:
    """Admit one job for the member and enqueue it in the admitted lane; refund it when it could not be queued, and
    release it once Redis answers when the admission's answer never came (Redis stopped or hung while running it).
    `stealth`: the member's /stealth, as in Discord. `writes_for(job_id)`: more commands for the enqueue's atomic
    step (a Vary (Region) job's mask)."""
    try:
        admitted = quotas.reserve(deps.conn, deps.tiers, who(session), [spec], kind=kind, strength=strength,
                                  stored=stored, stealth=stealth)
    except quotas.AdmissionUnanswered as lost:  # the member is told to try again: release what it may have reserved
        threading.Thread(target=quotas.release_when_back, args=(deps.conn, lost.job_ids), name="release-unanswered",
                         daemon=True).start()
        raise
    job_id = admitted.job_ids[0]
    writes = [*(writes_for(job_id) if writes_for else []), *userjobs.add_writes(session.owner, job_id)]
    try:
        return queue.enqueue(deps.conn, dataclasses.replace(spec, mode=admitted.mode), session.owner, job_id=job_id,
                             kind=kind, source=source, writes=writes, private=admitted.private)
    except BaseException:
        quotas.release_unqueued(deps.conn, [job_id])
        raise
