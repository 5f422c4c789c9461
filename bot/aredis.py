"""The bot's own Redis client, redis-py's asyncio one, and the one helper the hot path needs: run several commands
in one round trip."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

REDIS_CONNECT_TIMEOUT_S = 0.5
"""A Redis that does not accept a connection within this counts as unreachable."""

REDIS_SOCKET_TIMEOUT_S = 2.0
"""A command Redis does not answer within this fails (the user is told to try again)."""

REDIS_RETRIES = 2
"""Retries of a failed Redis command, with backoff capped at REDIS_RETRY_CAP_S: redis-py's default (3 retries,
up to about 4 s against a refused port) would outlast Discord's 3-second acknowledgement window."""

REDIS_RETRY_CAP_S = 0.2

REDIS_CONNECTIONS = 64
"""Connections the asyncio client opens at most; a burst beyond them waits for a free one (up to the socket timeout)
instead of failing, as redis-py's default pool (100, then an error) would."""


def twin(conn: redis.Redis) -> redis.asyncio.Redis:
    """An asyncio client to the same Redis as the sync `conn` (same server, database, credentials), with the bot's
    timeouts and retries. Bytes responses, like the sync client's."""
    given = conn.connection_pool.connection_kwargs
    where: dict[str, Any] = (
        {"path": given["path"], "connection_class": redis.asyncio.UnixDomainSocketConnection}
        if "path" in given
        else {"host": given["host"], "port": given["port"]}
    )
    pool = redis.asyncio.BlockingConnectionPool(
        **where,
        max_connections=REDIS_CONNECTIONS,
        timeout=REDIS_SOCKET_TIMEOUT_S,
        db=given.get("db", 0),
        username=given.get("username"),
        password=given.get("password"),
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
        socket_timeout=REDIS_SOCKET_TIMEOUT_S,
        retry=Retry(ExponentialBackoff(cap=REDIS_RETRY_CAP_S, base=0.05), REDIS_RETRIES),
        health_check_interval=30,
    )
    return redis.asyncio.Redis(connection_pool=pool)


async def pipelined(conn: redis.asyncio.Redis, commands: Sequence[tuple[str, ...]]) -> list[Any]:
    """The replies to `commands` (tuples such as `("HGETALL", key)`), sent in one round trip (not a transaction).

    Raises:
        redis.RedisError: Redis is unreachable, or a command failed.
    """
    async with conn.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.execute_command(*command)
        return await pipe.execute()
