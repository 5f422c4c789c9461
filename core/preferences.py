"""A member's prompt preferences, as on Midjourney: `/prefer suffix` (text appended to every prompt) and
`/prefer option set` (a custom `--name` that expands into the text it stands for, usually parameters).

Expansion is the prompt language's first step (`core.prompt.parse(..., preferences=...)`): each custom `--name`
written in the prompt is replaced by its value, once (a value is not expanded again), then the suffix is appended.
Pure: text in, text out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from core.errors import PromptError

MAX_SUFFIX_CHARS = 200
"""Longest suffix."""

MAX_OPTION_CHARS = 200
"""Longest value of a custom option."""

MAX_OPTIONS = 20
"""Custom options one member may keep."""

OPTION_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
"""A custom option's name: a lowercase letter, then up to 31 lowercase letters, digits or underscores."""


@dataclass(frozen=True)
class Preferences:
    """What a member preferred: a suffix, and custom options by name."""

    suffix: str = ""
    options: Mapping[str, str] = field(default_factory=dict)

    def expand(self, text: str) -> str:
        """`text` with each `--name` of a custom option (or its em/en-dash spelling, as phones write it) replaced by
        the option's value, then the suffix appended. Names match whole words, case-insensitively."""
        if self.options:
            names = "|".join(sorted(map(re.escape, self.options), key=len, reverse=True))
            pattern = re.compile(rf"(?<!\S)(?:--|\u2014|\u2013)({names})(?!\S)", re.IGNORECASE)
            text = pattern.sub(lambda match: self.options[match[1].lower()], text)
        return f"{text} {self.suffix}" if self.suffix else text


def check_name(name: str, builtin: frozenset[str]) -> str:
    """The option's name, lowercased, when it may be used.

    Raises:
        PromptError: not OPTION_NAME's shape, or the name of a built-in parameter (`builtin`).
    """
    lowered = name.strip().lower().removeprefix("--")
    if not OPTION_NAME.fullmatch(lowered):
        raise PromptError("an option's name is a letter then up to 31 letters, digits or underscores, e.g. `wide`")
    if lowered in builtin:
        raise PromptError(f"--{lowered} is a built-in parameter; choose another name")
    return lowered


def check_text(what: str, text: str, limit: int) -> str:
    """`text` stripped, when within `limit` characters.

    Raises:
        PromptError: it is longer.
    """
    text = " ".join(text.split())
    if len(text) > limit:
        raise PromptError(f"{what} is {len(text)} characters long; the limit is {limit}")
    return text
