"""How the engine maps the prompt language onto the pipeline: `::` weights, `--no`, `--tile`, `--stop`, `--chaos`."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler
from PIL import Image

import worker.engine as engine_module
from core.errors import GenerationFailed, JobCancelled
from core.spec import MAX_SEED, JobSpec, PromptPart
from model.tiny import build_tiny_pipeline
from tests.worker.images import mean_abs_diff, pixels
from worker.engine import Engine
from worker.sampling import encode_weighted_prompt, shared_noise, steps_to_run

# -- multi-prompts ---------------------------------------------------------------------------------------------------


def test_weighted_prompt_is_the_normalised_average_of_the_parts(tiny_engine: Engine) -> None:
    """`red cat::2 blue dog::-1` encodes to (2 * e(red cat) - 1 * e(blue dog)) / (2 - 1); the negative is shared."""
    pipe = tiny_engine.pipe
    with torch.inference_mode():
        cat, uncond = pipe.encode_prompt("red cat", "cpu", 1, True, None)
        dog, _ = pipe.encode_prompt("blue dog", "cpu", 1, True, None)
        mixed = encode_weighted_prompt(pipe, (PromptPart("red cat", 2), PromptPart("blue dog", -1)), "", 5.0)
    assert set(mixed) == {"prompt_embeds", "negative_prompt_embeds"}
    torch.testing.assert_close(mixed["prompt_embeds"], (2 * cat - dog) / 1)
    torch.testing.assert_close(mixed["negative_prompt_embeds"], uncond)


def test_weighted_prompt_without_guidance_has_no_negative(tiny_engine: Engine) -> None:
    """At guidance scale 1 (no classifier-free guidance) no negative embedding is computed."""
    with torch.inference_mode():
        mixed = encode_weighted_prompt(tiny_engine.pipe, (PromptPart("cat"),), "dog", 1.0)
    assert set(mixed) == {"prompt_embeds"}


def test_weights_adding_up_to_zero_are_refused(tiny_engine: Engine) -> None:
    """`cat::1 dog::-1` has no normalised average: GenerationFailed says so."""
    with pytest.raises(GenerationFailed, match="add up to 0"):
        encode_weighted_prompt(tiny_engine.pipe, (PromptPart("cat", 1), PromptPart("dog", -1)), "", 5.0)


def test_multi_prompt_changes_the_image(tiny_engine: Engine, tiny_spec: JobSpec) -> None:
    """`red cat:: blue dog::3` renders differently from the whole text as one prompt and from equal weights."""
    tiny_spec = dataclasses.replace(tiny_spec, guidance_scale=10.0)  # random text weights steer weakly: amplify
    whole = dataclasses.replace(tiny_spec, parts=(PromptPart("red cat blue dog"),))
    equal = dataclasses.replace(tiny_spec, parts=(PromptPart("red cat"), PromptPart("blue dog")))
    weighted = dataclasses.replace(tiny_spec, parts=(PromptPart("red cat"), PromptPart("blue dog", 3)))
    (whole_image,), (equal_image,), (weighted_image,) = (
        tiny_engine.render(s, indices=(0,)) for s in (whole, equal, weighted)
    )
    assert mean_abs_diff(weighted_image, whole_image) > 0.3
    assert mean_abs_diff(weighted_image, equal_image) > 0.3


# -- --no ------------------------------------------------------------------------------------------------------------


def test_negative_prompt_changes_the_image(tiny_engine: Engine, tiny_spec: JobSpec) -> None:
    """`--no dogs` becomes the negative prompt: the image changes, and the same `--no` gives the same image."""
    tiny_spec = dataclasses.replace(tiny_spec, guidance_scale=10.0)  # random text weights steer weakly: amplify
    (plain,) = tiny_engine.render(tiny_spec, indices=(0,))
    no_dogs = dataclasses.replace(tiny_spec, negative_prompt="dogs")
    (without, again) = (tiny_engine.render(no_dogs, indices=(0,))[0] for _ in range(2))
    assert mean_abs_diff(plain, without) > 0.3
    assert mean_abs_diff(without, again) == 0


# -- --tile ----------------------------------------------------------------------------------------------------------


def test_tile_image_lives_on_a_torus(
    tiny_engine: Engine, tiny_spec: JobSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `--tile`, rolling the initial noise by (2, 4) latent pixels rolls the image by (16, 32) pixels exactly.

    Why it holds: with circular padding every layer commutes with circular shifts by a multiple of the UNet's
    downsampling factor (2 here): convolutions, GroupNorm (global statistics), attention without positional
    encodings, nearest upsampling and the element-wise scheduler; the VAE decoder maps a latent shift s to 8s pixels.
    So the image has no edges: its right border continues into its left one. Without `--tile`, zero padding breaks
    this at the borders. (The roll wraps the real `initial_noise`; nothing else is replaced.)
    """
    real_noise = engine_module.initial_noise
    shift_latent, shift_px = (2, 4), (16, 32)

    def rolled_noise(*args):
        return torch.roll(real_noise(*args), shifts=shift_latent, dims=(2, 3))

    def render_both(tile: bool) -> tuple[np.ndarray, np.ndarray]:
        spec = dataclasses.replace(tiny_spec, tile=tile)
        (image,) = tiny_engine.render(spec, indices=(0,))
        with monkeypatch.context() as patch:
            patch.setattr(engine_module, "initial_noise", rolled_noise)
            (shifted,) = tiny_engine.render(spec, indices=(0,))
        return np.roll(pixels(image), shift=shift_px, axis=(0, 1)), pixels(shifted)

    expected, got = render_both(tile=True)
    assert np.abs(expected - got).max() <= 1  # uint8 rounding of float noise
    expected, got = render_both(tile=False)
    assert np.abs(expected - got).mean() > 1


def test_tile_seam_looks_like_any_other_column(tiny_engine: Engine, tiny_spec: JobSpec) -> None:
    """Tiled images differ across the wrap-around seam about as much as between neighbouring columns, and less than
    untiled images do."""

    def seam_ratio(image: Image.Image) -> float:
        a = pixels(image)
        across_x = np.abs(a[:, 0] - a[:, -1]).mean() / np.abs(np.diff(a, axis=1)).mean()
        across_y = np.abs(a[0] - a[-1]).mean() / np.abs(np.diff(a, axis=0)).mean()
        return (across_x + across_y) / 2

    tiled = np.mean([seam_ratio(im) for im in tiny_engine.render(dataclasses.replace(tiny_spec, tile=True))])
    untiled = np.mean([seam_ratio(im) for im in tiny_engine.render(tiny_spec)])
    assert 0.8 < tiled < 1.15
    assert untiled > tiled + 0.15


def test_tile_padding_is_restored_even_after_an_error(tiny_engine: Engine, tiny_spec: JobSpec) -> None:
    """A `--tile` render that is cancelled midway leaves every Conv2d with its own padding mode."""
    convs = [m for part in (tiny_engine.pipe.unet, tiny_engine.pipe.vae) for m in part.modules()
             if isinstance(m, torch.nn.Conv2d)]
    before = [c.padding_mode for c in convs]
    seen: list[str] = []

    def cancel_after_one_step() -> bool:
        seen.append(tiny_engine.pipe.unet.conv_in.padding_mode)
        return len(seen) > 1

    with pytest.raises(JobCancelled):
        tiny_engine.render(dataclasses.replace(tiny_spec, tile=True), should_cancel=cancel_after_one_step)
    assert seen[-1] == "circular"
    assert [c.padding_mode for c in convs] == before == ["zeros"] * len(convs)


# -- --stop ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "stop", "kept"), [(10, 100, 10), (10, 50, 5), (10, 10, 1), (4, 10, 1), (25, 10, 3), (4, 60, 2)]
)
def test_steps_to_run(steps: int, stop: int, kept: int) -> None:
    """`--stop N` keeps N% of the steps, rounded half up, at least one."""
    assert steps_to_run(steps, stop) == kept


def test_stop_runs_fewer_steps_and_changes_the_image(
    tiny_engine: Engine, tiny_spec: JobSpec, unet_calls: list[int]
) -> None:
    """`--stop 30` of 10 steps runs the UNet 3 times, reports 3 of 3 steps, and finishes on a different image."""
    full_spec = dataclasses.replace(tiny_spec, steps=10)
    (full,) = tiny_engine.render(full_spec, indices=(0,))
    assert len(unet_calls) == 10
    unet_calls.clear()
    reports: list[tuple[int, int]] = []
    (stopped,) = tiny_engine.render(
        dataclasses.replace(full_spec, stop=30), indices=(0,), on_progress=lambda d, t, p: reports.append((d, t))
    )
    assert len(unet_calls) == 3
    assert reports == [(1, 3), (2, 3), (3, 3)]
    assert mean_abs_diff(full, stopped) > 0.3


def test_stop_decodes_the_x0_estimate(tiny_engine: Engine, tiny_spec: JobSpec, monkeypatch: pytest.MonkeyPatch) -> None:
    """At the stop step the VAE decodes DPM-Solver++'s x0 prediction, not the still-noisy latents."""
    decoded: list[torch.Tensor] = []
    noisy: list[torch.Tensor] = []
    decode = tiny_engine.pipe.vae.decode
    monkeypatch.setattr(tiny_engine.pipe.vae, "decode", lambda z, **kw: decoded.append(z.clone()) or decode(z, **kw))
    spec = dataclasses.replace(tiny_spec, steps=10, stop=50)

    def keep_x0_at_stop(done: int, total: int, _: Image.Image | None) -> None:
        if done == total:
            noisy.append(tiny_engine.pipe.scheduler.model_outputs[-1].clone())

    tiny_engine.render(spec, indices=(0,), on_progress=keep_x0_at_stop)
    scale = tiny_engine.pipe.vae.config.scaling_factor
    torch.testing.assert_close(decoded[0], noisy[0] / scale)


def test_stop_falls_back_to_the_latents_for_other_schedulers(tiny_spec: JobSpec) -> None:
    """With a scheduler that keeps no x0 estimate (Euler), `--stop` still runs only its share of the steps."""
    pipe = build_tiny_pipeline()
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    calls: list[int] = []
    pipe.unet.register_forward_hook(lambda *_: calls.append(1))
    images = Engine(pipe).render(dataclasses.replace(tiny_spec, steps=10, stop=30), indices=(0,))
    assert len(calls) == 3 and images[0].size == (64, 64)


# -- --chaos ---------------------------------------------------------------------------------------------------------


def test_chaos_makes_the_grid_more_varied(tiny_engine: Engine, tiny_spec: JobSpec) -> None:
    """The mean pairwise pixel distance of the four images grows with `--chaos` 0 -> 50 -> 100."""

    def spread(chaos: int) -> float:
        images = tiny_engine.render(dataclasses.replace(tiny_spec, chaos=chaos))
        return float(np.mean([mean_abs_diff(a, b) for a, b in itertools.combinations(images, 2)]))

    calm, middle, wild = spread(0), spread(50), spread(100)
    assert calm < middle < wild


def test_chaos_noise_mixes_shared_and_own_noise(tiny_engine: Engine, tiny_spec: JobSpec) -> None:
    """Initial noise is sqrt(1-r) * shared + sqrt(r) * own_k with r = 0.5 + 0.5 * chaos / 100: at chaos 100 it is
    exactly image k's own noise, and the noise of image k never depends on the other images."""
    pipe = tiny_engine.pipe
    spec = dataclasses.replace(tiny_spec, chaos=100)
    own = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(spec.seeds()[1]))
    alone = engine_module.initial_noise(pipe, spec, [torch.Generator().manual_seed(spec.seeds()[1])])
    torch.testing.assert_close(alone, own)
    calm = dataclasses.replace(tiny_spec, chaos=0)
    generators = [torch.Generator().manual_seed(s) for s in calm.seeds()]
    grid = engine_module.initial_noise(pipe, calm, generators)
    single = engine_module.initial_noise(pipe, calm, [torch.Generator().manual_seed(calm.seeds()[3])])
    torch.testing.assert_close(grid[3:], single)
    own3 = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(calm.seeds()[3]))
    torch.testing.assert_close(single, 0.5**0.5 * shared_noise(calm.seed, (1, 4, 8, 8)) + 0.5**0.5 * own3)


@pytest.mark.parametrize("seed", [0, 7, MAX_SEED - 1])
def test_every_image_of_a_calm_grid_starts_from_unit_noise(tiny_engine: Engine, tiny_spec: JobSpec, seed: int) -> None:
    """At `--chaos` 0 each image's starting noise is half shared, half its own: std 1 and correlation sqrt(1/2) with
    its own noise, image 0 included. (The shared noise was once torch-seeded `seed + 2**32`, which torch's generator
    reads as `seed`: image 0 started from sqrt(2) times its own noise and came out speckled.)"""
    calm = dataclasses.replace(tiny_spec, seed=seed, chaos=0, width=256, height=256)  # 4 x 32 x 32 noise values
    generators = [torch.Generator().manual_seed(s) for s in calm.seeds()]
    grid = engine_module.initial_noise(tiny_engine.pipe, calm, generators)
    for k, image_seed in enumerate(calm.seeds()):
        own = torch.randn(grid.shape[1:], generator=torch.Generator().manual_seed(image_seed)).flatten()
        noise = grid[k].flatten()
        assert 0.9 < float(noise.std()) < 1.1, (k, float(noise.std()))
        assert 0.6 < float(torch.corrcoef(torch.stack([noise, own]))[0, 1]) < 0.8, k
