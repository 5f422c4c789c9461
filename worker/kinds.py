"""What each job kind makes, as PNG bytes ready to store: a grid, one image of a grid, variations, a 2x upscale.

`core.queue.KINDS` names them; a button job's `source` is `{"job_id": parent, "index": k (1-4)}`, with "strength" for
a variation and the edit's fields (`core.canvas.Edit.to_source`) for an edit.
Image k of a grid parent is its stored image k-1; a single-image parent (an upscale) has only image 0.
"""

from __future__ import annotations

import dataclasses
import io
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis
from PIL import Image

import quotas
from core import canvas, jobs, keys
from core.errors import EditRefused, GenerationFailed
from core.queue import SINGLE_IMAGE_KINDS
from core.safety import Safety, safety_of, with_safety
from core.spec import UPSCALE2X_STRENGTH, VARY_STRENGTH, JobSpec
from worker import editing, output_check
from worker import images as inputs
from worker.context import Context
from worker.grid import compose_grid, encode_png, tile_box
from worker.sampling import ProgressCallback

UPSCALE_FACTOR = 2
"""Upscale (2x): output sides are this many times the source's (the job's spec has the output's size)."""


MAX_SOURCE_DEPTH = 4
"""How many upscale parents deep an expired source image is recreated before giving up."""

MAX_MASK_BYTES = 4 * 1024 * 1024
"""Largest drawn mask a worker reads (the web app writes at most `web.region.MAX_MASK_BYTES`)."""

JOB_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Output:
    """What a job stores: each image's PNG (`keys.job_image`) and the PNG it is shown as (`keys.job_grid`), after
    the safety check (`worker.output_check`): U and V buttons only ever start from these.

    A grid's four images are `later`: encoded and stored right after the outcome is published (`worker.jobs`), so
    that only the grid's encoding sits between the last sampling step and the user. Until they are stored, a button
    crops its image from the grid (`source_image`).
    """

    images: list[bytes]
    shown: bytes
    flagged: tuple[int, ...] = ()  # images the safety check replaced
    action: str = ""  # how: "blur" (posted as a spoiler) or "withhold"
    report: str = ""  # what to record in the moderation log; "" when nothing new was flagged (a U copy)
    later: tuple[Image.Image, ...] = ()  # images stored after the outcome, as `keys.job_image` 0..n-1
    gpu_s: float = 0.0  # device time spent making it, added to the job's `gpu_s` with the outcome
    work: float = 0.0  # megapixel-steps rendered to make it (`quotas.record_work`: the model's speed sample)
    prompts: tuple[str, ...] = ()  # a `/describe`'s four prompts (`keys.job_prompts`)


@dataclass(frozen=True)
class Hooks:
    """The arguments every engine call of a job takes per sampling step: report progress, ask whether to stop, and
    how often to decode a preview. Nothing in it reacts to the job's outcome (that is `worker.jobs.conclude`)."""

    on_progress: ProgressCallback
    should_cancel: Callable[[], bool]
    preview_interval_s: float


class _Meter:
    """Seconds the job's engine calls held the device so far, and the megapixel-steps they rendered."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.work = 0.0


def make(ctx: Context, job_id: str, kind: str, spec: JobSpec, source: dict[str, Any], hooks: Hooks) -> Output:
    """Make the job's images. Their GPU time is `Output.gpu_s`, which the caller stores with the outcome; when making
    them fails, it goes to the job's `gpu_s` here.

    Raises:
        GenerationFailed: a malformed source, or a source image that expired and cannot be recreated (permanent).
        JobCancelled, TransientGenerationError: from the engine.
    """
    with _metered(ctx, job_id) as meter:
        output = _make(ctx, job_id, kind, spec, source, hooks, meter)
    return dataclasses.replace(output, gpu_s=meter.seconds, work=meter.work)


@contextmanager
def _metered(ctx: Context, job_id: str) -> Iterator[_Meter]:
    """A fresh meter for the job's engine calls; if the block raises, the time they held the device so far goes to
    the job's `gpu_s` (a failed attempt's time is recorded, as a finished one's is with its outcome)."""
    meter = _Meter()
    try:
        yield meter
    except BaseException:
        jobs.add_gpu_seconds(ctx.conn, job_id, meter.seconds)
        raise


def _make(ctx: Context, job_id: str, kind: str, spec: JobSpec, source: dict[str, Any], hooks: Hooks, meter: _Meter
          ) -> Output:
    if kind == "grid":
        # image prompts and blends: fetched and checked, then they steer the render through the IP-Adapter, or
        # without one they are blended into the image it starts from
        image_prompt, start_from = None, None
        if ctx.engine.adapter is not None:
            image_prompt = inputs.image_prompt(ctx, job_id, spec)
        else:
            start_from = inputs.starting_image(ctx, job_id, spec)
        if start_from is not None:
            strength = start_from.strength
            drawn = _gpu(meter, lambda: ctx.engine.image_to_image(
                start_from.spec, start_from.image, strength, count=4, on_progress=hooks.on_progress,
                should_cancel=hooks.should_cancel, preview_interval_s=hooks.preview_interval_s),
                quotas.render_of(spec, "vary", strength=strength))
            return _grid_output(_check(ctx, spec, drawn))
        images = _gpu(meter, lambda: ctx.engine.render(spec, on_progress=hooks.on_progress,
                                                      should_cancel=hooks.should_cancel,
                                                      preview_interval_s=hooks.preview_interval_s,
                                                      image_prompt=image_prompt),
                      quotas.render_of(spec, "grid"))
        return _grid_output(_check(ctx, spec, images))
    if kind == "describe":
        shown, prompts = _gpu_text(meter, lambda: inputs.describe(ctx, job_id, spec))
        png = encode_png(shown)
        return Output([png], png, prompts=tuple(prompts))
    parent, index = _parse_source(source)
    start = source_image(ctx, meter, parent, index, hooks.should_cancel, safety=safety_of(spec))
    if kind == "upscale":
        # The parent's own (already checked) bytes: no regeneration, no re-encoding; still a spoiler if it was.
        flagged = (0,) if start.flagged_action else ()
        return Output([start.png], start.png, flagged, start.flagged_action)
    image = Image.open(io.BytesIO(start.png))
    if kind == "vary":
        strength = vary_strength(source)
        images = _gpu(meter, lambda: ctx.engine.image_to_image(
            spec, image, strength, count=4, on_progress=hooks.on_progress, should_cancel=hooks.should_cancel,
            preview_interval_s=hooks.preview_interval_s), quotas.render_of(spec, "vary", strength=strength))
        return _grid_output(_check(ctx, spec, images))
    if kind == "edit":
        layout = _edit_layout(ctx, spec, source, image)
        start_image, mask = editing.start(layout, image)
        images = _gpu(meter, lambda: ctx.engine.inpaint(
            spec, start_image, mask, on_progress=hooks.on_progress, should_cancel=hooks.should_cancel,
            preview_interval_s=hooks.preview_interval_s), quotas.render_of(spec, "edit"))
        return _grid_output(_check(ctx, spec, [editing.finish(layout, start_image, new) for new in images]))
    if kind == "region_mask":  # Vary (Region) drawn in the web editor: its mask is stored beside the job
        mask = _drawn_mask(ctx, job_id, image.size)
        if image.size != (spec.width, spec.height):
            raise GenerationFailed(f"malformed job payload: the image is {image.width}x{image.height}, the job asks "
                                   f"for {spec.width}x{spec.height}")
        kept = image.convert("RGB")
        images = _gpu(meter, lambda: ctx.engine.inpaint(
            spec, kept, mask, on_progress=hooks.on_progress, should_cancel=hooks.should_cancel,
            preview_interval_s=hooks.preview_interval_s), quotas.render_of(spec, kind))
        return _grid_output(_check(ctx, spec, [editing.finish_masked(kept, new, mask) for new in images]))
    if kind == "upscale2x":
        size = _upscaled_size(spec, image)
        if size[0] * size[1] > ctx.model.max_upscaled_pixels:  # admission refuses it; a payload from elsewhere
            raise GenerationFailed(f"Upscale (2x) to {size[0]}x{size[1]} is larger than model {ctx.model.name!r} "
                                   f"makes ({ctx.model.max_upscaled_pixels} pixels)")
        strength = 1.0 if ctx.engine.upscaler is not None else UPSCALE2X_STRENGTH  # the upscaler runs every step
        steps = quotas.render_of(spec, kind, strength=strength).steps
        work = quotas.Render(spec.model, size[0], size[1], steps, images=1)
        refined = _gpu(meter, lambda: _upscale2x(ctx, spec, image, size, hooks), work)
        checked = _check(ctx, spec, refined)
        png = encode_png(checked.images[0])
        return Output([png], png, checked.flagged, checked.action, checked.detail)
    raise GenerationFailed(f"malformed job payload: unknown kind {kind!r}")


def _drawn_mask(ctx: Context, job_id: str, size: tuple[int, int]) -> Image.Image:
    """The job's drawn mask (`keys.job_mask`) as an "L" image of `size`, white where the model redraws.

    Raises:
        GenerationFailed: it is gone, too large, not a PNG, or not the image's size (not one the web app wrote).
    """
    data = ctx.conn.get(keys.job_mask(job_id))
    if not isinstance(data, bytes) or len(data) > MAX_MASK_BYTES:
        raise GenerationFailed("the region's mask has expired or is not one the web editor wrote")
    try:
        with Image.open(io.BytesIO(data)) as drawn:
            if drawn.format != "PNG" or drawn.size != size:
                raise GenerationFailed(f"the region's mask is not a {size[0]}x{size[1]} PNG")
            return drawn.convert("L").point(lambda v: 255 if v >= 128 else 0)
    except (OSError, ValueError) as exc:
        raise GenerationFailed("the region's mask could not be read") from exc


def _edit_layout(ctx: Context, spec: JobSpec, source: dict[str, Any], image: Image.Image) -> canvas.Layout:
    """Where the edit of `source` puts `image`: the plan the bot sized the job by (`bot.submit.edited`).

    Raises:
        GenerationFailed: a malformed edit, or one whose canvas is not the job's size (the payload was not made by
            this bot for this model).
    """
    try:
        edit = canvas.Edit.from_source(source)
        given = (spec.width, spec.height) if edit.op == "zoom" else None  # a Custom Zoom's --ar sets its canvas
        layout = canvas.plan(edit, image.size, multiple=ctx.model.multiple, max_pixels=ctx.model.pixels,
                             canvas=given)
    except (ValueError, EditRefused) as exc:
        raise GenerationFailed(f"malformed job payload: {exc}") from None
    if layout.canvas != (spec.width, spec.height):
        raise GenerationFailed(f"malformed job payload: the edit makes {layout.canvas[0]}x{layout.canvas[1]}, "
                               f"the job asks for {spec.width}x{spec.height}")
    return layout


def grid_of(ctx: Context, spec: JobSpec, images: list[Image.Image], *, gpu_s: float, kind: str = "grid",
            strength: float = 1.0, work: float = 0.0) -> Output:
    """The Output of a grid or a variation whose images were rendered elsewhere (a batch, `worker.batch`): checked
    like any grid, with `gpu_s` the job's device time (its share of the call, and any source it recreated) and
    the work of its four images plus `work` (that source's)."""
    output = _grid_output(_check(ctx, spec, images))
    return dataclasses.replace(output, gpu_s=gpu_s,
                               work=work + quotas.render_of(spec, kind, strength=strength).mpx_steps)


def vary_strength(source: dict[str, Any]) -> float:
    """A variation's img2img strength from its source (strong unless it says subtle).

    Raises:
        GenerationFailed: an unknown strength (a malformed payload).
    """
    strength = VARY_STRENGTH.get(str(source.get("strength") or "strong"))
    if strength is None:
        raise GenerationFailed(f"malformed job payload: unknown strength {source.get('strength')!r}")
    return strength


@dataclass(frozen=True)
class Start:
    """A variation's starting image, read (or recreated) before its batch's call, and what recreating it cost."""

    image: Image.Image
    gpu_s: float
    work: float


def vary_start(ctx: Context, job_id: str, spec: JobSpec, source: dict[str, Any], should_cancel: Callable[[], bool]
               ) -> Start:
    """The image variation `job_id` starts from (`source_image`, as `make` reads it for a lone variation); the device
    time of a recreation that failed goes to the job's `gpu_s`, as in `make`.

    Raises:
        GenerationFailed: a malformed source, or a source image that expired and cannot be recreated (permanent).
        JobCancelled, TransientGenerationError: from recreating it.
    """
    with _metered(ctx, job_id) as meter:
        parent, index = _parse_source(source)
        start = source_image(ctx, meter, parent, index, should_cancel, safety=safety_of(spec))
    return Start(Image.open(io.BytesIO(start.png)), meter.seconds, meter.work)


def _upscaled_size(spec: JobSpec, image: Image.Image) -> tuple[int, int]:
    """The size an Upscale (2x) job makes: its spec's (what admission checked and charged). A job queued before
    specs carried the output's size has its source's size there: twice the source, as then."""
    if (spec.width, spec.height) == image.size:
        return image.width * UPSCALE_FACTOR, image.height * UPSCALE_FACTOR
    return spec.width, spec.height


def _upscale2x(ctx: Context, spec: JobSpec, image: Image.Image, size: tuple[int, int], hooks: Hooks
               ) -> list[Image.Image]:
    """`image` made `size` (twice its sides): the diffusers 2x upscaler when the worker has one (WORKER_UPSCALER);
    else a high-quality resize, then a light img2img pass at the new size to redraw the detail it blurred."""
    if ctx.engine.upscaler is not None:
        half = (size[0] // UPSCALE_FACTOR, size[1] // UPSCALE_FACTOR)
        small = image if image.size == half else image.resize(half, Image.Resampling.LANCZOS)
        return ctx.engine.upscale(spec, small, on_progress=hooks.on_progress, should_cancel=hooks.should_cancel)
    big = image.resize(size, Image.Resampling.LANCZOS)
    return ctx.engine.image_to_image(spec, big, UPSCALE2X_STRENGTH, count=1, size=size, on_progress=hooks.on_progress,
                                    should_cancel=hooks.should_cancel, preview_interval_s=hooks.preview_interval_s)


@dataclass(frozen=True)
class Source:
    """A button's starting image, as checked: its PNG and how the safety check replaced it ("" = it did not)."""

    png: bytes
    flagged_action: str = ""  # "blur" or "withhold" when the image is a replacement


def source_image(
    ctx: Context, meter: _Meter, parent: str, index: int, should_cancel: Callable[[], bool], depth: int = 0,
    *, safety: Safety,
) -> Source:
    """Image `index` (1-4) of `parent` (image 0 when the parent is a single image), recreated if it expired.

    A stored image carries its parent's flags (`keys.job_flagged`). An expired grid image is re-rendered alone
    (`render(spec, indices=(index - 1,))`) from the parent's prompt under `safety`, the clicked job's (the safety
    settings of the channel clicked in, which the bot screened the prompt for), not the parent's, and checked
    again; an expired upscale is the image of its own parent. Variations and 2x upscales are not recreated.

    Raises:
        GenerationFailed: it expired and cannot be recreated.
    """
    conn = ctx.conn
    record = jobs.get(conn, parent)
    single = _is_single(conn, parent, record)
    position = 0 if single else index - 1
    data = conn.get(keys.job_image(parent, position))
    if not isinstance(data, bytes) and record is not None and not single:
        data = _crop_from_grid(conn, parent, record.spec, position)
    if isinstance(data, bytes):
        action, flagged = output_check.flags_of(conn, parent)
        return Source(data, action if position in flagged else "")
    expired = GenerationFailed("the image this button refers to has expired; run the prompt again")
    if record is None or depth >= MAX_SOURCE_DEPTH:
        raise expired
    if record.kind == "grid":
        rendered = with_safety(record.spec, safety)
        one = dataclasses.replace(quotas.render_of(rendered), images=1)
        images = _gpu(meter, lambda: ctx.engine.render(rendered, indices=(index - 1,),
                                                      should_cancel=should_cancel), one)
        checked = _check(ctx, rendered, images)
        return Source(encode_png(checked.images[0]), checked.action if checked.flagged else "")
    if record.kind == "upscale":
        grandparent, grand_index = _parse_source(record.source)
        return source_image(ctx, meter, grandparent, grand_index, should_cancel, depth + 1, safety=safety)
    raise expired


def _crop_from_grid(conn: redis.Redis, parent: str, spec: JobSpec, position: int) -> bytes | None:
    """Image `position` (0-3) of a stored grid, as a PNG, when the grid holds it at full size (a grid shrunk to fit
    Discord's limit does not); None otherwise. The grid's tiles are the checked images themselves."""
    data = conn.get(keys.job_grid(parent))
    if not isinstance(data, bytes):
        return None
    grid = Image.open(io.BytesIO(data))
    size = (spec.width, spec.height)
    if grid.size != tile_box(3, size)[2:]:  # the full-size 2x2 grid ends where its fourth image does
        return None
    return encode_png(grid.crop(tile_box(position, size)))


def _is_single(conn: redis.Redis, parent: str, record: jobs.JobRecord | None) -> bool:
    """Whether the parent's result is one image: by its kind, or (record expired) by which images it stored."""
    if record is not None:
        return record.kind in SINGLE_IMAGE_KINDS
    return not conn.exists(keys.job_image(parent, 1))


def _parse_source(source: dict[str, Any]) -> tuple[str, int]:
    parent, index = source.get("job_id"), source.get("index")
    if not isinstance(parent, str) or not JOB_ID.fullmatch(parent):
        raise GenerationFailed("malformed job payload: the source has no valid job_id")
    if not isinstance(index, int) or not 1 <= index <= 4:
        raise GenerationFailed(f"malformed job payload: source index {index!r} is not 1-4")
    return parent, index


def _check(ctx: Context, spec: JobSpec, images: list[Image.Image]) -> output_check.Checked:
    """The worker's safety check of new images (`output_check.check` with the worker's classifier)."""
    return output_check.check(ctx.classifier, ctx.safety_threshold, spec, images)


def _grid_output(checked: output_check.Checked) -> Output:
    grid = encode_png(compose_grid(checked.images))
    return Output([], grid, checked.flagged, checked.action, checked.detail, later=tuple(checked.images))


def _gpu_text(meter: _Meter, call: Callable[[], tuple[Image.Image, list[str]]]) -> tuple[Image.Image, list[str]]:
    """Run a describer call, adding the time it held the device to `meter`."""
    started = time.monotonic()
    try:
        return call()
    finally:
        meter.seconds += time.monotonic() - started


def _gpu(meter: _Meter, call: Callable[[], list[Image.Image]], render: quotas.Render) -> list[Image.Image]:
    """Run one engine call that renders `render`, adding the time it held the device to `meter` (also when it
    fails) and its work once it succeeded."""
    started = time.monotonic()
    try:
        images = call()
    finally:
        meter.seconds += time.monotonic() - started
    meter.work += render.mpx_steps
    return images
