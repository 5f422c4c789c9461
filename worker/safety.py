"""The image safety check: a pluggable classifier scores each generated image, and the guild's action is applied.

    classifier = safety.load(SafetySettings())          # once, at worker start (None when none is configured)
    scores = classifier.flags(images)                   # one score in 0..1 per image
    images, flagged = safety.apply_policy(images, scores, "blur", threshold=settings.threshold)

Classifiers, by `WORKER_SAFETY_CLASSIFIER`:
- "" (the default): none. `describe(None)` says so, and `report` tells `/admin moderation status` through Redis.
- "sd": diffusers' StableDiffusionSafetyChecker with its CLIP image processor, loaded on first use from
  `WORKER_SAFETY_SD_PATH` (a folder or hub id holding `safety_checker/` and `feature_extractor/`, as in an SD 1.x
  repository). Its scores are 0 or 1 (it answers per image yes/no). Missing weights fail with a message that says
  what to download; the real weights are not available on the machines this project is tested on.
- "builtin:skin": `SkinToneClassifier`, shipped here so the path runs without downloads: the fraction of an image's
  pixels inside the explicit RGB skin-colour rule of Kovač, Peer and Solina (2003), mapped to 0..1. It flags images
  mostly of skin colour (and also sand, wood and peach walls): a deterministic stand-in, not a nudity detector.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import redis
from PIL import Image, ImageDraw, ImageFilter
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from core import keys
from core.safety import FLAGGED_ACTIONS

BLUR_RADIUS_FRACTION = 0.08
"""Gaussian blur radius of a flagged image, as a fraction of its longer side (8%: shapes only, no detail)."""

SPOILER_PREFIX = "SPOILER_"
"""Discord shows an attachment whose filename starts with this behind a spoiler cover."""

PLACEHOLDER_GREY = (96, 96, 96)
WITHHELD_TEXT = "withheld by this server's image safety check"


class SafetySettings(BaseSettings):
    """Which image safety classifier a worker runs (built once at worker start)."""

    model_config = SettingsConfigDict(env_prefix="WORKER_SAFETY_", extra="ignore")

    classifier: str = Field(default="", description="'' (none), 'sd', or 'builtin:skin'")
    threshold: float = Field(default=0.5, ge=0.0, le=1.0, description="an image scoring at least this is flagged")
    sd_path: str = Field(default="", description="folder or hub id with safety_checker/ and feature_extractor/")


class SafetyClassifier(Protocol):
    """Scores images: 0 = safe, 1 = certainly unsafe."""

    name: str

    def flags(self, images: Sequence[Image.Image]) -> list[float]:
        """One score in 0..1 per image, in order."""
        ...


class SkinToneClassifier:
    """Score = (skin-pixel fraction - LOW) / (HIGH - LOW), clipped to 0..1, on the image shrunk to 64x64."""

    name = "builtin:skin"
    LOW = 0.2  # an image up to 20% skin-coloured (a face, a hand) scores 0
    HIGH = 0.6  # 60% or more scores 1; the default threshold 0.5 flags from 44%

    def flags(self, images: Sequence[Image.Image]) -> list[float]:
        return [self._score(image) for image in images]

    def _score(self, image: Image.Image) -> float:
        rgb = np.asarray(image.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR), dtype=np.int16)
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        # Kovač et al. 2003, uniform daylight: R>95, G>40, B>20, max-min>15, |R-G|>15, R>G, R>B.
        spread = rgb.max(axis=-1) - rgb.min(axis=-1)
        skin = (r > 95) & (g > 40) & (b > 20) & (spread > 15) & (np.abs(r - g) > 15) & (r > g) & (r > b)
        fraction = float(skin.mean())
        return min(1.0, max(0.0, (fraction - self.LOW) / (self.HIGH - self.LOW)))


class StableDiffusionChecker:
    """diffusers' StableDiffusionSafetyChecker, loaded on the first call (its CLIP weights are about 1.2 GB)."""

    name = "sd"

    def __init__(self, path: str, device: str = "cpu") -> None:
        self.path = path
        self.device = device
        self._loaded: tuple[object, object] | None = None

    def flags(self, images: Sequence[Image.Image]) -> list[float]:
        checker, processor = self._load()
        inputs = processor(images=list(images), return_tensors="pt")  # type: ignore[operator]
        pixels = np.stack([np.asarray(image.convert("RGB"), dtype=np.float32) / 255 for image in images])
        _, unsafe = checker(images=pixels, clip_input=inputs.pixel_values.to(self.device))  # type: ignore[operator]
        return [1.0 if flag else 0.0 for flag in unsafe]

    def _load(self) -> tuple[object, object]:
        if self._loaded is None:
            from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
            from transformers import CLIPImageProcessor

            if not self.path:
                raise RuntimeError("WORKER_SAFETY_CLASSIFIER=sd needs WORKER_SAFETY_SD_PATH: a folder or hub id with "
                                   "safety_checker/ and feature_extractor/ (e.g. from an SD 1.5 repository)")
            try:
                checker = StableDiffusionSafetyChecker.from_pretrained(self.path, subfolder="safety_checker")
                processor = CLIPImageProcessor.from_pretrained(self.path, subfolder="feature_extractor")
            except (OSError, ValueError) as exc:
                raise RuntimeError(f"the Stable Diffusion safety checker could not be loaded from {self.path!r} "
                                   f"(safety_checker/ and feature_extractor/ are needed): {exc}") from None
            self._loaded = (checker.to(self.device).eval(), processor)  # type: ignore[arg-type]
        return self._loaded


CLASSIFIERS: dict[str, Callable[[SafetySettings, str], SafetyClassifier]] = {
    "sd": lambda settings, device: StableDiffusionChecker(settings.sd_path, device),
    "builtin:skin": lambda settings, device: SkinToneClassifier(),
}
"""Classifier name -> how to build it from the settings and the worker's torch device."""


def load(settings: SafetySettings, device: str = "cpu") -> SafetyClassifier | None:
    """The configured classifier, or None when `WORKER_SAFETY_CLASSIFIER` is empty.

    Raises:
        ValueError: an unknown name; the message lists the known ones.
    """
    name = settings.classifier.strip()
    if not name:
        return None
    if name not in CLASSIFIERS:
        known = ", ".join(CLASSIFIERS)
        raise ValueError(f"WORKER_SAFETY_CLASSIFIER={name!r} is unknown; use '' (none) or one of {known}")
    return CLASSIFIERS[name](settings, device)


def describe(classifier: SafetyClassifier | None) -> str:
    """What the worker checks outputs with, in words (for logs and `/admin moderation status`)."""
    if classifier is None:
        return "no image safety classifier configured (WORKER_SAFETY_CLASSIFIER is empty): outputs are not checked"
    return f"image safety classifier {classifier.name!r}"


def report(conn: redis.Redis, worker_name: str, classifier: SafetyClassifier | None, *, now: float) -> None:
    """Tell the bot (`moderation.status_lines`) which classifier this worker runs ("" for none)."""
    data = {"classifier": classifier.name if classifier else "", "description": describe(classifier), "at": now}
    conn.hset(keys.safety_classifiers(), worker_name, json.dumps(data))


def apply_policy(
    images: Sequence[Image.Image], scores: Sequence[float], action: str, *, threshold: float = 0.5
) -> tuple[list[Image.Image], list[int]]:
    """Replace each image scoring at least `threshold`: "blur" -> strongly blurred (send it as a spoiler, see
    `spoiler_name`), "withhold" -> a grey placeholder of the same size. Returns (the images, indices flagged).

    Raises:
        ValueError: `action` is not one of FLAGGED_ACTIONS, or there is not one score per image.
    """
    if action not in FLAGGED_ACTIONS:
        raise ValueError(f"the flagged-image action must be one of {FLAGGED_ACTIONS}, not {action!r}")
    if len(scores) != len(images):
        raise ValueError(f"{len(scores)} scores for {len(images)} images")
    out, flagged = [], []
    for index, (image, score) in enumerate(zip(images, scores, strict=True)):
        if score >= threshold:
            flagged.append(index)
            image = blurred(image) if action == "blur" else placeholder(image.size)
        out.append(image)
    return out, flagged


def blurred(image: Image.Image) -> Image.Image:
    """The image under a Gaussian blur of radius BLUR_RADIUS_FRACTION of its longer side."""
    return image.convert("RGB").filter(ImageFilter.GaussianBlur(radius=BLUR_RADIUS_FRACTION * max(image.size)))


def placeholder(size: tuple[int, int]) -> Image.Image:
    """A grey image of `size` that says it was withheld."""
    image = Image.new("RGB", size, PLACEHOLDER_GREY)
    ImageDraw.Draw(image).text((8, size[1] // 2 - 6), WITHHELD_TEXT, fill=(230, 230, 230))
    return image


def spoiler_name(filename: str) -> str:
    """The attachment filename Discord shows behind a spoiler cover (`grid.png` -> `SPOILER_grid.png`)."""
    return filename if filename.startswith(SPOILER_PREFIX) else SPOILER_PREFIX + filename
