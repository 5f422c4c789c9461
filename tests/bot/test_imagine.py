"""/imagine through the real discord.py client and the emulator, with a real Redis."""

from __future__ import annotations

import json

import redis
from rq.job import Job

from bot.client import ImagineBot
from core import delivery, jobs, keys, queue
from discord_emulator import EPHEMERAL, INTERACTION_ACK_DEADLINE_S, DiscordEmulator, User
from tests.bot.conftest import eventually, job_ids, rq_job_keys, running_bot


def rq_job(conn: redis.Redis, job_id: str) -> Job:
    return Job.fetch(job_id, connection=conn, serializer=queue.SERIALIZER)


async def test_valid_prompt_is_deferred_recorded_enqueued_and_shown_waiting(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, alice: User
) -> None:
    """A valid prompt: deferred in < 3 s, job record + JSON RQ job on its lane, delivery with token, waiting text."""
    pending = await discord_emulator.send_slash_command(
        user=alice, name="imagine", options={"prompt": "a cat --ar 3:2"}
    )
    callback = await pending.wait_acknowledged()
    assert callback.type == 5 and callback.elapsed_s < INTERACTION_ACK_DEADLINE_S
    original = await pending.wait_original(lambda m: "Waiting to start" in m.content)
    assert original.content.startswith(f"**a cat** - <@{alice.id}> (Waiting to start)")
    assert "next in the queue" in original.content
    await eventually(lambda: queue.rq_queue(redis_conn, "fast:tiny").count == 1)
    (job_id,) = job_ids(redis_conn, f"discord:{alice.id}")
    record = jobs.get(redis_conn, job_id)
    assert record is not None and record.state == jobs.QUEUED and record.owner == f"discord:{alice.id}"
    assert record.spec.aspect == "3:2" and record.spec.mode == "fast"
    job = rq_job(redis_conn, job_id)
    assert job.origin == keys.queue_name("tiny", "fast") and job.func_name == queue.JOB_FUNCTION
    assert job.args[0]["kind"] == "grid" and job.args[0]["spec"] == record.spec.to_dict()
    raw = redis_conn.hget(f"rq:job:{job_id}", "data") or b""
    assert pending.token.encode() not in raw and pending.token not in (job.description or "")
    assert pending.token not in json.dumps(job.args)
    saved = delivery.load(redis_conn, job_id)
    assert saved == delivery.Delivery(
        application_id=discord_emulator.state.application_id,
        channel_id=discord_emulator.state.default_channel.id,
        user_id=alice.id,
        guild_id=discord_emulator.state.guild_id,
    )
    assert delivery.interaction_token(redis_conn, job_id) == pending.token


async def test_bad_prompt_is_an_ephemeral_error_and_nothing_is_written(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, alice: User
) -> None:
    """A bad parameter: an ephemeral reply naming it; Redis stays empty (no record, no RQ job, no delivery)."""
    pending = await discord_emulator.send_slash_command(
        user=alice, name="imagine", options={"prompt": "a cat --chaos 400"}
    )
    callback = await pending.wait_acknowledged()
    assert callback.type == 4 and callback.data["flags"] & EPHEMERAL
    (reply,) = pending.ephemeral_messages
    assert "--chaos" in reply.content and "400" in reply.content
    assert discord_emulator.messages() == []
    assert redis_conn.dbsize() == 0 and rq_job_keys(redis_conn) == []


async def test_permutations_make_two_jobs_and_two_messages(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, alice: User
) -> None:
    """`{red, blue} cat`: two jobs; the original shows the first, a follow-up the second, each with its delivery."""
    pending = await discord_emulator.send_slash_command(
        user=alice, name="imagine", options={"prompt": "a {red, blue} cat"}
    )
    await pending.wait_original(lambda m: "Waiting to start" in m.content)
    await discord_emulator.wait_until(lambda: pending.followups)
    (followup,) = pending.followups
    assert pending.original.content.startswith("**a red cat**")
    assert followup.content.startswith("**a blue cat**") and "queued, 1 ahead" in followup.content
    await eventually(lambda: len(queue.rq_queue(redis_conn, "fast:tiny").job_ids) == 2)
    first, second = queue.rq_queue(redis_conn, "fast:tiny").job_ids
    assert jobs.get(redis_conn, first).spec.prompt == "a red cat"
    assert jobs.get(redis_conn, second).spec.prompt == "a blue cat"
    assert delivery.load(redis_conn, first).message_id == ""
    assert delivery.load(redis_conn, second).message_id == followup.id
    assert delivery.interaction_token(redis_conn, second) == pending.token


async def test_saved_defaults_and_mode_apply_and_explicit_parameters_win(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, alice: User
) -> None:
    """Saved --ar and relax mode apply to a later prompt; a typed --ar and --fast win over them."""
    from core import usersettings

    owner = f"discord:{alice.id}"
    usersettings.set_default(redis_conn, owner, "ar", "16:9")
    usersettings.set_mode(redis_conn, owner, "relax")
    for text in ("a cat", "a dog --ar 2:3 --fast"):
        pending = await discord_emulator.send_slash_command(user=alice, name="imagine", options={"prompt": text})
        await pending.wait_original(lambda m: "Waiting to start" in m.content)
    await eventually(
        lambda: queue.rq_queue(redis_conn, "fast:tiny").count == queue.rq_queue(redis_conn, "relax:tiny").count == 1
    )
    newest, oldest = (jobs.get(redis_conn, i) for i in job_ids(redis_conn, owner))
    assert (oldest.spec.aspect, oldest.spec.mode) == ("16:9", "relax")
    assert (newest.spec.aspect, newest.spec.mode) == ("2:3", "fast")


async def test_closing_lets_admitted_commands_start_their_jobs_first(
    discord_emulator: DiscordEmulator, redis_conn: redis.Redis, alice: User
) -> None:
    """A bot closed right after acknowledging /imagine (docker stop during a burst) first finishes starting the
    job, while its Discord session is still open: the waiting text is shown and the job queued, not left
    "thinking" with its reservation refunded."""
    async with running_bot(discord_emulator, redis_conn) as client:
        pending = await discord_emulator.send_slash_command(user=alice, name="imagine", options={"prompt": "a cat"})
        await pending.wait_acknowledged()
        await client.close()
        assert queue.rq_queue(redis_conn, "fast:tiny").count == 1
        assert "Waiting to start" in pending.original.content
