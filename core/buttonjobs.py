"""The job a button asks for, from the clicked job's record: the same for a click in Discord (`bot.submit`) and on
the web (`web.actions`). Pure but for `read_parent`'s reads."""

from __future__ import annotations

import dataclasses
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from core import delivery as deliveries
from core import jobs, keys
from core.buttons import ASK_ACTIONS, EDIT_ACTIONS, ButtonRef
from core.canvas import REGIONS, ZOOM_MAX, Edit, custom_zoom, plan
from core.errors import EditRefused, JobExpired, MalformedInteraction, TierLimit
from core.models import ModelRegistry
from core.queue import SINGLE_IMAGE_KINDS
from core.safety import parse_flags
from core.spec import BASE_SIZE, MAX_SEED, JobSpec, Mode


@dataclass(frozen=True)
class ButtonJob:
    """The job a click asks for."""

    spec: JobSpec
    kind: str
    source: dict[str, Any]
    label: str  # shown in the job's message, e.g. "Image #2"


FROM_STORED_IMAGE = frozenset({"upscale", "vary", "upscale2x", "edit"})
"""Button jobs that start from the clicked job's stored image (a copy, or an image-to-image of it); a re-roll
starts from its prompt only."""


@dataclass(frozen=True)


class Parent:
    """What a click reads of the clicked job."""

    record: jobs.JobRecord | None  # None: expired
    origin: deliveries.Delivery | None  # where it was made
    stored: bool  # the image the button starts from is still stored (after WORKER_IMAGE_TTL_S it is not)
    flagged: bool  # that image is one the safety check replaced (blurred or withheld)


def read_parent(conn: redis.Redis, ref: ButtonRef) -> Parent:
    """The clicked job's record, where it was made, and the state of the image the button starts from."""
    record = jobs.get(conn, ref.job_id)
    single = record is None or record.kind in SINGLE_IMAGE_KINDS
    position = 0 if single else max(ref.index, 1) - 1
    stored = bool(conn.exists(keys.job_image(ref.job_id, position)))
    _, flagged = parse_flags(conn.get(keys.job_flagged(ref.job_id)))
    return Parent(record, deliveries.load(conn, ref.job_id), stored, position in flagged)


def check_editable(job: ButtonJob, parent: Parent) -> None:
    """Refuse an edit (zoom, pan, square, region) of an image that expired or that the safety check replaced: its
    pixels are the edit's start, and a replacement's are not the picture.

    Raises:
        JobExpired, EditRefused: it is.
    """
    if job.kind != "edit":
        return
    if not parent.stored:
        raise JobExpired("This image has expired, so it cannot be edited; run the prompt again.")
    if parent.flagged:
        raise EditRefused("This image was replaced by the server's image safety check, so it cannot be edited.")


def check_upscale2x(registry: ModelRegistry, spec: JobSpec) -> None:
    """Refuse an Upscale (2x) whose result is larger than its model's upscales go (the tier's limit is admission's).

    Raises:
        TierLimit: it is.
    """
    model = registry.get(spec.model)
    if model is not None and spec.width * spec.height > model.max_upscaled_pixels:
        raise TierLimit(f"Upscale (2x) would make a {spec.width}x{spec.height} image, larger than model "
                        f"{model.name} makes ({model.max_upscaled_pixels} pixels): this image is as large as it gets.")


def upscaled(spec: JobSpec) -> JobSpec:
    """The spec of an Upscale (2x) of an image of `spec`'s size: twice its sides, remembering the grid's size."""
    base = spec.extras.get(BASE_SIZE) or [spec.width, spec.height]
    extras = {**spec.extras, BASE_SIZE: list(base)}
    return dataclasses.replace(spec, width=spec.width * 2, height=spec.height * 2, extras=extras)


def edited(spec: JobSpec, edit: Edit, registry: ModelRegistry | None) -> tuple[JobSpec, str]:
    """The spec of `edit` of an image of `spec`'s size (the canvas `core.canvas.plan` makes for its model), and
    its label, which says when the image had to be scaled down to keep within the model's pixel budget.

    Raises:
        EditRefused: see `button_job`.
    """
    model = registry.get(spec.model) if registry is not None else None
    if model is None:
        raise EditRefused(f"Model {spec.model} is not served here any more, so its images cannot be edited.")
    layout = plan(edit, (spec.width, spec.height), multiple=model.multiple, max_pixels=model.pixels)
    width, height = layout.canvas
    extras = {k: v for k, v in spec.extras.items() if k != BASE_SIZE}
    ratio = math.gcd(width, height)
    label = edit.label()
    if layout.scaled:
        label += (f" (scaled down to {width}x{height}: model {model.name} makes at most {model.pixels} pixels, so "
                  "the kept part shrinks with each pan from here)" if edit.op == "pan" else
                  f" (scaled down to {width}x{height}: model {model.name} makes at most {model.pixels} pixels)")
    return dataclasses.replace(spec, width=width, height=height, aspect=f"{width // ratio}:{height // ratio}",
                               extras=extras), label


def with_edited_prompt(job: ButtonJob, action: str, text: str, parse_one: Callable[[str], JobSpec]) -> ButtonJob:
    """`job` with the prompt its clicker edited first (Remix mode, Vary (Region), Custom Zoom), `parse_one` being
    how the front end parses one prompt as `/imagine` would under the clicker's saved defaults. A re-roll takes the
    whole new prompt, parameters too; a job from an image keeps its size and seed and takes the new text, `--no`,
    `--chaos` and `--stylize`. Custom Zoom (`zoomc`) also takes the `--zoom` given (1 to 2, default 2) and, with
    `--ar`, a canvas of that aspect (the model's size for it) instead of the image's own.

    Raises:
        PromptError: the text does not parse, names more than one prompt, or has a `--zoom` out of range.
    """
    if action == "zoomc":
        text, zoom = custom_zoom(text)
        new = parse_one(text)
        spec = with_text_of(job.spec, new)
        if ASPECT_GIVEN.search(text):
            spec = dataclasses.replace(spec, width=new.width, height=new.height, aspect=new.aspect)
        zoomed = Edit("zoom", zoom=zoom)
        return ButtonJob(spec, "edit", {**job.source, **zoomed.to_source()}, zoomed.label())
    new = parse_one(text)
    if job.kind == "grid":
        return dataclasses.replace(job, spec=dataclasses.replace(new, mode=job.spec.mode))
    return dataclasses.replace(job, spec=with_text_of(job.spec, new))


ASPECT_GIVEN = re.compile(r"(?<!\S)(?:--|\u2014|\u2013)(?:ar|aspect)(?!\S)", re.IGNORECASE)
"""An `--ar` written in Custom Zoom's prompt."""


def prompt_to_edit(job: ButtonJob, action: str) -> str:
    """The prompt a click that edits first shows for editing: the job's, with `--zoom 2` for Custom Zoom."""
    return f"{job.spec.prompt} --zoom 2" if action == "zoomc" else job.spec.prompt


def with_text_of(spec: JobSpec, new: JobSpec) -> JobSpec:
    """`spec` with the text, `--no`, `--chaos` and `--stylize` of `new`."""
    return dataclasses.replace(spec, prompt=new.prompt, parts=new.parts, negative_prompt=new.negative_prompt,
                               chaos=new.chaos, stylize=new.stylize, guidance_scale=new.guidance_scale)


def with_new_seed(spec: JobSpec, rng: random.Random) -> JobSpec:
    """`spec` with a new random seed."""
    return dataclasses.replace(spec, seed=rng.randint(0, MAX_SEED), seed_random=True)


def at_base_size(spec: JobSpec) -> JobSpec:
    """`spec` at the size of the grid its image came from (itself, unless it is an Upscale (2x)'s)."""
    base = spec.extras.get(BASE_SIZE)
    if not base:
        return spec
    extras = {k: v for k, v in spec.extras.items() if k != BASE_SIZE}
    return dataclasses.replace(spec, width=int(base[0]), height=int(base[1]), extras=extras)


def button_job(
    parent: jobs.JobRecord | None, ref: ButtonRef, mode: Mode, rng: random.Random | None = None, *,
    registry: ModelRegistry | None = None, region: str = "",
) -> ButtonJob:
    """The new job for a click on `ref`, run in the clicker's `mode`; an edit is sized for its model in `registry`;
    Vary (Region) repaints `region` (`core.canvas.REGIONS`).

    Raises:
        JobExpired: the parent's record is gone.
        EditRefused: an edit the model cannot make (past its aspect limit, a square of a square), or of a model
            this bot no longer serves.
    """
    if parent is None:
        raise JobExpired(f"This job is too old: job {ref.job_id} has expired, so its buttons no longer work.")
    rng = rng or random.SystemRandom()
    same = dataclasses.replace(parent.spec, mode=mode)  # the parent's image size: what an upscale copies
    base = at_base_size(same)  # what variations and re-rolls render (an Upscale (2x)'s grid size)
    reseeded = with_new_seed(base, rng)
    source: dict[str, Any] = {"job_id": ref.job_id, "index": ref.index}
    if ref.action == "u":
        return ButtonJob(same, "upscale", source, f"Image #{ref.index}")
    if ref.action == "v":
        return ButtonJob(reseeded, "vary", {**source, "strength": "strong"}, f"Variations of image #{ref.index}")
    if ref.action in ("strong", "subtle"):
        label = f"Variations ({ref.action.capitalize()})"
        return ButtonJob(reseeded, "vary", {**source, "strength": ref.action}, label)
    if ref.action == "up2x":
        return ButtonJob(upscaled(same), "upscale2x", source, "Upscaled (2x)")
    if ref.action == "reroll":
        return ButtonJob(reseeded, "grid", {"job_id": ref.job_id}, "Re-roll")
    if ref.action in EDIT_ACTIONS or ref.action in ASK_ACTIONS:
        if ref.action == "region" and region not in REGIONS:
            raise MalformedInteraction(f"Vary (Region) needs one of the regions, not {region[:40]!r}.")
        edit = EDIT_ACTIONS.get(ref.action) or (Edit("zoom", zoom=ZOOM_MAX) if ref.action == "zoomc" else
                                                Edit("region", region=region))
        spec, label = edited(with_new_seed(same, rng), edit, registry)
        return ButtonJob(spec, "edit", {**source, **edit.to_source()}, label)
    raise ValueError(f"no job for button action {ref.action!r}")
