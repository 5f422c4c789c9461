"""The prompt language, as tables of cases: what each text becomes, and what each bad text is told."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
from pydantic import ValidationError

from core.errors import PromptError
from core.models import ModelInfo, ModelRegistry, tiny_model
from core.prompt import canonical, parse
from core.settings import JobSettings
from core.spec import MAX_SEED, MAX_TEXT_CHARS, JobSpec, PromptPart

BASE = ModelInfo(name="base", source="test/base", aliases=("6",), pixels=512 * 512, multiple=8, steps=25, guidance=7.0)
TINY = tiny_model()  # 64 * 64 pixels, 4 steps, guidance 5
REGISTRY = ModelRegistry((BASE, TINY))


def run(text: str, **options: Any) -> list[JobSpec]:
    return parse(text, REGISTRY, rng=random.Random(0), **options)


def one(text: str, **options: Any) -> JobSpec:
    specs = run(text, **options)
    assert len(specs) == 1
    return specs[0]


def error(text: str, **options: Any) -> str:
    with pytest.raises(PromptError) as caught:
        run(text, **options)
    return str(caught.value)


def first_seeds(n: int) -> list[int]:
    rng = random.Random(0)
    return [rng.randint(0, MAX_SEED) for _ in range(n)]


def test_plain_prompt_gets_every_default() -> None:
    """A prompt without parameters gets the default model's numbers, a 1:1 square and a random seed."""
    assert one("a lighthouse") == JobSpec(
        prompt="a lighthouse",
        parts=(PromptPart("a lighthouse", 1.0),),
        negative_prompt="",
        width=512,
        height=512,
        aspect="1:1",
        seed=first_seeds(1)[0],
        chaos=0,
        stylize=100,
        guidance_scale=7.0,
        quality=1.0,
        steps=25,
        stop=100,
        tile=False,
        mode="fast",
        model="base",
        seed_random=True,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # --ar / --aspect: the ratio within the model's pixel budget, both sides multiples of 8
        ("cat --ar 16:9", {"aspect": "16:9", "width": 680, "height": 384}),
        ("cat --aspect 2:3", {"aspect": "2:3", "width": 416, "height": 624}),
        ("cat --ar 1:4", {"aspect": "1:4", "width": 256, "height": 1024}),
        ("cat --ar 4:1", {"aspect": "4:1", "width": 1024, "height": 256}),
        ("cat --ar 1:1", {"aspect": "1:1", "width": 512, "height": 512}),
        ("cat --ar 016:09", {"aspect": "16:9"}),
        ("cat --ar 16 : 9", {"aspect": "16:9"}),
        ("cat --ar 32:18", {"aspect": "32:18", "width": 680, "height": 384}),
        ("cat --ar 16:9 --v tiny", {"width": 72, "height": 40}),
        # --seed
        ("cat --seed 0", {"seed": 0, "seed_random": False}),
        ("cat --seed 4294967295", {"seed": 4294967295, "seed_random": False}),
        # --no
        ("cat --no people, text", {"negative_prompt": "people, text", "prompt": "cat"}),
        ("cat --no  red   birds --seed 1", {"negative_prompt": "red birds"}),
        ("cat --no rock--n-roll", {"negative_prompt": "rock--n-roll"}),
        # --chaos / --c
        ("cat --chaos 0", {"chaos": 0}),
        ("cat --chaos 100", {"chaos": 100}),
        ("cat --c 50", {"chaos": 50}),
        # --stylize / --s -> guidance: (0, 1.5), (100, model), (1000, 2 * model), linear between
        ("cat --stylize 0", {"stylize": 0, "guidance_scale": 1.5}),
        ("cat --s 50", {"stylize": 50, "guidance_scale": 4.25}),
        ("cat --s 100", {"stylize": 100, "guidance_scale": 7.0}),
        ("cat --s 250", {"stylize": 250, "guidance_scale": 8.1667}),
        ("cat --stylize 1000", {"stylize": 1000, "guidance_scale": 14.0}),
        ("cat --s 1000 --v tiny", {"guidance_scale": 10.0}),
        # --quality / --q -> steps = max(2, round(model steps * q))
        ("cat --quality .25", {"quality": 0.25, "steps": 6}),
        ("cat --q 0.25", {"quality": 0.25, "steps": 6}),
        ("cat --q .5", {"quality": 0.5, "steps": 12}),
        ("cat --q 0.5", {"quality": 0.5, "steps": 12}),
        ("cat --q 1", {"quality": 1.0, "steps": 25}),
        ("cat --q 1.0", {"quality": 1.0, "steps": 25}),
        ("cat --q 2", {"quality": 2.0, "steps": 50}),
        ("cat --q .25 --v tiny", {"steps": 2}),
        # --stop
        ("cat --stop 10", {"stop": 10}),
        ("cat --stop 100", {"stop": 100}),
        # --tile
        ("cat --tile", {"tile": True}),
        ("cat --tile --seed 3", {"tile": True, "seed": 3}),
        # --v / --version / --model, case-insensitive, aliases
        ("cat --v 6", {"model": "base"}),
        ("cat --version tiny", {"model": "tiny", "width": 64, "height": 64, "steps": 4, "guidance_scale": 5.0}),
        ("cat --model TINY", {"model": "tiny"}),
        ("cat --model base", {"model": "base"}),
        # --fast / --relax
        ("cat --fast", {"mode": "fast"}),
        ("cat --relax", {"mode": "relax"}),
        # combinations, in any order
        (
            "a lighthouse --no people --ar 16:9 --seed 7 --c 20 --s 0 --q 2 --stop 50 --tile --v tiny --relax",
            {
                "prompt": "a lighthouse",
                "negative_prompt": "people",
                "aspect": "16:9",
                "seed": 7,
                "chaos": 20,
                "stylize": 0,
                "quality": 2.0,
                "steps": 8,
                "stop": 50,
                "tile": True,
                "model": "tiny",
                "mode": "relax",
            },
        ),
    ],
)
def test_parameter_values(text: str, expected: dict[str, Any]) -> None:
    """Each parameter, at its edges and through its aliases, sets the spec fields it should."""
    spec = one(text)
    assert {name: getattr(spec, name) for name in expected} == expected


@pytest.mark.parametrize(
    "text",
    [
        "cat --ar 16:9 --seed 5",
        "cat \u2014ar 16:9 \u2014seed 5",  # em dash, as phones write `--`
        "cat \u2013ar 16:9 \u2013seed 5",  # en dash
        "cat --AR 16:9 --Seed 5",
        "cat \u2014AR 16:9 --SEED 5",
        "cat --aspect 16:9 --seed 5",
        "  cat   --ar   16:9\t--seed 5\n",
    ],
)
def test_dashes_case_and_spacing_are_equivalent(text: str) -> None:
    """`--`, em dash and en dash start a parameter alike; names are case-insensitive; whitespace does not matter."""
    assert run(text) == run("cat --ar 16:9 --seed 5")


@pytest.mark.parametrize(
    ("text", "prompt"),
    [
        ("rock--n-roll", "rock--n-roll"),
        ("a 10-20 year old tree", "a 10-20 year old tree"),
        ("a\u2014b and c\u2013d", "a\u2014b and c\u2013d"),
        ("pre-war house --ar 2:1", "pre-war house"),
        ("cat -- dog", "cat -- dog"),
        ("cat --5 dogs", "cat --5 dogs"),
        ("cat -ar 16:9", "cat -ar 16:9"),
        ("cat \u2014 dog", "cat \u2014 dog"),
    ],
)
def test_dashes_inside_text_stay_prompt_text(text: str, prompt: str) -> None:
    """A parameter starts only at a word boundary with a dash immediately followed by a letter."""
    assert one(text).prompt == prompt


@pytest.mark.parametrize(
    ("text", "default_mode", "mode"),
    [
        ("cat", "fast", "fast"),
        ("cat", "relax", "relax"),
        ("cat --fast", "relax", "fast"),
        ("cat --relax", "fast", "relax"),
    ],
)
def test_mode_comes_from_the_flag_or_the_default(text: str, default_mode: Any, mode: str) -> None:
    """`--fast`/`--relax` choose the lane; without either the caller's default_mode applies."""
    assert one(text, default_mode=default_mode).mode == mode


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("cat", (("cat", 1.0),)),
        ("cat::2 dog::1", (("cat", 2.0), ("dog", 1.0))),
        ("space:: ship", (("space", 1.0), ("ship", 1.0))),
        ("space::ship", (("space", 1.0), ("ship", 1.0))),
        ("hot dog::1.5 bun", (("hot dog", 1.5), ("bun", 1.0))),
        ("cat::.5 dog", (("cat", 0.5), ("dog", 1.0))),
        ("cat:: dog::-0.5", (("cat", 1.0), ("dog", -0.5))),
        ("cat::", (("cat", 1.0),)),
        ("cat::2", (("cat", 2.0),)),
        ("cat::2 dog::", (("cat", 2.0), ("dog", 1.0))),
        ("cat::2dog", (("cat", 1.0), ("2dog", 1.0))),
        ("cat::2::3 dog", (("cat", 2.0), ("dog", 1.0))),
        ("cat::2 dog::1 --ar 2:1", (("cat", 2.0), ("dog", 1.0))),
    ],
)
def test_multi_prompt_parts_and_weights(text: str, parts: tuple[tuple[str, float], ...]) -> None:
    """`::` splits the prompt into weighted parts; a weight belongs to the text before it; empty parts are ignored."""
    spec = one(text)
    assert spec.parts == tuple(PromptPart(part, weight) for part, weight in parts)
    assert spec.prompt == text.split(" --")[0]


def test_prompt_keeps_the_text_with_whitespace_normalised() -> None:
    """JobSpec.prompt is the user's text, parameters removed and whitespace runs collapsed."""
    assert one("  a   lot\tof\n space::2  --ar 2:1").prompt == "a lot of space::2"


@pytest.mark.parametrize(
    ("text", "prompts"),
    [
        ("{red, blue} bird", ["red bird", "blue bird"]),
        ("{a,b} {c,d}", ["a c", "a d", "b c", "b d"]),
        ("{big {red, blue}, small} bird", ["big red bird", "big blue bird", "small bird"]),
        ("{salt\\, pepper, sugar} cake", ["salt, pepper cake", "sugar cake"]),
        ("fish\\, chips", ["fish, chips"]),
        ("{, very} big", ["big", "very big"]),
        ("{cat}", ["cat"]),
        ("a {b} c", ["a b c"]),
    ],
)
def test_permutations_expand_in_order(text: str, prompts: list[str]) -> None:
    """`{a, b}` groups make one job per option, nested and multiplied, `\\,` being a literal comma."""
    assert [spec.prompt for spec in run(text)] == prompts


def test_permutations_inside_parameters() -> None:
    """A group may stand in a parameter's value, as in Midjourney: the whole text is expanded first."""
    specs = run("cat --ar {16:9, 1:1} --seed 3")
    assert [(spec.aspect, spec.width, spec.height, spec.seed) for spec in specs] == [
        ("16:9", 680, 384, 3),
        ("1:1", 512, 512, 3),
    ]
    assert [spec.model for spec in run("cat --v {6, tiny}")] == ["base", "tiny"]
    assert len(run("cat --r {1, 2}")) == 3


@pytest.mark.parametrize(
    ("text", "seeds"),
    [
        ("cat --seed 7 --repeat 3", [7, 11, 15]),
        ("cat --seed 7 --r 4", [7, 11, 15, 19]),
        ("cat --seed 4294967294 --r 2", [4294967294, 2]),
        ("{a, b} --seed 7 --r 2", [7, 11, 7, 11]),
        ("{a, b} --seed 7", [7, 7]),
    ],
)
def test_repeat_with_a_seed_offsets_each_grid(text: str, seeds: list[int]) -> None:
    """With `--seed S --repeat N`, repeat i uses S + 4i (mod 2**32), so no two grids share a seed."""
    specs = run(text)
    assert [spec.seed for spec in specs] == seeds
    assert not any(spec.seed_random for spec in specs)


def test_jobs_without_a_seed_each_draw_one() -> None:
    """Without `--seed` every job draws its own seed from the rng and is marked seed_random."""
    specs = run("{a, b} --r 2")
    assert [spec.prompt for spec in specs] == ["a", "a", "b", "b"]
    assert [spec.seed for spec in specs] == first_seeds(4)
    assert all(spec.seed_random for spec in specs)


def test_default_rng_draws_system_random_seeds() -> None:
    """Without an rng the seeds come from the system's randomness and stay within range."""
    spec = parse("cat", REGISTRY)[0]
    assert spec.seed_random and 0 <= spec.seed <= MAX_SEED


@pytest.mark.parametrize(
    ("text", "max_jobs", "count"),
    [
        ("cat --r 4", 4, 4),
        ("{a, b} --r 2", 4, 4),
        ("{a, b, c, d}", 4, 4),
        ("cat", 1, 1),
        ("{a, b, c, d, e, f} --r 2", 40, 12),
    ],
)
def test_job_count_up_to_the_cap(text: str, max_jobs: int, count: int) -> None:
    """Permutations x repeat up to max_jobs is accepted."""
    assert len(run(text, max_jobs=max_jobs)) == count


@pytest.mark.parametrize(
    ("text", "max_jobs", "fragments"),
    [
        ("{a, b, c} --r 2", 4, ["6 jobs", "at most 4"]),
        ("{a, b} {c, d} {e, f}", 4, ["8 jobs", "at most 4"]),
        ("{a, b}", 1, ["2 jobs", "at most 1"]),
        ("cat --r {3, 2}", 4, ["5 jobs", "at most 4"]),
        ("{a,b}" * 40, 4, ["over a million jobs", "at most 4"]),
    ],
)
def test_too_many_jobs(text: str, max_jobs: int, fragments: list[str]) -> None:
    """More jobs than max_jobs is refused with how many it would make and the cap."""
    message = error(text, max_jobs=max_jobs)
    assert all(fragment in message for fragment in fragments), message


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        # empty and too long
        ("", ["prompt is empty"]),
        ("   \n\t", ["prompt is empty"]),
        ("--ar 16:9 --seed 3", ["prompt is empty"]),
        ("::", ["prompt is empty"]),
        (":: ::2 --tile", ["prompt is empty"]),
        ("x" * 1001, ["1001 characters", "limit is 1000"]),
        # a parameter without its value
        ("cat --seed", ["--seed needs a value", "0 to 4294967295"]),
        ("cat --ar --seed 3", ["--ar needs a value", "W:H"]),
        ("cat --no", ["--no needs a value"]),
        ("cat --chaos", ["--chaos needs a value", "0 to 100"]),
        ("cat --s", ["--s needs a value", "0 to 1000"]),
        ("cat --q", ["--q needs a value", ".25, .5, 1, 2"]),
        ("cat --stop", ["--stop needs a value", "10 to 100"]),
        ("cat --r", ["--r needs a value", "1 to 4"]),
        ("cat --model", ["--model needs a value"]),
        ("cat --v", ["--v needs a value"]),
        # --ar out of range or malformed
        ("cat --ar 5:1", ["--ar", "'5:1'", "1:4 to 4:1"]),
        ("cat --ar 1:5", ["--ar", "'1:5'"]),
        ("cat --ar 17:4", ["--ar", "'17:4'"]),
        ("cat --ar 0:1", ["--ar", "'0:1'"]),
        ("cat --ar 1:0", ["--ar", "'1:0'"]),
        ("cat --ar 16x9", ["--ar", "'16x9'"]),
        ("cat --ar 16:9:1", ["--ar", "'16:9:1'"]),
        ("cat --ar 1.5:1", ["--ar", "'1.5:1'", "whole numbers"]),
        ("cat --ar -16:9", ["--ar", "'-16:9'"]),
        ("cat --ar 99999999:1", ["--ar", "'99999999:1'"]),
        ("cat --aspect 5:1", ["--aspect", "'5:1'"]),
        ("cat --ar 16:9 dog", ["--ar", "'16:9 dog'"]),
        # numbers out of range, both edges
        ("cat --seed -1", ["--seed", "'-1'", "0 to 4294967295"]),
        ("cat --seed 4294967296", ["--seed", "'4294967296'"]),
        ("cat --seed 1.5", ["--seed", "'1.5'"]),
        ("cat --seed seven", ["--seed", "'seven'"]),
        ("cat --seed " + "9" * 500, ["--seed", "'999"]),
        ("cat --chaos -1", ["--chaos", "'-1'", "0 to 100"]),
        ("cat --chaos 101", ["--chaos", "'101'"]),
        ("cat --c 101", ["--c", "'101'"]),
        ("cat --stylize -1", ["--stylize", "'-1'", "0 to 1000"]),
        ("cat --stylize 1001", ["--stylize", "'1001'"]),
        ("cat --s 1001", ["--s ", "'1001'"]),
        ("cat --stop 9", ["--stop", "'9'", "10 to 100"]),
        ("cat --stop 101", ["--stop", "'101'"]),
        ("cat --repeat 0", ["--repeat", "'0'", "1 to 4"]),
        ("cat --r 5", ["--r", "'5'", "1 to 4"]),
        # --quality: only the fixed values
        ("cat --quality 3", ["--quality", "'3'", ".25, .5, 1, 2"]),
        ("cat --q 0.3", ["--q", "'0.3'"]),
        ("cat --q 1.5", ["--q", "'1.5'"]),
        ("cat --q .", ["--q", "'.'"]),
        ("cat --q high", ["--q", "'high'"]),
        # flags take no value
        ("cat --tile yes", ["--tile", "'yes'", "takes no value"]),
        ("cat --fast now", ["--fast", "'now'"]),
        ("cat --relax please", ["--relax", "'please'"]),
        # models
        ("cat --v 7", ["--v", "'7'", "base, 6, tiny"]),
        ("cat --model huge", ["--model", "'huge'", "base, 6, tiny"]),
        # given twice, even under another alias
        ("cat --ar 1:1 --ar 2:1", ["--ar is given twice"]),
        ("cat --s 1 --stylize 2", ["--stylize is given twice", "as --s and --stylize"]),
        ("cat --v 6 --model tiny", ["--model is given twice"]),
        ("cat --tile --tile", ["--tile is given twice"]),
        ("cat --fast --relax", ["--fast and --relax"]),
        ("cat --relax --relax", ["--relax is given twice"]),
        ("cat --no a --no b", ["--no is given twice"]),
        # multi-prompt weights
        ("cat::-1 dog::1", ["weights", "add up to 0"]),
        ("cat::-2", ["weights", "add up to -2"]),
        ("cat::0", ["weights", "add up to 0"]),
        ("cat::5000 dog", ["weight", "'5000'", "-1000 to 1000"]),
        # braces
        ("{a, b", ["unbalanced", "'{' at position 1"]),
        ("a}", ["unbalanced", "'}' at position 2"]),
        ("{{a} --ar 1:1", ["unbalanced", "'{' at position 1"]),
        ("{" * 9 + "a" + "}" * 9, ["nest more than 8"]),
    ],
)
def test_errors_name_the_parameter_and_the_value(text: str, fragments: list[str]) -> None:
    """Every bad input raises PromptError whose message names the parameter, the value and what is allowed."""
    message = error(text)
    assert all(fragment in message for fragment in fragments), message


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [
        ("cat --stylise 200", "did you mean --stylize?"),
        ("cat --arr 16:9", "did you mean --ar?"),
        ("cat --ar16:9", "did you mean --ar?"),
        ("cat --seeed 3", "did you mean --seed?"),
        ("cat --tiles", "did you mean --tile?"),
        ("cat --qaulity 2", "did you mean --quality?"),
        ("cat --relaxed", "did you mean --relax?"),
    ],
)
def test_unknown_parameter_suggests_the_closest(text: str, suggestion: str) -> None:
    """An unknown `--name` is named, with the closest known parameter suggested."""
    message = error(text)
    assert "unknown parameter --" in message and suggestion in message, message


@pytest.mark.parametrize("text", ["cat --zzz 1", "cat --niji 6", "cat --sref 2"])
def test_unknown_parameter_lists_the_known_ones(text: str) -> None:
    """An unknown or unsupported parameter is named and the known ones are listed."""
    message = error(text)
    assert text.split()[1] in message and "--ar/--aspect" in message and "--v/--version/--model" in message


@pytest.mark.parametrize(
    ("text", "defaults", "expected"),
    [
        (
            "cat",
            {"ar": "16:9", "stylize": "250", "model": "tiny"},
            {"aspect": "16:9", "stylize": 250, "model": "tiny", "width": 72, "height": 40},
        ),
        ("cat --ar 1:1", {"ar": "16:9"}, {"aspect": "1:1"}),
        ("cat --stylize 50", {"s": "250"}, {"stylize": 50}),
        ("cat --s 50", {"stylize": "250"}, {"stylize": 50}),
        ("cat --model base", {"v": "tiny"}, {"model": "base"}),
        ("cat", {"--AR": "2:1", "Chaos": "30"}, {"aspect": "2:1", "chaos": 30}),
        ("cat", {"relax": ""}, {"mode": "relax"}),
        ("cat --fast", {"relax": ""}, {"mode": "fast"}),
        ("cat", {"tile": ""}, {"tile": True}),
        ("cat", {"q": ".5", "stop": "50", "no": "text"}, {"quality": 0.5, "stop": 50, "negative_prompt": "text"}),
        ("cat --no dogs", {"no": "text"}, {"negative_prompt": "dogs"}),
        ("cat", {"seed": "9"}, {"seed": 9, "seed_random": False}),
        ("cat", {}, {"aspect": "1:1"}),
    ],
)
def test_saved_defaults_apply_unless_the_prompt_gives_the_parameter(
    text: str, defaults: dict[str, str], expected: dict[str, Any]
) -> None:
    """Saved defaults fill absent parameters (any alias); an explicit parameter, under any alias, wins."""
    spec = one(text, defaults=defaults)
    assert {name: getattr(spec, name) for name in expected} == expected


def test_saved_repeat_default_makes_several_jobs() -> None:
    """A saved `repeat` counts towards the cap like an explicit one."""
    assert len(run("cat", defaults={"repeat": "2"})) == 2
    assert "4 jobs" in error("{a, b}", defaults={"repeat": "2"}, max_jobs=3)


@pytest.mark.parametrize(
    ("defaults", "fragments"),
    [
        ({"ar": "9:1"}, ["--ar", "'9:1'", "saved defaults"]),
        ({"stylize": "5000"}, ["--stylize", "'5000'", "saved defaults"]),
        ({"model": "gone"}, ["--model", "'gone'", "saved defaults"]),
        ({"tile": "yes"}, ["--tile", "'yes'", "saved defaults"]),
        ({"bogus": "1"}, ["unknown parameter --bogus", "saved defaults"]),
        ({"s": "1", "stylize": "2"}, ["--stylize is given twice", "saved defaults"]),
        ({"fast": "", "relax": ""}, ["--fast and --relax", "saved defaults"]),
        ({"seed": ""}, ["--seed needs a value", "saved defaults"]),
    ],
)
def test_bad_saved_defaults_are_errors_that_say_so(defaults: dict[str, str], fragments: list[str]) -> None:
    """Saved defaults are checked like prompt parameters, and the message says the value came from them."""
    message = error("cat", defaults=defaults)
    assert all(fragment in message for fragment in fragments), message


def test_overridden_saved_default_is_not_checked() -> None:
    """A saved default the prompt overrides is never used, so a stale one (a removed model) does not block it."""
    assert one("cat --model tiny", defaults={"model": "gone"}).model == "tiny"


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("a lighthouse --ar 16:9 --seed 7 --no people", "a lighthouse --ar 16:9 --seed 7 --no people --model base"),
        ("a lighthouse --seed 7", "a lighthouse --seed 7 --model base"),
        (
            "cat::2 dog \u2014AR 2:1 \u2014seed 1 --c 5 --s 0 --q .25 --stop 20 --tile --v tiny --relax",
            "cat::2 dog --ar 2:1 --seed 1 --chaos 5 --stylize 0 --quality .25 --stop 20 --tile --model tiny --relax",
        ),
        ("{a\\, b} --seed 3", "a, b --seed 3 --model base"),
        ("back\\\\, slash --seed 3", "back\\\\, slash --seed 3 --model base"),
    ],
)
def test_canonical_text(text: str, written: str) -> None:
    """canonical() writes the prompt and every non-default parameter back in Midjourney syntax."""
    assert canonical(one(text)) == written


@pytest.mark.parametrize(
    "text",
    [
        "a lighthouse",
        "a lighthouse --ar 16:9 --seed 7 --no people",
        "cat::2 dog::-0.5 --ar 1:4 --s 1000 --q 2 --stop 10 --tile --relax --c 100",
        "{a\\, b} and c --no x, y",
        "back\\\\, slash",
        "rock--n-roll \u2014 a 10-20 year old tree --v tiny --ar 7:5",
        "space:: ship::",
        "cat --ar 32:18 --q .5 --model 6",
    ],
)
def test_canonical_round_trip(text: str) -> None:
    """parse(canonical(spec)) gives the same spec back, its seed now explicit."""
    for spec in run(text, max_jobs=8):
        assert run(canonical(spec)) == [dataclasses.replace(spec, seed_random=False)]


def test_canonical_without_seed_for_a_reroll() -> None:
    """canonical(spec, with_seed=False) leaves the seed out, so parsing it again draws a new one."""
    spec = one("cat --seed 7 --ar 2:1")
    assert canonical(spec, with_seed=False) == "cat --ar 2:1 --model base"
    assert one(canonical(spec, with_seed=False)).seed_random


def test_prompt_length_has_a_hard_cap_settings_cannot_raise() -> None:
    """A prompt over Discord's 6,000-character option limit is refused whatever `max_chars` says, and the setting
    itself refuses a higher value; a lower setting still applies."""
    registry = ModelRegistry((tiny_model(),))
    assert len(parse("a" * MAX_TEXT_CHARS, registry, max_chars=10**6)) == 1
    with pytest.raises(PromptError, match=f"the limit is {MAX_TEXT_CHARS}"):
        parse("a" * (MAX_TEXT_CHARS + 1), registry, max_chars=10**6)
    with pytest.raises(PromptError, match="the limit is 10"):
        parse("a" * 11, registry, max_chars=10)
    with pytest.raises(ValidationError):
        JobSettings(max_prompt_chars=MAX_TEXT_CHARS + 1)
