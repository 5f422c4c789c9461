"""Images in prompts: where an image may come from, and the image part of an `/imagine` prompt. Pure.

    rules.check_url("https://cdn.discordapp.com/attachments/1/2/cat.png")   # the URL itself, before any connection
    split_images("https://cdn.discordapp.com/a.png::2 a cat --iw 2", rules)  # -> the images, then the rest

The bot checks a URL's shape and host here before admission (an ephemeral refusal, nothing charged); the worker
fetches it (`worker.fetch`), checking everything that needs the network or the bytes: the resolved addresses,
redirects, the byte and pixel caps and the format. The prompt language (`core.prompt`) calls `split_images` first
and `image_strength` turns `--iw` into the image-to-image strength the worker renders with.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from core.errors import ImageRefused, PromptError

DISCORD_HOSTS = frozenset({"cdn.discordapp.com", "media.discordapp.net"})
"""Discord's attachment hosts: always allowed."""

MAX_BYTES = 10 * 1024 * 1024
"""Default byte cap of one fetched image (10 MiB), enforced while reading."""

MAX_PIXELS = 4096 * 4096
"""Default pixel cap of one image, checked from its header before it is decoded."""

MAX_URL_CHARS = 1000
"""Longest image URL accepted."""

MAX_IMAGES = 5
"""Most images in one prompt (and in one `/blend`)."""

IMAGE_WEIGHT_DEFAULT = 1.0
IMAGE_WEIGHT_MAX = 3.0
"""`--iw` runs from 0 to 3: how much the images count against the text."""

MAX_URL_WEIGHT = 1000.0
"""Largest `url::w` weight (as `core.prompt.MAX_WEIGHT` for text parts: finite and JSON-safe)."""

EXTRAS_KEY = "images"
"""`JobSpec.extras` key of a job's images: `{"urls": [...], "weights": [...], "iw": float}`."""

FORMATS = frozenset({"PNG", "JPEG", "WEBP", "GIF"})
"""Formats accepted, as Pillow names what it sniffed from the bytes (never from the Content-Type)."""

# A leading URL, optionally with its own `::weight`, e.g. `https://cdn.discordapp.com/a.png::2`.
_LEADING_URL = re.compile(r"\s*(?P<url>https?://\S+?)(?:::(?P<weight>[0-9]+(?:\.[0-9]*)?|\.[0-9]+))?(?=\s|$)",
                          re.IGNORECASE)
_IW = re.compile(r"(?<!\S)(?:--|\u2014|\u2013)iw(?:\s+(?P<value>\S+))?(?=\s|$)", re.IGNORECASE)
_HOST = re.compile(r"[a-z0-9.-]{1,253}")


@dataclass(frozen=True)
class Rules:
    """Where images may be fetched from and how much of one is read. Built once from `core.settings.ImageSettings`."""

    hosts: frozenset[str] = DISCORD_HOSTS  # hosts allowed (lowercase names; Discord's are always in)
    https_only: bool = True  # plain http refused; only the tests relax it, explicitly
    trusted: frozenset[str] = frozenset()  # "host:port" exempt from the address rule (the tests' emulator only)
    max_bytes: int = MAX_BYTES
    max_pixels: int = MAX_PIXELS
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 10.0
    max_redirects: int = 3

    def check_url(self, url: str) -> str:
        """The URL's host, when its shape, scheme and host are allowed (no connection is made).

        Raises:
            ImageRefused: the message says which rule and names the host.
        """
        if len(url) > MAX_URL_CHARS:
            raise ImageRefused(f"an image URL may be at most {MAX_URL_CHARS} characters long")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ImageRefused(f"{_show(url)} is not a valid URL") from None
        host = (parts.hostname or "").rstrip(".")
        if parts.scheme not in ("https", "http") or not _HOST.fullmatch(host):
            raise ImageRefused(f"{_show(url)} is not an image link: use an https:// link or attach the image")
        if parts.username is not None or parts.password is not None:
            raise ImageRefused("an image URL may not carry a user name or password")
        if parts.scheme != "https" and self.https_only:
            raise ImageRefused(f"images are fetched over https only, not {_show(url)}")
        if host not in self.hosts and self.origin(host, port, parts.scheme) not in self.trusted:
            raise ImageRefused(f"images are fetched only from Discord attachments and hosts an admin allows, "
                               f"not from {host}: upload the image to Discord instead")
        return host

    @staticmethod
    def origin(host: str, port: int | None, scheme: str) -> str:
        """`host:port` as `trusted` lists it."""
        return f"{host}:{port or (443 if scheme == 'https' else 80)}"


def rules_from(hosts: Iterable[str] = (), **fields: Any) -> Rules:
    """Rules allowing Discord's hosts and `hosts` (names, any case)."""
    extra = {host.strip().lower().rstrip(".") for host in hosts if host.strip()}
    return Rules(hosts=DISCORD_HOSTS | extra, **fields)


@dataclass(frozen=True)
class ImagePrompt:
    """The images of a prompt: their URLs and `::` weights, and `--iw`."""

    urls: tuple[str, ...] = ()
    weights: tuple[float, ...] = ()
    iw: float = IMAGE_WEIGHT_DEFAULT

    def to_extras(self) -> dict[str, Any]:
        """As `JobSpec.extras[EXTRAS_KEY]` holds it."""
        return {"urls": list(self.urls), "weights": list(self.weights), "iw": self.iw}


def split_images(text: str, rules: Rules | None = None) -> tuple[ImagePrompt, str]:
    """`"https://.../a.png::2 https://.../b.png a cat --iw 2"` -> (the images with weights and `--iw`, "a cat").

    URLs count only at the start of the prompt; later ones are text. `--iw` without images is refused.

    Raises:
        PromptError: a bad weight, too many images, an `--iw` out of range or without images; ImageRefused (a
            PromptError) for a URL the rules refuse.
    """
    rules = rules or Rules()
    urls: list[str] = []
    weights: list[float] = []
    rest = text
    while match := _LEADING_URL.match(rest):
        url = match["url"]
        rules.check_url(url)
        weight = float(match["weight"]) if match["weight"] else 1.0
        if not 0 < weight <= MAX_URL_WEIGHT:
            raise PromptError(f"an image's '::' weight must be more than 0 and at most {MAX_URL_WEIGHT:g}, "
                              f"not {match['weight']}")
        urls.append(url)
        weights.append(weight)
        rest = rest[match.end():]
    if len(urls) > MAX_IMAGES:
        raise PromptError(f"a prompt may start with at most {MAX_IMAGES} images, not {len(urls)}")
    iw, rest = _image_weight(rest, bool(urls))
    return ImagePrompt(tuple(urls), tuple(weights), iw), " ".join(rest.split())


def link_chars(text: str) -> int:
    """How many characters of `text` are its leading image links (not counted against the prompt's length)."""
    end = 0
    while match := _LEADING_URL.match(text, end):
        end = match.end()
    return end


def _image_weight(text: str, has_images: bool) -> tuple[float, str]:
    """`--iw` of the text, and the text without it."""
    found = list(_IW.finditer(text))
    if not found:
        return IMAGE_WEIGHT_DEFAULT, text
    if len(found) > 1:
        raise PromptError("--iw is given twice")
    if not has_images:
        raise PromptError("--iw weighs image prompts: start the prompt with an image link, or drop --iw")
    value = found[0]["value"]
    try:
        iw = float(value) if value is not None else math.nan
    except ValueError:
        iw = math.nan
    if not 0 <= iw <= IMAGE_WEIGHT_MAX:
        shown = _show(value) if value else "nothing"
        raise PromptError(f"--iw must be a number from 0 to {IMAGE_WEIGHT_MAX:g}, not {shown}")
    return iw, text[: found[0].start()] + text[found[0].end():]


def image_strength(iw: float) -> float:
    """`--iw` -> the img2img strength (the fraction of the noise schedule redone): 1 at 0 (the images are
    ignored), 0.75 at the default 1, 0.25 at 3 (the images dominate)."""
    return round(min(1.0, max(0.25, 1.0 - 0.25 * iw)), 4)


def adapter_scale(iw: float, with_text: bool) -> float:
    """`--iw` -> the IP-Adapter's scale (how strongly the images steer, `worker.adapter`): beside text, 0.5 at the
    default 1 (IP-Adapter's own advice for image and text together) up to 1 at 2 and above; alone (a blend), 1 at
    the default, less below it."""
    return round(min(1.0, max(0.0, iw * (0.5 if with_text else 1.0))), 4)


def images_of(extras: dict[str, Any]) -> ImagePrompt | None:
    """The images a spec's extras carry, or None."""
    data = extras.get(EXTRAS_KEY)
    if not data:
        return None
    return ImagePrompt(tuple(data["urls"]), tuple(float(w) for w in data["weights"]), float(data["iw"]))


def check_extras(data: Any) -> dict[str, Any]:
    """`extras["images"]` as a payload may carry it; raises ValueError naming what is wrong."""
    if not isinstance(data, dict) or set(data) != {"urls", "weights", "iw"}:
        raise ValueError("spec.extras.images must be {urls, weights, iw}")
    urls, weights, iw = data["urls"], data["weights"], data["iw"]
    if not isinstance(urls, list) or not 1 <= len(urls) <= MAX_IMAGES:
        raise ValueError(f"spec.extras.images.urls must be a list of 1 to {MAX_IMAGES} URLs")
    if any(not isinstance(u, str) or len(u) > MAX_URL_CHARS for u in urls):
        raise ValueError(f"spec.extras.images.urls[] must be strings of at most {MAX_URL_CHARS} characters")
    if not isinstance(weights, list) or len(weights) != len(urls):
        raise ValueError("spec.extras.images.weights must have one weight per URL")
    for weight in [*weights, iw]:
        if type(weight) not in (int, float) or not math.isfinite(weight) or not 0 <= weight <= MAX_URL_WEIGHT:
            raise ValueError(f"spec.extras.images weights must be finite numbers from 0 to {MAX_URL_WEIGHT:g}")
    if iw > IMAGE_WEIGHT_MAX:
        raise ValueError(f"spec.extras.images.iw must be from 0 to {IMAGE_WEIGHT_MAX:g}")
    return {"urls": list(urls), "weights": [float(w) for w in weights], "iw": float(iw)}


def _show(value: str, limit: int = 60) -> str:
    return repr(value if len(value) <= limit else value[: limit - 3] + "...")


def numbered(prompts: Sequence[str], numbers: Sequence[str]) -> str:
    """A `/describe`'s prompts, one a line, each after its number."""
    return "\n".join(f"{number} {text}" for number, text in zip(numbers, prompts, strict=False))


def all_prompts(prompts: Sequence[str]) -> str:
    """One `/imagine` text that makes a job of each prompt: a `{}` permutation with their commas escaped."""
    return "{" + ", ".join(text.replace(",", "\\,") for text in prompts) + "}"
