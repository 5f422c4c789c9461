"""Synthetic captioned shapes: the data set the embedded text-to-image model trains on.

A scene is a plain background with one object, or two objects side by side (left/right) or stacked (top/bottom).
Everything is seeded and pure numpy/Pillow: `make_dataset(n, seed)` returns the same images and captions on every
machine. Shapes are drawn at `SUPERSAMPLE` times the size and box-filtered down, so edges are anti-aliased.

A fixed set of attribute combinations (`HELD_OUT`) never appears in the "train" split; the "heldout" split holds only
scenes that contain at least one of them, to measure compositional generalisation.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

PALETTE: dict[str, tuple[int, int, int]] = {
    # sRGB values, chosen so that every pair is at least 100 apart (euclidean, 0-255 scale): the closest pairs are
    # orange/yellow (102), red/orange (105) and blue/purple (112). Brown is left out: it sits too near red and gray.
    "red": (215, 30, 35),
    "orange": (245, 130, 20),
    "yellow": (245, 230, 40),
    "green": (40, 170, 60),
    "blue": (30, 70, 230),
    "purple": (130, 30, 200),
    "pink": (240, 120, 200),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring", "cross", "diamond")
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "centre")
SIZES: tuple[str, ...] = ("small", "medium", "large")
"""Size classes; "medium" is never said in a caption, so a caption without a size word means medium."""

RADIUS_RANGE: dict[str, tuple[float, float]] = {
    # Radius of the shape's circumscribing circle, as a fraction of the image side.
    "small": (0.11, 0.13),
    "medium": (0.145, 0.17),
    "large": (0.185, 0.21),
}
ANCHOR: dict[str, tuple[float, float]] = {
    # (x, y) of the object's centre, as fractions of the side; y grows downwards.
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
    "centre": (0.5, 0.5),
}
JITTER_MAX = 0.02
"""Largest offset of an object from its anchor, as a fraction of the side (0 along the axis between two objects)."""
SUPERSAMPLE = 4
"""Shapes are drawn at this many times the output size, then box-filtered down."""

HELD_OUT: dict[str, frozenset[tuple[str, str]]] = {
    # (colour, shape) pairs no training object has.
    "colour_shape": frozenset(
        {("red", "star"), ("blue", "ring"), ("green", "triangle"), ("yellow", "cross"), ("purple", "square"),
         ("pink", "circle"), ("orange", "diamond")}
    ),
    # (shape, background colour) pairs no training scene has.
    "shape_background": frozenset({("circle", "black"), ("square", "yellow"), ("star", "blue"), ("ring", "white")}),
}

_POSITION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("on the left",),
    "right": ("on the right",),
    "top": ("at the top",),
    "bottom": ("at the bottom",),
    "centre": ("in the centre", "in the center", "in the middle"),
}
_POSITION_WORDS: dict[str, str] = {"left": "left", "right": "right", "top": "top", "bottom": "bottom",
                                   "centre": "centre", "center": "centre", "middle": "centre"}
_COLOUR_WORDS: dict[str, str] = {**{c: c for c in COLOURS}, "grey": "gray"}
_SINGLE_TEMPLATES = ("{a1} on {abg} background", "{o1}, {bg} background", "{abg} background with {a1}",
                     "{a1} against {abg} background")
_PAIR_TEMPLATES = ("{a1} and {a2} on {abg} background", "{o1}, {o2}, {bg} background",
                   "{abg} background with {a1} and {a2}", "{a1} and {a2} against {abg} background")

VOCABULARY: tuple[str, ...] = tuple(sorted(
    {",", "a", "an", "and", "with", "on", "against", "background", "small", "large", "the", "at", "in"}
    | set(_COLOUR_WORDS) | set(SHAPES) | set(_POSITION_WORDS)
))
"""Every token a caption uses; `tokenize` splits a caption into these."""


@dataclass(frozen=True)
class Obj:
    """One object; in a scene from `parse_caption`, position is None where the text does not say it."""

    shape: str
    colour: str
    position: str | None
    size: str = "medium"
    radius: float | None = None  # circumscribing radius, fraction of the side; None: the middle of the size's range
    offset: tuple[float, float] = (0.0, 0.0)  # (dx, dy) from the position's anchor, fraction of the side


@dataclass(frozen=True)
class Scene:
    """A background colour (None only in a parsed caption that names none) and one or two objects."""

    background: str | None
    objects: tuple[Obj, ...]


def tokenize(text: str) -> list[str]:
    """Lower-cased words and commas of a caption."""
    return re.findall(r"[a-z]+|,", text.lower())


def is_held_out(scene: Scene) -> bool:
    """Whether the scene contains a combination from `HELD_OUT`."""
    return any(
        (o.colour, o.shape) in HELD_OUT["colour_shape"] or (o.shape, scene.background) in HELD_OUT["shape_background"]
        for o in scene.objects
    )


def _sample_obj(rng: np.random.Generator, position: str, jitter_axes: tuple[bool, bool], max_size: int) -> Obj:
    size = SIZES[int(rng.integers(max_size))]
    lo, hi = RADIUS_RANGE[size]
    dx, dy = (float(rng.uniform(-JITTER_MAX, JITTER_MAX)) if free else 0.0 for free in jitter_axes)
    return Obj(shape=SHAPES[int(rng.integers(len(SHAPES)))], colour=COLOURS[int(rng.integers(len(COLOURS)))],
               position=position, size=size, radius=float(rng.uniform(lo, hi)), offset=(dx, dy))


def _sample_any(rng: np.random.Generator, two_object_prob: float) -> Scene:
    if rng.random() < two_object_prob:
        pair = ("left", "right") if rng.random() < 0.5 else ("top", "bottom")
        # No jitter along the axis between the two objects, so they never touch.
        free = (False, True) if pair[0] == "left" else (True, False)
        objects = tuple(_sample_obj(rng, p, free, len(SIZES)) for p in pair)
    else:
        objects = (_sample_obj(rng, POSITIONS[int(rng.integers(len(POSITIONS)))], (True, True), len(SIZES)),)
    used = {o.colour for o in objects}
    backgrounds = [c for c in COLOURS if c not in used]
    return Scene(background=backgrounds[int(rng.integers(len(backgrounds)))], objects=objects)


def sample_scene(rng: np.random.Generator, split: str = "train", two_object_prob: float = 0.3) -> Scene:
    """A random scene of the split: "train" never contains a `HELD_OUT` combination, "heldout" always does."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
    want_held_out = split == "heldout"
    while True:  # rejection sampling: about one scene in seven is held out, so either split needs few tries
        scene = _sample_any(rng, two_object_prob)
        if is_held_out(scene) == want_held_out:
            return scene


def _turn(points: list[tuple[float, float]], quarter_turns: int) -> list[tuple[float, float]]:
    for _ in range(quarter_turns):
        points = [(y, -x) for x, y in points]
    return points


def _outline(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Polygon vertices of a polygonal shape centred on (cx, cy) with circumscribing radius r (pixels)."""
    def polar(radius: float, deg: float) -> tuple[float, float]:
        # 0 degrees points up; y grows downwards.
        return (cx + radius * math.sin(math.radians(deg)), cy - radius * math.cos(math.radians(deg)))

    if shape == "square":
        return [polar(r * 0.9, a) for a in (45, 135, 225, 315)]
    if shape == "diamond":
        return [polar(r, a) for a in (0, 90, 180, 270)]
    if shape == "triangle":
        return [polar(r, a) for a in (0, 120, 240)]
    if shape == "star":
        return [polar(r if i % 2 == 0 else r * 0.5, i * 36) for i in range(10)]
    if shape == "cross":
        s, t = r * 0.8, r * 0.8 / 3  # half-span and half-width of the arms
        quarter = [(t, s), (t, t), (s, t)]  # one arm's corners; the other three arms are this turned by 90 degrees
        return [(cx + x, cy + y) for k in range(4) for x, y in _turn(quarter, k)]
    raise ValueError(f"unknown shape {shape!r}")


def render(scene: Scene, size: int = 64) -> np.ndarray:
    """The scene as an (size, size, 3) uint8 RGB array."""
    if scene.background is None:
        raise ValueError("cannot render a scene without a background colour")
    big = size * SUPERSAMPLE
    img = Image.new("RGB", (big, big), PALETTE[scene.background])
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        if o.position is None:
            raise ValueError(f"cannot render an object without a position: {o}")
        ax, ay = ANCHOR[o.position]
        radius = o.radius if o.radius is not None else sum(RADIUS_RANGE[o.size]) / 2
        cx, cy, r = (ax + o.offset[0]) * big, (ay + o.offset[1]) * big, radius * big
        fill = PALETTE[o.colour]
        if o.shape in ("circle", "ring"):
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
            if o.shape == "ring":
                h = r * 0.5  # the hole; the band is half the radius wide, so it stays visible when small
                draw.ellipse((cx - h, cy - h, cx + h, cy + h), fill=PALETTE[scene.background])
        else:
            draw.polygon(_outline(o.shape, cx, cy, r), fill=fill)
    return np.asarray(img.resize((size, size), Image.Resampling.BOX))


def _choose(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _noun_phrase(o: Obj, rng: np.random.Generator, say_position: bool) -> str:
    words = [w for w in ("" if o.size == "medium" else o.size, "grey" if o.colour == "gray" and rng.random() < 0.3
                         else o.colour, o.shape) if w]
    if say_position and o.position is not None:
        words.append(_choose(rng, _POSITION_PHRASES[o.position]))
    return " ".join(words)


def _with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """A caption in one of a few phrasings; a single object's position is left unsaid one time in four."""
    say_position = len(scene.objects) > 1 or rng.random() >= 0.25
    objects = list(scene.objects)
    if len(objects) > 1 and rng.random() < 0.5:
        objects.reverse()
    phrases = [_noun_phrase(o, rng, say_position) for o in objects]
    bg = "grey" if scene.background == "gray" and rng.random() < 0.3 else str(scene.background)
    fields = {"bg": bg, "abg": _with_article(bg)}
    for i, phrase in enumerate(phrases, start=1):
        fields[f"o{i}"], fields[f"a{i}"] = phrase, _with_article(phrase)
    return _choose(rng, _PAIR_TEMPLATES if len(objects) > 1 else _SINGLE_TEMPLATES).format(**fields)


def parse_caption(text: str) -> Scene | None:
    """The scene a caption describes, or None if the text is not in the captions' language (see `VOCABULARY`)."""
    tokens = tokenize(text)
    if not tokens or any(t not in VOCABULARY for t in tokens):
        return None
    background = None
    objects = []
    for i, token in enumerate(tokens):
        if token == "background":
            if i == 0 or tokens[i - 1] not in _COLOUR_WORDS or background is not None:
                return None
            background = _COLOUR_WORDS[tokens[i - 1]]
        elif token in SHAPES:
            if i == 0 or tokens[i - 1] not in _COLOUR_WORDS:
                return None
            size = tokens[i - 2] if i >= 2 and tokens[i - 2] in ("small", "large") else "medium"
            after = tokens[i + 1:i + 4]
            position = None
            if len(after) == 3 and after[:2] in (["on", "the"], ["at", "the"], ["in", "the"]):
                position = _POSITION_WORDS.get(after[2])
            objects.append(Obj(shape=token, colour=_COLOUR_WORDS[tokens[i - 1]], position=position, size=size))
    if not objects:
        return None
    return Scene(background=background, objects=tuple(objects))


def make_dataset(
    n: int, seed: int, size: int = 64, split: str = "train", two_object_prob: float = 0.3
) -> tuple[np.ndarray, list[str], list[Scene]]:
    """n seeded samples of a split: images (n, size, size, 3) uint8, their captions, and their scenes."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    captions, scenes = [], []
    for i in range(n):
        scene = sample_scene(rng, split, two_object_prob)
        images[i] = render(scene, size)
        captions.append(caption(scene, rng))
        scenes.append(scene)
    return images, captions, scenes
