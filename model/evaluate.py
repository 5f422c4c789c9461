"""`python -m model.evaluate [--model DIR]`: how often the embedded model draws what a held-out prompt asks, as JSON.

Prompts are captions of the generator's "heldout" split: every one has a colour/shape or shape/background pairing the
model never saw in training (`model.data.HELD_OUT`). Each image is read back by the independent pixel checker
(`model.checker`) and scored against the scene the prompt describes (`model.data.parse_caption`, so a position the
prompt does not say is not checked); `strict_shape` also asks for the corners and fill a person would name the shape
by (`model.checker.strict_shape`). Samplers: DPM-Solver++ (the default, as the worker loads every model) at the
default and at 4, 8 and 20 steps, and plain ancestral DDPM at 1000 steps, each with its time per image; and, at the
default steps, 24 prompts "a <colour> square on a <colour> background" (`squares`), the issue's example, whose
`strict_shape` says how many squares kept their corners. The checker's own accuracy on ground-truth images is
reported alongside, as the ceiling of these figures, and so is the autoencoder's alone: held-out PSNR and the
checker's accuracy on its reconstructions (colours and thin shapes kept or not). Last, how well it fills in around a
kept image for Zoom Out 2x and Pan (`model.outpaint`: the new part's background and cleanness, the kept part's
fidelity, the seam), with the model's own UNet and, when the folder has one, its inpainting UNet (`inpaint/unet`,
`model.inpaint`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler, DiffusionPipeline, DPMSolverMultistepScheduler, UNet2DConditionModel

from core.models import embedded_model
from model import checker, outpaint
from model.data import COLOURS, make_dataset, parse_caption
from model.vae import psnr, reconstruct, to_tensor

DEFAULT_MODEL = Path(__file__).parent / "embedded"
DEFAULT_STEPS = embedded_model().steps
"""Sampling steps the worker uses for the embedded model unless a prompt says otherwise."""
DEFAULT_GUIDANCE = embedded_model().guidance
"""Classifier-free guidance scale w in eps_uncond + w (eps_cond - eps_uncond) (Ho & Salimans 2022, eq. 6) the worker
uses for the embedded model at the default `--stylize`."""
INPAINT_UNET = "inpaint/unet"
"""Where a model folder keeps its inpainting UNet, when it has one (`python -m model.inpaint`)."""
ATTRIBUTES = ("background", "colour", "shape", "strict_shape", "position", "count")


def load(folder: Path, device: str = "cpu") -> DiffusionPipeline:
    """The saved pipeline in fp32 with DPM-Solver++ as its scheduler, as `model.loading` gives it to the worker."""
    pipe = DiffusionPipeline.from_pretrained(folder, dtype=torch.float32)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, algorithm_type="dpmsolver++")
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def render(pipe: DiffusionPipeline, prompts: list[str], steps: int, guidance: float, seed: int, batch: int = 16
           ) -> tuple[list[np.ndarray], float]:
    """One 64x64 image per prompt, seeded per batch; returns the images and the seconds spent per image."""
    images: list[np.ndarray] = []
    started = time.perf_counter()
    for i in range(0, len(prompts), batch):
        generator = torch.Generator().manual_seed(seed + i)
        out = pipe(prompts[i:i + batch], num_inference_steps=steps, guidance_scale=guidance, height=64, width=64,
                   generator=generator, output_type="np").images
        images.extend((np.clip(out, 0, 1) * 255).round().astype(np.uint8))
    return images, (time.perf_counter() - started) / max(len(prompts), 1)


def accuracy(images: list[np.ndarray], prompts: list[str]) -> dict[str, float]:
    """Fraction of images whose checker reading agrees with their prompt, per attribute."""
    scores = [checker.score(checker.check(image), parse_caption(prompt)) for image, prompt in zip(images, prompts,
                                                                                                   strict=True)]
    return {key: float(np.mean([s[key] for s in scores])) for key in ATTRIBUTES}


def square_prompts(n: int, seed: int = 0) -> list[str]:
    """`n` prompts "a <colour> square on a <colour> background", distinct colour pairs drawn with `seed`: the issue's
    own example ("a blue square on a black background"), where a person sees at once whether a square has corners."""
    pairs = list(itertools.permutations(COLOURS, 2))
    chosen = np.random.default_rng(seed).choice(len(pairs), min(n, len(pairs)), replace=False)
    return [f"a {pairs[i][0]} square on a {pairs[i][1]} background" for i in chosen]


def vae_fidelity(pipe: DiffusionPipeline, n: int, seed: int) -> dict[str, float]:
    """The autoencoder alone: held-out PSNR of D(mu(x)), and the checker's accuracy on those reconstructions."""
    images, _, scenes = make_dataset(n, seed=seed + 20_000, split="heldout")
    x = to_tensor(images).to(pipe.device)
    x_hat = reconstruct(pipe.vae, x).cpu()
    pixels = ((x_hat.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    scores = [checker.score(checker.check(image), scene) for image, scene in zip(pixels, scenes, strict=True)]
    rings = [s["shape"] for s, scene in zip(scores, scenes, strict=True) if "ring" in {o.shape for o in scene.objects}]
    accuracies = {key: float(np.mean([s[key] for s in scores])) for key in ATTRIBUTES}
    return {"psnr_db": round(psnr(x.cpu(), x_hat), 2), **accuracies,
            "ring_shape": float(np.mean(rings)) if rings else float("nan")}


def evaluate(folder: Path, n: int = 64, n_ddpm: int = 16, seed: int = 0, guidance: float = DEFAULT_GUIDANCE,
             device: str = "cpu", validate_n: int = 500, n_outpaint: int = 32, n_squares: int = 24) -> dict:
    """The figures `python -m model.evaluate` prints."""
    pipe = load(folder, device)
    _, prompts, _ = make_dataset(n, seed=seed + 10_000, split="heldout")
    result: dict = {"model": str(folder), "prompts": n, "guidance": guidance, "vae": vae_fidelity(pipe, 256, seed)}
    for steps in sorted({4, 8, 20, DEFAULT_STEPS}):
        images, per_image = render(pipe, prompts, steps, guidance, seed)
        result[f"dpm++ {steps} steps"] = {**accuracy(images, prompts), "s_per_image": round(per_image, 4)}
    result["default"] = {"steps": DEFAULT_STEPS, **result[f"dpm++ {DEFAULT_STEPS} steps"]}
    if n_squares:
        squares = square_prompts(n_squares, seed)
        images, _ = render(pipe, squares, DEFAULT_STEPS, guidance, seed)
        read = accuracy(images, squares)
        result["squares"] = {"prompts": len(squares), "steps": DEFAULT_STEPS,
                             **{key: read[key] for key in ("background", "colour", "shape", "strict_shape")}}
    if n_ddpm:
        # steps_offset=0: with the saved 1, DDPM's "leading" spacing would run t = 1000..1 instead of 999..0
        pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config, steps_offset=0, clip_sample=False)
        images, per_image = render(pipe, prompts[:n_ddpm], 1000, guidance, seed)
        result["ddpm 1000 steps"] = {**accuracy(images, prompts[:n_ddpm]), "s_per_image": round(per_image, 4),
                                     "prompts": n_ddpm}
    if n_outpaint:
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, algorithm_type="dpmsolver++")
        result["outpainting"] = {"prompts": n_outpaint, "steps": DEFAULT_STEPS,
                                 **outpaint.evaluate(pipe, n_outpaint, seed, DEFAULT_STEPS, guidance)}
        if (folder / INPAINT_UNET).is_dir():  # the model's own inpainting UNet (`model.inpaint`), as the worker uses
            unet = UNet2DConditionModel.from_pretrained(folder / INPAINT_UNET, dtype=torch.float32).to(device)
            result["outpainting, inpainting UNet"] = {
                "prompts": n_outpaint, "steps": DEFAULT_STEPS,
                **outpaint.evaluate(pipe, n_outpaint, seed, DEFAULT_STEPS, guidance, unet=unet)}
    if validate_n:
        result["checker on ground truth"] = checker.validate(validate_n, seed=seed)
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m model.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="pipeline folder (default: model/embedded)")
    p.add_argument("--n", type=int, default=64, help="held-out prompts per sampler")
    p.add_argument("--n-ddpm", type=int, default=16, help="prompts for 1000-step DDPM (slow; 0 skips it)")
    p.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--validate-n", type=int, default=500, help="ground-truth images to validate the checker on")
    p.add_argument("--n-outpaint", type=int, default=32, help="held-out scenes zoomed out and panned (0 skips it)")
    p.add_argument("--n-squares", type=int, default=24,
                   help='"a <colour> square on a <colour> background" prompts, read for corners (0 skips them)')
    args = p.parse_args(argv)
    print(json.dumps(evaluate(args.model, args.n, args.n_ddpm, args.seed, args.guidance, args.device,
                              args.validate_n, args.n_outpaint, args.n_squares), indent=1))


if __name__ == "__main__":
    main()
