"""Vary (Region)'s menu and prompt, Remix mode (`/prefer remix`, `/settings`) and the prompt it opens, through the
real discord.py client and the emulator's select menus and modals."""

from __future__ import annotations

import json

import redis

from bot.client import ImagineBot
from core import buttons, jobs, keys, queue, usersettings
from core.canvas import REGIONS
from core.settings import JobSettings
from discord_emulator import EPHEMERAL, DiscordEmulator, User
from tests.bot.conftest import choose, done_job, eventually, job_ids, post_result, store_images

MODAL = 9


def payload_of(conn: redis.Redis, job_id: str) -> dict:
    return queue.Job.fetch(job_id, connection=conn, serializer=queue.SERIALIZER).args[0]


async def test_vary_region_asks_where_then_what_then_queues_the_region_job(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, bob: User
) -> None:
    """Vary (Region): an ephemeral menu of the 14 regions; choosing one opens the prompt, pre-filled with the
    image's; submitting queues an edit of that region with the new prompt, at the image's size, for the clicker.
    Nothing is queued before the submit."""
    parent, spec = done_job(redis_conn, "a red circle --seed 3", guild=discord_emulator.state.guild_id)
    store_images(redis_conn, parent)
    message = await post_result(discord_emulator, buttons.single_components(parent, square=True))
    click = await discord_emulator.click_button(user=bob, message=message,
                                                custom_id=buttons.custom_id("region", parent, 1))
    assert (await click.wait_acknowledged()).type == 4
    (menu,) = click.ephemeral_messages
    select = menu.find_component(buttons.region_select_id(parent, 1))
    assert [o["value"] for o in select["options"]] == list(REGIONS)

    chosen = await choose(discord_emulator, bob, menu, buttons.region_select_id(parent, 1), "centre")
    callback = await chosen.wait_acknowledged()
    assert callback.type == MODAL and callback.data["title"] == "Vary (Region): centre"
    assert chosen.record.modal["components"][0]["components"][0]["value"] == "a red circle"
    assert job_ids(redis_conn, f"discord:{bob.id}") == []

    submitted = await discord_emulator.submit_modal(user=bob, opened=chosen, values={"Prompt": "a green square"})
    await submitted.wait_original(lambda m: "Waiting to start" in m.content)
    (job_id,) = await eventually(lambda: job_ids(redis_conn, f"discord:{bob.id}"))
    record = jobs.get(redis_conn, job_id)
    assert record.kind == "edit" and record.spec.prompt == "a green square"
    assert (record.spec.width, record.spec.height) == (spec.width, spec.height)
    assert payload_of(redis_conn, job_id)["source"] == {"job_id": parent, "index": 1, "op": "region",
                                                        "region": "centre"}


async def test_vary_region_links_the_web_editor_when_there_is_one(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, bob: User
) -> None:
    """With IMAGINE_WEB_URL set, Vary (Region)'s menu carries a link button to the web app's editor for that image,
    where a region is drawn freely; without it, the menu alone."""
    parent, _ = done_job(redis_conn, guild=discord_emulator.state.guild_id)
    store_images(redis_conn, parent)
    message = await post_result(discord_emulator, buttons.single_components(parent, square=True))
    links = []
    for web_url in ("", "https://imagine.example.org/"):
        bot.job_settings = JobSettings(web_url=web_url)
        click = await discord_emulator.click_button(user=bob, message=message,
                                                    custom_id=buttons.custom_id("region", parent, 1))
        await click.wait_acknowledged()
        (menu,) = click.ephemeral_messages
        links.append([c.get("url") for row in menu.components for c in row["components"] if c.get("url")])
    assert links == [[], [f"https://imagine.example.org/jobs/{parent}/region?index=1"]]


async def test_remix_mode_opens_the_prompt_before_a_variation(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, bob: User
) -> None:
    """/prefer remix turns Remix on; then V2 opens the prompt (nothing queued yet), and the edited prompt, parsed
    like /imagine's, is what the variation renders, from image 2, at the parent's size."""
    pending = await discord_emulator.send_slash_command(user=bob, name="prefer remix")
    await pending.wait_acknowledged()
    assert "Remix mode is **on**" in pending.ephemeral_messages[0].content
    parent, spec = done_job(redis_conn, "a red cat --seed 7", guild=discord_emulator.state.guild_id)
    message = await post_result(discord_emulator, buttons.grid_components(parent))
    click = await discord_emulator.click_button(user=bob, message=message, custom_id=buttons.custom_id("v", parent, 2))
    callback = await click.wait_acknowledged()
    assert callback.type == MODAL and callback.data["title"] == "Remix"
    assert job_ids(redis_conn, f"discord:{bob.id}") == []

    submitted = await discord_emulator.submit_modal(user=bob, opened=click,
                                                    values={"Prompt": "a blue dog --no trees --chaos 40"})
    await submitted.wait_original(lambda m: "Waiting to start" in m.content)
    (job_id,) = await eventually(lambda: job_ids(redis_conn, f"discord:{bob.id}"))
    record = jobs.get(redis_conn, job_id)
    assert (record.kind, record.spec.prompt, record.spec.negative_prompt, record.spec.chaos) == (
        "vary", "a blue dog", "trees", 40)
    assert (record.spec.width, record.spec.height) == (spec.width, spec.height)
    assert payload_of(redis_conn, job_id)["source"]["index"] == 2


async def test_a_remixed_reroll_takes_the_new_parameters_too(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, bob: User
) -> None:
    """Remix on (from /settings): a re-roll's edited prompt is a new /imagine: its --ar and --seed apply."""
    usersettings.set_remix(redis_conn, f"discord:{bob.id}", True)
    parent, _ = done_job(redis_conn, "a red cat", guild=discord_emulator.state.guild_id)
    message = await post_result(discord_emulator, buttons.grid_components(parent))
    click = await discord_emulator.click_button(user=bob, message=message,
                                                custom_id=buttons.custom_id("reroll", parent))
    await click.wait_acknowledged()
    submitted = await discord_emulator.submit_modal(user=bob, opened=click,
                                                    values={"Prompt": "a red cat --ar 2:1 --seed 99"})
    await submitted.wait_original(lambda m: "Waiting to start" in m.content)
    (job_id,) = await eventually(lambda: job_ids(redis_conn, f"discord:{bob.id}"))
    spec = jobs.get(redis_conn, job_id).spec
    assert (spec.aspect, spec.seed, spec.width > spec.height) == ("2:1", 99, True)


async def test_a_remix_prompt_that_does_not_parse_is_answered_and_costs_nothing(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, bob: User
) -> None:
    """An edited prompt with a bad parameter: an ephemeral answer naming it; nothing queued, nothing reserved."""
    usersettings.set_remix(redis_conn, f"discord:{bob.id}", True)
    parent, _ = done_job(redis_conn, guild=discord_emulator.state.guild_id)
    store_images(redis_conn, parent)
    message = await post_result(discord_emulator, buttons.single_components(parent, square=True))
    click = await discord_emulator.click_button(user=bob, message=message,
                                                custom_id=buttons.custom_id("zoom2", parent, 1))
    await click.wait_acknowledged()
    submitted = await discord_emulator.submit_modal(user=bob, opened=click, values={"Prompt": "a cat --chaos 500"})
    callback = await submitted.wait_acknowledged()
    assert callback.type == 4 and callback.data["flags"] & EPHEMERAL
    assert "--chaos" in submitted.ephemeral_messages[0].content
    assert job_ids(redis_conn, f"discord:{bob.id}") == [] and queue.rq_queue(redis_conn, "fast:tiny").count == 0


async def test_settings_has_a_remix_select(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, bob: User
) -> None:
    """/settings' fifth select turns Remix on and off; its text says which."""
    pending = await discord_emulator.send_slash_command(user=bob, name="settings")
    await pending.wait_acknowledged()
    (message,) = pending.ephemeral_messages
    await (await choose(discord_emulator, bob, message, "imagine:settings:remix", "on")).wait_acknowledged()
    assert usersettings.get(redis_conn, f"discord:{bob.id}").remix and "remix: **on**" in message.content
    await (await choose(discord_emulator, bob, message, "imagine:settings:remix", "off")).wait_acknowledged()
    assert not usersettings.get(redis_conn, f"discord:{bob.id}").remix


async def test_custom_zoom_asks_for_zoom_and_aspect(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, bob: User
) -> None:
    """Custom Zoom opens the prompt with `--zoom 2`; submitting `--zoom 1.5 --ar 2:1` queues a zoom of 1.5 on a
    2:1 canvas (the tiny model's size for it); `--zoom 3` is answered ephemerally and costs nothing."""
    parent, _ = done_job(redis_conn, "a red cat", guild=discord_emulator.state.guild_id)
    store_images(redis_conn, parent)
    message = await post_result(discord_emulator, buttons.single_components(parent, square=True))
    custom_id = buttons.custom_id("zoomc", parent, 1)
    bad = await discord_emulator.click_button(user=bob, message=message, custom_id=custom_id)
    assert (await bad.wait_acknowledged()).data["components"][0]["components"][0]["value"] == "a red cat --zoom 2"
    refused = await discord_emulator.submit_modal(user=bob, opened=bad, values={"Prompt": "a red cat --zoom 3"})
    assert (await refused.wait_acknowledged()).data["flags"] & EPHEMERAL
    assert "--zoom must be a number from 1 to 2" in refused.ephemeral_messages[0].content
    assert job_ids(redis_conn, f"discord:{bob.id}") == []

    click = await discord_emulator.click_button(user=bob, message=message, custom_id=custom_id)
    await click.wait_acknowledged()
    submitted = await discord_emulator.submit_modal(user=bob, opened=click,
                                                    values={"Prompt": "a red cat --zoom 1.5 --ar 2:1"})
    await submitted.wait_original(lambda m: "Waiting to start" in m.content)
    (job_id,) = await eventually(lambda: job_ids(redis_conn, f"discord:{bob.id}"))
    record = jobs.get(redis_conn, job_id)
    assert payload_of(redis_conn, job_id)["source"] == {"job_id": parent, "index": 1, "op": "zoom", "zoom": 1.5}
    assert record.spec.aspect == "2:1" and record.spec.width == 2 * record.spec.height


async def test_edits_of_an_expired_or_replaced_image_are_refused(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, bob: User
) -> None:
    """Zoom Out of an image whose pixels expired, Vary (Region) of one the safety check withheld: an ephemeral
    answer saying so before anything opens; nothing queued."""
    expired, _ = done_job(redis_conn, guild=discord_emulator.state.guild_id)
    withheld, _ = done_job(redis_conn, guild=discord_emulator.state.guild_id)
    redis_conn.set(keys.job_image(withheld, 0), b"png")
    redis_conn.set(keys.job_flagged(withheld), json.dumps({"action": "withhold", "flagged": [0]}))
    for job_id, action, says in ((expired, "zoom2", "has expired"), (withheld, "region", "safety check")):
        message = await post_result(discord_emulator, buttons.single_components(job_id, square=True))
        click = await discord_emulator.click_button(user=bob, message=message,
                                                    custom_id=buttons.custom_id(action, job_id, 1))
        if action == "region":  # the menu first, then the refusal when a region is chosen
            await click.wait_acknowledged()
            click = await choose(discord_emulator, bob, click.ephemeral_messages[0],
                                 buttons.region_select_id(job_id, 1), "r1c1")
        callback = await click.wait_acknowledged()
        assert callback.type == 4 and callback.data["flags"] & EPHEMERAL
        assert says in click.ephemeral_messages[0].content
    assert job_ids(redis_conn, f"discord:{bob.id}") == []
