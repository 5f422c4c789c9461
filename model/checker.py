"""An independent, non-neural checker: what a shapes image shows, read back from its pixels.

It scores the embedded model's outputs against their prompts. It shares nothing with the generator in `model.data`
but the palette and the attribute names: it never draws, and reads shapes from blob geometry alone.

1. Background: the palette colour most border pixels are nearest to; its measured value is their median.
2. Objects: pixels far from that value, in 8-connected blobs (labelled here: scipy is not a dependency); tiny blobs
   are noise. A blob's colour is the median of its most saturated pixels, so soft edges do not mix in the background.
3. Each blob's mask is redrawn at the midpoint between background and object colour, then its shape is read from
   hole presence, angular harmonics about the centroid (3-, 4- and 5-fold symmetry) and solidity (area over hull).
4. Position: the mask's centroid, in the middle quarter of the image on both axes or else on the side it leans to most.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFilter

from model.data import COLOURS, PALETTE

if TYPE_CHECKING:
    from model.data import Scene

_PALETTE_RGB = np.array([PALETTE[c] for c in COLOURS], dtype=np.float32)

FOREGROUND_DISTANCE = 50.0
"""A pixel this far (euclidean RGB, 0-255) from the background belongs to an object: half the closest palette pair."""
MIN_BLOB_FRACTION = 0.004
"""Blobs covering less of the image than this are noise (16 pixels at 64x64; the smallest object covers about 50)."""
CENTRE_BOX = 0.125
"""A centroid within this fraction of the side from the middle on both axes is in the centre."""

CORNER_SIDE = 0.2
"""Side of each corner patch of a blob's bounding box, as a fraction of the box's side (`outline_features`)."""

UNCLEAR = "unclear"
"""The strict reading of a blob that does not look like the shape the checker named (`strict_shape`)."""

# The strict reading's bounds (`strict_shape`), from the shapes' geometry and set on ground truth, clean and blurred
# (`python -m model.checker`; figures below are ground truth's, blur 0.8 px and noise 8 included): a shape of 9-17
# pixels has corner patches of 2-3 pixels a side, so one soft pixel moves one corner a lot and the mean of four little.
SQUARE_FILL = 0.85
"""A square fills nearly all of its box (0.87-1)..."""
SQUARE_CORNERS = (0.55, 0.2)
"""...its corner patches are mostly full on average (medians 0.78-0.89 each), and none is empty (0.25 at least)."""
ROUND_FILL = (0.68, 0.88)
"""A disc fills pi/4 = 0.785 of its box (0.72-0.88); less is pinched, more has corners."""
ROUND_CORNERS = (0.4, 0.45)
"""A disc's or ring's corner patches are at most 0.38 full each (their mean at most this, each at most that)."""
HALF_FILL = (0.4, 0.7)
"""Triangle, diamond, cross and star fill about half their box (0.44-0.67)."""
EMPTY_CORNER = 0.2
"""An empty corner patch (a triangle's and a star's top ones, all of a diamond's and a cross's; 0.12 at most)."""
TRIANGLE_BASE = 0.45
"""A triangle's base corners are at least this full (0.5 at least); a star's lower points fill 0.33 at most."""


@dataclass(frozen=True)
class Seen:
    """One object as read from the pixels."""

    colour: str
    shape: str
    position: str
    centroid: tuple[float, float]  # (x, y) as fractions of the side, y downwards
    area: float  # fraction of the image covered
    strict: str = UNCLEAR  # `shape` when its corners and fill agree (`strict_shape`), else UNCLEAR


@dataclass(frozen=True)
class Reading:
    """The background colour and the objects, largest first."""

    background: str
    objects: tuple[Seen, ...]


def label(mask: np.ndarray, eight: bool = False) -> tuple[np.ndarray, int]:
    """Connected components of a boolean mask: (labels with 0 for background and 1..n for components, n)."""
    h, w = mask.shape
    none = h * w
    lab = np.where(mask, np.arange(h * w).reshape(h, w), none)
    offsets = [(-1, 0), (1, 0), (0, -1), (0, 1)] + ([(-1, -1), (-1, 1), (1, -1), (1, 1)] if eight else [])
    while True:
        # 1. every pixel takes the smallest label among itself and its neighbours
        pad = np.pad(lab, 1, constant_values=none)
        new = lab.copy()
        for dy, dx in offsets:
            np.minimum(new, pad[1 + dy:1 + dy + h, 1 + dx:1 + dx + w], out=new)
        new[~mask] = none
        # 2. pointer jumping: a label is a pixel index in the same component, so follow it until it is a root
        flat = new.ravel()
        fg = flat < none
        while True:
            jumped = flat.copy()
            jumped[fg] = flat[flat[fg]]
            if np.array_equal(jumped, flat):
                break
            flat = jumped
        new = flat.reshape(h, w)
        if np.array_equal(new, lab):
            break
        lab = new
    roots, dense = np.unique(lab, return_inverse=True)
    dense = dense.reshape(h, w)
    if roots[-1] == none:
        dense = np.where(lab == none, 0, dense + 1)
        return dense.astype(np.int32), len(roots) - 1
    return (dense + 1).astype(np.int32), len(roots)


def nearest_colour(rgb: np.ndarray, exclude: str | None = None) -> str:
    dist = np.linalg.norm(_PALETTE_RGB - np.asarray(rgb, dtype=np.float32), axis=-1)
    if exclude is not None:
        dist[COLOURS.index(exclude)] = np.inf
    return COLOURS[int(np.argmin(dist))]


def _hull_area(mask: np.ndarray) -> float:
    """Area of the convex hull of the mask's pixel squares (monotone chain over each row's end corners)."""
    points: list[tuple[int, int]] = []
    for y in np.flatnonzero(mask.any(axis=1)):
        xs = np.flatnonzero(mask[y])
        x0, x1 = int(xs[0]), int(xs[-1]) + 1
        points += [(x0, y), (x0, y + 1), (x1, y), (x1, y + 1)]
    points = sorted(set(points))

    def cross(o: tuple[int, int], a: tuple[int, int], b: tuple[int, int]) -> int:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    hull: list[tuple[int, int]] = []
    for sweep in (points, points[::-1]):
        start = len(hull)
        for p in sweep:
            while len(hull) >= start + 2 and cross(hull[-2], hull[-1], p) <= 0:
                hull.pop()
            hull.append(p)
        hull.pop()
    xs_, ys_ = np.array([p[0] for p in hull], float), np.array([p[1] for p in hull], float)
    return float(abs(np.dot(xs_, np.roll(ys_, 1)) - np.dot(ys_, np.roll(xs_, 1))) / 2)


def _has_hole(mask: np.ndarray) -> bool:
    """Whether the mask encloses background: a 4-connected gap that does not reach the padded border."""
    gaps, _ = label(~np.pad(mask, 1), eight=False)
    outside = gaps[0, 0]
    hole = (gaps != outside) & (gaps != 0)
    return int(hole.sum()) >= max(2, 0.03 * int(mask.sum()))


def shape_features(mask: np.ndarray) -> dict[str, float]:
    """Scale-free features of one blob's mask.

    h3, h4, h5 are angular harmonics of the mask about its centroid, sum(r^2 cos(k theta)) / sum(r^2) with theta
    clockwise from up: an area integral, so a ragged edge barely moves it. A shape with k-fold symmetry has only
    harmonics at multiples of k, and its sign says where the corners point: triangle and star have h3 or h5 near +0.5,
    square h4 near -0.3 (corners on the diagonals), diamond near +0.3, cross near +0.5, circle and ring near 0.
    """
    ys, xs = np.nonzero(mask)
    dx, dy = xs - xs.mean(), ys - ys.mean()
    r2 = dx * dx + dy * dy
    theta = np.arctan2(dx, -dy)
    total = max(float(r2.sum()), 1e-6)
    features = {f"h{k}": float((r2 * np.cos(k * theta)).sum()) / total for k in (3, 4, 5)}
    features["hole"] = float(_has_hole(mask))
    features["solidity"] = float(mask.sum()) / max(_hull_area(mask), 1.0)  # cross about 0.7, convex shapes above 0.9
    return features


def classify_shape(f: dict[str, float]) -> str:
    """A shape name from `shape_features`: a decision list whose thresholds sit between the shapes' feature ranges."""
    if f["hole"]:
        return "ring"
    if f["h3"] > max(0.2, f["h5"]):
        return "triangle"
    if f["h5"] > 0.12:
        return "star"
    if f["h4"] < -0.09:
        return "square"
    if f["h4"] > 0.1:
        # Both point along the axes; the cross is also concave. Ideal solidity - h4: cross 0.23, diamond 0.63.
        return "cross" if f["solidity"] - f["h4"] < 0.5 else "diamond"
    return "circle"


def outline_features(crop: np.ndarray) -> dict[str, float]:
    """What a person looks at to name a small shape, from its mask cropped to its bounding box: how much of the box
    it fills (square 1, circle pi/4, triangle and diamond 1/2), how full each corner patch of the box is (a square's
    four are full, a circle's and a diamond's empty, a triangle's bottom two full), and the box's aspect."""
    h, w = crop.shape
    ky, kx = max(1, round(CORNER_SIDE * h)), max(1, round(CORNER_SIDE * w))
    corners = {"top_left": crop[:ky, :kx], "top_right": crop[:ky, -kx:], "bottom_left": crop[-ky:, :kx],
               "bottom_right": crop[-ky:, -kx:]}
    return {"fill": float(crop.mean()), "aspect": w / h, **{k: float(v.mean()) for k, v in corners.items()}}


def strict_shape(crop: np.ndarray, named: str) -> str:
    """`named` (the checker's reading of this blob) when its outline has that shape's corners and fill as a person
    would see them, else UNCLEAR: a square with rounded corners, a pinched blob read as a circle, a triangle without
    its base corners."""
    f = outline_features(crop)
    every = (f["top_left"], f["top_right"], f["bottom_left"], f["bottom_right"])
    mean, top, base = sum(every) / 4, max(every[:2]), every[2:]
    square_box, half = 0.75 <= f["aspect"] <= 1.33, HALF_FILL[0] <= f["fill"] <= HALF_FILL[1]
    round_shape = square_box and mean <= ROUND_CORNERS[0] and max(every) <= ROUND_CORNERS[1]
    rules = {
        "square": (square_box and f["fill"] >= SQUARE_FILL and mean >= SQUARE_CORNERS[0]
                   and min(every) >= SQUARE_CORNERS[1]),
        "circle": round_shape and ROUND_FILL[0] <= f["fill"] <= ROUND_FILL[1],
        "ring": round_shape and f["fill"] <= ROUND_FILL[1],  # the hole was found by the checker
        "triangle": half and top <= EMPTY_CORNER and min(base) >= TRIANGLE_BASE,
        "diamond": half and square_box and max(every) <= EMPTY_CORNER,
        "cross": half and square_box and max(every) <= EMPTY_CORNER,
        "star": half and top <= EMPTY_CORNER and max(base) < TRIANGLE_BASE,
    }
    return named if rules.get(named, False) else UNCLEAR


def _position(cx: float, cy: float) -> str:
    dx, dy = cx - 0.5, cy - 0.5
    if max(abs(dx), abs(dy)) < CENTRE_BOX:
        return "centre"
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


def _dilate(mask: np.ndarray) -> np.ndarray:
    pad = np.pad(mask, 1)
    h, w = mask.shape
    out = mask.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            out |= pad[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
    return out


def _as_array(image: np.ndarray | Image.Image) -> np.ndarray:
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    return image.astype(np.float32)


def check(image: np.ndarray | Image.Image) -> Reading:
    """Read the background colour and each object's colour, shape and position from an RGB image."""
    img = _as_array(image)
    h, w, _ = img.shape
    # 1. background from the border
    b = max(1, min(h, w) // 32)
    border = np.concatenate([img[:b].reshape(-1, 3), img[-b:].reshape(-1, 3), img[:, :b].reshape(-1, 3),
                             img[:, -b:].reshape(-1, 3)])
    names = np.argmin(np.linalg.norm(border[:, None, :] - _PALETTE_RGB[None], axis=-1), axis=1)
    bg_index = int(np.bincount(names, minlength=len(COLOURS)).argmax())
    background = COLOURS[bg_index]
    bg_rgb = np.median(border[names == bg_index], axis=0)
    # 2. object blobs
    dist = np.linalg.norm(img - bg_rgb, axis=-1)
    blobs, n = label(dist > FOREGROUND_DISTANCE, eight=True)
    seen = []
    for k in range(1, n + 1):
        blob = blobs == k
        if blob.sum() < MIN_BLOB_FRACTION * h * w:
            continue
        d = dist[blob]
        core = img[blob][d >= 0.8 * np.percentile(d, 95)]
        obj_rgb = np.median(core, axis=0)
        colour = nearest_colour(obj_rgb, exclude=background)
        # 3. the mask at the midpoint between background and object colour, within reach of the blob
        axis = obj_rgb - bg_rgb
        t = (img - bg_rgb) @ axis / max(float(axis @ axis), 1e-6)
        parts, m = label((t > 0.5) & _dilate(blob), eight=True)
        if m == 0:
            continue
        mask = parts == (np.bincount(parts.ravel())[1:].argmax() + 1)
        ys, xs = np.nonzero(mask)
        crop = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]  # keeps the hole search and hull small
        # 4. position from the centroid
        cx, cy = (xs.mean() + 0.5) / w, (ys.mean() + 0.5) / h
        shape = classify_shape(shape_features(crop))
        seen.append(Seen(colour=colour, shape=shape, position=_position(cx, cy), centroid=(float(cx), float(cy)),
                         area=float(mask.sum()) / (h * w), strict=strict_shape(crop, shape)))
    seen.sort(key=lambda s: -s.area)
    return Reading(background=background, objects=tuple(seen))


def score(reading: Reading, scene: Scene) -> dict[str, bool]:
    """Which attributes of a `model.data.Scene` (e.g. a parsed prompt) the reading agrees with.

    Objects are paired with the assignment that agrees on most attributes; an attribute the scene leaves as None is
    not checked. Keys: background, count, colour, shape, position, strict_shape (the last four true only if every
    object's is; strict_shape: the shape also has the corners and fill a person would name it by, `strict_shape`).
    """
    wanted = list(scene.objects)
    read = list(reading.objects)
    best: list[tuple[bool, bool, bool, bool]] = [(False, False, False, False)] * len(wanted)
    for chosen in itertools.permutations(range(len(read)), min(len(wanted), len(read))):
        agree = [
            (read[j].colour == o.colour, read[j].shape == o.shape, o.position is None or read[j].position == o.position,
             read[j].strict == o.shape)
            for o, j in zip(wanted, chosen, strict=False)
        ]
        agree += [(False, False, False, False)] * (len(wanted) - len(agree))
        if sum(sum(a[:3]) for a in agree) > sum(sum(a[:3]) for a in best):  # paired on the checker's reading
            best = agree
    background = scene.background
    return {
        "background": background is None or reading.background == background,
        "count": len(read) == len(wanted),
        "colour": all(a[0] for a in best),
        "shape": all(a[1] for a in best),
        "position": all(a[2] for a in best),
        "strict_shape": all(a[3] for a in best),
    }


def corrupt(image: np.ndarray, rng: np.random.Generator, blur: float = 0.8, noise: float = 8.0) -> np.ndarray:
    """A ground-truth image made to look like a model output: Gaussian blur (radius, pixels) and noise (0-255 sigma)."""
    soft = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(blur)), dtype=np.float32)
    return np.clip(soft + rng.normal(0.0, noise, soft.shape), 0, 255).astype(np.uint8)


def validate(n: int = 500, seed: int = 0, blur: float = 0.0, noise: float = 0.0, size: int = 64) -> dict[str, float]:
    """Checker accuracy on n generated scenes (half single-object, half two-object), optionally blurred and noised.

    Returns accuracies keyed "single/<attribute>" and "two/<attribute>" (attributes as in `score`), plus the counts.
    """
    from model.data import make_dataset  # ground truth only; the reading above never touches the generator

    images, _, scenes = make_dataset(n, seed, size=size, two_object_prob=0.5)
    rng = np.random.default_rng(seed + 1)
    totals: dict[str, list[bool]] = {}
    for image, scene in zip(images, scenes, strict=True):
        if blur or noise:
            image = corrupt(image, rng, blur, noise)
        kind = "single" if len(scene.objects) == 1 else "two"
        for key, ok in score(check(image), scene).items():
            totals.setdefault(f"{kind}/{key}", []).append(ok)
    result = {key: float(np.mean(oks)) for key, oks in sorted(totals.items())}
    result["n_single"] = float(len(totals.get("single/count", [])))
    result["n_two"] = float(len(totals.get("two/count", [])))
    return result



if __name__ == "__main__":  # python -m model.checker: accuracy figures as JSON
    import json

    print(json.dumps({"clean": validate(2000, seed=0), "blur0.8_noise8": validate(2000, seed=0, blur=0.8, noise=8.0),
                      "blur1.2_noise15": validate(2000, seed=0, blur=1.2, noise=15.0)}, indent=1))
