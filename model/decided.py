"""`python -m model.decided [--model DIR]`: at which timesteps a model's samples decide an attribute, as JSON.

A prompt-switch measurement. Each of n scenes has two captions that differ in one attribute (the object's shape, or
its colour); the sampler (DPM-Solver++, as the worker runs it) follows caption A for the first k steps and caption B
from step k on, from the same noise. The checker then reads which of the two the image ends with. While the swap
still gives B, the attribute was not yet decided at the swap's t; where A wins, it was. The curve says which part
of the noise schedule draws each attribute, and so where training examples of it count (`model.unet`'s
"shape-band" timestep sampler was chosen from it: model/README.md, session 11).

Swapping is done in diffusers' `callback_on_step_end`, which may replace the pipeline's `prompt_embeds` (the
negative and positive halves stacked for classifier-free guidance) between two steps.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline

from model import checker
from model.data import COLOURS, SHAPES, parse_caption
from model.evaluate import DEFAULT_GUIDANCE, DEFAULT_MODEL, DEFAULT_STEPS, load

ATTRIBUTES = ("shape", "colour")


def caption_pairs(n: int, attribute: str, seed: int) -> tuple[list[str], list[str]]:
    """n captions "a <colour> <shape> on a <colour> background" and the same with `attribute` changed."""
    rng = np.random.default_rng(seed)
    first, second = [], []
    for _ in range(n):
        fg, bg = (COLOURS[i] for i in rng.choice(len(COLOURS), 2, replace=False))
        shape, other_shape = (SHAPES[i] for i in rng.choice(len(SHAPES), 2, replace=False))
        other_fg = COLOURS[rng.choice([i for i, c in enumerate(COLOURS) if c not in (fg, bg)])]
        first.append(f"a {fg} {shape} on a {bg} background")
        second.append(f"a {other_fg if attribute == 'colour' else fg} {other_shape if attribute == 'shape' else shape}"
                      f" on a {bg} background")
    return first, second


def _embeds(pipe: DiffusionPipeline, prompts: list[str]) -> torch.Tensor:
    """[negative; positive] text states, as the pipeline stacks them for guidance."""
    positive, negative = pipe.encode_prompt(prompts, pipe.device, 1, True, [""] * len(prompts))
    return torch.cat([negative, positive])


def switch_curve(pipe: DiffusionPipeline, attribute: str, n: int = 32, steps: int = DEFAULT_STEPS,
                 guidance: float = DEFAULT_GUIDANCE, seed: int = 0, switch_at: tuple[int, ...] | None = None
                 ) -> list[dict]:
    """For each switch step k: the t the swap happens at (-1: never), and the fractions of images the checker
    reads as caption B's and as caption A's `attribute`."""
    first, second = caption_pairs(n, attribute, seed + 1)
    states = {"A": _embeds(pipe, first), "B": _embeds(pipe, second)}
    curve = []
    for k in switch_at if switch_at is not None else tuple(range(0, steps + 1, 2)):
        def swap(p: DiffusionPipeline, i: int, t: torch.Tensor, kwargs: dict, k: int = k) -> dict:
            return {"prompt_embeds": states["B"]} if i + 1 == k else {}

        start = states["B" if k == 0 else "A"]
        images = pipe(prompt_embeds=start[n:], negative_prompt_embeds=start[:n], num_inference_steps=steps,
                      guidance_scale=guidance, height=64, width=64, generator=torch.Generator().manual_seed(seed),
                      output_type="np", callback_on_step_end=swap,
                      callback_on_step_end_tensor_inputs=["prompt_embeds"]).images
        pixels = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
        readings = [checker.check(image) for image in pixels]
        curve.append({"switch_step": k, "t": int(pipe.scheduler.timesteps[k]) if k < steps else -1,
                      "reads_B": _agreement(readings, second, attribute),
                      "reads_A": _agreement(readings, first, attribute)})
    return curve


def _agreement(readings: list[checker.Reading], captions: list[str], attribute: str) -> float:
    """Fraction of readings whose `attribute` agrees with their caption."""
    return round(float(np.mean([checker.score(r, parse_caption(c))[attribute]  # type: ignore[arg-type]
                                for r, c in zip(readings, captions, strict=True)])), 3)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m model.decided", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="pipeline folder (default: model/embedded)")
    p.add_argument("--attribute", choices=ATTRIBUTES, default="shape")
    p.add_argument("--n", type=int, default=32, help="scenes, each rendered once per switch step")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--switch-at", default=None, help="comma-separated switch steps (default: every other step)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not (args.model / "model_index.json").is_file():
        p.error(f"{args.model} is not a saved pipeline folder (no model_index.json)")
    try:
        switch_at = tuple(int(k) for k in args.switch_at.split(",")) if args.switch_at else None
    except ValueError:
        p.error(f"--switch-at takes comma-separated step numbers, not {args.switch_at!r}")
    if switch_at and not all(0 <= k <= args.steps for k in switch_at):
        p.error(f"--switch-at steps must lie in 0..{args.steps}")
    curve = switch_curve(load(args.model), args.attribute, args.n, args.steps, seed=args.seed, switch_at=switch_at)
    print(json.dumps({"model": str(args.model), "attribute": args.attribute, "n": args.n, "steps": args.steps,
                      "curve": curve}, indent=2))


if __name__ == "__main__":
    main()
