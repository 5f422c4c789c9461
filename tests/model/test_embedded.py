"""The shipped embedded model: it loads like any diffusers model and draws what a prompt asks, read by the checker."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from core.canvas import Edit, plan
from core.models import BUILTIN_EMBEDDED, embedded_model, load_registry
from core.prompt import parse
from model import checker, outpaint
from model.data import COLOURS, PALETTE, parse_caption
from model.evaluate import DEFAULT_GUIDANCE, DEFAULT_STEPS
from worker import editing
from worker.engine import Engine
from worker.kinds import VARY_STRENGTH


@pytest.fixture(scope="module")
def engine() -> Engine:
    """The embedded model on the CPU, as a worker with MODEL unset loads it."""
    return Engine.load(embedded_model(), device="cpu")


def test_the_default_model_loads_and_renders_a_grid(engine: Engine) -> None:
    """The shipped folder loads as a diffusers pipeline and renders the four 64x64 images of a default grid."""
    [spec] = parse("a red circle on a blue background --seed 7", load_registry(BUILTIN_EMBEDDED))
    images = engine.render(spec)
    assert [image.size for image in images] == [(64, 64)] * 4
    assert len({image.tobytes() for image in images}) == 4


def test_variations_stay_close_to_their_source(engine: Engine) -> None:
    """V_k: image-to-image variations of an image are closer to it in pixels than a grid of another prompt is."""
    registry = load_registry(BUILTIN_EMBEDDED)
    [spec] = parse("a yellow star on a purple background --seed 3", registry)
    [other] = parse("a white ring on a green background --seed 11", registry)
    source = engine.render(spec, indices=(2,))[0]
    variations = engine.image_to_image(spec, source, VARY_STRENGTH["strong"])

    def as_array(image) -> np.ndarray:
        return np.asarray(image.convert("RGB"), dtype=np.float32)

    to_source = [np.abs(as_array(v) - as_array(source)).mean() for v in variations]
    to_other = [np.abs(as_array(v) - as_array(o)).mean() for v, o in zip(variations, engine.render(other), strict=True)]
    assert 0 < max(to_source) < min(to_other), (to_source, to_other)


def test_a_red_circle_on_a_blue_background(engine: Engine) -> None:
    """The grid of "a red circle on a blue background", at the worker's defaults, shows red circles on blue: the
    independent checker (model.checker) reads a blue background and one red circle in at least three of the four."""
    prompt = "a red circle on a blue background"
    [spec] = parse(f"{prompt} --seed 7", load_registry(BUILTIN_EMBEDDED))
    readings = [checker.check(image) for image in engine.render(spec)]
    scores = [checker.score(reading, parse_caption(prompt)) for reading in readings]
    right = [s["background"] and s["count"] and s["colour"] and s["shape"] for s in scores]
    assert sum(right) >= 3, readings


def _cornered_squares(engine: Engine, prompt: str, guidance: float, seeds: range) -> float:
    """Share of the grids' images of `prompt` (one square) that the strict reading calls a square with corners."""
    registry = load_registry(BUILTIN_EMBEDDED)
    cornered = []
    for seed in seeds:
        spec = dataclasses.replace(parse(f"{prompt} --seed {seed}", registry)[0], guidance_scale=guidance)
        cornered += [checker.score(checker.check(image), parse_caption(prompt))["strict_shape"]
                     for image in engine.render(spec)]
    return float(np.mean(cornered))


def test_the_default_guidance_draws_squares_with_corners(engine: Engine) -> None:
    """The issue's own prompt, "a blue square on a black background", at the worker's default guidance for this
    model (2): most of eight grids' squares have corners by the strict reading (59% of these 32; the session-12
    model at guidance 5, its default then, gave 12% of 64 such squares; model/README.md, "Session 13")."""
    prompt = "a blue square on a black background"
    assert embedded_model().guidance == DEFAULT_GUIDANCE == 2.0
    assert _cornered_squares(engine, prompt, DEFAULT_GUIDANCE, range(8)) >= 0.5


VERSION_2 = Path(__file__).parents[2] / "model" / "embedded-v2"
"""Version 2's candidate (issue 19; model/README.md, "Session 14"): not the default until it has its inpainting UNet."""


def test_version_2_draws_squares_with_corners() -> None:
    """Version 2's candidate, loaded as the worker loads the embedded model (its folder in place of the shipped one):
    its latents are 32x32 for 64x64 images, the folder is under the issue's 25 MB, and nearly every square of eight
    grids of the issue's own prompt has corners by the strict reading (session 14, seeds 0-15: 92% of 64 squares,
    against the shipped version 1's 64%)."""
    engine = Engine.load(dataclasses.replace(embedded_model(), source=str(VERSION_2)), device="cpu")
    assert engine.pipe.vae.config.block_out_channels == [32, 64]  # one halving: 64 -> 32
    assert sum(f.stat().st_size for f in VERSION_2.rglob("*") if f.is_file()) < 25e6
    assert _cornered_squares(engine, "a blue square on a black background", DEFAULT_GUIDANCE, range(8)) >= 0.9


def _edited(engine: Engine, spec, source, edit: Edit, prompt: str = ""):
    """The four images of `edit` of `source` as a worker makes them (`worker.kinds`): plan, start, inpaint, finish."""
    layout = plan(edit, source.size, multiple=16, max_pixels=64 * 64)
    start, mask = editing.start(layout, source)
    registry = load_registry(BUILTIN_EMBEDDED)
    spec = parse(f"{prompt} --seed 11", registry)[0] if prompt else spec
    spec = dataclasses.replace(spec, width=layout.canvas[0], height=layout.canvas[1])
    return layout, start, [editing.finish(layout, start, new) for new in engine.inpaint(spec, start, mask)]


@pytest.fixture(scope="module")
def circle(engine: Engine):
    """Image 1 of "a red circle in the centre on a blue background --seed 7": one red circle at the centre, read by
    the checker."""
    [spec] = parse("a red circle in the centre on a blue background --seed 7", load_registry(BUILTIN_EMBEDDED))
    image = engine.render(spec, indices=(0,))[0]
    [seen] = checker.check(image).objects
    assert (checker.check(image).background, seen.colour, seen.shape, seen.position) == ("blue", "red", "circle",
                                                                                          "centre")
    return spec, image, seen


def _blue_share(image, boxes) -> float:
    """The share of the pixels in `boxes` nearest to the palette's blue."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    palette = {name: np.array(PALETTE[name], dtype=np.float32) for name in COLOURS}
    chosen = [pixels[t:b, left:r].reshape(-1, 3) for left, t, r, b in boxes]
    region = np.concatenate(chosen)
    names = list(palette)
    nearest = np.argmin([np.linalg.norm(region - palette[n], axis=1) for n in names], axis=0)
    return float(np.mean(np.array(names)[nearest] == "blue"))


@pytest.mark.parametrize("zoom", [2.0, 1.5])
def test_zoom_out_keeps_the_circle_at_the_centre_at_its_new_size(engine: Engine, circle, zoom: float) -> None:
    """Zoom Out of the red circle: every image shows a red circle at the centre with 1/k^2 of its area (k the
    source's shrink on the 16-pixel grid), on blue, and the new border is mostly blue."""
    spec, image, seen = circle
    layout, _, images = _edited(engine, spec, image, Edit("zoom", zoom=zoom))
    shrink = (layout.paste[2] - layout.paste[0]) / image.width
    for result in images:
        reading = checker.check(result)
        centre = [o for o in reading.objects if o.position == "centre"]
        assert reading.background == "blue" and len(centre) == 1, reading
        assert (centre[0].colour, centre[0].shape) == ("red", "circle"), reading
        assert centre[0].area == pytest.approx(seen.area * shrink**2, rel=0.25), reading
        assert _blue_share(result, layout.repaint) > 0.6


def test_pan_keeps_the_object_and_extends_the_background(engine: Engine, circle) -> None:
    """Pan left: the circle stays where the kept part put it (shifted right by the new strip), the strip is blue."""
    spec, image, _ = circle
    layout, start, images = _edited(engine, spec, image, Edit("pan", direction="left"))
    expected = checker.check(start).objects[0].centroid
    for result in images:
        reading = checker.check(result)
        assert reading.background == "blue" and reading.objects[0].colour == "red", reading
        assert reading.objects[0].centroid == pytest.approx(expected, abs=0.02)
        assert _blue_share(result, layout.repaint) > 0.8


def test_vary_region_changes_the_region_and_nothing_outside(engine: Engine, circle) -> None:
    """Vary (Region) of the centre with "a green square on a blue background": green where the circle was, and
    every pixel outside the region exactly as it was."""
    spec, image, _ = circle
    layout, _, images = _edited(engine, spec, image, Edit("region", region="centre"),
                                "a green square on a blue background")
    (left, top, right, bottom), = layout.repaint
    outside = np.ones((64, 64), dtype=bool)
    outside[top:bottom, left:right] = False
    before = np.asarray(image.convert("RGB"))
    for result in images:
        after = np.asarray(result)
        assert np.array_equal(after[outside], before[outside])
        colours = {o.colour for o in checker.check(result).objects}
        assert "green" in colours and "red" not in colours, checker.check(result)


def test_zoom_out_and_pan_fill_in_with_the_shipped_inpainting_unet(engine: Engine) -> None:
    """The worker fills in the embedded model's zooms and pans with its own 9-channel inpainting UNet
    (model/embedded/inpaint, `model.inpaint`): on 8 held-out scenes (`model.outpaint`) the new part is the scene's
    background with nothing drawn in it, and the seam once the kept pixels are back is smaller than the blurred
    start's; the model's plain UNet drew objects into most of those borders (model/README.md, "Filling in")."""
    assert engine.inpainter.unet.config.in_channels == 9
    figures = outpaint.evaluate(engine.pipe, 8, seed=0, steps=DEFAULT_STEPS, guidance=DEFAULT_GUIDANCE,
                               unet=engine.inpainter.unet)
    for op in ("zoom", "pan"):
        assert figures[op]["border_background"] == figures[op]["border_clean"] == 1.0, (op, figures[op])
        assert figures[op]["seam"] < figures[op]["seam_canvas"], (op, figures[op])
