"""Prompts from an image: `/describe`, and the words an image prompt adds to the text it is drawn with.

    describer = load(ImageSettings(), model_info)      # once, at start: None when this worker has none
    describer.prompts(image, seed)                      # four different prompts for the image
    describer.subject(image)                            # what is in it, e.g. "a green triangle"

Two describers:

- `CaptionDescriber`: a transformers image-to-text model (a captioner such as BLIP) named by
  IMAGINE_IMAGE_CAPTIONER, loaded once at start; four prompts are four sampled captions. A configured model that
  cannot be loaded raises `DescriberUnavailable`, and `python -m worker` stops with that one line.
- `ShapesDescriber`: the embedded model's own world, read by its independent checker (`model.checker`): background,
  shapes, colours and positions, phrased like its training captions (`model.data.caption`), four different ones.
"""

from __future__ import annotations

import logging
import random
from typing import Protocol

import numpy as np
from PIL import Image

from core.models import BUILTIN_EMBEDDED, BUILTIN_TINY, ModelInfo
from core.settings import ImageSettings
from model import checker
from model.data import Obj, Scene, caption

log = logging.getLogger(__name__)

PROMPTS = 4
"""Prompts `/describe` answers with."""

READ_SIDE = 256
"""Longest side the checker reads an image at (it reads any size; larger only costs time)."""

MAX_TRIES = 64
"""Captions drawn at most while looking for PROMPTS different ones."""


class DescriberUnavailable(Exception):
    """The configured captioning model cannot be loaded; the message is the one line the worker stops with."""


class Describer(Protocol):
    name: str

    def prompts(self, image: Image.Image, seed: int) -> list[str]:
        """PROMPTS different prompts for `image`; the same seed gives the same ones."""
        ...

    def subject(self, image: Image.Image) -> str:
        """What the image shows, as words an image prompt puts before the member's text."""
        ...


class ShapesDescriber:
    """The embedded model's world: what `model.checker` reads, in the phrasings of `model.data.caption`."""

    name = "shapes"

    def scene(self, image: Image.Image) -> Scene:
        """What the checker reads: the background and up to two different objects, largest first. Copies of one
        object (a grid's four images) are one object, said without a position."""
        small = image.convert("RGB")
        small.thumbnail((READ_SIDE, READ_SIDE), Image.Resampling.LANCZOS)
        reading = checker.check(small)
        kinds: dict[tuple[str, str], list[str]] = {}
        for seen in reading.objects:
            kinds.setdefault((seen.colour, seen.shape), []).append(seen.position)
        objects = tuple(Obj(shape, colour, places[0] if len(places) == 1 else None)
                        for (colour, shape), places in list(kinds.items())[:2])
        return Scene(reading.background, objects)

    def prompts(self, image: Image.Image, seed: int) -> list[str]:
        scene = self.scene(image)
        if not scene.objects:
            return [f"{_article(str(scene.background))} background"]
        rng = np.random.default_rng(seed)
        found: list[str] = []
        for _ in range(MAX_TRIES):
            text = caption(scene, rng)
            if text not in found:
                found.append(text)
            if len(found) == PROMPTS:
                break
        return found

    def subject(self, image: Image.Image) -> str:
        scene = self.scene(image)
        return " and ".join(_article(f"{o.colour} {o.shape}") for o in scene.objects)


class CaptionDescriber:
    """A transformers image-to-text model, on the worker's device; four prompts are four sampled captions."""

    def __init__(self, source: str, device: str = "cpu") -> None:
        # Imported here: a worker without a captioner never pays for loading transformers' vision models.
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.name = source
        try:
            self.processor = AutoProcessor.from_pretrained(source)
            self.model = AutoModelForImageTextToText.from_pretrained(source).to(device).eval()
        except Exception as exc:
            raise DescriberUnavailable(f"cannot load the captioning model IMAGINE_IMAGE_CAPTIONER={source!r}: "
                                       f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                                       ) from None
        self.device = device

    def _captions(self, image: Image.Image, seed: int, count: int, sample: bool) -> list[str]:
        import torch

        inputs = self.processor(images=image.convert("RGB"), return_tensors="pt").to(self.device)
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = self.model.generate(**inputs, do_sample=sample, num_return_sequences=count, max_new_tokens=40)
        return [" ".join(text.split()) for text in self.processor.batch_decode(out, skip_special_tokens=True)]

    def prompts(self, image: Image.Image, seed: int) -> list[str]:
        found: list[str] = []
        for attempt in range(4):
            for text in self._captions(image, seed + attempt, PROMPTS, sample=True):
                if text and text not in found:
                    found.append(text)
            if len(found) >= PROMPTS:
                break
        return found[:PROMPTS] or ["an image"]

    def subject(self, image: Image.Image) -> str:
        return self._captions(image, 0, 1, sample=False)[0]


def load(settings: ImageSettings, model: ModelInfo, device: str = "cpu") -> Describer | None:
    """The worker's describer: the configured captioner, else for the built-in models the shapes world's, else
    None (a `/describe` then fails, refunded, saying so).

    Raises:
        DescriberUnavailable: a captioner is configured and cannot be loaded.
    """
    if settings.captioner:
        return CaptionDescriber(settings.captioner, device)
    if model.source in (BUILTIN_EMBEDDED, BUILTIN_TINY):  # the tiny test model draws noise: its world is the same
        return ShapesDescriber()
    return None


def _article(phrase: str) -> str:
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


def reroll_seed(rng: random.Random | None = None) -> int:
    """A seed for a new set of prompts."""
    return (rng or random.SystemRandom()).randint(0, 2**31 - 1)
