"""The 2x2 grid image and its PNG bytes, sized for a Discord attachment."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

DISCORD_MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
"""Largest file, in bytes, that a bot may attach to a message on a server without boosts (10 MiB)."""

PNG_COMPRESS_LEVEL = 1
"""zlib level of every PNG the worker writes. Encoding sits on each job's critical path and bytes hardly matter
(a LAN to Redis, a 10 MiB limit): on a 1024x1024 grid level 1 takes ~130 ms and 15% more bytes than level 6
(~300 ms), and Pillow's `optimize=True` takes ~410 ms for 4% fewer bytes than level 6."""

_ENCODERS = ThreadPoolExecutor(max_workers=max(1, min(4, (os.cpu_count() or 1) - 1)), thread_name_prefix="png")
"""Threads that encode a grid's four images side by side (Pillow's encoder releases the GIL), leaving one core to
the rest of the machine: they run just after the outcome is published, when whoever waited for it is reading it."""

GRID_COLUMNS = 2
"""Images per row of a grid: four images make the 2x2 grid; a single image stays as it is."""


def compose_grid(images: Sequence[Image.Image]) -> Image.Image:
    """Paste 1 to 4 same-sized images row by row into a 2-column grid (4 -> 2x2, 1 -> the image itself)."""
    if not images:
        raise ValueError("compose_grid needs at least one image")
    if len(images) == 1:
        return images[0].copy()
    width, height = images[0].size
    rows = math.ceil(len(images) / GRID_COLUMNS)
    grid = Image.new("RGB", (GRID_COLUMNS * width, rows * height))
    for k, image in enumerate(images):
        if image.size != (width, height):
            raise ValueError(f"grid images differ in size: {image.size} and {(width, height)}")
        grid.paste(image.convert("RGB"), tile_box(k, (width, height))[:2])
    return grid


def tile_box(k: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of image k in a grid of images of `size`, as `compose_grid` lays them out."""
    width, height = size
    left, top = (k % GRID_COLUMNS) * width, (k // GRID_COLUMNS) * height
    return left, top, left + width, top + height


def encode_png(image: Image.Image, max_bytes: int = DISCORD_MAX_ATTACHMENT_BYTES) -> bytes:
    """The image as a PNG of at most `max_bytes`, downscaled (Lanczos) as much as it needs to fit.

    Raises:
        ValueError: not even a 1x1 PNG fits in `max_bytes`.
    """
    while True:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        if buffer.tell() <= max_bytes:
            return buffer.getvalue()
        if image.width == 1 and image.height == 1:
            raise ValueError(f"no PNG fits in {max_bytes} bytes")
        # PNG size grows about with the pixel count: shrink both sides by sqrt of the excess, and 10% more.
        scale = min(0.9, 0.9 * math.sqrt(max_bytes / buffer.tell()))
        size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)


def encode_pngs(images: Sequence[Image.Image], max_bytes: int = DISCORD_MAX_ATTACHMENT_BYTES) -> list[bytes]:
    """`encode_png` of each image, in parallel threads; in the order given."""
    if len(images) < 2:
        return [encode_png(image, max_bytes) for image in images]
    return list(_ENCODERS.map(lambda image: encode_png(image, max_bytes), images))
