"""Fair relax order on the real RQ queues: a burst cannot starve others, usage and waiting time decide, fast first."""

from __future__ import annotations

import time

import redis
from rq import Queue

import quotas
from core import jobs, keys, queue
from quotas import admission, fairness, ledger
from quotas.tiers import period_bounds
from tests.core.test_jobs import make_spec
from tests.quotas.quota_helpers import request, tier

RELAX = keys.queue_name("tiny", "relax")
FAST = keys.queue_name("tiny", "fast")


def submit(conn: redis.Redis, member: str, n: int = 1, *, mode: str = "relax", now: float) -> list[str]:
    """Admit `n` jobs for `member` and enqueue them on the real RQ lane admission chose."""
    got = admission.admit(conn, member, tier(max_waiting=40, max_jobs_per_command=40), request(n, mode=mode, now=now))
    for job_id in got.job_ids:
        queue.enqueue(conn, make_spec(mode=got.mode), f"discord:{member}", job_id=job_id)
    return list(got.job_ids)


def take(conn: redis.Redis, *, now: float, gpu_s: float = 10.0, fair: bool = True) -> str:
    """What a worker does: order the relax lane, dequeue (fast first), run the job to done."""
    if fair:
        fairness.order(conn, RELAX, now=now)
    result = Queue.dequeue_any([queue.rq_queue(conn, FAST), queue.rq_queue(conn, RELAX)], None, connection=conn)
    assert result is not None
    job_id = result[0].id
    assert jobs.mark_running(conn, job_id, "w1")
    jobs.add_gpu_seconds(conn, job_id, gpu_s)
    assert jobs.finish(conn, job_id, jobs.DONE)
    ledger.apply_outcome(conn, job_id)  # settled, as the worker's `conclude` does
    return job_id


def test_a_burst_of_twenty_delays_another_members_job_by_at_most_one(redis_conn):
    """Member A queues 20 relax jobs, then B queues one: B's job runs first or second, not 21st."""
    now = time.time()
    burst = submit(redis_conn, "g:a", 20, now=now)
    (single,) = submit(redis_conn, "g:b", now=now + 1)
    taken = [take(redis_conn, now=now + 2 + i * 10) for i in range(21)]
    assert taken.index(single) <= 1
    assert [j for j in taken if j != single] == burst  # A's own jobs keep their order


def test_fifo_would_have_made_it_wait_for_the_whole_burst(redis_conn):
    """Without the fair order the same load makes B's job wait for all 20 (what the fair order fixes)."""
    now = time.time()
    submit(redis_conn, "g:a", 20, now=now)
    (single,) = submit(redis_conn, "g:b", now=now + 1)
    taken = [take(redis_conn, now=now + 2 + i * 10, fair=False) for i in range(21)]
    assert taken.index(single) == 20


def test_bursts_interleave_by_usage(redis_conn):
    """Two members' bursts alternate once both are waiting; a third with one job goes early too."""
    now = time.time()
    a = submit(redis_conn, "g:a", 4, now=now)
    b = submit(redis_conn, "g:b", 4, now=now + 0.5)
    (c,) = submit(redis_conn, "g:c", now=now + 0.7)
    taken = [take(redis_conn, now=now + 1) for _ in range(9)]
    assert taken[:3] == [a[0], b[0], c]
    assert taken[3:] == [a[1], b[1], a[2], b[2], a[3], b[3]]


def test_heavy_past_usage_goes_later_but_waiting_wins_in_the_end(redis_conn):
    """A member who used 100 s more waits behind lighter members, except those who came 1000 s later."""
    now = time.time()
    used = admission.admit(redis_conn, "g:heavy", tier(), request(mode="relax", now=now))
    ledger.settle(redis_conn, used.job_ids[0], 100.0)
    (heavy,) = submit(redis_conn, "g:heavy", now=now)
    (light,) = submit(redis_conn, "g:light", now=now + 5)
    (late,) = submit(redis_conn, "g:late", now=now + 100 / fairness.WAIT_CREDIT + 100)
    fairness.order(redis_conn, RELAX, now=now + 100 / fairness.WAIT_CREDIT + 110)
    assert fairness.waiting(redis_conn, RELAX) == [light, heavy, late]


def test_member_at_running_relax_cap_goes_after_others(redis_conn):
    """A member with max_running_relax jobs running goes after everybody else, yet the GPU is never left idle."""
    now = time.time()
    got = admission.admit(redis_conn, "g:a", tier(max_running_relax=1), request(3, mode="relax", now=now))
    for job_id in got.job_ids:
        queue.enqueue(redis_conn, make_spec(mode="relax"), "discord:a", job_id=job_id)
    first = Queue.dequeue_any([queue.rq_queue(redis_conn, RELAX)], None, connection=redis_conn)[0].id  # type: ignore[index]
    assert jobs.mark_running(redis_conn, first, "w1")
    (b,) = submit(redis_conn, "g:b", now=now + 1000)  # much younger, but A is at its cap
    fairness.order(redis_conn, RELAX, now=now + 1001)
    assert fairness.waiting(redis_conn, RELAX) == [b, *got.job_ids[1:]]


def test_fast_jobs_still_go_before_relax(redis_conn):
    """The fair order only touches the relax lane: a fast job queued later is taken first."""
    now = time.time()
    relax_jobs = submit(redis_conn, "g:a", 2, now=now)
    (fast,) = submit(redis_conn, "g:b", mode="fast", now=now + 1)
    assert take(redis_conn, now=now + 2) == fast
    assert take(redis_conn, now=now + 3) == relax_jobs[0]


def test_jobs_without_a_reservation_are_ordered_too(redis_conn):
    """CLI jobs (no admission) count as their own member each and keep RQ working."""
    now = time.time()
    cli = queue.enqueue(redis_conn, make_spec(mode="relax"), "cli:me")
    burst = submit(redis_conn, "g:a", 3, now=now)
    fairness.order(redis_conn, RELAX, now=now + 1)
    assert set(fairness.waiting(redis_conn, RELAX)) == {cli, *burst}
    assert queue.position(redis_conn, burst[0]) is not None


def test_use_in_another_server_counts_in_the_relax_order(redis_conn):
    """The relax lane is shared by every server: a user who used 100 s in server one waits behind a light user in
    server two, though their job there came first (with per-server usage it would have gone first)."""
    now = time.time()
    used = admission.admit(redis_conn, "one:heavy", tier(), request(mode="relax", now=now))
    ledger.settle(redis_conn, used.job_ids[0], 100.0)
    (heavy,) = submit(redis_conn, "two:heavy", now=now)
    (light,) = submit(redis_conn, "two:light", now=now + 5)
    fairness.order(redis_conn, RELAX, now=now + 10)
    assert fairness.waiting(redis_conn, RELAX) == [light, heavy]


def test_one_users_jobs_from_two_servers_share_one_fair_turn(redis_conn):
    """A user's burst split over two servers is one member's burst: another user's single job still goes within the
    first two, not behind half of it."""
    now = time.time()
    burst = submit(redis_conn, "one:a", 5, now=now) + submit(redis_conn, "two:a", 5, now=now + 0.1)
    (single,) = submit(redis_conn, "one:b", now=now + 1)
    taken = [take(redis_conn, now=now + 2 + i * 10) for i in range(11)]
    assert taken.index(single) <= 1 and [j for j in taken if j != single] == burst


def test_a_reset_in_one_server_forgets_only_that_servers_use(redis_conn):
    """/admin quota reset in server one takes that server's use out of the cross-server usage; use elsewhere stays."""
    now = time.time()
    policy = quotas.PeriodPolicy()
    for member, seconds in (("one:a", 100.0), ("two:a", 30.0)):
        got = admission.admit(redis_conn, member, tier(), request(mode="relax", now=now))
        ledger.settle(redis_conn, got.job_ids[0], seconds)
    start, _ = period_bounds(now, policy)
    assert redis_conn.zscore(keys.user_usage(int(start)), "a") == 130.0
    ledger.reset(redis_conn, "one:a", now=now, policy=policy)
    assert redis_conn.zscore(keys.user_usage(int(start)), "a") == 30.0
