"""The bot's own Redis client, redis-py's asyncio one, and what the hot path needs: several commands in one round
trip (`pipelined`), the commands of every interaction waiting in the same event-loop turn in one round trip
(`Batcher`), and scripts run by their SHA (`Script`)."""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio
import redis.exceptions
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


REDIS_WARM_CONNECTIONS = 8
"""Connections `warm_up` opens before the first command: a burst's first batches otherwise each wait for a connect
and its handshake."""


async def warm_up(conn: redis.asyncio.Redis, connections: int = REDIS_WARM_CONNECTIONS) -> None:
    """Open `connections` connections of `conn`'s pool now (a failure is left for the first command to meet)."""
    pool = conn.connection_pool
    taken = []
    try:
        for _ in range(connections):
            taken.append(await pool.get_connection())
    except (redis.RedisError, OSError):
        pass
    finally:
        for connection in taken:
            await pool.release(connection)


async def pipelined(conn: redis.asyncio.Redis, commands: Sequence[tuple[str, ...]]) -> list[Any]:
    """The replies to `commands` (tuples such as `("HGETALL", key)`), sent in one round trip (not a transaction).

    Raises:
        redis.RedisError: Redis is unreachable, or a command failed.
    """
    async with conn.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.execute_command(*command)
        return await pipe.execute()


class Batcher:
    """Sends the commands of every caller that asked in the same event-loop turn as one pipeline (not a transaction):
    a burst of 200 interactions costs a few round trips on a few connections instead of 200 on 64, and the event
    loop spends its time on the interactions rather than on taking, writing and releasing connections.

    Each caller gets its own replies, or the first error among them, as `pipelined` would give it.
    """

    def __init__(self, conn: redis.asyncio.Redis) -> None:
        self._conn = conn
        self._waiting: list[tuple[Sequence[tuple[Any, ...]], asyncio.Future[list[Any]]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def run(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """The replies to `commands`, sent with whatever else was asked in this event-loop turn.

        Raises:
            redis.RedisError: Redis is unreachable, or one of these commands failed.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._flush)
        self._waiting.append((commands, future))
        return await future

    def _flush(self) -> None:
        batch, self._waiting = self._waiting, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[Sequence[tuple[Any, ...]], asyncio.Future[list[Any]]]]) -> None:
        try:
            async with self._conn.pipeline(transaction=False) as pipe:
                for commands, _ in batch:
                    for command in commands:
                        pipe.execute_command(*command)
                replies = await pipe.execute(raise_on_error=False)
        except BaseException as exc:  # unreachable (or cancelled at shutdown): every caller gets the error
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else redis.ConnectionError("closed"))
            if not isinstance(exc, Exception):
                raise
            return
        start = 0
        for commands, future in batch:
            mine, start = replies[start : start + len(commands)], start + len(commands)
            if future.done():  # its caller was cancelled
                continue
            error = next((reply for reply in mine if isinstance(reply, Exception)), None)
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(mine)


class Script:
    """A Lua script run by its SHA (EVALSHA), its text sent only when Redis does not know it yet (after a restart
    or SCRIPT FLUSH): the admission script is 2 KB, sent with every `/imagine` otherwise."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()

    async def run(self, batcher: Batcher, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """The script's answer, run with `keys` and `args` in the caller's batch.

        Raises:
            redis.RedisError: Redis is unreachable, or the script failed.
        """
        try:
            (answer,) = await batcher.run([("EVALSHA", self.sha, len(keys), *keys, *args)])
        except redis.exceptions.NoScriptError:  # nothing ran: send the text, which Redis then caches
            (answer,) = await batcher.run([("EVAL", self.text, len(keys), *keys, *args)])
        return answer


# ARGV: each read command as its argument count, then its arguments. Returns each reply, in order (a hash flat).
_READ_SCRIPT = """
local replies, i = {}, 1
while i <= #ARGV do
  local argc = tonumber(ARGV[i])
  replies[#replies + 1] = redis.call(unpack(ARGV, i + 1, i + argc))
  i = i + 1 + argc
end
return replies
"""
READS = Script(_READ_SCRIPT)
"""Several reads as one command: one packed command and one reply to parse instead of one each."""


async def read_raw(batcher: Batcher, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """The raw replies to read-only `commands` (GET, HGET, HGETALL...: a hash as a flat list), run as one script in
    the caller's batch.

    Raises:
        redis.RedisError: Redis is unreachable, or a command failed.
    """
    args: list[Any] = []
    for command in commands:
        args += [len(command), *command]
    return list(await READS.run(batcher, (), args))


def as_replies(commands: Sequence[tuple[Any, ...]], raw: Sequence[Any]) -> list[Any]:
    """Raw read replies as redis-py gives them (an HGETALL as a dict)."""
    return [
        dict(zip(reply[::2], reply[1::2], strict=True)) if str(command[0]).upper() == "HGETALL" else reply
        for command, reply in zip(commands, raw, strict=True)
    ]


async def read(batcher: Batcher, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """The replies to read-only `commands` as redis-py gives them, run as one script in the caller's batch: for the
    hot path's reads, cheaper than one command each.

    Raises:
        redis.RedisError: Redis is unreachable, or a command failed.
    """
    return as_replies(commands, await read_raw(batcher, commands))


# -- one round trip: a script that runs only if Redis still holds what the caller assumed ---------------------------

_SERIALIZE = """
local function serialize(v)
  if not v then return 'n' end
  if type(v) == 'number' then return 'i' .. v end
  if type(v) == 'table' then
    local parts = {'a' .. #v .. ':'}
    for j = 1, #v do parts[#parts + 1] = serialize(v[j]) end
    return table.concat(parts)
  end
  return 's' .. #v .. ':' .. v
end
"""


def guarded(inner: str) -> Script:
    """`inner` (a script) behind a guard: it runs only when the given reads answer what the caller assumed.

    ARGV: 1 the SHA-1 of the assumed replies (`assumed_digest`), 2 how many arguments the reads take (each read as
    its argument count and its arguments), those, then `inner`'s ARGV; KEYS are `inner`'s. Returns `inner`'s answer,
    or `{"stale", replies}` with the reads' raw replies (nothing else done) when Redis holds something else.
    """
    return Script(f"""local function inner(KEYS, ARGV)
{inner}
end
{_SERIALIZE}
local n = tonumber(ARGV[2])
local replies, seen, i = {{}}, {{}}, 3
while i < 3 + n do
  local argc = tonumber(ARGV[i])
  local reply = redis.call(unpack(ARGV, i + 1, i + argc))
  replies[#replies + 1] = reply
  seen[#seen + 1] = serialize(reply)
  i = i + 1 + argc
end
if redis.sha1hex(table.concat(seen, ';')) ~= ARGV[1] then return {{'stale', replies}} end
local rest = {{}}
for j = 3 + n, #ARGV do rest[#rest + 1] = ARGV[j] end
return inner(KEYS, rest)
""")


def _serialize(value: Any) -> bytes:
    if value is None:
        return b"n"
    if isinstance(value, int):
        return b"i%d" % value
    if isinstance(value, list):
        return b"a%d:" % len(value) + b"".join(_serialize(item) for item in value)
    data = value if isinstance(value, bytes) else str(value).encode()
    return b"s%d:%s" % (len(data), data)


def assumed_digest(raw: Sequence[Any]) -> str:
    """What a `guarded` script compares Redis's replies with: the SHA-1 of the assumed raw replies."""
    return hashlib.sha1(b";".join(_serialize(reply) for reply in raw)).hexdigest()


def guard_args(commands: Sequence[tuple[Any, ...]], assumed: Sequence[Any]) -> list[Any]:
    """A `guarded` script's first arguments: the assumed replies' digest and the reads."""
    reads: list[Any] = []
    for command in commands:
        reads += [len(command), *command]
    return [assumed_digest(assumed), len(reads), *reads]


class ReadCache:
    """The last raw reply this process saw to each read, an LRU of `size`: what the hot path assumes Redis will
    answer (a guess a `guarded` script checks, never a source of truth)."""

    def __init__(self, size: int = 10_000) -> None:
        self._seen: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._size = size

    def assume(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """The replies last seen, or an empty one (no such key) for a read not seen yet."""
        return [self._seen.get(tuple(c), [] if str(c[0]).upper() == "HGETALL" else None) for c in commands]

    def learn(self, commands: Sequence[tuple[Any, ...]], raw: Sequence[Any]) -> None:
        """Remember Redis's raw replies to `commands`."""
        for command, reply in zip(commands, raw, strict=True):
            key = tuple(command)
            self._seen[key] = reply
            self._seen.move_to_end(key)
        while len(self._seen) > self._size:
            self._seen.popitem(last=False)
