"""Training the embedded model (model.train) on its quick path, and what the saved folder can do."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline, StableDiffusionImg2ImgPipeline, UNet2DConditionModel
from PIL import Image
from safetensors import safe_open

from core.models import ModelInfo
from model import snapshot, train
from model.data import make_dataset
from model.loading import LATENT_RGB_FILE, load_pipeline
from model.text import TextConfig
from model.unet import (
    LATENT_32_UNET,
    NUM_TRAIN_TIMESTEPS,
    SHAPE_BAND,
    UNetConfig,
    build_unet,
    min_snr_weights,
    narrowed,
    noise_scheduler,
    sample_timesteps,
    transplant,
)
from model.vae import QUICK_VAE, VAEConfig, build_vae, to_tensor
from worker.preview import SD1_LATENT_RGB

QUICK = ["--quick", "--steps-vae", "10", "--steps-unet", "10", "--threads", "1"]


@pytest.fixture(scope="module")
def quick_model(tmp_path_factory):
    """A throwaway model trained for a few steps; its folder."""
    return train.main([*QUICK, "--out", str(tmp_path_factory.mktemp("quick") / "model")])


@pytest.fixture(scope="module")
def pipe(quick_model):
    pipe = DiffusionPipeline.from_pretrained(quick_model, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_quick_model_loads_as_stable_diffusion(pipe):
    """`DiffusionPipeline.from_pretrained` on the folder gives a Stable Diffusion pipeline with DPM-Solver++."""
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert type(pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert pipe.vae_scale_factor == 4


def test_quick_model_renders_a_2x2_batch(pipe):
    """Two prompts, two images each, 64x64, two steps, with classifier-free guidance: four finite images."""
    out = pipe(["a red circle on a blue background", "a purple elephant ☃"], num_images_per_prompt=2, height=64,
               width=64, num_inference_steps=2, guidance_scale=5.0, generator=torch.Generator().manual_seed(0),
               output_type="np").images
    assert out.shape == (4, 64, 64, 3)
    assert np.isfinite(out).all()


def test_img2img_runs_from_the_same_components(pipe):
    """StableDiffusionImg2ImgPipeline(**pipe.components) makes variations of an image."""
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    image = Image.new("RGB", (64, 64), (30, 70, 230))
    out = img2img("a red circle", image=image, strength=0.6, num_inference_steps=4, guidance_scale=5.0,
                  generator=torch.Generator().manual_seed(0), output_type="np").images
    assert out.shape == (1, 64, 64, 3)


def test_weights_are_fp16_and_latents_have_unit_scale(quick_model):
    """Weights are stored in fp16; the VAE config carries the computed scaling_factor (1/std of the latents)."""
    for part in ("unet/diffusion_pytorch_model", "vae/diffusion_pytorch_model", "text_encoder/model"):
        with safe_open(quick_model / f"{part}.safetensors", "pt") as f:
            assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}, part
    scale = json.loads((quick_model / "vae" / "config.json").read_text())["scaling_factor"]
    latents = torch.load(quick_model / "checkpoints" / "latents.pt")["latents"]
    assert scale != 1.0
    assert latents.std().item() == pytest.approx(1.0, rel=1e-3)


def test_the_saved_folder_brings_its_own_preview_map(quick_model):
    """`model.train` saves the autoencoder's latent-to-RGB map for previews (`latent_rgb.json`, one row per latent
    channel and a bias), the worker's loader attaches it to the VAE, and on other held-out images it comes closer to
    their pixels pooled to latent size than Stable Diffusion's map does (even for this barely trained autoencoder; for
    the shipped one, tests/model/test_embedded.py)."""
    rows = json.loads((quick_model / LATENT_RGB_FILE).read_text())["latent_rgb"]
    assert np.shape(rows) == (5, 3)
    pipe = load_pipeline(ModelInfo(name="quick", source=str(quick_model)), "cpu")
    assert torch.allclose(pipe.vae.latent_rgb, torch.tensor(rows))
    x = to_tensor(make_dataset(32, seed=5, split="heldout")[0])
    with torch.no_grad():
        z = pipe.vae.encode(x).latent_dist.mode() * pipe.vae.config.scaling_factor
    pixels = F.avg_pool2d(x, x.shape[-1] // z.shape[-1]).permute(0, 2, 3, 1)

    def error(fitted: torch.Tensor) -> float:
        return (z.permute(0, 2, 3, 1) @ fitted[:-1] + fitted[-1] - pixels).square().mean().item()

    assert error(pipe.vae.latent_rgb) < 0.9 * error(SD1_LATENT_RGB)


def test_input_scale_sets_the_latents_std_and_the_saved_scaling_factor(tmp_path):
    """A denoiser's `input_scale` b makes the cached latents b * mu / std(mu) (std b) and the VAE's scaling_factor
    b / std(mu), which the pipelines multiply encodings by: version 2's denoiser trains on latents of std 0.5."""
    assert train.plan_for(False, "cpu", version=2).unet.input_scale == LATENT_32_UNET.input_scale == 0.5
    quick = train.plan_for(True, "cpu")
    plan = dataclasses.replace(quick, unet=dataclasses.replace(quick.unet, input_scale=0.5))
    torch.manual_seed(0)
    vae = build_vae(QUICK_VAE)
    args = argparse.Namespace(seed=0, device="cpu", unet_from=None)
    latents, _ = train.cache_latents(plan, args, vae, tmp_path / "latents.pt")
    assert latents.std().item() == pytest.approx(0.5, rel=1e-3)
    unscaled = latents / vae.config.scaling_factor
    assert vae.config.scaling_factor == pytest.approx(0.5 / unscaled.std().item(), rel=1e-4)


def test_a_second_run_needs_resume_and_resume_continues(quick_model):
    """Without --resume an existing checkpoint is refused; with it the UNet continues from its step count."""
    with pytest.raises(SystemExit):
        train.main([*QUICK, "--out", str(quick_model)])
    assert torch.load(quick_model / "checkpoints" / "unet.pt", weights_only=False)["step"] == 10
    train.main(["--quick", "--steps-vae", "10", "--steps-unet", "12", "--threads", "1", "--out", str(quick_model),
                "--resume"])
    assert torch.load(quick_model / "checkpoints" / "unet.pt", weights_only=False)["step"] == 12
    assert "VAE: finished in an earlier run" in (quick_model / "train.log").read_text()


def test_vae_from_reuses_a_trained_autoencoder(quick_model, tmp_path):
    """--vae-from skips stage 1: the new folder's autoencoder is the given one, weight for weight; only the denoiser
    is trained again."""
    out = train.main(["--quick", "--steps-unet", "3", "--threads", "1", "--vae-from", str(quick_model),
                      "--out", str(tmp_path / "again")])
    for name in ("vae/diffusion_pytorch_model", "unet/diffusion_pytorch_model"):
        file = f"{name}.safetensors"
        with safe_open(quick_model / file, "pt") as a, safe_open(out / file, "pt") as b:
            same = all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())
        assert same == name.startswith("vae"), name
    assert "VAE: taken from" in (out / "train.log").read_text()


def test_unet_batch_sets_the_denoisers_rows_a_step(quick_model, tmp_path):
    """--unet-batch overrides the plan's rows a denoiser step (the quick plan's 16), and the run's log records it."""
    out = train.main(["--quick", "--steps-unet", "2", "--threads", "1", "--vae-from", str(quick_model),
                      "--unet-batch", "4", "--out", str(tmp_path / "rows")])
    log = (out / "train.log").read_text()
    assert "'unet_batch': 4" in log and "'unet_batch': 16" not in log


def test_timesteps_flag_sets_how_the_denoiser_draws_t(quick_model, tmp_path):
    """--timesteps picks the training density of t (the versions' default is uniform) and the run's log records it;
    an unknown sampler is refused by the command line (exit code 2)."""
    out = train.main(["--quick", "--steps-unet", "2", "--threads", "1", "--vae-from", str(quick_model),
                      "--timesteps", "shape-band", "--out", str(tmp_path / "band")])
    assert "'timesteps': 'shape-band'" in (out / "train.log").read_text()
    with pytest.raises(SystemExit) as refused:
        train.main(["--quick", "--timesteps", "cubic", "--out", str(tmp_path / "bad")])
    assert refused.value.code == 2


def test_kept_snapshots_export_the_learning_curve_as_pipelines(quick_model, tmp_path):
    """--keep-every keeps the denoiser's EMA weights every N steps and --unet-lr sets its peak learning rate (the log
    records it); `model.snapshot` saves the pipeline of a kept step, and of the latest checkpoint, which is the one
    the run shipped, weight for weight."""
    run = train.main(["--quick", "--steps-unet", "4", "--threads", "1", "--vae-from", str(quick_model),
                      "--keep-every", "2", "--unet-lr", "2e-3", "--out", str(tmp_path / "run")])
    assert "'unet_lr': 0.002" in (run / "train.log").read_text()
    assert sorted(p.name for p in (run / "checkpoints").glob("unet-ema-*.pt")) == ["unet-ema-2.pt", "unet-ema-4.pt"]
    assert snapshot.export(run, tmp_path / "at2", step=2) == 2 and snapshot.export(run, tmp_path / "last") == 4
    file = "unet/diffusion_pytorch_model.safetensors"
    with safe_open(run / file, "pt") as shipped, safe_open(tmp_path / "last" / file, "pt") as last, \
            safe_open(tmp_path / "at2" / file, "pt") as early:
        assert all(torch.equal(shipped.get_tensor(k), last.get_tensor(k)) for k in shipped.keys())
        assert not all(torch.equal(shipped.get_tensor(k), early.get_tensor(k)) for k in shipped.keys())
    assert DiffusionPipeline.from_pretrained(tmp_path / "at2").vae.config.scaling_factor == pytest.approx(
        DiffusionPipeline.from_pretrained(run).vae.config.scaling_factor)


def test_bad_learning_curve_arguments_exit_2(quick_model, tmp_path):
    """A learning rate outside (0, 1), a negative --keep-every, a width factor that is not positive or leaves a
    level not a multiple of its GroupNorm groups, or a step that was not kept: exit code 2."""
    for bad in (["--unet-lr", "0"], ["--unet-lr", "nan"], ["--keep-every", "-1"], ["--unet-width", "0"],
                ["--unet-width", "nan"], ["--unet-width", "0.7"]):  # 0.7: quick levels of 22 in 6 groups
        with pytest.raises(SystemExit) as refused:
            train.main(["--quick", *bad, "--out", str(tmp_path / "bad")])
        assert refused.value.code == 2, bad
    with pytest.raises(SystemExit) as refused:
        snapshot.main([str(quick_model), "--step", "3", "--out", str(tmp_path / "none")])
    assert refused.value.code == 2


def test_timestep_samplers_draw_their_densities():
    """Uniform covers 0..T-1 evenly; shape-band draws every other row below SHAPE_BAND, so 62.5% of its draws fall
    there against uniform's 25%, and the others still reach t = T - 1."""
    n = 200_000
    uniform = sample_timesteps(n, "uniform", torch.Generator().manual_seed(0))
    band = sample_timesteps(n, "shape-band", torch.Generator().manual_seed(0))
    for t in (uniform, band):
        assert t.dtype == torch.int64 and int(t.min()) == 0 and int(t.max()) == NUM_TRAIN_TIMESTEPS - 1
    assert SHAPE_BAND == 250 and int(band[1::2].max()) < SHAPE_BAND
    assert abs((band < SHAPE_BAND).float().mean().item() - 0.625) < 0.01
    assert abs((uniform < SHAPE_BAND).float().mean().item() - 0.25) < 0.01
    with pytest.raises(ValueError, match="unknown timestep sampler"):
        sample_timesteps(4, "cubic")


def test_loss_weights():
    """v-prediction (shipped): clamp(SNR, 1, gamma) / (SNR + 1), so the implied x0 error weighs 1 at the highest
    noise levels and gamma at most; eps: Min-SNR-gamma's min(SNR, gamma) / SNR (Hang et al. 2023)."""
    t = torch.tensor([0, 100, 500, 900, 999])
    v, eps = noise_scheduler("v_prediction"), noise_scheduler("epsilon")
    abar = v.alphas_cumprod[t]
    snr = abar / (1 - abar)
    torch.testing.assert_close(min_snr_weights(v, t, 5.0), snr.clamp(1.0, 5.0) / (snr + 1))
    torch.testing.assert_close(min_snr_weights(eps, t, 5.0), torch.minimum(snr, torch.tensor(5.0)) / snr)
    x0_weight = min_snr_weights(v, t, 5.0) * (snr + 1)  # || v - v_hat ||^2 = (SNR + 1) || x0 - x0_hat ||^2
    torch.testing.assert_close(x0_weight, torch.tensor([5.0, 5.0, 1.0, 1.0, 1.0]))
    assert min_snr_weights(eps, torch.tensor([999]), 5.0).item() == 1.0
    assert min_snr_weights(eps, torch.tensor([0]), 5.0).item() < 1e-3


def test_evaluate_reports_every_sampler(quick_model):
    """model.evaluate scores the autoencoder and each DPM-Solver++ step count per attribute, with time per image,
    the square prompts, and the fill-in of Zoom Out 2x and Pan."""
    from model.evaluate import evaluate

    result = evaluate(quick_model, n=2, n_ddpm=0, validate_n=0, n_outpaint=2, n_squares=3)
    assert 0.0 <= result["vae"]["psnr_db"] < 100
    assert set(result["squares"]) == {"prompts", "steps", "background", "colour", "shape", "strict_shape"}
    assert result["squares"]["prompts"] == 3 and 0 <= result["squares"]["strict_shape"] <= 1
    for name in ("dpm++ 4 steps", "dpm++ 8 steps", "dpm++ 20 steps", "default"):
        assert set(result[name]) >= {"background", "colour", "shape", "position", "s_per_image"}, name
    for op in ("zoom", "pan"):
        figures = result["outpainting"][op]
        assert set(figures) == {"border_background", "border_clean", "kept_mae", "seam", "seam_canvas"}, op
        assert 0 <= figures["border_background"] <= 1 and 0 <= figures["kept_mae"] <= 255, op


def test_the_inpainting_fine_tune_saves_a_unet_the_worker_loads(quick_model, pipe, tmp_path):
    """`python -m model.inpaint` on a saved model: a few steps, a 9-channel fp16 UNet in `<out>/unet` that
    `load_inpaint_unet` (WORKER_INPAINT_UNET) takes for that model; `--from-unet` continues such a UNet; a bad
    `--canvas-share` or `--from-unet` exits 2."""
    from model import inpaint
    from model.loading import load_inpaint_unet

    out = inpaint.main(["--base", str(quick_model), "--out", str(tmp_path / "inpaint"), "--steps", "2", "--pool",
                        "16", "--batch", "4", "--threads", "1"])
    unet = load_inpaint_unet(str(out), pipe, "cpu")
    assert unet.config.in_channels == 9
    with safe_open(out / "unet" / "diffusion_pytorch_model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    # --from-unet continues it (with its pans on other canvases): a step at a tiny learning rate leaves it in place
    more = inpaint.main(["--base", str(quick_model), "--out", str(tmp_path / "more"), "--from-unet", str(out / "unet"),
                         "--steps", "1", "--lr", "1e-9", "--pool", "32", "--batch", "4", "--threads", "1"])
    assert _max_difference(out, more, "unet/diffusion_pytorch_model.safetensors") < 1e-3
    for bad in (["--canvas-share", "1.5"], ["--from-unet", str(tmp_path)]):
        with pytest.raises(SystemExit) as refused:
            inpaint.main(["--base", str(quick_model), "--out", str(tmp_path / "bad"), *bad])
        assert refused.value.code == 2, bad


def test_version_2_keeps_64_pixels_as_32x32_latents_through_its_denoiser():
    """`--version 2` (issue 19): the autoencoder halves 64x64 images once, to 32x32x4 latents, and its denoiser maps
    such latents to their own shape at the worker's sizes (multiples of 16), in ~3.1 M parameters like version 1's.
    It is the default version since it ships (session 15)."""
    plan = train.plan_for(False, "cpu", version=2)
    torch.manual_seed(0)
    vae = build_vae(plan.vae)
    unet = build_unet(plan.unet, plan.vae.latent_channels, 32, plan.text.width)
    with torch.no_grad():
        z = vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mode()
        assert z.shape == (1, 4, 32, 32)
        for h, w in ((32, 32), (24, 40)):  # 64x64, and a 48x80 grid image
            z = torch.randn(2, 4, h, w)
            v = unet(z, torch.tensor([500, 500]), torch.randn(2, plan.text.max_tokens, plan.text.width)).sample
            assert v.shape == z.shape
    assert 3.0e6 < sum(p.numel() for p in unet.parameters()) < 3.3e6
    assert (train.plan_for(False, "cpu", version=1).vae, train.plan_for(False, "cpu", version=1).unet) == (
        VAEConfig(), UNetConfig())
    assert train.plan_for(False, "cpu") == plan



def test_square_prompts_are_distinct_colour_pairs_the_checker_reads():
    """The square prompts: distinct pairs of two different colours, the same for a seed, each parsed by the checker's
    caption reader as one square of that colour on that background."""
    from model.data import parse_caption
    from model.evaluate import square_prompts

    prompts = square_prompts(24, seed=0)
    assert len(set(prompts)) == 24 and prompts == square_prompts(24, seed=0) != square_prompts(24, seed=1)
    for prompt in prompts:
        scene = parse_caption(prompt)
        (shape,) = scene.objects
        assert shape.shape == "square" and shape.colour != scene.background, prompt


def _max_difference(a: Path, b: Path, file: str) -> float:
    with safe_open(a / file, "pt") as x, safe_open(b / file, "pt") as y:
        return max((x.get_tensor(k).float() - y.get_tensor(k).float()).abs().max().item() for k in x.keys())


def test_unet_from_continues_a_saved_denoiser(quick_model, tmp_path):
    """--unet-from continues a saved pipeline's denoiser and text encoder: a step at a tiny learning rate leaves them
    where they were (a fresh start is far off), on that pipeline's autoencoder and latent scale even when the run's
    images differ (another --seed). A folder that is no pipeline, another version's model, or another --vae-from:
    exit code 2."""
    common = ["--quick", "--steps-unet", "1", "--threads", "1", "--seed", "1", "--unet-lr", "1e-9"]
    more = train.main([*common, "--unet-from", str(quick_model), "--out", str(tmp_path / "more")])
    fresh = train.main([*common, "--vae-from", str(quick_model), "--out", str(tmp_path / "fresh")])
    for file in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        assert _max_difference(quick_model, more, file) < 1e-3 < _max_difference(quick_model, fresh, file), file
    assert _max_difference(quick_model, more, "vae/diffusion_pytorch_model.safetensors") == 0
    scale = [json.loads((m / "vae" / "config.json").read_text())["scaling_factor"] for m in (quick_model, more, fresh)]
    assert scale[1] == scale[0] != scale[2]
    assert "continued from" in (more / "train.log").read_text()
    for bad in (["--quick", "--unet-from", str(tmp_path)], ["--unet-from", str(quick_model)],
                ["--quick", "--unet-from", str(quick_model), "--vae-from", str(more)]):
        with pytest.raises(SystemExit) as refused:
            train.main([*bad, "--out", str(tmp_path / "bad")])
        assert refused.value.code == 2, bad


def test_half_width_versions_keep_their_shapes_and_transplant():
    """`narrowed(cfg, 0.5)` (`--unet-width 0.5`, model/README.md "Sessions 17-18"): version 1's denoiser at half
    width has about a quarter of the parameters (0.81 M against 3.17 M), and a half-width version 1 still starts a
    half-width version 2's lower levels (`transplant`), as at full width."""
    v1, v2 = narrowed(UNetConfig(), 0.5), narrowed(LATENT_32_UNET, 0.5)
    assert (v1.channels, v1.head_dim, v1.norm_groups, v1.time_width) == ((16, 32, 64), 16, 8, None)
    assert (v2.channels, v2.head_dim, v2.norm_groups, v2.time_width) == ((8, 16, 32, 64), 16, 8, 64)
    assert narrowed(LATENT_32_UNET, 1.0) == LATENT_32_UNET
    torch.manual_seed(0)
    source = build_unet(v1, 4, 16, TextConfig().width)
    full = sum(p.numel() for p in build_unet(UNetConfig(), 4, 16, TextConfig().width).parameters())
    assert 0.2 < sum(p.numel() for p in source.parameters()) / full < 0.3
    unet = build_unet(v2, 4, 32, TextConfig().width)
    assert transplant(unet, source.state_dict()) > 0.9 * sum(p.numel() for p in unet.parameters())
    assert torch.equal(unet.state_dict()["down_blocks.2.resnets.0.conv2.weight"],
                       source.state_dict()["down_blocks.1.resnets.0.conv2.weight"])
    with pytest.raises(ValueError, match="groups"):
        narrowed(UNetConfig(), 0.3)  # levels of 10, 19, 38 in 5 groups


def test_transplant_starts_version_2s_lower_levels_from_version_1s():
    """`model.unet.transplant` (session 14): a version 1 denoiser's three levels become version 2's lower three (down
    blocks shifted by the added top level, up blocks and the middle in place), with nearly all of version 2's
    parameters; its added top level stays as built; and its timestep embedding, which reads a sinusoid half as wide,
    comes out far closer to the source's than a fresh one's. The source here has random weights (version 1's trained
    ones left `model/embedded` when version 2 replaced them); on those the refit was 10% off, a fresh one 103%
    (model/README.md, "Session 14"); on random ones, whose timestep layer uses every frequency, it is ~45%."""
    torch.manual_seed(1)
    version_1 = build_unet(UNetConfig(), 4, 16, TextConfig().width)
    torch.manual_seed(0)
    fresh = build_unet(LATENT_32_UNET, 4, 32, version_1.config.cross_attention_dim)
    unet = build_unet(LATENT_32_UNET, 4, 32, version_1.config.cross_attention_dim)
    unet.load_state_dict(fresh.state_dict())
    copied = transplant(unet, version_1.state_dict())
    assert copied > 0.95 * sum(p.numel() for p in unet.parameters())
    source, got, before = version_1.state_dict(), unet.state_dict(), fresh.state_dict()
    for key in ("attentions.0.transformer_blocks.0.attn2.to_k.weight", "resnets.0.conv2.weight"):
        assert torch.equal(got[f"down_blocks.2.{key}"], source[f"down_blocks.1.{key}"])
        assert torch.equal(got[f"up_blocks.1.{key}"], source[f"up_blocks.1.{key}"])
    assert torch.equal(got["down_blocks.0.resnets.0.conv1.weight"], before["down_blocks.0.resnets.0.conv1.weight"])
    assert torch.equal(got["conv_in.weight"], before["conv_in.weight"])  # 16 wide here, 32 in the source
    t = torch.arange(0, NUM_TRAIN_TIMESTEPS, 5)
    with torch.no_grad():
        want = version_1.time_embedding(version_1.time_proj(t))

        def off(m: UNet2DConditionModel) -> float:
            return ((m.time_embedding(m.time_proj(t)) - want).norm() / want.norm()).item()

        assert off(unet) < 0.5 < 1.0 < off(fresh)


def test_init_from_starts_the_denoiser_from_another_pipeline(quick_model, tmp_path):
    """--init-from starts the denoiser and text encoder from a saved pipeline's weights (where they fit) and trains
    its own autoencoder: a step at a tiny learning rate leaves them at the source's. With --unet-from, without a
    pipeline folder, or with a text encoder of another shape: exit code 2."""
    common = ["--quick", "--steps-vae", "1", "--steps-unet", "1", "--threads", "1", "--unet-lr", "1e-9"]
    out = train.main([*common, "--init-from", str(quick_model), "--out", str(tmp_path / "init")])
    for file in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        assert _max_difference(quick_model, out, file) < 1e-3, file
    assert _max_difference(quick_model, out, "vae/diffusion_pytorch_model.safetensors") > 1e-3
    assert "started from" in (out / "train.log").read_text()
    for bad in (["--quick", "--init-from", str(tmp_path)],
                ["--quick", "--init-from", str(quick_model), "--unet-from", str(quick_model)],
                ["--version", "2", "--init-from", str(quick_model)]):
        with pytest.raises(SystemExit) as refused:
            train.main([*bad, "--out", str(tmp_path / "bad")])
        assert refused.value.code == 2, bad
