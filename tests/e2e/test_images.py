"""Images in, end to end: `/imagine` with an attached image, `/blend`, and refusals, through the real bot and worker
processes; the worker fetches the attachments the emulator serves (http on 127.0.0.1, allowed for tests only)."""

from __future__ import annotations

import io

import redis
from PIL import Image

import quotas
from core import jobs, keys
from core.buttons import NUMBER_EMOJI, custom_id, describe_components
from discord_emulator import Attachment, DiscordEmulator
from model.data import Obj, Scene, render
from tests.e2e.conftest import WORKER_NAME
from tests.e2e.helpers import BotProcess, assert_ledger_balanced, eventually, job_of, png, result, settled

DEFERRED_REPLY = 5


def attached(name: str, colour: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> Attachment:
    data = io.BytesIO()
    Image.new("RGB", size, colour).save(data, "PNG")
    return Attachment("", name, data.getvalue(), "image/png")


async def test_imagine_with_an_attached_image_renders_a_grid_from_it(
    discord: DiscordEmulator, bot: BotProcess, redis_conn: redis.Redis
) -> None:
    """/imagine's image option: the worker fetches the attachment and renders a grid; the spec carries the link."""
    alice = discord.add_user("alice")
    pending = await discord.send_slash_command(user=alice, name="imagine", options={
        "prompt": "a cat --iw 2 --seed 4", "image": attached("red.png", (215, 30, 35))})
    assert (await pending.wait_acknowledged()).type == DEFERRED_REPLY
    message = await result(pending)
    job_id = job_of(message)
    await settled(redis_conn, WORKER_NAME, job_id)
    record = jobs.get(redis_conn, job_id)
    assert record is not None and record.state == jobs.DONE
    assert record.spec.extras["images"]["iw"] == 2.0 and "/attachments/uploads/" in record.spec.prompt
    assert png(message).size == (128, 128)


async def test_blend_of_two_attachments_in_portrait(
    discord: DiscordEmulator, bot: BotProcess, redis_conn: redis.Redis
) -> None:
    """/blend image1 image2 dimensions:Portrait: a 2:3 grid blending both, with the usual buttons."""
    alice = discord.add_user("alice")
    pending = await discord.send_slash_command(user=alice, name="blend", options={
        "image1": attached("a.png", (215, 30, 35)), "image2": attached("b.png", (30, 70, 230)),
        "dimensions": "Portrait"})
    message = await result(pending)
    job_id = job_of(message)
    await settled(redis_conn, WORKER_NAME, job_id)
    record = jobs.get(redis_conn, job_id)
    assert record is not None and record.spec.aspect == "2:3" and len(record.spec.extras["images"]["urls"]) == 2
    width, height = png(message).size
    assert width < height
    assert len(message.custom_ids()) == 9  # U1-U4, V1-V4, re-roll


async def test_refused_images_are_answered_and_not_charged(
    discord: DiscordEmulator, bot: BotProcess, redis_conn: redis.Redis
) -> None:
    """A link to another host is refused ephemerally before admission; a file that says image/png but is not an
    image is refused by the worker's fetch: the job fails with the reason and the member is not charged."""
    alice = discord.add_user("alice")
    pending = await discord.send_slash_command(user=alice, name="imagine",
                                               options={"prompt": "https://example.com/a.png a cat"})
    [answer] = await discord.wait_until(lambda: pending.ephemeral_messages or None)
    assert "not from example.com" in answer.content
    fake = Attachment("", "fake.png", b"<html>not an image</html>", "image/png")
    pending = await discord.send_slash_command(user=alice, name="imagine", options={"prompt": "a cat", "image": fake})
    await pending.wait_acknowledged()

    def failed() -> jobs.JobRecord | None:
        ids = {k.decode().rsplit(":", 1)[-1] for k in redis_conn.scan_iter(keys.job("*"))}
        found = [jobs.get(redis_conn, job_id) for job_id in ids if len(job_id) == 32]
        return next((r for r in found if r is not None and r.state == jobs.FAILED), None)

    record = await eventually(failed, 30, "the job to fail")
    assert "not an image" in record.reason
    await settled(redis_conn, WORKER_NAME, record.job_id)
    original = await pending.wait_original(lambda m: "failed" in m.content)
    assert "not an image" in original.content
    assert_ledger_balanced(redis_conn, quotas.member_id(discord.state.guild_id, alice.id), [record.job_id])


async def test_describe_answers_four_prompts_and_a_number_imagines_one(
    discord: DiscordEmulator, bot: BotProcess, redis_conn: redis.Redis
) -> None:
    """/describe of a red circle on blue: the image and four numbered prompts in the shapes world naming red, circle
    and blue, with 1️⃣-4️⃣, Imagine all and re-roll; 2️⃣ runs /imagine with prompt 2 through admission."""
    alice = discord.add_user("alice")
    drawn = io.BytesIO()
    Image.fromarray(render(Scene("blue", (Obj("circle", "red", "centre"),)))).save(drawn, "PNG")
    pending = await discord.send_slash_command(user=alice, name="describe", options={
        "image": Attachment("", "circle.png", drawn.getvalue(), "image/png")})
    message = await result(pending)
    described = message.content.splitlines()[1:]
    assert [line.split()[0] for line in described] == list(NUMBER_EMOJI), message.content
    for line in described:
        assert all(word in line for word in ("red", "circle", "blue")), line
    job_id = job_of(message)
    assert message.custom_ids() == [c["custom_id"] for row in describe_components(job_id) for c in row["components"]]
    await settled(redis_conn, WORKER_NAME, job_id)

    second = described[1].split(" ", 1)[1]
    pending = await discord.click_button(user=alice, message=message, custom_id=custom_id("prompt", job_id, 2))
    grid = await result(pending)
    await settled(redis_conn, WORKER_NAME, job_of(grid))
    record = jobs.get(redis_conn, job_of(grid))
    assert record is not None and record.kind == "grid" and record.spec.prompt == second
