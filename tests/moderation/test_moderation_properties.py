"""Properties of the prompt filter over generated text: it never raises, and its work grows linearly with the text."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import AdminInputError
from moderation.listfile import MAX_ENTRY_CHARS, read_list_file
from moderation.normalize import fold
from moderation.promptfilter import Filter

LISTS = read_list_file()
DEFAULT = Filter.from_lists(LISTS.blocked(mature_allowed=False), LISTS.allow)
# The matcher's worst case: entries that are all prefixes of each other, so every letter ends many of them.
NESTED = Filter.from_lists(["a" * k for k in range(2, MAX_ENTRY_CHARS + 1)] + ["a b " * 20], ["aaa"])

WORK_PER_CHAR = 100
"""Bound on the matcher's steps per character of folded text (measured: about 54 for NESTED, 16 for DEFAULT)."""

FRAGMENTS = [
    "nude", "n.u.d.e", "n u d e", "a ", "a.", "1", "$", "@", "!", "|", "0", "sex", "essex", " ", "-", "\u200b",
    "\u0301", "\u00ad", "Ａ", "ﷺ", "ѕ", "Ν", "𝐧", "ⓝ", "İ", "ß", "\x00", "\n", "white power", "a b ",
]  # fmt: skip
texts = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=6)), max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(texts)
def test_check_never_raises_and_work_is_linear(text: str) -> None:
    """Any text gives a Match or None, in at most WORK_PER_CHAR steps per folded character."""
    bound = WORK_PER_CHAR * (len(fold(text)) + 1)
    for prompt_filter in (DEFAULT, NESTED):
        _, work = prompt_filter.check_counted(text)
        assert work <= bound


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=8), texts)
def test_any_acceptable_list_compiles_and_checks(entries: list[str], text: str) -> None:
    """A list of arbitrary entries either compiles or is refused with AdminInputError; a compiled one checks text."""
    try:
        prompt_filter = Filter.from_lists(entries, entries[:1])
    except AdminInputError:
        return
    prompt_filter.check(text)


@pytest.mark.parametrize("unit", ["a ", "a.", "aaaa", "1$", "n u d e ", "e s s e x ", "\u200ba"])
def test_work_scales_linearly_with_input_size(unit: str) -> None:
    """Ten times the text takes at most about ten times the steps, even against nested entries."""
    for prompt_filter in (DEFAULT, NESTED):
        small = prompt_filter.check_counted(unit * 500)[1]
        large = prompt_filter.check_counted(unit * 5000)[1]
        assert large <= 11 * small  # 10x, plus the ramp while the first 100 letters fill the automaton
