"""The ledger: settle charges measured time once, refund releases in full, apply_outcome by a job's final state, and
its backstop `reconcile`."""

from __future__ import annotations

import time

import pytest

from core import jobs, keys
from quotas import admission, ledger
from quotas.tiers import PeriodPolicy, period_bounds
from tests.quotas.quota_helpers import create_jobs, request, run, tier

MEMBER = "g:1"
POLICY = PeriodPolicy()


def usage(conn, now=None):
    return ledger.usage(conn, MEMBER, tier(), now=now or time.time(), policy=POLICY)


def test_settle_charges_the_measured_time_and_releases_the_hold(redis_conn):
    """A done fast job is charged its measured GPU-seconds, not the estimate; the hold is released."""
    got = admission.admit(redis_conn, MEMBER, tier(), request())
    create_jobs(redis_conn, got)
    assert usage(redis_conn).reserved_s == pytest.approx(got.estimate_s)
    run(redis_conn, got.job_ids[0], 4.5)
    u = usage(redis_conn)
    assert (u.used_s, u.reserved_s, u.active_fast) == (pytest.approx(4.5), 0, 0)
    assert u.left_s == pytest.approx(tier().fast_gpu_s - 4.5)
    assert ledger.top_users(redis_conn, "g", now=time.time(), policy=POLICY) == [(MEMBER, pytest.approx(4.5))]


def test_settle_and_refund_are_idempotent(redis_conn):
    """A second settle or refund of the same job changes nothing."""
    got = admission.admit(redis_conn, MEMBER, tier(), request(2))
    a, b = got.job_ids
    assert ledger.settle(redis_conn, a, 3.0)
    assert not ledger.settle(redis_conn, a, 3.0)
    assert not ledger.refund(redis_conn, a)
    assert ledger.refund(redis_conn, b)
    assert not ledger.refund(redis_conn, b)
    u = usage(redis_conn)
    assert (u.used_s, u.reserved_s, u.active_fast) == (pytest.approx(3.0), pytest.approx(0.0), 0)


@pytest.mark.parametrize("state", [jobs.FAILED, jobs.CANCELLED])
def test_final_failure_or_cancel_refunds_in_full(redis_conn, state):
    """A job that finally fails or is cancelled while running is charged nothing, even for time it used."""
    got = admission.admit(redis_conn, MEMBER, tier(), request())
    create_jobs(redis_conn, got)
    run(redis_conn, got.job_ids[0], 7.0, state)
    u = usage(redis_conn)
    assert (u.used_s, u.reserved_s, u.active_fast) == (0, pytest.approx(0.0), 0)


def test_cancel_while_queued_refunds(redis_conn):
    """Cancelling a queued job (the owner's or an admin's cancel) and applying its outcome, as the canceller does,
    refunds its hold."""
    got = admission.admit(redis_conn, MEMBER, tier(), request())
    create_jobs(redis_conn, got)
    assert jobs.finish(redis_conn, got.job_ids[0], jobs.CANCELLED)
    assert usage(redis_conn).reserved_s > 0  # nothing reacts to the transition by itself
    assert ledger.apply_outcome(redis_conn, got.job_ids[0])
    assert usage(redis_conn).reserved_s == pytest.approx(0.0)


def test_retried_attempt_then_success_is_charged_once(redis_conn):
    """An abandoned attempt that RQ retries, then a successful one: one charge, the time the worker measured."""
    got = admission.admit(redis_conn, MEMBER, tier(), request())
    create_jobs(redis_conn, got)
    job_id = got.job_ids[0]
    assert jobs.mark_running(redis_conn, job_id, "w1")
    jobs.add_gpu_seconds(redis_conn, job_id, 2.0)
    assert jobs.mark_retrying(redis_conn, job_id, "the worker running it stopped responding")
    assert ledger.apply_outcome(redis_conn, job_id) is False  # not final: nothing happens
    assert usage(redis_conn).used_s == 0
    run(redis_conn, job_id, 3.0)
    assert not jobs.finish(redis_conn, job_id, jobs.FAILED)  # a late cleanup of the first attempt loses
    ledger.reconcile(redis_conn, now=time.time())
    u = usage(redis_conn)
    assert (u.used_s, u.reserved_s) == (pytest.approx(5.0), pytest.approx(0.0))


def test_backstop_applies_outcomes_left_unapplied(redis_conn):
    """Jobs made final by a process that died before applying their outcome are settled or refunded by `reconcile`,
    which names them (so the worker can deliver them too); a second sweep finds nothing."""
    got = admission.admit(redis_conn, MEMBER, tier(), request(2))
    create_jobs(redis_conn, got)
    run(redis_conn, got.job_ids[0], 6.0, apply=False)
    run(redis_conn, got.job_ids[1], 6.0, jobs.FAILED, apply=False)
    assert usage(redis_conn).used_s == 0
    assert sorted(ledger.reconcile(redis_conn, now=time.time())) == sorted(got.job_ids)
    assert ledger.reconcile(redis_conn, now=time.time()) == []
    u = usage(redis_conn)
    assert (u.used_s, u.reserved_s, u.active_fast) == (pytest.approx(6.0), pytest.approx(0.0), 0)
    assert redis_conn.zcard(keys.quota_reservations()) == 0


def test_reservation_without_a_job_record_is_refunded_after_grace(redis_conn):
    """Admitted but never enqueued (the bot died in between): refunded once the grace period has passed."""
    got = admission.admit(redis_conn, MEMBER, tier(), request())
    assert ledger.reconcile(redis_conn, now=time.time()) == []
    assert ledger.reconcile(redis_conn, now=time.time() + ledger.RESERVATION_GRACE_S + 1) == [got.job_ids[0]]
    assert usage(redis_conn).reserved_s == pytest.approx(0.0)
    assert not redis_conn.exists(keys.quota_reservation(got.job_ids[0]))


def test_settled_jobs_update_the_model_speed(redis_conn):
    """The per-model speed moves towards what settled jobs measured (moving average)."""
    assert ledger.speed(redis_conn, "tiny") == ledger.DEFAULT_S_PER_MPX_STEP
    got = admission.admit(redis_conn, MEMBER, tier(), request())
    work = ledger.mpx_steps(512, 512, 25)
    ledger.settle(redis_conn, got.job_ids[0], ledger.JOB_OVERHEAD_S + 1.0 * work)
    expected = ledger.DEFAULT_S_PER_MPX_STEP + ledger.SPEED_EMA_ALPHA * (1.0 - ledger.DEFAULT_S_PER_MPX_STEP)
    assert ledger.speed(redis_conn, "tiny") == pytest.approx(expected)
    assert ledger.estimate_s(redis_conn, "tiny", 512, 512, 25) == pytest.approx(ledger.JOB_OVERHEAD_S + expected * work)


def test_grant_reset_and_rollover(redis_conn):
    """Grants add fast time for this period only; reset forgets usage; the next period starts fresh by itself."""
    now = time.time()
    got = admission.admit(redis_conn, MEMBER, tier(), request(now=now))
    ledger.settle(redis_conn, got.job_ids[0], 100.0)
    assert ledger.grant(redis_conn, MEMBER, 600, now=now, policy=POLICY) == 600
    u = usage(redis_conn, now)
    assert (u.used_s, u.granted_s, u.allowance_s) == (100, 600, tier().fast_gpu_s + 600)
    _, end = period_bounds(now, POLICY)
    later = usage(redis_conn, end + 1)
    assert (later.used_s, later.granted_s, later.period_start) == (0, 0, end)
    ledger.reset(redis_conn, MEMBER, now=now, policy=POLICY)
    assert (usage(redis_conn, now).used_s, usage(redis_conn, now).granted_s) == (0, 0)
    for bad in (0, -5, 10**9):
        with pytest.raises(ledger.AdminInputError):
            ledger.grant(redis_conn, MEMBER, bad, now=now, policy=POLICY)


def test_upscale_jobs_are_free(redis_conn):
    """An upscale-only job holds and costs no fast time."""
    got = admission.admit(redis_conn, MEMBER, tier(), request(kind="upscale"))
    assert got.estimate_s == 0
    create_jobs(redis_conn, got)
    run(redis_conn, got.job_ids[0], 3.0)
    u = usage(redis_conn)
    assert (u.used_s, u.relax_s, u.reserved_s) == (0, 0, 0)
