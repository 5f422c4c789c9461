"""A stop signal to an idle worker always stops it, whenever it lands.

These run an in-process `ImagineWorker` (not in burst mode) in the test's own main thread and send the process a
real SIGTERM at the two moments where RQ alone would lose it: while the worker is registered but RQ has not yet
installed its handlers (SIGTERM would kill it outright), and while the main thread is inside a logging call (RQ's
StopRequested is raised there and the log handler swallows it, so the worker would listen on forever). Each test
fails by timing out if the worker does not stop.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import time
from collections.abc import Iterator

import pytest
import redis

from core import keys, queue
from core.models import tiny_model
from core.settings import WorkerSettings
from worker.context import Context
from worker.rq_worker import PUBSUB_POLL_S, ImagineWorker

STOP_TIMEOUT_S = 60
"""pytest-timeout for each test: a worker that missed the signal would block here for ever."""

TEARDOWN_TIMEOUT_S = 20
"""pytest-timeout for a teardown: well over PUBSUB_POLL_S, well under RQ's own 60 s listener wait."""


@pytest.fixture
def restored_signals() -> Iterator[None]:
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def idle_worker(conn: redis.Redis) -> ImagineWorker:
    """A worker on the tiny model's lanes that blocks on its dequeue 1 s at a time (worker_ttl_s - 15); no job is
    rendered, so it has no engine."""
    settings = WorkerSettings(device="cpu", worker_ttl_s=16)
    ctx = Context(conn=conn, engine=None, model=tiny_model(), settings=settings,  # type: ignore[arg-type]
                  worker_name="stopping", poster=None)
    return ImagineWorker.for_context(ctx)


class SignalOnWrite(io.StringIO):
    """A log stream that sends this process SIGTERM when a line containing `trigger` is written to it."""

    def __init__(self, trigger: str) -> None:
        super().__init__()
        self.trigger = trigger
        self.sent = False

    def write(self, text: str) -> int:
        if self.trigger in text and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)
        return super().write(text)


@pytest.mark.timeout(STOP_TIMEOUT_S)
def test_sigterm_swallowed_by_a_log_handler_still_stops_the_idle_worker(redis_conn, restored_signals):
    """SIGTERM lands while RQ logs its registry cleaning: the StopRequested raised by RQ's handler is swallowed by
    the log handler's emit (it catches Exception), yet the worker stops at its next dequeue and takes no job."""
    stream = SignalOnWrite("cleaning registries")
    handler = logging.StreamHandler(stream)
    rq_log = logging.getLogger("rq.worker")
    rq_log.addHandler(handler)
    try:
        worker = idle_worker(redis_conn)
        worker.work(burst=False, logging_level="INFO")
    finally:
        rq_log.removeHandler(handler)
    assert stream.sent
    assert "StopRequested" in stream.getvalue() or worker._stop_requested  # swallowed, or stopped before RQ raised
    assert not redis_conn.sismember("rq:workers", f"rq:worker:{worker.name}")


@pytest.mark.timeout(STOP_TIMEOUT_S)
def test_sigterm_between_registration_and_rq_handlers_stops_the_worker(redis_conn, tiny_spec, restored_signals):
    """SIGTERM lands once the worker is listed in Redis but before RQ installs its handlers: the worker stops
    before its first dequeue (the waiting job stays queued for another worker) instead of dying on the signal."""
    job_id = queue.enqueue(redis_conn, tiny_spec, "test:owner")

    class SignalledOnSubscribe(ImagineWorker):
        def subscribe(self) -> None:  # in RQ's bootstrap, after register_birth
            os.kill(os.getpid(), signal.SIGTERM)
            super().subscribe()

    worker = idle_worker(redis_conn)
    worker.__class__ = SignalledOnSubscribe
    assert worker.work(burst=False, logging_level="WARNING") is False
    lane = queue.rq_queue(redis_conn, keys.queue_name(tiny_spec.model, tiny_spec.mode))
    assert job_id in lane.job_ids


@pytest.mark.timeout(TEARDOWN_TIMEOUT_S)
def test_teardown_does_not_wait_out_a_listener_that_read_the_unsubscribe_reply(redis_conn):
    """RQ tears a worker down by sending UNSUBSCRIBE and then stopping its listener thread, which redis-py waits for.
    A listener that has already read the reply waits for a new subscription: PUBSUB_POLL_S here, not RQ's 60 s
    (seen in CI: a stopping worker hung past this file's 60 s timeout)."""
    worker = idle_worker(redis_conn)
    worker.subscribe()
    listener = worker.pubsub_thread
    assert listener.sleep_time == PUBSUB_POLL_S
    worker.pubsub.unsubscribe()
    while worker.pubsub.subscribed:  # until the listener has read the reply
        time.sleep(0.01)
    worker.unsubscribe()
    listener.join()
    assert not listener.is_alive()
