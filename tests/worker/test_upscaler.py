"""Upscale (2x) with the diffusers latent upscaler (WORKER_UPSCALER): the tiny one built from configs, end to end
through the in-process worker and the emulator, and loaded once by a real `python -m worker`."""

from __future__ import annotations

import io
import logging

import pytest
import redis
import torch
from PIL import Image

from core import buttons, keys, queue
from core.spec import JobSpec
from model import loading
from tests.worker.emulated_discord import DiscordJob, ThreadedEmulator, discord, enqueue_from_discord  # noqa: F401
from tests.worker.worker_helpers import WorkerProcess, record, run_in_process, worker_processes
from worker import __main__ as worker_main
from worker.engine import Engine
from worker.grid import DISCORD_MAX_ATTACHMENT_BYTES


@pytest.fixture(scope="module")
def upscaling_engine(tiny_engine: Engine) -> Engine:
    """The tiny engine's pipeline with the tiny latent upscaler, as `WORKER_UPSCALER=builtin:tiny-upscaler` loads."""
    return Engine(tiny_engine.pipe, loading.load_upscaler(loading.BUILTIN_TINY_UPSCALER, tiny_engine.pipe, "cpu"))


def run(conn: redis.Redis, engine: Engine, discord: ThreadedEmulator, spec: JobSpec,  # noqa: F811
        **enqueue: object) -> DiscordJob:
    """Enqueue one job as the bot does and work it in process."""
    user = discord.call(lambda: discord.emu.add_user(f"user{len(discord.emu.state.users)}"))
    job = enqueue_from_discord(conn, discord, user, spec, **enqueue)  # type: ignore[arg-type]
    run_in_process(conn, engine, poster=discord.poster())
    return job


def test_upscale2x_uses_the_upscaler_once_and_doubles_the_size(redis_conn, upscaling_engine, tiny_spec,
                                                                unet_calls, discord: ThreadedEmulator):  # noqa: F811
    """With an upscaler, Upscale (2x) is one upscaler call (one VAE decode, one UNet pass per step) and no base-model
    pass: a 128x128 PNG from a 64x64 image, under Discord's limit, posted with the single-image buttons."""
    parent = run(redis_conn, upscaling_engine, discord, tiny_spec).job_id
    decodes: list[int] = []
    steps: list[int] = []
    upscaler = upscaling_engine.upscaler
    assert upscaler is not None
    hooks = [upscaler.vae.decoder.register_forward_hook(lambda *_: decodes.append(1)),
             upscaler.unet.register_forward_hook(lambda *_: steps.append(1))]
    unet_calls.clear()
    try:
        job = run(redis_conn, upscaling_engine, discord, tiny_spec, kind="upscale2x",
                  source={"job_id": parent, "index": 2})
    finally:
        for hook in hooks:
            hook.remove()
    big = job.job_id
    rec = record(redis_conn, big)
    assert rec.state == "done", rec.reason
    assert (len(decodes), len(steps), len(unet_calls)) == (1, tiny_spec.steps, 0)
    png = redis_conn.get(keys.job_image(big, 0))
    assert isinstance(png, bytes) and len(png) <= DISCORD_MAX_ATTACHMENT_BYTES
    assert Image.open(io.BytesIO(png)).size == (128, 128)
    assert (rec.total, rec.gpu_s > 0) == (tiny_spec.steps, True)
    message = discord.message(job.interaction.original_id)
    assert "Upscaled (2x)" in message.content and message.attachments[0].data == png
    assert message.custom_ids() == [c["custom_id"] for row in buttons.single_components(big, square=True)
                                    for c in row["components"]]


def test_a_failing_upscaler_fails_the_job_saying_so(redis_conn, tiny_engine, tiny_spec,
                                                    discord: ThreadedEmulator):  # noqa: F811
    """An upscaler whose weights are broken (NaN) fails the 2x job at once, not retried, with a message that names
    the upscaler; the user sees it in Discord."""
    broken = loading.load_upscaler(loading.BUILTIN_TINY_UPSCALER, tiny_engine.pipe, "cpu")
    with torch.no_grad():
        broken.unet.conv_out.weight.fill_(float("nan"))
    engine = Engine(tiny_engine.pipe, broken)
    parent = run(redis_conn, engine, discord, tiny_spec).job_id
    job = run(redis_conn, engine, discord, tiny_spec, kind="upscale2x", source={"job_id": parent, "index": 1})
    big = job.job_id
    rec = record(redis_conn, big)
    assert (rec.state, rec.attempt) == ("failed", 1)
    assert "2x upscaler" in rec.reason and "WORKER_UPSCALER" in rec.reason
    assert redis_conn.get(keys.job_image(big, 0)) is None
    assert "2x upscaler" in discord.message(job.interaction.original_id).content


def test_worker_process_loads_the_upscaler_once_for_all_its_jobs(redis_url, redis_conn, tiny_spec, tmp_path):
    """`python -m worker` with WORKER_UPSCALER=builtin:tiny-upscaler loads it once at start and runs two 2x jobs
    with it (128x128 results); its stats say one pipeline load and one upscaler load."""
    grid = queue.enqueue(redis_conn, tiny_spec, "test:owner")
    ups = [queue.enqueue(redis_conn, tiny_spec, "test:owner", kind="upscale2x", source={"job_id": grid, "index": k})
           for k in (1, 2)]
    with worker_processes() as started:
        started.append(worker := WorkerProcess(redis_url, tmp_path, "upscaling", burst=True,
                                               WORKER_UPSCALER=loading.BUILTIN_TINY_UPSCALER))
        assert worker.wait(timeout_s=240) == 0, worker.log()
    for job_id in ups:
        assert record(redis_conn, job_id).state == "done", record(redis_conn, job_id).reason
        png = redis_conn.get(keys.job_image(job_id, 0))
        assert isinstance(png, bytes) and Image.open(io.BytesIO(png)).size == (128, 128)
    stats = redis_conn.hgetall(keys.worker_stats("upscaling"))
    assert (stats[b"pipeline_loads"], stats[b"upscaler_loads"], stats[b"jobs_done"]) == (b"1", b"1", b"3")
    assert stats[b"upscaler"] == loading.BUILTIN_TINY_UPSCALER.encode()
    assert "upscaler builtin:tiny-upscaler" in worker.log()


def test_worker_with_an_unloadable_upscaler_exits_1_with_one_line(monkeypatch, tmp_path, caplog):
    """A WORKER_UPSCALER folder that does not exist stops `python -m worker` at start (exit 1), before any job, with
    one log line naming the folder."""
    for name in ("MODELS_FILE", "WORKER_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODEL", "builtin:tiny")
    monkeypatch.setenv("WORKER_UPSCALER", str(tmp_path / "no-such-upscaler"))
    monkeypatch.setenv("WORKER_DEVICE", "cpu")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # never reached
    with caplog.at_level(logging.ERROR, logger="worker"):
        assert worker_main.main(["--burst"]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and r.name == "worker"]
    assert len(errors) == 1 and "no-such-upscaler" in errors[0] and "does not exist" in errors[0]
