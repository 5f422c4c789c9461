"""`python -m bench chaos`, short: 20 jobs from 5 members through one of each fault; nothing lost, nothing twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH_TIMEOUT_S = 280.0
"""Redis, the emulator, a bot and two workers start, 20 jobs paced at the free tier's 6 a minute per member run
through the faults, and everything settles: about a minute on a busy 2-core machine."""


@pytest.mark.solo
def test_short_chaos_loses_nothing_duplicates_nothing_and_balances_every_ledger(tmp_path: Path) -> None:
    """20 jobs from 5 members while a worker is SIGKILLed (every 25 s), Redis restarts once from its AOF, 10% of
    Discord calls get 429/5xx and the gateway drops once: 0 lost, 0 duplicates, every job's outcome shown exactly
    once, every member's ledger balanced, every fault recovered within 2 minutes."""
    bench = subprocess.Popen(
        [sys.executable, "-m", "bench", "chaos", "--jobs", "20", "--members", "5", "--kill-every", "25",
         "--redis-restarts", "1", "--keep", str(tmp_path)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = bench.communicate(timeout=BENCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(bench.pid, signal.SIGKILL)  # the bench and every process it started: none outlives the test
        _, stderr = bench.communicate()
        logs = "".join(f"\n--- {log.name} (end) ---\n{log.read_text(errors='replace')[-2500:]}"
                       for log in sorted(tmp_path.glob("*.log")))
        progress = f"the bench did not end within {BENCH_TIMEOUT_S:g} s; its progress:\n{stderr[-4000:]}"
        raise AssertionError(progress + logs) from None
    assert bench.returncode == 0, stderr[-3000:]
    figures = json.loads(stdout)
    assert figures["jobs_submitted"] == 20 == sum(figures["answers"].values()), figures
    assert (figures["lost"], figures["duplicates"]) == (0, 0), _story(figures["problems"], stderr, tmp_path)
    assert figures["exactly_one_outcome"] == figures["jobs"] > 0
    assert figures["grids_posted_exactly_once"] == figures["grids_done"]
    assert figures["ledgers_balanced"], {m: v for m, v in figures["ledgers"].items() if not v["balanced"]}
    assert {f["fault"] for f in figures["faults"]} == {"worker_sigkill", "redis_restart_from_aof", "gateway_drop",
                                                      "discord_errors"}
    assert figures["all_recovered_within_2_min"], figures["faults"]
    assert figures["discord_calls_faulted"] > 0


def _story(problems: list[str], progress: str, logs: Path) -> str:
    """The problems, then what the bench and every process logged about each job in them: the story of a failure
    that CI shows only once."""
    ids = {p.split(":")[0] for p in problems}
    lines = [f"{log.name}: {line}" for log in sorted(logs.glob("*.log"))
             for line in log.read_text(errors="replace").splitlines() if any(i in line for i in ids)]
    lines += [f"bench: {line}" for line in progress.splitlines() if any(i in line for i in ids)]
    return "\n".join([*problems, *lines[-60:]])
