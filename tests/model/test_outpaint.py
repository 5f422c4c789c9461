"""`model.outpaint`'s readings of a fill-in, pinned on made-up outputs whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from model import outpaint
from model.data import PALETTE, make_dataset


@pytest.fixture(params=outpaint.OPS)
def case(request):
    """One held-out scene's start for each op: (op, canvas pixels, kept mask, scene)."""
    images, _, scenes = make_dataset(1, seed=5, split="heldout")
    canvas, mask, kept = outpaint.start(request.param, images[0])
    return request.param, np.asarray(canvas), kept, scenes[0]


def filled(canvas: np.ndarray, kept: np.ndarray, colour: str) -> np.ndarray:
    """The canvas with everything outside the kept part painted `colour`."""
    out = canvas.copy()
    out[~kept] = PALETTE[colour]
    return out


def test_start_keeps_the_image_and_masks_the_rest():
    """The mask is white exactly outside the kept box; the canvas is the op's size, with the image in the box."""
    images, _, _ = make_dataset(1, seed=5, split="heldout")
    for op in outpaint.OPS:
        canvas, mask, kept = outpaint.start(op, images[0])
        (width, height), (left, top, right, bottom) = outpaint.layout(op)
        assert canvas.size == mask.size == (width, height)
        assert kept[top:bottom, left:right].all() and kept.sum() == (right - left) * (bottom - top)
        assert (np.asarray(mask) == np.where(kept, 0, 255)).all()
    assert (np.asarray(outpaint.start("pan", images[0])[0])[:, :64] == images[0]).all()  # a pan keeps it whole


def test_a_perfect_fill_in_scores_full_marks(case):
    """The new part in the scene's background colour: background and cleanness 1, the kept part untouched, and a
    seam no worse than the blurred start's."""
    op, canvas, kept, scene = case
    out = filled(canvas, kept, scene.background)
    figures = outpaint.read(op, out, canvas, kept, scene)
    assert (figures["border_background"], figures["border_clean"], figures["kept_mae"]) == (1.0, 1.0, 0.0)
    assert figures["seam"] <= figures["seam_canvas"] + 1e-6


def test_wrong_colour_objects_in_the_border_and_a_changed_kept_part_are_each_seen(case):
    """Another background colour, an object drawn far from the seam, and a kept part redrawn each lower their figure."""
    op, canvas, kept, scene = case
    other = next(c for c in PALETTE if c != scene.background and np.linalg.norm(
        np.subtract(PALETTE[c], PALETTE[scene.background])) > 100)
    assert outpaint.read(op, filled(canvas, kept, other), canvas, kept, scene)["border_background"] == 0.0
    with_object = filled(canvas, kept, scene.background)
    with_object[-4:, -4:] = PALETTE[other]  # a corner of the canvas: new part, away from the seam
    assert outpaint.read(op, with_object, canvas, kept, scene)["border_clean"] == 0.0
    changed = filled(canvas, kept, scene.background)
    changed[kept] = 255 - changed[kept]
    assert outpaint.read(op, changed, canvas, kept, scene)["kept_mae"] > 50
