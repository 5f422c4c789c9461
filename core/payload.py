"""The job payload as the worker reads it: checked whole, at the door, before anything else is done with it.

`core.queue.payload` writes `{"job_id", "spec", "owner", "kind", "source"}`; `JobPayload.from_json` takes back exactly
that shape and nothing else. Anyone who can write to Redis can hand a worker any JSON, so every field is checked:
its type, its range, ids by their pattern, no unknown or missing key, and the whole payload, each string and each
list under a size cap (checked before anything is copied). Any fault raises `MalformedPayload`, naming the field;
nothing else is raised, whatever the input.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from core.canvas import Edit
from core.errors import MalformedPayload
from core.models import ModelInfo
from core.spec import MAX_TEXT_CHARS, JobSpec

KINDS = ("grid", "upscale", "vary", "upscale2x", "edit", "region_mask", "describe")
"""What a job makes: a new grid (imagine, re-roll); image k of a parent grid at full size (U1-U4); a new grid of
variations of image k (V1-V4, Vary Strong/Subtle); a 2x upscale of a single image; a new grid of an image zoomed
out, panned, made square or with a region redrawn (`core.canvas`); a grid of image k repainted inside a mask drawn
in the web editor (`keys.job_mask`) with a new prompt (workers refuse it until they can paint it: `worker.kinds`);
four prompts for the image of its spec's image prompt (`/describe`)."""


MAX_PAYLOAD_CHARS = 64 * 1024
"""Largest payload, counted as the characters of its JSON (strings' lengths plus a few per value)."""

MAX_STRING_CHARS = MAX_TEXT_CHARS
"""Longest string anywhere in a payload."""

MAX_LIST_ITEMS = 256
"""Longest list (or object) anywhere in a payload."""

MAX_DEPTH = 6
"""Deepest nesting of lists and objects (the spec's `extras.safety` is 3 deep)."""

MAX_OWNER_CHARS = 128
"""Longest owner (`discord:<user id>`, `cli:<login>`)."""

JOB_ID = re.compile(r"[0-9a-f]{32}")
"""A job id as `core.jobs.new_job_id` makes it (uuid4 hex); a button job's parent is one too."""

GRID_INDEXES = range(1, 5)
"""A button job's image of its parent grid, 1-4."""

VARY_STRENGTHS = ("strong", "subtle")
"""A variation job's strength (`worker.kinds.VARY_STRENGTH`)."""

EXTRA_SOURCE_FIELDS = {"vary": ("strength",), "edit": ("op", "zoom", "direction", "region")}
"""Source fields beside `job_id` and `index`, by kind."""

_FIELDS = frozenset({"job_id", "spec", "owner", "kind", "source"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Source:
    """What a button job starts from: image `index` (1-4) of job `job_id`, and for a variation its strength; a
    re-roll (a grid) names only its parent job."""

    job_id: str
    index: int | None = None
    strength: str | None = None
    edit: Edit | None = None  # an edit job's zoom, pan, square or region


@dataclass(frozen=True)
class JobPayload:
    """One job's payload, every field checked."""

    job_id: str
    spec: JobSpec
    owner: str
    kind: str
    source: Source | None  # the parent image for button kinds; a re-roll's parent, or None, for a grid

    @classmethod
    def from_json(cls, data: Any) -> JobPayload:
        """Check a payload as RQ decoded it (the job function's argument) and return it typed; `check_fits` then
        checks its size against the model that serves it.

        Raises:
            MalformedPayload: the payload is not one this project writes; the message names what is wrong.
        """
        _bounded(data)
        if not isinstance(data, dict):
            raise MalformedPayload(f"the payload must be an object, not {type(data).__name__}")
        unknown, missing = data.keys() - _FIELDS, _FIELDS - data.keys()
        if unknown:
            raise MalformedPayload(f"unknown field(s) {', '.join(sorted(repr(k)[:40] for k in unknown)[:5])}")
        if missing:
            raise MalformedPayload(f"the payload lacks {', '.join(sorted(missing))}")
        job_id = _job_id("job_id", data["job_id"])
        owner = data["owner"]
        if not isinstance(owner, str) or not 1 <= len(owner) <= MAX_OWNER_CHARS or _CONTROL.search(owner):
            raise MalformedPayload(f"owner must be 1 to {MAX_OWNER_CHARS} printable characters")
        kind = data["kind"]
        if kind not in KINDS:
            raise MalformedPayload(f"kind must be one of {', '.join(KINDS)}")
        source = _source(str(kind), data["source"])
        return cls(job_id, JobSpec.from_dict(data["spec"]), owner, str(kind), source)

    def source_dict(self) -> dict[str, Any]:
        """The source as the payload carries it (`{}` for a grid)."""
        if self.source is None:
            return {}
        out: dict[str, Any] = {"job_id": self.source.job_id}
        if self.source.index is not None:
            out["index"] = self.source.index
        if self.source.strength is not None:
            out["strength"] = self.source.strength
        if self.source.edit is not None:
            out.update(self.source.edit.to_source())
        return out


def _job_id(where: str, value: Any) -> str:
    if not isinstance(value, str) or not JOB_ID.fullmatch(value):
        raise MalformedPayload(f"{where} must be 32 lowercase hex digits")
    return value


def _source(kind: str, value: Any) -> Source | None:
    if not isinstance(value, dict):
        raise MalformedPayload("source must be an object")
    if kind in ("grid", "describe"):  # a new grid or description: no source, or a re-roll's parent job
        if value.keys() - {"job_id"}:
            raise MalformedPayload(f"a {kind} job's source names only the job it re-rolls")
        return Source(_job_id("source.job_id", value["job_id"])) if value else None
    allowed = {"job_id", "index", *EXTRA_SOURCE_FIELDS.get(kind, ())}
    unknown = value.keys() - allowed
    if unknown:
        raise MalformedPayload(f"source has unknown field(s) {', '.join(sorted(repr(k)[:40] for k in unknown)[:5])}")
    parent = _job_id("source.job_id", value.get("job_id"))
    index = value.get("index")
    if type(index) is not int or index not in GRID_INDEXES:
        raise MalformedPayload("source.index must be 1, 2, 3 or 4")
    strength = value.get("strength", "strong" if kind == "vary" else None)
    if kind == "vary" and strength not in VARY_STRENGTHS:
        raise MalformedPayload(f"source.strength must be {' or '.join(VARY_STRENGTHS)}")
    edit = None
    if kind == "edit":
        try:
            edit = Edit.from_source(value)
        except ValueError as exc:
            raise MalformedPayload(str(exc)) from None
    return Source(parent, index, strength, edit)


def check_fits(spec: JobSpec, model: ModelInfo, kind: str = "grid") -> None:
    """The spec's size is one the bot could have made for `model` and `kind`: multiples of its `multiple`, within its
    pixel budget, or for an Upscale (2x) within its upscale limit (`ModelInfo.max_upscaled_pixels`). The spec's
    model name is the caller's to compare first: another model is not a malformed job.

    Raises:
        MalformedPayload: it is not.
    """
    if spec.width % model.multiple or spec.height % model.multiple:
        raise MalformedPayload(f"spec size {spec.width}x{spec.height} is not a multiple of {model.multiple}")
    budget = model.max_upscaled_pixels if kind == "upscale2x" else model.pixels
    if spec.width * spec.height > budget:
        raise MalformedPayload(f"spec size {spec.width}x{spec.height} is over the model's {budget} pixels")


def _bounded(data: Any) -> None:
    """Walk the decoded JSON once, before anything copies it: only JSON types, finite numbers, each string and list
    (or object) and the nesting under its cap, and the whole under MAX_PAYLOAD_CHARS. Messages name the place."""
    size = 0
    stack: list[tuple[Any, str]] = [(data, "")]
    while stack:
        value, where = stack.pop()
        depth = where.count(".") + where.count("[")
        size += 8  # a value's punctuation, roughly
        shown = where.lstrip(".") or "the payload"
        if isinstance(value, str):
            if len(value) > MAX_STRING_CHARS:
                raise MalformedPayload(f"{shown} is a string longer than {MAX_STRING_CHARS} characters")
            size += len(value)
        elif isinstance(value, list | dict):
            if depth >= MAX_DEPTH:
                raise MalformedPayload(f"{shown} nests deeper than {MAX_DEPTH} levels")
            if len(value) > MAX_LIST_ITEMS:
                raise MalformedPayload(f"{shown} has more than {MAX_LIST_ITEMS} items")
            if isinstance(value, dict):
                for key, item in value.items():
                    if not isinstance(key, str):
                        raise MalformedPayload(f"{shown} has a key that is not a string")
                    stack.append((key, f"{where}.<key>"))
                    stack.append((item, f"{where}.{key[:40]}"))
            else:
                stack.extend((item, f"{where}[{index}]") for index, item in enumerate(value))
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise MalformedPayload(f"{shown} is not a finite number (NaN or infinity)")
        elif value is not None and not isinstance(value, int):  # bool is an int
            raise MalformedPayload(f"{shown} is a {type(value).__name__}, not a JSON value")
        if size > MAX_PAYLOAD_CHARS:
            raise MalformedPayload(f"the payload is larger than {MAX_PAYLOAD_CHARS} characters")
