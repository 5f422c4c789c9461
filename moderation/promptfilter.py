"""The prompt filter: blocked words and phrases matched on normalised text, in time linear in the text.

    prompt_filter = Filter.from_lists(block=["nude", "white power"], allow=["al gore"])
    prompt_filter.check("a N.U.D.E statue")  # -> Match(entry="nude", where="text")

Pure. An entry is a word or a phrase, never a pattern; entries and text go through `moderation.normalize` alike
(Unicode forms, TR39 look-alikes, accents, invisible characters, case, leet, repeated letters). The rules:
1. word forms: an entry matches its inflections (`SUFFIXES`: `rape` -> raped, raping, rapist; `nazi` -> nazism;
   `suicide` -> suicidal; `penis` -> penises) and the slang spellings `SLANG` names for it (`seggs`, `pron`). A
   phrase entry inflects its last word. An inflection that is itself an ordinary word (`wordforms.ordinary_words`, e.g.
   `assist` for an entry `ass`) is not read as the entry.
2. whole words: a word matches when it is such a form, read with punctuation inside it removed (`n.u.d.e`) and with
   it read as a space (`cat,nude`). A word that is an ordinary word (`wordforms.ordinary_words`: Essex, therapist,
   grape, sextant, cocktail) never matches otherwise (the Scunthorpe problem).
3. glued compounds: a word that is not an ordinary word matches when it is a form glued to ordinary words, digits or
   other forms on either side (`nudewoman`, `hotsex`, `nude8k`, `porn2`); `sextant` (sex + "tant") does not. A word
   of more than MAX_GLUED_CHARS letters matches when it holds any form at all.
4. one space bridged: two neighbouring words that together are a form match, unless both are ordinary words
   (`nud e`, `p orn` match; `pen is` does not).
5. spelled out: a run of two or more single letters (`n u d e`, `N.U.D.E`), alone or with the word on either side
   (`nu d e`), matches only when those letters form a listed word on their own, by rules 1-3: `G R A P E` and
   `T H E R A P I S T` are ordinary words and pass.
6. the allow list: a match inside an allow-list match (`al gore`, `suicide doors`, `rapeseed`) is ignored.
Every view is first scanned whole by one Aho-Corasick automaton (pyahocorasick, C) for any form glued anywhere;
text where none occurs (almost every prompt) is passed without looking at its words. The word-level rules then
look at each word and pair once (results cached within a check), so the work is linear in the text;
`Filter.check_counted` reports it.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import ahocorasick

import moderation.normalize as normalize
from core.spec import JobSpec
from moderation.listfile import checked, default_lists
from moderation.wordforms import (
    PIECES,
    SLANG,
    SUFFIX_KEYS,
    entry_forms,
    form_ends,
    inflections,
    ordinary_words,
)

MAX_GLUED_CHARS = 64
"""Longest word read as a compound of ordinary words (rule 3); a longer one matches any form it holds."""

MAX_WORD_CHARS = 24
"""Longest ordinary word tried when splitting a compound."""


@dataclass(frozen=True)
class Match:
    """Which block-list entry matched (as written in the list) and where: never shown to the member who typed it."""

    entry: str
    where: str = "text"


class Filter:
    """A guild's compiled block and allow lists. Build it with `from_lists`; `check` is safe to call from anywhere."""

    def __init__(self, entries: Sequence[str]) -> None:
        self._entries = entries  # as written in the lists
        # Collapsed stem -> (its runs, entry index, whether it is slang for the entry): each entry as written, and
        # its slang. Inflections are found from these by `_stems_of` (stripping SUFFIXES), not stored one by one.
        self._blocked: dict[str, list[tuple[tuple[int, ...] | None, int, bool]]] = {}
        self._allowed: dict[str, list[tuple[tuple[int, ...] | None, int, bool]]] = {}
        self._ordinary: dict[str, list[tuple[int, ...] | None]] = {}  # allowed as written, not inflected
        self._glued = ahocorasick.Automaton()  # collapsed block stems, and forms that do not start with theirs
        self._phrases = ahocorasick.Automaton()  # " a b " over a view's words: (entry, words, allowed, length)
        self._any_phrase = False
        self._short: set[str] = set()  # the first letter run of each stem of one or two letters once collapsed

    @classmethod
    def from_lists(cls, block: Iterable[str], allow: Iterable[str] = (), ordinary: Iterable[str] = ()) -> Filter:
        """Compile the lists (a word or phrase in both, however spelled, counts as allowed). `ordinary` words are
        allowed as they are written and nothing else (a listed word that is an ordinary word in a language the
        guild speaks: `sex` alone in Swedish; `sexy` and `hotsex` stay blocked).

        Raises:
            AdminInputError: a list holds more than MAX_ENTRIES entries, an entry is longer than MAX_ENTRY_CHARS, or
                one normalises to fewer than MIN_ENTRY_LETTERS letters; the message quotes the entry.
        """
        allowed, blocked = checked(allow, "allow"), checked(block, "block")
        ordinary_words()  # loaded once per process, here rather than in the first check
        compiled = cls([*allowed, *blocked])
        for index, entry in enumerate(compiled._entries):
            compiled._add(entry, index, allow=index < len(allowed))
        for word in checked(ordinary, "ordinary word"):
            for pieces in entry_forms(word):
                key, runs = normalize.collapse_runs("".join(pieces))
                compiled._ordinary.setdefault(key, []).append(runs)
        for stems in compiled._blocked.values():
            stems.sort(key=lambda stem: stem[2])  # an entry as written before another entry's slang
        for automaton in (compiled._glued, compiled._phrases):
            if len(automaton):
                automaton.make_automaton()
        return compiled

    def _add(self, entry: str, index: int, *, allow: bool) -> None:
        readings = entry_forms(entry)
        stems = {"".join(pieces): False for pieces in readings}
        for pieces in readings:
            if len(pieces) > 1:
                for last in inflections(pieces[-1]):
                    phrase = " " + " ".join(normalize.collapse(p) for p in (*pieces[:-1], last)) + " "
                    if allow or phrase not in self._phrases:
                        self._phrases.add_word(phrase, (index, len(pieces), allow, len(phrase)))
                        self._any_phrase = True
            else:
                stems.update((slang, True) for slang, word in SLANG.items() if word == pieces[0])
                if allow:  # an allowed word is also a phrase: it covers the words of a longer match it is in
                    phrase = " " + normalize.collapse(pieces[0]) + " "
                    self._phrases.add_word(phrase, (index, 1, True, len(phrase)))
                    self._any_phrase = True
        for stem, slang in stems.items():
            key, runs = normalize.collapse_runs(stem)
            if allow:
                self._allowed.setdefault(key, []).append((runs, index, slang))
                continue
            if key in self._allowed:
                continue
            self._blocked.setdefault(key, []).append((runs, index, slang))
            if len(key) <= 2:  # `kkk`: found by its first run, not by every k in the text
                self._short.add(key[0] * (runs[0] if runs else 1))
                continue
            self._glued.add_word(key, key)
            for form in inflections(stem):  # the forms the stem is not inside (rape -> raping), for the scan
                form_key = normalize.collapse(form)
                if not form_key.startswith(key) and form_key not in self._glued:
                    self._glued.add_word(form_key, form_key)

    def _stems_of(
        self, table: Mapping[str, list[tuple[tuple[int, ...] | None, int, bool]]], key: str,
        runs: tuple[int, ...] | None,
    ) -> Iterable[tuple[int, bool]]:
        """(entry index, whether inflected or slang) for each stem in `table` that collapsed `key` (with `runs`) is a
        form of: the stem itself, or the stem with one of SUFFIXES (rule 1)."""
        for stem_runs, entry, slang in table.get(key, ()):
            if _runs_cover(runs, stem_runs):
                yield entry, slang
        for suffix, vowel in SUFFIX_KEYS:
            if len(key) <= len(suffix) + 1 or not key.endswith(suffix):
                continue
            stem = key[: -len(suffix)]
            options = [stem]
            if vowel:
                options.append(stem + "e")  # rape -> raping
                if suffix[0] == "i":
                    options.append(stem + "i")  # nazi -> nazism
                elif stem.endswith("i"):
                    options.append(stem[:-1] + "y")  # gory -> gories
            for option in options:
                for stem_runs, entry, _ in table.get(option, ()):
                    shared = len(stem) if option.startswith(stem) else len(stem) - 1
                    if _runs_cover(None if runs is None else runs[:shared],
                                   None if stem_runs is None else stem_runs[:shared]):
                        yield entry, True

    def check(self, text: str) -> Match | None:
        """The first block-list entry the text matches and no allow-list entry covers, or None."""
        return self.check_counted(text)[0]

    def check_counted(self, text: str) -> tuple[Match | None, int]:
        """`check`, and the matcher's work in steps (linear in the length of the text; for tests and benchmarks)."""
        work = [0]
        if not len(self._glued) and not self._short:
            return None, 0
        for view in normalize.views(text):
            work[0] += len(view)
            joined = normalize.joined(view)
            if (not len(self._glued) or next(self._glued.iter(normalize.collapse(joined)), None) is None) and \
                    not any(run in joined for run in self._short):
                continue  # no form anywhere, however the words are split or joined
            hit = self._check_view(view, work)
            if hit is not None:
                return Match(self._entries[hit]), work[0]
        return None, work[0]

    def _check_view(self, view: str, work: list[int]) -> int | None:
        """The entry of the first block match in one view that no allow match covers (rules 2-6)."""
        pieces: list[str] = []
        starts_word: list[bool] = []  # whether pieces[i] starts a word (whitespace before it)
        for word in view.split():
            if word.isalnum():
                pieces.append(word)
                starts_word.append(True)
            else:
                found = PIECES.findall(word)
                pieces += found
                starts_word += [True] + [False] * (len(found) - 1) if found else []
        count = len(pieces)
        work[0] += count
        reach: list[int] | None = None  # reach[i]: the last piece an allow match starting at or before i covers
        phrase_hits: list[tuple[int, int, int]] = []
        if self._any_phrase and count:
            stream = normalize.collapse(" " + " ".join(pieces) + " ")
            starts: list[int] | None = None
            for end, (entry, size, allow, length) in self._phrases.iter(stream):
                if starts is None:
                    starts = [0, *itertools.accumulate(len(piece) + 1 for piece in stream[1:-1].split(" "))]
                first = bisect.bisect_left(starts, end - length + 1)
                work[0] += size
                if allow:
                    if reach is None:
                        reach = [-1] * count
                    reach[first] = max(reach[first], first + size - 1)
                else:
                    phrase_hits.append((entry, first, first + size - 1))
            if reach is not None:
                reach = list(itertools.accumulate(reach, max))
        for entry, first, last in phrase_hits:
            if reach is None or reach[first] < last:
                return entry
        cache: tuple[dict[str, int | None], dict[str, int | None]] = ({}, {})  # rule 3 not applied, applied
        for candidate, first, last, glued in _candidates(pieces, starts_word):
            known = cache[glued]
            if candidate in known:
                entry = known[candidate]
            else:
                work[0] += len(candidate)
                entry = known[candidate] = self._word_hit(candidate, glued=glued)
            if entry is not None and (reach is None or reach[first] < last):
                return entry
        return None

    def _word_hit(self, word: str, *, glued: bool) -> int | None:
        """The block entry `word` is a form of (rules 1-3), or None."""
        words, collapsed, _ = ordinary_words()
        key, word_runs = normalize.collapse_runs(word)
        if any(_runs_cover(word_runs, runs) for runs in self._ordinary.get(key, ())) or \
                next(iter(self._stems_of(self._allowed, key, word_runs)), None) is not None:
            return None
        for entry, inflected in self._stems_of(self._blocked, key, word_runs):
            if not (inflected and word in words):
                return entry
        if key in collapsed or not glued or len(key) < 2 or not len(self._glued):
            return None
        long = len(key) > MAX_GLUED_CHARS
        before = after = None
        for end, form in self._glued.iter(key):
            start = end + 1 - len(form)
            span_runs = None if word_runs is None else word_runs[start:end + 1]
            for entry, _ in self._stems_of(self._blocked, form, span_runs):
                if long:
                    return entry
                if before is None or after is None:
                    before, after = self._splits(key)
                if before[start] and any(after[stop] for stop in form_ends(key, end + 1)):
                    return entry
        return None

    def _splits(self, key: str) -> tuple[list[bool], list[bool]]:
        """(whether key[:i] splits into ordinary words, digits and forms, for each i; whether key[i:] does)."""
        size = len(key)
        before = [True] + [False] * size
        after = [False] * size + [True]
        for i in range(1, size + 1):
            before[i] = any(before[j] and self._unit(key[j:i]) for j in range(max(0, i - MAX_WORD_CHARS), i))
        for i in range(size - 1, -1, -1):
            after[i] = any(after[j] and self._unit(key[i:j]) for j in range(i + 1, min(size, i + MAX_WORD_CHARS) + 1))
        return before, after

    def _unit(self, part: str) -> bool:
        """Whether a compound may be split off `part`: an ordinary word, a number (`8k` too), or a form."""
        return part in ordinary_words()[2] or part.isdigit() or (part[:-1].isdigit() and len(part) > 1) or \
            next(iter(self._stems_of(self._blocked, part, None)), None) is not None


def _runs_cover(found: Sequence[int] | None, required: Sequence[int] | None) -> bool:
    """Whether each run of a letter in the text is at least as long as the form's (`boob` needs two o's); the two
    have the same collapsed letters, and None stands for runs all one letter long."""
    if required is None:
        return True
    return found is not None and all(f >= r for f, r in zip(found, required, strict=True))


def _candidates(pieces: Sequence[str], starts_word: Sequence[bool]) -> Iterable[tuple[str, int, int, bool]]:
    """(text, first piece, last piece, whether rule 3 applies) for every word-level reading of a view (rules 2-5),
    in the order of the text, so that a match early in a long text is found without reading the rest."""
    words = ordinary_words()[0]
    count = len(pieces)
    run_end = -1
    for i, piece in enumerate(pieces):
        ends_word = i + 1 == count or starts_word[i + 1]
        if starts_word[i] and not ends_word:  # a word of several pieces, punctuation inside it removed
            last = i + 1
            while last + 1 < count and not starts_word[last + 1]:
                last += 1
            yield "".join(pieces[i:last + 1]), i, last, False
        yield piece, i, i, True  # the piece: punctuation read as a space
        if len(piece) == 1 and i > run_end:  # a run of single letters, alone and with the piece either side
            j = i
            while j < count and len(pieces[j]) == 1:
                j += 1
            run_end = j - 1
            if j - i >= 2:
                run = "".join(pieces[i:j])
                yield run, i, j - 1, True
                if i > 0:
                    yield pieces[i - 1] + run, i - 1, j - 1, True
                if j < count:
                    yield run + pieces[j], i, j, True
                if i > 0 and j < count:
                    yield pieces[i - 1] + run + pieces[j], i - 1, j, True
        if ends_word and i + 1 < count:  # one space bridged, unless both sides are ordinary words
            right = pieces[i + 1]
            if not (piece in words and right in words):
                yield piece + right, i, i + 1, False


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


def warm_up() -> None:
    """Load the filter's tables and compile the default lists once (~0.5 s): a process calls this at start, so
    that the first prompt it screens, before an acknowledgement, does not pay for it."""
    lists = default_lists()
    Filter.from_lists(lists.blocked(mature_allowed=False), lists.allow)
