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


def redis_command(
    workdir: Path, port: int, *, appendonly: bool = False, acl_file: Path | None = None, extra_args: Sequence[str] = ()
) -> list[str]:
    """The `redis-server` command line: 127.0.0.1:`port`, data and log in `workdir`, no RDB snapshots."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: the tests need a real Redis (apt install redis-server)")
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", ""]
    args += ["--appendonly", "yes" if appendonly else "no", "--logfile", str(workdir / "redis.log")]
    if acl_file is not None:
        args += ["--aclfile", str(acl_file)]
    return args + list(extra_args)


def wait_ready(proc: subprocess.Popen[bytes], url: str, workdir: Path) -> None:
    """Until the redis-server at `url` answers (it may refuse PING with an ACL: that is an answer too)."""
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    try:
        while True:
            try:
                client.ping()
                return
            except (redis.AuthenticationError, redis.ResponseError):
                return  # it answers: with an ACL, the default user may not ping
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start; see {workdir / 'redis.log'}") from None
                time.sleep(0.02)  # polling a port that is not open yet: there is no event to wait on
    finally:
        client.close()


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
    port = port or free_port()
    args = redis_command(workdir, port, appendonly=appendonly, acl_file=acl_file, extra_args=extra_args)
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_ready(proc, url, workdir)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
