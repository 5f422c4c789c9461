"""Shared fixtures: a real redis-server for the session, flushed before each test that uses it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis
from hypothesis import settings

from bench.redis_server import redis_server

# Property tests draw new random examples on every run, so that a developer's runs keep finding new bad inputs
# (one found a select payload discord.py could not read). CI runs the `ci` profile: the same examples every run,
# so a build fails on a change, not on the luck of the draw (`.ci/run` sets HYPOTHESIS_PROFILE=ci).
settings.register_profile("ci", derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# Every process the tests start (workers, bots, the CLI) serves the tiny random pipeline unless a test asks for
# another model: it renders a grid in ~0.1 s. Tests of the embedded model set MODEL=builtin:embedded themselves.
os.environ.setdefault("MODEL", "builtin:tiny")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a redis-server this test session started on a free port."""
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def redis_conn(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the session's Redis, flushed before the test."""
    conn = redis.Redis.from_url(redis_url)
    conn.flushall()
    yield conn
    conn.close()
