"""The synthetic shapes data set: rendering, captions, parsing and the held-out split."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.data import (
    COLOURS,
    HELD_OUT,
    PALETTE,
    RADIUS_RANGE,
    SHAPES,
    VOCABULARY,
    Obj,
    Scene,
    caption,
    is_held_out,
    make_dataset,
    parse_caption,
    render,
    sample_scene,
    tokenize,
)

seeds = st.integers(min_value=0, max_value=2**32 - 1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a red circle on a blue background", Scene("blue", (Obj("circle", "red", None),))),
        ("red circle, blue background", Scene("blue", (Obj("circle", "red", None),))),
        ("a blue background with a red circle in the centre", Scene("blue", (Obj("circle", "red", "centre"),))),
        ("A red circle in the middle.", Scene(None, (Obj("circle", "red", "centre"),))),
        ("a small grey star at the top against a white background",
         Scene("white", (Obj("star", "gray", "top", "small"),))),
        ("an orange ring on the left, black background", Scene("black", (Obj("ring", "orange", "left"),))),
        ("a large yellow square on the left and a pink cross on the right on a black background",
         Scene("black", (Obj("square", "yellow", "left", "large"), Obj("cross", "pink", "right")))),
        ("green diamond at the bottom, small purple triangle at the top, gray background",
         Scene("gray", (Obj("diamond", "green", "bottom"), Obj("triangle", "purple", "top", "small")))),
        ("a purple dragon on a blue background", None),
        ("", None),
        ("a circle on a red background", None),
        ("a red circle on a background", None),
        ("a red background", None),
    ],
)
def test_parse_caption_table(text: str, expected: Scene | None) -> None:
    """parse_caption reads colour, shape, size and position words, and rejects text outside the caption language."""
    assert parse_caption(text) == expected


def test_tokenize_keeps_commas_and_drops_case() -> None:
    """tokenize yields lower-case words and commas, nothing else."""
    assert tokenize("Red circle, BLUE background.") == ["red", "circle", ",", "blue", "background"]


@settings(max_examples=200, deadline=None)
@given(seed=seeds, split=st.sampled_from(["train", "heldout"]), two=st.sampled_from([0.0, 0.5, 1.0]))
def test_caption_round_trips_through_parse(seed: int, split: str, two: float) -> None:
    """parse_caption(caption(scene)) recovers the background and each object's shape, colour, size and said position."""
    rng = np.random.default_rng(seed)
    scene = sample_scene(rng, split, two)
    text = caption(scene, rng)
    assert set(tokenize(text)) <= set(VOCABULARY)
    parsed = parse_caption(text)
    assert parsed is not None
    assert parsed.background == scene.background
    said = sorted((o.shape, o.colour, o.size, o.position) for o in parsed.objects)
    wanted = sorted((o.shape, o.colour, o.size, o.position) for o in scene.objects)
    if all(o.position is None for o in parsed.objects):  # a single object's position may go unsaid
        assert len(scene.objects) == 1
        wanted = [(s, c, z, None) for s, c, z, _ in wanted]
    assert said == wanted


@settings(max_examples=100, deadline=None)
@given(seed=seeds, split=st.sampled_from(["train", "heldout"]), two=st.sampled_from([0.0, 0.5, 1.0]))
def test_sampled_scenes_are_valid_and_in_their_split(seed: int, split: str, two: float) -> None:
    """A sampled scene uses known attributes, never an object in the background colour, and belongs to its split."""
    scene = sample_scene(np.random.default_rng(seed), split, two)
    assert is_held_out(scene) == (split == "heldout")
    assert scene.background in COLOURS
    assert 1 <= len(scene.objects) <= 2
    for o in scene.objects:
        assert o.shape in SHAPES and o.colour in COLOURS and o.colour != scene.background
        assert o.radius is not None and RADIUS_RANGE[o.size][0] <= o.radius <= RADIUS_RANGE[o.size][1]
    if len(scene.objects) == 2:
        assert {o.position for o in scene.objects} in ({"left", "right"}, {"top", "bottom"})


@settings(max_examples=50, deadline=None)
@given(seed=seeds, size=st.sampled_from([32, 64, 96]))
def test_rendered_images_show_background_and_object(seed: int, size: int) -> None:
    """A render is (size, size, 3) uint8 with pure background corners and pixels of each object's exact colour."""
    scene = sample_scene(np.random.default_rng(seed), two_object_prob=0.5)
    image = render(scene, size)
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    for corner in (image[0, 0], image[0, -1], image[-1, 0], image[-1, -1]):
        assert tuple(corner) == PALETTE[scene.background]
    flat = image.reshape(-1, 3).astype(int)
    for o in scene.objects:
        assert (np.abs(flat - PALETTE[o.colour]).max(axis=1) <= 2).sum() >= 4


def test_edges_are_anti_aliased() -> None:
    """A circle's edge has pixels between object and background colour, not only the two."""
    image = render(Scene("black", (Obj("circle", "white", "centre"),)))
    assert len(np.unique(image[..., 0])) > 5


@pytest.mark.parametrize("shape", ["ring", "cross", "star"])
def test_thin_shapes_stay_visible_when_small(shape: str) -> None:
    """The thinnest shapes at the smallest radius still have pixels of the pure object colour at 64x64."""
    scene = Scene("white", (Obj(shape, "black", "centre", "small", radius=RADIUS_RANGE["small"][0]),))
    image = render(scene).astype(int)
    assert (image.max(axis=-1) <= PALETTE["black"][0] + 5).sum() >= 12
    if shape == "ring":
        assert tuple(image[32, 32]) == PALETTE["white"]  # the hole is open


@settings(max_examples=50, deadline=None)
@given(seed=seeds)
def test_two_objects_never_touch(seed: int) -> None:
    """In a two-object scene the line between the two halves is pure background, so the objects are separate blobs."""
    scene = sample_scene(np.random.default_rng(seed), two_object_prob=1.0)
    image = render(scene)
    between = image[:, 31:33] if scene.objects[0].position in ("left", "right") else image[31:33, :]
    assert (between == PALETTE[scene.background]).all()


def test_make_dataset_is_seeded() -> None:
    """The same seed gives the same images and captions; another seed gives others."""
    a = make_dataset(20, seed=3)
    b = make_dataset(20, seed=3)
    c = make_dataset(20, seed=4)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1] and a[2] == b[2]
    assert a[1] != c[1]
    assert a[0].shape == (20, 64, 64, 3) and len(a[1]) == len(a[2]) == 20


def test_held_out_leaves_every_colour_and_shape_in_training() -> None:
    """Each held-out pair's colour and shape still meet many other partners in training."""
    for colour, shape in HELD_OUT["colour_shape"]:
        assert colour in COLOURS and shape in SHAPES
        assert sum((colour, s) in HELD_OUT["colour_shape"] for s in SHAPES) == 1
        assert sum((c, shape) in HELD_OUT["colour_shape"] for c in COLOURS) == 1
    for shape, background in HELD_OUT["shape_background"]:
        assert shape in SHAPES and background in COLOURS


@pytest.mark.parametrize(
    ("scene", "held_out"),
    [
        (Scene("blue", (Obj("star", "red", "centre"),)), True),
        (Scene("blue", (Obj("circle", "red", "centre"),)), False),
        (Scene("black", (Obj("circle", "red", "centre"),)), True),
        (Scene("green", (Obj("circle", "red", "left"), Obj("ring", "blue", "right"))), True),
        (Scene("green", (Obj("circle", "red", "left"), Obj("ring", "yellow", "right"))), False),
    ],
)
def test_is_held_out_table(scene: Scene, held_out: bool) -> None:
    """is_held_out flags a scene when any object forms a held-out (colour, shape) or (shape, background) pair."""
    assert is_held_out(scene) == held_out


@pytest.mark.parametrize(
    "bad",
    [Scene(None, (Obj("circle", "red", "centre"),)), Scene("blue", (Obj("circle", "red", None),))],
)
def test_render_refuses_underspecified_scenes(bad: Scene) -> None:
    """render raises ValueError for a parsed scene missing a background or a position."""
    with pytest.raises(ValueError):
        render(bad)


def test_sample_scene_rejects_unknown_split() -> None:
    """An unknown split name is an error, not a silent default."""
    with pytest.raises(ValueError, match="split"):
        sample_scene(np.random.default_rng(0), split="test")
