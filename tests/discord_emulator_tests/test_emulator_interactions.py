"""Slash commands, buttons, ephemeral replies, faults and token expiry, driven through the real discord.py client."""

from __future__ import annotations

import aiohttp
import discord
import pytest

from discord_emulator import INTERACTION_ACK_DEADLINE_S, LOADING, DiscordEmulator
from discord_emulator.leaks import leaks
from tests.discord_emulator_tests.tiny_bot import GRID_PNG, JOB_ID, TinyBot


async def finished(emu: DiscordEmulator, prompt: str = "a cat"):
    """Run /imagine for a new user and wait for its final edit and its follow-up."""
    user = emu.add_user("alice")
    pending = await emu.send_slash_command(user=user, name="imagine", options={"prompt": prompt})
    original = await pending.wait_original(lambda m: bool(m.attachments))
    await emu.wait_until(lambda: pending.followups)
    return user, pending, original


async def test_command_sync_is_recorded(discord_emulator: DiscordEmulator, bot: TinyBot) -> None:
    """tree.sync() bulk-overwrites the global commands; the emulator stores them with ids and serves them back."""
    (put,) = discord_emulator.requests("PUT", r"/applications/\d+/commands$")
    assert {c["name"] for c in put.json} == {"imagine", "secret"}
    commands = {c.name: c for c in await bot.tree.fetch_commands()}
    assert commands["imagine"].options[0].name == "prompt" and commands["imagine"].id


async def test_slash_command_defer_then_edit_with_file_and_buttons(
    discord_emulator: DiscordEmulator, bot: TinyBot
) -> None:
    """/imagine is deferred (type 5) at once, then its original shows the grid bytes and the U buttons as sent."""
    _, pending, original = await finished(discord_emulator)
    callback = await pending.wait_acknowledged()
    assert callback.type == 5 and callback.elapsed_s < INTERACTION_ACK_DEADLINE_S
    assert bot.seen[-1] == ("imagine", "a cat", False)
    assert original.content == "**a cat** - done" and not original.flags & LOADING
    (grid,) = original.attachments
    assert grid.filename == "grid.png" and grid.data == GRID_PNG
    assert original.custom_ids() == [f"imagine:u1:{JOB_ID}", f"imagine:u2:{JOB_ID}"]
    assert [r.content for r in original.history] == ["", "**a cat** - 50%", "**a cat** - done"]
    assert original.history[0].flags & LOADING
    assert discord_emulator.messages() == [original, *pending.followups]
    url = (await discord_emulator.wait_until(lambda: discord_emulator.requests("PATCH", "@original")))[-1]
    async with aiohttp.ClientSession() as session, session.get(url.response["attachments"][0]["url"]) as response:
        assert await response.read() == GRID_PNG


async def test_slash_command_in_nsfw_channel_carries_the_flag(discord_emulator: DiscordEmulator, bot: TinyBot) -> None:
    """The interaction's channel object tells the bot the channel is NSFW."""
    user = discord_emulator.add_user("alice")
    nsfw = discord_emulator.state.nsfw_channel.id
    pending = await discord_emulator.send_slash_command(
        user=user, name="imagine", options={"prompt": "x"}, channel=nsfw
    )
    await pending.wait_acknowledged()
    assert pending.record.payload["channel"]["nsfw"] is True
    assert ("imagine", "x", True) in bot.seen


async def test_button_click_defer_makes_the_button_message_original(
    discord_emulator: DiscordEmulator, bot: TinyBot
) -> None:
    """A DynamicItem click is deferred with type 6 and the interaction's original is the message the button is on."""
    user, _, original = await finished(discord_emulator)
    click = await discord_emulator.click_button(user=user, message=original, custom_id=f"imagine:u2:{JOB_ID}")
    callback = await click.wait_acknowledged()
    assert callback.type == 6
    await click.wait_original(lambda m: "U2 requested" in m.content)
    assert bot.seen[-1] == ("upscale", 2, JOB_ID, int(original.id))
    assert click.original is original and original.history[-1].attachments == original.history[-2].attachments


async def test_ephemeral_reply_is_seen_only_by_its_user(discord_emulator: DiscordEmulator, bot: TinyBot) -> None:
    """An ephemeral reply is kept with its interaction, visible to the caller and absent from the channel."""
    alice, bob = discord_emulator.add_user("alice"), discord_emulator.add_user("bob")
    pending = await discord_emulator.send_slash_command(user=alice, name="secret")
    assert (await pending.wait_acknowledged()).data["flags"] == 64
    (reply,) = pending.ephemeral_messages
    assert reply.content == "only you can see this" and reply.visible_to == alice.id
    assert discord_emulator.visible_to(alice) == [reply]
    assert discord_emulator.visible_to(bob) == [] and discord_emulator.messages() == []


async def test_injected_429_is_retried_and_the_message_exists_once(
    discord_emulator: DiscordEmulator, bot: TinyBot
) -> None:
    """A 429 with Via and X-RateLimit-* headers is retried by discord.py after retry_after; one message results."""
    injection = discord_emulator.inject("POST", r"^/channels/\d+/messages$", 429, retry_after=0.05)
    channel = bot.get_channel(int(discord_emulator.state.default_channel.id))
    sent = await channel.send("hello")
    assert [m.id for m in discord_emulator.messages()] == [str(sent.id)]
    first, second = discord_emulator.requests("POST", r"/messages$")
    assert (first.status, first.injected, second.status) == (429, True, 200) and injection.hits == 1


async def test_injected_500_is_retried(discord_emulator: DiscordEmulator, bot: TinyBot) -> None:
    """A 500 is retried by discord.py (after about a second) and the edit then lands."""
    channel = bot.get_channel(int(discord_emulator.state.default_channel.id))
    sent = await channel.send("v1")
    discord_emulator.inject("PATCH", r"/messages/\d+$", 500)
    await sent.edit(content="v2")
    assert [r.status for r in discord_emulator.requests("PATCH")] == [500, 200]
    assert [r.content for r in discord_emulator.messages()[0].history] == ["v1", "v2"]


async def test_expired_interaction_token_answers_401_50027(discord_emulator: DiscordEmulator, bot: TinyBot) -> None:
    """Fifteen minutes after the interaction its token is dead: webhook edits get 401 with code 50027."""
    user, pending, _ = await finished(discord_emulator)
    discord_emulator.advance_clock(15 * 60 + 1)
    webhook = discord.Webhook.from_url(
        f"https://discord.com/api/webhooks/{discord_emulator.state.application_id}/{pending.token}",
        client=bot,
    )
    with pytest.raises(discord.HTTPException) as caught:
        await webhook.edit_message(int(pending.original.id), content="too late")
    assert (caught.value.status, caught.value.code) == (401, 50027)


async def test_late_or_repeated_callbacks_are_refused(discord_emulator: DiscordEmulator, bot: TinyBot) -> None:
    """A callback after 3 s is an unknown interaction (10062); a second callback is 40060."""
    user = discord_emulator.add_user("alice")
    done = await discord_emulator.send_slash_command(user=user, name="secret")
    await done.wait_acknowledged()
    base = f"{discord_emulator.api_base}/interactions"
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/{done.id}/{done.token}/callback", json={"type": 5}) as response:
            assert (response.status, (await response.json())["code"]) == (400, 40060)
        record = discord_emulator.state.interactions[done.id]
        record.callback = None
        discord_emulator.advance_clock(INTERACTION_ACK_DEADLINE_S + 1)
        async with session.post(f"{base}/{done.id}/{done.token}/callback", json={"type": 5}) as response:
            assert (response.status, (await response.json())["code"]) == (404, 10062)


async def test_unknown_route_is_404_and_logged(discord_emulator: DiscordEmulator, bot: TinyBot) -> None:
    """A route the emulator lacks answers Discord's 404 body and is listed in unknown_routes."""
    route = discord.http.Route("GET", "/guilds/{guild_id}/emojis", guild_id=int(discord_emulator.state.guild_id))
    with pytest.raises(discord.NotFound) as caught:
        await bot.http.request(route)
    assert caught.value.code == 0 and caught.value.text == "404: Not Found"
    assert discord_emulator.state.unknown_routes == [f"GET /guilds/{discord_emulator.state.guild_id}/emojis"]


async def test_bot_token_never_leaves_the_authorization_header(discord_emulator: DiscordEmulator, bot: TinyBot) -> None:
    """After a full /imagine run the bot token appears in no recorded request, gateway frame or message."""
    await finished(discord_emulator)
    assert all(r.authorized for r in discord_emulator.requests(path_regex="^/(users|applications|channels)"))
    assert leaks(discord_emulator, discord_emulator.token) == []
    assert leaks(discord_emulator, "emulated-grid") != []  # the scan does look inside attachment bytes


async def test_update_message_and_modal_callbacks(discord_emulator: DiscordEmulator, bot: TinyBot) -> None:
    """Type 7 edits the clicked message in place (with_response returns it); type 9 records the modal."""
    emu = discord_emulator
    channel = emu.state.default_channel.id
    button = {"type": 1, "components": [{"type": 2, "style": 1, "label": "Go", "custom_id": "raw:go"}]}
    headers = {"Authorization": f"Bot {emu.token}"}
    alice = emu.add_user("alice")
    async with aiohttp.ClientSession(headers=headers) as session:
        url = f"{emu.api_base}/channels/{channel}/messages"
        async with session.post(url, json={"content": "v1", "components": [button]}) as response:
            posted = await response.json()
        assert posted["components"][0]["id"] == 1 and posted["components"][0]["components"][0]["id"] == 2
        message = emu.state.messages[posted["id"]]
        for kind, data in ((7, {"content": "v2", "components": []}), (9, {"custom_id": "m", "title": "T"})):
            click = await emu.click_button(user=alice, message=message, custom_id="raw:go")
            callback = f"{emu.api_base}/interactions/{click.id}/{click.token}/callback?with_response=true"
            async with session.post(callback, json={"type": kind, "data": data}) as response:
                assert response.status == 200
                body = await response.json()
            if kind == 7:
                assert body["resource"]["message"]["content"] == "v2" and message.content == "v2"
                message.components = [button]  # put the button back for the modal click
            else:
                assert click.record.modal == data and "resource" not in body
