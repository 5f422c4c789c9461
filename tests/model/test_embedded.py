"""The shipped embedded model: it loads like any diffusers model and draws what a prompt asks, read by the checker."""

from __future__ import annotations

import numpy as np
import pytest

from core.models import BUILTIN_EMBEDDED, embedded_model, load_registry
from core.prompt import parse
from model import checker
from model.data import parse_caption
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
