"""Buttons under a result: each click is a new job charged to the clicker, and clicks survive a bot restart."""

from __future__ import annotations

import pytest
import redis

from bot import buttons as bot_buttons
from bot.client import ImagineBot
from bot.describe import DescribeButton
from core import buttons, delivery, jobs, queue, usersettings
from discord_emulator import EPHEMERAL, INTERACTION_ACK_DEADLINE_S, DiscordEmulator, User
from tests.bot.conftest import done_job, eventually, job_ids, post_result, running_bot, store_images

CASES = [
    # (action, index, components, kind, strength, new seed)
    ("u", 2, buttons.grid_components, "upscale", None, False),
    ("v", 3, buttons.grid_components, "vary", "strong", True),
    ("reroll", 0, buttons.grid_components, "grid", None, True),
    ("strong", 1, buttons.single_components, "vary", "strong", True),
    ("subtle", 1, buttons.single_components, "vary", "subtle", True),
    ("up2x", 1, buttons.single_components, "upscale2x", None, False),
    ("zoom2", 1, buttons.single_components, "edit", None, True),
    ("panl", 1, buttons.single_components, "edit", None, True),
]


async def click_and_get_job(
    emu: DiscordEmulator, conn: redis.Redis, user: User, message, custom_id: str
) -> jobs.JobRecord:
    click = await emu.click_button(user=user, message=message, custom_id=custom_id)
    callback = await click.wait_acknowledged()
    assert callback.type == 5 and callback.elapsed_s < INTERACTION_ACK_DEADLINE_S
    await click.wait_original(lambda m: "Waiting to start" in m.content)
    (job_id,) = await eventually(lambda: [j for j in job_ids(conn, f"discord:{user.id}") if jobs.get(conn, j)])
    await eventually(lambda: queue.rq_queue(conn, "fast:tiny").get_job_position(job_id) is not None)
    assert delivery.interaction_token(conn, job_id) == click.token
    return jobs.get(conn, job_id)


@pytest.mark.parametrize(("action", "index", "components", "kind", "strength", "reseeded"), CASES)
async def test_each_button_enqueues_its_job_for_the_clicker(
    discord_emulator: DiscordEmulator,
    bot: ImagineBot,
    redis_conn: redis.Redis,
    bob: User,
    action: str,
    index: int,
    components,
    kind: str,
    strength: str | None,
    reseeded: bool,
) -> None:
    """U/V/re-roll/Vary Strong/Vary Subtle/Upscale 2x: the right kind, source and seed, owned by the clicker."""
    parent, spec = done_job(redis_conn, owner="discord:1", guild=discord_emulator.state.guild_id)
    if kind == "edit":
        store_images(redis_conn, parent)  # an edit starts from the stored pixels
    message = await post_result(discord_emulator, components(parent))
    record = await click_and_get_job(
        discord_emulator, redis_conn, bob, message, buttons.custom_id(action, parent, index)
    )
    assert record.owner == f"discord:{bob.id}" and record.spec.prompt == spec.prompt
    rq_job = queue.Job.fetch(record.job_id, connection=redis_conn, serializer=queue.SERIALIZER)
    payload = rq_job.args[0]
    assert payload["kind"] == kind and payload["owner"] == f"discord:{bob.id}"
    source = payload["source"]
    assert source["job_id"] == parent
    if kind != "grid":
        assert source["index"] == index
    assert source.get("strength") == strength
    assert (record.spec.seed != spec.seed) == reseeded and record.spec.seed_random == reseeded


@pytest.mark.parametrize(("action", "source", "size"), [
    ("zoom15", {"op": "zoom", "zoom": 1.5}, (64, 64)),
    ("square", {"op": "square"}, (64, 64)),
    ("pand", {"op": "pan", "direction": "down"}, (48, 72)),
])
async def test_edit_buttons_size_their_job_for_the_model(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, bob: User, action: str,
    source: dict, size: tuple[int, int],
) -> None:
    """Zoom Out, Make Square and Pan: an edit job whose source names the edit and whose size is the canvas
    core.canvas plans for the parent's model (the tiny one: 4,096 pixels), with its aspect."""
    parent, spec = done_job(redis_conn, "a red cat --ar 2:1 --seed 7" if action == "square" else "a red cat",
                            guild=discord_emulator.state.guild_id)
    store_images(redis_conn, parent)
    message = await post_result(discord_emulator, buttons.single_components(parent))
    record = await click_and_get_job(discord_emulator, redis_conn, bob, message,
                                     buttons.custom_id(action, parent, 1))
    payload = queue.Job.fetch(record.job_id, connection=redis_conn, serializer=queue.SERIALIZER).args[0]
    assert payload["kind"] == "edit" and payload["source"] == {"job_id": parent, "index": 1, **source}
    assert (record.spec.width, record.spec.height) == size and record.spec.prompt == spec.prompt
    assert record.spec.aspect == {(64, 64): "1:1", (48, 72): "2:3"}[size]
    waiting = discord_emulator.state.messages[await eventually(lambda: click_original(discord_emulator, bob))]
    scaled = "scaled down to 48x72: model tiny makes at most 4096 pixels, so the kept part shrinks with each pan"
    assert (scaled in waiting.content) == (action == "pand"), waiting.content


def click_original(emu: DiscordEmulator, user: User) -> str | None:
    """The id of the last message the bot posted answering `user`'s click."""
    mine = [i for i in emu.state.interactions.values() if i.user.id == user.id and i.original_id]
    return mine[-1].original_id if mine else None


async def test_a_pan_past_the_aspect_limit_is_refused_ephemerally(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, bob: User
) -> None:
    """Pan left of a 4:1 image: an ephemeral answer saying why, nothing queued or charged."""
    parent, _ = done_job(redis_conn, "a red cat --ar 4:1", guild=discord_emulator.state.guild_id)
    store_images(redis_conn, parent)
    message = await post_result(discord_emulator, buttons.single_components(parent))
    click = await discord_emulator.click_button(user=bob, message=message,
                                                custom_id=buttons.custom_id("panl", parent, 1))
    callback = await click.wait_acknowledged()
    assert callback.type == 4 and callback.data["flags"] & EPHEMERAL
    assert "longer than 4:1" in click.ephemeral_messages[0].content
    assert job_ids(redis_conn, f"discord:{bob.id}") == [] and queue.rq_queue(redis_conn, "fast:tiny").count == 0


async def test_buttons_run_in_the_clickers_mode(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, bob: User
) -> None:
    """A click is charged to the clicker: it runs on the clicker's lane (relax), not the parent's."""
    parent, _ = done_job(redis_conn, guild=discord_emulator.state.guild_id)
    usersettings.set_mode(redis_conn, f"discord:{bob.id}", "relax")
    message = await post_result(discord_emulator, buttons.grid_components(parent))
    click = await discord_emulator.click_button(user=bob, message=message, custom_id=buttons.custom_id("u", parent, 1))
    await click.wait_original(lambda m: "Waiting to start" in m.content)
    (job_id,) = await eventually(lambda: job_ids(redis_conn, f"discord:{bob.id}"))
    await eventually(lambda: queue.rq_queue(redis_conn, "relax:tiny").count == 1)
    assert jobs.get(redis_conn, job_id).spec.mode == "relax"


async def test_expired_parent_gets_an_ephemeral_answer(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, bob: User
) -> None:
    """A button whose job record is gone: an ephemeral "too old" reply, nothing enqueued."""
    parent = jobs.new_job_id()
    message = await post_result(discord_emulator, buttons.grid_components(parent))
    click = await discord_emulator.click_button(user=bob, message=message, custom_id=buttons.custom_id("v", parent, 2))
    callback = await click.wait_acknowledged()
    assert callback.type == 4 and callback.data["flags"] & EPHEMERAL
    assert "too old" in click.ephemeral_messages[0].content
    assert job_ids(redis_conn, f"discord:{bob.id}") == [] and queue.rq_queue(redis_conn, "fast:tiny").count == 0


async def test_click_after_restart_still_works(
    discord_emulator: DiscordEmulator, redis_conn: redis.Redis, bob: User
) -> None:
    """A message posted while one bot ran is clicked after a new ImagineBot started: the click makes its job."""
    parent, _ = done_job(redis_conn, guild=discord_emulator.state.guild_id)
    async with running_bot(discord_emulator, redis_conn):
        message = await post_result(discord_emulator, buttons.grid_components(parent))
    async with running_bot(discord_emulator, redis_conn):
        record = await click_and_get_job(discord_emulator, redis_conn, bob, message, buttons.custom_id("u", parent, 4))
    assert record.owner == f"discord:{bob.id}"


def test_dynamic_items_cover_every_action() -> None:
    """Every custom_id core.buttons makes is matched by exactly one registered DynamicItem (/describe's own)."""
    job = jobs.new_job_id()
    components = buttons.grid_components(job) + buttons.single_components(job) + buttons.describe_components(job)
    ids = [b["custom_id"] for row in components for b in row["components"]]
    for action in buttons.ACTIONS:
        assert any(buttons.parse(i).action == action for i in ids)
    items = (*bot_buttons.DYNAMIC_ITEMS, DescribeButton)
    for custom_id in ids:
        matching = [c for c in items if c.__discord_ui_compiled_template__.fullmatch(custom_id)]
        assert len(matching) == 1, custom_id
