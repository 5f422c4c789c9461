"""/settings, /fast, /relax, /info, /cancel and /show against the emulator and a real Redis."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from pathlib import Path

import redis

import quotas
from bench.redis_server import redis_server
from bot.client import ImagineBot
from core import buttons, jobs, keys, prompt, queue, usersettings
from core import delivery as deliveries
from core.delivery import Delivery
from core.errors import QUEUE_UNREACHABLE
from core.safety import Safety, with_safety
from discord_emulator import EPHEMERAL, DiscordEmulator, User
from tests.bot.conftest import (
    OPEN_TIERS,
    REGISTRY,
    choose,
    done_job,
    eventually,
    job_ids,
    post_result,
    rq_job_keys,
    running_bot,
)

MANAGE_GUILD = 1 << 5


async def reply(emu: DiscordEmulator, user: User, command: str, **options) -> str:
    """Run a command and return its one ephemeral reply."""
    pending = await emu.send_slash_command(user=user, name=command, options=options or None)
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


async def test_stealth_makes_new_jobs_private_where_the_tier_allows_it(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, alice: User
) -> None:
    """/stealth is refused to a tier without stealth (nothing saved); on Pro it is saved, and the next /imagine is
    recorded hidden (private on the web gallery); /public makes the next one public again."""
    owner = f"discord:{alice.id}"
    assert "no stealth mode" in await reply(discord_emulator, alice, "stealth")
    assert not usersettings.get(redis_conn, owner).stealth
    member = quotas.member_id(discord_emulator.state.guild_id, alice.id)
    quotas.set_grant(redis_conn, member, OPEN_TIERS, "pro", days=None, now=time.time())
    assert "Stealth mode is **on**" in await reply(discord_emulator, alice, "stealth")
    assert "**Visibility:** stealth" in await reply(discord_emulator, alice, "info")

    async def imagine(text: str) -> jobs.JobRecord:
        pending = await discord_emulator.send_slash_command(user=alice, name="imagine", options={"prompt": text})
        await pending.wait_original(lambda m: "Waiting to start" in m.content)
        def made() -> jobs.JobRecord | None:
            records = (jobs.get(redis_conn, j) for j in job_ids(redis_conn, owner))
            return next((r for r in records if r is not None and r.spec.prompt == text), None)

        return await eventually(made)

    assert (await imagine("a hidden cat")).visibility == jobs.HIDDEN
    assert "Public mode is **on**" in await reply(discord_emulator, alice, "public")
    assert (await imagine("a public cat")).visibility == jobs.PUBLIC


async def test_info_lists_mode_and_jobs(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, alice: User
) -> None:
    """/info shows the mode, queued jobs with their position, and recent jobs with their state."""
    owner = f"discord:{alice.id}"
    first, second = queued(redis_conn, owner, "a red cat"), queued(redis_conn, owner, "a blue dog")
    text = await reply(discord_emulator, alice, "info")
    assert "**Mode:** fast" in text and "**Visibility:** public" in text
    assert (
        f"`{first}` **a red cat** - queued, 0 ahead" in text and f"`{second}` **a blue dog** - queued, 1 ahead" in text
    )


async def test_info_fits_in_a_message_however_many_jobs(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, alice: User
) -> None:
    """/info of a member with 30 queued jobs of long prompts is answered (Discord refuses content over 2000
    characters): the newest jobs, then an ellipsis."""
    owner = f"discord:{alice.id}"
    for n in range(30):
        queued(redis_conn, owner, f"{n} " + "a very long prompt about a cat " * 4)
    text = await reply(discord_emulator, alice, "info")
    assert len(text) <= 2000 and text.endswith("…") and "**Queued and running**" in text


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


async def test_show_reposts_your_own_grid_and_its_buttons_work_after_a_restart(
    discord_emulator: DiscordEmulator, redis_conn: redis.Redis, alice: User
) -> None:
    """/show job_id of your own job posts the stored grid again with U/V/re-roll buttons; after the bot restarts, a
    click on its U2 still starts a job; an unknown job is an ephemeral answer."""
    job_id, _ = done_job(redis_conn, owner=f"discord:{alice.id}", guild=discord_emulator.state.guild_id)
    redis_conn.set(keys.job_grid(job_id), b"\x89PNG grid bytes")
    async with running_bot(discord_emulator, redis_conn):
        pending = await discord_emulator.send_slash_command(user=alice, name="show", options={"job_id": job_id})
        message = await pending.wait_original()
        assert message.attachments[0].data == b"\x89PNG grid bytes" and "a red cat" in message.content
        expected = [b["custom_id"] for row in buttons.grid_components(job_id) for b in row["components"]]
        assert message.custom_ids() == expected
        assert "expired" in await reply(discord_emulator, alice, "show", job_id=jobs.new_job_id())
    async with running_bot(discord_emulator, redis_conn):
        click = await discord_emulator.click_button(user=alice, message=message,
                                                    custom_id=buttons.custom_id("u", job_id, 2))
        await click.wait_acknowledged()
        (upscale,) = await eventually(lambda: [i for i in job_ids(redis_conn, f"discord:{alice.id}") if i != job_id])
        assert jobs.get(redis_conn, upscale).source == {"job_id": job_id, "index": 2}


def public_messages(emu: DiscordEmulator) -> int:
    return sum(1 for message in emu.state.messages.values() if not message.ephemeral)


async def show_refusal(emu: DiscordEmulator, user: User, job_id: str, channel: str | None = None) -> str:
    """/show's ephemeral refusal; fails if anything was posted for everyone to see."""
    before = public_messages(emu)
    pending = await emu.send_slash_command(user=user, name="show", options={"job_id": job_id}, channel=channel)
    callback = await pending.wait_acknowledged()
    assert callback.data.get("flags", 0) & EPHEMERAL, callback
    assert public_messages(emu) == before
    return pending.ephemeral_messages[0].content


async def test_show_refuses_another_members_job_but_a_server_admin_may_show_it(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, alice: User, bob: User, admin: User
) -> None:
    """Bob's /show of Alice's job is refused ephemerally, naming why, and charges nothing; a Manage Server admin of
    the job's server may show it."""
    job_id, _ = done_job(redis_conn, owner=f"discord:{alice.id}", guild=discord_emulator.state.guild_id)
    redis_conn.set(keys.job_grid(job_id), b"\x89PNG grid bytes")
    assert "only show your own jobs" in await show_refusal(discord_emulator, bob, job_id)
    assert not list(redis_conn.scan_iter("imagine:member:*"))  # nothing admitted, reserved or charged
    pending = await discord_emulator.send_slash_command(user=admin, name="show", options={"job_id": job_id})
    assert (await pending.wait_original()).attachments[0].data == b"\x89PNG grid bytes"


async def test_show_refuses_a_job_made_in_another_server(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, alice: User, admin: User
) -> None:
    """A job made in another server the bot is in cannot be shown here, not even by its owner or an admin here."""
    job_id, _ = done_job(redis_conn, owner=f"discord:{alice.id}", guild="123456789012345678")
    redis_conn.set(keys.job_grid(job_id), b"\x89PNG grid bytes")
    assert "another server" in await show_refusal(discord_emulator, alice, job_id)
    assert "another server" in await show_refusal(discord_emulator, admin, job_id)


async def test_a_job_from_an_age_restricted_channel_is_shown_only_in_one(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, alice: User
) -> None:
    """A job made in an age-restricted channel (outputs not safety-checked) is refused in an ordinary channel and
    shown in an age-restricted one."""
    nsfw = discord_emulator.state.nsfw_channel.id
    job_id, _ = done_job(redis_conn, owner=f"discord:{alice.id}", guild=discord_emulator.state.guild_id,
                         channel=nsfw, nsfw=True)
    redis_conn.set(keys.job_grid(job_id), b"\x89PNG unchecked grid")
    assert "age-restricted" in await show_refusal(discord_emulator, alice, job_id)
    pending = await discord_emulator.send_slash_command(user=alice, name="show", options={"job_id": job_id},
                                                        channel=nsfw)
    message = await pending.wait_original()
    assert message.channel_id == nsfw and message.attachments[0].data == b"\x89PNG unchecked grid"


async def test_buttons_do_not_resend_an_age_restricted_image_in_an_ordinary_channel(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, bob: User
) -> None:
    """U, V and Vary under an age-restricted job's grid that ended up in an ordinary channel are refused ephemerally
    (nothing queued, nothing reserved); its re-roll, a new render from the prompt checked for this channel, runs."""
    job_id, _ = done_job(redis_conn, guild=discord_emulator.state.guild_id,
                         channel=discord_emulator.state.nsfw_channel.id, nsfw=True)
    message = await post_result(discord_emulator, buttons.grid_components(job_id))
    for custom_id in (buttons.custom_id("u", job_id, 1), buttons.custom_id("v", job_id, 3)):
        click = await discord_emulator.click_button(user=bob, message=message, custom_id=custom_id)
        callback = await click.wait_acknowledged()
        assert callback.data.get("flags", 0) & EPHEMERAL and "age-restricted" in click.ephemeral_messages[0].content
    assert job_ids(redis_conn, f"discord:{bob.id}") == [] and not rq_job_keys(redis_conn)
    reroll_id = buttons.custom_id("reroll", job_id)
    click = await discord_emulator.click_button(user=bob, message=message, custom_id=reroll_id)
    await click.wait_acknowledged()
    (reroll,) = await eventually(lambda: job_ids(redis_conn, f"discord:{bob.id}"))
    assert jobs.get(redis_conn, reroll).kind == "grid"


async def test_show_of_an_image_at_its_models_limit_offers_no_upscale_2x(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, alice: User
) -> None:
    """/show of a 2x result as large as its model's upscales go posts Vary and re-roll but no Upscale (2x), as the
    worker did; a smaller single image keeps it."""
    shown: dict[int, list[str]] = {}
    for side in (64, 128):  # the tiny model upscales to at most 128x128 (four times its 64x64 budget)
        (spec,) = prompt.parse("a red cat", REGISTRY)
        spec = with_safety(dataclasses.replace(spec, width=side, height=side), Safety(check_outputs=True))
        job_id = jobs.new_job_id()
        deliveries.save(redis_conn, job_id, Delivery("1", "1", str(alice.id), discord_emulator.state.guild_id),
                        interaction_token=None)
        jobs.create(redis_conn, job_id, spec, f"discord:{alice.id}", kind="upscale2x")
        jobs.mark_running(redis_conn, job_id, "test-worker")
        jobs.finish(redis_conn, job_id, jobs.DONE)
        redis_conn.set(keys.job_image(job_id, 0), b"\x89PNG one image")
        pending = await discord_emulator.send_slash_command(user=alice, name="show", options={"job_id": job_id})
        shown[side] = (await pending.wait_original()).custom_ids()
    assert buttons.custom_id("up2x", shown[64][0].rsplit(":", 1)[1], 1) in shown[64]
    assert not any(":up2x:" in custom_id for custom_id in shown[128]) and len(shown[128]) == len(shown[64]) - 1


async def test_info_and_show_answer_try_again_in_time_when_redis_hangs(
    discord_emulator: DiscordEmulator, alice: User, tmp_path: Path
) -> None:
    """With the bot's Redis stopped (SIGSTOP: connections hang, nothing is refused), /info and /show still answer
    within Discord's 3 s, ephemerally: the queue is unreachable, try again."""
    with redis_server(tmp_path) as url:
        conn = redis.Redis.from_url(url)
        async with running_bot(discord_emulator, conn):
            pid = int(conn.info("server")["process_id"])
            os.kill(pid, signal.SIGSTOP)
            try:
                for name, options in (("info", None), ("show", {"job_id": jobs.new_job_id()})):
                    pending = await discord_emulator.send_slash_command(user=alice, name=name, options=options)
                    callback = await pending.wait_acknowledged()
                    assert callback.data.get("flags", 0) & EPHEMERAL and callback.elapsed_s < 3.0, callback
                    assert pending.ephemeral_messages[0].content == QUEUE_UNREACHABLE
            finally:
                os.kill(pid, signal.SIGCONT)
        conn.close()


async def test_prefer_suffix_and_options_shape_later_prompts(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, alice: User
) -> None:
    """/prefer option set wide "--ar 2:1" and /prefer suffix "--s 250": a later `/imagine a cat --wide` runs at 2:1
    and stylize 250; /prefer option list shows both; delete forgets the option; an empty suffix removes it."""
    said = await reply(discord_emulator, alice, "prefer option set", name="Wide", value="--ar  2:1")
    assert "`--wide` now stands for `--ar 2:1`" in said
    assert "ends with `--s 250`" in await reply(discord_emulator, alice, "prefer suffix", text="--s 250")
    listed = await reply(discord_emulator, alice, "prefer option list")
    assert "`--wide` = `--ar 2:1`" in listed and "Suffix: `--s 250`" in listed
    pending = await discord_emulator.send_slash_command(user=alice, name="imagine", options={"prompt": "a cat --wide"})
    await pending.wait_original(lambda m: "Waiting to start" in m.content)
    job_id = (await eventually(lambda: queue.rq_queue(redis_conn, "fast:tiny").job_ids))[0]
    spec = jobs.get(redis_conn, job_id).spec
    assert (spec.prompt, spec.aspect, spec.stylize) == ("a cat", "2:1", 250)
    assert "is forgotten" in await reply(discord_emulator, alice, "prefer option delete", name="wide")
    assert "removed" in await reply(discord_emulator, alice, "prefer suffix")
    assert usersettings.get(redis_conn, f"discord:{alice.id}").preferences == usersettings.Preferences()


async def test_a_bad_option_is_answered_and_not_saved(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, alice: User
) -> None:
    """/prefer option set with a built-in name or a value that does not parse: an ephemeral answer, nothing saved."""
    assert "built-in parameter" in await reply(discord_emulator, alice, "prefer option set", name="ar", value="--s 5")
    said = await reply(discord_emulator, alice, "prefer option set", name="big", value="--ar 99:1")
    assert "does not parse" in said
    assert usersettings.get(redis_conn, f"discord:{alice.id}").preferences.options == {}
