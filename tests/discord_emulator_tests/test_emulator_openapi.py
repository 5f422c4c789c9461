"""The emulator's responses and discord.py's requests against Discord's OpenAPI description."""

from __future__ import annotations

import pytest

from discord_emulator import DiscordEmulator
from discord_emulator.openapi import find_spec, load_checker
from discord_emulator.state import RequestRecord
from tests.discord_emulator_tests.tiny_bot import JOB_ID, TinyBot

pytestmark = pytest.mark.skipif(find_spec() is None, reason="Discord's openapi.json is not in shared/reference")


async def test_scenario_has_no_schema_violations(discord_emulator: DiscordEmulator, bot: TinyBot) -> None:
    """Login, sync, a deferred /imagine edited with a file and buttons, a follow-up, a click, an ephemeral reply,
    a 429 and a channel message: every request body and response body matches its operation's schema."""
    emu = discord_emulator
    alice = emu.add_user("alice")
    pending = await emu.send_slash_command(user=alice, name="imagine", options={"prompt": "a fox"})
    original = await pending.wait_original(lambda m: bool(m.attachments))
    await emu.wait_until(lambda: pending.followups)
    click = await emu.click_button(user=alice, message=original, custom_id=f"imagine:u1:{JOB_ID}")
    await click.wait_original(lambda m: "U1" in m.content)
    secret = await emu.send_slash_command(user=alice, name="secret")
    await secret.wait_acknowledged()
    emu.inject("POST", r"/channels/\d+/messages$", 429)
    channel = bot.get_channel(int(emu.state.default_channel.id))
    message = await channel.send("hello", silent=True)
    await message.edit(content="hello again")
    await bot.fetch_channel(channel.id)
    await channel.guild.fetch_member(int(alice.id))
    await bot.tree.fetch_commands()

    operations = {(r.method, r.path.split("/")[1]) for r in emu.state.requests}
    assert {
        ("PUT", "applications"),
        ("POST", "interactions"),
        ("PATCH", "webhooks"),
        ("POST", "webhooks"),
    } <= operations
    assert any(r.files for r in emu.state.requests), "the scenario should include a multipart upload"
    checker = load_checker()
    assert checker is not None
    violations = checker.check_all(emu.state.requests)
    assert [str(v) for v in violations] == []

    # The gateway is not in the spec, but the REST-shaped objects inside its payloads are.
    ready, guild_create = (f["d"] for f in next(iter(emu.gateway.sessions.values())).sent[:2])
    gateway_objects = [
        ("UserPIIResponse", ready["user"]),
        ("GuildChannelResponse", click.record.payload["channel"]),
        ("GuildMemberResponse", click.record.payload["member"]),
        ("MessageResponse", click.record.payload["message"]),
        *(("GuildRoleResponse", role) for role in guild_create["roles"]),
        *(("GuildMemberResponse", member) for member in guild_create["members"]),
    ]
    assert [(name, e) for name, obj in gateway_objects for e in checker.check_schema(name, obj)] == []


def test_checker_reports_a_bad_response_and_an_unknown_operation() -> None:
    """The checker is not vacuous: a message missing required fields and a made-up route are both reported."""
    checker = load_checker()
    assert checker is not None
    bad = RequestRecord("GET", "/channels/1/messages/2", {}, 200, {}, None, {"id": "2", "content": 5})
    made_up = RequestRecord("GET", "/nowhere", {}, 404, {}, None, {"code": 0, "message": "404: Not Found"})
    (response,) = checker.check(bad)
    assert response.where == "response" and response.template == "/channels/{channel_id}/messages/{message_id}"
    assert [v.where for v in checker.check(made_up)] == ["operation"]
