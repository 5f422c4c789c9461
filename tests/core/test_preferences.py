"""Custom options and the suffix (`/prefer`): expansion in the prompt language, and what may be saved."""

from __future__ import annotations

import pytest

from core.errors import PromptError
from core.models import ModelRegistry, tiny_model
from core.preferences import Preferences
from core.prompt import BUILTIN_NAMES, check_option, parse

REGISTRY = ModelRegistry((tiny_model(),))
WIDE = Preferences(options={"wide": "--ar 16:9", "art": "oil painting --s 250", "w2": "--ar 2:1"})


@pytest.mark.parametrize(("preferences", "text", "expanded"), [
    (WIDE, "a cat --wide", "a cat --ar 16:9"),
    (WIDE, "a cat —wide", "a cat --ar 16:9"),  # an em dash, as phones write `--`
    (WIDE, "a cat --WIDE", "a cat --ar 16:9"),
    (WIDE, "a cat --art --seed 3", "a cat oil painting --s 250 --seed 3"),
    (WIDE, "a cat --w2", "a cat --ar 2:1"),  # a name is a whole word: --w2 is not --w
    (WIDE, "a cat --wider", "a cat --wider"),
    (WIDE, "a cat-wide --no wide", "a cat-wide --no wide"),
    (WIDE, "{a, b} --wide", "{a, b} --ar 16:9"),
    (Preferences(suffix="--s 50"), "a cat", "a cat --s 50"),
    (Preferences(suffix="--art", options={"art": "--s 250"}), "a cat", "a cat --art"),  # the suffix is not expanded
    (Preferences(options={"a": "--b", "b": "--s 9"}), "x --a", "x --b"),  # nor a value
    (Preferences(), "a cat --wide", "a cat --wide"),
])
def test_expansion(preferences: Preferences, text: str, expanded: str) -> None:
    """Each custom `--name` written in the prompt becomes its value, once; then the suffix is appended."""
    assert preferences.expand(text) == expanded


def test_parse_applies_options_and_suffix_before_everything_else() -> None:
    """The expanded text is what is parsed: the option's --ar and the suffix's --stylize reach the spec, and a
    parameter written in the prompt and in the suffix is 'given twice', as on Midjourney."""
    (spec,) = parse("a cat --wide", REGISTRY, preferences=Preferences("--s 250", {"wide": "--ar 2:1"}))
    assert (spec.prompt, spec.aspect, spec.stylize) == ("a cat", "2:1", 250)
    with pytest.raises(PromptError, match="given twice"):
        parse("a cat --s 10", REGISTRY, preferences=Preferences("--s 250"))


@pytest.mark.parametrize(("name", "value", "saved"), [
    ("wide", "--ar 16:9", ("wide", "--ar 16:9")),
    ("--Wide", "  --ar   16:9 ", ("wide", "--ar 16:9")),
    ("my_style2", "watercolor --s 300", ("my_style2", "watercolor --s 300")),
])
def test_options_that_may_be_saved(name: str, value: str, saved: tuple[str, str]) -> None:
    """A name is lowercased (and a leading -- dropped); a value's whitespace is squashed."""
    assert check_option(name, value, REGISTRY) == saved


@pytest.mark.parametrize(("name", "value", "says"), [
    ("ar", "--ar 16:9", "built-in parameter"),
    ("niji", "--s 5", "built-in parameter"),
    ("2wide", "--ar 16:9", "a letter then"),
    ("wi de", "--ar 16:9", "a letter then"),
    ("x" * 33, "--ar 16:9", "a letter then"),
    ("wide", "", "needs a value"),
    ("wide", "--ar 99:1", "does not parse"),
    ("wide", "--bogus 3", "does not parse"),
    ("wide", "x" * 201, "the limit is 200"),
])
def test_options_that_are_refused(name: str, value: str, says: str) -> None:
    """A bad name, a built-in one, an empty, too long or unparseable value: PromptError, saying which."""
    with pytest.raises(PromptError, match=says):
        check_option(name, value, REGISTRY)


def test_every_known_parameter_is_a_built_in_name() -> None:
    """The names no option may take include the supported aliases and the Midjourney ones not supported."""
    assert {"ar", "aspect", "s", "stylize", "no", "seed", "tile", "relax", "iw", "niji"} <= BUILTIN_NAMES
