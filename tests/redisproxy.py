"""A TCP proxy in front of a test's redis-server that drops one command's answer: Redis runs the command, the client
never hears back, as when Redis stops (or hangs) between running a script and answering it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


@contextlib.asynccontextmanager
async def holding_one_reply(redis_port: int, marker: bytes) -> AsyncIterator[int]:
    """A TCP proxy to Redis on a port of its own (yielded) that passes everything, except that on the first
    connection to send a command containing `marker` it passes the command on and drops whatever Redis answers:
    Redis runs it, the client never hears back (until Redis stops and the proxy closes that connection too)."""
    state = {"used": False}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        holding = False
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", redis_port)
        except OSError:  # Redis is stopped: refuse, as its own port would
            writer.close()
            return

        async def upstream() -> None:
            nonlocal holding
            while data := await reader.read(65536):
                if marker in data and not state["used"]:
                    state["used"] = holding = True
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                if not holding:
                    writer.write(data)
                    await writer.drain()
            writer.close()

        await asyncio.gather(upstream(), downstream(), return_exceptions=True)
        writer.close()
        up_writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]
