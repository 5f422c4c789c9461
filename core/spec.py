"""The job spec: one grid to render, exactly as parsed from a prompt. Frozen and JSON-serialisable."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Mode = Literal["fast", "relax"]

GRID_SIZE = 4
"""Images in one grid (2x2). Image k of a grid is sampled with seed `seed + k`."""

MAX_SEED = 4_294_967_295
"""Largest `--seed` value, as in Midjourney (2**32 - 1)."""


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
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        """Rebuild a spec from `to_dict` output; unknown keys are rejected so a malformed payload fails loudly."""
        values = dict(data)
        values["parts"] = tuple(PromptPart(**p) for p in values["parts"])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        return cls.from_dict(json.loads(text))
