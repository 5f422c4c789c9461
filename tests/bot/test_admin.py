"""/admin authorisation, tiers, quota and usage, against the emulator and a real Redis."""

from __future__ import annotations

import logging
import time

import pytest
import redis

from bot.client import ImagineBot
from core import audit, keys
from core.settings import AdminSettings
from discord_emulator import EPHEMERAL, DiscordEmulator, User
from quotas import ledger, tierstore
from quotas.tiers import period_bounds
from tests.bot.conftest import MANAGE_GUILD, OPEN_TIERS, running_bot


async def run(emu: DiscordEmulator, user: User, command: str, **options) -> str:
    """Run an /admin subcommand and return its one ephemeral answer."""
    pending = await emu.send_slash_command(user=user, name=command, options=options or None)
    callback = await pending.wait_acknowledged()
    assert callback.data.get("flags", 0) & EPHEMERAL, callback
    return pending.ephemeral_messages[0].content


def member(emu: DiscordEmulator, user: User) -> str:
    return ledger.member_id(emu.state.guild_id, user.id)


async def test_admin_group_is_synced_guild_only_for_manage_server(
    discord_emulator: DiscordEmulator, bot: ImagineBot
) -> None:
    """/admin is one command with tier and quota groups, hidden by default from members without Manage Server."""
    (command,) = [c for c in discord_emulator.state.global_commands if c["name"] == "admin"]
    assert str(command["default_member_permissions"]) == str(MANAGE_GUILD) and command["dm_permission"] is False
    names = {o["name"] for o in command["options"]}
    assert {"tier", "quota", "usage", "ban", "unban", "queue", "cancel", "limits", "announce-text", "audit"} <= names


async def test_forged_admin_interaction_changes_nothing_and_is_logged(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, alice: User, bob: User, caplog
) -> None:
    """A member without Manage Server sending /admin (Discord's default permissions bypassed): refused, nothing
    changed, a warning logged and a "denied" audit entry."""
    caplog.set_level(logging.WARNING, logger="bot.admin_ops")
    guild = discord_emulator.state.guild_id
    text = await run(discord_emulator, alice, "admin tier set", member=bob, tier="pro")
    assert "Manage Server" in text
    assert await run(discord_emulator, alice, "admin quota grant", member=alice, minutes=600.0) == text
    assert await run(discord_emulator, alice, "admin ban", member=bob) == text
    assert tierstore.get_grant(redis_conn, member(discord_emulator, bob)) is None
    assert not redis_conn.exists(keys.banned(guild)) and redis_conn.keys("imagine:member:*:balance:*") == []
    entries = audit.latest(redis_conn, guild)
    assert [(e.action, e.target, e.actor) for e in entries] == [
        ("denied", "ban", alice.id), ("denied", "quota grant", alice.id), ("denied", "tier set", alice.id)
    ]  # fmt: skip
    assert sum("refused /admin" in r.message for r in caplog.records) == 3


async def test_a_configured_admin_role_or_user_may_use_admin(
    discord_emulator: DiscordEmulator, redis_conn: redis.Redis, bob: User
) -> None:
    """Without Manage Server, a member with a configured admin role, or a configured admin user, is authorised."""
    role = discord_emulator.state.add_role("bot-admins", 0)
    mod = discord_emulator.add_user("mod", roles=[role])
    owner = discord_emulator.add_user("listed")
    admins = AdminSettings(admin_role_ids=role.id, admin_user_ids=owner.id)
    async with running_bot(discord_emulator, redis_conn, admins=admins):
        assert "**pro**" in await run(discord_emulator, mod, "admin tier set", member=bob, tier="pro")
        assert "**basic**" in await run(discord_emulator, owner, "admin tier set", member=bob, tier="basic")
    assert tierstore.get_grant(redis_conn, member(discord_emulator, bob)).tier == "basic"


async def test_tier_set_clear_and_show(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, admin: User, bob: User
) -> None:
    """tier set (with days) gives a grant with an end that /admin tier show and the audit log report; clear ends it."""
    text = await run(discord_emulator, admin, "admin tier set", member=bob, tier="PRO", days=7.0)
    assert f"<@{bob.id}> now has the **pro** tier until" in text
    grant = tierstore.get_grant(redis_conn, member(discord_emulator, bob))
    assert grant.tier == "pro" and abs(grant.expires_at - (time.time() + 7 * 86400)) < 60
    shown = await run(discord_emulator, admin, "admin tier show", member=bob)
    assert "**pro** (given by an admin until" in shown
    assert "removed" in await run(discord_emulator, admin, "admin tier clear", member=bob)
    assert tierstore.get_grant(redis_conn, member(discord_emulator, bob)) is None
    assert "nothing changed" in await run(discord_emulator, admin, "admin tier clear", member=bob)
    overview = await run(discord_emulator, admin, "admin tier show")
    assert "**Default tier:** open" in overview and "**standard**: 2.5 h fast, relax" in overview
    assert [e.action for e in audit.latest(redis_conn, discord_emulator.state.guild_id)] == ["tier clear", "tier set"]


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"tier": "gold"}, "unknown tier 'gold'; tiers are: free, basic, standard, pro, open"),
        ({"tier": "pro", "days": -1.0}, "days must be more than 0"),
        ({"tier": "pro", "days": 100000.0}, "at most 3660"),
    ],
)
async def test_tier_set_bad_input_changes_nothing(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, admin: User, bob: User, options, words
) -> None:
    """Unknown tier, negative or absurd days: a clear ephemeral answer, no grant, no audit entry."""
    assert words in await run(discord_emulator, admin, "admin tier set", member=bob, **options)
    assert tierstore.get_grant(redis_conn, member(discord_emulator, bob)) is None
    assert audit.latest(redis_conn, discord_emulator.state.guild_id) == []


async def test_member_options_must_name_a_member(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, admin: User
) -> None:
    """A user who is not in the server (no member data): "not a member" for tier set, quota grant and ban."""
    ghost = discord_emulator.state.add_user("ghost")
    for command, options in (
        ("admin tier set", {"tier": "pro"}), ("admin quota grant", {"minutes": 5.0}), ("admin ban", {}),
    ):  # fmt: skip
        text = await run(discord_emulator, admin, command, member=ghost, **options)
        assert text == f"<@{ghost.id}> is not a member of this server."
    assert redis_conn.keys("imagine:*") == []


async def test_tier_roles_map_list_and_unmap(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, admin: User
) -> None:
    """tier roles maps a role to a tier (members with it get the tier), lists the map, unmaps with `none`."""
    role = discord_emulator.state.add_role("boosters", 0)
    booster = discord_emulator.add_user("booster", roles=[role])
    assert f"<@&{role.id}> -> **standard**" in await run(
        discord_emulator, admin, "admin tier roles", role=role, tier="standard"
    )
    assert "from their role" in await run(discord_emulator, admin, "admin tier show", member=booster)
    assert f"<@&{role.id}> -> **standard**" in await run(discord_emulator, admin, "admin tier roles")
    assert "unknown tier 'gold'" in await run(discord_emulator, admin, "admin tier roles", role=role, tier="gold")
    assert "Give both" in await run(discord_emulator, admin, "admin tier roles", role=role)
    assert "unmapped" in await run(discord_emulator, admin, "admin tier roles", role=role, tier="none")
    assert tierstore.load_policy(redis_conn, discord_emulator.state.guild_id).roles == {}


async def test_quota_grant_reset_and_usage(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, admin: User, bob: User
) -> None:
    """quota grant adds minutes (shown by usage), negative or absurd grants are refused, reset clears the period;
    usage without a member lists the top users."""
    guild = discord_emulator.state.guild_id
    assert "Granted" in await run(discord_emulator, admin, "admin quota grant", member=bob, minutes=30.0)
    start, _ = period_bounds(time.time(), OPEN_TIERS.period)
    key = keys.quota_balance(member(discord_emulator, bob), int(start))
    assert float(redis_conn.hget(key, "granted_s")) == 1800
    assert "positive number of minutes" in await run(
        discord_emulator, admin, "admin quota grant", member=bob, minutes=-5.0
    )
    assert "at most 744 hours" in await run(discord_emulator, admin, "admin quota grant", member=bob, minutes=1e7)
    assert float(redis_conn.hget(key, "granted_s")) == 1800
    assert "(including 30.0 min granted)" in await run(discord_emulator, admin, "admin usage", member=bob)
    redis_conn.zadd(keys.quota_usage(guild, int(start)), {member(discord_emulator, bob): 120.0})
    assert f"1. <@{bob.id}>: 2.0 min" in await run(discord_emulator, admin, "admin usage")
    assert "reset" in await run(discord_emulator, admin, "admin quota reset", member=bob)
    assert redis_conn.hget(key, "granted_s") is None
    assert "nobody yet" in await run(discord_emulator, admin, "admin usage")
    actions = [(e.action, e.detail) for e in audit.latest(redis_conn, guild)]
    assert actions == [("quota reset", ""), ("quota grant", "+30 min")]
