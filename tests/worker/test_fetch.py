"""Fetching members' images safely, against real local HTTP servers: every refusal has its case."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from PIL import Image

from core.errors import ImageRefused
from core.images import Rules, rules_from
from worker.fetch import fetch_bytes, fetch_image


def png_bytes(size: tuple[int, int] = (32, 24), colour: tuple[int, int, int] = (40, 170, 60)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "PNG")
    return out.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` and whose data is a few compressed bytes: a decoder trusting
    the header would allocate for all of it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


Served = Callable[[str], str]


@pytest.fixture
async def server() -> AsyncIterator[tuple[Served, Rules]]:
    """A local HTTP server with a few routes, and rules that trust exactly its origin (as the tests' emulator)."""
    never = asyncio.Event()
    port_box: list[int] = []

    async def image(_: web.Request) -> web.Response:
        return web.Response(body=png_bytes(), content_type="image/png")

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        await response.prepare(request)
        for _ in range(40):  # 40 x 1 KiB, no Content-Length: only counting while reading can stop it
            await response.write(b"\0" * 1024)
        return response

    async def sized(_: web.Request) -> web.Response:
        return web.Response(body=b"\0" * 40_000, content_type="image/png")

    async def header(request: web.Request) -> web.Response:
        side = int(request.query["side"])
        return web.Response(body=png_header(side, side), content_type="image/png")

    async def text(_: web.Request) -> web.Response:
        return web.Response(body=b"<html>not an image</html>", content_type="image/png")

    async def hang(_: web.Request) -> web.Response:
        await never.wait()  # answers only once the test is over
        return web.Response()

    async def redirect(request: web.Request) -> web.Response:
        target = request.query["to"].replace("PORT", str(port_box[0]))
        raise web.HTTPFound(target)

    app = web.Application()
    for path, handler in {"/image.png": image, "/stream.png": stream, "/sized.png": sized, "/header.png": header,
                          "/text.png": text, "/hang.png": hang, "/redirect": redirect}.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    port_box.append(port)
    rules = rules_from(["127.0.0.1", "localhost"], https_only=False, trusted=frozenset({f"127.0.0.1:{port}"}),
                       max_bytes=20_000, read_timeout_s=0.3)
    yield (lambda path: f"http://127.0.0.1:{port}{path}"), rules
    never.set()
    await runner.cleanup()


async def refused(call: Awaitable[object]) -> str:
    with pytest.raises(ImageRefused) as caught:
        await call
    return str(caught.value)


async def test_an_image_on_the_trusted_origin_is_fetched_and_decoded(server: tuple[Served, Rules]) -> None:
    """A PNG from an allowed origin arrives decoded to RGB at its own size."""
    url, rules = server
    image = await asyncio.to_thread(fetch_image, url("/image.png"), rules)
    assert image.size == (32, 24) and image.mode == "RGB" and image.getpixel((0, 0)) == (40, 170, 60)


@pytest.mark.parametrize("link, words", [
    ("https://example.com/cat.png", "not from example.com"),
    ("http://cdn.discordapp.com/attachments/1/2/a.png", "https only"),
    ("ftp://cdn.discordapp.com/a.png", "not an image link"),
    ("https://user:pw@cdn.discordapp.com/a.png", "user name or password"),
])  # fmt: skip
def test_a_url_on_another_host_or_scheme_is_refused_before_any_connection(link: str, words: str) -> None:
    """The default rules allow only https on Discord's attachment hosts."""
    with pytest.raises(ImageRefused, match=words):
        Rules().check_url(link)
    assert Rules().check_url("https://cdn.discordapp.com/attachments/1/2/a.png") == "cdn.discordapp.com"


@pytest.mark.parametrize("target, words", [
    ("http://localhost:PORT/image.png", "localhost resolves to a loopback address"),
    ("http://127.0.0.1:1/image.png", "names a loopback address"),
    ("https://example.com/image.png", "not from example.com"),
])  # fmt: skip
async def test_a_redirect_to_loopback_or_another_host_is_refused(
    server: tuple[Served, Rules], target: str, words: str
) -> None:
    """A redirect is checked like the link itself: host, then the addresses its name resolves to."""
    url, rules = server
    assert words in await refused(fetch_bytes(url(f"/redirect?to={target}"), rules))


async def test_a_name_resolving_to_loopback_is_refused_by_its_resolved_address(server: tuple[Served, Rules]) -> None:
    """An allowed host name is still refused when DNS gives a loopback address (the same server, untrusted)."""
    url, rules = server
    assert "loopback" in await refused(fetch_bytes(url("/image.png").replace("127.0.0.1", "localhost"), rules))


@pytest.mark.parametrize("path", ["/stream.png", "/sized.png"])
async def test_an_oversized_file_is_refused_while_reading(server: tuple[Served, Rules], path: str) -> None:
    """Past the byte cap: by its Content-Length, or while streaming when it has none."""
    url, rules = server
    assert "larger than" in await refused(fetch_bytes(url(path), rules))


@pytest.mark.parametrize("side, words", [(20_000, "far too many pixels"), (5_000, "5000x5000 pixels")])
async def test_a_huge_png_header_is_refused_before_decoding(
    server: tuple[Served, Rules], side: int, words: str
) -> None:
    """A decompression bomb's header is refused from its size alone (Pillow's guard past 2x its limit)."""
    url, rules = server
    assert words in await refused(asyncio.to_thread(fetch_image, url(f"/header.png?side={side}"), rules))


async def test_a_non_image_with_an_image_content_type_is_refused(server: tuple[Served, Rules]) -> None:
    """The format is sniffed from the bytes: an HTML page sent as image/png is not an image."""
    url, rules = server
    assert "not an image" in await refused(asyncio.to_thread(fetch_image, url("/text.png"), rules))


async def test_a_server_that_never_answers_times_out(server: tuple[Served, Rules]) -> None:
    """The read timeout ends a fetch whose server sends nothing."""
    url, rules = server
    assert "too long" in await refused(fetch_bytes(url("/hang.png"), dataclasses.replace(rules, read_timeout_s=0.2)))
