"""The prompt filter: every evasion form is caught, ordinary prompts are not, and bad lists are refused."""

from __future__ import annotations

import pytest

from bench.moderation_prompts import ORDINARY_PROMPTS
from core.errors import AdminInputError
from core.models import ModelRegistry, tiny_model
from core.prompt import parse
from moderation.listfile import MAX_ENTRIES, MAX_ENTRY_CHARS, read_list_file
from moderation.promptfilter import Filter, Match, check_spec

LISTS = read_list_file()
DEFAULT = Filter.from_lists(LISTS.blocked(mature_allowed=False), LISTS.allow)
REGISTRY = ModelRegistry((tiny_model(),))

# (text, the default entry it must match): one row per evasion form.
EVASIONS = [
    ("nude", "nude"),
    ("a NUDE statue", "nude"),  # case
    ("a NuDe statue", "nude"),
    ("ｎｕｄｅ", "nude"),  # full-width (NFKC)
    ("𝐧𝐮𝐝𝐞 portrait", "nude"),  # mathematical bold (NFKC)
    ("ⓝⓤⓓⓔ", "nude"),  # circled letters (NFKC)
    ("ﬁ nude", "nude"),  # a ligature before it
    ("núdé", "nude"),  # accents
    ("nu\u0308\u0301de", "nude"),  # combining marks
    ("n\u200bu\u200cd\u200de", "nude"),  # zero-width space, non-joiner, joiner
    ("nu\u00adde", "nude"),  # soft hyphen
    ("\ufeffnude", "nude"),  # byte order mark
    ("nudе", "nude"),  # Cyrillic е
    ("nսde", "nude"),  # Armenian ս
    ("пude", "nude"),  # Cyrillic п
    ("ΝUDΕ", "nude"),  # Greek capitals Ν and Ε
    ("рοrn", "porn"),  # Cyrillic р, Greek ο
    ("ѕех", "sex"),  # Cyrillic ѕ, е, х
    ("SΕΧ", "sex"),  # Greek capital Epsilon and Chi
    ("n.u.d.e", "nude"),  # punctuation inside a word
    ("n-u-d-e", "nude"),
    ("n_u_d_e", "nude"),
    ("n*u*d*e", "nude"),
    ("n/u/d/e", "nude"),
    ("nu.de", "nude"),
    ("nu-de beach", "nude"),
    ("n u d e", "nude"),  # spacing inside a word
    ("a   n  u  d  e   statue", "nude"),
    ("nu d e", "nude"),
    ("n u de", "nude"),
    ("n. u. d. e.", "nude"),
    ("n\tu\nd e", "nude"),
    ("p0rn", "porn"),  # digits for letters
    ("n1pple", "nipple"),  # 1 for i
    ("5ex", "sex"),
    ("s3x", "sex"),
    ("g0r3", "gore"),
    ("r4p3", "rape"),
    ("swa5tika", "swastika"),
    ("7opless nude", "nude"),
    ("sh07a", "shota"),
    ("lo1i", "loli"),  # 1 for i
    ("se1f harm", "self harm"),  # 1 for l
    ("@nal gore", "gore"),
    ("$ex", "sex"),  # symbols for letters
    ("$ex!", "sex"),
    ("n!pple", "nipple"),
    ("nud3!!!", "nude"),
    ("wow!nude", "nude"),
    ("p0rn0", "porno"),
    ("nudes", "nude"),  # plural
    ("NUDES!", "nude"),
    ("sex,violence", "sex"),  # punctuation between words
    ("white power", "white power"),  # phrases
    ("WHITE-POWER", "white power"),
    ("whitepower", "white power"),
    ("wh1te p0wer", "white power"),
    ("self harm", "self harm"),
    ("selfharm", "self harm"),
    ("s e l f h a r m", "self harm"),
    ("N.\u200bU.D.Ε", "nude"),  # several at once: punctuation, zero-width, Greek
    ("Ｐ０ＲＮ", "porn"),  # full-width digits
    ("a n u d e woman", "nude"),  # split letters next to a one-letter word
    ("s e x", "sex"),
    ("e s s e x s e x", "sex"),  # the allow list covers the first, not the second
    ("{n,m}ude", None),  # permutations are checked on their expansions: see test_check_spec_covers_permutations
]

# Words with a blocked word inside them (the Scunthorpe problem), against a list of the words they contain.
SCUNTHORPE_LIST = ["ass", "cock", "rape", "rapist", "anal", "cunt", "tit", "sex", "nude"]
SCUNTHORPE = [
    "Scunthorpe", "Essex", "Sussex", "Middlesex", "cocktail", "grape", "therapist", "assassin", "class", "analysis",
    "skyscraper", "titanic", "peacock", "hitchcock", "bassoon", "canal", "scrapbook", "drape", "nudibranch",
    "denuded", "sextant", "Wessex", "title", "grapes", "classes", "assassins", "cocktails", "analyst",
]  # fmt: skip


@pytest.mark.parametrize(("text", "entry"), [row for row in EVASIONS if row[1]])
def test_every_evasion_form_is_caught(text: str, entry: str) -> None:
    """Each evasion form of a default entry matches that entry (zero misses)."""
    assert DEFAULT.check(text) == Match(entry)


def test_no_false_positive_on_ordinary_prompts() -> None:
    """None of ~200 ordinary prompts (landscapes, animals, place names, food, art styles) matches the default list."""
    assert len(ORDINARY_PROMPTS) >= 200
    flagged = [(text, DEFAULT.check(text)) for text in ORDINARY_PROMPTS if DEFAULT.check(text) is not None]
    assert flagged == []


@pytest.mark.parametrize("word", SCUNTHORPE)
def test_words_containing_a_blocked_word_pass(word: str) -> None:
    """A word that merely contains a blocked word passes, in any case, plain or in a sentence."""
    scunthorpe = Filter.from_lists(SCUNTHORPE_LIST)
    for text in (word, word.upper(), f"a photo of {word}, 4k", f"{word}-style"):
        assert scunthorpe.check(text) is None, text


def test_separate_words_are_not_joined() -> None:
    """Ordinary word boundaries are not collapsed: "as sex" matches sex (the word), "class act" matches nothing; one
    space is bridged only where a side is no ordinary word (issue 14: "nud e", and so "ana l", match)."""
    scunthorpe = Filter.from_lists(SCUNTHORPE_LIST)
    assert scunthorpe.check("class act, glass ass") == Match("ass")
    assert scunthorpe.check("class act") is None
    assert scunthorpe.check("the rapist") == Match("rapist")
    assert scunthorpe.check("the rap is tough") is None
    assert scunthorpe.check("ana l") == Match("anal")
    assert scunthorpe.check("an analysis") is None


def test_allow_list_covers_a_match_inside_it() -> None:
    """An allow-list entry unblocks the block matches inside it and nothing else."""
    plain = Filter.from_lists(["gore", "sex"])
    allowed = Filter.from_lists(["gore", "sex"], ["al gore", "sex pistols", "essex"])
    assert plain.check("al gore") == Match("gore")
    assert allowed.check("Al Gore on stage") is None
    assert allowed.check("AL G0RE") is None
    assert allowed.check("the sex pistols") is None
    assert allowed.check("e s s e x") is None
    assert allowed.check("al gore and gore") == Match("gore")
    assert allowed.check("sex") == Match("sex")


def test_entry_in_both_lists_is_allowed() -> None:
    """A word both blocked and allowed, however each list spells it, counts as allowed."""
    assert Filter.from_lists(["nude"], ["nude"]).check("nude") is None
    assert Filter.from_lists(["nude"], ["NÚDE"]).check("n u d e") is None


def test_admin_entries_are_normalised_like_text() -> None:
    """An admin's entry with capitals, accents or digits matches all the spellings of the word."""
    custom = Filter.from_lists(["Crème Brûlée", "h4te"])
    assert custom.check("creme brulee") == Match("Crème Brûlée")
    assert custom.check("CREMEBRULEE") == Match("Crème Brûlée")
    assert custom.check("hate speech") == Match("h4te")


def test_empty_lists_block_nothing() -> None:
    """Empty lists are accepted and match nothing."""
    assert Filter.from_lists([], []).check("anything at all") is None


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ([f"word{i}" for i in range(MAX_ENTRIES + 1)], f"at most {MAX_ENTRIES} entries"),
        (["x" * (MAX_ENTRY_CHARS + 1)], f"at most {MAX_ENTRY_CHARS} characters"),
        (["..."], "fewer than 2 letters"),
        (["\u200b\u200b"], "fewer than 2 letters"),
        (["  "], "fewer than 2 letters"),
        (["a"], "fewer than 2 letters"),
    ],
)
def test_bad_lists_are_refused(block: list[str], message: str) -> None:
    """Too many entries, too long an entry, or one that normalises to (almost) nothing: a clear AdminInputError."""
    with pytest.raises(AdminInputError, match=message):
        Filter.from_lists(block)


def test_full_list_of_long_entries_is_accepted() -> None:
    """A list at the caps compiles and still matches."""
    big = Filter.from_lists([f"{'x' * 90} word{i}" for i in range(MAX_ENTRIES)])
    assert big.check(f"{'x' * 90} word1999") is not None
    assert big.check("word1999") is None


def test_check_spec_covers_permutations() -> None:
    """Every expansion of `{a, b}` is checked, not just the text as typed."""
    specs = parse("a {red, nu}de statue", REGISTRY)
    assert check_spec(DEFAULT, specs, {}) == Match("nude", "job 2 prompt")


def test_check_spec_covers_parts() -> None:
    """`::` parts are checked."""
    specs = parse("a statue::2 p0rn::1", REGISTRY)
    found = check_spec(DEFAULT, specs, {})
    assert found is not None and found.entry == "porn"


def test_check_spec_covers_saved_defaults() -> None:
    """The member's saved /settings defaults are checked."""
    specs = parse("a statue", REGISTRY)
    assert check_spec(DEFAULT, specs, {"model": "nsfw-model"}) == Match("nsfw", "saved default model")
    assert check_spec(DEFAULT, specs, {"ar": "16:9"}) is None


def test_check_spec_ignores_negative_prompt() -> None:
    """`--no` terms are not filtered: they remove content."""
    specs = parse("a statue --no nude, gore", REGISTRY)
    assert specs[0].negative_prompt == "nude, gore"
    assert check_spec(DEFAULT, specs, {}) is None


def test_default_list_is_short_and_valid() -> None:
    """The shipped lists compile, stay short, and hold the documented allow entries."""
    assert 20 <= len(LISTS.block + LISTS.mature) <= 100
    assert {"essex", "al gore", "naked mole rat"} <= set(LISTS.allow)
    assert "nude" in LISTS.mature and "gore" in LISTS.block
