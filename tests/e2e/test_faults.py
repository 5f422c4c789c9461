"""End to end when things go wrong: a bad prompt, Discord answering 429 and 500 while the worker delivers, and an
interaction token that Discord no longer accepts."""

from __future__ import annotations

import redis

from core import keys
from discord_emulator import EPHEMERAL, DiscordEmulator, Injection, Message
from tests.e2e.conftest import MAINTENANCE_KEYS, WORKER_KEYS, WORKER_NAME
from tests.e2e.helpers import BotProcess, grid_ids, imagine, job_of, on_edit, png, png_revisions, result, settled

REPLY = 4
WORKER_FIRST_EDIT = 3
"""A deferred /imagine's original has, after the worker's first edit, 3 revisions: the "thinking" placeholder, the
bot's waiting text (written before it enqueues), the worker's `(Waiting to start)`."""

BOT_EDIT = 2
"""... and 2 after the bot's waiting text."""


async def test_a_bad_prompt_gets_an_ephemeral_error_and_nothing_in_redis(
    discord: DiscordEmulator, bot: BotProcess, redis_conn: redis.Redis
) -> None:
    """`--ar 99:1` is answered at once with an ephemeral message naming the flag and value; no public message, and
    Redis holds exactly the worker's start-up keys (the bot wrote none, not even after it stopped)."""
    alice = discord.add_user("alice")
    pending = await discord.send_slash_command(user=alice, name="imagine", options={"prompt": "a cat --ar 99:1"})
    callback = await pending.wait_acknowledged()
    assert callback.type == REPLY and callback.data["flags"] & EPHEMERAL
    (error,) = pending.ephemeral_messages
    assert "--ar" in error.content and "99:1" in error.content and error.visible_to == alice.id
    assert discord.messages() == []
    await bot.stop()
    assert {k.decode() for k in redis_conn.scan_iter()} - MAINTENANCE_KEYS == WORKER_KEYS


async def test_429_and_500_during_delivery_still_deliver_the_grid_once(
    discord: DiscordEmulator, bot: BotProcess, redis_conn: redis.Redis
) -> None:
    """Once the worker has made its first edit, Discord answers a 429 and two 500s to the next webhook edits: the
    worker retries, and the grid arrives exactly once, on the original, with no channel post."""
    injected: list[Injection] = []

    def fail_after_the_workers_first_edit(message: Message) -> None:
        if message.interaction_id and len(message.history) == WORKER_FIRST_EDIT and not injected:
            injected.append(discord.inject("PATCH", r"^/webhooks/", 429, retry_after=0.05))
            injected.append(discord.inject("PATCH", r"^/webhooks/", 500, times=2))

    on_edit(discord, fail_after_the_workers_first_edit)
    alice = discord.add_user("alice")
    message = await result(await imagine(discord, alice, "a white horse --seed 5"))
    job_id = job_of(message)
    await settled(redis_conn, WORKER_NAME, job_id)

    assert [(i.status, i.hits) for i in injected] == [(429, 1), (500, 2)]
    statuses = [r.status for r in discord.requests("PATCH", r"^/webhooks/")]
    assert (statuses.count(429), statuses.count(500), statuses[-1]) == (1, 2, 200), statuses
    assert len(png_revisions(message)) == 1 and png(message).size == (128, 128)
    assert message.custom_ids() == grid_ids(job_id)
    assert discord.requests("POST", r"^/channels/") == [] and discord.messages() == [message]


async def test_an_expired_interaction_token_posts_the_grid_in_the_channel_once(
    discord: DiscordEmulator, bot: BotProcess, redis_conn: redis.Redis
) -> None:
    """The interaction token expires right after the bot's waiting edit: the worker's webhook edit gets 401, and the
    grid arrives once as a channel message mentioning the user, with its buttons; the original never shows it."""

    def expire_after_the_bots_edit(message: Message) -> None:
        if message.interaction_id and len(message.history) == BOT_EDIT:
            discord.state.interactions[message.interaction_id].expired = True

    on_edit(discord, expire_after_the_bots_edit)
    alice = discord.add_user("alice")
    pending = await imagine(discord, alice, "a black dog --seed 9")
    posted = await discord.wait_for_message(predicate=lambda m: m.id != pending.record.original_id, timeout=60)
    job_id = job_of(posted)
    await settled(redis_conn, WORKER_NAME, job_id)

    posts = discord.requests("POST", r"^/channels/\d+/messages$")
    assert [(r.status, r.authorized) for r in posts] == [(200, True)]
    assert posts[0].json["allowed_mentions"] == {"users": [alice.id]}
    assert f"<@{alice.id}>" in posted.content and "--seed 9" in posted.content
    assert png(posted).size == (128, 128) and posted.custom_ids() == grid_ids(job_id)
    assert [r.status for r in discord.requests("PATCH", r"^/webhooks/")][1:] == [401]  # the worker's one try
    original = pending.original
    assert original is not None and png_revisions(original) == []
    assert [m.id for m in discord.messages() if png_revisions(m)] == [posted.id]
    assert not redis_conn.exists(keys.job_interaction_token(job_id))
