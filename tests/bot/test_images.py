"""/blend, /describe and /imagine's image option in the bot: what Discord says about an attachment is checked
before admission; each refusal is an ephemeral answer and nothing is written."""

from __future__ import annotations

import io

import pytest
import redis
from PIL import Image

from bot.client import ImagineBot
from discord_emulator import EPHEMERAL, Attachment, DiscordEmulator, User
from tests.bot.conftest import rq_job_keys
from tests.worker.test_fetch import png_header


def attached(name: str = "a.png", data: bytes | None = None, content_type: str = "image/png") -> Attachment:
    if data is None:
        out = io.BytesIO()
        Image.new("RGB", (16, 16), (200, 0, 0)).save(out, "PNG")
        data = out.getvalue()
    return Attachment("", name, data, content_type)


@pytest.mark.parametrize("name, options, words", [
    ("blend", {"image1": attached("notes.txt", b"hello", "text/plain"), "image2": attached()},
     "notes.txt is not an image"),
    ("blend", {"image1": attached("big.png", png_header(5000, 5000)), "image2": attached()},
     "5000x5000 pixels"),
    ("imagine", {"prompt": "a cat", "image": attached("notes.txt", b"hello", "text/plain")}, "is not an image"),
    ("imagine", {"prompt": "a cat --iw 2"}, "--iw weighs image prompts"),
    ("describe", {}, "either an image or a link"),
    ("describe", {"image": attached(), "link": "https://cdn.discordapp.com/a.png"}, "either an image or a link"),
    ("describe", {"link": "https://example.com/a.png"}, "not from example.com"),
    ("describe", {"link": "http://cdn.discordapp.com/a.png"}, "https only"),
    ("blend", {"image1": attached(), "image2": attached()}, "https only"),  # the emulator serves http: refused
])  # fmt: skip
async def test_a_refused_image_is_an_ephemeral_answer_and_nothing_is_written(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, alice: User,
    name: str, options: dict, words: str,
) -> None:
    """Not an image, too many pixels by Discord's width and height, --iw without images, a link on another host or
    over http, /describe without exactly one image: refused before admission, naming why."""
    pending = await discord_emulator.send_slash_command(user=alice, name=name, options=options)
    callback = await pending.wait_acknowledged()
    assert callback.type == 4 and callback.data["flags"] & EPHEMERAL
    (reply,) = pending.ephemeral_messages
    assert words in reply.content
    assert rq_job_keys(redis_conn) == [] and discord_emulator.messages() == []


async def test_blend_and_describe_are_registered_with_attachment_options(
    discord_emulator: DiscordEmulator, bot: ImagineBot
) -> None:
    """The synced commands: /blend's image1-5 and /describe's image are ATTACHMENT options (type 11), /blend's
    dimensions offer Portrait, Square and Landscape."""
    commands = {c["name"]: c for c in discord_emulator.state.global_commands}
    blend = {o["name"]: o for o in commands["blend"]["options"]}
    assert [blend[f"image{k}"]["type"] for k in range(1, 6)] == [11] * 5
    assert [blend[f"image{k}"].get("required", False) for k in range(1, 6)] == [True, True, False, False, False]
    assert [c["name"] for c in blend["dimensions"]["choices"]] == ["Portrait", "Square", "Landscape"]
    assert {o["name"]: o["type"] for o in commands["describe"]["options"]} == {"image": 11, "link": 3}
    assert {o["name"]: o["type"] for o in commands["imagine"]["options"]} == {"prompt": 3, "image": 11}
