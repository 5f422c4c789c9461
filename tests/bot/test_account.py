"""/settings, /fast, /relax, /info, /cancel and /show against the emulator and a real Redis."""

from __future__ import annotations

import redis

from bot.client import ImagineBot
from core import buttons, jobs, keys, prompt, queue, usersettings
from discord_emulator import EPHEMERAL, DiscordEmulator, User
from tests.bot.conftest import REGISTRY, choose, done_job, eventually, running_bot

MANAGE_GUILD = 1 << 5


async def reply(emu: DiscordEmulator, user: User, name: str, **options) -> str:
    """Run a command and return its one ephemeral reply."""
    pending = await emu.send_slash_command(user=user, name=name, options=options or None)
    callback = await pending.wait_acknowledged()
    assert callback.data.get("flags", 0) & EPHEMERAL, callback
    return pending.ephemeral_messages[0].content


def queued(conn: redis.Redis, owner: str, text: str = "a cat") -> str:
    (spec,) = prompt.parse(text, REGISTRY)
    job_id = queue.enqueue(conn, spec, owner)
    from core import userjobs

    userjobs.add(conn, owner, job_id)
    return job_id


async def test_settings_selects_store_defaults_that_imagine_applies(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, alice: User
) -> None:
    """Choosing --ar 16:9, stylize 250, relax in /settings: stored in Redis, applied by a later /imagine."""
    pending = await discord_emulator.send_slash_command(user=alice, name="settings")
    await pending.wait_acknowledged()
    (message,) = pending.ephemeral_messages
    for name, value in (("ar", "16:9"), ("stylize", "250"), ("mode", "relax"), ("model", "other")):
        chosen = await choose(discord_emulator, alice, message, f"imagine:settings:{name}", value)
        assert (await chosen.wait_acknowledged()).type == 7
    saved = usersettings.get(redis_conn, f"discord:{alice.id}")
    assert saved == usersettings.UserSettings("relax", {"ar": "16:9", "stylize": "250", "model": "other"})
    assert "--ar 16:9" in message.content and "relax" in message.content
    pending = await discord_emulator.send_slash_command(user=alice, name="imagine", options={"prompt": "a cat --s 50"})
    await pending.wait_original(lambda m: "Waiting to start" in m.content)
    job_id = (await eventually(lambda: queue.rq_queue(redis_conn, "relax:other").job_ids))[0]
    spec = jobs.get(redis_conn, job_id).spec
    assert (spec.aspect, spec.stylize, spec.mode, spec.model) == ("16:9", 50, "relax", "other")


async def test_settings_select_works_after_a_restart(
    discord_emulator: DiscordEmulator, redis_conn: redis.Redis, alice: User
) -> None:
    """A /settings message from before a restart still saves a choice (state only in custom_id + Redis)."""
    async with running_bot(discord_emulator, redis_conn):
        pending = await discord_emulator.send_slash_command(user=alice, name="settings")
        await pending.wait_acknowledged()
    async with running_bot(discord_emulator, redis_conn):
        chosen = await choose(discord_emulator, alice, pending.ephemeral_messages[0], "imagine:settings:ar", "9:16")
        await chosen.wait_acknowledged()
    assert usersettings.get(redis_conn, f"discord:{alice.id}").defaults == {"ar": "9:16"}


async def test_fast_and_relax_switch_the_lane(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, alice: User
) -> None:
    """/relax then /imagine uses the relax lane; /fast switches back."""
    assert "relax" in await reply(discord_emulator, alice, "relax")
    assert usersettings.get(redis_conn, f"discord:{alice.id}").mode == "relax"
    pending = await discord_emulator.send_slash_command(user=alice, name="imagine", options={"prompt": "a cat"})
    await pending.wait_original(lambda m: "Waiting to start" in m.content)
    await eventually(lambda: queue.rq_queue(redis_conn, "relax:tiny").count == 1)
    assert "fast" in await reply(discord_emulator, alice, "fast")
    assert usersettings.get(redis_conn, f"discord:{alice.id}").mode == "fast"


async def test_info_lists_mode_and_jobs(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, alice: User
) -> None:
    """/info shows the mode, queued jobs with their position, and recent jobs with their state."""
    owner = f"discord:{alice.id}"
    first, second = queued(redis_conn, owner, "a red cat"), queued(redis_conn, owner, "a blue dog")
    text = await reply(discord_emulator, alice, "info")
    assert "**Mode:** fast" in text
    assert (
        f"`{first}` **a red cat** - queued, 0 ahead" in text and f"`{second}` **a blue dog** - queued, 1 ahead" in text
    )


async def test_cancel_cancels_your_latest_queued_job(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, alice: User
) -> None:
    """/cancel: the newest queued job becomes cancelled and leaves its queue."""
    job_id = queued(redis_conn, f"discord:{alice.id}")
    assert "Cancelled" in await reply(discord_emulator, alice, "cancel")
    assert jobs.get(redis_conn, job_id).state == jobs.CANCELLED
    assert job_id not in queue.rq_queue(redis_conn, keys.queue_name("tiny", "fast")).job_ids


async def test_cancel_refuses_someone_elses_job_but_an_admin_may(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, alice: User, bob: User
) -> None:
    """/cancel job_id of another user's job is refused; a member with Manage Server cancels it."""
    job_id = queued(redis_conn, f"discord:{alice.id}")
    assert "not yours" in await reply(discord_emulator, bob, "cancel", job_id=job_id)
    assert jobs.get(redis_conn, job_id).state == jobs.QUEUED
    admin = discord_emulator.add_user("admin", permissions=MANAGE_GUILD)
    assert "Cancelled" in await reply(discord_emulator, admin, "cancel", job_id=job_id)
    assert jobs.get(redis_conn, job_id).reason == "cancelled by an admin"


async def test_show_reposts_the_grid_with_its_buttons(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, alice: User
) -> None:
    """/show job_id posts the stored grid again with U/V/re-roll buttons; an unknown job is an ephemeral answer."""
    job_id, _ = done_job(redis_conn)
    redis_conn.set(keys.job_grid(job_id), b"\x89PNG grid bytes")
    pending = await discord_emulator.send_slash_command(user=alice, name="show", options={"job_id": job_id})
    message = await pending.wait_original()
    assert message.attachments[0].data == b"\x89PNG grid bytes" and "a red cat" in message.content
    expected = [b["custom_id"] for row in buttons.grid_components(job_id) for b in row["components"]]
    assert message.custom_ids() == expected
    assert "expired" in await reply(discord_emulator, alice, "show", job_id=jobs.new_job_id())
