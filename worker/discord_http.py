"""A small synchronous Discord REST client for the worker: message edits and posts, with retries, never logging a token.

The worker is synchronous (RQ job functions), so this uses the standard library's HTTP client rather than an event
loop. Routes are written as templates (`/webhooks/{application_id}/{token}/messages/{message_id}`) and filled in
here: logs and errors name the template, never the URL, because an interaction token is part of the URL and the bot
token is in a header.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from pydantic import SecretStr

log = logging.getLogger(__name__)

MAX_TRIES = 5
"""Attempts of one request when Discord answers 429 or 5xx, or cannot be reached."""

BACKOFF_BASE_S = 0.5
"""Wait before the second attempt after a 5xx or a network error; doubled before each further one."""

MAX_RETRY_AFTER_S = 60.0
"""A 429 asking to wait longer than this is not waited for (a global ban or a misconfiguration): the call fails."""

REQUEST_TIMEOUT_S = 30.0
"""Seconds to wait for Discord's answer to one request (uploads of a few MB included)."""

USER_AGENT = "DiscordBot (https://github.com/discord-imagine, 0.1) discord-imagine-worker"
"""Discord asks clients to send a `DiscordBot (url, version)` user agent."""

# Discord error codes the worker reacts to (https://discord.com/developers/docs/topics/opcodes-and-status-codes).
UNKNOWN_WEBHOOK = 10015
UNKNOWN_MESSAGE = 10008
INVALID_WEBHOOK_TOKEN = 50027


class DiscordAPIError(Exception):
    """Discord refused a request, or could not be reached after all retries. The message names the route template."""

    def __init__(
        self, method: str, route: str, status: int, code: int = 0, message: str = "", retry_after_s: float | None = None
    ) -> None:
        super().__init__(f"{method} {route}: HTTP {status} code {code} {message}".rstrip())
        self.method, self.route, self.status, self.code, self.discord_message = method, route, status, code, message
        self.retry_after_s = retry_after_s  # a 429's `retry_after`

    @property
    def token_invalid(self) -> bool:
        """The interaction token can no longer be used (expired, or the webhook is gone)."""
        return (self.status == 401 and self.code in (INVALID_WEBHOOK_TOKEN, 0)) or (
            self.status == 404 and self.code == UNKNOWN_WEBHOOK
        )

    @property
    def retryable(self) -> bool:
        """The same request may succeed later: Discord was unreachable, failed (5xx), or rate limited it."""
        return self.status == 0 or self.status == 429 or self.status >= 500

    @property
    def message_gone(self) -> bool:
        """The message to edit does not exist or is not ours to edit."""
        return self.status in (403, 404) and self.code in (UNKNOWN_MESSAGE, 50005, 0)


@dataclass(frozen=True)
class Attachment:
    """A file to upload with a message."""

    filename: str
    data: bytes
    content_type: str = "image/png"


class DiscordHTTP:
    """Discord's REST API at `api_base` (DISCORD_API_BASE), with the bot token for channel routes."""

    def __init__(
        self,
        api_base: str,
        bot_token: SecretStr | None,
        *,
        max_tries: int = MAX_TRIES,
        backoff_base_s: float = BACKOFF_BASE_S,
        sleep: Callable[[float], None] = time.sleep,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.api_base = api_base.rstrip("/")
        self._bot_token = bot_token
        self.max_tries = max_tries
        self.backoff_base_s = backoff_base_s
        self.sleep = sleep
        self.on_retry = on_retry
        """Called before each retry with its reason, "rate_limited" (a 429), "server_error" (a 5xx) or "unreachable"
        (no answer): the worker counts them for /metrics."""

    @property
    def has_bot_token(self) -> bool:
        return self._bot_token is not None and bool(self._bot_token.get_secret_value())

    def request(
        self,
        method: str,
        route: str,
        params: dict[str, str],
        *,
        payload: dict[str, Any] | None = None,
        files: list[Attachment] | None = None,
        bot_auth: bool = False,
        tries: int | None = None,
    ) -> dict[str, Any] | None:
        """Send one request, retrying 429 (after `retry_after`) and 5xx / network errors (exponential backoff).

        Args:
            method: HTTP method.
            route: the path template after the API base, e.g. `/channels/{channel_id}/messages`.
            params: values for the template's fields (tokens included); they are URL-quoted and never logged.
            payload: the JSON body (`payload_json` when there are files).
            files: uploads, sent as multipart `files[n]`.
            bot_auth: send `Authorization: Bot <token>`.
            tries: attempts at most (default `max_tries`).

        Returns:
            The decoded JSON answer, or None for an empty one (204).

        Raises:
            DiscordAPIError: a 4xx other than 429, or still failing after the last attempt.
        """
        url = self.api_base + route.format(**{k: quote(str(v), safe="") for k, v in params.items()})
        body, content_type = _encode(payload, files)
        headers = {"User-Agent": USER_AGENT, "Content-Type": content_type}
        if bot_auth:
            if not self.has_bot_token:
                raise DiscordAPIError(method, route, 401, 0, "no DISCORD_TOKEN configured")
            headers["Authorization"] = f"Bot {self._bot_token.get_secret_value()}"  # type: ignore[union-attr]
        tries = tries or self.max_tries
        for attempt in range(1, tries + 1):
            last = attempt == tries
            try:
                return self._send(method, url, body, headers)
            except urllib.error.HTTPError as exc:
                error = _api_error(method, route, exc)
                if exc.code == 429:
                    wait_s = _retry_after(exc, error)
                    if last or wait_s > MAX_RETRY_AFTER_S:
                        raise error from None
                    log.info("%s %s: rate limited, retrying in %.2f s", method, route, wait_s)
                    self._retrying("rate_limited", wait_s)
                elif exc.code >= 500 and not last:
                    wait_s = self.backoff_base_s * 2 ** (attempt - 1)
                    log.info("%s %s: HTTP %d, retrying in %.2f s", method, route, exc.code, wait_s)
                    self._retrying("server_error", wait_s)
                else:
                    raise error from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                reason = getattr(exc, "reason", exc)
                if last:
                    raise DiscordAPIError(method, route, 0, 0, f"unreachable: {type(reason).__name__}") from None
                wait_s = self.backoff_base_s * 2 ** (attempt - 1)
                log.info("%s %s: unreachable (%s), retrying in %.2f s", method, route, type(reason).__name__, wait_s)
                self._retrying("unreachable", wait_s)
        raise AssertionError("unreachable")  # the loop returns or raises on its last attempt

    def _retrying(self, reason: str, wait_s: float) -> None:
        if self.on_retry is not None:
            self.on_retry(reason)
        self.sleep(wait_s)

    def _send(self, method: str, url: str, body: bytes, headers: dict[str, str]) -> dict[str, Any] | None:
        request = urllib.request.Request(url, data=body or None, headers=headers, method=method)
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:  # noqa: S310 - https/http only
            data = response.read()
        return json.loads(data) if data else None


def _encode(payload: dict[str, Any] | None, files: list[Attachment] | None) -> tuple[bytes, str]:
    """The body and its content type: JSON, or multipart with `payload_json` and `files[n]` parts."""
    if not files:
        return json.dumps(payload or {}).encode(), "application/json"
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="payload_json"\r\n'
        f"Content-Type: application/json\r\n\r\n".encode() + json.dumps(payload or {}).encode() + b"\r\n"
    ]
    for n, file in enumerate(files):
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files[{n}]"; filename="{file.filename}"\r\n'
            f"Content-Type: {file.content_type}\r\n\r\n"
        )
        parts.append(head.encode() + file.data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _api_error(method: str, route: str, exc: urllib.error.HTTPError) -> DiscordAPIError:
    """The error Discord answered, from its JSON body `{"code", "message"}` when it has one."""
    try:
        body = json.loads(exc.read() or b"{}")
    except (ValueError, OSError):
        body = {}
    if not isinstance(body, dict):
        body = {}
    retry_after = body.get("retry_after")
    return DiscordAPIError(
        method,
        route,
        exc.code,
        int(body.get("code") or 0),
        str(body.get("message") or ""),
        float(retry_after) if isinstance(retry_after, int | float) else None,
    )


def _retry_after(exc: urllib.error.HTTPError, error: DiscordAPIError) -> float:
    """Seconds a 429 asks to wait: the body's `retry_after` (float), else the Retry-After header, else 1."""
    value: float | str | None = error.retry_after_s
    if value is None:
        value = exc.headers.get("Retry-After") if exc.headers else None
    try:
        return max(0.0, float(value)) if value is not None else 1.0
    except ValueError:
        return 1.0
