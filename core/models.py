"""The model registry: which models this deployment serves, and what the prompt language needs to know of each.

The bot never loads a model, yet `--ar` must map to a size the model can render and `--quality` to its step count:
so each model's budget is written down here, from configuration, not read from the weights.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import ImagineError

BUILTIN_TINY = "builtin:tiny"
"""Source of the tiny random pipeline built from configs: no download, used by fast tests."""

BUILTIN_EMBEDDED = "builtin:embedded"
"""Source of the project's own small latent diffusion model, trained here and shipped in `model/embedded/`."""

EMBEDDED_DIR = Path(__file__).resolve().parent.parent / "model" / "embedded"
"""Where the embedded model's diffusers folder lives (`python -m model.train` writes it)."""


UPSCALE_PIXELS_FACTOR = 4
"""Upscale (2x) makes images of at most this many times a model's pixel budget: one 2x of its largest render, as
Midjourney upscales a grid's image once, not an upscale again and again."""


@dataclass(frozen=True)
class ModelInfo:
    """One servable model."""

    name: str  # registry name: used by `--model NAME` and in queue names (letters, digits, '-', '_', '.')
    source: str  # a local diffusers folder, a hub id, BUILTIN_TINY or BUILTIN_EMBEDDED
    aliases: tuple[str, ...] = ()  # other names accepted by `--model` / `--v` (e.g. "6" for `--v 6`)
    pixels: int = 512 * 512  # pixel budget: width * height stays at or under this for any `--ar`
    multiple: int = 8  # width and height are multiples of this (the VAE factor, or more for some UNets)
    steps: int = 25  # sampling steps at `--quality 1`
    guidance: float = 7.0  # classifier-free guidance scale at the default `--stylize 100`

    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    @property
    def max_upscaled_pixels(self) -> int:
        """The most pixels an Upscale (2x) of this model may make (UPSCALE_PIXELS_FACTOR times its budget)."""
        return self.pixels * UPSCALE_PIXELS_FACTOR

    def may_upscale2x(self, width: int, height: int) -> bool:
        """Whether an image of `width` x `height` may be upscaled 2x (its result within `max_upscaled_pixels`)."""
        return 4 * width * height <= self.max_upscaled_pixels


@dataclass(frozen=True)
class ModelRegistry:
    """The configured models; the first one is the default."""

    models: tuple[ModelInfo, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.models:
            raise ImagineError("the model registry is empty: configure MODEL or MODELS_FILE")
        seen: set[str] = set()
        for info in self.models:
            for name in info.names():
                if name.lower() in seen:
                    raise ImagineError(f"model name {name!r} is used twice in the registry")
                seen.add(name.lower())

    @property
    def default(self) -> ModelInfo:
        return self.models[0]

    def get(self, name: str) -> ModelInfo | None:
        """The model called `name` (or with that alias), case-insensitively; None when there is none."""
        wanted = name.lower()
        for info in self.models:
            if wanted in (n.lower() for n in info.names()):
                return info
        return None

    def all_names(self) -> list[str]:
        return [n for info in self.models for n in info.names()]


def name_from_source(source: str) -> str:
    """A short registry name for a model source: `stabilityai/sd-turbo` -> `sd-turbo`."""
    if source == BUILTIN_TINY:
        return "tiny"
    if source == BUILTIN_EMBEDDED:
        return "embedded"
    base = re.split(r"[/\\]", source.rstrip("/\\"))[-1] or "default"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-").lower() or "default"


def embedded_model(name: str = "embedded") -> ModelInfo:
    """The embedded model's entry: trained on 64x64 images; its autoencoder halves them once and its UNet halves the
    32x32 latents three times, so sizes are multiples of 16. 20 DPM-Solver++ steps and guidance 2, what
    `python -m model.evaluate` scores by default: on held-out prompts guidance 2 reads colour, shape and squares'
    corners right far more often than 5 (model/README.md, "Session 13: guidance")."""
    return ModelInfo(name=name, source=BUILTIN_EMBEDDED, pixels=64 * 64, multiple=16, steps=20, guidance=2.0)


def default_model() -> ModelInfo:
    """The model served when MODEL is not set: the embedded one when its weights are present (they ship in the
    repository), else the tiny random pipeline (a checkout that was trimmed of them)."""
    return embedded_model() if (EMBEDDED_DIR / "model_index.json").is_file() else tiny_model()


def tiny_model(name: str = "tiny") -> ModelInfo:
    """The tiny random pipeline's entry: 64x64 pixels, 4 steps (see model/tiny.py)."""
    return ModelInfo(name=name, source=BUILTIN_TINY, pixels=64 * 64, multiple=8, steps=4, guidance=5.0)


def _model_info(entry: dict) -> ModelInfo:
    """One `[[model]]` table of a MODELS_FILE; `name` defaults to one derived from `source`."""
    name = entry.get("name") or name_from_source(entry["source"])
    return ModelInfo(**{**entry, "name": name, "aliases": tuple(str(a) for a in entry.get("aliases", ()))})


def load_registry(model: str = "", models_file: Path | None = None) -> ModelRegistry:
    """Build the registry from a TOML file of `[[model]]` tables, or from the single `MODEL` source.

    Raises:
        ImagineError: the file is missing, malformed or names a model twice.
    """
    if models_file is not None:
        try:
            data = tomllib.loads(Path(models_file).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ImagineError(f"cannot read MODELS_FILE {str(models_file)!r}: {exc}") from None
        entries = data.get("model", [])
        try:
            infos = tuple(_model_info(entry) for entry in entries)
        except (TypeError, KeyError) as exc:
            raise ImagineError(f"MODELS_FILE {str(models_file)!r} has a malformed [[model]] entry: {exc}") from None
        return ModelRegistry(infos)
    if not model:
        return ModelRegistry((default_model(),))
    if model == BUILTIN_TINY:
        return ModelRegistry((tiny_model(),))
    if model == BUILTIN_EMBEDDED:
        return ModelRegistry((embedded_model(),))
    return ModelRegistry((ModelInfo(name=name_from_source(model), source=model),))
