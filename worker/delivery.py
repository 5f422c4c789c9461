"""Showing a job in Discord from the worker: live progress edits while it runs, then its outcome, exactly once.

While the interaction token is valid (`core.delivery.interaction_token`), the job's message is edited through the
interaction webhook. Once the token is gone (expired in Redis, or Discord answers 401 50027 / 404 Unknown Webhook)
the outcome is posted as a new channel message with the bot token, mentioning the user; its id is recorded so that
a later attempt edits it instead of posting again. `keys.job_final_delivered` is set only after Discord confirmed
the outcome, and once set nothing is sent for the job any more. Delivery never fails a job: the grid stays in Redis,
errors are logged by route template (never a URL: an interaction token is part of it), and an outcome Discord could
not take (unreachable, 5xx, 429) is delivered again later by the workers' maintenance (`worker.redelivery`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis
from PIL import Image

from core import buttons, delivery, jobs, keys
from core.canvas import Edit
from core.delivery import Delivery
from core.images import numbered
from core.models import ModelInfo
from core.prompt import canonical
from core.queue import SINGLE_IMAGE_KINDS
from worker import redelivery
from worker.discord_http import Attachment, DiscordAPIError, DiscordHTTP
from worker.output_check import flags_of
from worker.safety import spoiler_name

log = logging.getLogger(__name__)

WEBHOOK_MESSAGE = "/webhooks/{application_id}/{token}/messages/{message_id}"
CHANNEL_MESSAGES = "/channels/{channel_id}/messages"
CHANNEL_MESSAGE = "/channels/{channel_id}/messages/{message_id}"

MIN_EDIT_INTERVAL_S = 1.5
"""Least time between two progress edits of one message: Discord rate-limits edits to about 5 per 5 s."""

PREVIEW_MAX_SIDE_PX = 256
"""Progress previews are scaled to fit this many pixels on their longer side."""

PREVIEW_JPEG_QUALITY = 70
"""JPEG quality of a preview (a few KB: it is replaced within seconds)."""

NONCE_CHARS = 25
"""Discord's limit on a message nonce; with `enforce_nonce` a repeated post with the same nonce is not duplicated."""

PROMPT_MAX_CHARS = 1700
"""The prompt shown in a message is cut to this many characters (messages hold 2000)."""

DELIVERED_TTL_S = delivery.DELIVERY_TTL_S
"""How long the "final result delivered" flag and the posted message id are kept (as long as the delivery record)."""

STRENGTH_LABELS = {"strong": "Strong", "subtle": "Subtle"}


def headline(record: jobs.JobRecord, user_id: str, status: str = "") -> str:
    """`**<prompt and parameters>** - <@user> (<status>) (<mode>)`, the first line of every message of a job."""
    spec = record.spec
    prompt = canonical(spec, with_seed=False)
    if len(prompt) > PROMPT_MAX_CHARS:
        prompt = prompt[: PROMPT_MAX_CHARS - 1] + "…"
    status = f" ({status})" if status else ""
    return f"**{prompt}** - <@{user_id}>{status} ({spec.mode})"


def result_text(record: jobs.JobRecord, user_id: str) -> str:
    """The text under a finished job's image, by kind (Midjourney's wording)."""
    spec, source = record.spec, record.source
    prompt = headline(record, user_id).split(" - ", 1)[0]
    if record.kind == "upscale":
        return f"{prompt} - Image #{source.get('index', 1)} <@{user_id}>"
    if record.kind == "upscale2x":
        return f"{prompt} - Upscaled (2x) by <@{user_id}> ({spec.mode})"
    if record.kind == "vary":
        label = STRENGTH_LABELS.get(str(source.get("strength")), "Strong")
        return f"{prompt} - Variations ({label}) by <@{user_id}> ({spec.mode}) --seed {spec.seed}"
    if record.kind == "edit":
        try:
            label = Edit.from_source(source).label()
        except ValueError:  # a record written by another version
            label = "Edited"
        return f"{prompt} - {label} by <@{user_id}> ({spec.mode}) --seed {spec.seed}"
    return f"{headline(record, user_id)} --seed {spec.seed}"


def described_text(conn: redis.Redis, record: jobs.JobRecord, user_id: str) -> str:
    """A `/describe`'s answer: who asked, then its four numbered prompts (`keys.job_prompts`)."""
    raw = conn.get(keys.job_prompts(record.job_id))
    prompts = json.loads(raw) if isinstance(raw, bytes) else []
    return f"<@{user_id}> described the image ({record.spec.mode}):\n{numbered(prompts, buttons.NUMBER_EMOJI)}"


def flagged_note(action: str, flagged: tuple[int, ...], single: bool) -> str:
    """A line under a result whose images the safety check replaced ("" when none was)."""
    if not flagged:
        return ""
    which = "This image" if single else "Image " + ", ".join(f"#{i + 1}" for i in flagged)
    done = "is blurred (flagged by this server's image safety check)" if action == "blur" else \
        "was withheld by this server's image safety check"
    return f"\n{which} {done}."


def result_components(record: jobs.JobRecord, models: Sequence[ModelInfo] = ()) -> list[dict[str, Any]]:
    """Grid buttons under a grid; single-image buttons under one image (`core.buttons.image_components`; a model
    not in `models` is taken for one not served any more)."""
    if record.kind == "describe":
        return buttons.describe_components(record.job_id)
    if record.kind in SINGLE_IMAGE_KINDS:
        spec = record.spec
        model = next((m for m in models if m.name == spec.model), None)
        return buttons.image_components(record.job_id, (spec.width, spec.height), model)
    return buttons.grid_components(record.job_id)


class Poster:
    """The worker's one way to show jobs in Discord: live progress edits, then the outcome (`worker.jobs.conclude`
    calls `deliver_outcome`)."""

    def __init__(
        self, http: DiscordHTTP, *, min_edit_interval_s: float = MIN_EDIT_INTERVAL_S, models: Sequence[ModelInfo] = ()
    ) -> None:
        self.http = http
        self.min_edit_interval_s = min_edit_interval_s
        self.models = tuple(models)  # whose upscale limits decide where Upscale (2x) is offered

    def live(self, conn: redis.Redis, job_id: str, *, min_interval_s: float) -> LiveMessage | None:
        """Progress edits for a running job, or None when the job has no Discord side (looked up first: one round
        trip for a job from the command line) or is delivered already."""
        target = delivery.load(conn, job_id)
        if target is None or conn.exists(keys.job_final_delivered(job_id)):
            return None
        record = jobs.get(conn, job_id)
        if record is None:
            return None
        return LiveMessage(self, conn, record, target, max(min_interval_s, self.min_edit_interval_s))

    def deliver_outcome(self, conn: redis.Redis, record: jobs.JobRecord, *, tries: int | None = None) -> bool:
        """Show a final job's outcome once: the image with its buttons, what failed with a re-roll, or "cancelled".
        `tries`: attempts of each request (default: `DiscordHTTP.max_tries`, with its backoff).

        Returns:
            True when Discord confirmed it now; False when there is nothing to do or it could not be delivered
            (logged; the result stays in Redis for /show). An error that may go away (Discord unreachable, 5xx,
            429) leaves the job to `worker.redelivery`, which a worker's maintenance runs.
        """
        job_id = record.job_id
        target = delivery.load(conn, job_id)
        if target is None or not record.final or conn.exists(keys.job_final_delivered(job_id)):
            return False
        file: Attachment | None = None
        if record.state == jobs.DONE:
            single = record.kind in SINGLE_IMAGE_KINDS
            data = conn.get(keys.job_image(job_id, 0) if single else keys.job_grid(job_id))
            action, flagged = flags_of(conn, job_id)
            if isinstance(data, bytes):
                name = f"imagine_{job_id[:8]}.png"
                file = Attachment(spoiler_name(name) if action == "blur" else name, data)
            body = {"content": result_text(record, target.user_id) + flagged_note(action, flagged, single),
                    "components": result_components(record, self.models)}
            if record.kind == "describe":
                body["content"] = described_text(conn, record, target.user_id)
        elif record.state == jobs.FAILED:
            reason = record.reason or "unknown error"
            body = {"content": headline(record, target.user_id, f"failed: {reason}"),
                    "components": buttons.failed_components(job_id)}
        else:
            body = {"content": headline(record, target.user_id, "cancelled"), "components": []}
        body["allowed_mentions"] = {"users": [target.user_id]} if target.user_id else {"parse": []}
        try:
            # A cancelled job is edited while the token lasts, not announced again in the channel.
            shown = self.show(conn, job_id, target, body, file, may_post=record.state != jobs.CANCELLED, tries=tries)
        except DiscordAPIError as exc:
            later = "; tried again later" if exc.retryable else ""
            log.warning("job %s: could not deliver its %s outcome to Discord: %s%s", job_id, record.state, exc, later)
            if exc.retryable:
                redelivery.remember(conn, job_id, now=time.time())
            else:
                redelivery.forget(conn, job_id)
            return False
        if shown:
            with conn.pipeline() as pipe:
                pipe.set(keys.job_final_delivered(job_id), "1", ex=DELIVERED_TTL_S)
                redelivery.forget(pipe, job_id)
                pipe.execute()
            log.info("job %s: %s outcome delivered to Discord", job_id, record.state)
        else:
            redelivery.forget(conn, job_id)
        return shown

    def show(
        self,
        conn: redis.Redis,
        job_id: str,
        target: Delivery,
        body: dict[str, Any],
        file: Attachment | None,
        *,
        may_post: bool,
        tries: int | None = None,
    ) -> bool:
        """Put `body` (and `file`, replacing any attachment) on the job's message: webhook edit while the token is
        valid, else an edit of the channel message posted earlier, else (when `may_post`) a new channel message.

        Returns:
            True when Discord confirmed it; False when there was nowhere to show it (no token and not `may_post`).

        Raises:
            DiscordAPIError: Discord refused it or stayed unreachable.
        """
        payload = dict(body)
        files = [file] if file is not None else None
        payload["attachments"] = [{"id": 0, "filename": file.filename}] if file is not None else []
        token = delivery.interaction_token(conn, job_id)
        if token:
            params = {"application_id": target.application_id, "token": token,
                      "message_id": target.message_id or "@original"}
            try:
                self.http.request("PATCH", WEBHOOK_MESSAGE, params, payload=payload, files=files, tries=tries)
                return True
            except DiscordAPIError as exc:
                if not exc.token_invalid:
                    raise
                forget_token(conn, job_id, exc)
        if not may_post:
            return False
        channel = {"channel_id": target.channel_id}
        posted = conn.get(keys.job_channel_message(job_id))
        if isinstance(posted, bytes):
            try:
                self.http.request("PATCH", CHANNEL_MESSAGE, channel | {"message_id": posted.decode()},
                                  payload=payload, files=files, bot_auth=True, tries=tries)
                return True
            except DiscordAPIError as exc:
                if not exc.message_gone:
                    raise
                log.info("job %s: its channel message is gone (%s); posting a new one", job_id, exc)
        payload.pop("attachments")
        # The nonce makes Discord drop a second post of this job should the id below not get recorded (a crash).
        payload |= {"nonce": hashlib.sha256(job_id.encode()).hexdigest()[:NONCE_CHARS], "enforce_nonce": True}
        message = self.http.request("POST", CHANNEL_MESSAGES, channel, payload=payload, files=files,
                                    bot_auth=True, tries=tries)
        message_id = str((message or {}).get("id", ""))
        if message_id:
            conn.set(keys.job_channel_message(job_id), message_id, ex=DELIVERED_TTL_S)
            delivery.set_message_id(conn, job_id, message_id)
        log.info("job %s: posted a channel message (its interaction token is gone)", job_id)
        return True


def forget_token(conn: redis.Redis, job_id: str, why: DiscordAPIError) -> None:
    """Drop an interaction token Discord no longer accepts, so later calls go to the channel straight away."""
    conn.delete(keys.job_interaction_token(job_id))
    log.info("job %s: interaction token no longer accepted (%s); using the channel instead", job_id, why)


class LiveMessage:
    """Progress edits of one running job, sent from a background thread so that sampling never waits on Discord.

    Only the latest update waits to be sent, at most one edit per `min_interval_s`; a preview is never retried (a
    newer one follows). `close()` stops the thread and waits for an edit in flight, so nothing it sends can arrive
    after the outcome, which is delivered after `close()`.
    """

    def __init__(
        self, poster: Poster, conn: redis.Redis, record: jobs.JobRecord, target: Delivery, min_interval_s: float
    ) -> None:
        self.poster, self.conn, self.record, self.target = poster, conn, record, target
        self.min_interval_s = min_interval_s
        self._cond = threading.Condition()
        self._pending: tuple[str, Image.Image | None, bool] | None = None
        self._closed = False
        self._next_at = 0.0
        self._thread = threading.Thread(target=self._run, name=f"progress-{record.job_id[:8]}", daemon=True)
        self._thread.start()

    def started(self) -> None:
        """`(Waiting to start)`, and any preview of an earlier attempt removed."""
        self._submit(headline(self.record, self.target.user_id, "Waiting to start"), None, clear=True)

    def progress(self, step: int, total: int, preview: Image.Image | None) -> None:
        """`(NN%)`, with the preview when there is one. Cheap: it only replaces the pending update."""
        percent = min(99, int(100 * step / max(total, 1)))
        self._submit(headline(self.record, self.target.user_id, f"{percent}%"), preview, clear=False)

    def close(self) -> None:
        """Stop sending; returns once no edit is in flight."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    def _submit(self, text: str, preview: Image.Image | None, *, clear: bool) -> None:
        with self._cond:
            if self._closed:
                return
            if preview is None and self._pending is not None and self._pending[1] is not None:
                preview = self._pending[1]  # a text-only update must not drop a preview waiting to go out
            self._pending = (text, preview, clear or bool(self._pending and self._pending[2]))
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (self._pending is None or time.monotonic() < self._next_at):
                    self._cond.wait(None if self._pending is None else max(0.0, self._next_at - time.monotonic()))
                if self._closed:
                    return
                assert self._pending is not None
                text, preview, clear = self._pending
                self._pending = None
            if not self._send(text, preview, clear):
                with self._cond:
                    self._closed = True
                return
            self._next_at = max(self._next_at, time.monotonic() + self.min_interval_s)

    def _send(self, text: str, preview: Image.Image | None, clear: bool) -> bool:
        """One edit; False when no further edit should be sent (the job is final or delivered, the token is gone)."""
        job_id = self.record.job_id
        if self.conn.exists(keys.job_final_delivered(job_id)):
            return False
        token = delivery.interaction_token(self.conn, job_id)
        if not token:
            return False  # progress is shown only on the interaction's message
        payload: dict[str, Any] = {"content": text, "allowed_mentions": {"parse": []}}
        files = None
        if preview is not None:
            files = [Attachment("preview.jpg", encode_preview(preview), "image/jpeg")]
            payload["attachments"] = [{"id": 0, "filename": "preview.jpg"}]
        elif clear:
            payload["attachments"] = []
        params = {"application_id": self.target.application_id, "token": token,
                  "message_id": self.target.message_id or "@original"}
        try:
            self.poster.http.request("PATCH", WEBHOOK_MESSAGE, params, payload=payload, files=files, tries=1)
        except DiscordAPIError as exc:
            if exc.token_invalid:
                forget_token(self.conn, job_id, exc)
                return False
            if exc.status == 429 and exc.retry_after_s:
                self._next_at = time.monotonic() + exc.retry_after_s
            log.info("job %s: progress edit skipped: %s", job_id, exc)
        return True


def encode_preview(image: Image.Image) -> bytes:
    """A small JPEG of a progress preview, fitted into PREVIEW_MAX_SIDE_PX."""
    image = image.convert("RGB")
    scale = PREVIEW_MAX_SIDE_PX / max(image.size)
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                         Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=PREVIEW_JPEG_QUALITY)
    return buffer.getvalue()
