"""The undelivered-outcome set: due jobs are claimed once, each with a doubling backoff; forgetting clears them."""

from __future__ import annotations

import redis

from core import keys
from worker import redelivery


def test_a_due_outcome_is_claimed_once_and_pushed_back_by_a_doubling_backoff(redis_conn: redis.Redis) -> None:
    """Remembered at t=0: not due before FIRST_RETRY_S; then one claim gets it (a second at the same moment, as
    another worker's, gets nothing), and each later claim waits twice as long, up to MAX_BACKOFF_S."""
    redelivery.remember(redis_conn, "j1", now=0.0)
    redelivery.remember(redis_conn, "j1", now=3.0)  # already waiting: keeps its place
    assert redelivery.claim_due(redis_conn, now=redelivery.FIRST_RETRY_S - 0.1) == []
    now = redelivery.FIRST_RETRY_S
    waits = []
    for _ in range(8):
        assert redelivery.claim_due(redis_conn, now=now) == ["j1"]
        assert redelivery.claim_due(redis_conn, now=now) == []
        next_at = redis_conn.zscore(keys.undelivered(), "j1")
        assert next_at is not None
        waits.append(next_at - now)
        now = next_at
    first = redelivery.FIRST_RETRY_S
    assert waits == [min(first * 2**n, redelivery.MAX_BACKOFF_S) for n in range(8)]
    redelivery.forget(redis_conn, "j1")
    assert not redis_conn.exists(keys.undelivered(), keys.undelivered_tries())
