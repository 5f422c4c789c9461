"""The worker's output check end to end: in-process worker, the tiny pipeline, real Redis and the Discord emulator.

Flagging: `builtin:skin` (the shipped classifier, loaded by name) with WORKER_SAFETY_THRESHOLD 0 flags every image;
`FlagIndices`, a controllable classifier defined here for tests only, flags chosen images of a grid.
"""

from __future__ import annotations

import dataclasses
import io
import signal
from collections.abc import Sequence

import numpy as np
import pytest
import redis
from PIL import Image

import moderation as modstore
from core import audit, jobs, keys
from core.safety import Safety, rendered_negative, with_safety
from core.spec import JobSpec
from discord_emulator.state import Channel
from tests.worker.emulated_discord import DiscordJob, ThreadedEmulator, discord, enqueue_from_discord  # noqa: F401
from tests.worker.image_server import png, serving
from tests.worker.worker_helpers import WorkerProcess, record, run_in_process, worker_processes
from worker import safety
from worker.engine import Engine
from worker.safety import SafetySettings

SAFETY_NEGATIVE = "nsfw, gore"


class FlagIndices:
    """Test-only classifier: scores the images at `indices` (of each call) 1, the others 0."""

    name = "test:indices"

    def __init__(self, *indices: int) -> None:
        self.indices = set(indices)

    def flags(self, images: Sequence[Image.Image]) -> list[float]:
        return [1.0 if i in self.indices else 0.0 for i in range(len(images))]


class Broken:
    """Test-only classifier that fails, as a missing checkpoint would."""

    name = "test:broken"

    def flags(self, images: Sequence[Image.Image]) -> list[float]:
        raise RuntimeError("weights missing")


def flag_everything() -> safety.SafetyClassifier:
    classifier = safety.load(SafetySettings(classifier="builtin:skin"))
    assert classifier is not None
    return classifier


def decoded(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def stored(conn: redis.Redis, job_id: str, index: int) -> np.ndarray:
    data = conn.get(keys.job_image(job_id, index))
    assert isinstance(data, bytes), f"job {job_id} has no image {index}"
    return decoded(data)


def checked(spec: JobSpec, action: str = "blur") -> JobSpec:
    """The spec as the bot sends it from a channel that is not age-restricted."""
    return with_safety(spec, Safety(SAFETY_NEGATIVE, check_outputs=True, action=action))


@pytest.fixture
def mod_log(discord: ThreadedEmulator, redis_conn: redis.Redis) -> Channel:  # noqa: F811
    """A #mod-log channel chosen as the guild's moderation log."""
    channel = discord.call(lambda: discord.emu.state.add_channel("mod-log"))
    modstore.set_log_channel(redis_conn, discord.emu.state.guild_id, channel.id)
    return channel


def run(conn: redis.Redis, engine: Engine, discord: ThreadedEmulator, spec: JobSpec, classifier,  # noqa: F811
        threshold: float = 0.5, **enqueue) -> DiscordJob:
    user = discord.call(lambda: discord.emu.add_user(f"user{len(discord.emu.state.users)}"))
    job = enqueue_from_discord(conn, discord, user, spec, **enqueue)
    run_in_process(conn, engine, poster=discord.poster(min_edit_interval_s=0.05), classifier=classifier,
                   safety_threshold=threshold, preview_interval_s=0.0)
    assert record(conn, job.job_id).state == jobs.DONE, record(conn, job.job_id).reason
    return job


def test_rendered_negative_reaches_the_model(tiny_engine: Engine, tiny_spec: JobSpec) -> None:
    """The guild's safety negative prompt is part of what the pipeline gets: the same as typing it after --no."""
    safe = checked(tiny_spec)
    assert rendered_negative(safe) == SAFETY_NEGATIVE
    typed = dataclasses.replace(tiny_spec, negative_prompt=SAFETY_NEGATIVE)
    with_check = tiny_engine.render(safe, indices=(0,))[0]
    assert np.array_equal(np.asarray(with_check), np.asarray(tiny_engine.render(typed, indices=(0,))[0]))
    assert not np.array_equal(np.asarray(with_check), np.asarray(tiny_engine.render(tiny_spec, indices=(0,))[0]))


def test_flagged_grid_is_blurred_posted_as_spoiler_stored_blurred_and_logged(
    redis_conn: redis.Redis, tiny_engine: Engine, tiny_spec: JobSpec, discord: ThreadedEmulator,  # noqa: F811
    mod_log: Channel,
) -> None:
    """builtin:skin flags every image (threshold 0): the grid is posted as a SPOILER_ attachment with no preview
    before it, the stored images U/V start from are the blurred ones, the notice (member, job, prompt) reaches
    #mod-log with mentions off, and an "image flagged" audit entry names the job."""
    spec = checked(tiny_spec)
    raw = tiny_engine.render(spec)
    job = run(redis_conn, tiny_engine, discord, spec, flag_everything(), threshold=0.0)
    original = discord.message(job.interaction.original_id)
    (attachment,) = original.attachments
    assert attachment.filename.startswith(safety.SPOILER_PREFIX) and "is blurred" in original.content
    assert not any(a.filename == "preview.jpg" for r in original.history for a in r.attachments)
    for index, image in enumerate(raw):
        assert np.array_equal(stored(redis_conn, job.job_id, index), np.asarray(safety.blurred(image), np.int16))
        assert not np.array_equal(stored(redis_conn, job.job_id, index), np.asarray(image, np.int16))
    notices = discord.wait_until(lambda: discord.emu.messages(mod_log.id))
    assert len(notices) == 1
    assert job.job_id in notices[0].content and f"<@{job.user.id}>" in notices[0].content
    assert "a red cat" in notices[0].content and "builtin:skin" in notices[0].content
    (post,) = discord.emu.requests("POST", rf"/channels/{mod_log.id}/messages")
    assert post.json["allowed_mentions"] == {"parse": []}
    entry = audit.latest(redis_conn, discord.emu.state.guild_id)[0]
    assert (entry.action, entry.actor, entry.target) == ("image flagged", job.user.id, job.job_id)


def test_upscale_of_a_flagged_image_is_the_blurred_one_as_spoiler(
    redis_conn: redis.Redis, tiny_engine: Engine, tiny_spec: JobSpec, discord: ThreadedEmulator,  # noqa: F811
) -> None:
    """U2 of a flagged grid copies the stored blurred image (there is no unblurred one to get) and is a spoiler too;
    U1 of an image that was not flagged is posted as is."""
    spec = checked(tiny_spec)
    parent = run(redis_conn, tiny_engine, discord, spec, FlagIndices(1))
    u2 = run(redis_conn, tiny_engine, discord, spec, FlagIndices(1), kind="upscale",
             source={"job_id": parent.job_id, "index": 2})
    (attachment,) = discord.message(u2.interaction.original_id).attachments
    assert attachment.filename.startswith(safety.SPOILER_PREFIX)
    assert attachment.data == redis_conn.get(keys.job_image(parent.job_id, 1))
    u1 = run(redis_conn, tiny_engine, discord, spec, FlagIndices(1), kind="upscale",
             source={"job_id": parent.job_id, "index": 1})
    (attachment,) = discord.message(u1.interaction.original_id).attachments
    assert not attachment.filename.startswith(safety.SPOILER_PREFIX)


def test_upscale_of_an_expired_flagged_image_is_rerendered_blurred_as_spoiler(
    redis_conn: redis.Redis, tiny_engine: Engine, tiny_spec: JobSpec, discord: ThreadedEmulator,  # noqa: F811
) -> None:
    """When a flagged grid's image 2 expired (its flags with it), U2 re-renders it, checks it again and posts it
    blurred as a SPOILER_, recording the U job's flags (keys.job_flagged) so /show and later buttons see them."""
    spec = checked(tiny_spec)
    parent = run(redis_conn, tiny_engine, discord, spec, flag_everything(), threshold=0.0)
    kept = stored(redis_conn, parent.job_id, 1)
    redis_conn.delete(keys.job_image(parent.job_id, 1), keys.job_grid(parent.job_id),
                      keys.job_flagged(parent.job_id))  # expired together
    u2 = run(redis_conn, tiny_engine, discord, spec, flag_everything(), threshold=0.0, kind="upscale",
             source={"job_id": parent.job_id, "index": 2})
    assert record(redis_conn, u2.job_id).gpu_s > 0  # re-rendered, not copied
    (attachment,) = discord.message(u2.interaction.original_id).attachments
    assert attachment.filename.startswith(safety.SPOILER_PREFIX)
    assert np.abs(decoded(attachment.data) - kept).mean() < 2.0  # the blurred image again, up to float noise
    assert redis_conn.get(keys.job_flagged(u2.job_id)) is not None


def test_withhold_replaces_flagged_images_with_placeholders(
    redis_conn: redis.Redis, tiny_engine: Engine, tiny_spec: JobSpec, discord: ThreadedEmulator,  # noqa: F811
) -> None:
    """withhold: flagged images 1 and 3 become grey placeholders (stored and posted), the others stay as rendered;
    the result is not a spoiler and says which were withheld."""
    spec = checked(tiny_spec, action="withhold")
    raw = tiny_engine.render(spec)
    job = run(redis_conn, tiny_engine, discord, spec, FlagIndices(0, 2))
    for index in (0, 2):
        assert tuple(stored(redis_conn, job.job_id, index)[0, 0]) == safety.PLACEHOLDER_GREY
    for index in (1, 3):
        assert np.array_equal(stored(redis_conn, job.job_id, index), np.asarray(raw[index], np.int16))
    original = discord.message(job.interaction.original_id)
    assert not original.attachments[0].filename.startswith(safety.SPOILER_PREFIX)
    assert "Image #1, #3 was withheld" in original.content


def test_no_classifier_checks_nothing_and_status_says_so(
    redis_conn: redis.Redis, tiny_engine: Engine, tiny_spec: JobSpec, discord: ThreadedEmulator,  # noqa: F811
) -> None:
    """A worker with no classifier posts the images as rendered and reports itself, so
    /admin moderation status says outputs are not checked."""
    spec = checked(tiny_spec)
    job = run(redis_conn, tiny_engine, discord, spec, None)
    assert not redis_conn.exists(keys.job_flagged(job.job_id))
    assert not discord.message(job.interaction.original_id).attachments[0].filename.startswith("SPOILER_")
    lines = modstore.status_lines(redis_conn, discord.emu.state.guild_id)
    assert any("Image safety classifier: none configured" in line for line in lines)


def test_age_restricted_job_is_not_checked(
    redis_conn: redis.Redis, tiny_engine: Engine, tiny_spec: JobSpec, discord: ThreadedEmulator,  # noqa: F811
) -> None:
    """A job from an age-restricted channel (Safety() from the bot) is posted unchecked even by a flagging worker."""
    job = run(redis_conn, tiny_engine, discord, with_safety(tiny_spec, Safety()), flag_everything(), threshold=0.0)
    assert not redis_conn.exists(keys.job_flagged(job.job_id))


def test_unwritable_log_channel_is_recorded_and_the_job_still_delivers(
    redis_conn: redis.Redis, tiny_engine: Engine, tiny_spec: JobSpec, discord: ThreadedEmulator,  # noqa: F811
    mod_log: Channel,
) -> None:
    """Discord refusing the notice (403) does not fail the job; admins see the problem in status."""
    discord.call(lambda: discord.emu.inject("POST", rf"/channels/{mod_log.id}/messages", 403, times=5))
    job = run(redis_conn, tiny_engine, discord, checked(tiny_spec), flag_everything(), threshold=0.0)
    assert discord.message(job.interaction.original_id).attachments[0].filename.startswith("SPOILER_")
    lines = modstore.status_lines(redis_conn, discord.emu.state.guild_id)
    assert any(line.startswith("Problem: posting to the moderation log channel failed") for line in lines)


def test_a_failing_classifier_fails_the_job_without_posting_images(
    redis_conn: redis.Redis, tiny_engine: Engine, tiny_spec: JobSpec, discord: ThreadedEmulator,  # noqa: F811
) -> None:
    """If the classifier fails, no unchecked image is stored or posted: the job fails with words for the member."""
    user = discord.call(lambda: discord.emu.add_user("carol"))
    job = enqueue_from_discord(redis_conn, discord, user, checked(tiny_spec))
    run_in_process(redis_conn, tiny_engine, poster=discord.poster(), classifier=Broken())
    rec = record(redis_conn, job.job_id)
    assert rec.state == jobs.FAILED and "safety check failed" in rec.reason
    assert not redis_conn.exists(keys.job_image(job.job_id, 0))


def test_worker_process_builds_its_classifier_once_and_reports_it(redis_url, redis_conn: redis.Redis, tmp_path):
    """`python -m worker` with WORKER_SAFETY_CLASSIFIER builds it at start and reports it for /admin moderation
    status; on SIGTERM it withdraws the report (a stopped worker checks nothing)."""
    with worker_processes() as started:
        started.append(worker := WorkerProcess(redis_url, tmp_path, "checker", WORKER_SAFETY_CLASSIFIER="builtin:skin"))
        worker.wait_registered(redis_conn)
        assert "Image safety classifier: builtin:skin" in modstore.status_lines(redis_conn, "g")
        assert "image safety classifier 'builtin:skin'" in worker.log()
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout_s=60) == 0, worker.log()
    assert not redis_conn.hexists(keys.safety_classifiers(), "checker")


def test_a_flagged_input_image_is_refused_logged_and_not_charged(
    redis_conn: redis.Redis, tiny_engine: Engine, tiny_spec: JobSpec, discord: ThreadedEmulator,  # noqa: F811
    mod_log: Channel,
) -> None:
    """An image prompt whose image the classifier flags (outside age-restricted channels): the job fails before
    rendering, saying why, with no GPU time; #mod-log gets the notice and the audit log an entry. In an
    age-restricted channel the same image is used."""
    skin = Image.new("RGB", (64, 64), (220, 160, 130))
    with serving({"/in.png": png(skin)}) as (base, rules):
        prompt_images = {"images": {"urls": [f"{base}/in.png"], "weights": [1.0], "iw": 1.0}}
        spec = dataclasses.replace(checked(tiny_spec), extras={**checked(tiny_spec).extras, **prompt_images})
        user = discord.call(lambda: discord.emu.add_user("input"))
        job = enqueue_from_discord(redis_conn, discord, user, spec)
        run_in_process(redis_conn, tiny_engine, poster=discord.poster(), classifier=flag_everything(),
                       image_rules=rules)
        failed = record(redis_conn, job.job_id)
        assert failed.state == jobs.FAILED and "image safety check" in failed.reason and failed.gpu_s == 0
        notices = discord.wait_until(lambda: discord.emu.messages(mod_log.id))
        assert "flagged input image #1" in notices[0].content
        entry = audit.latest(redis_conn, discord.emu.state.guild_id)[0]
        assert (entry.action, entry.target) == ("image flagged", job.job_id)

        adult = dataclasses.replace(tiny_spec, extras=prompt_images)  # no output check: an age-restricted channel
        allowed = enqueue_from_discord(redis_conn, discord, user, adult)
        run_in_process(redis_conn, tiny_engine, poster=discord.poster(), classifier=flag_everything(),
                       image_rules=rules)
        assert record(redis_conn, allowed.job_id).state == jobs.DONE
