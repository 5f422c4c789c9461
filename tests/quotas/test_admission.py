"""Admission: one atomic step per command (caps, rate limit, ban, balance), moving to relax or refusing with a reset."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from core import jobs
from core.errors import Banned, QuotaExceeded, RateLimited, TierLimit, TooManyJobs
from quotas import admission, ledger
from quotas.tiers import PeriodPolicy, load_config, period_bounds
from tests.quotas.quota_helpers import create_jobs, request, run, tier

MEMBER = "g:1"


def test_hundred_simultaneous_admissions_against_a_cap_of_three_admit_three(redis_url, redis_conn):
    """100 threads admitting one job each for one member with max 3 running fast jobs: exactly 3 get in."""
    import redis

    capped = tier(max_running_fast=3, requests_per_minute=1000)
    barrier = threading.Barrier(100)
    results: list[str] = []

    def one() -> None:
        conn = redis.Redis.from_url(redis_url)
        barrier.wait()
        try:
            admission.admit(conn, MEMBER, capped, request())
            results.append("ok")
        except TooManyJobs:
            results.append("refused")
        finally:
            conn.close()

    threads = [threading.Thread(target=one) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 3 and results.count("refused") == 97
    assert ledger.usage(redis_conn, MEMBER, capped, now=time.time(), policy=PeriodPolicy()).active_fast == 3


def test_waiting_cap_counts_both_lanes_and_frees_on_outcome(redis_conn):
    """max_waiting counts queued and running jobs of both lanes; a finished job frees its place."""
    small = tier(max_waiting=3, max_running_fast=3)
    first = admission.admit(redis_conn, MEMBER, small, request(2))
    admission.admit(redis_conn, MEMBER, small, request(mode="relax"))
    with pytest.raises(TooManyJobs, match="3 jobs queued or running.*allows 3"):
        admission.admit(redis_conn, MEMBER, small, request(mode="relax"))
    create_jobs(redis_conn, first)
    run(redis_conn, first.job_ids[0], 1.0, apply=False)  # its outcome left unapplied: admission reconciles it
    admission.admit(redis_conn, MEMBER, small, request(mode="relax"))


def test_commands_are_all_or_nothing(redis_conn):
    """A command's jobs are admitted together or not at all."""
    small = tier(max_waiting=5, max_running_fast=5)
    admission.admit(redis_conn, MEMBER, small, request(3))
    with pytest.raises(TooManyJobs):
        admission.admit(redis_conn, MEMBER, small, request(3))
    assert ledger.usage(redis_conn, MEMBER, small, now=time.time(), policy=PeriodPolicy()).active_fast == 3


def test_exhausted_balance_moves_to_relax_and_tells_once(redis_conn):
    """Fast time used up on a tier with relax: jobs go to relax, and only the first admission says so."""
    poor = tier(fast_gpu_s=30)
    got = admission.admit(redis_conn, MEMBER, poor, request())
    assert (got.mode, got.moved_to_relax) == ("fast", False)
    ledger.settle(redis_conn, got.job_ids[0], 29.0)
    moved = admission.admit(redis_conn, MEMBER, poor, request())
    assert (moved.mode, moved.moved_to_relax, moved.tell, moved.estimate_s) == ("relax", True, True, 0.0)
    again = admission.admit(redis_conn, MEMBER, poor, request())
    assert (again.mode, again.moved_to_relax, again.tell) == ("relax", True, False)
    assert "relax mode" in admission.moved_to_relax_text(moved)


def test_exhausted_balance_without_relax_is_refused_with_the_reset_date(redis_conn):
    """Fast time used up on a tier without relax: a refusal that says when it resets and how to get more."""
    basic = tier(fast_gpu_s=30, relax=False, max_running_relax=0)
    got = admission.admit(redis_conn, MEMBER, basic, request())
    ledger.settle(redis_conn, got.job_ids[0], 29.0)
    now = time.time()
    _, end = period_bounds(now, PeriodPolicy())
    reset = time.strftime("%Y-%m-%d", time.gmtime(end))
    with pytest.raises(QuotaExceeded, match=f"resets on {reset}.*/subscribe"):
        admission.admit(redis_conn, MEMBER, basic, request(now=now))
    assert admission.admit(redis_conn, MEMBER, basic, request(now=end + 1)).mode == "fast"  # next period


def test_free_upscales_pass_with_no_balance(redis_conn):
    """An upscale-only job is admitted to fast even when the fast balance is empty."""
    basic = tier(fast_gpu_s=30, relax=False, max_running_relax=0)
    ledger.settle(redis_conn, admission.admit(redis_conn, MEMBER, basic, request()).job_ids[0], 40.0)
    got = admission.admit(redis_conn, MEMBER, basic, request(kind="upscale", mode="relax"))
    assert (got.mode, got.moved_to_relax) == ("fast", False)


def test_rate_limit_is_a_sliding_minute(redis_conn):
    """More requests than the tier's per-minute limit are refused until the oldest one is a minute old."""
    limited = tier(requests_per_minute=2, max_waiting=10)
    now = time.time()
    admission.admit(redis_conn, MEMBER, limited, request(now=now))
    admission.admit(redis_conn, MEMBER, limited, request(now=now + 10))
    with pytest.raises(RateLimited, match="2 requests a minute. Try again in 50 s"):
        admission.admit(redis_conn, MEMBER, limited, request(now=now + 10))
    admission.admit(redis_conn, MEMBER, limited, request(now=now + 61))
    admission.admit(redis_conn, "g:2", limited, request(now=now + 10))  # per member


def test_banned_member_is_refused_politely_and_nothing_is_reserved(redis_conn):
    """A banned member gets a polite refusal naming the reason; nothing is counted or reserved."""
    admission.ban(redis_conn, "g", "1", "spam")
    with pytest.raises(Banned, match=r"\(spam\).*Ask a server admin"):
        admission.admit(redis_conn, MEMBER, tier(), request())
    assert ledger.usage(redis_conn, MEMBER, tier(), now=time.time(), policy=PeriodPolicy()).active_fast == 0
    assert admission.ban_reason(redis_conn, "g", "1") == "spam"
    assert admission.unban(redis_conn, "g", "1")
    admission.admit(redis_conn, MEMBER, tier(), request())


@pytest.mark.parametrize(
    ("changes", "req", "message"),
    [
        ({}, dict(n=11), "11 jobs; the standard tier allows 10 per command"),
        ({"models": ("sd-turbo",)}, {}, "cannot use model 'tiny'"),
        ({"max_pixels": 256 * 256}, {}, "512x512 is more pixels"),
        ({"max_steps": 20}, {}, "25 steps is more than"),
        ({"relax": False, "max_running_relax": 0}, dict(mode="relax"), "has no relax mode"),
        ({}, dict(n=0), "creates no jobs"),
    ],
)
def test_tier_limits(redis_conn, changes, req, message):
    """What the tier does not allow at all is refused before anything is counted."""
    with pytest.raises(TierLimit, match=message):
        admission.admit(redis_conn, MEMBER, tier(**changes), request(**req))


def test_outcome_of_a_relax_job_counts_as_relax_usage(redis_conn):
    """A relax job costs no fast time but counts in the member's usage (the fair order's input)."""
    got = admission.admit(redis_conn, MEMBER, tier(), request(mode="relax"))
    create_jobs(redis_conn, got)
    run(redis_conn, got.job_ids[0], 8.0)
    ledger.reconcile(redis_conn, now=time.time())
    u = ledger.usage(redis_conn, MEMBER, tier(), now=time.time(), policy=PeriodPolicy())
    assert (u.used_s, u.relax_s) == (0, pytest.approx(8.0))
    assert jobs.get(redis_conn, got.job_ids[0]).state == jobs.DONE  # type: ignore[union-attr]


def test_admit_call_run_twice_counts_one_request(redis_conn):
    """The same admission call run again (the bot's retry after reconciling) is not counted twice by the rate limit."""
    limited = tier(requests_per_minute=2, max_waiting=1)
    admission.admit(redis_conn, MEMBER, limited, request())
    call = admission.admit_call(MEMBER, limited, request(), s_per_mpx_step=ledger.DEFAULT_S_PER_MPX_STEP)
    for _ in range(2):
        with pytest.raises(TooManyJobs):
            call.result(redis_conn.eval(admission.ADMIT_SCRIPT, len(call.keys), *call.keys, *call.args))
    assert redis_conn.zcard(f"imagine:member:{MEMBER}:rate") == 2


def test_plan_reserve_from_pipelined_reads_admits_like_reserve(redis_conn):
    """`reserve_reads` in one pipeline, `plan_reserve`, the script: the same lane, estimate and checks as `reserve`."""
    import quotas
    from tests.core.test_jobs import make_spec

    config = load_config()
    member = quotas.Who("g", "1")
    with redis_conn.pipeline(transaction=False) as pipe:
        for command in quotas.reserve_reads(member):
            pipe.execute_command(*command)
        replies = pipe.execute()
    call = quotas.plan_reserve(config, member, [make_spec()], replies, now=time.time())
    planned = call.result(redis_conn.eval(quotas.ADMIT_SCRIPT, len(call.keys), *call.keys, *call.args))
    synced = quotas.reserve(redis_conn, config, quotas.Who("g", "2"), [make_spec()])
    assert (planned.mode, planned.estimate_s) == (synced.mode, synced.estimate_s)
    with pytest.raises(TierLimit):
        quotas.plan_reserve(config, member, [make_spec()] * 99, replies)


@pytest.mark.parametrize(("asked", "allowed", "private"), [(True, True, True), (True, False, False),
                                                           (False, True, False), (False, False, False)])
def test_jobs_are_private_only_when_the_member_asks_and_the_tier_allows(redis_conn, asked, allowed, private):
    """Stealth (`/stealth`): an admission is private when the member's setting is on and their tier has stealth; a
    member whose tier lost stealth gets public jobs again without being refused."""
    admitted = admission.admit(redis_conn, MEMBER, tier(stealth=allowed),
                               dataclasses.replace(request(), stealth=asked))
    assert admitted.private is private


def test_only_the_pro_tier_ships_with_stealth():
    """As on Midjourney, stealth is a top-plan feature: in the shipped tiers.toml only Pro has it."""
    assert [name for name, t in load_config().tiers.items() if t.stealth] == ["pro"]
