"""Drawing an edit's layout (`core.canvas`): the canvas and mask the inpainting call starts from, and the result with
the kept pixels put back.

The model redraws the mask's white part; after decoding, every kept pixel is pasted back exactly, except in a
feathered band of `feather` pixels along the seam, where the two blend so that no edge shows. The band lies on the
side where both images are real: inside the kept part for an outpaint (zoom, square, pan), inside the repainted
region for Vary (Region), so everything outside a region stays exactly as it was.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from core.canvas import Box, Layout

FEATHER_FRACTION = 1 / 16
"""The seam's blend band, as a fraction of the canvas's shorter side (4 pixels at 64, 32 at 512)."""

FILL_BLUR_FRACTION = 1 / 8
"""Blur radius of the colour fill around an outpainted source, as a fraction of the shorter side: the VAE sees
the source's colours spread out rather than a hard black frame."""


def feather(layout: Layout) -> int:
    """The width of the blend band along the seam, in pixels (at least 2)."""
    return max(2, round(min(layout.canvas) * FEATHER_FRACTION))


def start(layout: Layout, source: Image.Image) -> tuple[Image.Image, Image.Image]:
    """The inpainting call's image and mask (white = redraw): the source resized into its box on the canvas, the
    rest filled with its blurred colours."""
    source = source.convert("RGB")
    left, top, right, bottom = layout.paste
    inner = source if source.size == (right - left, bottom - top) else source.resize(
        (right - left, bottom - top), Image.Resampling.LANCZOS)
    canvas = source.resize(layout.canvas, Image.Resampling.BILINEAR)
    if layout.outpaint:
        canvas = canvas.filter(ImageFilter.GaussianBlur(max(1, round(min(layout.canvas) * FILL_BLUR_FRACTION))))
    canvas.paste(inner, (left, top))
    mask = Image.new("L", layout.canvas, 0)
    draw = ImageDraw.Draw(mask)
    for box in layout.repaint:
        draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=255)
    return canvas, mask


def finish(layout: Layout, kept: Image.Image, generated: Image.Image) -> Image.Image:
    """`generated` with the pixels of `kept` (the canvas `start` made) put back outside the repainted boxes,
    blended over the feather band."""
    width, height = layout.canvas
    distance = _distance_to(layout.repaint, width, height)  # 0 inside a repainted box
    band = float(feather(layout))
    if layout.outpaint:  # the band is inside the kept part: weight of the kept pixels rises from the seam inwards
        keep = np.clip(distance / band, 0.0, 1.0)
    else:  # the band is inside the region: weight of the new pixels rises from the region's edge inwards
        keep = 1.0 - np.clip(_depth_inside(layout.repaint, width, height) / band, 0.0, 1.0)
    old = np.asarray(kept.convert("RGB"), dtype=np.float32)
    new = np.asarray(generated.convert("RGB").resize(layout.canvas), dtype=np.float32)
    mixed = old * keep[..., None] + new * (1.0 - keep[..., None])
    return Image.fromarray(np.rint(mixed).clip(0, 255).astype(np.uint8))


def finish_masked(kept: Image.Image, generated: Image.Image, mask: Image.Image) -> Image.Image:
    """`generated` inside a drawn mask (white) and `kept` everywhere else, pixel for pixel; the new pixels fade in
    over a feather band just inside the mask's edge, so no seam shows and nothing outside it changes."""
    band = max(2, round(min(kept.size) * FEATHER_FRACTION))
    soft = ImageChops.darker(mask.filter(ImageFilter.GaussianBlur(band / 2)), mask)  # 0 wherever the mask is 0
    return Image.composite(generated.convert("RGB").resize(kept.size), kept.convert("RGB"), soft)


def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:height, 0:width]
    return xs.astype(np.float32) + 0.5, ys.astype(np.float32) + 0.5  # pixel centres


def _distance_to(boxes: tuple[Box, ...], width: int, height: int) -> np.ndarray:
    """Each pixel centre's euclidean distance to the nearest box (0 inside one; infinity when there is none)."""
    xs, ys = _grid(width, height)
    best = np.full((height, width), np.inf, dtype=np.float32)
    for left, top, right, bottom in boxes:
        dx = np.maximum(np.maximum(left - xs, xs - right), 0.0)
        dy = np.maximum(np.maximum(top - ys, ys - bottom), 0.0)
        best = np.minimum(best, np.hypot(dx, dy))
    return best


def _depth_inside(boxes: tuple[Box, ...], width: int, height: int) -> np.ndarray:
    """Each pixel centre's distance to the nearest edge of the box it is in that does not lie on the canvas's own
    border (0 outside every box)."""
    xs, ys = _grid(width, height)
    depth = np.zeros((height, width), dtype=np.float32)
    for left, top, right, bottom in boxes:
        inside = (xs > left) & (xs < right) & (ys > top) & (ys < bottom)
        edges = [xs - left if left > 0 else np.inf, right - xs if right < width else np.inf,
                 ys - top if top > 0 else np.inf, bottom - ys if bottom < height else np.inf]
        nearest = np.minimum.reduce([np.broadcast_to(e, xs.shape) for e in edges])
        depth = np.where(inside, np.maximum(depth, nearest), depth)
    return depth
