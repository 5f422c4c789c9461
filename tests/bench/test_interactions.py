"""`python -m bench interactions` on a tiny burst: its JSON has every promised field (timings are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.interactions import summary

REPO = Path(__file__).resolve().parents[2]
BENCH_TIMEOUT_S = 240.0
"""Redis, the emulator and two bot processes start one after another: seconds, more on a busy 2-core machine."""


def test_interactions_prints_the_promised_figures() -> None:
    """n=5 with one CPU hog: settings, the floor's and the bot's count/acknowledged/p50/p99/max, and p99_ratio."""
    done = subprocess.run(
        [sys.executable, "-m", "bench", "interactions", "-n", "5", "--cpu-hog", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=BENCH_TIMEOUT_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert set(figures) == {"n", "cpu_hog", "floor", "bot", "p99_ratio"}
    assert (figures["n"], figures["cpu_hog"]) == (5, 1)
    for name in ("floor", "bot"):
        assert set(figures[name]) == {"count", "acknowledged", "p50_s", "p99_s", "max_s"}, figures
        assert figures[name]["count"] == 5 and 0 <= figures[name]["acknowledged"] <= 5
        assert 0 <= figures[name]["p50_s"] <= figures[name]["p99_s"] <= figures[name]["max_s"]
    assert isinstance(figures["p99_ratio"], float)


def test_an_unacknowledged_interaction_is_counted_and_weighs_three_seconds() -> None:
    """summary(): None (no callback within 3 s) is missing from `acknowledged` and counts as 3 s in the percentiles."""
    assert summary([0.1, None, 0.2]) == {"count": 3, "acknowledged": 2, "p50_s": 0.2, "p99_s": 3.0, "max_s": 3.0}
    assert summary([0.3]) == {"count": 1, "acknowledged": 1, "p50_s": 0.3, "p99_s": 0.3, "max_s": 0.3}
