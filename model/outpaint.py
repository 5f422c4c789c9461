"""How well a model fills in around a kept image (Zoom Out 2x, Pan right), read from pixels: part of `model.evaluate`.

For each held-out scene the ground-truth image is the part to keep (so the figures are the fill-in's alone, not the
text-to-image render's): for a zoom it is shrunk to half size in the centre of a 64x64 canvas, for a pan it stays
whole at the left of a 96x64 one. The rest starts as the kept image's colours blurred outwards and is redrawn from
noise by diffusers' inpainting pipeline on the model's own modules (strength 1) or with an inpainting UNet, under the
scene's caption: what the worker does for Zoom Out and Pan (`worker.editing`, `worker.engine.inpaint`), without its
paste-back. Reported:

- `border_background`: the new part's colour (the palette colour its median is nearest to) is the scene's background.
- `border_clean`: nothing in the new part is far from that background (no object drawn into it, no smear), outside
  a band of SEAM_BAND pixels along the seam where a kept object may rightly go on.
- `kept_mae`: mean absolute difference (0-255) between the output and the canvas over the kept part: how faithfully
  the model keeps what it was given (the worker pastes it back; a large difference shows as a seam there).
- `seam`: mean absolute step (0-255) across the seam once the kept pixels are pasted back exactly, against
  `seam_canvas`, the same step of the blurred start: a good fill-in continues the kept part's edge.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import AutoPipelineForInpainting, DiffusionPipeline, UNet2DConditionModel
from PIL import Image, ImageFilter

from model.checker import FOREGROUND_DISTANCE, nearest_colour
from model.data import Scene, make_dataset

OPS = ("zoom", "pan")
SEAM_BAND = 4
"""Pixels of the new part next to the seam that `border_clean` does not judge."""
FILL_BLUR = 8
"""Blur radius of the start's colour fill, pixels (the worker's 1/8 of the shorter side at 64)."""


def layout(op: str) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """The canvas (width, height) and the kept box (left, top, right, bottom) of `op` for a 64x64 image."""
    if op == "zoom":
        return (64, 64), (16, 16, 48, 48)
    if op == "pan":
        return (96, 64), (0, 0, 64, 64)
    raise ValueError(f"unknown op {op!r}")


def start(op: str, image: np.ndarray) -> tuple[Image.Image, Image.Image, np.ndarray]:
    """The inpainting call's canvas and mask (white: redraw) for `op`, and the kept box as a boolean array."""
    canvas_size, (left, top, right, bottom) = layout(op)
    source = Image.fromarray(image)
    canvas = source.resize(canvas_size, Image.Resampling.BILINEAR).filter(ImageFilter.GaussianBlur(FILL_BLUR))
    canvas.paste(source.resize((right - left, bottom - top), Image.Resampling.LANCZOS), (left, top))
    kept = np.zeros((canvas_size[1], canvas_size[0]), dtype=bool)
    kept[top:bottom, left:right] = True
    return canvas, Image.fromarray(np.where(kept, 0, 255).astype(np.uint8)), kept


def seam_step(image: np.ndarray, kept: np.ndarray) -> float:
    """Mean absolute difference (0-255, over channels) between each pair of neighbouring pixels the seam parts."""
    x = image.astype(np.float32)
    steps = [np.abs(x[:, 1:] - x[:, :-1])[kept[:, 1:] != kept[:, :-1]],
             np.abs(x[1:] - x[:-1])[kept[1:] != kept[:-1]]]
    return float(np.concatenate(steps).mean())


def read(op: str, out: np.ndarray, canvas: np.ndarray, kept: np.ndarray, scene: Scene) -> dict[str, float]:
    """The figures of one fill-in (see the module)."""
    new = ~kept
    near_seam = np.zeros_like(kept)
    ys, xs = np.nonzero(kept)
    near_seam[max(ys.min() - SEAM_BAND, 0):ys.max() + 1 + SEAM_BAND, max(xs.min() - SEAM_BAND, 0):xs.max() + 1 +
              SEAM_BAND] = True
    border = out[new].astype(np.float32)
    colour = nearest_colour(np.median(border, axis=0))
    far = np.linalg.norm(out.astype(np.float32) - np.median(border, axis=0), axis=-1) > FOREGROUND_DISTANCE
    pasted = np.where(kept[..., None], canvas, out)
    return {"border_background": float(colour == scene.background),
            "border_clean": float(not (far & new & ~near_seam).any()),
            "kept_mae": float(np.abs(out.astype(np.float32) - canvas)[kept].mean()),
            "seam": seam_step(pasted, kept), "seam_canvas": seam_step(canvas, kept)}


@torch.no_grad()
def evaluate(pipe: DiffusionPipeline, n: int, seed: int, steps: int, guidance: float, batch: int = 16,
             unet: UNet2DConditionModel | None = None) -> dict[str, dict[str, float]]:
    """Mean figures of Zoom Out 2x and Pan right over `n` held-out scenes (module docstring), by the model's own UNet
    or by the inpainting `unet` given (9 channels: the mask and the masked image are its inputs, `model.inpaint`)."""
    inpainter = AutoPipelineForInpainting.from_pipe(pipe, **({"unet": unet} if unet is not None else {}))
    inpainter.set_progress_bar_config(disable=True)
    images, prompts, scenes = make_dataset(n, seed=seed + 30_000, split="heldout")
    result: dict[str, dict[str, float]] = {}
    for op in OPS:
        rows: list[dict[str, float]] = []
        for i in range(0, n, batch):
            starts = [start(op, image) for image in images[i:i + batch]]
            (width, height), _ = layout(op)
            out = inpainter(prompts[i:i + batch], image=[c for c, _, _ in starts], mask_image=[m for _, m, _ in starts],
                            strength=1.0, width=width, height=height, num_inference_steps=steps,
                            guidance_scale=guidance, generator=torch.Generator().manual_seed(seed + i),
                            output_type="np").images
            pixels = (np.clip(out, 0, 1) * 255).round().astype(np.uint8)
            rows += [read(op, o, np.asarray(c), k, s) for o, (c, _, k), s in zip(pixels, starts, scenes[i:i + batch],
                                                                                  strict=True)]
        result[op] = {key: round(float(np.mean([r[key] for r in rows])), 4) for key in rows[0]}
    return result
