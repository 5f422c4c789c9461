"""/admin ban, unban, queue, cancel, limits, announce-text and audit, against the emulator and a real Redis."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import redis
from rq import Worker
from rq.registry import StartedJobRegistry

from bot import admin_ops, admin_queue
from bot.client import ImagineBot
from core import audit, jobs, keys, prompt, queue
from discord_emulator import DiscordEmulator, User
from quotas import admission, tierstore
from tests.bot.conftest import MANAGE_GUILD, OPEN_TIERS, REGISTRY, eventually
from tests.bot.test_admin import member, run


async def test_ban_refuses_imagine_and_unban_lifts_it(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, admin: User, bob: User
) -> None:
    """ban with a reason: the member's /imagine is refused politely and nothing is queued; unban lets them again."""
    guild = discord_emulator.state.guild_id
    assert "is banned" in await run(discord_emulator, admin, "admin ban", member=bob, reason="spam")
    assert admission.ban_reason(redis_conn, guild, bob.id) == "spam"
    pending = await discord_emulator.send_slash_command(user=bob, name="imagine", options={"prompt": "a cat"})
    await pending.wait_acknowledged()
    assert "can't create images on this server (spam)" in pending.ephemeral_messages[0].content
    assert queue.rq_queue(redis_conn, "fast:tiny").count == 0
    assert "may create images again" in await run(discord_emulator, admin, "admin unban", member=bob)
    assert "was not banned" in await run(discord_emulator, admin, "admin unban", member=bob)
    assert [e.action for e in audit.latest(redis_conn, guild)] == ["unban", "ban"]


async def test_an_admin_cannot_be_banned(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, admin: User
) -> None:
    """Banning a member with Manage Server (or oneself) is refused and changes nothing."""
    other = discord_emulator.add_user("other-admin", permissions=MANAGE_GUILD)
    assert "is an admin" in await run(discord_emulator, admin, "admin ban", member=other)
    assert "is an admin" in await run(discord_emulator, admin, "admin ban", member=admin)
    assert not redis_conn.exists(keys.banned(discord_emulator.state.guild_id))


async def test_queue_shows_lanes_running_jobs_and_workers(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, admin: User, alice: User
) -> None:
    """queue: waiting per lane from RQ, and each live worker with the model from its stats hash."""
    pending = await discord_emulator.send_slash_command(user=alice, name="imagine", options={"prompt": "a cat"})
    await pending.wait_original(lambda m: "Waiting to start" in m.content)
    await eventually(lambda: queue.rq_queue(redis_conn, "fast:tiny").count == 1)
    worker = Worker([queue.rq_queue(redis_conn, "fast:tiny")], connection=redis_conn, name="gpu-1")
    worker.register_birth()
    redis_conn.hset(keys.worker_stats("gpu-1"), mapping={"model": "tiny", "jobs_done": 7})
    text = await run(discord_emulator, admin, "admin queue")
    assert "`fast:tiny`: 1 waiting, 0 running" in text and "**Running jobs** (0)" in text
    assert "**Workers** (1 live)" in text and "`gpu-1`: model tiny" in text and "7 jobs done" in text


async def test_cancel_any_job_refunds_its_reservation(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, admin: User, alice: User
) -> None:
    """cancel JOB_ID of a member's queued job: cancelled, its fast-time hold released at once (by the bot, no final
    hook), audited."""
    pending = await discord_emulator.send_slash_command(user=alice, name="imagine", options={"prompt": "a cat"})
    await pending.wait_original(lambda m: "Waiting to start" in m.content)
    (job_id,) = await eventually(lambda: queue.rq_queue(redis_conn, "fast:tiny").job_ids)
    assert redis_conn.exists(keys.quota_reservation(job_id))
    assert "refunded" in await run(discord_emulator, admin, "admin cancel", job_id=job_id)
    assert jobs.get(redis_conn, job_id).state == jobs.CANCELLED
    assert not redis_conn.exists(keys.quota_reservation(job_id))
    assert redis_conn.hlen(keys.quota_active(member(discord_emulator, alice))) == 0
    assert "There is no job" in await run(discord_emulator, admin, "admin cancel", job_id="nope")
    assert [e.action for e in audit.latest(redis_conn, discord_emulator.state.guild_id)] == ["cancel"]


async def test_limits_show_change_reset_and_refuse_contradictions(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, admin: User
) -> None:
    """limits: shows a tier; changes one limit for this guild only; refuses unknown limits, bad values and
    contradictory limits without storing anything; `default` goes back to the deployment's value."""
    guild = discord_emulator.state.guild_id
    assert "max_waiting: 10" in await run(discord_emulator, admin, "admin limits", tier="standard")
    text = await run(discord_emulator, admin, "admin limits", tier="standard", limit="max_waiting", value="20")
    assert text == "**standard** max_waiting is now 20 in this server."
    assert tierstore.effective_config(redis_conn, guild, OPEN_TIERS).get("standard").max_waiting == 20
    assert "max_waiting: 20 (this server)" in await run(discord_emulator, admin, "admin limits", tier="standard")
    bad = {
        ("max_running_fast", "30"): "more than max_waiting",
        ("max_waiting", "-1"): "cannot be negative",
        ("relax", "maybe"): "relax must be yes or no",
        ("max_steps", "lots"): "must be a whole number",
        ("colour", "red"): "There is no limit 'colour'",
    }
    for (limit, value), words in bad.items():
        assert words in await run(discord_emulator, admin, "admin limits", tier="standard", limit=limit, value=value)
    assert "unknown tier 'gold'" in await run(discord_emulator, admin, "admin limits", tier="gold")
    assert tierstore.load_policy(redis_conn, guild).limits == {"standard": {"max_waiting": 20}}
    await run(discord_emulator, admin, "admin limits", tier="standard", limit="max_waiting", value="default")
    assert tierstore.load_policy(redis_conn, guild).limits == {}


async def test_announce_text_sets_what_subscribe_says_and_audit_lists_actions(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, admin: User, alice: User
) -> None:
    """announce-text sets /subscribe's text (too long refused, `none` clears); audit shows the latest, newest first."""
    assert "updated" in await run(discord_emulator, admin, "admin announce-text", text="Support us on Ko-fi for pro.")
    pending = await discord_emulator.send_slash_command(user=alice, name="subscribe")
    await pending.wait_acknowledged()
    assert pending.ephemeral_messages[0].content.startswith("Support us on Ko-fi for pro.")
    assert "at most 1500" in await run(discord_emulator, admin, "admin announce-text", text="x" * 1600)
    assert "Ko-fi" in await run(discord_emulator, admin, "admin announce-text")
    assert "cleared" in await run(discord_emulator, admin, "admin announce-text", text="none")
    text = await run(discord_emulator, admin, "admin audit", count=5)
    lines = text.splitlines()
    assert lines[0] == "**Latest admin actions**" and len(lines) == 3
    assert f"<@{admin.id}> **announce-text**" in lines[1] and "Ko-fi" in lines[2]
    assert "between 1 and 50" in await run(discord_emulator, admin, "admin audit", count=500)


async def test_tier_default_sets_validates_resets_and_audits(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, admin: User, bob: User
) -> None:
    """tier default makes a tier the one members without a grant or mapped role get (bob now shows it); an unknown
    tier is refused with nothing stored; `default` goes back to the deployment's; each change is audited."""
    guild = discord_emulator.state.guild_id
    text = await run(discord_emulator, admin, "admin tier default", tier="Basic")
    assert "now get **basic** (this server's default)" in text
    assert tierstore.load_policy(redis_conn, guild).default_tier == "basic"
    assert "**basic** (" in await run(discord_emulator, admin, "admin tier show", member=bob)
    assert "**Default tier:** basic" in await run(discord_emulator, admin, "admin tier show")
    assert "unknown tier 'gold'" in await run(discord_emulator, admin, "admin tier default", tier="gold")
    assert tierstore.load_policy(redis_conn, guild).default_tier == "basic"
    text = await run(discord_emulator, admin, "admin tier default", tier="default")
    assert "now get **open** (the deployment's default)" in text
    assert tierstore.load_policy(redis_conn, guild).default_tier is None
    entries = audit.latest(redis_conn, guild)
    assert [(e.action, e.target) for e in entries] == [("tier default", "open"), ("tier default", "basic")]


def test_policy_edits_by_admins_at_once_all_survive(redis_conn: redis.Redis, redis_url: str) -> None:
    """limits, tier roles, tier default and announce-text run by four admins at once (threads, own connections),
    each several times: every edit is in the stored policy afterwards."""
    guild = "4242"

    def as_admin(n: int) -> None:
        conn = redis.Redis.from_url(redis_url)
        caller = admin_ops.Caller(guild, f"9{n}", manage_guild=True)
        for k in range(5):
            if n == 0:
                admin_ops.limits(conn, caller, OPEN_TIERS, "standard", "max_waiting", str(20 + k))
            elif n == 1:
                admin_ops.tier_roles(conn, caller, OPEN_TIERS, str(500 + k), "pro")
            elif n == 2:
                admin_ops.tier_default(conn, caller, OPEN_TIERS, "basic")
            else:
                admin_ops.announce_text(conn, caller, OPEN_TIERS, f"Boost us ({k})")
        conn.close()

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(as_admin, range(4)))
    policy = tierstore.load_policy(redis_conn, guild)
    assert policy.limits == {"standard": {"max_waiting": 24}}
    assert policy.roles == {str(500 + k): "pro" for k in range(5)}
    assert (policy.default_tier, policy.subscribe_text) == ("basic", "Boost us (4)")
    assert len(audit.latest(redis_conn, guild, 50)) == 20


def test_queue_overview_leaves_abandoned_jobs_to_the_workers(redis_conn: redis.Redis) -> None:
    """/admin queue reads RQ's started registry without running its cleanup: an abandoned job stays there for a
    worker's maintenance, whose job class retries or fails it and concludes its outcome."""
    (spec,) = prompt.parse("a cat", REGISTRY)
    job_id = queue.enqueue(redis_conn, spec, "discord:1")
    rq_queue = queue.rq_queue(redis_conn, "fast:tiny")
    registry = StartedJobRegistry(queue=rq_queue)
    redis_conn.zadd(registry.key, {f"{job_id}:execution": 1})  # a heartbeat that expired long ago
    assert "1 running" in admin_queue.overview(redis_conn)
    assert registry.get_job_ids(cleanup=False) == [job_id]
    assert jobs.get(redis_conn, job_id).state == jobs.QUEUED


def test_queue_overview_counts_jobs_the_workers_refused(redis_conn: redis.Redis) -> None:
    """/admin queue says how many hand-made jobs the workers refused (hardening: a Redis someone writes to), with
    the function names they named, backticks removed and cut short; "none" when there were none."""
    assert admin_queue.overview(redis_conn).endswith("**Refused jobs:** none")
    redis_conn.hset(keys.refused_jobs(), mapping={"os.system": 2, "evil`name" + "x" * 100: 1})
    redis_conn.set(keys.refused_jobs_total(), 3)
    line = admin_queue.overview(redis_conn).splitlines()[-1]
    assert line.startswith("**Refused jobs:** 3 named a function") and "`os.system` (2)" in line
    assert "`evilname" + "x" * (admin_queue.REFUSED_NAME_SHOWN_CHARS - 8) + "` (1)" in line
