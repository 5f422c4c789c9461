"""Button job kinds end to end through the in-process worker and the emulator: U_k, V_k, Vary (Subtle), Upscale (2x)."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import redis
from PIL import Image

from core import buttons, jobs, keys, queue
from core.canvas import Edit, plan
from core.models import tiny_model
from core.safety import Safety, safety_of, with_safety
from core.spec import JobSpec
from tests.worker.emulated_discord import DiscordJob, ThreadedEmulator, discord, enqueue_from_discord  # noqa: F401
from tests.worker.worker_helpers import record, run_in_process
from worker.delivery import Poster
from worker.engine import Engine
from worker.grid import DISCORD_MAX_ATTACHMENT_BYTES


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32)


def distance(a: bytes, b: bytes) -> float:
    """Mean absolute pixel difference of two same-sized PNGs, 0-255."""
    return float(np.abs(pixels(a) - pixels(b)).mean())


def image(conn: redis.Redis, job_id: str, index: int) -> bytes:
    data = conn.get(keys.job_image(job_id, index))
    assert isinstance(data, bytes), f"job {job_id} has no image {index}"
    return data


def custom_ids(components: list[dict]) -> list[str]:
    return [c["custom_id"] for row in components for c in row["components"]]


def run_job(conn: redis.Redis, engine: Engine, discord: ThreadedEmulator, spec: JobSpec,  # noqa: F811
            **enqueue: object) -> DiscordJob:
    """Enqueue one job as the bot does, work it, and check it ended done."""
    user = discord.call(lambda: discord.emu.add_user(f"user{len(discord.emu.state.users)}"))
    job = enqueue_from_discord(conn, discord, user, spec, **enqueue)  # type: ignore[arg-type]
    run_in_process(conn, engine, poster=discord.poster())
    rec = record(conn, job.job_id)
    assert rec.state == "done", rec.reason
    assert rec.kind == enqueue.get("kind", "grid")
    return job


def test_upscale_posts_the_parents_image_unchanged(redis_conn, tiny_engine, tiny_spec,
                                                   discord: ThreadedEmulator):  # noqa: F811
    """U2 stores and posts the parent's image 2 byte for byte, with the single-image buttons, rendering nothing."""
    parent = run_job(redis_conn, tiny_engine, discord, tiny_spec)
    up = run_job(redis_conn, tiny_engine, discord, tiny_spec, kind="upscale",
                 source={"job_id": parent.job_id, "index": 2})
    assert image(redis_conn, up.job_id, 0) == image(redis_conn, parent.job_id, 1)
    message = discord.message(up.interaction.original_id)
    assert message.attachments[0].data == image(redis_conn, parent.job_id, 1)
    assert message.custom_ids() == custom_ids(buttons.single_components(up.job_id, square=True))
    assert "Image #2" in message.content
    assert record(redis_conn, up.job_id).gpu_s == 0


def test_upscale_of_an_expired_image_renders_it_alone(redis_conn, tiny_engine, tiny_spec,
                                                      discord: ThreadedEmulator):  # noqa: F811
    """When the parent's images expired (image 3 and the grid: they share a TTL), U3 re-renders just that image: the
    same picture up to float noise."""
    parent = run_job(redis_conn, tiny_engine, discord, tiny_spec)
    kept = image(redis_conn, parent.job_id, 2)
    redis_conn.delete(keys.job_image(parent.job_id, 2), keys.job_grid(parent.job_id))
    up = run_job(redis_conn, tiny_engine, discord, tiny_spec, kind="upscale",
                 source={"job_id": parent.job_id, "index": 3})
    assert distance(image(redis_conn, up.job_id, 0), kept) < 2.0
    assert record(redis_conn, up.job_id).gpu_s > 0


def test_expired_image_is_rendered_again_under_the_clicked_jobs_safety(
        redis_conn, tiny_engine, tiny_spec, discord: ThreadedEmulator, monkeypatch):  # noqa: F811
    """An expired image is rendered again from the parent's prompt with the U job's safety (the channel it was
    clicked in, as the bot screened it), not the parent's: its safety negative prompt and output check apply."""
    parent = run_job(redis_conn, tiny_engine, discord, with_safety(tiny_spec, Safety()))
    redis_conn.delete(keys.job_image(parent.job_id, 0), keys.job_grid(parent.job_id))
    rendered: list[JobSpec] = []
    render = tiny_engine.render
    monkeypatch.setattr(tiny_engine, "render", lambda spec, **kw: rendered.append(spec) or render(spec, **kw))
    clicked = Safety("blurry, nsfw", check_outputs=True, action="withhold")
    run_job(redis_conn, tiny_engine, discord, with_safety(tiny_spec, clicked), kind="upscale",
            source={"job_id": parent.job_id, "index": 1})
    assert [safety_of(spec) for spec in rendered] == [clicked]
    assert rendered[0].prompt == tiny_spec.prompt


def test_upscale_before_the_images_are_stored_crops_the_grid(redis_conn, tiny_engine, tiny_spec,
                                                             discord: ThreadedEmulator):  # noqa: F811
    """The four images are stored just after the outcome; a U3 that comes first takes image 3 from the grid: the
    same pixels as the stored image, no GPU time."""
    parent = run_job(redis_conn, tiny_engine, discord, tiny_spec)
    kept = image(redis_conn, parent.job_id, 2)
    redis_conn.delete(*(keys.job_image(parent.job_id, k) for k in range(4)))
    up = run_job(redis_conn, tiny_engine, discord, tiny_spec, kind="upscale",
                 source={"job_id": parent.job_id, "index": 3})
    assert distance(image(redis_conn, up.job_id, 0), kept) == 0
    assert record(redis_conn, up.job_id).gpu_s == 0


def test_variations_start_from_their_source_image(redis_conn, tiny_engine, tiny_spec,
                                                  discord: ThreadedEmulator):  # noqa: F811
    """V3 makes a new grid from image 3 with the new seed: different from the parent's, different from V1's with
    the same seed (the source image matters), redoing 75% of the steps when strong and 40% when subtle (floored)."""
    parent = run_job(redis_conn, tiny_engine, discord, tiny_spec)
    new_seed = dataclasses.replace(tiny_spec, seed=555, steps=5)
    vary = run_job(redis_conn, tiny_engine, discord, new_seed, kind="vary",
                   source={"job_id": parent.job_id, "index": 3, "strength": "strong"})
    vary1 = run_job(redis_conn, tiny_engine, discord, new_seed, kind="vary",
                    source={"job_id": parent.job_id, "index": 1, "strength": "strong"})
    subtle = run_job(redis_conn, tiny_engine, discord, new_seed, kind="vary",
                     source={"job_id": parent.job_id, "index": 3, "strength": "subtle"})
    grids = [redis_conn.get(keys.job_grid(j.job_id)) for j in (parent, vary, vary1, subtle)]
    assert len(set(grids)) == 4
    assert all(distance(image(redis_conn, vary.job_id, k), image(redis_conn, vary1.job_id, k)) > 0 for k in range(4))
    assert (record(redis_conn, vary.job_id).total, record(redis_conn, subtle.job_id).total) == (3, 2)
    message = discord.message(vary.interaction.original_id)
    assert message.custom_ids() == custom_ids(buttons.grid_components(vary.job_id))
    assert "Variations (Strong)" in message.content and "--seed 555" in message.content
    assert Image.open(io.BytesIO(message.attachments[0].data)).size == (128, 128)
    assert "Variations (Subtle)" in discord.message(subtle.interaction.original_id).content


def test_upscale2x_doubles_the_size_within_the_attachment_limit(redis_conn, tiny_engine, tiny_spec,
                                                                 discord: ThreadedEmulator):  # noqa: F811
    """Upscale (2x) of an upscaled image is twice its size, under Discord's limit, posted with single buttons."""
    parent = run_job(redis_conn, tiny_engine, discord, tiny_spec)
    up = run_job(redis_conn, tiny_engine, discord, tiny_spec, kind="upscale",
                 source={"job_id": parent.job_id, "index": 1})
    big = run_job(redis_conn, tiny_engine, discord, tiny_spec, kind="upscale2x",
                  source={"job_id": up.job_id, "index": 1})
    png = image(redis_conn, big.job_id, 0)
    assert Image.open(io.BytesIO(png)).size == (128, 128)
    assert len(png) <= DISCORD_MAX_ATTACHMENT_BYTES
    assert record(redis_conn, big.job_id).total == 1  # 25% of the tiny model's 4 steps: a light pass
    message = discord.message(big.interaction.original_id)
    assert message.custom_ids() == custom_ids(buttons.single_components(big.job_id, square=True))
    assert "Upscaled (2x)" in message.content
    assert record(redis_conn, big.job_id).gpu_s > 0


def test_a_source_that_expired_entirely_fails_with_reroll(redis_conn, tiny_engine, tiny_spec,
                                                          discord: ThreadedEmulator):  # noqa: F811
    """A button on a job whose record and images are gone fails at once, saying so, with a re-roll button."""
    user = discord.call(lambda: discord.emu.add_user("ivy"))
    job = enqueue_from_discord(redis_conn, discord, user, tiny_spec, kind="vary",
                               source={"job_id": "0" * 32, "index": 1, "strength": "subtle"})
    run_in_process(redis_conn, tiny_engine, poster=discord.poster())
    rec = record(redis_conn, job.job_id)
    assert (rec.state, rec.attempt) == ("failed", 1)
    assert "expired" in discord.message(job.interaction.original_id).content
    assert queue.KINDS == ("grid", "upscale", "vary", "upscale2x", "edit", "region_mask", "describe")


def test_upscale2x_renders_its_specs_size_records_its_work_and_stops_offering_2x(
        redis_conn, tiny_engine, tiny_spec, discord: ThreadedEmulator):  # noqa: F811
    """A 2x job renders the size its spec says (twice its source's, as admission charged it) and records the work
    it actually rendered (one image, the light pass's steps); at the model's limit the result has no 2x button,
    and a 2x past that limit fails without rendering."""
    parent = run_job(redis_conn, tiny_engine, discord, tiny_spec)
    up = run_job(redis_conn, tiny_engine, discord, tiny_spec, kind="upscale",
                 source={"job_id": parent.job_id, "index": 1})
    assert float(redis_conn.get(keys.job_work(up.job_id))) == 0  # a copy renders nothing
    big_spec = dataclasses.replace(tiny_spec, width=128, height=128)
    user = discord.call(lambda: discord.emu.add_user("kim"))
    big = enqueue_from_discord(redis_conn, discord, user, big_spec, kind="upscale2x",
                               source={"job_id": up.job_id, "index": 1})
    poster = Poster(discord.poster().http, min_edit_interval_s=0.2, models=(tiny_model(),))
    run_in_process(redis_conn, tiny_engine, poster=poster)
    assert record(redis_conn, big.job_id).state == "done"
    assert Image.open(io.BytesIO(image(redis_conn, big.job_id, 0))).size == (128, 128)
    assert float(redis_conn.get(keys.job_work(big.job_id))) == pytest.approx(128 * 128 * 1 / 1e6)
    message = discord.message(big.interaction.original_id)
    assert message.custom_ids() == custom_ids(buttons.single_components(big.job_id, upscale2x=False, square=True))
    assert not any(":up2x:" in c for c in message.custom_ids())
    huge = enqueue_from_discord(redis_conn, discord, user, dataclasses.replace(tiny_spec, width=256, height=256),
                                kind="upscale2x", source={"job_id": big.job_id, "index": 1})
    run_in_process(redis_conn, tiny_engine, poster=poster)
    failed = record(redis_conn, huge.job_id)
    assert failed.state == "failed" and "over the model's 16384 pixels" in failed.reason and failed.gpu_s == 0


def test_zoom_out_makes_a_grid_around_the_kept_image(redis_conn, tiny_engine, tiny_spec,
                                                     discord: ThreadedEmulator):  # noqa: F811
    """Zoom Out 2x of U1: a new grid of four images of the same size, each holding U1 shrunk to half its sides at
    its centre, pixel for pixel away from the seam; posted with the grid's buttons and named "Zoom Out 2x"."""
    parent = run_job(redis_conn, tiny_engine, discord, tiny_spec)
    up = run_job(redis_conn, tiny_engine, discord, tiny_spec, kind="upscale",
                 source={"job_id": parent.job_id, "index": 1})
    zoom = run_job(redis_conn, tiny_engine, discord, dataclasses.replace(tiny_spec, seed=99), kind="edit",
                   source={"job_id": up.job_id, "index": 1, "op": "zoom", "zoom": 2.0})
    shrunk = Image.open(io.BytesIO(image(redis_conn, up.job_id, 0))).convert("RGB").resize(
        (32, 32), Image.Resampling.LANCZOS)
    band = 4  # worker.editing.feather at 64x64
    inner = np.asarray(shrunk, dtype=np.float32)[band:-band, band:-band]
    for k in range(4):
        assert pixels(image(redis_conn, zoom.job_id, k)).shape == (64, 64, 3)
        assert np.array_equal(pixels(image(redis_conn, zoom.job_id, k))[16 + band:48 - band, 16 + band:48 - band],
                              inner)
    message = discord.message(zoom.interaction.original_id)
    assert message.custom_ids() == custom_ids(buttons.grid_components(zoom.job_id))
    assert "Zoom Out 2x by" in message.content and "--seed 99" in message.content
    assert record(redis_conn, zoom.job_id).gpu_s > 0


def test_pan_renders_the_grown_canvas_its_spec_names(redis_conn, tiny_engine, tiny_spec,
                                                     discord: ThreadedEmulator):  # noqa: F811
    """Pan right of a 64x64 image on the tiny model (4,096 pixels): the canvas core.canvas plans (72x48, the kept
    part scaled down to fit), which is the job's size."""
    parent = run_job(redis_conn, tiny_engine, discord, tiny_spec)
    layout = plan(Edit("pan", direction="right"), (64, 64), multiple=8, max_pixels=64 * 64)
    assert layout.canvas == (72, 48) and layout.scaled
    pan = run_job(redis_conn, tiny_engine, discord,
                  dataclasses.replace(tiny_spec, width=72, height=48, aspect="3:2"), kind="edit",
                  source={"job_id": parent.job_id, "index": 2, "op": "pan", "direction": "right"})
    assert all(pixels(image(redis_conn, pan.job_id, k)).shape == (48, 72, 3) for k in range(4))
    assert "Pan right by" in discord.message(pan.interaction.original_id).content


def test_an_edit_not_sized_by_its_plan_fails_without_rendering(redis_conn, tiny_engine, tiny_spec,
                                                               discord: ThreadedEmulator):  # noqa: F811
    """A pan payload whose spec keeps the source's size was not made by this bot: the job fails, saying why,
    before any GPU time is spent."""
    parent = run_job(redis_conn, tiny_engine, discord, tiny_spec)
    user = discord.call(lambda: discord.emu.add_user("lee"))
    job = enqueue_from_discord(redis_conn, discord, user, tiny_spec, kind="edit",
                               source={"job_id": parent.job_id, "index": 1, "op": "pan", "direction": "up"})
    run_in_process(redis_conn, tiny_engine, poster=discord.poster())
    failed = record(redis_conn, job.job_id)
    assert failed.state == "failed" and "the edit makes 48x72" in failed.reason and failed.gpu_s == 0


def test_a_custom_zoom_renders_on_the_canvas_its_spec_names(redis_conn, tiny_engine, tiny_spec,
                                                            discord: ThreadedEmulator):  # noqa: F811
    """Custom Zoom 1x with --ar 5:3 of a square image: the 80x48 canvas of the spec, the image at its centre at
    48x48 (it fits the short side), kept pixel for pixel away from the seam, the sides new."""
    parent = run_job(redis_conn, tiny_engine, discord, tiny_spec)
    up = run_job(redis_conn, tiny_engine, discord, tiny_spec, kind="upscale",
                 source={"job_id": parent.job_id, "index": 3})
    zoom = run_job(redis_conn, tiny_engine, discord, dataclasses.replace(tiny_spec, width=80, height=48, aspect="5:3"),
                   kind="edit", source={"job_id": up.job_id, "index": 1, "op": "zoom", "zoom": 1.0})
    source = Image.open(io.BytesIO(image(redis_conn, up.job_id, 0))).convert("RGB").resize(
        (48, 48), Image.Resampling.LANCZOS)
    band = 3  # worker.editing.feather at 48 pixels
    for k in range(4):
        result = pixels(image(redis_conn, zoom.job_id, k))
        assert result.shape == (48, 80, 3)
        assert np.array_equal(result[:, 16 + band:64 - band], np.asarray(source, dtype=np.float32)[:, band:-band])


def test_drawn_region_is_repainted_and_the_rest_kept(redis_conn, tiny_engine, tiny_spec,
                                                     discord: ThreadedEmulator):  # noqa: F811
    """A Vary (Region) drawn in the web editor (`region_mask`, its mask stored beside the job): four new images of
    image 2's size, each exactly image 2 outside the mask and new inside it; charged like a render."""
    parent = run_job(redis_conn, tiny_engine, discord, tiny_spec)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    drawn = io.BytesIO()
    mask.save(drawn, format="PNG")
    repaint = dataclasses.replace(tiny_spec, prompt="a blue door", seed=5)
    job_id = jobs.new_job_id()
    queue.enqueue(redis_conn, repaint, "discord:2", job_id=job_id, kind="region_mask",
                  source={"job_id": parent.job_id, "index": 2},
                  writes=[("SET", keys.job_mask(job_id), drawn.getvalue())])
    run_in_process(redis_conn, tiny_engine)
    rec = record(redis_conn, job_id)
    assert rec.state == "done", rec.reason
    source = pixels(image(redis_conn, parent.job_id, 1))
    for k in range(4):
        new = pixels(image(redis_conn, job_id, k))
        outside = np.ones((64, 64), dtype=bool)
        outside[16:48, 16:48] = False
        assert np.array_equal(new[outside], source[outside])
        assert np.abs(new[20:44, 20:44] - source[20:44, 20:44]).mean() > 5
    assert rec.gpu_s > 0
