"""Fetching a member's image, safely: the only way an image URL becomes pixels in this project.

    image = fetch_image(url, rules)   # a decoded RGB image, or ImageRefused naming the rule it broke

The worker fetches (never the bot: a download must not sit between an interaction and its acknowledgement); the
bot has checked the URL's shape and host already (`core.images.Rules.check_url`). Here, in order:

1. The URL again (scheme, host on the allowed list), for this URL and for every redirect, which is followed by hand
   (at most `rules.max_redirects`): a redirect to another host or to plain http is refused before it is followed.
2. DNS: the host's addresses are resolved by `_CheckedResolver` and refused when any is loopback, private,
   link-local, reserved or multicast (no SSRF); aiohttp then connects to exactly those checked addresses (the
   resolver is the connector's, with its cache off), so a second lookup cannot swap in another address.
3. Connect and read timeouts (`rules.connect_timeout_s` per connection, `rules.read_timeout_s` per read).
4. The bytes: a Content-Length over the cap is refused before reading; the body is read in chunks and refused as
   soon as it passes `rules.max_bytes`.
5. The format, sniffed by Pillow from the bytes (the Content-Type is not trusted), one of `core.images.FORMATS`;
   the pixel count read from the header and refused over `rules.max_pixels` before anything is decoded (Pillow's
   own `MAX_IMAGE_PIXELS` guard stays on behind it); then decoded, only the first frame.
"""

from __future__ import annotations

import asyncio
import io
import ipaddress
import socket
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from PIL import Image, UnidentifiedImageError

from core.errors import ImageRefused
from core.images import FORMATS, Rules

CHUNK_BYTES = 64 * 1024
"""Bytes read at a time while counting against the cap."""

REDIRECTS = frozenset({301, 302, 303, 307, 308})


def fetch_image(url: str, rules: Rules) -> Image.Image:
    """The image at `url`, decoded to RGB, fetched under `rules` (see the module's steps). Synchronous: for a job.

    Raises:
        ImageRefused: a rule refused it; the message names the rule (and never the resolved address).
    """
    return decode(asyncio.run(fetch_bytes(url, rules)), rules)


async def fetch_bytes(url: str, rules: Rules) -> bytes:
    """The body at `url` under the rules of steps 1-4.

    Raises:
        ImageRefused: see `fetch_image`.
    """
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=rules.connect_timeout_s, sock_read=rules.read_timeout_s)
    connector = aiohttp.TCPConnector(resolver=_CheckedResolver(rules), use_dns_cache=False, limit=1)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False) as session:
        for _ in range(rules.max_redirects + 1):
            _check_literal(url, rules)
            try:
                async with session.get(url, allow_redirects=False, headers={"Accept": "image/*"}) as response:
                    if response.status in REDIRECTS:
                        location = response.headers.get("Location", "")
                        if not location:
                            raise ImageRefused("the image link redirects nowhere")
                        url = urljoin(url, location)
                        continue
                    if response.status != 200:
                        raise ImageRefused(f"the image link answered HTTP {response.status}, not the image")
                    return await _read_capped(response, rules.max_bytes)
            except ImageRefused:
                raise
            except (TimeoutError, aiohttp.ServerTimeoutError):
                raise ImageRefused("the image took too long to arrive; try again or upload it to Discord") from None
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, _Refused):
                    raise ImageRefused(str(exc.os_error)) from None
                raise ImageRefused(f"the image's host {urlsplit(url).hostname} could not be reached") from None
            except _Refused as exc:
                raise ImageRefused(str(exc)) from None
            except aiohttp.ClientError as exc:
                raise ImageRefused(f"the image could not be fetched ({type(exc).__name__})") from None
    raise ImageRefused(f"the image link redirects more than {rules.max_redirects} times")


async def _read_capped(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """The body, refused as soon as it is longer than `max_bytes` (by its Content-Length or while reading)."""
    too_big = ImageRefused(f"the image is larger than {_mib(max_bytes)}; use a smaller file")
    if response.content_length is not None and response.content_length > max_bytes:
        raise too_big
    body = bytearray()
    async for chunk in response.content.iter_chunked(CHUNK_BYTES):
        body += chunk
        if len(body) > max_bytes:
            raise too_big
    return bytes(body)


def decode(data: bytes, rules: Rules) -> Image.Image:
    """Step 5: sniff, check the header's size, decode the first frame to RGB.

    Raises:
        ImageRefused: not an image of an accepted format, too many pixels, or broken.
    """
    not_image = ImageRefused(f"that file is not an image this server reads ({', '.join(sorted(FORMATS))})")
    too_large = f"the most accepted is {rules.max_pixels:,} pixels"
    try:
        image = Image.open(io.BytesIO(data), formats=sorted(FORMATS))  # reads the header only
    except Image.DecompressionBombError:  # Pillow's own guard, past twice its MAX_IMAGE_PIXELS
        raise ImageRefused(f"the image has far too many pixels; {too_large}") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise not_image from None
    width, height = image.size
    if width * height > rules.max_pixels:
        raise ImageRefused(f"the image is {width}x{height} pixels; {too_large}")
    try:
        image.seek(0)
        image.load()
        return image.convert("RGB")
    except (Image.DecompressionBombError, OSError, ValueError, SyntaxError):
        raise not_image from None


def _check_literal(url: str, rules: Rules) -> None:
    """`rules.check_url`, and for a host written as an IP address (which aiohttp connects to without resolving)
    the address rule of `_CheckedResolver`."""
    host = rules.check_url(url)
    parts = urlsplit(url)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return
    if not address.is_global and rules.origin(host, parts.port, parts.scheme) not in rules.trusted:
        raise ImageRefused(f"the image link names a {_kind(address)} address, which this server does not fetch from")


class _Refused(OSError):
    """A resolved address the rules refuse (raised inside aiohttp's connect, unwrapped by `fetch_bytes`)."""


class _CheckedResolver(AbstractResolver):
    """Resolves a host and refuses it when any of its addresses is not a public one; the connector connects to the
    addresses returned, which are the checked ones. `rules.trusted` ("host:port", the tests' emulator) is exempt."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM, family=family)
        results: list[ResolveResult] = []
        exempt = f"{host}:{port}" in self.rules.trusted
        for fam, _, proto, _, sockaddr in infos:
            address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
            if not exempt and not address.is_global:
                raise _Refused(f"the image's host {host} resolves to a {_kind(address)} address, which this server "
                               "does not fetch from")
            results.append({"hostname": host, "host": str(sockaddr[0]), "port": int(sockaddr[1]), "family": fam,
                            "proto": proto, "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV})
        if not results:
            raise _Refused(f"the image's host {host} has no address")
        return results

    async def close(self) -> None:
        return None


def _kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    for name in ("loopback", "link_local", "private", "multicast", "reserved", "unspecified"):
        if getattr(address, f"is_{name}"):
            return name.replace("_", "-")
    return "non-public"


def _mib(count: int) -> str:
    return f"{count / (1024 * 1024):g} MiB"

