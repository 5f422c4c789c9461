"""A real redis-server started on a free port (and stopped after): for the tests, and the benchmarks that need one."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import redis

REDIS_START_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def redis_server(
    workdir: Path,
    *,
    appendonly: bool = False,
    port: int | None = None,
    acl_file: Path | None = None,
    extra_args: Sequence[str] = (),
) -> Iterator[str]:
    """Run `redis-server` in `workdir` on a free port; yields its URL (without a user: with `acl_file`, whose
    default user may be off, put the user and password in it). `extra_args` go on the command line as given."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: the tests need a real Redis (apt install redis-server)")
    port = port or free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", ""]
    args += ["--appendonly", "yes" if appendonly else "no", "--logfile", str(workdir / "redis.log")]
    if acl_file is not None:
        args += ["--aclfile", str(acl_file)]
    args += list(extra_args)
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    try:
        while True:
            try:
                client.ping()
                break
            except (redis.AuthenticationError, redis.ResponseError):
                break  # it answers: with an ACL, the default user may not ping
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start; see {workdir / 'redis.log'}") from None
                time.sleep(0.02)  # polling a port that is not open yet: there is no event to wait on
        yield url
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)
