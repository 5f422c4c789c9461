"""The prompt filter's table (issue 14): every evasion form matches its entry, no ordinary prompt matches."""

from __future__ import annotations

import unicodedata

import pytest

from bench.moderation_cases import EVASIONS, ISSUE_ORDINARY, ORDINARY
from moderation import normalize
from moderation.listfile import read_list_file
from moderation.promptfilter import Filter, Match
from moderation.wordforms import SLANG, SUFFIXES, inflections

LISTS = read_list_file()
DEFAULT = Filter.from_lists(LISTS.blocked(mature_allowed=False), LISTS.allow)


def test_table_has_zero_misses() -> None:
    """At least 200 evasion forms, each matching the default entry it disguises."""
    assert len(EVASIONS) >= 200
    missed = [(text, entry, DEFAULT.check(text)) for text, entry in EVASIONS if DEFAULT.check(text) != Match(entry)]
    assert missed == []


def test_table_has_zero_false_positives() -> None:
    """At least 200 ordinary prompts, the issue's examples among them, none matching the default lists."""
    assert len(ORDINARY) >= 200 and set(ISSUE_ORDINARY) <= set(ORDINARY)
    assert [(text, DEFAULT.check(text)) for text in ORDINARY if DEFAULT.check(text) is not None] == []


@pytest.mark.parametrize(("sequence", "letter"), sorted(normalize.LEET_SEQUENCES.items()))
def test_each_leet_sequence_reads_as_its_letter(sequence: str, letter: str) -> None:
    """Each multi-character leet row reads as its letter."""
    assert normalize.unleet(f"x{sequence}x") == f"x{letter}x"


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_each_suffix_is_a_form(suffix: str) -> None:
    """Each suffix row makes a form of a listed word (a final e dropped before a vowel)."""
    word = Filter.from_lists(["nude"])
    assert suffix in {form.removeprefix("nud").removeprefix("e") for form in inflections("nude")}
    assert word.check("nude" + suffix) == Match("nude") or word.check("nud" + suffix) == Match("nude")


@pytest.mark.parametrize(("slang", "word"), [(slang, word) for slang, word in SLANG.items() if word])
def test_each_slang_row_is_read_as_its_word(slang: str, word: str) -> None:
    """Each slang row matches the entry it stands for."""
    assert Filter.from_lists([word]).check(slang) == Match(word)


@pytest.mark.parametrize(("char", "letter"), [("ꓠ", "n"), ("Ꮪ", "s"), ("ɲ", "n"), ("🅝", "n"), ("🇳", "n"),
                                              ("ᴎ", "n"), ("ⲛ", "n"), ("ᑎ", "n"), ("\u3164", ""), ("\u02bc", ".")])
def test_fold_table_rows(char: str, letter: str) -> None:
    """Generated table rows: TR39 look-alikes, hooks, negative squared letters, regional indicators, invisibles."""
    assert normalize.fold(char) == letter


def test_glued_word_needs_ordinary_words_around_it() -> None:
    """`hotsex` matches (hot + sex), `sextant` does not (tant is no word), nor an ordinary word such as `essex`."""
    sex = Filter.from_lists(["sex"])
    assert sex.check("hotsex") == Match("sex") and sex.check("sex2") == Match("sex")
    assert sex.check("sextant") is None and sex.check("essex") is None


def test_repeated_letters_keep_an_entrys_own_doubles() -> None:
    """`nuuude` is nude, but `bob` is not `boob`."""
    assert DEFAULT.check("nuuude") == Match("nude")
    assert DEFAULT.check("bob ross painting") is None


def test_one_space_is_bridged_unless_both_sides_are_words() -> None:
    """`nud e` matches; `the pen is red` does not match `penis`."""
    assert DEFAULT.check("nud e") == Match("nude")
    assert DEFAULT.check("the pen is red") is None


@pytest.mark.parametrize("unit", ["nud e f ", "e s s e x ", "grape ", "1$", "n.u.d.", "therapist "])
def test_adversarial_work_is_linear(unit: str) -> None:
    """Ten times the adversarial text takes at most about ten times the steps."""
    small = DEFAULT.check_counted(unit * 200)[1]
    large = DEFAULT.check_counted(unit * 2000)[1]
    assert large <= 11 * small


def test_ordinary_words_of_a_language_are_allowed_alone() -> None:
    """A word given as ordinary (Swedish `sex`, Slovene `gore`) passes alone; its inflections, compounds and other
    spellings that are not the word itself stay blocked."""
    swedish = Filter.from_lists(["sex", "gore"], [], LISTS.ordinary_in(["sv", "sl"]))
    assert swedish.check("sex katter på en soffa") is None and swedish.check("visoke gore v megli") is None
    assert swedish.check("sexy") == Match("sex") and swedish.check("hotsex") == Match("sex")
    assert swedish.check("goreart") == Match("gore")
    assert Filter.from_lists(["sex"]).check("sex katter") == Match("sex")


def test_latin_letters_with_diacritics_fold_to_ascii() -> None:
    """Every Latin letter named "... WITH ..." (hooks, strokes, accents) folds to ASCII letters, but for the few that
    are not drawn on an ASCII letter (glottal stops, cuatrillo, reversed c, thorn, long s)."""
    not_ascii_based = {"ʡ", "ʢ", "ẜ", "Ꜯ", "ꜯ", "Ꜿ", "ꜿ", "Ꝥ", "ꝥ", "Ꝧ", "ꝧ"}
    unfolded = {
        chr(cp) for cp in range(0x80, 0x30000)
        if unicodedata.name(chr(cp), "").startswith("LATIN") and " WITH " in unicodedata.name(chr(cp), "")
        and unicodedata.category(chr(cp)).startswith("L")
        and not (normalize.fold(chr(cp)).isascii() and normalize.fold(chr(cp)).isalpha())
    }
    assert unfolded == not_ascii_based
