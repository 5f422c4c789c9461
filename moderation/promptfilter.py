"""The prompt filter: blocked words and phrases matched on normalised text, in time linear in the text.

    prompt_filter = Filter.from_lists(block=["nude", "white power"], allow=["al gore"])
    prompt_filter.check("a N.U.D.E statue")  # -> Match(entry="nude", where="text")

Pure. An entry is a word or a phrase, never a pattern: both entries and text go through `moderation.normalize` (case,
Unicode forms, look-alikes, accents, zero-width characters, digits and symbols for letters), and then
1. whole words: an entry matches only whole words of the text, once with punctuation inside a word removed
   (`n.u.d.e`, `n-u-d-e` -> nude) and once with it read as a space (`cat,nude` -> cat nude). A trailing `s` is
   allowed (nudes). So "Essex", "Scunthorpe", "cocktail", "grape", "therapist", "assassin" never match sex, cunt,
   cock, rape, rapist, ass;
2. split letters: two or more one-character tokens in a row (`n u d e`) are joined, together with the token on
   either side (`nu d e`), and an entry matches anywhere inside that, as long as the match covers at least two of
   the joined single letters;
3. the allow list: a block match inside an allow-list match in the same text (`sex pistols`, `e s s e x`) is ignored.
Matching is one Aho-Corasick automaton per form (entries as whole words, entries as letters), so the work is linear
in the text whatever the entries are; `Filter.check_counted` reports it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import moderation.normalize as normalize
from core.errors import AdminInputError
from core.spec import JobSpec

MAX_ENTRIES = 2000
"""Most entries one block or allow list may hold."""

MAX_ENTRY_CHARS = 100
"""Longest entry, in characters as typed."""

MIN_ENTRY_LETTERS = 2
"""Shortest entry after normalisation: a single letter would block ordinary text."""

DEFAULT_LIST_FILE = Path(__file__).resolve().parent / "default_list.txt"
"""The documented default block and allow lists every guild starts from."""

@dataclass(frozen=True)
class Match:
    """Which block-list entry matched (as written in the list) and where: never shown to the member who typed it."""

    entry: str
    where: str = "text"


@dataclass(frozen=True)
class _Entry:
    text: str  # as written in the list
    allow: bool


class _Automaton:
    """Aho-Corasick over characters: every occurrence of every pattern in one pass over the text."""

    def __init__(self, patterns: Mapping[str, int]) -> None:
        self.goto: list[dict[str, int]] = [{}]
        self.fail: list[int] = [0]
        self.out: list[list[tuple[int, int]]] = [[]]  # node -> (pattern length, entry index) ending there
        for pattern, entry in patterns.items():
            node = 0
            for ch in pattern:
                if ch not in self.goto[node]:
                    self.goto.append({})
                    self.fail.append(0)
                    self.out.append([])
                    self.goto[node][ch] = len(self.goto) - 1
                node = self.goto[node][ch]
            self.out[node].append((len(pattern), entry))
        # Breadth first: a node's failure link is the longest proper suffix of its path that is also a path.
        queue = deque(self.goto[0].values())
        while queue:
            node = queue.popleft()
            for ch, child in self.goto[node].items():
                queue.append(child)
                link = self.fail[node]
                while link and ch not in self.goto[link]:
                    link = self.fail[link]
                found = self.goto[link].get(ch, 0)
                self.fail[child] = found if found != child else 0
                self.out[child] = self.out[child] + self.out[self.fail[child]]

    def scan(self, text: str, work: list[int]) -> list[tuple[int, int, int]]:
        """(start, end, entry index) of every occurrence; adds the steps taken to `work[0]`."""
        found = []
        node = steps = 0
        for i, ch in enumerate(text):
            while node and ch not in self.goto[node]:
                node = self.fail[node]
                steps += 1
            node = self.goto[node].get(ch, 0)
            steps += 1 + len(self.out[node])
            for length, entry in self.out[node]:
                found.append((i + 1 - length, i + 1, entry))
        work[0] += steps
        return found


class Filter:
    """A guild's compiled block and allow lists. Build it with `from_lists`; `check` is safe to call from anywhere."""

    def __init__(self, entries: Sequence[_Entry], words: _Automaton, letters: _Automaton) -> None:
        self._entries = entries
        self._words = words
        self._letters = letters

    @classmethod
    def from_lists(cls, block: Iterable[str], allow: Iterable[str] = ()) -> Filter:
        """Compile the lists (a word or phrase in both, however spelled, counts as allowed).

        Raises:
            AdminInputError: a list holds more than MAX_ENTRIES entries, an entry is longer than MAX_ENTRY_CHARS, or
                one normalises to fewer than MIN_ENTRY_LETTERS letters; the message quotes the entry.
        """
        # Allow entries first: a pattern keeps the first entry that produced it, so a form in both lists is allowed.
        entries = [_Entry(text, True) for text in _checked(allow, "allow")]
        entries += [_Entry(text, False) for text in _checked(block, "block")]
        words: dict[str, int] = {}
        letters: dict[str, int] = {}
        for index, entry in enumerate(entries):
            for parts in entry_forms(entry.text):
                joined = "".join(parts)
                for form in {" ".join(parts), joined}:
                    words.setdefault(f" {form} ", index)
                    words.setdefault(f" {form}s ", index)
                letters.setdefault(joined, index)
        return cls(entries, _Automaton(words), _Automaton(letters))

    def check(self, text: str) -> Match | None:
        """The first block-list entry the text matches and no allow-list entry covers, or None."""
        return self.check_counted(text)[0]

    def check_counted(self, text: str) -> tuple[Match | None, int]:
        """`check`, and the matcher's work in steps (linear in the length of the text; for tests and benchmarks)."""
        work = [0]
        for view in normalize.views(text):
            tokens = normalize.tokens(view)
            work[0] += len(view) + len(tokens)
            for stream, runs in _streams(tokens):
                automaton = self._letters if runs else self._words
                hit = self._first_blocked(automaton.scan(stream, work), len(stream), runs)
                if hit is not None:
                    return Match(self._entries[hit].text), work[0]
        return None, work[0]

    def _first_blocked(self, found: list[tuple[int, int, int]], size: int, runs: list[tuple[int, int]]) -> int | None:
        """The entry of the first block match that no allow match contains (and, in a run, covers two letters)."""
        reach = [0] * (size + 1)  # reach[i]: the furthest end of an allow match starting at or before i
        for start, end, entry in found:
            if self._entries[entry].allow:
                reach[start] = max(reach[start], end)
        for i in range(1, size + 1):
            reach[i] = max(reach[i], reach[i - 1])
        for start, end, entry in found:
            if self._entries[entry].allow or reach[start] >= end:
                continue
            if runs and not any(min(end, run_end) - max(start, run_start) >= 2 for run_start, run_end in runs):
                continue
            return entry
        return None


def entry_forms(entry: str) -> list[tuple[str, ...]]:
    """The token sequences an entry stands for (one per reading of its digits; symbols in it are letters)."""
    forms: dict[tuple[str, ...], None] = {}
    for view in normalize.views(entry.strip(), symbol_modes=("always",)):
        forms.setdefault(tuple(token.text for token in normalize.tokens(view)))
    return list(forms)


SAVED_DEFAULT = "saved default"
"""Start of `Match.where` when the match is in a saved /settings default ("saved default model")."""


def check_spec(prompt_filter: Filter, specs: Sequence[JobSpec], user_defaults: Mapping[str, str]) -> Match | None:
    """The first match in everything that reaches the model: each job's prompt and `::` parts (so every expansion of
    `{a, b}`) and the member's saved `/settings` defaults. `--no` text is not checked: it removes content."""
    checked: set[str] = set()  # a prompt without `::` is its own one part: scan each text once
    for n, spec in enumerate(specs, start=1):
        texts = [("prompt", spec.prompt)] + [(f"part {i}", part.text) for i, part in enumerate(spec.parts, start=1)]
        for where, text in texts:
            if text in checked:
                continue
            checked.add(text)
            found = prompt_filter.check(text)
            if found is not None:
                return dataclasses.replace(found, where=f"job {n} {where}")
    for name, value in user_defaults.items():
        found = prompt_filter.check(str(value))
        if found is not None:
            return dataclasses.replace(found, where=f"{SAVED_DEFAULT} {name}")
    return None


@dataclass(frozen=True)
class Lists:
    """The entries of a list file: `block` everywhere, `mature` outside age-restricted channels, and `allow`."""

    block: tuple[str, ...] = ()
    mature: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()

    def blocked(self, *, mature_allowed: bool) -> tuple[str, ...]:
        """What is blocked in a channel: `mature` entries too, unless mature content is allowed there."""
        return self.block if mature_allowed else self.block + self.mature


def read_list_file(path: Path = DEFAULT_LIST_FILE) -> Lists:
    """The entries of a list file: one per line, `#` comments, sections `[block]` (the start), `[mature]`, `[allow]`."""
    sections: dict[str, list[str]] = {"[block]": [], "[mature]": [], "[allow]": []}
    target = sections["[block]"]
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].strip()
        if text in sections:
            target = sections[text]
        elif text:
            target.append(text)
    return Lists(*(tuple(entries) for entries in sections.values()))


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


def _checked(entries: Iterable[str], kind: str) -> list[str]:
    found: dict[str, None] = {}
    for count, entry in enumerate(entries, start=1):
        if count > MAX_ENTRIES:
            raise AdminInputError(f"a {kind} list may hold at most {MAX_ENTRIES} entries")
        found.setdefault(check_entry(entry))
    return list(found)


def _streams(tokens: Sequence[normalize.Token]) -> list[tuple[str, list[tuple[int, int]]]]:
    """The strings one view is scanned as: (text, []) for whole words, (text, run spans) for split letters."""
    words: list[list[str]] = []
    last = -1
    for token in tokens:
        if token.word != last:
            words.append([])
            last = token.word
        words[-1].append(token.text)
    joined = " " + " ".join("".join(word) for word in words) + " "
    spaced = " " + " ".join(token.text for token in tokens) + " "
    streams: list[tuple[str, list[tuple[int, int]]]] = [(joined, [])]
    if spaced != joined:
        streams.append((spaced, []))
    # Split letters: each run of >= 2 one-character tokens, with the token either side, as one string.
    pieces: list[str] = []
    spans: list[tuple[int, int]] = []
    i = offset = 0
    while i < len(tokens):
        j = i
        while j < len(tokens) and len(tokens[j].text) == 1:
            j += 1
        if j - i >= 2:
            before = tokens[i - 1].text if i > 0 else ""
            after = tokens[j].text if j < len(tokens) else ""
            spans.append((offset + len(before), offset + len(before) + j - i))
            pieces.append(before + "".join(token.text for token in tokens[i:j]) + after)
            offset += len(pieces[-1]) + 1
        i = max(j, i + 1)
    if pieces:
        streams.append((" ".join(pieces), spans))
    return streams


def _show(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
