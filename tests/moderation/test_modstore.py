"""A guild's moderation state in Redis: lists, policy, screening /imagine, strikes and suspensions, the log."""

from __future__ import annotations

import pytest
import redis

import moderation as modstore
from core import audit, keys
from core.errors import AdminInputError, PromptBlocked, Suspended
from core.models import ModelRegistry, tiny_model
from core.prompt import parse
from core.safety import Safety
from moderation.listfile import MAX_ENTRIES

REGISTRY = ModelRegistry((tiny_model(),))
GUILD, USER = "100", "7"
NOW = 1_800_000_000.0


def _screen(conn: redis.Redis, text: str, *, nsfw: bool = False, now: float = NOW, defaults=None) -> Safety:
    specs = parse(text, REGISTRY)
    return modstore.screen(conn, GUILD, USER, specs, defaults or {}, prompt=text, channel_nsfw=nsfw, now=now)


def test_clean_prompt_outside_age_restricted_channel_gets_safety(redis_conn: redis.Redis) -> None:
    """A clean prompt passes; outside an age-restricted channel the worker adds the safety prompt and checks outputs."""
    safety = _screen(redis_conn, "a lighthouse at dusk")
    assert safety == Safety(modstore.DEFAULT_SAFETY_NEGATIVE, check_outputs=True, action="blur")


def test_mature_entries_allowed_only_in_age_restricted_channels(redis_conn: redis.Redis) -> None:
    """Mature entries pass in an age-restricted channel (no safety prompt, no check) and are blocked elsewhere."""
    assert _screen(redis_conn, "a nude statue", nsfw=True) == Safety()
    with pytest.raises(PromptBlocked):
        _screen(redis_conn, "a nude statue", nsfw=False)
    with pytest.raises(PromptBlocked):
        _screen(redis_conn, "gore", nsfw=True)  # [block] entries apply in every channel


def test_strict_policy_treats_every_channel_as_safe(redis_conn: redis.Redis) -> None:
    """Under the strict policy mature entries are blocked and outputs checked in age-restricted channels too."""
    modstore.set_policy(redis_conn, GUILD, nsfw="strict", flagged_action="withhold")
    with pytest.raises(PromptBlocked):
        _screen(redis_conn, "a nude statue", nsfw=True)
    assert _screen(redis_conn, "a statue", nsfw=True).check_outputs
    assert _screen(redis_conn, "a statue", nsfw=True).action == "withhold"


def test_blocked_prompt_is_refused_neutrally_and_logged(redis_conn: redis.Redis) -> None:
    """The refusal repeats nothing; the audit log and the log notice hold member, time, prompt and the entry."""
    with pytest.raises(PromptBlocked) as caught:
        _screen(redis_conn, "a n.u.d.e statue")
    assert "n.u.d.e" not in str(caught.value) and "nude" not in str(caught.value)
    assert "nothing was queued or charged" in str(caught.value)
    notice = caught.value.notice
    assert f"<@{USER}>" in notice and f"<t:{int(NOW)}:f>" in notice and "a n.u.d.e statue" in notice
    assert "'nude'" in notice and "none (nothing was queued)" in notice
    [entry] = audit.latest(redis_conn, GUILD)
    assert (entry.actor, entry.action, entry.at) == (USER, "prompt blocked", NOW)
    assert "a n.u.d.e statue" in entry.detail


def test_saved_defaults_are_screened(redis_conn: redis.Redis) -> None:
    """A blocked word in the member's saved defaults blocks the prompt."""
    with pytest.raises(PromptBlocked):
        _screen(redis_conn, "a statue", defaults={"model": "p0rn"})


def test_repeated_blocks_suspend_and_admin_lifts(redis_conn: redis.Redis) -> None:
    """Three blocked prompts in ten minutes suspend the member for an hour; an admin can lift it."""
    for i in range(2):
        with pytest.raises(PromptBlocked) as caught:
            _screen(redis_conn, "gore", now=NOW + i)
    assert "One more" in str(caught.value)
    with pytest.raises(PromptBlocked) as caught:
        _screen(redis_conn, "gore", now=NOW + 2)
    assert "suspended until" in str(caught.value) and "suspended until" in caught.value.notice
    assert modstore.suspension(redis_conn, GUILD, USER, NOW + 3) == NOW + 2 + 3600
    with pytest.raises(Suspended):
        _screen(redis_conn, "a clean lighthouse", now=NOW + 3)
    assert not modstore.is_suspended(redis_conn, GUILD, USER, NOW + 2 + 3600)
    assert modstore.lift(redis_conn, GUILD, USER)
    assert not modstore.is_suspended(redis_conn, GUILD, USER, NOW + 3)
    assert not modstore.lift(redis_conn, GUILD, USER)


def test_strikes_outside_the_window_do_not_count(redis_conn: redis.Redis) -> None:
    """Blocked prompts further apart than the window never suspend; the limits are configurable."""
    modstore.set_policy(redis_conn, GUILD, strike_limit=2, strike_window_s=60, suspension_s=120)
    for i in range(4):
        with pytest.raises(PromptBlocked):
            _screen(redis_conn, "gore", now=NOW + 61 * i)
    assert not modstore.is_suspended(redis_conn, GUILD, USER, NOW + 213)
    with pytest.raises(PromptBlocked):
        _screen(redis_conn, "gore", now=NOW + 213)
    assert modstore.suspension(redis_conn, GUILD, USER, NOW + 214) == NOW + 213 + 120


def test_admin_suspension(redis_conn: redis.Redis) -> None:
    """An admin suspends for a bounded time."""
    assert modstore.suspend(redis_conn, GUILD, USER, seconds=60, now=NOW) == NOW + 60
    assert modstore.is_suspended(redis_conn, GUILD, USER, NOW + 59)
    with pytest.raises(AdminInputError):
        modstore.suspend(redis_conn, GUILD, USER, seconds=0, now=NOW)


def test_block_and_allow_lists_change_the_filter(redis_conn: redis.Redis) -> None:
    """Added entries block at once, removed default entries stop blocking, allow entries unblock."""
    assert "gore" in modstore.block_list(redis_conn, GUILD)
    assert modstore.block_add(redis_conn, GUILD, "  Crème   Brûlée ") == "Crème Brûlée"
    with pytest.raises(PromptBlocked):
        _screen(redis_conn, "a creme brulee")
    assert modstore.block_remove(redis_conn, GUILD, "gore")
    assert "gore" not in modstore.block_list(redis_conn, GUILD)
    _screen(redis_conn, "gore")
    assert not modstore.block_remove(redis_conn, GUILD, "gore")
    modstore.allow_add(redis_conn, GUILD, "creme brulee tart")
    _screen(redis_conn, "a creme brulee tart")
    assert modstore.allow_remove(redis_conn, GUILD, "creme brulee tart")
    assert not modstore.allow_remove(redis_conn, GUILD, "creme brulee tart")
    modstore.block_add(redis_conn, GUILD, "gore")
    with pytest.raises(PromptBlocked):
        _screen(redis_conn, "gore")
    assert modstore.block_list(redis_conn, "other guild").count("gore") == 1  # other guilds are untouched


def test_bad_list_entries_are_refused(redis_conn: redis.Redis) -> None:
    """Entries too long or empty after normalisation, and a full list, are refused with nothing changed."""
    for bad in ("x" * 101, "...", "\u200b"):
        with pytest.raises(AdminInputError):
            modstore.block_add(redis_conn, GUILD, bad)
    redis_conn.sadd(keys.moderation_block(GUILD), *[f"word{i}" for i in range(MAX_ENTRIES)])
    with pytest.raises(AdminInputError, match="remove some first"):
        modstore.block_add(redis_conn, GUILD, "another")


def test_policy_is_validated(redis_conn: redis.Redis) -> None:
    """Unknown settings and out-of-range values are refused; good ones are stored."""
    for changes in ({"nsfw": "anything"}, {"flagged_action": "delete"}, {"strike_limit": 0},
                    {"suspension_s": 10**9}, {"colour": "red"}, {"safety_negative": "x" * 301}):
        with pytest.raises(AdminInputError):
            modstore.set_policy(redis_conn, GUILD, **changes)
    assert modstore.load_policy(redis_conn, GUILD) == modstore.Policy()
    modstore.set_policy(redis_conn, GUILD, strike_limit=5, safety_negative="blood")
    policy = modstore.load_policy(redis_conn, GUILD)
    assert (policy.strike_limit, policy.safety_negative) == (5, "blood")


def test_log_channel_the_bot_cannot_write_to(redis_conn: redis.Redis) -> None:
    """Missing permissions are named to the admin; a failed post is recorded for status and never raises."""
    with pytest.raises(AdminInputError, match="Send Messages"):
        modstore.set_log_channel(redis_conn, GUILD, "555", missing=["Send Messages"])
    modstore.set_log_channel(redis_conn, GUILD, "555")
    answer = modstore.log_channel_failed(redis_conn, GUILD, "403 Missing Access", now=NOW)
    assert "403 Missing Access" in answer and "/imagine is not affected" in answer
    status = modstore.status_lines(redis_conn, GUILD)
    assert "Moderation log: <#555>" in status and any("403 Missing Access" in line for line in status)
    modstore.log_channel_worked(redis_conn, GUILD)
    assert not any("Problem" in line for line in modstore.status_lines(redis_conn, GUILD))
    _screen(redis_conn, "a lighthouse")  # /imagine goes on


def test_status_counts_only_suspensions_still_running(redis_conn: redis.Redis) -> None:
    """"Suspended now" counts members whose suspension has not ended (not those that expired, which are dropped
    from Redis), and a lifted one no longer counts."""
    modstore.suspend(redis_conn, GUILD, "1", seconds=60, now=NOW)
    modstore.suspend(redis_conn, GUILD, "2", seconds=3600, now=NOW)
    modstore.suspend(redis_conn, GUILD, "3", seconds=7200, now=NOW)

    def line(now: float) -> str:
        return next(x for x in modstore.status_lines(redis_conn, GUILD, now=now) if "suspended now" in x)

    assert line(NOW).endswith("suspended now: 3")
    assert line(NOW + 600).endswith("suspended now: 2")
    assert redis_conn.hlen(keys.moderation_suspended(GUILD)) == 2  # the expired one is gone
    modstore.lift(redis_conn, GUILD, "2")
    assert line(NOW + 600).endswith("suspended now: 1")
    assert line(NOW + 7200).endswith("suspended now: 0")
    assert modstore.suspension(redis_conn, GUILD, "3", NOW + 10) is None  # gone, not just expired


def test_status_says_when_no_classifier_runs(redis_conn: redis.Redis) -> None:
    """Status says outputs are not checked until a worker reports a classifier."""
    assert any("none configured" in line for line in modstore.status_lines(redis_conn, GUILD))
    redis_conn.hset(keys.safety_classifiers(), "w1", '{"classifier": "builtin:skin"}')
    assert "Image safety classifier: builtin:skin" in modstore.status_lines(redis_conn, GUILD)


def test_notice_is_capped_and_cannot_close_its_code_block() -> None:
    """A long prompt is cut under Discord's 2000 characters; backticks cannot break out of the quote."""
    event = modstore.Event("image flagged", GUILD, USER, NOW, "```@everyone" + "x" * 3000, job_id="ab" * 16)
    notice = modstore.format_notice(event)
    assert len(notice) < 2000 and notice.count("```") == 2 and "ab" * 16 in notice


def test_decide_from_pipelined_reads_matches_screen(redis_conn: redis.Redis) -> None:
    """`screen_reads` + `decide` (the bot's asyncio path) answer as `screen`; a block is recorded by
    `block_commands` and refused by `blocked_error` with a strike counted."""
    replies = [redis_conn.execute_command(*command) for command in modstore.screen_reads(GUILD, USER)]
    policy = modstore.policy_from(replies[1] or {})
    assert modstore.suspension_from(replies[0], NOW) is None
    lists = [redis_conn.execute_command(*command) for command in modstore.filter_reads(GUILD)]
    filter_ = modstore.compile_filter(GUILD, "", lists, mature_allowed=False)
    specs = parse("a lighthouse at dusk", REGISTRY)
    decided = modstore.decide(GUILD, USER, specs, {}, prompt="x", channel_nsfw=False, now=NOW,
                              suspended_until=None, policy=policy, filter_=filter_)
    assert decided == _screen(redis_conn, "a lighthouse at dusk")
    blocked = modstore.decide(GUILD, USER, parse("gore", REGISTRY), {}, prompt="gore", channel_nsfw=False, now=NOW,
                              suspended_until=None, policy=policy, filter_=filter_)
    assert isinstance(blocked, modstore.Blocked)
    written = [redis_conn.execute_command(*command) for command in modstore.block_commands(blocked)]
    error = modstore.blocked_error(blocked, written[-1])
    assert str(error).startswith(modstore.BLOCKED_MESSAGE) and "gore" in error.notice
    assert audit.latest(redis_conn, GUILD, 1)[0].action == "prompt blocked"
    assert redis_conn.zcard(keys.moderation_strikes(f"{GUILD}:{USER}")) == 1
    with pytest.raises(Suspended):
        modstore.decide(GUILD, USER, specs, {}, prompt="x", channel_nsfw=False, now=NOW, suspended_until=NOW + 60,
                        policy=policy, filter_=filter_)


def test_policy_languages_are_checked_and_change_the_guilds_filter(redis_conn: redis.Redis) -> None:
    """Languages must be ones the default list names; setting them gives the lists a new rev (cached filters of
    the guild are not reused) and the filter reads their ordinary words as such."""
    with pytest.raises(AdminInputError, match="no listed word is an ordinary word in xx"):
        modstore.set_policy(redis_conn, GUILD, languages="sv,xx")
    with pytest.raises(PromptBlocked):
        _screen(redis_conn, "visoke gore v megli")
    rev = redis_conn.hget(keys.moderation_policy(GUILD), "rev")
    assert modstore.set_policy(redis_conn, GUILD, languages=" SV, sl ,").languages == "sl,sv"
    assert redis_conn.hget(keys.moderation_policy(GUILD), "rev") != rev
    assert _screen(redis_conn, "visoke gore v megli").check_outputs
