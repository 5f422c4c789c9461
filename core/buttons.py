"""The buttons under a result, shared by the worker (which posts them as raw components) and the bot (which
answers their clicks with `discord.ui.DynamicItem`s matching `TEMPLATE`).

Each button carries its whole state in its `custom_id`: the action, the image index and the job id. Nothing is kept
in process memory, so buttons work after any restart and whatever the age of the message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from core.canvas import Edit
from core.models import ModelInfo

EDIT_ACTIONS: dict[str, Edit] = {
    "zoom2": Edit("zoom", zoom=2.0),
    "zoom15": Edit("zoom", zoom=1.5),
    "square": Edit("square"),
    "panl": Edit("pan", direction="left"),
    "panr": Edit("pan", direction="right"),
    "panu": Edit("pan", direction="up"),
    "pand": Edit("pan", direction="down"),
}
"""The editing buttons under an upscaled image and the edit each asks for (`core.canvas`)."""

DESCRIBE_ACTIONS = ("prompt", "imagineall", "redescribe")
"""Under a `/describe`: imagine prompt k (1-4), imagine all four, describe again for four new prompts."""

ACTIONS = ("u", "v", "reroll", "strong", "subtle", "up2x", "region", "zoomc", *EDIT_ACTIONS, *DESCRIBE_ACTIONS)
"""u: image k at full size; v: variations of image k; reroll: same prompt, new seed; strong/subtle: variations of an
upscaled image; up2x: twice the resolution; region: Vary (Region), which first asks which region (`REGION_TEMPLATE`);
zoomc: Custom Zoom, which asks for the prompt with its `--zoom`; the EDIT_ACTIONS: Zoom Out, Make Square, Pan."""

ASK_ACTIONS = frozenset({"region", "zoomc"})
"""The buttons that always open their prompt before their job starts: Vary (Region) and Custom Zoom."""

REMIX_ACTIONS = frozenset({"v", "reroll", "strong", "subtle", *ASK_ACTIONS, *EDIT_ACTIONS})
"""The buttons that, in Remix mode, open the prompt for editing before their job starts (U and Upscale (2x) copy or
enlarge an image: no prompt to edit)."""

REGION_TEMPLATE = r"imagine:regions:(?P<index>[1-4]):(?P<job>[0-9a-f]{32})"
"""The `custom_id` of Vary (Region)'s select menu of regions (`core.canvas.REGIONS`) for image `index` of `job`."""

TEMPLATE = rf"imagine:(?P<act>{'|'.join(ACTIONS)}):(?P<index>[0-4]):(?P<job>[0-9a-f]{{32}})"
"""The `custom_id` pattern; index is 1-4 for a grid's images, 0 where it does not apply."""

BUTTON_STYLE_SECONDARY = 2
"""Discord's grey button style."""

COMPONENT_ACTION_ROW = 1
COMPONENT_BUTTON = 2


@dataclass(frozen=True)
class ButtonRef:
    """What a clicked button asks for."""

    action: str
    index: int  # 1-4, or 0
    job_id: str


def custom_id(action: str, job_id: str, index: int = 0) -> str:
    """The `custom_id` of one button (at most 100 characters, as Discord requires)."""
    if action not in ACTIONS or not 0 <= index <= 4:
        raise ValueError(f"no button {action!r} with index {index}")
    value = f"imagine:{action}:{index}:{job_id}"
    if not re.fullmatch(TEMPLATE, value):
        raise ValueError(f"job id {job_id!r} is not 32 hex digits")
    return value


def region_select_id(job_id: str, index: int) -> str:
    """The `custom_id` of the regions menu Vary (Region) answers with."""
    value = f"imagine:regions:{index}:{job_id}"
    if not re.fullmatch(REGION_TEMPLATE, value):
        raise ValueError(f"no region menu for image {index} of job {job_id!r}")
    return value


def parse(value: str) -> ButtonRef | None:
    """The button a `custom_id` names, or None when it is not one of ours."""
    match = re.fullmatch(TEMPLATE, value)
    if match is None:
        return None
    return ButtonRef(match["act"], int(match["index"]), match["job"])


def _button(label: str, action: str, job_id: str, index: int = 0, emoji: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": COMPONENT_BUTTON,
        "style": BUTTON_STYLE_SECONDARY,
        "custom_id": custom_id(action, job_id, index),
    }
    if label:
        button["label"] = label
    if emoji:
        button["emoji"] = {"name": emoji}
    return button


def _row(*buttons: dict[str, Any]) -> dict[str, Any]:
    return {"type": COMPONENT_ACTION_ROW, "components": list(buttons)}


def grid_components(job_id: str) -> list[dict[str, Any]]:
    """U1-U4 / V1-V4 and re-roll under a 2x2 grid, as Discord message components."""
    return [
        _row(*(_button(f"U{k}", "u", job_id, k) for k in range(1, 5)), _button("", "reroll", job_id, 0, "🔄")),
        _row(*(_button(f"V{k}", "v", job_id, k) for k in range(1, 5))),
    ]


PAN_EMOJI = {"panl": "⬅️", "panr": "➡️", "panu": "⬆️", "pand": "⬇️"}
"""The pan buttons have an arrow and no label, as on Midjourney."""


def single_components(job_id: str, *, upscale2x: bool = True, square: bool = False) -> list[dict[str, Any]]:
    """Under one upscaled image, as on Midjourney: Vary (Strong), (Subtle), (Region), Upscale (2x) and re-roll; Zoom Out
    2x, Zoom Out 1.5x and Make Square; the four pans. Without Upscale (2x) under an image already as large as the
    model's upscales go (`core.models.ModelInfo.may_upscale2x`), without Make Square under a `square` image."""
    up = [_button("Upscale (2x)", "up2x", job_id, 1)] if upscale2x else []
    make_square = [] if square else [_button("Make Square", "square", job_id, 1, "↔️")]
    return [
        _row(
            _button("Vary (Strong)", "strong", job_id, 1, "🪄"),
            _button("Vary (Subtle)", "subtle", job_id, 1, "🪄"),
            _button("Vary (Region)", "region", job_id, 1, "🖌️"),
            *up,
            _button("", "reroll", job_id, 0, "🔄"),
        ),
        _row(
            _button("Zoom Out 2x", "zoom2", job_id, 1, "🔍"),
            _button("Zoom Out 1.5x", "zoom15", job_id, 1, "🔍"),
            _button("Custom Zoom", "zoomc", job_id, 1, "🔍"),
            *make_square,
        ),
        _row(*(_button("", action, job_id, 1, emoji) for action, emoji in PAN_EMOJI.items())),
    ]


def image_components(job_id: str, size: tuple[int, int], model: ModelInfo | None) -> list[dict[str, Any]]:
    """`single_components` for an image of `size` made by `model`: no Upscale (2x) when it is as large as the
    model's upscales go (a model not served any more: offered; the click is checked anyway), no Make Square when
    it is square."""
    upscale2x = model is None or model.may_upscale2x(*size)
    return single_components(job_id, upscale2x=upscale2x, square=size[0] == size[1])


NUMBER_EMOJI = ("1️⃣", "2️⃣", "3️⃣", "4️⃣")
"""The numbers of a `/describe`'s prompts, in its text and on its buttons."""


def describe_components(job_id: str) -> list[dict[str, Any]]:
    """Under a `/describe`: 1️⃣-4️⃣ imagine that prompt; Imagine all; re-roll for four new prompts."""
    return [
        _row(*(_button("", "prompt", job_id, k, NUMBER_EMOJI[k - 1]) for k in range(1, 5))),
        _row(_button("Imagine all", "imagineall", job_id), _button("", "redescribe", job_id, 0, "🔄")),
    ]


def failed_components(job_id: str) -> list[dict[str, Any]]:
    """A failed job keeps a re-roll button."""
    return [_row(_button("", "reroll", job_id, 0, "🔄"))]
