"""The shipped embedded model: it loads like any diffusers model and draws what a prompt asks, read by the checker."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from core.canvas import Edit, plan
from core.models import BUILTIN_EMBEDDED, EMBEDDED_DIR, embedded_model, load_registry
from core.prompt import parse
from model import checker, outpaint
from model.data import COLOURS, PALETTE, parse_caption
from model.evaluate import DEFAULT_GUIDANCE, DEFAULT_STEPS
from model.vae import to_tensor
from worker import cli, editing
from worker.engine import Engine
from worker.grid import compose_grid
from worker.kinds import VARY_STRENGTH
from worker.preview import latents_to_rgb


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
    model (2): nearly every square of eight grids has corners by the strict reading (version 2, seeds 0-15: 94% of 64
    squares; version 1, its 16x16 latents rounding corners off, 64%; model/README.md, "Session 15")."""
    prompt = "a blue square on a black background"
    assert embedded_model().guidance == DEFAULT_GUIDANCE == 2.0
    assert _cornered_squares(engine, prompt, DEFAULT_GUIDANCE, range(8)) >= 0.9


def test_the_shipped_model_is_version_2_and_small(engine: Engine) -> None:
    """The default is version 2 (issue 19): its autoencoder halves 64x64 images once, to 32x32 latents, its
    inpainting UNet takes the mask and the masked image, and the folder with both stays under the issue's 25 MB."""
    assert engine.pipe.vae.config.block_out_channels == [32, 64]  # one halving: 64 -> 32
    assert engine.pipe.unet.config.sample_size == 32
    assert engine.inpainter.unet.config.in_channels == 9
    assert sum(f.stat().st_size for f in EMBEDDED_DIR.rglob("*") if f.is_file()) < 25e6


def test_the_previews_show_the_images_colours(engine: Engine) -> None:
    """A progress preview (`worker.preview`) maps each latent pixel to RGB: with the model's own map
    (`latent_rgb.json`, fitted by `model.train`) the last preview of a render is close to its grid pooled to latent
    size, and so is the preview of the images' own latents (~14 of 255 off); Stable Diffusion's map, which every
    preview used before, is off by ~78."""
    [spec] = parse("a red circle on a blue background --seed 7", load_registry(BUILTIN_EMBEDDED))
    previews: list[Image.Image] = []
    images = engine.render(spec, on_progress=lambda _done, _total, p: previews.append(p) if p else None,
                           preview_interval_s=0)
    last = np.asarray(previews[-1].convert("RGB"), dtype=np.float32)
    grid = np.asarray(compose_grid(images).convert("RGB").resize(previews[-1].size, Image.Resampling.BOX))
    assert np.abs(last - grid).mean() < 25
    x = to_tensor(np.stack([np.asarray(image.convert("RGB")) for image in images]))
    with torch.no_grad():
        z = engine.pipe.vae.encode(x).latent_dist.mode() * engine.pipe.vae.config.scaling_factor
    pooled = ((F.avg_pool2d(x, x.shape[-1] // z.shape[-1]) + 1) * 127.5).permute(0, 2, 3, 1).numpy()

    def off(fitted) -> float:
        return float(np.abs(np.stack([np.asarray(p, dtype=np.float32) for p in latents_to_rgb(z, fitted)]) - pooled)
                     .mean())

    assert off(engine.pipe.vae.latent_rgb) < 20 < 50 < off(None)


def test_the_quickstart_grid_of_a_blue_square_shows_four_squares_with_corners(monkeypatch, tmp_path) -> None:
    """`scripts/quickstart "a blue square on a black background --seed 7"` as `imagine --local` renders it (the same
    default model, grid and seed, without Redis and a worker process): each of the four tiles is a blue square on
    black with its corners, by the strict reading."""
    monkeypatch.delenv("MODEL", raising=False)  # the default model, as the quickstart's worker has it
    out = tmp_path / "grid.png"
    prompt = "a blue square on a black background"
    assert cli.main([f"{prompt} --seed 7", "--local", "--out", str(out)]) == 0
    grid = Image.open(out).convert("RGB")
    assert grid.size == (128, 128)
    tiles = [grid.crop((x, y, x + 64, y + 64)) for y in (0, 64) for x in (0, 64)]
    scores = [checker.score(checker.check(tile), parse_caption(prompt)) for tile in tiles]
    assert all(s["background"] and s["colour"] and s["strict_shape"] for s in scores), scores


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
    (model/embedded/inpaint, `model.inpaint`): on 16 held-out scenes (`model.outpaint`) the new part is the scene's
    background, with nothing drawn in these zooms' borders and in most pans' strips, and the seam once the kept
    pixels are back is smaller than the blurred start's; the model's plain UNet drew objects into most of those borders
    (model/README.md, "Filling in"). Version 2's fills are not all clean (zoom / pan, 32 scenes: 97% / 97%; 64 others:
    98% / 100%; version 1's 100%); what spoiled its first UNet's pans was a faint line along the wider canvas's far
    edge, which training on pans at those canvas shapes took away (model/README.md, "Session 15")."""
    assert engine.inpainter.unet.config.in_channels == 9
    figures = outpaint.evaluate(engine.pipe, 16, seed=0, steps=DEFAULT_STEPS, guidance=DEFAULT_GUIDANCE,
                               unet=engine.inpainter.unet)
    assert figures["zoom"]["border_clean"] == 1.0, figures["zoom"]
    assert figures["pan"]["border_clean"] >= 0.75, figures["pan"]
    for op in ("zoom", "pan"):
        assert figures[op]["border_background"] == 1.0, (op, figures[op])
        assert figures[op]["seam"] < figures[op]["seam_canvas"], (op, figures[op])
