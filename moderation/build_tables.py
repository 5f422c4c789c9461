"""Build the prompt filter's shipped data tables (run by hand when the sources change; tests never run it).

    pip install -e ".[tables]" && python -m moderation.build_tables

Writes, beside this file:
- `fold_table.txt`: one line per character the filter rewrites, `HEX<TAB>REPLACEMENT` (empty: removed). Sources, in
  order of precedence: `LOOKALIKES` below (kept from the first pass and its tests), invisible characters and
  punctuation-like modifier letters, Latin letters named "LATIN ... LETTER X WITH ..." / small capitals / negative
  circled and squared letters / regional indicators (from `unicodedata` names), NFKD with marks dropped, Unicode
  TR39 confusables (as shipped by `confusable-homoglyphs`, followed through their look-alike groups to an ASCII
  letter or digit), then `anyascii` for the remaining Latin letters.
- `words.txt`: the ordinary-word dictionary (most frequent English words from `wordfreq`, minus the forms of the
  shipped default entries, minus `NOT_ORDINARY`): a word in it is never read as a compound that hides a listed word.
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from collections import deque
from pathlib import Path

HERE = Path(__file__).resolve().parent

LOOKALIKES = {
    # Cyrillic capitals, then small letters, that render like a Latin letter.
    "А": "a", "В": "b", "Е": "e", "К": "k", "М": "m", "Н": "h", "О": "o", "Р": "p", "С": "c", "Т": "t",
    "У": "y", "Х": "x", "І": "i", "Ј": "j", "Ѕ": "s", "Ԁ": "d", "Ԛ": "q", "Ԝ": "w",
    "а": "a", "в": "b", "е": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t",
    "у": "y", "х": "x", "і": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w", "һ": "h", "ѵ": "v",
    "ь": "b", "п": "n", "и": "u", "ɡ": "g", "ᴜ": "u", "ᴠ": "v",
    # Armenian small letters.
    "ո": "n", "ս": "u", "օ": "o", "հ": "h", "ց": "g",
    # Greek capitals, then small letters.
    "Α": "a", "Β": "b", "Ε": "e", "Ζ": "z", "Η": "h", "Ι": "i", "Κ": "k", "Μ": "m", "Ν": "n", "Ο": "o",
    "Ρ": "p", "Τ": "t", "Υ": "y", "Χ": "x",
    "α": "a", "β": "b", "γ": "y", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x", "ω": "w", "ς": "c",
    # Latin letters NFKD leaves whole.
    "ø": "o", "đ": "d", "ł": "l", "ı": "i", "æ": "ae", "œ": "oe", "þ": "th", "ħ": "h", "ß": "ss",
    # Canadian syllabics and Coptic letters that "fancy text" generators use for Latin ones (TR39 links them to
    # no ASCII letter).
    "ᗩ": "a", "ᗷ": "b", "ᑕ": "c", "ᗪ": "d", "ᗴ": "e", "ᕮ": "e", "ᖴ": "f", "ᕼ": "h", "ᒍ": "j", "ᒪ": "l",
    "ᗰ": "m", "ᑎ": "n", "ᑭ": "p", "ᑫ": "q", "ᖇ": "r", "ᔕ": "s", "ᑌ": "u", "ᐯ": "v", "ᗯ": "w", "᙭": "x",
    "ⲁ": "a", "ⲃ": "b", "ⲉ": "e", "ⲏ": "h", "ⲓ": "i", "ⲕ": "k", "ⲙ": "m", "ⲛ": "n", "ⲟ": "o", "ⲣ": "p",
    "ⲥ": "c", "ⲧ": "t", "ⲩ": "y", "ⲭ": "x", "ⲱ": "w",
}  # fmt: skip

INVISIBLE_LETTERS = "\u3164\uffa0\u115f\u1160\u2800\u180e"
"""Letters that render as nothing (Hangul fillers, braille blank, Mongolian vowel separator): removed."""

SEPARATOR_LETTERS = "\u02bc\u02c8\u02bb\u02bd\ua78c\ua78b\u0640\u30fc\u01c0\u01c1\u01c2\u01c3\u07fa\uff70\u2e2f"
"""Letters that look like punctuation (apostrophes, stress marks, tatweel, long-vowel mark, clicks): read as '.'."""

_NAMED = re.compile(
    r"(?:LATIN|REGIONAL INDICATOR SYMBOL|NEGATIVE CIRCLED LATIN|NEGATIVE SQUARED LATIN|SQUARED LATIN|CIRCLED LATIN)"
    r" (?:CAPITAL |SMALL )?LETTER (?:SMALL CAPITAL |DOTLESS |CAPITAL )?([A-Z])(?: WITH .*)?"
)


def fold_of(ch: str, groups: dict[str, list[str]]) -> str | None:
    """What `ch` is rewritten to ("" = removed), or None when it stays as it is."""
    if ch in LOOKALIKES:
        return LOOKALIKES[ch]
    if ch in INVISIBLE_LETTERS:
        return ""
    if ch in SEPARATOR_LETTERS:
        return "."
    category = unicodedata.category(ch)
    if category in ("Mn", "Me", "Cf"):
        return ""
    if "A" <= ch <= "Z":
        return ch.lower()
    if ch.isascii():
        return None
    name = unicodedata.name(ch, "")
    named = _NAMED.fullmatch(name)
    if named:
        return named.group(1).lower()
    stripped = "".join(c for c in unicodedata.normalize("NFKD", ch) if unicodedata.category(c) not in ("Mn", "Me"))
    if stripped != ch and stripped.isascii() and stripped.isalnum():
        return stripped.lower()
    ascii_like = _confusable(ch, groups)
    if ascii_like:
        return ascii_like
    if name.startswith("LATIN") and category.startswith("L"):
        from anyascii import anyascii

        translit = anyascii(ch)
        if translit.isascii() and translit.isalpha():
            return translit.lower()
    if category == "Lm" and not stripped.isalnum():
        return "."
    return None


def _confusable(ch: str, groups: dict[str, list[str]]) -> str:
    """The ASCII letter or digit `ch` is confusable with, followed through its TR39 look-alike group ("" if none)."""
    seen, queue = {ch}, deque([ch])
    found: list[str] = []
    while queue:
        current = queue.popleft()
        for other in groups.get(current, ()):
            if len(other) == 1 and other.isascii() and other.isalnum():
                found.append(other)
            elif other not in seen and len(other) == 1:
                seen.add(other)
                queue.append(other)
    if not found:
        return ""
    found.sort(key=lambda c: (not c.islower(), not c.isupper(), c))  # a small letter first, then a capital
    return found[0].lower()


def fold_table() -> dict[int, str]:
    """Every character's fold, closed under itself: translating once is the whole of `moderation.normalize.fold`.

    Per character: `fold_of`; else its compatibility decomposition (NFKD) with marks dropped; else its case fold.
    Dropping the marks makes this per-character table equal to NFKC then folding for matching purposes (NFKC's
    composition only builds the accented letters whose accents are dropped anyway). Expansions that hold no ASCII
    letter or digit (an Arabic ligature's 18 letters, a Hangul syllable's jamo) are left out: they are never part
    of a listed word, and expanding them is what made such text slow.
    """
    import confusable_homoglyphs

    data = json.loads((Path(confusable_homoglyphs.__file__).parent / "confusables.json").read_text("utf-8"))
    groups = {char: [entry["c"] for entry in entries] for char, entries in data.items()}
    table: dict[str, str] = {}
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        ch = chr(cp)
        if unicodedata.category(ch) == "Cn":
            continue
        folded = fold_of(ch, groups)
        if folded is None:
            decomposed = unicodedata.normalize("NFKD", ch)
            if decomposed != ch:
                folded = "".join(c for c in decomposed if unicodedata.category(c) not in ("Mn", "Me"))
            elif ch.casefold() != ch:
                folded = ch.casefold()
        if folded is not None and folded != ch:
            table[ch] = folded
    for _ in range(4):  # close it: a replacement's own characters are folded too
        table = {ch: "".join(table.get(c, c) for c in text) for ch, text in table.items()}
    assert all("".join(table.get(c, c) for c in text) == text for text in table.values()), "fold table not closed"
    return {ord(ch): text for ch, text in table.items()
            if text != ch and (len(text) <= 1 or any(c.isascii() and c.isalnum() for c in text))}


NOT_ORDINARY = {
    # Compounds of a default entry that are frequent enough to be in the word list: read as the compound.
    "pornstar", "pornstars", "pornhub", "xxxporn", "cybersex", "sexting", "sexcam", "sexbot", "sextape",
    "hentaihaven", "bdsmlr", "nudist", "nudists", "pornographer", "pornographers", "nazis", "rapist", "rapists",
    "sexe", "sexo", "sexx", "porno", "pornos", "sexdoll", "camsex", "gangrape", "analsex", "phonesex",
}  # fmt: skip

WORD_COUNT = 100000
"""Most frequent English words kept as the ordinary-word dictionary."""


def words(forms: set[str]) -> list[str]:
    from wordfreq import top_n_list

    kept = []
    for word in top_n_list("en", WORD_COUNT):
        if not word.isascii() or not word.isalpha() or word in forms or word in NOT_ORDINARY:
            continue
        if len(word) == 1 and word not in ("a", "i"):
            continue
        kept.append(word)
    return sorted(set(kept))


def main() -> int:
    table = fold_table()
    lines = [f"{cp:04X}\t{text}" for cp, text in sorted(table.items())]
    (HERE / "fold_table.txt").write_text(
        "# Generated by `python -m moderation.build_tables`: character (hex) TAB replacement (empty: removed).\n"
        + "\n".join(lines) + "\n", encoding="utf-8")
    from moderation import listfile, wordforms

    lists = listfile.read_list_file()
    forms = {form for entry in (*lists.block, *lists.mature) for form in wordforms.word_forms(entry)}
    kept = words(forms)
    (HERE / "words.txt").write_text(
        "# Generated by `python -m moderation.build_tables`: ordinary English words (wordfreq), one a line.\n"
        + "\n".join(kept) + "\n", encoding="utf-8")
    print(f"fold_table.txt: {len(table)} characters; words.txt: {len(kept)} words", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
