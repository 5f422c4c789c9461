"""Properties of the prompt language over generated input: it only ever raises PromptError, its specs are always
renderable, and canonical text parses back to the same spec."""

from __future__ import annotations

import dataclasses
import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import PromptError
from core.models import ModelInfo, ModelRegistry, tiny_model
from core.prompt import ASPECT_TOLERANCE, canonical, image_size, parse
from core.spec import MAX_SEED, JobSpec

BASE = ModelInfo(name="base", source="test/base", aliases=("6",), pixels=512 * 512, multiple=8, steps=25, guidance=7.0)
REGISTRY = ModelRegistry((BASE, tiny_model()))

# Pieces that steer generated text into the parser's corners; mixed with arbitrary text, control characters included.
FRAGMENTS = [
    " --ar ", " --aspect ", " --seed ", " --no ", " --chaos ", " --c ", " --stylize ", " --s ", " --quality ",
    " --q ", " --stop ", " --tile", " --repeat ", " --r ", " --v ", " --version ", " --model ", " --fast", " --relax",
    " --foo ", " \u2014ar ", " \u2013seed ", " --AR ", "--", "\u2014", "\u2013", "-", " - ", "{", "}", "{a, b}",
    "{x, {y, z}}", ",", "\\,", "\\", "::", "::2 ", "::-0.5 ", "::.5", ":", "16:9", "1:4", "4:1", "5:1", "0:0", "7",
    "0", "-1", ".25", ".5", "1.0", "2", "100", "1000", "4294967295", "4294967296", "9" * 30, "6", "tiny", "base",
    " ", "\t", "\n", "\x00", "\x1f", "\u00a0", "cat", "a lighthouse", "rock--n-roll", "10-20",
]  # fmt: skip
texts = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8)), max_size=24).map("".join)
saved_defaults = st.one_of(
    st.just({}),
    st.dictionaries(
        st.sampled_from(["ar", "s", "stylize", "model", "v", "relax", "tile", "q", "no", "bogus"]),
        st.sampled_from(["", "16:9", "250", "tiny", "6", ".5", "text", "5:1", "yes", "x" * 50]),
        max_size=3,
    ),
    st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=2),
)

# Valid prompts: words, then any set of valid parameters written under any alias, dash and case.
WORDS = [
    "a lighthouse", "rock--n-roll", "10-20", "::2", "::.5", "::", "\\,", "\\", "x,y", "\x00", "\u2014", "{red, blue}",
]  # fmt: skip
VALUES = {
    "ar": st.tuples(st.integers(1, 40), st.integers(1, 40))
    .filter(lambda r: r[0] <= 4 * r[1] <= 16 * r[0])
    .map(lambda r: f"{r[0]}:{r[1]}"),
    "seed": st.integers(0, MAX_SEED).map(str),
    "no": st.sampled_from(["people", "a, b", "text\\, logos", "{x, y}"]),
    "chaos": st.integers(0, 100).map(str),
    "stylize": st.integers(0, 1000).map(str),
    "quality": st.sampled_from([".25", "0.25", ".5", "0.5", "1", "1.0", "2", "2.0"]),
    "stop": st.integers(10, 100).map(str),
    "tile": st.just(""),
    "repeat": st.sampled_from(["1", "2"]),
    "model": st.sampled_from(["6", "base", "tiny", "TINY"]),
    "mode": st.just(""),
}
NAMES = {
    "ar": ["ar", "aspect", "AR"], "seed": ["seed"], "no": ["no"], "chaos": ["chaos", "c"], "stylize": ["stylize", "s"],
    "quality": ["quality", "q"], "stop": ["stop"], "tile": ["tile", "TILE"], "repeat": ["repeat", "r"],
    "model": ["v", "version", "model"], "mode": ["fast", "relax"],
}  # fmt: skip


@st.composite
def valid_texts(draw: st.DrawFn) -> str:
    words = ["cat", *draw(st.lists(st.sampled_from(WORDS) | st.text("abcxyz ,.'!?", max_size=6), max_size=5))]
    settings_given = draw(st.lists(st.sampled_from(sorted(VALUES)), unique=True, max_size=len(VALUES)))
    for setting in settings_given:
        dash = draw(st.sampled_from(["--", "\u2014", "\u2013"]))
        words.append(f"{dash}{draw(st.sampled_from(NAMES[setting]))} {draw(VALUES[setting])}".strip())
    return " ".join(words)


def check_renderable(spec: JobSpec) -> None:
    model = REGISTRY.get(spec.model)
    assert model is not None
    assert spec.width * spec.height <= model.pixels
    assert spec.width % model.multiple == 0 and spec.height % model.multiple == 0 and spec.width > 0
    assert 0 <= spec.seed <= MAX_SEED
    assert spec.prompt and spec.parts and all(part.text for part in spec.parts)
    assert math.fsum(part.weight for part in spec.parts) > 0
    assert 1 <= spec.steps and spec.guidance_scale > 0
    assert JobSpec.from_json(spec.to_json()) == spec


@settings(max_examples=400, deadline=None)
@given(text=texts, defaults=saved_defaults, max_jobs=st.integers(1, 8), seed=st.integers(0, 2**32))
def test_any_text_gives_specs_or_a_prompt_error(text: str, defaults: dict[str, str], max_jobs: int, seed: int) -> None:
    """Arbitrary text (control characters, huge numbers, unbalanced braces, lone `::` and dashes) never raises anything
    but PromptError, and what parses is renderable and within the job cap."""
    try:
        specs = parse(text, REGISTRY, max_jobs=max_jobs, defaults=defaults, rng=random.Random(seed))
    except PromptError as exc:
        assert str(exc)
        return
    assert 1 <= len(specs) <= max_jobs
    for spec in specs:
        check_renderable(spec)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=60))
def test_plain_unicode_text_never_raises_anything_else(text: str) -> None:
    """Arbitrary unicode text, without any steering, raises nothing but PromptError."""
    try:
        parse(text, REGISTRY, rng=random.Random(0))
    except PromptError:
        pass


@settings(max_examples=300, deadline=None)
@given(text=valid_texts(), seed=st.integers(0, 2**32))
def test_valid_text_parses(text: str, seed: int) -> None:
    """Any prompt with any set of valid parameters, under any alias, dash and case, parses to renderable specs."""
    specs = parse(text, REGISTRY, max_jobs=2**8, rng=random.Random(seed))  # up to 2**6 permutations x --repeat 2
    for spec in specs:
        check_renderable(spec)


@settings(max_examples=400, deadline=None)
@given(text=st.one_of(texts, valid_texts()), seed=st.integers(0, 2**32))
def test_canonical_round_trip(text: str, seed: int) -> None:
    """Every spec that parses writes back to text that parses to the same spec (seed now explicit)."""
    try:
        specs = parse(text, REGISTRY, max_jobs=8, rng=random.Random(seed))
    except PromptError:
        return
    for spec in specs:
        again = parse(canonical(spec), REGISTRY, max_chars=10_000, rng=random.Random(seed))
        assert again == [dataclasses.replace(spec, seed_random=False)]


def ratio_error(width: int, height: int, ratio_w: int, ratio_h: int) -> float:
    return max(width * ratio_h / (height * ratio_w), height * ratio_w / (width * ratio_h)) - 1


ratios = st.tuples(st.integers(1, 10_000), st.integers(1, 10_000)).filter(lambda r: r[0] <= 4 * r[1] <= 16 * r[0])


@settings(max_examples=300, deadline=None)
@given(ratio=ratios)
def test_size_fits_the_budget_and_the_ratio(ratio: tuple[int, int]) -> None:
    """On a 512x512-budget model every `--ar` gets multiples of 8 within the budget, within 2% of the ratio."""
    width, height = image_size(*ratio, BASE)
    assert width * height <= BASE.pixels and width % 8 == 0 and height % 8 == 0
    assert ratio_error(width, height, *ratio) <= ASPECT_TOLERANCE


@settings(max_examples=150, deadline=None)
@given(
    ratio=ratios,
    multiple=st.sampled_from([8, 16, 64]),
    budget=st.integers(1, 64),
)
def test_size_is_the_best_pair(ratio: tuple[int, int], multiple: int, budget: int) -> None:
    """Against a brute-force search: the largest size within tolerance, or else the one closest to the ratio."""
    model = ModelInfo(name="m", source="m", pixels=budget * multiple * multiple + budget, multiple=multiple)
    width, height = image_size(*ratio, model)
    assert width * height <= model.pixels and width % multiple == 0 and height % multiple == 0
    pairs = [
        (w, h)
        for w in range(multiple, model.pixels // multiple + 1, multiple)
        for h in range(multiple, model.pixels // w + 1, multiple)
    ]
    error = ratio_error(width, height, *ratio)
    if error <= ASPECT_TOLERANCE:
        assert all(w * h <= width * height for w, h in pairs if ratio_error(w, h, *ratio) <= ASPECT_TOLERANCE)
    else:
        assert all(ratio_error(w, h, *ratio) >= error - 1e-12 for w, h in pairs)


def test_square_is_the_largest_square() -> None:
    """The default 1:1 is sqrt(pixels) rounded down to the multiple."""
    assert image_size(1, 1, BASE) == (512, 512)
    assert image_size(1, 1, tiny_model()) == (64, 64)
    assert image_size(1, 1, ModelInfo(name="m", source="m", pixels=1000, multiple=8)) == (24, 24)
