"""`python -m model.decided`: the prompt-switch measurement of where samples decide an attribute, on the shipped
embedded model (real pipeline, real checker)."""

from __future__ import annotations

import json

import pytest

from model import decided
from model.data import parse_caption
from model.evaluate import DEFAULT_MODEL, load


@pytest.mark.parametrize("attribute", decided.ATTRIBUTES)
def test_caption_pairs_differ_in_the_attribute_alone(attribute: str) -> None:
    """Each pair of captions parses to scenes equal in everything but `attribute` of their one object."""
    first, second = decided.caption_pairs(40, attribute, seed=3)
    for a, b in zip(first, second, strict=True):
        scene_a, scene_b = parse_caption(a), parse_caption(b)
        assert scene_a and scene_b and scene_a.background == scene_b.background
        [obj_a], [obj_b] = scene_a.objects, scene_b.objects
        changed = {"shape": obj_a.shape != obj_b.shape, "colour": obj_a.colour != obj_b.colour}
        assert changed == {k: k == attribute for k in decided.ATTRIBUTES}
        assert obj_b.colour != scene_b.background


def test_a_swap_before_the_first_step_draws_the_second_caption_and_none_the_first() -> None:
    """Swapped at step 0 the images read as caption B's shapes; never swapped (k = steps), as caption A's; t falls as
    k grows, and k = steps has no t."""
    curve = decided.switch_curve(load(DEFAULT_MODEL), "shape", n=8, steps=20, switch_at=(0, 10, 20))
    assert [row["switch_step"] for row in curve] == [0, 10, 20]
    assert curve[0]["t"] > curve[1]["t"] > 0 and curve[2]["t"] == -1
    assert curve[0]["reads_B"] >= 0.75 and curve[0]["reads_A"] <= 0.25
    assert curve[2]["reads_A"] >= 0.75 and curve[2]["reads_B"] <= 0.25


def test_the_command_prints_json_and_refuses_bad_arguments(capsys, tmp_path) -> None:
    """It prints the curve as JSON; a folder that is no pipeline, or a switch step past the last, exits with 2."""
    decided.main(["--n", "2", "--steps", "4", "--switch-at", "0,4", "--attribute", "colour"])
    out = json.loads(capsys.readouterr().out)
    assert out["attribute"] == "colour" and [row["switch_step"] for row in out["curve"]] == [0, 4]
    for bad in (["--model", str(tmp_path)], ["--switch-at", "0,30"], ["--switch-at", "a,b"]):
        with pytest.raises(SystemExit) as refused:
            decided.main(bad)
        assert refused.value.code == 2
