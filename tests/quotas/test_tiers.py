"""Tiers: the default file, validation errors, per-guild overrides, tier resolution and accounting periods."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
import redis

from core.errors import AdminInputError, TierConfigError
from quotas import tierstore
from quotas.tiers import (
    Grant,
    GuildPolicy,
    PeriodPolicy,
    apply_policy,
    config_from_dict,
    load_config,
    parse_period,
    period_bounds,
    resolve,
    tier_from_dict,
)

CONFIG = load_config()
BASE = {k: v for k, v in dataclasses.asdict(CONFIG.tiers["standard"]).items() if k != "name"}


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


def test_default_file_ships_four_tiers_lowest_first():
    """The shipped tiers.toml defines free < basic < standard < pro, free by default, monthly from the 1st."""
    assert list(CONFIG.tiers) == ["free", "basic", "standard", "pro"]
    assert CONFIG.default_tier == "free"
    assert CONFIG.period == PeriodPolicy(kind="monthly", day=1)
    assert not CONFIG.tiers["basic"].relax and CONFIG.tiers["standard"].relax
    assert CONFIG.tiers["pro"].max_running_fast == 12


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"fast_gpu_s": -1}, "fast_gpu_s cannot be negative"),
        ({"max_waiting": -5}, "max_waiting cannot be negative"),
        ({"requests_per_minute": 0}, "requests_per_minute must be at least 1"),
        ({"max_steps": 0}, "max_steps must be at least 1"),
        ({"max_running_fast": 11}, "max_running_fast (11) is more than max_waiting (10)"),
        ({"max_jobs_per_command": 20}, "max_jobs_per_command (20) is more than max_waiting"),
        ({"fast_gpu_s": 0, "relax": False}, "can run nothing"),
        ({"max_running_fast": 0}, "has fast time but max_running_fast is 0"),
        ({"max_running_relax": 0}, "allows relax but max_running_relax is 0"),
        ({"fast_gpu_s": 10**9}, "more than a GPU has in a month"),
        ({"relax": "yes"}, "relax must be true or false"),
        ({"max_waiting": 2.5}, "max_waiting must be a whole number"),
        ({"models": "tiny"}, "models must be a list"),
        ({"colour": 3}, "unknown field(s) colour"),
    ],
)
def test_contradictory_or_bad_limits_are_refused(changes, message):
    """Each bad or contradictory limit raises TierConfigError naming the tier and the field."""
    with pytest.raises(TierConfigError, match="tier 'x'") as info:
        tier_from_dict("x", {**BASE, **changes})
    assert message in str(info.value)


def test_missing_field_is_named():
    """A tier table without a required field names it."""
    with pytest.raises(TierConfigError, match="missing field.*fast_gpu_s"):
        tier_from_dict("x", {k: v for k, v in BASE.items() if k != "fast_gpu_s"})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "defines no"),
        ({"tiers": {"a": BASE}, "default_tier": "gold"}, "unknown tier 'gold'"),
        ({"tiers": {"a": BASE}, "period": {"kind": "weekly"}}, "period kind"),
        ({"tiers": {"a": BASE}, "period": {"day": 31}}, "period day must be 1..28"),
        ({"tiers": {"a": BASE}, "period": {"kind": "days", "days": 0}}, "period days"),
    ],
)
def test_config_errors(data, message):
    """A whole config with no tiers, an unknown default or a bad period is refused with a clear message."""
    with pytest.raises(TierConfigError, match=message):
        config_from_dict(data)


def test_guild_override_is_validated_and_applied():
    """A guild may change a tier's limits; an override that contradicts the tier's other limits is refused."""
    effective = apply_policy(CONFIG, GuildPolicy(limits={"standard": {"fast_gpu_s": 100}}, default_tier="basic"))
    assert effective.tiers["standard"].fast_gpu_s == 100
    assert effective.default_tier == "basic"
    with pytest.raises(TierConfigError, match="max_running_fast"):
        apply_policy(CONFIG, GuildPolicy(limits={"standard": {"max_running_fast": 50}}))
    with pytest.raises(TierConfigError, match="unknown tier 'gold'"):
        apply_policy(CONFIG, GuildPolicy(roles={"123": "gold"}))
    with pytest.raises(TierConfigError, match="unknown tier 'mega'"):
        apply_policy(CONFIG, GuildPolicy(limits={"mega": {"fast_gpu_s": 1}}))


POLICY = GuildPolicy(roles={"10": "basic", "20": "pro", "30": "standard"}, default_tier="free")
NOW = ts(2026, 3, 15)


@pytest.mark.parametrize(
    ("roles", "grant", "tier", "source"),
    [
        ([], None, "free", "default"),
        (["99"], None, "free", "default"),
        ([10], None, "basic", "role"),
        ([10, 30], None, "standard", "role"),
        (["30", "20", "10"], None, "pro", "role"),
        ([20], Grant("basic"), "basic", "grant"),
        ([], Grant("standard", expires_at=NOW + 60), "standard", "grant"),
        ([10], Grant("pro", expires_at=NOW - 1), "basic", "role"),
        ([], Grant("retired-tier"), "free", "default"),
    ],
)
def test_resolution_order(roles, grant, tier, source):
    """An unexpired grant beats the best role tier, which beats the guild default."""
    got = resolve(CONFIG, POLICY, role_ids=roles, grant=grant, now=NOW)
    assert (got.tier.name, got.source) == (tier, source)


@pytest.mark.parametrize(
    ("now", "policy", "start", "end"),
    [
        (ts(2026, 3, 15, 12), PeriodPolicy(day=1), ts(2026, 3, 1), ts(2026, 4, 1)),
        (ts(2026, 3, 1), PeriodPolicy(day=1), ts(2026, 3, 1), ts(2026, 4, 1)),
        (ts(2026, 3, 10), PeriodPolicy(day=15), ts(2026, 2, 15), ts(2026, 3, 15)),
        (ts(2026, 1, 5), PeriodPolicy(day=28), ts(2025, 12, 28), ts(2026, 1, 28)),
        (ts(2024, 1, 31), PeriodPolicy(kind="days", days=30), ts(2024, 1, 31), ts(2024, 3, 1)),
        (ts(2024, 1, 30, 23), PeriodPolicy(kind="days", days=30), ts(2024, 1, 1), ts(2024, 1, 31)),
    ],
)
def test_period_bounds(now, policy, start, end):
    """Monthly periods start on the configured day; day periods count from the anchor."""
    assert period_bounds(now, policy) == (start, end)


def test_period_from_toml_dates():
    """A `days` period takes its anchor from a TOML date."""
    policy = parse_period({"kind": "days", "days": 7, "anchor": datetime(2025, 6, 2).date()})
    assert period_bounds(ts(2025, 6, 10), policy) == (ts(2025, 6, 9), ts(2025, 6, 16))


def test_grants_and_policy_in_redis(redis_conn):
    """An admin's grant and a guild's role map are stored and used by `assignment`; bad ones change nothing."""
    tierstore.save_policy(redis_conn, "g", CONFIG, POLICY)
    assert tierstore.assignment(redis_conn, CONFIG, "g", "u", [10], now=NOW).tier.name == "basic"
    tierstore.set_grant(redis_conn, "g:u", CONFIG, "PRO", days=2, now=NOW)
    got = tierstore.assignment(redis_conn, CONFIG, "g", "u", [10], now=NOW)
    assert (got.tier.name, got.source, got.expires_at) == ("pro", "grant", NOW + 2 * 86400)
    assert tierstore.assignment(redis_conn, CONFIG, "g", "u", [10], now=NOW + 3 * 86400).tier.name == "basic"
    with pytest.raises(TierConfigError):
        tierstore.set_grant(redis_conn, "g:u", CONFIG, "gold", days=None, now=NOW)
    with pytest.raises(AdminInputError):
        tierstore.set_grant(redis_conn, "g:u", CONFIG, "pro", days=-1, now=NOW)
    with pytest.raises(TierConfigError):
        tierstore.save_policy(redis_conn, "g", CONFIG, GuildPolicy(default_tier="gold"))
    assert tierstore.load_policy(redis_conn, "g") == POLICY
    assert tierstore.clear_grant(redis_conn, "g:u")
    assert tierstore.assignment(redis_conn, CONFIG, "g", "u", [], now=NOW).source == "default"


def test_policy_edit_retried_when_another_edit_lands_in_between(redis_conn, redis_url):
    """update_policy: when another admin's edit is stored between the read and the write, the write is dropped and
    the change re-runs on the newer policy, so both edits are kept (a plain read-then-save would lose the first)."""
    other = redis.Redis.from_url(redis_url)
    seen: list[GuildPolicy] = []

    def map_role(current: GuildPolicy) -> GuildPolicy:
        seen.append(current)
        if len(seen) == 1:  # the other admin's whole edit happens while this one is between read and write
            tierstore.update_policy(other, "g", CONFIG, lambda p: dataclasses.replace(p, subscribe_text="Boost!"))
        return dataclasses.replace(current, roles={**current.roles, "10": "basic"})

    stored = tierstore.update_policy(redis_conn, "g", CONFIG, map_role)
    assert len(seen) == 2 and seen[1].subscribe_text == "Boost!"
    assert stored == tierstore.load_policy(redis_conn, "g") == GuildPolicy(roles={"10": "basic"},
                                                                            subscribe_text="Boost!")
    other.close()


def test_concurrent_policy_edits_from_many_threads_all_survive(redis_conn, redis_url):
    """Eight admins (threads, each on its own connection) each map five roles at once: all forty mappings are kept."""

    def admin(n: int) -> None:
        conn = redis.Redis.from_url(redis_url)
        for k in range(5):
            role = str(100 + 10 * n + k)
            tierstore.update_policy(conn, "g", CONFIG, lambda p, r=role: dataclasses.replace(
                p, roles={**p.roles, r: "pro"}))
        conn.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(admin, range(8)))
    assert len(tierstore.load_policy(redis_conn, "g").roles) == 40


def test_policy_edit_that_is_refused_stores_nothing(redis_conn):
    """A change naming an unknown tier, or one that raises, stores nothing; None leaves the policy as it was; the
    next edit works (no WATCH is left behind)."""
    tierstore.save_policy(redis_conn, "g", CONFIG, POLICY)
    with pytest.raises(TierConfigError):
        tierstore.update_policy(redis_conn, "g", CONFIG, lambda p: dataclasses.replace(p, default_tier="gold"))

    def refuse(current: GuildPolicy) -> GuildPolicy:
        raise AdminInputError("no")

    with pytest.raises(AdminInputError):
        tierstore.update_policy(redis_conn, "g", CONFIG, refuse)
    assert tierstore.update_policy(redis_conn, "g", CONFIG, lambda p: None) is None
    assert tierstore.load_policy(redis_conn, "g") == POLICY
    tierstore.update_policy(redis_conn, "g", CONFIG, lambda p: dataclasses.replace(p, default_tier="pro"))
    assert tierstore.load_policy(redis_conn, "g").default_tier == "pro"
