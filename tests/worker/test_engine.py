"""The engine on the tiny pipeline: batching and reproducibility, progress, cancellation and failures."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from PIL import Image

from core.errors import GenerationFailed, JobCancelled, TransientGenerationError
from core.spec import JobSpec
from model.tiny import build_tiny_pipeline
from tests.worker.images import mean_abs_diff, pixels
from worker.engine import Engine
from worker.preview import latents_to_rgb


def test_render_returns_one_image_per_index_at_spec_size(tiny_engine: Engine, tiny_spec: JobSpec) -> None:
    """A full render gives four RGB images of the spec's width x height, all different."""
    spec = dataclasses.replace(tiny_spec, width=64, height=48)
    images = tiny_engine.render(spec)
    assert [(im.mode, im.size) for im in images] == [("RGB", (64, 48))] * 4
    assert min(mean_abs_diff(images[0], other) for other in images[1:]) > 1


def test_same_spec_renders_same_images(tiny_engine: Engine, tiny_spec: JobSpec) -> None:
    """Rendering is deterministic: the same spec gives the same pixels; another seed does not."""
    first, again = tiny_engine.render(tiny_spec), tiny_engine.render(tiny_spec)
    assert all(mean_abs_diff(a, b) == 0 for a, b in zip(first, again, strict=True))
    reseeded = tiny_engine.render(dataclasses.replace(tiny_spec, seed=8))
    assert mean_abs_diff(first[0], reseeded[0]) > 1


def test_image_k_regenerates_alone(tiny_engine: Engine, tiny_spec: JobSpec) -> None:
    """render(indices=(2,)) redraws image 2 of the batched grid, up to batch-size float noise."""
    grid = tiny_engine.render(tiny_spec)
    (alone,) = tiny_engine.render(tiny_spec, indices=(2,))
    assert np.abs(pixels(grid[2]) - pixels(alone)).max() <= 2
    assert mean_abs_diff(grid[1], alone) > 1
    pair = tiny_engine.render(tiny_spec, indices=(3, 0))
    assert mean_abs_diff(pair[0], grid[3]) < 0.5 and mean_abs_diff(pair[1], grid[0]) < 0.5


def test_progress_reports_every_step_with_previews_but_not_on_the_last(
    tiny_engine: Engine, tiny_spec: JobSpec
) -> None:
    """on_progress gets (step, total, preview) each step; a 2x2 latent-sized preview on every step but the last."""
    reports: list[tuple[int, int, Image.Image | None]] = []
    tiny_engine.render(tiny_spec, on_progress=lambda *r: reports.append(r), preview_interval_s=0)
    assert [(done, total) for done, total, _ in reports] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    previews = [p for _, _, p in reports]
    assert previews[-1] is None
    assert all(p is not None and p.mode == "RGB" and p.size == (2 * 8, 2 * 8) for p in previews[:-1])


def test_previews_are_rate_limited(tiny_engine: Engine, tiny_spec: JobSpec) -> None:
    """No preview is made before `preview_interval_s` has passed since the render started."""
    reports: list[tuple[int, int, Image.Image | None]] = []
    tiny_engine.render(tiny_spec, on_progress=lambda *r: reports.append(r), preview_interval_s=3600)
    assert len(reports) == 4 and all(p is None for _, _, p in reports)


def test_single_image_preview_is_that_image(tiny_engine: Engine, tiny_spec: JobSpec) -> None:
    """Rendering one image previews that image alone, one pixel per latent pixel."""
    previews: list[Image.Image | None] = []
    tiny_engine.render(tiny_spec, indices=(1,), on_progress=lambda d, t, p: previews.append(p), preview_interval_s=0)
    assert previews[0] is not None and previews[0].size == (8, 8)


def test_previews_decode_nothing_per_step(
    tiny_engine: Engine, tiny_spec: JobSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a preview on every step, the VAE still decodes once per render (the final images)."""
    decode = tiny_engine.pipe.vae.decode
    calls: list[int] = []

    def counting_decode(*args, **kwargs):  # a spy: the real decode runs
        calls.append(1)
        return decode(*args, **kwargs)

    monkeypatch.setattr(tiny_engine.pipe.vae, "decode", counting_decode)
    spec = dataclasses.replace(tiny_spec, steps=6)
    tiny_engine.render(spec, on_progress=lambda *_: None, preview_interval_s=0)
    assert len(calls) == 1


def test_cancel_stops_within_one_step(tiny_engine: Engine, tiny_spec: JobSpec, unet_calls: list[int]) -> None:
    """should_cancel turning True after step 1 of 10 raises JobCancelled with at most 2 UNet steps run."""
    spec = dataclasses.replace(tiny_spec, steps=10)
    with pytest.raises(JobCancelled):
        tiny_engine.render(spec, should_cancel=lambda: len(unet_calls) >= 1)
    assert 1 <= len(unet_calls) <= 2


def test_cancel_before_start_runs_nothing(tiny_engine: Engine, tiny_spec: JobSpec, unet_calls: list[int]) -> None:
    """A job already cancelled when its render starts raises JobCancelled without running the UNet."""
    with pytest.raises(JobCancelled):
        tiny_engine.render(tiny_spec, should_cancel=lambda: True)
    assert unet_calls == []


def test_engine_is_usable_after_a_cancel(tiny_engine: Engine, tiny_spec: JobSpec) -> None:
    """A cancelled render leaves no state behind: the next render gives the usual images."""
    before = tiny_engine.render(tiny_spec)
    with pytest.raises(JobCancelled):
        tiny_engine.render(tiny_spec, should_cancel=iter([False, False, True]).__next__)
    after = tiny_engine.render(tiny_spec)
    assert all(mean_abs_diff(a, b) == 0 for a, b in zip(before, after, strict=True))


def test_nan_output_fails_with_a_clear_error(tiny_spec: JobSpec) -> None:
    """A model whose UNet outputs NaN fails with GenerationFailed naming the invalid image, not black squares."""
    pipe = build_tiny_pipeline()
    with torch.no_grad():
        pipe.unet.conv_out.bias[0] = float("nan")
    with pytest.raises(GenerationFailed, match=r"invalid image \(NaN\)"):
        Engine(pipe).render(tiny_spec)


def test_out_of_memory_is_transient(tiny_engine: Engine, tiny_spec: JobSpec) -> None:
    """An out-of-memory error during sampling becomes TransientGenerationError (raised from the progress
    callback: a real GPU OOM cannot be provoked on this CPU-only machine)."""

    def out_of_memory(*_: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(TransientGenerationError, match="out of GPU memory"):
        tiny_engine.render(tiny_spec, on_progress=out_of_memory)


def test_preview_is_a_linear_map_of_the_latents() -> None:
    """A latent pixel (0, 0, 0, -1) previews as RGB (1 + (0.184, 0.271, 0.473)) * 127.5; other layouts give None."""
    latents = torch.zeros(2, 4, 3, 5)
    latents[:, 3] = -1
    previews = latents_to_rgb(latents)
    assert previews is not None and [p.size for p in previews] == [(5, 3), (5, 3)]
    assert previews[1].getpixel((4, 2)) == (150, 162, 187)
    assert latents_to_rgb(torch.zeros(1, 16, 8, 8)) is None
    assert latents_to_rgb(torch.zeros(1, 64, 16)) is None


def test_pipelines_without_text_unet_are_refused_at_load() -> None:
    """A pipeline the mappings cannot drive (here unconditional DDPM: no text encoder) is refused when the engine is
    built, with a GenerationFailed naming its class, not at the first job."""
    unet = UNet2DModel(sample_size=8, block_out_channels=(8, 16), norm_num_groups=4,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    with pytest.raises(GenerationFailed, match="DDPMPipeline is not supported"):
        Engine(DDPMPipeline(unet=unet, scheduler=DDPMScheduler()))
