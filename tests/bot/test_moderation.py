"""Moderation in members' commands: blocked prompts, strikes and suspension, /settings defaults, NSFW channels and the
moderation log channel, through the real bot, the emulator and a real Redis."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import pytest
import redis

import moderation
from bot.client import ImagineBot
from core import audit, buttons, jobs, keys, queue, usersettings
from core.safety import Safety, safety_of
from discord_emulator import EPHEMERAL, DiscordEmulator, PendingInteraction, User
from discord_emulator.state import Channel
from moderation import BLOCKED_DEFAULT
from tests.bot.conftest import choose, done_job, eventually, job_ids, post_result, rq_job_keys, running_bot
from tests.bot.test_admin import run

SEND_MESSAGES = 1 << 11


@pytest.fixture
async def mod_log(discord_emulator: DiscordEmulator) -> Channel:
    """A #mod-log channel, made before the bot starts so that it is in the bot's guild cache."""
    return discord_emulator.state.add_channel("mod-log")


@pytest.fixture
async def modbot(
    discord_emulator: DiscordEmulator, redis_conn: redis.Redis, mod_log: Channel, admin: User
) -> AsyncIterator[ImagineBot]:
    """The bot, with #mod-log chosen as the moderation log by an admin."""
    async with running_bot(discord_emulator, redis_conn) as client:
        text = await run(discord_emulator, admin, "admin moderation log", channel=mod_log)
        assert f"now go to <#{mod_log.id}>" in text
        yield client


async def imagine(emu: DiscordEmulator, user: User, prompt: str, channel: str | None = None) -> PendingInteraction:
    pending = await emu.send_slash_command(user=user, name="imagine", options={"prompt": prompt}, channel=channel)
    await pending.wait_acknowledged()
    return pending


async def refusal(pending: PendingInteraction) -> str:
    """The one ephemeral answer of a refused command."""
    callback = await pending.wait_acknowledged()
    assert callback.type == 4 and callback.data["flags"] & EPHEMERAL, callback
    (message,) = pending.ephemeral_messages
    return message.content


def nothing_queued_or_charged(conn: redis.Redis) -> bool:
    """No RQ job, no job record, and of the member's keys only their strikes (no balance, rate or reservation)."""
    member_keys = [k for k in conn.keys("imagine:member:*") if not k.endswith(b":strikes")]
    return rq_job_keys(conn) == [] and member_keys == [] and conn.keys("imagine:job:*") == []


@pytest.mark.parametrize("prompt", ["a n.u.d.e statue", "a {marble, n u d e} statue", "a statue :: NUDE::2"])
async def test_blocked_prompt_is_refused_neutrally_logged_and_not_charged(
    discord_emulator: DiscordEmulator, modbot: ImagineBot, redis_conn: redis.Redis, alice: User, mod_log: Channel,
    prompt: str,
) -> None:
    """An evasion form, a permutation expansion and a `::` part: a neutral ephemeral refusal, nothing queued or
    charged, a notice (member, job "none", the prompt) in #mod-log with mentions off, and an audit entry."""
    text = await refusal(await imagine(discord_emulator, alice, prompt))
    assert text.startswith(moderation.BLOCKED_MESSAGE) and "nude" not in text.lower() and "n.u.d.e" not in text
    assert nothing_queued_or_charged(redis_conn)
    (notice,) = await discord_emulator.wait_until(lambda: discord_emulator.messages(mod_log.id))
    assert f"<@{alice.id}>" in notice.content and prompt.replace("`", "") in notice.content
    assert "none (nothing was queued)" in notice.content
    (post,) = discord_emulator.requests("POST", rf"/channels/{mod_log.id}/messages")
    assert post.json["allowed_mentions"]["parse"] == []
    entry = audit.latest(redis_conn, discord_emulator.state.guild_id)[0]
    assert (entry.action, entry.actor) == ("prompt blocked", alice.id) and prompt in entry.detail


async def test_negative_terms_are_not_filtered(
    discord_emulator: DiscordEmulator, modbot: ImagineBot, redis_conn: redis.Redis, alice: User
) -> None:
    """`--no nude` removes content, so it is not screened: the job is queued with the safety check on."""
    pending = await imagine(discord_emulator, alice, "a marble statue --no nude")
    await pending.wait_original(lambda m: "Waiting to start" in m.content)
    (job_id,) = await eventually(lambda: queue.rq_queue(redis_conn, "fast:tiny").job_ids)
    assert safety_of(jobs.get(redis_conn, job_id).spec).check_outputs


async def test_three_blocked_prompts_suspend_until_an_admin_lifts_it(
    discord_emulator: DiscordEmulator, modbot: ImagineBot, redis_conn: redis.Redis, alice: User, admin: User
) -> None:
    """Three blocked prompts in the window: the second warns, the third suspends (said in the refusal and the
    notice), a clean prompt is then refused; /admin moderation lift lets the member create images again."""
    answers = [await refusal(await imagine(discord_emulator, alice, "gore")) for _ in range(3)]
    assert "One more blocked prompt" in answers[1] and "suspended until" in answers[2]
    assert "suspended from image generation" in await refusal(await imagine(discord_emulator, alice, "a lighthouse"))
    assert nothing_queued_or_charged(redis_conn)
    status = await run(discord_emulator, admin, "admin moderation status")
    assert "suspended now: 1" in status
    assert "may create images again" in await run(discord_emulator, admin, "admin moderation lift", member=alice)
    pending = await imagine(discord_emulator, alice, "a lighthouse")
    await pending.wait_original(lambda m: "Waiting to start" in m.content)
    assert [e.action for e in audit.latest(redis_conn, discord_emulator.state.guild_id, 2)] == [
        "moderation lift", "prompt blocked"]


async def test_blocked_settings_default_is_refused_when_saved_and_when_used(
    discord_emulator: DiscordEmulator, modbot: ImagineBot, redis_conn: redis.Redis, alice: User, admin: User
) -> None:
    """A /settings choice on the block list is refused with a clear ephemeral answer and not saved; one saved
    before it was blocked makes /imagine refuse."""
    await run(discord_emulator, admin, "admin moderation block", action="add", entry="other")
    pending = await discord_emulator.send_slash_command(user=alice, name="settings")
    await pending.wait_acknowledged()
    (message,) = pending.ephemeral_messages
    chosen = await choose(discord_emulator, alice, message, "imagine:settings:model", "other")
    assert await refusal(chosen) == BLOCKED_DEFAULT
    assert usersettings.get(redis_conn, f"discord:{alice.id}").defaults == {}
    usersettings.set_default(redis_conn, f"discord:{alice.id}", "model", "other")  # saved before the block
    assert moderation.BLOCKED_MESSAGE in await refusal(await imagine(discord_emulator, alice, "a lighthouse"))


async def test_blocked_default_saved_before_the_block_counts_a_strike(
    discord_emulator: DiscordEmulator, modbot: ImagineBot, redis_conn: redis.Redis, alice: User, admin: User
) -> None:
    """A /settings default saved before its entry was blocked: each /imagine refusal is a strike like a blocked
    prompt (audited as the saved default, so the member is warned, then suspended) and tells the member to change
    their saved default without repeating it; nothing is queued or charged."""
    usersettings.set_default(redis_conn, f"discord:{alice.id}", "model", "other")  # saved before the block
    await run(discord_emulator, admin, "admin moderation block", action="add", entry="other")
    moderation.set_policy(redis_conn, discord_emulator.state.guild_id, strike_limit=2)
    first = await refusal(await imagine(discord_emulator, alice, "a lighthouse"))
    assert first.startswith(moderation.BLOCKED_MESSAGE) and "/settings" in first and "other" not in first
    assert "One more blocked prompt" in first
    entry = audit.latest(redis_conn, discord_emulator.state.guild_id)[0]
    assert entry.action == "prompt blocked" and "saved default model" in entry.detail
    assert "suspended until" in await refusal(await imagine(discord_emulator, alice, "a lighthouse"))
    assert moderation.is_suspended(redis_conn, discord_emulator.state.guild_id, alice.id, now=time.time())
    assert nothing_queued_or_charged(redis_conn)


async def test_mature_term_only_in_age_restricted_channel(
    discord_emulator: DiscordEmulator, modbot: ImagineBot, redis_conn: redis.Redis, alice: User
) -> None:
    """A [mature] term is queued in the NSFW channel with no safety prompt or output check, refused elsewhere;
    a clean prompt elsewhere carries the safety negative prompt and the output check."""
    nsfw = discord_emulator.state.nsfw_channel.id
    pending = await imagine(discord_emulator, alice, "a nude statue", channel=nsfw)
    await pending.wait_original(lambda m: "Waiting to start" in m.content)
    assert moderation.BLOCKED_MESSAGE in await refusal(await imagine(discord_emulator, alice, "a nude statue"))
    pending = await imagine(discord_emulator, alice, "a marble statue")
    await pending.wait_original(lambda m: "Waiting to start" in m.content)
    newest, oldest = await eventually(lambda: len(job_ids(redis_conn, f"discord:{alice.id}")) == 2
                                      and job_ids(redis_conn, f"discord:{alice.id}"))
    assert safety_of(jobs.get(redis_conn, oldest).spec) == Safety()
    assert safety_of(jobs.get(redis_conn, newest).spec) == Safety(moderation.DEFAULT_SAFETY_NEGATIVE, True, "blur")


async def test_reroll_of_a_prompt_blocked_since_is_refused(
    discord_emulator: DiscordEmulator, modbot: ImagineBot, redis_conn: redis.Redis, bob: User, admin: User
) -> None:
    """Every button is screened against the current lists: a re-roll and a U of a prompt blocked after it ran are
    refused (a U renders the stored prompt again once the image expired), nothing queued."""
    parent, _ = done_job(redis_conn, "a red lighthouse --seed 7", guild=discord_emulator.state.guild_id)
    await run(discord_emulator, admin, "admin moderation block", action="add", entry="lighthouse")
    message = await post_result(discord_emulator, buttons.grid_components(parent))
    reroll = buttons.custom_id("reroll", parent, 0)
    click = await discord_emulator.click_button(user=bob, message=message, custom_id=reroll)
    assert moderation.BLOCKED_MESSAGE in await refusal(click)
    assert queue.rq_queue(redis_conn, "fast:tiny").count == 0
    click = await discord_emulator.click_button(user=bob, message=message, custom_id=buttons.custom_id("u", parent, 1))
    assert moderation.BLOCKED_MESSAGE in await refusal(click)
    assert queue.rq_queue(redis_conn, "fast:tiny").count == 0


async def test_u_click_takes_the_safety_of_the_channel_it_is_clicked_in(
    discord_emulator: DiscordEmulator, modbot: ImagineBot, redis_conn: redis.Redis, bob: User
) -> None:
    """A U job carries the clicked channel's safety settings (safety negative prompt, output check), not the
    parent's, so a render of the stored prompt after the image expired is as safe as a new /imagine there."""
    parent, _ = done_job(redis_conn, "a red lighthouse --seed 7", guild=discord_emulator.state.guild_id)
    message = await post_result(discord_emulator, buttons.grid_components(parent))
    click = await discord_emulator.click_button(user=bob, message=message, custom_id=buttons.custom_id("u", parent, 2))
    await click.wait_original(lambda m: "Waiting to start" in m.content)
    (job_id,) = await eventually(lambda: job_ids(redis_conn, f"discord:{bob.id}"))
    assert safety_of(jobs.get(redis_conn, job_id).spec) == Safety(moderation.DEFAULT_SAFETY_NEGATIVE, True, "blur")


async def test_unwritable_log_channel_is_shown_to_admins_and_never_blocks_imagine(
    discord_emulator: DiscordEmulator, modbot: ImagineBot, redis_conn: redis.Redis, alice: User, admin: User,
    mod_log: Channel,
) -> None:
    """Discord refusing the notice (403): the member still gets their refusal, admins see the problem in status,
    /imagine keeps working; the next notice that gets through clears the problem."""
    discord_emulator.inject("POST", rf"/channels/{mod_log.id}/messages", 403)
    assert moderation.BLOCKED_MESSAGE in await refusal(await imagine(discord_emulator, alice, "gore"))
    guild = discord_emulator.state.guild_id
    await eventually(lambda: moderation.load_policy(redis_conn, guild).log_failure)
    status = await run(discord_emulator, admin, "admin moderation status")
    assert "Problem: posting to the moderation log channel failed" in status and "403" in status
    pending = await imagine(discord_emulator, alice, "a lighthouse")
    await pending.wait_original(lambda m: "Waiting to start" in m.content)
    await refusal(await imagine(discord_emulator, alice, "gore"))
    await eventually(lambda: not moderation.load_policy(redis_conn, guild).log_failure)
    assert len(discord_emulator.messages(mod_log.id)) == 1


async def test_show_of_a_blurred_result_is_a_spoiler_again(
    discord_emulator: DiscordEmulator, modbot: ImagineBot, redis_conn: redis.Redis, alice: User
) -> None:
    """/show of a job whose images the worker blurred posts them behind a spoiler, as the worker did."""
    job_id, _ = done_job(redis_conn, owner=f"discord:{alice.id}", guild=discord_emulator.state.guild_id)
    redis_conn.set(keys.job_grid(job_id), b"\x89PNG blurred grid")
    redis_conn.set(keys.job_flagged(job_id), json.dumps({"action": "blur", "flagged": [0]}))
    pending = await discord_emulator.send_slash_command(user=alice, name="show", options={"job_id": job_id})
    message = await pending.wait_original()
    assert message.attachments[0].filename == f"SPOILER_{job_id}.png"


async def test_a_guilds_languages_keep_their_ordinary_words_allowed(
    discord_emulator: DiscordEmulator, modbot: ImagineBot, redis_conn: redis.Redis, alice: User, admin: User
) -> None:
    """`sex` (Swedish: six) is blocked until an admin names Swedish in the policy; then it is allowed alone, while
    its other forms (`sexy`) stay blocked; an unknown code is refused."""
    prompt = "sex katter på en soffa"
    assert moderation.BLOCKED_MESSAGE in await refusal(await imagine(discord_emulator, alice, prompt))
    text = await run(discord_emulator, admin, "admin moderation policy", languages="sv")
    assert "ordinary words stay allowed: sv" in text
    pending = await imagine(discord_emulator, alice, prompt)
    await pending.wait_original(lambda m: "Waiting to start" in m.content)
    assert moderation.BLOCKED_MESSAGE in await refusal(await imagine(discord_emulator, alice, "sexy katter"))
    assert "no listed word is an ordinary word in xx" in await run(
        discord_emulator, admin, "admin moderation policy", languages="sv, xx")


async def test_a_burst_after_a_list_change_compiles_the_lists_once(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, alice: User,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """30 /imagine at once right after the guild's lists changed: each revision of the lists is compiled once (the
    bot may first plan on the lists it last saw, then on Redis's), counted on the real function; all are answered."""
    guild = discord_emulator.state.guild_id
    moderation.block_add(redis_conn, guild, "kraken")
    compiles: list[tuple[str, str]] = []
    real = moderation.compile_filter

    def counted(*args, **kwargs):
        compiles.append((args[0], args[1]))
        return real(*args, **kwargs)

    monkeypatch.setattr(moderation, "compile_filter", counted)
    pending = [await discord_emulator.send_slash_command(user=alice, name="imagine", options={"prompt": f"a cat {n}"})
               for n in range(30)]
    callbacks = [await p.wait_acknowledged() for p in pending]
    rev = redis_conn.hget(keys.moderation_policy(guild), "rev").decode()
    assert len(compiles) == len(set(compiles)) <= 2 and (guild, rev) in compiles, compiles
    assert all(c.type == 5 for c in callbacks[:3]), callbacks  # the free tier admits 3; the rest are told why
