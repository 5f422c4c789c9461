"""Tiers and quotas in members' commands, against the emulator and a real Redis: admission before every enqueue."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest
import redis

from bot.client import ImagineBot
from core import buttons, jobs, keys, metrics, queue
from discord_emulator import EPHEMERAL, DiscordEmulator, PendingInteraction, User
from quotas import admission, ledger, tierstore
from quotas.tiers import GuildPolicy, period_bounds
from tests.bot.conftest import OPEN, OPEN_TIERS, done_job, eventually, running_bot


def tiers_with(**changes: object):
    """The test tiers whose default tier has some limits changed."""
    changed = dataclasses.replace(OPEN, **changes)  # type: ignore[arg-type]
    return dataclasses.replace(OPEN_TIERS, tiers={**OPEN_TIERS.tiers, "open": changed})


async def imagine(emu: DiscordEmulator, user: User, prompt: str = "a cat") -> PendingInteraction:
    pending = await emu.send_slash_command(user=user, name="imagine", options={"prompt": prompt})
    await pending.wait_acknowledged()
    return pending


async def refusal(emu: DiscordEmulator, user: User, prompt: str = "a cat") -> str:
    """Run /imagine and return its ephemeral refusal."""
    pending = await imagine(emu, user, prompt)
    assert pending.record.callback.data.get("flags", 0) & EPHEMERAL, pending.record.callback
    return pending.ephemeral_messages[0].content


def rq_jobs(conn: redis.Redis, lane: str = "fast:tiny") -> list[str]:
    return queue.rq_queue(conn, lane).job_ids


def member(emu: DiscordEmulator, user: User) -> str:
    """The ledger's member id of a user of the emulator's guild."""
    return ledger.member_id(emu.state.guild_id, user.id)


def balance(conn: redis.Redis, emu: DiscordEmulator, user: User) -> dict[str, float]:
    """The member's balance hash this period, as numbers."""
    start, _ = period_bounds(time.time(), OPEN_TIERS.period)
    raw = conn.hgetall(keys.quota_balance(member(emu, user), int(start)))
    return {k.decode(): float(v) for k, v in raw.items()}


async def test_100_simultaneous_imagine_against_a_cap_of_3_admit_exactly_3(
    discord_emulator: DiscordEmulator, redis_conn: redis.Redis, alice: User
) -> None:
    """100 /imagine at once from one member whose tier runs 3 fast jobs: exactly 3 queued, 97 told why, ephemerally."""
    async with running_bot(discord_emulator, redis_conn, tiers=tiers_with(max_running_fast=3)):
        sent = await asyncio.gather(
            *(discord_emulator.send_slash_command(user=alice, name="imagine", options={"prompt": f"cat {i}"})
              for i in range(100))
        )  # fmt: skip
        await asyncio.gather(*(p.wait_acknowledged(timeout=10) for p in sent))
        refused = [p for p in sent if p.record.callback.data.get("flags", 0) & EPHEMERAL]
        assert len(refused) == 97
        await eventually(lambda: len(rq_jobs(redis_conn)) == 3)
        await asyncio.sleep(0.2)  # nothing more arrives
        assert len(rq_jobs(redis_conn)) == 3
        assert all("3 fast jobs queued or running" in p.ephemeral_messages[0].content for p in refused)
        assert all("at once" in p.ephemeral_messages[0].content for p in refused)


async def test_fast_time_used_up_moves_to_relax_and_says_so_once(
    discord_emulator: DiscordEmulator, redis_conn: redis.Redis, alice: User
) -> None:
    """A tier with relax and no fast time left: jobs go to relax; the first is told (ephemerally), later ones not."""
    async with running_bot(discord_emulator, redis_conn, tiers=tiers_with(fast_gpu_s=1)):
        first = await imagine(discord_emulator, alice)
        note = await discord_emulator.wait_until(lambda: first.ephemeral_messages)
        assert "used up" in note[0].content and "relax mode" in note[0].content and "resets on" in note[0].content
        await first.wait_original(lambda m: "Waiting to start" in m.content and "relax" in m.content)
        second = await imagine(discord_emulator, alice, "a dog")
        await second.wait_original(lambda m: "Waiting to start" in m.content)
        assert second.ephemeral_messages == []
        await eventually(lambda: len(rq_jobs(redis_conn, "relax:tiny")) == 2)
        assert rq_jobs(redis_conn) == []


async def test_fast_time_used_up_without_relax_is_refused_with_the_reset_date(
    discord_emulator: DiscordEmulator, redis_conn: redis.Redis, alice: User
) -> None:
    """A tier without relax and no fast time left: a refusal naming the reset date and /subscribe; nothing queued."""
    async with running_bot(discord_emulator, redis_conn, tiers=tiers_with(fast_gpu_s=1, relax=False)):
        text = await refusal(discord_emulator, alice)
    _, end = period_bounds(time.time(), OPEN_TIERS.period)
    assert "used up" in text and time.strftime("%Y-%m-%d", time.gmtime(end)) in text and "/subscribe" in text
    assert rq_jobs(redis_conn) == [] and redis_conn.hlen(keys.quota_active(member(discord_emulator, alice))) == 0


@pytest.mark.parametrize(
    ("changes", "prompt", "words"),
    [
        ({"max_jobs_per_command": 1}, "a {cat, dog}", "would create 2 jobs"),
        ({"max_pixels": 4000}, "a cat", "more pixels"),
        ({"max_steps": 3}, "a cat", "4 steps is more"),
        ({"models": ("other",)}, "a cat", "cannot use model 'tiny'"),
    ],
)
async def test_tier_limits_refuse_the_command(
    discord_emulator: DiscordEmulator, redis_conn: redis.Redis, alice: User, changes, prompt, words
) -> None:
    """Jobs per command, pixels, steps and models beyond the tier: an ephemeral refusal naming it; nothing queued."""
    async with running_bot(discord_emulator, redis_conn, tiers=tiers_with(**changes)):
        assert words in await refusal(discord_emulator, alice, prompt)
    assert rq_jobs(redis_conn) == [] and not redis_conn.exists(keys.quota_reservations())


async def test_rate_limit_and_ban_refuse_politely(
    discord_emulator: DiscordEmulator, redis_conn: redis.Redis, alice: User, bob: User
) -> None:
    """Over the tier's requests a minute: "slow down"; a banned member: a polite refusal with the reason. Each
    refusal is counted for /metrics by its reason."""
    async with running_bot(discord_emulator, redis_conn, tiers=tiers_with(requests_per_minute=1)):
        await (await imagine(discord_emulator, alice)).wait_original(lambda m: "Waiting to start" in m.content)
        assert "Slow down" in await refusal(discord_emulator, alice)
        admission.ban(redis_conn, discord_emulator.state.guild_id, bob.id, "spam")
        text = await refusal(discord_emulator, bob)
        counted = {metrics.counter_field(metrics.REFUSALS, reason=r, via="discord") for r in ("rate_limited", "banned")}
        await eventually(lambda: counted <= {k.decode() for k in redis_conn.hkeys(keys.metrics_counters())})
    assert "can't create images on this server (spam)" in text and len(rq_jobs(redis_conn)) == 1


async def test_cancel_refunds_the_reservation_at_once(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, alice: User
) -> None:
    """/imagine reserves fast time; /cancel of the queued job gives it all back in the same call (the bot applies
    the outcome itself: no core.jobs final hook runs)."""
    pending = await imagine(discord_emulator, alice)
    await pending.wait_original(lambda m: "Waiting to start" in m.content)
    (job_id,) = await eventually(lambda: rq_jobs(redis_conn))
    assert balance(redis_conn, discord_emulator, alice)["reserved_s"] > 0
    cancel = await discord_emulator.send_slash_command(user=alice, name="cancel")
    await cancel.wait_acknowledged()
    assert jobs.get(redis_conn, job_id).state == jobs.CANCELLED
    assert (
        balance(redis_conn, discord_emulator, alice)["reserved_s"] == 0
        and balance(redis_conn, discord_emulator, alice).get("used_s", 0) == 0
    )
    assert not redis_conn.exists(keys.quota_reservation(job_id))


async def test_a_job_that_cannot_be_enqueued_is_refunded(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, alice: User, monkeypatch
) -> None:
    """Admission reserved, then enqueueing failed (Redis refused mid-way): nothing stays charged or held."""

    def broken(*args, **kwargs):
        raise redis.ConnectionError("gone")

    monkeypatch.setattr(queue, "enqueue_call", broken)
    pending = await imagine(discord_emulator, alice)
    await discord_emulator.wait_until(lambda: pending.ephemeral_messages)
    assert "unreachable" in pending.ephemeral_messages[0].content
    await eventually(lambda: balance(redis_conn, discord_emulator, alice).get("reserved_s") == 0)
    assert redis_conn.hlen(keys.quota_active(member(discord_emulator, alice))) == 0
    assert redis_conn.zcard(keys.quota_reservations()) == 0


def cancel_mid_start(monkeypatch, *, enqueue_fails: bool) -> None:
    """Cancel the interaction's task (as a shutdown does) right when its job's enqueue has been sent; with
    `enqueue_fails`, that enqueue then fails (Redis refused it)."""
    from bot import submit

    real_call = queue.enqueue_call

    def cancelling_call(*args, **kwargs):
        asyncio.current_task().cancel()  # lands at the start's next await: the enqueue is on its way
        return real_call(*args, **kwargs)

    class Refused:
        async def run(self, *args, **kwargs):
            await asyncio.sleep(0.05)
            raise redis.ConnectionError("gone")

    monkeypatch.setattr(queue, "enqueue_call", cancelling_call)
    if enqueue_fails:
        monkeypatch.setattr(submit, "ENQUEUE", Refused())


async def test_a_start_cancelled_after_the_enqueue_keeps_the_job_and_its_reservation(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, alice: User, monkeypatch
) -> None:
    """The interaction's task cancelled mid-start (bot shutdown): the enqueue still lands, and the job keeps its
    reservation (it will be charged), never enqueued and refunded."""
    cancel_mid_start(monkeypatch, enqueue_fails=False)
    await imagine(discord_emulator, alice)
    (job_id,) = await eventually(lambda: rq_jobs(redis_conn))
    await eventually(lambda: bot.still_writing == 0)  # the cancelled start, and its refund of unqueued jobs, ended
    assert jobs.get(redis_conn, job_id).state == jobs.QUEUED
    assert redis_conn.exists(keys.quota_reservation(job_id))
    assert balance(redis_conn, discord_emulator, alice)["reserved_s"] > 0


async def test_a_start_cancelled_while_the_enqueue_fails_refunds_the_job(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, alice: User, monkeypatch
) -> None:
    """The interaction's task cancelled mid-start while its enqueue fails: nothing queued, everything refunded."""
    cancel_mid_start(monkeypatch, enqueue_fails=True)
    await imagine(discord_emulator, alice)
    await eventually(lambda: balance(redis_conn, discord_emulator, alice).get("reserved_s") == 0)
    assert rq_jobs(redis_conn) == [] and not list(redis_conn.scan_iter("job:*"))
    assert redis_conn.zcard(keys.quota_reservations()) == 0


async def test_upscale_button_is_free_when_fast_time_is_used_up(
    discord_emulator: DiscordEmulator, redis_conn: redis.Redis, alice: User
) -> None:
    """U2 with no fast time and no relax mode is still admitted (a copy of its stored image costs no GPU time) and
    reserves nothing; once the image expired, U3 would render it again and is refused like any render."""
    job_id, _ = done_job(redis_conn, guild=discord_emulator.state.guild_id)
    redis_conn.set(keys.job_image(job_id, 1), b"png")  # image 2 is stored; image 3 expired
    grid = await _posted(discord_emulator, job_id)
    async with running_bot(discord_emulator, redis_conn, tiers=tiers_with(fast_gpu_s=1, relax=False)):
        click = await discord_emulator.click_button(user=alice, message=grid, custom_id=f"imagine:u:2:{job_id}")
        await click.wait_original(lambda m: "Waiting to start" in m.content)
        assert "refused" not in str(click.ephemeral_messages)
        (new_id,) = await eventually(lambda: rq_jobs(redis_conn))
        assert redis_conn.hget(keys.quota_reservation(new_id), "reserved_s") == b"0"
        u3 = await discord_emulator.click_button(user=alice, message=grid, custom_id=f"imagine:u:3:{job_id}")
        await u3.wait_acknowledged()
        assert "used up" in u3.ephemeral_messages[0].content
        v2 = await discord_emulator.click_button(user=alice, message=grid, custom_id=f"imagine:v:2:{job_id}")
        await v2.wait_acknowledged()
        assert "used up" in v2.ephemeral_messages[0].content


async def _posted(emu: DiscordEmulator, job_id: str):
    from tests.bot.conftest import post_result

    return await post_result(emu, buttons.grid_components(job_id))


async def test_info_shows_tier_source_fast_time_reset_and_jobs(
    discord_emulator: DiscordEmulator, redis_conn: redis.Redis, alice: User
) -> None:
    """/info: the tier and how it was assigned (role, then an admin's grant with its end), fast time, relax, jobs."""
    role = discord_emulator.state.add_role("supporters", 0)
    carol = discord_emulator.add_user("carol", roles=[role])
    guild = discord_emulator.state.guild_id
    tierstore.save_policy(redis_conn, guild, OPEN_TIERS, GuildPolicy(roles={role.id: "pro"}))
    async with running_bot(discord_emulator, redis_conn):
        await (await imagine(discord_emulator, carol)).wait_original(lambda m: "Waiting to start" in m.content)
        pending = await discord_emulator.send_slash_command(user=carol, name="info")
        await pending.wait_acknowledged()
        text = pending.ephemeral_messages[0].content
        assert f"**Tier:** pro (from your role <@&{role.id}>)" in text
        assert "**Fast time:** 0.0 min used" in text and "of 5.0 h" in text and "resets" in text
        assert "**Relax mode:** available" in text and "**Jobs:** 1 fast and 0 relax" in text
        tierstore.set_grant(redis_conn, f"{guild}:{carol.id}", OPEN_TIERS, "basic", days=3, now=time.time())
        pending = await discord_emulator.send_slash_command(user=carol, name="info")
        await pending.wait_acknowledged()
        text = pending.ephemeral_messages[0].content
        assert "**Tier:** basic (given by an admin until" in text and "**Relax mode:** not in this tier" in text


async def test_relax_is_refused_for_a_tier_without_it_and_subscribe_shows_the_admins_text(
    discord_emulator: DiscordEmulator, redis_conn: redis.Redis, alice: User
) -> None:
    """/relax on a tier without relax: refused, mode unchanged; /subscribe: the admins' text and the tiers."""
    guild = discord_emulator.state.guild_id
    tierstore.save_policy(redis_conn, guild, OPEN_TIERS, GuildPolicy(subscribe_text="Boost the server for pro!"))
    async with running_bot(discord_emulator, redis_conn, tiers=tiers_with(relax=False, max_running_relax=0)):
        pending = await discord_emulator.send_slash_command(user=alice, name="relax")
        await pending.wait_acknowledged()
        assert "no relax mode" in pending.ephemeral_messages[0].content
        assert redis_conn.hget(keys.user_settings(f"discord:{alice.id}"), "mode") is None
        pending = await discord_emulator.send_slash_command(user=alice, name="subscribe")
        await pending.wait_acknowledged()
        text = pending.ephemeral_messages[0].content
    assert text.startswith("Boost the server for pro!") and "Your tier: **open**" in text and "standard" in text
