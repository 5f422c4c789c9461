"""Text normalisation for the prompt filter: the forms people use to slip a word past a list, folded to plain words.

Pure and linear in the length of the text. `fold` undoes the character-level disguises, in this order:
(1) Unicode compatibility forms (NFKC: full-width, mathematical and circled letters, ligatures); (2) look-alike
Cyrillic and Greek letters -> Latin (`HOMOGLYPHS`); (3) case (casefold: also "ß" -> "ss"); (4) accents and other
combining marks (NFKD, then marks dropped) and zero-width / format characters (Unicode category Cf); (2) again, for
look-alikes that carried an accent; then a few Latin letters NFKD does not split (`LETTERS`, e.g. "ø" -> "o").

`views` then reads digits and symbols as letters (`0`->o, `1`->i or l, `3`->e, `4`->a, `5`->s, `7`->t, `@`->a,
`$`->s, `!`->i, `|`->l). Both readings of `1` are kept, and for symbols three: as letters where a letter or digit
follows (`$ex!` -> "sex"), always as letters (`a$$` -> "ass"), never (`wow!nude` -> "wow nude"). Text that has none
of these characters has one view; at most six. `tokens` splits a view into words, each word into the runs of letters
and digits between its punctuation (`n.u.d.e` -> n, u, d, e), which the matcher joins back where it matters.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

HOMOGLYPHS = str.maketrans(
    {
        # Cyrillic capitals, then small letters, that render like a Latin letter.
        "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T",
        "У": "Y", "Х": "X", "І": "I", "Ј": "J", "Ѕ": "S", "Ԁ": "D", "Ԛ": "Q", "Ԝ": "W",
        "а": "a", "в": "b", "е": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t",
        "у": "y", "х": "x", "і": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w", "һ": "h", "ѵ": "v",
        "ь": "b", "п": "n", "и": "u", "ɡ": "g", "ᴜ": "u", "ᴠ": "v",
        # Armenian small letters.
        "ո": "n", "ս": "u", "օ": "o", "հ": "h", "ց": "g",
        # Greek capitals, then small letters.
        "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O",
        "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
        "α": "a", "β": "b", "γ": "y", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
        "τ": "t", "υ": "u", "χ": "x", "ω": "w", "ς": "c",
    }
)  # fmt: skip
"""Look-alike letters -> the Latin letter they pass for (capitals are mapped before case is folded)."""

LETTERS = str.maketrans({"ø": "o", "đ": "d", "ł": "l", "ı": "i", "æ": "ae", "œ": "oe", "þ": "th", "ħ": "h"})
"""Latin letters with a stroke or ligatures that NFKD leaves whole."""

DIGITS = {"0": "o", "3": "e", "4": "a", "5": "s", "7": "t"}
"""Digits read as the letter they look like; `1` is read both as i and as l (`ONE`)."""

ONE = ("i", "l")

SYMBOLS = {"@": "a", "$": "s", "!": "i", "|": "l"}
"""Symbols read as letters (see the module docstring for when)."""

SYMBOL_MODES = ("before-letter", "always", "never")

_DROPPED = frozenset({"Mn", "Me", "Cf"})  # combining marks, enclosing marks, zero-width and other format characters


def fold(text: str) -> str:
    """Character-level disguises undone: compatibility forms, look-alikes, case, accents, zero-width characters."""
    text = unicodedata.normalize("NFKC", text).translate(HOMOGLYPHS).casefold()
    text = "".join(ch for ch in unicodedata.normalize("NFKD", text) if unicodedata.category(ch) not in _DROPPED)
    return text.translate(HOMOGLYPHS).translate(LETTERS)


def read_as_letters(folded: str, one: str, symbols: str) -> str:
    """One reading of digits and symbols in folded text: `1` -> `one`; symbols per `symbols` (a SYMBOL_MODES name)."""
    out = []
    last = len(folded) - 1
    for i, ch in enumerate(folded):
        if ch == "1":
            out.append(one)
        elif ch in DIGITS:
            out.append(DIGITS[ch])
        elif ch in SYMBOLS:
            after = folded[i + 1] if i < last else ""
            as_letter = symbols == "always" or (symbols == "before-letter" and (after.isalnum() or after in SYMBOLS))
            out.append(SYMBOLS[ch] if as_letter else " ")
        else:
            out.append(ch)
    return "".join(out)


def views(text: str, *, symbol_modes: tuple[str, ...] = SYMBOL_MODES) -> list[str]:
    """The distinct readings of `text` after `fold` (one when it has no `1` and no symbol; at most six)."""
    folded = fold(text)
    ones = ONE if "1" in folded else ONE[:1]
    modes = symbol_modes if any(ch in SYMBOLS for ch in folded) else symbol_modes[:1]
    found: dict[str, None] = {}
    for one in ones:
        for mode in modes:
            found.setdefault(read_as_letters(folded, one, mode))
    return list(found)


@dataclass(frozen=True)
class Token:
    """A run of letters and digits, and the index of the whitespace-separated word it is part of."""

    text: str
    word: int


def tokens(view: str) -> list[Token]:
    """The letter/digit runs of a view in order: `"n.u.d.e art"` -> n, u, d, e (word 0), art (word 1)."""
    return list(_tokens(view))


def _tokens(view: str) -> Iterator[Token]:
    word, current, in_word = 0, [], False
    for ch in view:
        if ch.isalnum():
            current.append(ch)
            in_word = True
            continue
        if current:
            yield Token("".join(current), word)
            current = []
        if ch.isspace() and in_word:
            word += 1
            in_word = False
        elif not ch.isspace():
            in_word = True  # punctuation is inside a word: `n.u` is one word
    if current:
        yield Token("".join(current), word)
