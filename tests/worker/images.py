"""Pixel helpers for the worker tests."""

from __future__ import annotations

import numpy as np
from PIL import Image


def pixels(image: Image.Image) -> np.ndarray:
    """The image as a float array (H, W, C), for differences that must not wrap around."""
    return np.asarray(image).astype(np.float64)


def mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference of two same-sized images, in grey levels (0-255)."""
    return float(np.abs(pixels(a) - pixels(b)).mean())
