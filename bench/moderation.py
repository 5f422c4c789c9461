"""`python -m bench moderation`: the prompt filter's table (misses, false positives), its time per prompt, and its
time on adversarial inputs of growing size (linear: each 10x longer text should take about 10x the time).

Each figure is the best of `repeat` runs (the least disturbed by other processes on the machine).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.moderation_cases import EVASIONS, ORDINARY
from bench.moderation_prompts import ORDINARY_PROMPTS
from moderation import Filter, Match, default_lists

ADVERSARIAL = {
    "spaced letters, the issue's quadratic case (matches)": "nud e f ",
    "spaced letters that never match": "q u i z f ",
    "allow-listed spelling": "e s s e x ",
    "ordinary words that hold a listed word": "therapist grape ",
    "digits and symbols (six readings)": "1$",
    "NFKC expansion (U+FDFA, 18 letters each)": "\ufdfa",
    "full-width and mathematical letters": "ｎｕ𝐝𝐞 ",
    "invisible letters between letters": "n\u3164u\u200b",
    "one long word": "a",
    "punctuation inside words": "n.u.d.",
}
"""Name -> the unit repeated to the text's length."""

SIZES = (1_000, 10_000, 100_000)


def best_of(repeat: int, call: Callable[[], Any]) -> float:
    """The shortest of `repeat` runs of `call`, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


def run(repeat: int = 5) -> dict[str, Any]:
    lists = default_lists()
    prompt_filter = Filter.from_lists(lists.blocked(mature_allowed=False), lists.allow)
    misses = [text for text, entry in EVASIONS if prompt_filter.check(text) != Match(entry)]
    false_positives = [text for text in ORDINARY if prompt_filter.check(text) is not None]
    plain = ORDINARY_PROMPTS[:40]  # landscapes and animals: no listed word inside any word

    def per_prompt(texts: list[str]) -> float:
        return round(best_of(repeat, lambda: [prompt_filter.check(text) for text in texts]) / len(texts) * 1e6, 1)

    adversarial: dict[str, dict[str, Any]] = {}
    for name, unit in ADVERSARIAL.items():
        figures: dict[str, Any] = {}
        for size in SIZES:
            text = (unit * (size // len(unit) + 1))[:size]
            figures[f"ms_at_{size // 1000}k"] = round(best_of(repeat, lambda t=text: prompt_filter.check(t)) * 1e3, 2)
            figures[f"work_at_{size // 1000}k"] = prompt_filter.check_counted(text)[1]
        figures["blocked"] = prompt_filter.check(text) is not None
        figures["time_ratio_100k_to_10k"] = round(figures["ms_at_100k"] / max(figures["ms_at_10k"], 1e-3), 1)
        adversarial[name] = figures
    return {
        "evasion_forms": len(EVASIONS),
        "ordinary_prompts": len(ORDINARY),
        "misses": len(misses),
        "false_positives": len(false_positives),
        "missed": misses,
        "false_positive_prompts": false_positives,
        "us_per_prompt_plain": per_prompt(plain),
        "us_per_prompt_ordinary_table": per_prompt(ORDINARY),
        "us_per_prompt_evasions": per_prompt([text for text, _ in EVASIONS]),
        "adversarial": adversarial,
        "worst_ms_at_100k": max(figures["ms_at_100k"] for figures in adversarial.values()),
    }
