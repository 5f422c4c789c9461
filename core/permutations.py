"""Permutation prompts, Midjourney's syntax: `{red, blue} bird` -> "red bird", "blue bird".

A group's options are separated by commas and trimmed; groups nest (`{big {red, blue}, small} bird`) and may stand
anywhere in the text, parameters included (`--ar {16:9, 1:1}`); several groups multiply (cartesian product).
`\\,` is a literal comma, inside a group or out. Every `{` and `}` is syntax: an unbalanced one is an error.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from core.errors import PromptError

MAX_DEPTH = 8
"""Deepest nesting of groups accepted (keeps the recursive count and expansion shallow)."""

ESCAPED_COMMA = "\\,"


@dataclass
class _Group:
    """One `{...}`: its options, each a sequence of literal text and nested groups."""

    options: list[list[str | _Group]] = field(default_factory=lambda: [[]])


Template = list[str | _Group]
"""Parsed text: literal pieces and groups, in order."""


def parse(text: str) -> Template:
    """Split `text` into literal pieces and `{}` groups.

    Raises:
        PromptError: a brace is unbalanced, or groups nest deeper than MAX_DEPTH.
    """
    root: Template = []
    current = root  # the sequence being filled: the root or the open group's last option
    open_groups: list[tuple[_Group, Template, int]] = []  # (group, sequence it sits in, position of its `{`)
    literal: list[str] = []

    def flush() -> None:
        if literal:
            current.append("".join(literal))
            literal.clear()

    i = 0
    while i < len(text):
        char = text[i]
        if text.startswith(ESCAPED_COMMA, i):
            literal.append(",")
            i += 2
            continue
        if char == "{":
            flush()
            group = _Group()
            current.append(group)
            open_groups.append((group, current, i))
            if len(open_groups) > MAX_DEPTH:
                raise PromptError(f"permutation braces {{}} nest more than {MAX_DEPTH} deep (at position {i + 1})")
            current = group.options[-1]
        elif char == "}":
            if not open_groups:
                raise PromptError(f"unbalanced braces: the '}}' at position {i + 1} closes no '{{'")
            flush()
            _, current, _ = open_groups.pop()
        elif char == "," and open_groups:
            flush()
            group = open_groups[-1][0]
            group.options.append([])
            current = group.options[-1]
        else:
            literal.append(char)
        i += 1
    if open_groups:
        position = open_groups[-1][2] + 1
        raise PromptError(f"unbalanced braces: the '{{' at position {position} is never closed with '}}'")
    flush()
    return root


def count(template: Template) -> int:
    """How many texts `expand` would make, computed without making them."""
    return math.prod(_group_count(piece) if isinstance(piece, _Group) else 1 for piece in template)


def _group_count(group: _Group) -> int:
    return sum(count(option) for option in group.options)


def expand(template: Template) -> list[str]:
    """Every text the template stands for, in reading order (the first group varies slowest)."""
    choices = [_group_texts(piece) if isinstance(piece, _Group) else [piece] for piece in template]
    return ["".join(pieces) for pieces in itertools.product(*choices)]


def _group_texts(group: _Group) -> list[str]:
    return [text.strip() for option in group.options for text in expand(option)]
