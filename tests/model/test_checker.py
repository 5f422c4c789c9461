"""The independent pixel checker: components, shape reading, accuracy on ground truth, robustness."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from model.checker import Reading, Seen, check, corrupt, label, score, validate
from model.data import PALETTE, SHAPES, SIZES, Obj, Scene, render


def _reference_count(mask: np.ndarray, eight: bool) -> int:
    """Components by breadth-first search, for comparison."""
    seen = np.zeros_like(mask)
    steps = [(-1, 0), (1, 0), (0, -1), (0, 1)] + ([(-1, -1), (-1, 1), (1, -1), (1, 1)] if eight else [])
    count = 0
    for start in zip(*np.nonzero(mask), strict=True):
        if seen[start]:
            continue
        count += 1
        seen[start] = True
        todo = deque([start])
        while todo:
            y, x = todo.popleft()
            for dy, dx in steps:
                p = (y + dy, x + dx)
                if 0 <= p[0] < mask.shape[0] and 0 <= p[1] < mask.shape[1] and mask[p] and not seen[p]:
                    seen[p] = True
                    todo.append(p)
    return count


@pytest.mark.parametrize(
    ("rows", "eight", "count"),
    [
        (["...", "...", "..."], False, 0),
        (["#..", "...", "..#"], False, 2),
        (["#..", ".#.", "..#"], False, 3),
        (["#..", ".#.", "..#"], True, 1),
        (["###", "#.#", "###"], False, 1),
        (["#.#", "#.#", "###"], False, 1),
    ],
)
def test_label_table(rows: list[str], eight: bool, count: int) -> None:
    """label counts components under 4- and 8-connectivity, including a ring and a U whose arms meet late."""
    mask = np.array([[c == "#" for c in row] for row in rows])
    labels, n = label(mask, eight=eight)
    assert n == count
    assert set(np.unique(labels[mask])) == set(range(1, n + 1)) and (labels[~mask] == 0).all()


@settings(max_examples=60, deadline=None)
@given(mask=arrays(bool, st.tuples(st.integers(1, 12), st.integers(1, 12))), eight=st.booleans())
def test_label_agrees_with_breadth_first_search(mask: np.ndarray, eight: bool) -> None:
    """label finds as many components as a plain breadth-first search, and each label is one connected set."""
    labels, n = label(mask, eight=eight)
    assert n == _reference_count(mask, eight)
    for k in range(1, n + 1):
        assert _reference_count(labels == k, eight) == 1


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(("colour", "background"), [("red", "blue"), ("orange", "yellow"), ("white", "black")])
def test_check_reads_each_shape_at_each_size(shape: str, size: str, colour: str, background: str) -> None:
    """Every shape at every size, on near and far colour pairs, reads back as drawn."""
    reading = check(render(Scene(background, (Obj(shape, colour, "centre", size),))))
    assert reading.background == background
    assert [(o.shape, o.colour, o.position) for o in reading.objects] == [(shape, colour, "centre")]


def test_check_accepts_pil_images() -> None:
    """A PIL image reads the same as its array."""
    image = render(Scene("green", (Obj("star", "pink", "left"), Obj("ring", "white", "right"))))
    assert check(Image.fromarray(image)) == check(image)


def test_plain_background_has_no_objects() -> None:
    """An image of only background, even noisy, reads as that background and no objects."""
    flat = np.full((64, 64, 3), PALETTE["purple"], dtype=np.uint8)
    reading = check(corrupt(flat, np.random.default_rng(0), blur=0.8, noise=10.0))
    assert reading == Reading("purple", ())


def test_validate_meets_the_accuracy_bar() -> None:
    """On clean ground truth the checker is at least 98% right on every attribute, one- and two-object scenes."""
    result = validate(n=300, seed=0)
    assert result["n_single"] > 100 and result["n_two"] > 100
    for key, accuracy in result.items():
        if not key.startswith("n_"):
            assert accuracy >= 0.98, (key, accuracy)


def test_validate_is_robust_to_blur_and_noise() -> None:
    """With a mild blur (radius 0.8 px) and noise (sigma 8/255) the checker stays at least 90% right."""
    result = validate(n=200, seed=1, blur=0.8, noise=8.0)
    for key, accuracy in result.items():
        if not key.startswith("n_"):
            assert accuracy >= 0.9, (key, accuracy)


def _seen(colour: str, shape: str, position: str) -> Seen:
    return Seen(colour=colour, shape=shape, position=position, centroid=(0.5, 0.5), area=0.05)


@pytest.mark.parametrize(
    ("reading", "scene", "expected"),
    [
        (Reading("blue", (_seen("red", "circle", "left"),)), Scene("blue", (Obj("circle", "red", None),)),
         {"background": True, "count": True, "colour": True, "shape": True, "position": True}),
        (Reading("blue", (_seen("red", "circle", "left"),)), Scene("blue", (Obj("circle", "red", "right"),)),
         {"background": True, "count": True, "colour": True, "shape": True, "position": False}),
        (Reading("green", (_seen("red", "square", "centre"),)), Scene(None, (Obj("circle", "pink", "centre"),)),
         {"background": True, "count": True, "colour": False, "shape": False, "position": True}),
        (Reading("blue", (_seen("pink", "ring", "right"), _seen("red", "star", "left"))),
         Scene("gray", (Obj("star", "red", "left"), Obj("ring", "pink", "right"))),
         {"background": False, "count": True, "colour": True, "shape": True, "position": True}),
        (Reading("blue", ()), Scene("blue", (Obj("star", "red", "left"),)),
         {"background": True, "count": False, "colour": False, "shape": False, "position": False}),
    ],
)
def test_score_table(reading: Reading, scene: Scene, expected: dict[str, bool]) -> None:
    """score pairs read objects with wanted ones in any order and skips what the prompt leaves unsaid."""
    assert score(reading, scene) == expected
