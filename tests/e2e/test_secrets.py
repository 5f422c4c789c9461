"""No secret outside where it must be: after an end-to-end run that uses every token path, neither the bot token nor
any interaction token is in the DEBUG logs of the bot and worker processes, or in anything Redis stores but the
token's own expiring key."""

from __future__ import annotations

import json

import redis
from rq.job import Job

from core import delivery, keys, queue
from discord_emulator import DiscordEmulator, Message
from discord_emulator.leaks import leaks
from tests.e2e.conftest import WORKER_NAME, SharedWorker
from tests.e2e.helpers import BotProcess, click, has_png, imagine, job_of, on_edit, result, settled, stored

WORKER_FIRST_EDIT = 3
"""Revisions of a deferred /imagine's original after the worker's first edit (see test_faults)."""


async def test_no_token_in_the_logs_of_either_process_or_in_redis(
    discord: DiscordEmulator, bot: BotProcess, worker: SharedWorker, redis_conn: redis.Redis
) -> None:
    """/imagine with progress edits, a 500 and then a 401 from the webhook (so the worker posts with the bot token),
    then U1 on that post: no token in either process's DEBUG log, in any RQ job's data (decompressed) or any other
    Redis value; interaction tokens only under their expiring itoken key; the bot token nowhere the emulator saw."""

    def fail_then_expire(message: Message) -> None:
        if message.interaction_id and len(message.history) == WORKER_FIRST_EDIT and not discord.injections:
            discord.inject("PATCH", r"^/webhooks/", 500)  # the /imagine's only: the click's token stays valid
            discord.state.interactions[message.interaction_id].expired = True

    on_edit(discord, fail_then_expire)
    alice = discord.add_user("alice")
    pending = await imagine(discord, alice, "a green frog --seed 4 --q 2")
    posted = await discord.wait_for_message(predicate=lambda m: m.id != pending.record.original_id and has_png(m),
                                            timeout=60)
    upscaled = await result(await click(discord, alice, posted, "u", 1))
    job_ids = [job_of(posted), job_of(upscaled)]
    for job_id in job_ids:
        await settled(redis_conn, WORKER_NAME, job_id)
    assert discord.requests("POST", r"^/channels/\d+/messages$")  # the worker used the bot token
    assert {r.status for r in discord.requests("PATCH", r"^/webhooks/")} >= {200, 401, 500}
    await bot.stop()

    tokens = [i.token for i in discord.state.interactions.values()]
    secrets = [worker.bot_token, *tokens]
    assert len(tokens) == 2 and all(len(s) > 40 for s in secrets)
    bot_log, worker_log = bot.log(), worker.log()
    assert " DEBUG " in bot_log and " DEBUG " in worker_log and "delivered to Discord" in worker_log
    for secret in secrets:
        assert secret not in bot_log
        assert secret not in worker_log

    token_keys = {keys.job_interaction_token(job_id) for job_id in job_ids}
    values = list(stored(redis_conn))
    assert any(key.startswith("rq:job:") and b'"owner"' in value for key, value in values)  # RQ's data, unzipped
    for secret in secrets:
        assert [key for key, value in values if secret.encode() in value and key not in token_keys] == []
    for key in token_keys:
        assert redis_conn.ttl(key) in (-2, *range(1, delivery.INTERACTION_TOKEN_TTL_S))  # gone, or expiring

    rq_jobs = Job.fetch_many(job_ids, connection=redis_conn, serializer=queue.SERIALIZER)
    for job_id, rq_job in zip(job_ids, rq_jobs, strict=True):
        assert rq_job is not None
        arguments = json.dumps(rq_job.args) + json.dumps(rq_job.kwargs) + rq_job.description
        assert job_id in arguments  # what is grepped is the real payload
        assert not any(secret in arguments for secret in secrets)
    assert leaks(discord, worker.bot_token) == []
