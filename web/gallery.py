"""A member's jobs as the web shows them: filtered, paged, newest first; one job with its access check.

Reads go through redis.asyncio with the parsing of `core.jobs` (`jobs.from_hash`): the gallery's index is
`keys.user_gallery` (every job of the member, scored by creation time, written with the job by
`core.userjobs.add_writes`). A page costs two round trips: one script for the index and the few fields the filters
need of every job in it, then the whole records of the page. The filters run here, in Python (Unicode-aware case
folding), on those fields.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import redis.asyncio as aredis
from PIL import Image

from core import jobs, keys, reposting
from core.queue import SINGLE_IMAGE_KINDS
from core.spec import JobSpec

FILTER_FIELDS = ("state", "kind", "visibility", "spec")
"""The fields of each job the filters look at; the spec (the bulk of a record) only for text and model."""

# KEYS: the gallery index. ARGV: highest score, lowest score, the job hashes' key prefix, the fields to read.
# Returns {job id, field values...} for each job in the score range, newest first: one command instead of one per
# job (a pipeline of 1,000 HMGETs took ~100 ms of the web process' CPU; this takes a few ms of Redis').
_INDEXED_FIELDS = """
local out = {}
for i, id in ipairs(redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[2])) do
  local row = redis.call('HMGET', ARGV[3] .. id, unpack(ARGV, 4))
  table.insert(row, 1, id)
  out[i] = row
end
return out
"""

MAX_TEXT_CHARS = 200
"""Longest prompt-text filter (a longer one is cut)."""


@dataclass(frozen=True)
class Filters:
    """What the gallery's form asks for; every field optional."""

    text: str = ""  # words the prompt contains (case-insensitive)
    model: str = ""
    kind: str = ""
    since: date | None = None  # made on or after (UTC day)
    until: date | None = None  # made on or before (UTC day)
    hidden: bool = False  # show the member's hidden jobs instead of the others
    page: int = 1

    @classmethod
    def from_query(cls, query: Any) -> Filters:
        """From the query string; values that do not parse are ignored (a bad date shows every date)."""
        try:
            page = max(1, min(int(query.get("page", "1")), 10_000))
        except ValueError:
            page = 1
        return cls(text=query.get("q", "").strip()[:MAX_TEXT_CHARS], model=query.get("model", "").strip()[:100],
                   kind=query.get("kind", "").strip()[:20], since=_day(query.get("since", "")),
                   until=_day(query.get("until", "")), hidden=query.get("hidden", "") == "1", page=page)

    def score_range(self) -> tuple[float | str, float | str]:
        """The gallery index's score bounds (Unix s) for the dates."""
        low: float | str = _unix(self.since) if self.since else "-inf"
        high: float | str = _unix(self.until + timedelta(days=1)) if self.until else "+inf"
        return low, high


@dataclass(frozen=True)
class Page:
    records: list[jobs.JobRecord]
    page: int
    pages: int
    total: int


async def page(conn: aredis.Redis, owner: str, filters: Filters, size: int) -> Page:
    """One page of the owner's jobs that match `filters`, newest first."""
    low, high = filters.score_range()
    fields = FILTER_FIELDS if filters.text or filters.model else FILTER_FIELDS[:-1]
    rows = await conn.eval(_INDEXED_FIELDS, 1, keys.user_gallery(owner), high, low, keys.job(""), *fields)
    matching = [_text(row[0]) for row in rows if _matches(row[1:], filters)]
    pages = max(1, math.ceil(len(matching) / size))
    number = min(filters.page, pages)
    chosen = matching[(number - 1) * size: number * size]
    async with conn.pipeline(transaction=False) as pipe:
        for job_id in chosen:
            pipe.hgetall(keys.job(job_id))
        records = [jobs.from_hash(i, data) for i, data in zip(chosen, await pipe.execute(), strict=True) if data]
    return Page(records, number, pages, len(matching))


def _matches(row: list[bytes | None], filters: Filters) -> bool:
    state, kind, visibility, spec_json = [*(_text(v) if v is not None else None for v in row), None][:4]
    if state is None:  # the record expired
        return False
    if visibility == jobs.DELETED or (visibility == jobs.HIDDEN) != filters.hidden:
        return False
    if filters.kind and (kind or "grid") != filters.kind:
        return False
    if spec_json is not None:
        spec = json.loads(spec_json)
        if filters.model and str(spec.get("model", "")).lower() != filters.model.lower():
            return False
        if filters.text and filters.text.lower() not in str(spec.get("prompt", "")).lower():
            return False
    return True


async def get(conn: aredis.Redis, job_id: str) -> jobs.JobRecord | None:
    """The job's record, or None (no such job, or an id that is not one)."""
    if not jobs_id_ok(job_id):
        return None
    data: dict[bytes, bytes] = await conn.hgetall(keys.job(job_id))  # type: ignore[assignment]
    return jobs.from_hash(job_id, data) if data else None


THUMB_SIDE = 384
"""Longest side of a gallery thumbnail, in pixels (a 2x2 grid of 1024-pixel images is 2048: 28x fewer pixels)."""

THUMB_QUALITY = 85
"""JPEG quality of thumbnails."""


async def thumbnail(conn: aredis.Redis, job_id: str) -> bytes | None:
    """The job's grid as a small JPEG, made once and kept as long as the grid; None when the grid has expired."""
    cached = await conn.get(keys.job_thumb(job_id))
    if isinstance(cached, bytes) and cached:
        return cached
    async with conn.pipeline(transaction=False) as pipe:
        pipe.get(keys.job_grid(job_id))
        pipe.pttl(keys.job_grid(job_id))
        grid, ttl_ms = await pipe.execute()
    if not grid:
        return None
    small = await asyncio.to_thread(shrink, grid)
    await conn.set(keys.job_thumb(job_id), small, px=ttl_ms if ttl_ms and ttl_ms > 0 else jobs.RECORD_TTL_S * 1000)
    return small


def shrink(png: bytes) -> bytes:
    """A PNG made a JPEG of at most THUMB_SIDE pixels a side."""
    with Image.open(io.BytesIO(png)) as image:
        image.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.convert("RGB").save(out, format="JPEG", quality=THUMB_QUALITY)
    return out.getvalue()


def jobs_id_ok(job_id: str) -> bool:
    return len(job_id) == 32 and all(c in "0123456789abcdef" for c in job_id)


def may_view(record: jobs.JobRecord, owner: str, admin: bool) -> bool:
    """Owner (unless they deleted it), admin (always: deleting is soft), anyone signed in for a public job whose
    images were checked (one made in an age-restricted channel is shown only there: `core.reposting`)."""
    if admin:
        return True
    if record.visibility == jobs.DELETED:
        return False
    if record.owner == owner:
        return True
    return record.visibility == jobs.PUBLIC and not reposting.made_unchecked(record.spec)


def image_count(record: jobs.JobRecord) -> int:
    """How many single images the job has (`keys.job_image` 0..n-1): one for an upscale or a `/describe` (the image
    described), four for a grid."""
    return 1 if record.kind in SINGLE_IMAGE_KINDS or record.kind == "describe" else 4


def full_prompt(spec: JobSpec) -> str:
    """The prompt with the parameters that remake it: what the job page's copy button copies."""
    parts = [spec.prompt, f"--ar {spec.aspect}", f"--seed {spec.seed}", f"--stylize {spec.stylize}"]
    if spec.chaos:
        parts.append(f"--chaos {spec.chaos}")
    if spec.negative_prompt:
        parts.append(f"--no {spec.negative_prompt}")
    return " ".join(parts)


def _day(value: str) -> date | None:
    try:
        return date.fromisoformat(value.strip()) if value.strip() else None
    except ValueError:
        return None


def _unix(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
