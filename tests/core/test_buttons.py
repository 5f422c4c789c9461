"""Button custom_ids carry the action, index and job id, within Discord's limits."""

from __future__ import annotations

import pytest

from core import buttons

JOB = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(("action", "index"), [("u", 1), ("u", 4), ("v", 2), ("reroll", 0), ("strong", 1),
                                               ("subtle", 1), ("up2x", 1)])
def test_custom_id_round_trips(action: str, index: int) -> None:
    """parse(custom_id(...)) gives back the action, index and job id, and stays within 100 characters."""
    value = buttons.custom_id(action, JOB, index)
    assert len(value) <= 100
    assert buttons.parse(value) == buttons.ButtonRef(action, index, JOB)


@pytest.mark.parametrize("value", ["", "imagine:u:5:" + JOB, "imagine:x:1:" + JOB, "imagine:u:1:" + JOB[:-1],
                                   "other:u:1:" + JOB, "imagine:u:1:" + JOB + "0"])
def test_foreign_or_malformed_ids_are_not_ours(value: str) -> None:
    """Anything that is not exactly our template parses to None (a forged click is ignored, not crashed on)."""
    assert buttons.parse(value) is None


def test_bad_arguments_are_refused() -> None:
    """An unknown action, an index out of range or a job id that is not 32 hex digits raise ValueError."""
    for args in [("zoom", JOB, 1), ("u", JOB, 5), ("u", "not-hex", 1)]:
        with pytest.raises(ValueError):
            buttons.custom_id(*args)


def test_grid_has_nine_buttons_in_two_rows() -> None:
    """Under a grid: U1-U4 and re-roll, then V1-V4 (Midjourney's layout), all with unique custom_ids."""
    rows = buttons.grid_components(JOB)
    ids = [b["custom_id"] for row in rows for b in row["components"]]
    labels = [b.get("label", "") for row in rows for b in row["components"]]
    assert len(rows) == 2 and len(ids) == 9 == len(set(ids))
    assert labels == ["U1", "U2", "U3", "U4", "", "V1", "V2", "V3", "V4"]


def test_single_image_buttons() -> None:
    """Under an upscaled image, in Midjourney's rows: Vary (Strong), (Subtle), (Region), Upscale (2x), re-roll; Zoom
    Out 2x, Zoom Out 1.5x, Custom Zoom and Make Square; the four pans, arrows without labels. A square image has no
    Make Square."""
    rows = buttons.single_components(JOB)
    actions = [[buttons.parse(b["custom_id"]).action for b in row["components"]] for row in rows]
    assert actions == [["strong", "subtle", "region", "up2x", "reroll"], ["zoom2", "zoom15", "zoomc", "square"],
                       ["panl", "panr", "panu", "pand"]]
    assert [b.get("label") for b in rows[1]["components"]] == ["Zoom Out 2x", "Zoom Out 1.5x", "Custom Zoom",
                                                               "Make Square"]
    assert [(b.get("label"), b["emoji"]["name"]) for b in rows[2]["components"]] == [
        (None, "⬅️"), (None, "➡️"), (None, "⬆️"), (None, "⬇️")]
    square = buttons.single_components(JOB, square=True)
    assert [buttons.parse(b["custom_id"]).action for b in square[1]["components"]] == ["zoom2", "zoom15", "zoomc"]
