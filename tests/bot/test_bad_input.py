"""Bad input to the bot (issue 11): hypothesis-made interaction payloads, delivered through the emulator to a running
ImagineBot, always get an answer, never crash it or log a bug, and never touch another member's job."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.client import ImagineBot
from core import buttons, jobs, keys
from discord_emulator import EPHEMERAL, INTERACTION_ACK_DEADLINE_S, DiscordEmulator, Message, PendingInteraction, User
from tests.bot.conftest import done_job, eventually, job_ids, post_result

FUZZ = settings(
    max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
"""Few examples (each is a round trip through the emulator and Redis), fixtures shared by a test's examples."""

UNANSWERED_WAIT_S = 0.3
"""How long a test waits before it takes an interaction that is not ours to answer as left alone."""

# -- strategies ----------------------------------------------------------------------------------------------------

ODD = [
    "\u202e\u2067gnp.tac",  # right-to-left override and isolate
    "\u200b\u200c\u200d\u2060\ufeff",  # zero-width characters
    "\x00\x07\x1b[31m\r\n\t",  # control characters and an ANSI escape
    "🐱‍👤🏳️‍🌈👩🏽‍🚀",  # emoji with zero-width joiners and modifiers
    "e\u0301\u0301\u0301\u0301",  # stacked combining marks
    "--ar 16:9 --seed -1 --no",  # a parameter without its value
    "<@&1> @everyone ||spoiler|| `code`",  # mentions and markdown
]
odd_text = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=80),  # lone surrogates are not JSON text
    st.sampled_from(ODD),
    st.builds(lambda part, n: (part * n)[:6000], st.sampled_from(ODD + ["x", "猫"]), st.integers(1, 6000)),
)
"""Strings Discord may deliver in a STRING option: any code points but lone surrogates, odd marks, up to 6000."""

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | odd_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)
"""Any JSON value (no NaN or infinities: they are not JSON text either)."""

OPTION_TYPES = st.integers(0, 12)
"""Discord's option types (1-11), and a few it does not have."""


@st.composite
def raw_option(draw: st.DrawFn, names: list[str]) -> Any:
    """One entry of an interaction's `options`: often almost right, sometimes not an option at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    option: dict[str, Any] = {
        "name": draw(st.sampled_from(names or ["x"]) | st.text(max_size=12) | json_values),
        "type": draw(st.just(3) | OPTION_TYPES | json_values),
    }
    if draw(st.integers(0, 5)):
        option["value"] = draw(odd_text | json_values)
    if draw(st.integers(0, 5)) == 0:
        option["options"] = draw(st.lists(st.builds(dict, name=st.sampled_from(names or ["x"])), max_size=2))
    return option


MEMBER_COMMANDS = {
    "imagine": ["prompt"], "cancel": ["job_id"], "show": ["job_id"], "info": [], "settings": [], "fast": [],
    "relax": [], "subscribe": [], "admin": ["status", "tier", "cancel", "user", "prompt"],
    "prefer": ["remix", "suffix", "option"],
}  # fmt: skip
"""Commands any member can send, with the option (or subcommand) names they declare."""

TEMPLATE_ACTIONS = st.sampled_from([*buttons.ACTIONS, "x", "U", "settings"])
hex_ids = st.text("0123456789abcdef", min_size=32, max_size=32)
custom_ids = st.one_of(
    st.text(max_size=100),
    st.builds(lambda rest: ("imagine:" + rest)[:100], st.text(max_size=92)),
    st.builds(
        lambda a, i, j: f"imagine:{a}:{i}:{j}", TEMPLATE_ACTIONS, st.integers(-1, 12), hex_ids | st.text(max_size=40)
    ),
    st.builds(lambda name: f"imagine:settings:{name}", st.sampled_from(["mode", "ar", "stylize", "model", "x", ""])),
)
"""custom_ids: random, in our namespace, shaped like our templates with parts out of range."""

# -- what every example checks -------------------------------------------------------------------------------------


@dataclass
class Scene:
    """Bob's jobs (one queued with its reservation, one done with its grid) and the message under his done job."""

    emu: DiscordEmulator
    conn: redis.Redis
    bot: ImagineBot
    alice: User
    bob: User
    queued: str
    done: str
    result: Message
    settings: Message  # Alice's /settings, with its selects
    before: dict[str, Any]

    def bobs_world(self) -> dict[str, Any]:
        """Everything Redis holds about Bob's jobs and his ledger, byte for byte."""
        found: dict[str, Any] = {}
        for pattern in (f"*{self.queued}*", f"*{self.done}*", f"*{self.bob.id}*"):
            for key in self.conn.scan_iter(match=pattern):
                found[key.decode()] = self.conn.dump(key)
        for job in (self.queued, self.done):
            found[f"reservations:{job}"] = self.conn.zscore(keys.quota_reservations(), job)
        return found

    def assert_bob_untouched(self) -> None:
        assert self.bobs_world() == self.before
        assert jobs.get(self.conn, self.queued).state == jobs.QUEUED


@pytest.fixture
async def scene(
    discord_emulator: DiscordEmulator, bot: ImagineBot, redis_conn: redis.Redis, alice: User, bob: User
) -> Scene:
    """Bob queued a job (through /imagine: admitted, reserved) and has a finished one whose result is posted; Alice
    opened /settings."""
    pending = await discord_emulator.send_slash_command(user=bob, name="imagine", options={"prompt": "bob's cat"})
    await pending.wait_original(lambda m: "Waiting to start" in m.content)
    (queued,) = await eventually(lambda: job_ids(redis_conn, f"discord:{bob.id}"))
    await eventually(lambda: redis_conn.zscore(keys.quota_reservations(), queued) is not None)
    done, _ = done_job(
        redis_conn, "bob's dog --seed 3", owner=f"discord:{bob.id}", guild=discord_emulator.state.guild_id
    )
    redis_conn.set(keys.job_grid(done), b"\x89PNG\r\n\x1a\n")
    result = await post_result(discord_emulator, buttons.grid_components(done))
    pending = await discord_emulator.send_slash_command(user=alice, name="settings")
    await pending.wait_acknowledged()
    scene = Scene(
        discord_emulator, redis_conn, bot, alice, bob, queued, done, result, pending.ephemeral_messages[0], {}
    )
    scene.before = scene.bobs_world()
    return scene


async def answered(pending: PendingInteraction) -> str:
    """The interaction's answer, in time: an ephemeral message, a message update (a select), or a deferral followed
    by a message. Returns its text."""
    callback = await pending.wait_acknowledged(INTERACTION_ACK_DEADLINE_S)
    if callback.type == 4:
        assert callback.data["flags"] & EPHEMERAL, callback
        return pending.ephemeral_messages[0].content
    if callback.type == 7:
        return str(callback.data.get("content", ""))
    assert callback.type == 5, callback
    await pending.emu.wait_until(lambda: pending.followups or (pending.original and pending.original.content))
    return pending.original.content if pending.original and pending.original.content else pending.followups[0].content


async def still_serves(scene: Scene, caplog: pytest.LogCaptureFixture) -> None:
    """No error was logged (no UNEXPECTED, no task died), the bot is connected, and a normal /imagine works."""
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage()[:300] for r in errors]
    assert not scene.bot.is_closed()
    pending = await scene.emu.send_slash_command(user=scene.alice, name="imagine", options={"prompt": "a cat"})
    assert (await pending.wait_acknowledged(INTERACTION_ACK_DEADLINE_S)).type == 5
    await pending.wait_original(lambda m: "Waiting to start" in m.content)
    scene.assert_bob_untouched()
    caplog.clear()


# -- the tests -----------------------------------------------------------------------------------------------------


@FUZZ
@given(data=st.data())
async def test_commands_with_malformed_options_get_an_answer(
    scene: Scene, caplog: pytest.LogCaptureFixture, data: st.DataObject
) -> None:
    """Options missing, unknown, of other types or shapes, nested oddly: an ephemeral answer every time."""
    caplog.set_level(logging.WARNING)
    name = data.draw(st.sampled_from(sorted(MEMBER_COMMANDS)), label="command")
    names = MEMBER_COMMANDS[name]
    flat = st.lists(raw_option(names), max_size=3)
    nested = st.builds(
        lambda sub, kind, inner: [{"name": sub, "type": kind, "options": inner}],
        st.sampled_from(names or ["x"]), st.sampled_from([1, 2]), flat,
    )  # fmt: skip
    options = data.draw(flat | nested | json_values, label="options")
    pending = await scene.emu.send_raw_command(user=scene.alice, name=name, options=options)
    await answered(pending)
    await still_serves(scene, caplog)


@FUZZ
@given(data=st.data())
async def test_odd_strings_in_well_formed_options_get_an_answer(
    scene: Scene, caplog: pytest.LogCaptureFixture, data: st.DataObject
) -> None:
    """Control characters, RTL and zero-width marks, emoji, 6000 characters as a prompt or a job id: an answer that
    fits in a Discord message."""
    caplog.set_level(logging.WARNING)
    name, option = data.draw(st.sampled_from([("imagine", "prompt"), ("cancel", "job_id"), ("show", "job_id")]))
    text = data.draw(odd_text, label="text")
    pending = await scene.emu.send_slash_command(user=scene.alice, name=name, options={option: text})
    await answered(pending)
    await still_serves(scene, caplog)


forged_id_forms = st.sampled_from([
    str, str.upper, lambda j: f"  {j}\t", lambda j: f"\u200b{j}", lambda j: f"imagine:u:1:{j}", lambda j: j[:31],
])  # fmt: skip


@FUZZ
@given(data=st.data())
async def test_forged_ids_of_another_members_jobs_change_nothing_of_theirs(
    scene: Scene, caplog: pytest.LogCaptureFixture, data: st.DataObject
) -> None:
    """/cancel and /show of Bob's job ids (in any spelling), and clicks on every button of his jobs: Alice is answered,
    Bob's records, reservation and queue place stay as they were, and his image is never posted for Alice."""
    caplog.set_level(logging.WARNING)
    job = data.draw(st.sampled_from([scene.queued, scene.done]), label="job")
    how = data.draw(st.sampled_from(["cancel", "show", "click"]), label="how")
    if how == "click":
        action = data.draw(st.sampled_from(buttons.ACTIONS), label="action")
        custom_id = buttons.custom_id(action, job, data.draw(st.integers(0, 4), label="index"))
        message = await post_result(scene.emu, [{"type": 1, "components": [
            {"type": 2, "style": 2, "label": "forged", "custom_id": custom_id},
        ]}])  # fmt: skip
        await answered(await scene.emu.click_button(user=scene.alice, message=message, custom_id=custom_id))
    else:
        posted = len(scene.emu.messages())
        forged = data.draw(forged_id_forms, label="form")(job)
        pending = await scene.emu.send_slash_command(user=scene.alice, name=how, options={"job_id": forged})
        text = await answered(pending)
        assert pending.ephemeral_messages and len(scene.emu.messages()) == posted, text
        if how == "cancel" and forged.strip().lower() == job:
            assert "not yours" in text
    await still_serves(scene, caplog)


@FUZZ
@given(data=st.data())
async def test_component_payloads_get_an_answer_where_the_id_is_ours(
    scene: Scene, caplog: pytest.LogCaptureFixture, data: st.DataObject
) -> None:
    """Any custom_id, component type and select values, on Bob's result or Alice's /settings: an `imagine:` id is
    always answered (never "This interaction failed"); any other id is left to discord.py, which ignores it."""
    caplog.set_level(logging.WARNING)
    message = data.draw(st.sampled_from([scene.result, scene.settings]), label="message")
    on_message = message.custom_ids()
    payload: dict[str, Any] = {
        "custom_id": data.draw(custom_ids | st.sampled_from(on_message), label="custom_id"),
        "component_type": data.draw(st.sampled_from([2, 3]) | OPTION_TYPES, label="component_type"),
    }
    if data.draw(st.booleans(), label="with values"):
        payload["values"] = data.draw(st.lists(odd_text | json_values, max_size=3) | json_values, label="values")
    pending = await scene.emu.send_component(user=scene.alice, message=message, data=payload)
    if payload["custom_id"].startswith("imagine:"):
        await answered(pending)
    else:
        await asyncio.sleep(UNANSWERED_WAIT_S)
    await still_serves(scene, caplog)


@pytest.mark.parametrize("values", [None, 3, "mode", {"a": 1}, [None], [7, "fast"]])
async def test_a_select_with_values_of_the_wrong_kind_is_answered(
    scene: Scene, caplog: pytest.LogCaptureFixture, values: Any
) -> None:
    """A /settings select whose `values` is not a list of strings (null, a number, a string, an object, a list of
    anything): discord.py would raise reading it, in a task of its own, and leave the member unanswered; the bot
    answers it like any select, its non-string values dropped."""
    caplog.set_level(logging.WARNING)
    custom_id = next(c for c in scene.settings.custom_ids() if c.endswith(":mode"))
    pending = await scene.emu.send_component(user=scene.alice, message=scene.settings,
                                             data={"custom_id": custom_id, "component_type": 3, "values": values})
    await answered(pending)
    await still_serves(scene, caplog)
