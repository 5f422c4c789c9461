"""/admin moderation: block and allow lists, policy, log channel (with the bot's permissions there), suspend, lift
and status; each happy path and a bad input, authorised and audited like every /admin command."""

from __future__ import annotations

import redis

import moderation as modstore
from bot.client import ImagineBot
from core import audit, buttons, keys
from discord_emulator import DiscordEmulator, User
from discord_emulator.openapi import load_checker
from moderation.listfile import MAX_ENTRY_CHARS
from tests.bot.conftest import MANAGE_GUILD, done_job, post_result, running_bot
from tests.bot.test_admin import run
from tests.bot.test_moderation import SEND_MESSAGES, imagine, refusal
from worker import safety


def actions(conn: redis.Redis, emu: DiscordEmulator, count: int = 10) -> list[str]:
    return [e.action for e in audit.latest(conn, emu.state.guild_id, count)]


async def test_moderation_subcommands_are_synced_under_admin(
    discord_emulator: DiscordEmulator, bot: ImagineBot
) -> None:
    """/admin moderation holds block, allow, policy, log, suspend, lift and status (Discord allows no deeper)."""
    (command,) = [c for c in discord_emulator.state.global_commands if c["name"] == "admin"]
    (group,) = [o for o in command["options"] if o["name"] == "moderation"]
    assert {o["name"] for o in group["options"]} == {"block", "allow", "policy", "log", "suspend", "lift", "status"}


async def test_block_add_remove_list_and_bad_entries(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, admin: User, alice: User
) -> None:
    """block add blocks a word however spelled; list shows it; remove unblocks (a default entry too); an empty,
    one-letter or absurdly long entry gets a clear answer and changes nothing; a member is refused and audited."""
    guild = discord_emulator.state.guild_id
    assert "now on the block list" in await run(discord_emulator, admin, "admin moderation block", action="add",
                                                  entry="Lighthouse")
    assert modstore.BLOCKED_MESSAGE in await refusal(await imagine(discord_emulator, alice, "a L1GHTH0USE"))
    assert "`Lighthouse`" in await run(discord_emulator, admin, "admin moderation block", action="list")
    assert "is off the block list" in await run(discord_emulator, admin, "admin moderation block",
                                                action="remove", entry="gore")
    assert "gore" not in modstore.block_list(redis_conn, guild)
    assert "not on this server's block list" in await run(discord_emulator, admin, "admin moderation block",
                                                          action="remove", entry="gore")
    before = modstore.block_list(redis_conn, guild)
    assert "Give the word or phrase to add" in await run(discord_emulator, admin, "admin moderation block",
                                                         action="add")
    assert "fewer than 2 letters" in await run(discord_emulator, admin, "admin moderation block", action="add",
                                               entry="x")
    assert f"at most {MAX_ENTRY_CHARS} characters" in await run(discord_emulator, admin, "admin moderation block",
                                                                 action="add", entry="word " * 40)
    assert modstore.block_list(redis_conn, guild) == before
    assert "Manage Server" in await run(discord_emulator, alice, "admin moderation block", action="add", entry="cat")
    assert actions(redis_conn, discord_emulator, 4) == [
        "denied", "moderation block remove", "prompt blocked", "moderation block add"]


async def test_allow_list_lets_a_false_positive_through(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, admin: User, alice: User
) -> None:
    """allow add of a phrase containing a blocked word lets prompts with it through; list and remove work; a bad
    action is refused clearly."""
    await run(discord_emulator, admin, "admin moderation block", action="add", entry="lighthouse")
    assert "now on the allow list" in await run(discord_emulator, admin, "admin moderation allow", action="add",
                                                 entry="lighthouse keeper")
    pending = await imagine(discord_emulator, alice, "an old lighthouse keeper")
    await pending.wait_original(lambda m: "Waiting to start" in m.content)
    assert "`lighthouse keeper`" in await run(discord_emulator, admin, "admin moderation allow", action="list")
    assert "is off the allow list" in await run(discord_emulator, admin, "admin moderation allow", action="remove",
                                                entry="lighthouse keeper")
    assert "add, remove or list" in await run(discord_emulator, admin, "admin moderation allow", action="purge")


async def test_policy_shows_changes_and_refuses_absurd_values(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, admin: User
) -> None:
    """policy with no options shows it; options change NSFW, action, safety prompt and strikes (minutes); values out
    of range are refused and nothing is stored."""
    guild = discord_emulator.state.guild_id
    assert "NSFW: age-restricted" in await run(discord_emulator, admin, "admin moderation policy")
    text = await run(discord_emulator, admin, "admin moderation policy", nsfw="strict", flagged="withhold",
                     safety_negative="blood", strike_limit=5, strike_window_minutes=30, suspension_minutes=120)
    assert "updated" in text and "NSFW: strict" in text and "Flagged images: withhold" in text
    assert modstore.load_policy(redis_conn, guild) == modstore.Policy(
        "strict", "withhold", "blood", 5, 30 * 60, 120 * 60)
    assert "strike_limit must be a whole number from 1 to 100" in await run(
        discord_emulator, admin, "admin moderation policy", strike_limit=0)
    assert "suspension minutes must be a whole number of minutes" in await run(
        discord_emulator, admin, "admin moderation policy", suspension_minutes=-5)
    assert "at most 300 characters" in await run(discord_emulator, admin, "admin moderation policy",
                                                 safety_negative="x" * 301)
    assert modstore.load_policy(redis_conn, guild).strike_limit == 5
    assert actions(redis_conn, discord_emulator) == ["moderation policy"]


async def test_log_channel_checks_the_bots_permissions(
    discord_emulator: DiscordEmulator, redis_conn: redis.Redis, admin: User
) -> None:
    """log #channel: accepted where the bot can post; refused, naming the permission, where an overwrite denies it
    Send Messages, and refused for a channel that is not a text channel; `off` turns it off."""
    state = discord_emulator.state
    good = state.add_channel("mod-log")
    locked = state.add_channel("locked")
    locked.overwrites.append({"id": state.bot.id, "type": 1, "allow": "0", "deny": str(SEND_MESSAGES)})
    category = state.add_channel("Archive")
    category.type = 4
    async with running_bot(discord_emulator, redis_conn):
        text = await run(discord_emulator, admin, "admin moderation log", channel=locked)
        assert f"I can't post in <#{locked.id}>: I need Send Messages" in text
        assert "not a text channel" in await run(discord_emulator, admin, "admin moderation log", channel=category)
        assert modstore.load_policy(redis_conn, state.guild_id).log_channel == ""
        assert f"now go to <#{good.id}>" in await run(discord_emulator, admin, "admin moderation log", channel=good)
        assert f"Moderation log: <#{good.id}>" in await run(discord_emulator, admin, "admin moderation log")
        assert "is off" in await run(discord_emulator, admin, "admin moderation log", off=True)
    assert modstore.load_policy(redis_conn, state.guild_id).log_channel == ""


async def test_suspend_and_lift_a_member(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, admin: User, alice: User
) -> None:
    """suspend refuses the member's /imagine and buttons (a U too) for the minutes given; admins and non-positive
    lengths are refused; lift ends it (and says so when there was none)."""
    text = await run(discord_emulator, admin, "admin moderation suspend", member=alice, minutes=30.0)
    assert f"<@{alice.id}> is suspended" in text
    assert "suspended from image generation" in await refusal(await imagine(discord_emulator, alice, "a cat"))
    parent, _ = done_job(redis_conn, guild=discord_emulator.state.guild_id)
    message = await post_result(discord_emulator, buttons.grid_components(parent))
    upscale = buttons.custom_id("u", parent, 1)
    click = await discord_emulator.click_button(user=alice, message=message, custom_id=upscale)
    assert "suspended from image generation" in await refusal(click)
    other = discord_emulator.add_user("other-admin", permissions=MANAGE_GUILD)
    assert "is an admin" in await run(discord_emulator, admin, "admin moderation suspend", member=other)
    assert "positive number of minutes" in await run(discord_emulator, admin, "admin moderation suspend",
                                                     member=alice, minutes=-1.0)
    assert "may create images again" in await run(discord_emulator, admin, "admin moderation lift", member=alice)
    assert "was not suspended" in await run(discord_emulator, admin, "admin moderation lift", member=alice)
    assert actions(redis_conn, discord_emulator) == ["moderation lift", "moderation suspend"]


async def test_status_says_when_no_worker_checks_images(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, admin: User
) -> None:
    """status: the policy, lists and log; "none configured" while workers report no classifier, the classifier's
    name once one does."""
    safety.report(redis_conn, "gpu-1", None, now=1.0)
    text = await run(discord_emulator, admin, "admin moderation status")
    assert text.startswith("**Moderation**") and "Moderation log: no channel chosen" in text
    assert "Image safety classifier: none configured" in text
    safety.report(redis_conn, "gpu-2", safety.SkinToneClassifier(), now=1.0)
    assert "Image safety classifier: builtin:skin" in await run(discord_emulator, admin, "admin moderation status")
    assert redis_conn.hlen(keys.safety_classifiers()) == 2


async def test_log_channel_option_offers_only_channels_the_bot_can_post_in(
    discord_emulator: DiscordEmulator, bot: ImagineBot
) -> None:
    """The synced `log` channel option lists text, announcement and thread types only (no category, voice, forum
    or media), and the sync request matches Discord's OpenAPI description."""
    (command,) = [c for c in discord_emulator.state.global_commands if c["name"] == "admin"]
    (group,) = [o for o in command["options"] if o["name"] == "moderation"]
    (log,) = [o for o in group["options"] if o["name"] == "log"]
    (channel,) = [o for o in log["options"] if o["name"] == "channel"]
    assert sorted(channel["channel_types"]) == [0, 5, 10, 11, 12]  # text, announcement, the three thread types
    checker = load_checker()
    if checker is not None:
        syncs = [r for r in discord_emulator.state.requests if r.method == "PUT" and "/commands" in r.path]
        assert syncs and [str(v) for v in checker.check_all(syncs)] == []
