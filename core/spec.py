"""The job spec: one grid to render, exactly as parsed from a prompt. Frozen and JSON-serialisable."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from core import images
from core.errors import MalformedPayload

Mode = Literal["fast", "relax"]

GRID_SIZE = 4
"""Images in one grid (2x2). Image k of a grid is sampled with seed `seed + k`."""

MAX_SEED = 4_294_967_295
"""Largest `--seed` value, as in Midjourney (2**32 - 1)."""

MAX_TEXT_CHARS = 6000
"""Longest prompt, part or negative prompt (Discord's limit on a slash command's string option)."""

MAX_PARTS = 256
"""Most `::` parts in one prompt (a text encoder sees 77 tokens: more parts than this mean nothing)."""

MAX_SIDE_PX = 8192
"""Largest width or height in pixels whatever the model (a model's own pixel budget is checked where it is known)."""

MAX_STEPS = 1000
"""Most sampling steps (a tier's `max_steps` is the real limit; this bounds a forged payload)."""

MAX_WEIGHT = 1000.0
"""Largest `::` weight magnitude (`core.prompt` refuses more)."""

MAX_GUIDANCE = 100.0
"""Largest guidance scale (`--stylize 1000` gives twice a model's default)."""

QUALITIES = (0.25, 0.5, 1.0, 2.0)
"""`--quality` values."""

MODEL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
"""A registry name (see `core.models.ModelInfo.name`)."""

ASPECT = re.compile(r"[0-9]{1,6}:[0-9]{1,6}")
"""An `--ar` as the spec records it, e.g. "16:9"."""

SAFETY_FIELDS: dict[str, type] = {"negative_prompt": str, "check_outputs": bool, "action": str}
"""The fields of `extras["safety"]` (`core.safety.Safety`); the other extra a spec may carry is `BASE_SIZE`."""


BASE_SIZE = "base_size"
"""`JobSpec.extras` key of an Upscale (2x) job: `[width, height]` of the grid its image came from (variations and
re-rolls of an upscaled image render at that size, not the upscale's)."""

VARY_STRENGTH = {
    "strong": 0.75,  # fraction of the noise schedule redone: composition changes, subject and palette stay
    "subtle": 0.4,  # fraction redone: details change, the composition stays
}
"""img2img strength of Vary (Strong) / Vary (Subtle) and of V1-V4 (strong unless the source says otherwise): the
worker renders with it and admission estimates the steps it runs."""

UPSCALE2X_STRENGTH = 0.25
"""Fraction of the noise schedule Upscale (2x) redoes after its Lanczos resize (when the worker has no 2x upscaler):
sharpens detail without changing content."""


@dataclass(frozen=True)
class PromptPart:
    """One part of a multi-prompt (`cat::2 dog::1`); a plain prompt is one part of weight 1."""

    text: str
    weight: float = 1.0


@dataclass(frozen=True)
class JobSpec:
    """Everything a worker needs to render one 2x2 grid, with every default already resolved."""

    prompt: str  # the prompt text as the user wrote it, parameters removed (shown in messages)
    parts: tuple[PromptPart, ...]  # what the text encoder sees: `::` parts with their weights
    negative_prompt: str  # from `--no a, b`; "" when absent
    width: int  # pixels, a multiple of the model's size multiple
    height: int  # pixels, a multiple of the model's size multiple
    aspect: str  # the `--ar` the user asked for, e.g. "16:9"
    seed: int  # 0..MAX_SEED; image k uses seed + k (mod 2**32)
    chaos: int  # 0..100: how different the four images are
    stylize: int  # 0..1000, mapped to `guidance_scale`
    guidance_scale: float  # classifier-free guidance scale derived from `stylize` and the model's default
    quality: float  # 0.25, 0.5, 1 or 2, scales `steps`
    steps: int  # sampling steps derived from `quality` and the model's default
    stop: int  # 10..100: percent of the sampling steps to run before finishing early
    tile: bool  # seamless tiling: the image wraps around at its edges
    mode: Mode  # "fast" or "relax" lane
    model: str  # name of the model in the registry
    seed_random: bool = False  # True when the user gave no `--seed` and one was drawn for them
    extras: dict[str, Any] = field(default_factory=dict, compare=False)  # room for later fields (kept in JSON)

    def seeds(self) -> list[int]:
        """The seed of each image in the grid."""
        return [(self.seed + k) % (MAX_SEED + 1) for k in range(GRID_SIZE)]

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of JSON types (the payload format between bot and worker)."""
        data = asdict(self)
        data["parts"] = [asdict(p) for p in self.parts]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> JobSpec:
        """Rebuild a spec from `to_dict` output, checking every field: its type, its range, no unknown or missing
        key (a model's own size multiple and pixel budget are checked by `core.payload`, which knows the model).

        Raises:
            MalformedPayload: the message names the field and what is wrong with it.
        """
        data = _mapping(data, "spec", _SPEC_REQUIRED, _SPEC_OPTIONAL)
        parts = data["parts"]
        if not isinstance(parts, list) or not 1 <= len(parts) <= MAX_PARTS:
            raise MalformedPayload(f"spec.parts must be a list of 1 to {MAX_PARTS} parts")
        values = {name: _checked(name, data[name]) for name in data if name != "parts"}
        values["parts"] = tuple(_part(p) for p in parts)
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        return cls.from_dict(json.loads(text))


def _mapping(data: Any, where: str, required: frozenset[str], optional: frozenset[str] = frozenset()) -> dict[str, Any]:
    """`data` as a dict holding every `required` key and nothing beyond `optional`."""
    if not isinstance(data, dict):
        raise MalformedPayload(f"{where} must be an object, not {type(data).__name__}")
    missing, unknown = required - data.keys(), data.keys() - required - optional
    if missing:
        raise MalformedPayload(f"{where} lacks {', '.join(sorted(missing))}")
    if unknown:
        shown = ", ".join(sorted(repr(k)[:40] for k in unknown)[:5])
        raise MalformedPayload(f"{where} has unknown field(s) {shown}")
    return data


def _text(where: str, value: Any, *, max_chars: int = MAX_TEXT_CHARS) -> str:
    if not isinstance(value, str) or len(value) > max_chars:
        raise MalformedPayload(f"{where} must be a string of at most {max_chars} characters")
    return value


def _whole(where: str, value: Any, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise MalformedPayload(f"{where} must be a whole number from {low} to {high}")
    return value


def _number(where: str, value: Any, low: float, high: float) -> float:
    if type(value) not in (int, float) or not math.isfinite(value) or not low <= value <= high:
        raise MalformedPayload(f"{where} must be a finite number from {low:g} to {high:g}")
    return float(value)


def _flag(where: str, value: Any) -> bool:
    if type(value) is not bool:
        raise MalformedPayload(f"{where} must be true or false")
    return value


def _part(data: Any) -> PromptPart:
    data = _mapping(data, "spec.parts[]", frozenset({"text", "weight"}))
    return PromptPart(_text("spec.parts[].text", data["text"]),
                      _number("spec.parts[].weight", data["weight"], -MAX_WEIGHT, MAX_WEIGHT))


def _extras(value: Any) -> dict[str, Any]:
    extras = dict(_mapping(value, "spec.extras", frozenset(), frozenset({"safety", BASE_SIZE, images.EXTRAS_KEY})))
    if images.EXTRAS_KEY in extras:
        try:
            extras[images.EXTRAS_KEY] = images.check_extras(extras[images.EXTRAS_KEY])
        except ValueError as exc:
            raise MalformedPayload(str(exc)) from None
    if BASE_SIZE in extras:
        base = extras[BASE_SIZE]
        if not isinstance(base, list) or len(base) != 2:
            raise MalformedPayload(f"spec.extras.{BASE_SIZE} must be [width, height]")
        for side in base:
            _whole(f"spec.extras.{BASE_SIZE}[]", side, 1, MAX_SIDE_PX)
    if "safety" in extras:
        safety = _mapping(extras["safety"], "spec.extras.safety", frozenset(), frozenset(SAFETY_FIELDS))
        for name, kind in SAFETY_FIELDS.items():
            if name in safety and type(safety[name]) is not kind:
                raise MalformedPayload(f"spec.extras.safety.{name} must be a {kind.__name__}")
        _text("spec.extras.safety.negative_prompt", safety.get("negative_prompt", ""))
        _text("spec.extras.safety.action", safety.get("action", ""), max_chars=16)
    return dict(extras)


def _aspect(value: Any) -> str:
    if not isinstance(value, str) or not ASPECT.fullmatch(value):
        raise MalformedPayload("spec.aspect must be W:H, two whole numbers")
    return value


def _model(value: Any) -> str:
    if not isinstance(value, str) or not MODEL_NAME.fullmatch(value):
        raise MalformedPayload("spec.model must be a model name (letters, digits, '-', '_', '.'; at most 64)")
    return value


def _mode(value: Any) -> str:
    if value not in ("fast", "relax"):
        raise MalformedPayload("spec.mode must be fast or relax")
    return str(value)


def _quality(value: Any) -> float:
    if type(value) not in (int, float) or value not in QUALITIES:
        raise MalformedPayload(f"spec.quality must be one of {', '.join(f'{q:g}' for q in QUALITIES)}")
    return float(value)


_CHECKS: dict[str, Any] = {
    "prompt": lambda v: _text("spec.prompt", v),
    "negative_prompt": lambda v: _text("spec.negative_prompt", v),
    "width": lambda v: _whole("spec.width", v, 1, MAX_SIDE_PX),
    "height": lambda v: _whole("spec.height", v, 1, MAX_SIDE_PX),
    "aspect": _aspect,
    "seed": lambda v: _whole("spec.seed", v, 0, MAX_SEED),
    "chaos": lambda v: _whole("spec.chaos", v, 0, 100),
    "stylize": lambda v: _whole("spec.stylize", v, 0, 1000),
    "guidance_scale": lambda v: _number("spec.guidance_scale", v, 0.0, MAX_GUIDANCE),
    "quality": _quality,
    "steps": lambda v: _whole("spec.steps", v, 1, MAX_STEPS),
    "stop": lambda v: _whole("spec.stop", v, 10, 100),
    "tile": lambda v: _flag("spec.tile", v),
    "mode": _mode,
    "model": _model,
    "seed_random": lambda v: _flag("spec.seed_random", v),
    "extras": _extras,
}
"""Each field of a spec (but `parts`) -> the function that checks its value and returns it as the spec holds it."""


def _checked(name: str, value: Any) -> Any:
    return _CHECKS[name](value)


_SPEC_OPTIONAL = frozenset({"seed_random", "extras"})
_SPEC_REQUIRED = frozenset(f.name for f in fields(JobSpec)) - _SPEC_OPTIONAL
