"""Image prompts in the prompt language (core.images, core.prompt): tables of cases."""

from __future__ import annotations

import dataclasses

import pytest

from core import images, prompt
from core.errors import ImageRefused, MalformedPayload, PromptError
from core.models import BUILTIN_TINY, load_registry
from core.spec import JobSpec

A = "https://cdn.discordapp.com/attachments/1/2/a.png"
B = "https://media.discordapp.net/attachments/1/3/b.webp"
REGISTRY = load_registry(BUILTIN_TINY)


@pytest.mark.parametrize("text, urls, weights, iw, rest", [
    (f"{A} a cat", (A,), (1.0,), 1.0, "a cat"),
    (f"{A}::2 {B} a cat --iw 2 --seed 3", (A, B), (2.0, 1.0), 2.0, "a cat --seed 3"),
    (f"{A} {B}", (A, B), (1.0, 1.0), 1.0, ""),
    (f"{A} --iw 0", (A,), (1.0,), 0.0, ""),
    (f"{A} --IW .5 cat", (A,), (1.0,), 0.5, "cat"),
    (f"a cat {A}", (), (), 1.0, f"a cat {A}"),  # only leading links are images
    ("a cat", (), (), 1.0, "a cat"),
])  # fmt: skip
def test_leading_links_their_weights_and_iw_are_split_off(text, urls, weights, iw, rest) -> None:
    """Links at the start, `url::w` and `--iw` are read; the rest is the prompt."""
    found, left = images.split_images(text)
    assert (found.urls, found.weights, found.iw, left) == (urls, weights, iw, rest)


@pytest.mark.parametrize("text, words", [
    ("a cat --iw 2", "--iw weighs image prompts"),
    (f"{A} cat --iw 3.5", "--iw must be a number from 0 to 3, not '3.5'"),
    (f"{A} cat --iw", "--iw must be a number from 0 to 3, not nothing"),
    (f"{A} cat --iw 1 --iw 2", "--iw is given twice"),
    (f"{A}::0 cat", "weight must be more than 0"),
    (" ".join([A] * 6) + " cat", "at most 5 images"),
    ("https://example.com/a.png cat", "not from example.com"),
    ("http://cdn.discordapp.com/a.png cat", "https only"),
])  # fmt: skip
def test_bad_image_prompts_are_refused_naming_the_rule(text: str, words: str) -> None:
    """Each refusal names what is wrong; a host or scheme refusal is an ImageRefused, which is a PromptError."""
    with pytest.raises(PromptError) as caught:
        prompt.parse(text, REGISTRY)
    assert words in str(caught.value)
    assert isinstance(caught.value, ImageRefused) == ("example" in text or "http:" in text)


def test_an_admin_listed_host_is_allowed() -> None:
    """IMAGINE_IMAGE_HOSTS adds hosts to Discord's."""
    rules = images.rules_from(["Images.Example.org"])
    [spec] = prompt.parse("https://images.example.org/x.png a cat", REGISTRY, image_rules=rules)
    assert spec.extras["images"]["urls"] == ["https://images.example.org/x.png"]


def test_an_image_prompt_is_parsed_into_the_spec_and_back() -> None:
    """The spec shows the links, the encoder sees only the text, and canonical text parses to the same spec."""
    [spec] = prompt.parse(f"{A}::2 {B} a red cat --iw 1.5 --seed 9", REGISTRY)
    assert spec.prompt == f"{A}::2 {B} a red cat"
    assert [part.text for part in spec.parts] == ["a red cat"]
    assert spec.extras["images"] == {"urls": [A, B], "weights": [2.0, 1.0], "iw": 1.5}
    assert prompt.parse(prompt.canonical(spec), REGISTRY) == [spec]
    assert JobSpec.from_json(spec.to_json()).extras == spec.extras


def test_images_alone_make_a_prompt_with_one_empty_part() -> None:
    """A blend has no text: one empty part, which the worker fills with the images' descriptions."""
    [spec] = prompt.parse(f"{A} {B} --ar 2:3", REGISTRY)
    assert [part.text for part in spec.parts] == [""] and spec.aspect == "2:3"


@pytest.mark.parametrize("iw, strength", [(0, 1.0), (1, 0.75), (2, 0.5), (3, 0.25), (0.5, 0.875)])
def test_iw_sets_the_image_to_image_strength(iw: float, strength: float) -> None:
    """--iw 0 ignores the images, the default redoes three quarters of the schedule, 3 keeps the most."""
    assert images.image_strength(iw) == strength


@pytest.mark.parametrize("extra", [
    {"urls": [], "weights": [], "iw": 1.0},
    {"urls": [A], "weights": [1.0, 2.0], "iw": 1.0},
    {"urls": [A], "weights": [1.0], "iw": 4.0},
    {"urls": [A], "weights": [float("nan")], "iw": 1.0},
    {"urls": [A], "weights": [1.0]},
])  # fmt: skip
def test_a_forged_images_extra_is_a_malformed_payload(extra: dict) -> None:
    """The worker checks `extras.images` like every other field of a payload."""
    [spec] = prompt.parse(f"{A} cat", REGISTRY)
    data = dataclasses.replace(spec, extras={"images": extra}).to_dict()
    with pytest.raises(MalformedPayload, match="extras.images"):
        JobSpec.from_dict(data)
