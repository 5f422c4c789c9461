"""Delivery from the worker to the Discord API emulator: progress edits, the final grid, faults, expired tokens,
failures, and no token in any log line or job data. In-process RQ worker, real Redis, the tiny engine."""

from __future__ import annotations

import dataclasses
import io
import logging
import time

import pytest
import redis
from PIL import Image
from rq.job import Job

from core import buttons, jobs, keys, queue
from core.errors import GenerationFailed
from core.spec import JobSpec
from discord_emulator import LOADING, Message
from discord_emulator.leaks import leaks
from discord_emulator.openapi import find_spec, load_checker
from tests.worker.emulated_discord import ThreadedEmulator, discord, enqueue_from_discord  # noqa: F401
from tests.worker.test_jobs import ScriptedEngine
from tests.worker.worker_helpers import record, run_in_process
from worker import redelivery
from worker.delivery import Poster
from worker.engine import Engine


class NoProgressPoster(Poster):
    """A poster that sends only outcomes, so that injected faults meet the final delivery itself."""

    def live(self, *args, **kwargs):
        return None


def final_png(message: Message) -> Image.Image:
    """The message's one attachment, decoded as a PNG."""
    assert len(message.attachments) == 1, message.attachments
    image = Image.open(io.BytesIO(message.attachments[0].data))
    assert image.format == "PNG"
    return image


def grid_revisions(message: Message) -> list[int]:
    """Indexes of the message's revisions that show a PNG (the final grid)."""
    return [n for n, r in enumerate(message.history) if any(a.filename.endswith(".png") for a in r.attachments)]


def test_progress_edits_then_final_grid_on_original(redis_conn: redis.Redis, tiny_engine: Engine, tiny_spec: JobSpec,
                                                    discord: ThreadedEmulator):  # noqa: F811
    """The original shows (Waiting to start), (NN%) with a JPEG preview, then the 2x2 PNG grid with 9 buttons and
    the prompt, seed and mode; no preview follows the grid."""
    user = discord.call(lambda: discord.emu.add_user("alice"))
    spec = dataclasses.replace(tiny_spec, steps=6)
    job = enqueue_from_discord(redis_conn, discord, user, spec)
    run_in_process(redis_conn, tiny_engine, poster=discord.poster(min_edit_interval_s=0.05),
                   preview_interval_s=0.0, test_step_delay_s=0.1)
    assert record(redis_conn, job.job_id).state == "done"
    original = discord.message(job.interaction.original_id)
    texts = [r.content for r in original.history]
    assert any("(Waiting to start)" in t for t in texts)
    previews = [n for n, r in enumerate(original.history) if "%)" in r.content and r.attachments]
    assert previews and all(r.attachments[0].filename == "preview.jpg" for r in map(original.history.__getitem__,
                                                                                      previews))
    assert grid_revisions(original) == [len(original.history) - 1]  # the grid is the last revision, and only once
    assert grid_revisions(original)[0] > max(previews)
    grid = final_png(original)
    assert grid.size == (128, 128)
    assert original.custom_ids() == [c["custom_id"] for row in buttons.grid_components(job.job_id)
                                     for c in row["components"]]
    assert len(original.custom_ids()) == 9
    assert original.content.startswith("**a red cat")
    assert f"<@{user.id}> (fast) --seed 7" in original.content
    assert not original.flags & LOADING
    assert redis_conn.exists(keys.job_final_delivered(job.job_id))


def test_rate_limit_and_server_errors_still_deliver_once(redis_conn, tiny_engine, tiny_spec,
                                                         discord: ThreadedEmulator):  # noqa: F811
    """A 429 and two 500s on the final edit are retried; the grid arrives exactly once."""
    user = discord.call(lambda: discord.emu.add_user("bob"))
    discord.emu.inject("PATCH", r"^/webhooks/", 429, retry_after=0.05)
    discord.emu.inject("PATCH", r"^/webhooks/", 500, times=2)
    job = enqueue_from_discord(redis_conn, discord, user, tiny_spec)
    poster = NoProgressPoster(discord.poster().http)
    retried: list[str] = []
    poster.http.on_retry = retried.append
    run_in_process(redis_conn, tiny_engine, poster=poster)
    patches = discord.emu.requests("PATCH", r"^/webhooks/")
    assert [r.status for r in patches] == [429, 500, 500, 200]
    assert retried == ["rate_limited", "server_error", "server_error"]  # what the worker counts for /metrics
    original = discord.message(job.interaction.original_id)
    assert len(grid_revisions(original)) == 1
    assert final_png(original).size == (128, 128)
    assert len(discord.emu.messages()) == 1  # no channel post besides the original


def test_expired_token_posts_channel_message_once_and_a_rerun_edits_it(redis_conn, tiny_engine, tiny_spec,
                                                                        discord: ThreadedEmulator):  # noqa: F811
    """Discord answering 401 50027 turns the grid into one channel message mentioning the user; a re-run attempt of
    the same job edits that message instead of posting another."""
    user = discord.call(lambda: discord.emu.add_user("carol"))
    job = enqueue_from_discord(redis_conn, discord, user, tiny_spec)
    discord.call(lambda: setattr(job.interaction, "expired", True))
    run_in_process(redis_conn, tiny_engine, poster=discord.poster())
    posts = discord.emu.requests("POST", r"^/channels/\d+/messages$")
    assert [r.status for r in posts] == [200]
    assert posts[0].json["allowed_mentions"] == {"users": [user.id]}
    posted = discord.message(posts[0].response["id"])
    assert f"<@{user.id}>" in posted.content and final_png(posted).size == (128, 128)
    assert len(posted.custom_ids()) == 9
    assert redis_conn.get(keys.job_channel_message(job.job_id)) == posted.id.encode()
    assert not redis_conn.exists(keys.job_interaction_token(job.job_id))  # dropped once Discord refused it

    # An attempt that ran again after dying before it recorded the delivery: it edits, it does not post.
    redis_conn.delete(keys.job_final_delivered(job.job_id))
    rq_queue = queue.rq_queue(redis_conn, keys.queue_name(tiny_spec.model, tiny_spec.mode))
    rq_queue.enqueue_call(queue.JOB_FUNCTION, args=(queue.payload(job.job_id, tiny_spec, "x"),), job_id=job.job_id)
    run_in_process(redis_conn, tiny_engine, poster=discord.poster())
    assert len(discord.emu.requests("POST", r"^/channels/\d+/messages$")) == 1
    assert [r.status for r in discord.emu.requests("PATCH", rf"^/channels/\d+/messages/{posted.id}$")] == [200]
    assert len([m for m in discord.emu.messages() if m.attachments]) == 1
    assert redis_conn.exists(keys.job_final_delivered(job.job_id))


def test_no_token_in_redis_posts_channel_message(redis_conn, tiny_engine, tiny_spec,
                                                 discord: ThreadedEmulator):  # noqa: F811
    """A job whose token expired in Redis (a long relax queue) gets no progress edits and one channel post."""
    user = discord.call(lambda: discord.emu.add_user("dave"))
    job = enqueue_from_discord(redis_conn, discord, user, tiny_spec, keep_token=False)
    run_in_process(redis_conn, tiny_engine, poster=discord.poster())
    assert discord.emu.requests("PATCH") == []
    posts = discord.emu.requests("POST", r"^/channels/\d+/messages$")
    assert len(posts) == 1 and posts[0].authorized
    assert f"<@{user.id}>" in discord.message(posts[0].response["id"]).content
    assert discord.message(job.interaction.original_id).flags & LOADING  # untouched: only the token could edit it


def test_failed_job_says_why_with_reroll(redis_conn, tiny_engine, tiny_spec, discord: ThreadedEmulator):  # noqa: F811
    """A job that fails permanently edits its message to the reason, with only a re-roll button and no image."""
    user = discord.call(lambda: discord.emu.add_user("erin"))
    job = enqueue_from_discord(redis_conn, discord, user, tiny_spec)
    engine = ScriptedEngine(tiny_engine, GenerationFailed("the model produced an invalid image (NaN)"))
    run_in_process(redis_conn, engine, poster=discord.poster())
    original = discord.message(job.interaction.original_id)
    assert "failed: the model produced an invalid image (NaN)" in original.content
    assert original.custom_ids() == [buttons.custom_id("reroll", job.job_id)]
    assert original.attachments == []


def test_cancelled_job_says_cancelled(redis_conn, tiny_engine, tiny_spec, discord: ThreadedEmulator):  # noqa: F811
    """A running job cancelled by its owner edits its message to say so, without buttons."""
    user = discord.call(lambda: discord.emu.add_user("frank"))
    job = enqueue_from_discord(redis_conn, discord, user, tiny_spec)

    class CancellingEngine(ScriptedEngine):
        def render(self, spec, **kwargs):
            queue.cancel(redis_conn, job.job_id)
            return self.engine.render(spec, **kwargs)

    run_in_process(redis_conn, CancellingEngine(tiny_engine), poster=discord.poster())
    assert record(redis_conn, job.job_id).state == "cancelled"
    original = discord.message(job.interaction.original_id)
    assert "(cancelled)" in original.content and original.components == [] and original.attachments == []


def test_a_job_cancelled_while_queued_is_shown_cancelled_by_the_next_maintenance(
        redis_conn, tiny_engine, tiny_spec, discord: ThreadedEmulator):  # noqa: F811
    """/cancel of a queued job: no worker runs it, and the workers' maintenance edits its "Waiting to start"
    message to say it was cancelled, once."""
    user = discord.call(lambda: discord.emu.add_user("hugo"))
    job = enqueue_from_discord(redis_conn, discord, user, tiny_spec)
    assert queue.cancel(redis_conn, job.job_id) == queue.CancelResult.CANCELLED
    assert redelivery.redeliver_due(redis_conn, discord.poster(), now=time.time()) == 1
    original = discord.message(job.interaction.original_id)
    assert "(cancelled)" in original.content and original.components == [] and original.attachments == []
    assert redelivery.redeliver_due(redis_conn, discord.poster(), now=time.time() + 3600) == 0


def test_discord_down_keeps_the_result(redis_conn, tiny_engine, tiny_spec, discord: ThreadedEmulator,  # noqa: F811
                                       caplog: pytest.LogCaptureFixture):
    """When Discord answers 500 to every try, the job still ends done with its grid in Redis, the error logged."""
    user = discord.call(lambda: discord.emu.add_user("gina"))
    job = enqueue_from_discord(redis_conn, discord, user, tiny_spec)
    discord.emu.inject("*", r".", 500, times=100)
    with caplog.at_level(logging.WARNING, logger="worker.delivery"):
        run_in_process(redis_conn, tiny_engine, poster=NoProgressPoster(discord.poster().http))
    assert record(redis_conn, job.job_id).state == "done"
    assert redis_conn.exists(keys.job_grid(job.job_id))
    assert not redis_conn.exists(keys.job_final_delivered(job.job_id))
    assert "could not deliver" in caplog.text and "{token}" in caplog.text


def test_no_token_in_logs_or_job_data(redis_conn, tiny_engine, tiny_spec, discord: ThreadedEmulator,  # noqa: F811
                                      caplog: pytest.LogCaptureFixture):
    """Neither the bot token nor the interaction token appears in any DEBUG log line or in the RQ job's stored data,
    through progress edits, a 401 from the webhook and the channel fallback."""
    user = discord.call(lambda: discord.emu.add_user("hana"))
    job = enqueue_from_discord(redis_conn, discord, user, dataclasses.replace(tiny_spec, steps=6))
    discord.emu.inject("PATCH", r"^/webhooks/", 500)
    caplog.set_level(logging.DEBUG)

    class ExpiringEngine(ScriptedEngine):
        def render(self, spec, **kwargs):
            images = self.engine.render(spec, **kwargs)
            discord.call(lambda: setattr(job.interaction, "expired", True))
            return images

    run_in_process(redis_conn, ExpiringEngine(tiny_engine), poster=discord.poster(min_edit_interval_s=0.05),
                   preview_interval_s=0.0, test_step_delay_s=0.05)
    assert discord.emu.requests("POST", r"^/channels/")  # the bot token was used
    assert discord.emu.requests("PATCH", r"^/webhooks/")  # and the interaction token
    rq_job = Job.fetch(job.job_id, connection=redis_conn, serializer=queue.SERIALIZER)
    stored = b"".join(k + v for k, v in redis_conn.hgetall(rq_job.key).items())
    logged = caplog.text + "".join(repr(r.args) for r in caplog.records)
    for secret in (discord.emu.token, job.interaction.token):
        assert secret not in logged
        assert secret.encode() not in stored
        assert secret not in repr(rq_job.args) + rq_job.description
    assert leaks(discord.emu, discord.emu.token) == []
    assert jobs.get(redis_conn, job.job_id).state == "done"  # type: ignore[union-attr]


@pytest.mark.skipif(find_spec() is None, reason="Discord's openapi.json is not in shared/reference")
def test_requests_match_discords_openapi(redis_conn, tiny_engine, tiny_spec, discord: ThreadedEmulator):  # noqa: F811
    """Every request the worker sends (webhook edits with a preview and a grid, a channel post with a nonce, its
    edit) matches Discord's OpenAPI description."""
    user = discord.call(lambda: discord.emu.add_user("jon"))
    job = enqueue_from_discord(redis_conn, discord, user, dataclasses.replace(tiny_spec, steps=6))
    expired = enqueue_from_discord(redis_conn, discord, user, tiny_spec, keep_token=False)
    run_in_process(redis_conn, tiny_engine, poster=discord.poster(min_edit_interval_s=0.05),
                   preview_interval_s=0.0, test_step_delay_s=0.05)
    redis_conn.delete(keys.job_final_delivered(expired.job_id))
    discord.poster().deliver_outcome(redis_conn, record(redis_conn, expired.job_id))
    checker = load_checker()
    assert checker is not None
    worker_requests = [r for r in discord.emu.requests() if not r.path.startswith("/interactions/")]
    assert {(r.method, r.path.split("/")[1]) for r in worker_requests} == {("PATCH", "webhooks"),
                                                                            ("POST", "channels"),
                                                                            ("PATCH", "channels")}
    assert [str(v) for r in worker_requests for v in checker.check(r)] == []
    assert discord.message(job.interaction.original_id).attachments
