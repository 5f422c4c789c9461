"""Where an edit puts its source image on a new canvas and which pixels the model repaints: Zoom Out, Make Square,
Pan and Vary (Region). Pure geometry on whole pixels; the worker draws it (`worker.editing`), the bot sizes the job
with it before admission.

Every size is a multiple of the model's `multiple` and stays within its pixel budget: an edit whose canvas would be
larger is scaled down as a whole (the kept part too), and says so (`Layout.scaled`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from core.errors import EditRefused, PromptError

OPS = ("zoom", "square", "pan", "region")
"""zoom: the image shrunk to 1/zoom at the centre of a canvas of its size; square: the whole image at the centre of
a square canvas; pan: the canvas grown by half a side in one direction; region: one part of the image redrawn."""

ZOOM_MIN, ZOOM_MAX = 1.0, 2.0
"""Custom Zoom's range, as on Midjourney (Zoom Out 1.5x and 2x are inside it)."""

PAN_GROWTH = 0.5
"""A pan adds this fraction of the side it extends."""

MAX_ASPECT = 4
"""The longest side at most this many times the shortest (as `--ar`): a pan past it is refused."""

DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
"""Pan directions and the side they grow, as (dx, dy)."""

THIRD = 1 / 3
REGIONS: dict[str, tuple[str, tuple[float, float, float, float]]] = {
    **{
        f"r{row + 1}c{col + 1}": (f"{('Top', 'Middle', 'Bottom')[row]} {('left', 'centre', 'right')[col]}",
                                  (col * THIRD, row * THIRD, (col + 1) * THIRD, (row + 1) * THIRD))
        for row in range(3) for col in range(3)
    },
    "left": ("Left half", (0.0, 0.0, 0.5, 1.0)),
    "right": ("Right half", (0.5, 0.0, 1.0, 1.0)),
    "top": ("Top half", (0.0, 0.0, 1.0, 0.5)),
    "bottom": ("Bottom half", (0.0, 0.5, 1.0, 1.0)),
    "centre": ("Centre", (0.25, 0.25, 0.75, 0.75)),
}
"""Vary (Region)'s choices: name -> (label, box as fractions of the sides: left, top, right, bottom). The nine cells
of a 3x3 grid, the four halves and the centre (the middle half of both sides)."""

Box = tuple[int, int, int, int]
"""(left, top, right, bottom) in pixels, right and bottom exclusive."""


@dataclass(frozen=True)
class Edit:
    """What an editing button asks for; it travels in the job payload's `source` (`to_source`)."""

    op: str
    zoom: float = 0.0  # op zoom: the image's sides become 1/zoom of the canvas's (ZOOM_MIN..ZOOM_MAX)
    direction: str = ""  # op pan: one of DIRECTIONS
    region: str = ""  # op region: one of REGIONS

    def to_source(self) -> dict[str, Any]:
        """The payload `source` fields that name this edit (beside the parent's `job_id` and `index`)."""
        fields: dict[str, Any] = {"op": self.op}
        if self.op == "zoom":
            fields["zoom"] = self.zoom
        elif self.op == "pan":
            fields["direction"] = self.direction
        elif self.op == "region":
            fields["region"] = self.region
        return fields

    @classmethod
    def from_source(cls, source: dict[str, Any]) -> Edit:
        """The edit a payload's `source` names.

        Raises:
            ValueError: an unknown op, or its field missing or out of range; the message names it.
        """
        op = source.get("op")
        if op == "zoom":
            zoom = source.get("zoom")
            if not isinstance(zoom, int | float) or isinstance(zoom, bool) or not ZOOM_MIN <= zoom <= ZOOM_MAX:
                raise ValueError(f"source.zoom must be a number from {ZOOM_MIN} to {ZOOM_MAX}")
            return cls("zoom", zoom=float(zoom))
        if op == "square":
            return cls("square")
        if op == "pan":
            if source.get("direction") not in DIRECTIONS:
                raise ValueError(f"source.direction must be one of {', '.join(DIRECTIONS)}")
            return cls("pan", direction=str(source["direction"]))
        if op == "region":
            if source.get("region") not in REGIONS:
                raise ValueError("source.region must name one of the regions")
            return cls("region", region=str(source["region"]))
        raise ValueError(f"source.op must be one of {', '.join(OPS)}")

    def label(self) -> str:
        """How the job's message names it, e.g. "Zoom Out 2x" or "Pan ⬅️"."""
        if self.op == "zoom":
            return f"Zoom Out {self.zoom:g}x"
        if self.op == "square":
            return "Make Square"
        if self.op == "pan":
            return f"Pan {self.direction}"
        return f"Vary (Region: {REGIONS[self.region][0].lower()})"


@dataclass(frozen=True)
class Layout:
    """An edit drawn on whole pixels: the canvas, where the (resized) source goes on it, what the model redraws."""

    canvas: tuple[int, int]  # (width, height) of the result
    paste: Box  # where the source image, resized to this box, lies on the canvas
    repaint: tuple[Box, ...]  # the rectangles the model redraws; every other pixel is the source's
    scaled: bool = False  # the source had to be made smaller than its own size to keep within the pixel budget

    @property
    def outpaint(self) -> bool:
        """Whether the repainted part lies outside the source (zoom, square, pan) rather than inside it (region)."""
        return self.paste != (0, 0, *self.canvas) or not self.repaint


def plan(
    edit: Edit, source: tuple[int, int], *, multiple: int, max_pixels: int, canvas: tuple[int, int] | None = None
) -> Layout:
    """The layout of `edit` on a source image of `source` (width, height), for a model whose sides are multiples
    of `multiple` and whose images have at most `max_pixels`. A zoom may be given its `canvas` (Custom Zoom with
    `--ar`): the source, shrunk to fit 1/zoom of it, goes at its centre.

    Raises:
        EditRefused: a pan past MAX_ASPECT, Make Square of a square image, or an op this module does not know.
    """
    width, height = source
    if edit.op == "zoom":
        size, scale = _fit(width, height, multiple, max_pixels)
        if canvas is not None:
            size, scale = canvas, min(canvas[0] / width, canvas[1] / height)
        fit = min(size[0] / width, size[1] / height) / edit.zoom  # the source's scale inside 1/zoom of the canvas
        inner = (min(size[0], _round(width * fit, multiple)), min(size[1], _round(height * fit, multiple)))
        return _around(size, inner, (0.5, 0.5), scaled=scale < 1)
    if edit.op == "square":
        if width == height:
            raise EditRefused("This image is already square.")
        side = max(width, height)
        canvas, scale = _fit(side, side, multiple, max_pixels)
        inner = (_round(canvas[0] * width / side, multiple), _round(canvas[1] * height / side, multiple))
        return _around(canvas, inner, (0.5, 0.5), scaled=scale < 1)
    if edit.op == "pan":
        dx, dy = DIRECTIONS[edit.direction]
        grown = (width * (1 + PAN_GROWTH * abs(dx)), height * (1 + PAN_GROWTH * abs(dy)))
        if max(grown) > MAX_ASPECT * min(grown):
            raise EditRefused(f"Panning {edit.direction} once more would make the image longer than "
                              f"{MAX_ASPECT}:1; pan the other way, or Zoom Out.")
        canvas, scale = _fit(grown[0], grown[1], multiple, max_pixels)
        # the source keeps its aspect at the canvas's unchanged side; the new strip is on the side panned to
        if dx:
            inner = (min(canvas[0] - multiple, _round(width * canvas[1] / height, multiple)), canvas[1])
        else:
            inner = (canvas[0], min(canvas[1] - multiple, _round(height * canvas[0] / width, multiple)))
        anchor = ((1 - dx) / 2, (1 - dy) / 2)  # panning left keeps the source at the right edge
        return _around(canvas, inner, anchor, scaled=scale < 1)
    if edit.op == "region":
        canvas, scale = _fit(width, height, multiple, max_pixels)
        left, top, right, bottom = REGIONS[edit.region][1]
        box = (_edge(left * canvas[0], multiple), _edge(top * canvas[1], multiple),
               _edge(right * canvas[0], multiple), _edge(bottom * canvas[1], multiple))
        return Layout(canvas, (0, 0, *canvas), (box,), scaled=scale < 1)
    raise EditRefused(f"Unknown edit {edit.op!r}.")


ZOOM_PARAMETER = re.compile(r"(?<!\S)(?:--|\u2014|\u2013)zoom(?:\s+(\S+))?(?!\S)", re.IGNORECASE)


def custom_zoom(text: str) -> tuple[str, float]:
    """Custom Zoom's prompt: the text without its `--zoom`, and the zoom (2 when none is given).

    Raises:
        PromptError: `--zoom` without a number, given twice, or outside ZOOM_MIN..ZOOM_MAX.
    """
    found = list(ZOOM_PARAMETER.finditer(text))
    if len(found) > 1:
        raise PromptError("--zoom is given twice")
    if not found:
        return text, ZOOM_MAX
    raw = found[0][1] or ""
    try:
        zoom = float(raw)
    except ValueError:
        zoom = math.nan
    if not ZOOM_MIN <= zoom <= ZOOM_MAX:
        raise PromptError(f"--zoom must be a number from {ZOOM_MIN:g} to {ZOOM_MAX:g}, not {raw[:20] or 'nothing'!r}")
    return " ".join((text[: found[0].start()] + text[found[0].end():]).split()), zoom


def _fit(width: float, height: float, multiple: int, max_pixels: int) -> tuple[tuple[int, int], float]:
    """The largest canvas of this aspect within `max_pixels`, sides multiples of `multiple` (rounded down, at
    least one multiple), and the scale applied (1 when it fitted)."""
    scale = min(1.0, math.sqrt(max_pixels / (width * height)))
    sides = (max(multiple, math.floor(width * scale / multiple) * multiple),
             max(multiple, math.floor(height * scale / multiple) * multiple))
    return sides, scale


def _round(value: float, multiple: int) -> int:
    """`value` to the nearest multiple of `multiple`, at least one."""
    return max(multiple, round(value / multiple) * multiple)


def _edge(value: float, multiple: int) -> int:
    """A region's edge on the grid of `multiple` (the latents' grid): the nearest multiple."""
    return round(value / multiple) * multiple


def _around(canvas: tuple[int, int], inner: tuple[int, int], anchor: tuple[float, float], *, scaled: bool
            ) -> Layout:
    """The source of size `inner` placed at `anchor` (fractions: 0 = left/top, 0.5 = centre, 1 = right/bottom) of
    `canvas`; everything around it is repainted, as up to four strips."""
    left = round((canvas[0] - inner[0]) * anchor[0])
    top = round((canvas[1] - inner[1]) * anchor[1])
    paste = (left, top, left + inner[0], top + inner[1])
    strips = (
        (0, 0, canvas[0], paste[1]),  # above
        (0, paste[3], canvas[0], canvas[1]),  # below
        (0, paste[1], paste[0], paste[3]),  # left of it
        (paste[2], paste[1], canvas[0], paste[3]),  # right of it
    )
    return Layout(canvas, paste, tuple(s for s in strips if s[2] > s[0] and s[3] > s[1]), scaled=scaled)
