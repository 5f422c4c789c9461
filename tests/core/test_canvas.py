"""Where Zoom Out, Make Square, Pan and Vary (Region) put the source image and what they repaint (core.canvas)."""

from __future__ import annotations

import pytest

from core.canvas import REGIONS, Edit, Layout, custom_zoom, plan
from core.errors import EditRefused, MalformedPayload, PromptError
from core.models import ModelRegistry, tiny_model
from core.payload import JobPayload
from core.prompt import parse

EMBEDDED = {"multiple": 16, "max_pixels": 64 * 64}
SD15 = {"multiple": 8, "max_pixels": 512 * 512}

CASES = [
    # (edit, source size, model, canvas, paste box, scaled)
    (Edit("zoom", zoom=2.0), (64, 64), EMBEDDED, (64, 64), (16, 16, 48, 48), False),
    (Edit("zoom", zoom=1.5), (64, 64), EMBEDDED, (64, 64), (8, 8, 56, 56), False),
    (Edit("zoom", zoom=2.0), (512, 512), SD15, (512, 512), (128, 128, 384, 384), False),
    (Edit("zoom", zoom=1.5), (512, 512), SD15, (512, 512), (84, 84, 428, 428), False),
    (Edit("zoom", zoom=1.0), (512, 512), SD15, (512, 512), (0, 0, 512, 512), False),
    (Edit("zoom", zoom=2.0), (1024, 1024), SD15, (512, 512), (128, 128, 384, 384), True),  # an Upscale (2x)'s
    (Edit("zoom", zoom=2.0), (640, 384), SD15, (640, 384), (160, 96, 480, 288), False),  # keeps the aspect
    (Edit("square"), (640, 384), SD15, (512, 512), (0, 104, 512, 408), True),
    (Edit("square"), (384, 640), SD15, (512, 512), (104, 0, 408, 512), True),
    (Edit("square"), (256, 128), SD15, (256, 256), (0, 64, 256, 192), False),
    (Edit("pan", direction="left"), (256, 256), SD15, (384, 256), (128, 0, 384, 256), False),
    (Edit("pan", direction="right"), (256, 256), SD15, (384, 256), (0, 0, 256, 256), False),
    (Edit("pan", direction="up"), (256, 256), SD15, (256, 384), (0, 128, 256, 384), False),
    (Edit("pan", direction="down"), (256, 256), SD15, (256, 384), (0, 0, 256, 256), False),
    (Edit("pan", direction="right"), (512, 512), SD15, (624, 416), (0, 0, 416, 416), True),  # at the budget
    (Edit("pan", direction="left"), (64, 64), EMBEDDED, (64, 48), (16, 0, 64, 48), True),
    (Edit("region", region="centre"), (512, 512), SD15, (512, 512), (0, 0, 512, 512), False),
]


@pytest.mark.parametrize(("edit", "source", "model", "canvas", "paste", "scaled"), CASES)
def test_layouts(edit: Edit, source, model, canvas, paste, scaled) -> None:
    """Each edit's canvas (within the budget, sides multiples of the model's), the source's box on it, and whether
    the source had to be scaled down to fit."""
    layout = plan(edit, source, **model)
    assert (layout.canvas, layout.paste, layout.scaled) == (canvas, paste, scaled)
    assert layout.canvas[0] % model["multiple"] == 0 and layout.canvas[1] % model["multiple"] == 0
    assert layout.canvas[0] * layout.canvas[1] <= model["max_pixels"]


@pytest.mark.parametrize(("edit", "source", "model", "canvas", "paste", "scaled"), CASES[:-1])
def test_outpaints_repaint_exactly_the_pixels_around_the_source(edit, source, model, canvas, paste, scaled) -> None:
    """The repainted strips and the source's box tile the canvas: no pixel twice, none left out."""
    layout = plan(edit, source, **model)
    assert layout.outpaint
    boxes = [*layout.repaint, layout.paste]
    area = sum((r - left) * (b - t) for left, t, r, b in boxes)
    assert area == canvas[0] * canvas[1]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1]), (a, b)


@pytest.mark.parametrize(("region", "box"), [
    ("r1c1", (0, 0, 168, 168)), ("r2c2", (168, 168, 344, 344)), ("r3c3", (344, 344, 512, 512)),
    ("left", (0, 0, 256, 512)), ("bottom", (0, 256, 512, 512)), ("centre", (128, 128, 384, 384)),
])
def test_regions_on_the_models_grid(region: str, box) -> None:
    """Vary (Region): the canvas is the image itself and only the named part is repainted, its edges on the
    model's grid of `multiple` pixels."""
    layout = plan(Edit("region", region=region), (512, 512), **SD15)
    assert layout == Layout((512, 512), (0, 0, 512, 512), (box,)) and not layout.outpaint


def test_every_region_has_a_label_and_a_box_inside_the_image() -> None:
    """Fourteen regions: nine cells, four halves, the centre."""
    assert len(REGIONS) == 14
    for label, (left, top, right, bottom) in REGIONS.values():
        assert label and 0 <= left < right <= 1 and 0 <= top < bottom <= 1


@pytest.mark.parametrize(("edit", "source", "says"), [
    (Edit("pan", direction="left"), (1024, 256), "longer than 4:1"),
    (Edit("pan", direction="up"), (256, 768), "longer than 4:1"),
    (Edit("square"), (512, 512), "already square"),
])
def test_edits_the_model_cannot_make_are_refused_in_words(edit: Edit, source, says: str) -> None:
    """A pan past 4:1 or a square of a square: EditRefused, with a message a member understands."""
    with pytest.raises(EditRefused, match=says):
        plan(edit, source, **SD15)


@pytest.mark.parametrize("edit", [
    Edit("zoom", zoom=2.0), Edit("zoom", zoom=1.25), Edit("square"), Edit("pan", direction="down"),
    Edit("region", region="r2c3"),
])
def test_an_edit_travels_in_the_payload_source(edit: Edit) -> None:
    """`to_source` -> payload -> `from_source` gives the same edit back."""
    payload = {"job_id": "a" * 32, "spec": _spec(), "owner": "discord:1", "kind": "edit",
               "source": {"job_id": "b" * 32, "index": 1, **edit.to_source()}}
    assert JobPayload.from_json(payload).source.edit == edit


@pytest.mark.parametrize(("source", "says"), [
    ({"op": "zoom", "zoom": 2.5}, "zoom must be a number from 1.0 to 2.0"),
    ({"op": "zoom", "zoom": True}, "zoom must be a number"),
    ({"op": "zoom"}, "zoom must be a number"),
    ({"op": "pan", "direction": "north"}, "direction must be one of"),
    ({"op": "region", "region": "r4c4"}, "region must name one"),
    ({"op": "rotate"}, "op must be one of"),
    ({"op": "zoom", "zoom": 2, "strength": "strong"}, "unknown field"),
])
def test_malformed_edit_sources_are_refused_at_the_door(source: dict, says: str) -> None:
    """An edit payload written by anyone but this bot: MalformedPayload naming the field."""
    payload = {"job_id": "a" * 32, "spec": _spec(), "owner": "discord:1", "kind": "edit",
               "source": {"job_id": "b" * 32, "index": 1, **source}}
    with pytest.raises(MalformedPayload, match=says):
        JobPayload.from_json(payload)


def _spec() -> dict:
    (spec,) = parse("a red cat --seed 7", ModelRegistry((tiny_model(),)))
    return spec.to_dict()


@pytest.mark.parametrize(("canvas", "zoom", "paste"), [
    ((640, 384), 2.0, (224, 96, 416, 288)),  # 2x inside a wider canvas: the source is sized by the short side
    ((384, 640), 1.0, (0, 128, 384, 512)),
    ((512, 512), 2.0, (128, 128, 384, 384)),  # the canvas the plain zoom would choose: the same layout
])
def test_custom_zoom_with_its_own_canvas(canvas, zoom: float, paste) -> None:
    """Custom Zoom with --ar: the canvas is the one given; the source keeps its aspect, fits 1/zoom of it, centred."""
    layout = plan(Edit("zoom", zoom=zoom), (512, 512), **SD15, canvas=canvas)
    assert (layout.canvas, layout.paste) == (canvas, paste)


@pytest.mark.parametrize(("text", "rest", "zoom"), [
    ("a cat --zoom 1.5", "a cat", 1.5),
    ("a cat --zoom 2 --ar 16:9", "a cat --ar 16:9", 2.0),
    ("a cat —zoom 1", "a cat", 1.0),
    ("a cat", "a cat", 2.0),
    ("a cat --ZOOM 1.25 --no dogs", "a cat --no dogs", 1.25),
])
def test_custom_zoom_reads_its_zoom_from_the_prompt(text: str, rest: str, zoom: float) -> None:
    """Custom Zoom's prompt: `--zoom` taken out (2 when absent), the rest parsed like any prompt."""
    assert custom_zoom(text) == (rest, zoom)


@pytest.mark.parametrize(("text", "says"), [
    ("a cat --zoom 3", "from 1 to 2, not '3'"),
    ("a cat --zoom 0.5", "from 1 to 2"),
    ("a cat --zoom", "not 'nothing'"),
    ("a cat --zoom big", "not 'big'"),
    ("a cat --zoom nan", "not 'nan'"),
    ("a --zoom 1 cat --zoom 2", "given twice"),
])
def test_a_custom_zoom_out_of_range_is_a_prompt_error(text: str, says: str) -> None:
    """--zoom outside 1-2, missing its number or given twice: PromptError naming it."""
    with pytest.raises(PromptError, match=says):
        custom_zoom(text)
