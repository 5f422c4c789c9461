"""The output check of one job: the worker's classifier scores each new image, the guild's action replaces the
flagged ones, and each flagged job is recorded (audit log) and announced in the guild's moderation log channel.

    checked = output_check.check(classifier, threshold, spec, images)  # after the engine, before anything is stored
    ...                                                                 # store checked.images: U/V only see these
    output_check.report(conn, http, job_id, spec, checked.detail)       # after the job is done; never fails it

A job carries what to do in its spec (`core.safety.safety_of`: the bot sets it per channel). With no classifier
configured nothing is checked (`/admin moderation status` says so, from `worker.safety.report`). Its functions take
plain values (the classifier, a Redis client, the Discord client), not the worker's context.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis
from PIL import Image

import moderation
from core import delivery, keys
from core.errors import GenerationFailed
from core.safety import parse_flags, safety_of
from core.spec import JobSpec
from worker import safety
from worker.discord_http import DiscordAPIError, DiscordHTTP

log = logging.getLogger(__name__)

CHANNEL_MESSAGES = "/channels/{channel_id}/messages"
NOTICE_TRIES = 2
"""Attempts at posting a notice: it is not worth holding the next job for."""


@dataclass(frozen=True)
class Checked:
    """A job's images after the check: the flagged ones replaced (blurred or withheld)."""

    images: list[Image.Image]
    flagged: tuple[int, ...] = ()  # indices replaced
    action: str = ""  # "blur" or "withhold" when any was flagged
    detail: str = ""  # for the moderation log: which images, their scores and what was done; "" when none


def check(
    classifier: safety.SafetyClassifier | None, threshold: float, spec: JobSpec, images: Sequence[Image.Image]
) -> Checked:
    """Score and replace the images when the spec asks for an output check and there is a `classifier`; an image
    scoring at least `threshold` is flagged.

    Raises:
        GenerationFailed: the classifier failed; no unchecked image leaves the worker.
    """
    wanted = safety_of(spec)
    if not wanted.check_outputs or classifier is None:
        return Checked(list(images))
    try:
        scores = classifier.flags(images)
    except Exception as exc:
        log.error("image safety classifier %s failed: %s", classifier.name, exc)
        raise GenerationFailed("the image safety check failed, so the images were not posted; tell an admin") from None
    replaced, flagged = safety.apply_policy(images, scores, wanted.action, threshold=threshold)
    if not flagged:
        return Checked(replaced)
    shown = ", ".join(f"#{i + 1} ({scores[i]:.2f})" for i in flagged)
    detail = f"{classifier.name} flagged image {shown}; {'blurred' if wanted.action == 'blur' else 'withheld'}"
    return Checked(replaced, tuple(flagged), wanted.action, detail)


def save_flags(pipe: redis.client.Pipeline, job_id: str, flagged: Sequence[int], action: str, *, ttl_s: int) -> None:
    """Remember which images of a job were replaced (with its images, in the same pipeline)."""
    if flagged:
        pipe.set(keys.job_flagged(job_id), json.dumps({"action": action, "flagged": list(flagged)}), ex=ttl_s)


def flags_of(conn: redis.Redis, job_id: str) -> tuple[str, tuple[int, ...]]:
    """(action, indices) of a job's replaced images; ("", ()) when none was."""
    return parse_flags(conn.get(keys.job_flagged(job_id)))


def report(conn: redis.Redis, http: DiscordHTTP | None, job_id: str, spec: JobSpec, detail: str) -> None:
    """Record an "image flagged" event in the guild's audit log and post its notice to the moderation log channel
    (with `http`; none when it is None). Never raises: a failure is logged (and a log channel Discord refuses is
    reported to admins)."""
    try:
        target = delivery.load(conn, job_id)
        guild, user = (target.guild_id, target.user_id) if target else ("", "")
        event = moderation.Event("image flagged", guild or "dm", user, time.time(), spec.prompt, job_id, detail)
        moderation.record_event(conn, event)
        if guild and http is not None:
            post_notice(conn, http, guild, moderation.format_notice(event))
    except Exception as exc:  # the job is done and delivered: nothing here may change that
        log.warning("job %s: could not record its flagged images: %s", job_id, exc)


def post_notice(conn: redis.Redis, http: DiscordHTTP, guild: str, notice: str) -> None:
    """Post to the guild's moderation log channel with the bot token, mentions disabled; 403/404 are recorded for
    `/admin moderation status`."""
    policy = moderation.load_policy(conn, guild)
    if not policy.log_channel:
        return
    payload = {"content": notice, "allowed_mentions": {"parse": []}}
    try:
        http.request("POST", CHANNEL_MESSAGES, {"channel_id": policy.log_channel}, payload=payload,
                               bot_auth=True, tries=NOTICE_TRIES)
    except DiscordAPIError as exc:
        if exc.status in (401, 403, 404):
            why = "no bot token" if exc.status == 401 else f"Discord answered {exc.status} ({exc.discord_message})"
            moderation.log_channel_failed(conn, guild, why, now=time.time())
        log.warning("guild %s: moderation log notice not posted: %s", guild, exc)
        return
    if policy.log_failure:
        moderation.log_channel_worked(conn, guild)
