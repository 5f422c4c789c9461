"""The `imagine` command: --explain, bad input, end to end through Redis and a worker process, --local, failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis
from PIL import Image

from bench.redis_server import free_port
from core import jobs, keys, queue
from tests.worker.worker_helpers import REPO, WorkerProcess, wait_until, worker_processes
from worker import cli

IMAGINE = str(Path(sys.executable).parent / "imagine")
AT_A_TERMINAL = [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                 "os.execv(sys.argv[1], sys.argv[1:])"]
"""Runs a command with SIGINT at its default, as a terminal starts it. A child inherits an ignored SIGINT (Python
then installs no KeyboardInterrupt handler), and a test process can hold one: from a process ignoring SIGINT the
Ctrl-C test hung (the bar at "queued", killed after 30 s) as in two full runs of session 11, where it passed alone."""


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    """The tiny model and the test Redis, whatever the developer's shell exports."""
    for name in ("MODELS_FILE", "IMAGINE_MAX_JOBS_PER_COMMAND", "IMAGINE_MAX_PROMPT_CHARS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MODEL", "builtin:tiny")
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("WORKER_DEVICE", "cpu")


def only_job_id(conn: redis.Redis) -> str | None:
    """The id of the one job record in Redis, once there is one."""
    found = [k.decode().split(":")[2] for k in conn.scan_iter(keys.job("*")) if k.decode().count(":") == 2]
    return found[0] if len(found) == 1 else None


def test_explain_prints_specs_as_json(capsys):
    """--explain prints one JSON spec per job and exits 0, touching no Redis."""
    assert cli.main(["--explain", "a {red, blue} cat --seed 7 --ar 16:9"]) == 0
    specs = json.loads(capsys.readouterr().out)
    assert [s["prompt"] for s in specs] == ["a red cat", "a blue cat"]
    assert specs[0]["seed"] == 7 and specs[0]["aspect"] == "16:9"


def test_explain_shows_an_image_prompt(capsys):
    """An image prompt's links, their `::` weights and `--iw` are in the spec's extras; the encoder gets the text."""
    link = "https://cdn.discordapp.com/attachments/1/2/a.png"
    assert cli.main(["--explain", f"{link}::2 a cat --iw 2 --seed 1"]) == 0
    [spec] = json.loads(capsys.readouterr().out)
    assert spec["extras"]["images"] == {"urls": [link], "weights": [2.0], "iw": 2.0}
    assert [part["text"] for part in spec["parts"]] == ["a cat"]


def test_explain_shows_custom_options_and_the_suffix_expanded(capsys):
    """--option NAME=VALUE and --suffix, as /prefer saves them: --explain says what the prompt expanded to, and the
    specs carry it."""
    assert cli.main(["--explain", "a cat --wide", "--option", "wide=--ar 16:9", "--suffix", "--s 250"]) == 0
    out = capsys.readouterr()
    assert "expanded: a cat --ar 16:9 --s 250" in out.err
    (spec,) = json.loads(out.out)
    assert (spec["aspect"], spec["stylize"]) == ("16:9", 250)


@pytest.mark.parametrize(("argv", "says"), [
    (["a cat", "--option", "wide"], "NAME=VALUE"),
    (["a cat", "--option", "ar=--ar 2:1"], "built-in parameter"),
    (["a cat", "--option", "wide=--ar 99:1"], "does not parse"),
])
def test_a_bad_option_exits_2_with_one_line(capsys, argv: list[str], says: str):
    """A malformed --option: exit 2, one line saying what is wrong."""
    assert cli.main(["--explain", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err


def test_bad_prompt_exits_2_with_one_line(capsys):
    """A bad parameter: exit 2, one line on stderr naming it, no traceback."""
    assert cli.main(["a cat --ar 99:1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--ar" in err and "99:1" in err and "Traceback" not in err


def test_bad_usage_exits_2_with_one_line(capsys):
    """An unknown option: exit 2 and one line, as for a bad prompt."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["a cat", "--bogus"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--bogus" in err


def test_redis_unreachable_exits_1_with_one_line(monkeypatch, capsys, tmp_path):
    """No Redis at REDIS_URL: exit 1, one line that names where, without the password."""
    monkeypatch.setenv("REDIS_URL", f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    assert cli.main(["a cat", "--out", str(tmp_path / "grid.png")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot reach Redis at 127.0.0.1:" in err and "hunter2" not in err


def test_local_renders_grid_without_redis(monkeypatch, tmp_path, capsys):
    """--local renders in this process (no Redis, no worker) and writes the 2x2 grid PNG."""
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    out = tmp_path / "grid.png"
    assert cli.main(["a red cat --seed 7", "--local", "--out", str(out)]) == 0
    assert Image.open(out).size == (128, 128)
    assert capsys.readouterr().out.strip() == str(out)


def test_end_to_end_through_a_worker_writes_each_grid(redis_url, redis_conn, tmp_path):
    """`imagine` enqueues, a worker process renders, each job's grid is written (grid.png, grid-2.png), exit 0."""
    with worker_processes() as started:
        started.append(worker := WorkerProcess(redis_url, tmp_path, "cli-worker"))
        out = tmp_path / "grid.png"
        done = subprocess.run(
            [IMAGINE, "a {red, blue} cat --seed 7", "--out", str(out), "--timeout", "240"],
            cwd=REPO, env={**os.environ, "REDIS_URL": redis_url}, capture_output=True, text=True, timeout=300,
        )
        assert done.returncode == 0, done.stderr + worker.log()
    assert done.stdout.split() == [str(out), str(tmp_path / "grid-2.png")]
    assert "2 jobs: writing" in done.stderr
    assert Image.open(out).size == Image.open(tmp_path / "grid-2.png").size == (128, 128)
    assert out.read_bytes() != (tmp_path / "grid-2.png").read_bytes()


def test_failed_job_exits_1_with_reason(redis_conn, tmp_path, capsys):
    """A job that ends failed: exit 1 and its reason on stderr, no file written."""
    codes: list[int] = []
    out = tmp_path / "grid.png"
    waiter = threading.Thread(target=lambda: codes.append(cli.main(["a cat", "--out", str(out), "--timeout", "60"])))
    waiter.start()
    job_id = wait_until(lambda: only_job_id(redis_conn), 30, "the CLI to enqueue")
    jobs.mark_running(redis_conn, job_id, "w1")
    jobs.finish(redis_conn, job_id, jobs.FAILED, reason="out of GPU memory")
    waiter.join(timeout=60)
    assert codes == [1]
    assert "failed: out of GPU memory" in capsys.readouterr().err
    assert not out.exists()


def test_timeout_exits_1_and_cancels(redis_conn, tmp_path, capsys):
    """With no worker, --timeout gives up: exit 1, and the job is cancelled rather than left to run unseen."""
    assert cli.main(["a cat", "--out", str(tmp_path / "g.png"), "--timeout", "0.5"]) == 1
    assert "timed out" in capsys.readouterr().err
    job_id = only_job_id(redis_conn)
    assert job_id is not None and jobs.get(redis_conn, job_id).state == "cancelled"  # type: ignore[union-attr]


def test_ctrl_c_while_waiting_cancels_the_job(redis_url, redis_conn, tmp_path):
    """SIGINT while `imagine` waits: the queued job is cancelled and the command exits 130."""
    proc = subprocess.Popen(
        [*AT_A_TERMINAL, IMAGINE, "a cat", "--out", str(tmp_path / "g.png")],
        cwd=REPO, env={**os.environ, "REDIS_URL": redis_url}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    job_id = wait_until(lambda: only_job_id(redis_conn), 60, "the CLI to enqueue")
    channel = keys.job_events(job_id)
    wait_until(lambda: redis_conn.pubsub_numsub(channel)[0][1] > 0, 30, "the CLI to wait on the job's events")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert jobs.get(redis_conn, job_id).state == "cancelled"  # type: ignore[union-attr]
    assert queue.rq_queue(redis_conn, "fast:tiny").count == 0
