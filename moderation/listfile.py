"""The list file format (`default_list.txt`) and what an acceptable entry is.

One entry a line, `#` comments, sections `[block]` (the start), `[mature]`, `[allow]` and `[languages]`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from core.errors import AdminInputError
from moderation.wordforms import entry_forms

MAX_ENTRIES = 2000
"""Most entries one block or allow list may hold."""

MAX_ENTRY_CHARS = 100
"""Longest entry, in characters as typed."""

MIN_ENTRY_LETTERS = 2
"""Shortest entry after normalisation: a single letter would block ordinary text."""

DEFAULT_LIST_FILE = Path(__file__).resolve().parent / "default_list.txt"
"""The documented default block and allow lists every guild starts from."""


@dataclass(frozen=True)
class Lists:
    """The entries of a list file: `block` everywhere, `mature` outside age-restricted channels, `allow`, and
    `languages`: (language code, word) for listed words that are ordinary words in that language."""

    block: tuple[str, ...] = ()
    mature: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    languages: tuple[tuple[str, str], ...] = ()

    def blocked(self, *, mature_allowed: bool) -> tuple[str, ...]:
        """What is blocked in a channel: `mature` entries too, unless mature content is allowed there."""
        return self.block if mature_allowed else self.block + self.mature

    def ordinary_in(self, codes: Iterable[str]) -> tuple[str, ...]:
        """The listed words that are ordinary words in one of these languages (read alone as those words)."""
        wanted = set(codes)
        return tuple(sorted({word for code, word in self.languages if code in wanted}))


def read_list_file(path: Path = DEFAULT_LIST_FILE) -> Lists:
    """The entries of a list file: one per line, `#` comments, sections `[block]` (the start), `[mature]`, `[allow]`
    and `[languages]` (lines `CODE: word`)."""
    sections: dict[str, list[str]] = {"[block]": [], "[mature]": [], "[allow]": [], "[languages]": []}
    target = sections["[block]"]
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].strip()
        if text in sections:
            target = sections[text]
        elif text:
            target.append(text)
    languages = tuple((code.strip(), word.strip()) for code, _, word in
                      (line.partition(":") for line in sections.pop("[languages]")))
    return Lists(tuple(sections["[block]"]), tuple(sections["[mature]"]), tuple(sections["[allow]"]), languages)


@functools.lru_cache(maxsize=2)
def default_lists() -> Lists:
    """The shipped default lists (read once per process)."""
    return read_list_file()


def check_entry(entry: str) -> str:
    """The entry stripped, if it is acceptable.

    Raises:
        AdminInputError: it is longer than MAX_ENTRY_CHARS or normalises to fewer than MIN_ENTRY_LETTERS letters.
    """
    text = " ".join(str(entry).split())
    if len(text) > MAX_ENTRY_CHARS:
        raise AdminInputError(
            f"an entry may be at most {MAX_ENTRY_CHARS} characters long; {_show(text)} is {len(text)}"
        )
    forms = entry_forms(text)
    if not forms or min(len("".join(form)) for form in forms) < MIN_ENTRY_LETTERS:
        raise AdminInputError(
            f"{_show(text)} has fewer than {MIN_ENTRY_LETTERS} letters or digits once spacing, punctuation and "
            "accents are removed: write the word or phrase to block"
        )
    return text


def checked(entries: Iterable[str], kind: str) -> list[str]:
    found: dict[str, None] = {}
    for count, entry in enumerate(entries, start=1):
        if count > MAX_ENTRIES:
            raise AdminInputError(f"a {kind} list may hold at most {MAX_ENTRIES} entries")
        found.setdefault(check_entry(entry))
    return list(found)


def _show(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
