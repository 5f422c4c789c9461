"""The 2x2 grid image and its PNG encoding under Discord's attachment limit."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from worker.grid import DISCORD_MAX_ATTACHMENT_BYTES, compose_grid, encode_png

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """Random RGB noise: the least compressible image there is."""
    data = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(data, mode="RGB")


def test_four_images_make_a_2x2_grid_in_reading_order() -> None:
    """Image k lands at column k % 2, row k // 2 of a grid twice as wide and twice as high."""
    grid = compose_grid([Image.new("RGB", (30, 20), c) for c in COLOURS])
    assert grid.size == (60, 40)
    assert [grid.getpixel(xy) for xy in [(5, 5), (35, 5), (5, 25), (35, 25)]] == COLOURS


def test_one_image_is_its_own_grid() -> None:
    """A single image (one regenerated image) comes back unchanged, as a copy."""
    image = Image.new("RGB", (16, 8), COLOURS[0])
    grid = compose_grid([image])
    assert grid is not image and grid.tobytes() == image.tobytes()


def test_grid_rejects_mixed_sizes_and_no_images() -> None:
    """Images of different sizes, or none at all, are a programming error: ValueError."""
    with pytest.raises(ValueError, match="differ in size"):
        compose_grid([Image.new("RGB", (8, 8)), Image.new("RGB", (8, 9))])
    with pytest.raises(ValueError):
        compose_grid([])


def test_small_png_is_lossless() -> None:
    """An image that fits is encoded at full size, pixel for pixel."""
    image = noise_image(32, 24)
    data = encode_png(image)
    assert data.startswith(b"\x89PNG") and len(data) <= DISCORD_MAX_ATTACHMENT_BYTES
    assert Image.open(io.BytesIO(data)).tobytes() == image.tobytes()


def test_png_over_the_limit_is_downscaled_until_it_fits() -> None:
    """A 600x400 noise image (about 700 kB as PNG) squeezed into 100 kB is a smaller, decodable PNG, same aspect."""
    image = noise_image(600, 400)
    data = encode_png(image, max_bytes=100_000)
    assert len(data) <= 100_000
    decoded = Image.open(io.BytesIO(data))
    decoded.load()
    assert decoded.format == "PNG" and decoded.width < 600
    assert abs(decoded.width / decoded.height - 1.5) < 0.02


def test_impossible_limit_is_refused() -> None:
    """A limit smaller than any PNG raises ValueError instead of looping."""
    with pytest.raises(ValueError, match="no PNG fits"):
        encode_png(noise_image(8, 8), max_bytes=10)
