"""Vary (Region): image k of a job, a mask drawn over it in the browser (white: repaint, black: keep), a new
prompt; queued as a `region_mask` job with its mask stored beside it (`keys.job_mask`).

Everything a worker needs is checked here, before anything is charged: the mask is a PNG of the image's exact
size, no larger than MAX_MASK_BYTES, and paints between MIN_MASKED and MAX_MASKED of it; the prompt is screened
and the job admitted like a variation. The worker repaints the mask with the model's inpainting call (the one
Zoom Out and Pan use) and keeps every pixel outside it (`worker.kinds`, `worker.editing.finish_masked`).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import random
import time

from PIL import Image, UnidentifiedImageError

from core import jobs, keys, usersettings
from core.buttonjobs import at_base_size
from core.errors import ImagineError, JobExpired
from core.spec import MAX_SEED
from web.actions import Deps, admit_and_enqueue, screened
from web.session import Session

REGION_KIND = "region_mask"
"""The job kind of a Vary (Region) drawn in the web editor (`core.payload.KINDS`); Discord's Vary (Region) buttons
pick one of `core.canvas.REGIONS` instead and make an `edit` job."""

MAX_MASK_BYTES = 2 * 1024 * 1024
"""Largest mask PNG accepted (a 1024x1024 one-bit-per-pixel drawing is far smaller)."""

MIN_MASKED = 0.005
MAX_MASKED = 0.95
"""Shares of the image a mask must paint: at least a visible stroke, and not the whole image (that is a re-roll)."""

MAX_PROMPT_CHARS = 1000
"""Longest prompt for the repainted region."""

MASK_TTL_S = jobs.RECORD_TTL_S
"""The mask is kept as long as the job's record."""


class BadMask(ImagineError):
    """The mask or the prompt cannot make a Vary (Region) job; the message says why."""


def read_mask(data_url: str, size: tuple[int, int]) -> bytes:
    """The mask as a one-channel PNG (white: repaint), from the canvas' `data:image/png;base64,...`.

    Raises:
        BadMask: not a PNG, not `size`, too large, or painting too little or too much.
    """
    prefix = "data:image/png;base64,"
    if not data_url.startswith(prefix):
        raise BadMask("The mask must be a PNG drawn on the editor's canvas.")
    if len(data_url) > MAX_MASK_BYTES * 4 // 3 + len(prefix) + 4:
        raise BadMask("The mask is too large.")
    try:
        raw = base64.b64decode(data_url[len(prefix):], validate=True)
        with Image.open(io.BytesIO(raw)) as image:
            if image.format != "PNG":
                raise BadMask("The mask must be a PNG.")
            if image.size != size:
                raise BadMask(f"The mask is {image.size[0]}x{image.size[1]}; the image is {size[0]}x{size[1]}.")
            alpha = image.getchannel("A") if "A" in image.getbands() else image.convert("L")
            mask = alpha.point(lambda v: 255 if v >= 128 else 0).convert("L")
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as exc:
        raise BadMask("The mask could not be read as a PNG.") from exc
    painted = (mask.histogram()[255]) / (size[0] * size[1])
    if painted < MIN_MASKED:
        raise BadMask("Paint the region to change first (the mask is empty).")
    if painted > MAX_MASKED:
        raise BadMask("The mask covers the whole image: use Re-roll or a variation instead.")
    out = io.BytesIO()
    mask.save(out, format="PNG", optimize=True)
    return out.getvalue()


def submit(deps: Deps, session: Session, parent: jobs.JobRecord, index: int, prompt: str, mask_url: str) -> str:
    """Check the mask and the prompt, admit and enqueue the `region_mask` job; its id.

    Raises:
        BadMask: see `read_mask`; also an empty or too long prompt, or an image index the job does not have.
        JobExpired: the parent job has no images (it is not done).
        Otherwise as `web.actions.press`.
    """
    if parent.state != jobs.DONE:
        raise JobExpired("This job has no finished image to repaint.")
    if parent.kind in ("upscale", "upscale2x") and index != 1 or not 1 <= index <= 4:
        raise BadMask("Choose one of the job's images.")
    prompt = " ".join(prompt.split())
    if not prompt or len(prompt) > MAX_PROMPT_CHARS:
        raise BadMask(f"Describe what to paint in the region (1 to {MAX_PROMPT_CHARS} characters).")
    base = at_base_size(parent.spec) if parent.kind != "upscale2x" else parent.spec
    mask = read_mask(mask_url, (base.width, base.height))
    seed = random.SystemRandom().randint(0, MAX_SEED)
    spec = dataclasses.replace(base, prompt=prompt, seed=seed, seed_random=True)
    spec = screened(deps.conn, session, spec, now=time.time())
    source = {"job_id": parent.job_id, "index": index}
    # The mask is written in the enqueue's atomic step, under the id admission gives the job.
    stealth = usersettings.get(deps.conn, session.owner).stealth
    return admit_and_enqueue(deps, session, spec, kind=REGION_KIND, source=source, stealth=stealth,
                             writes_for=lambda job_id: [("SET", keys.job_mask(job_id), mask, "EX", MASK_TTL_S)])
