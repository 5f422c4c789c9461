"""The prompt language: `/imagine` text in Midjourney's syntax -> one JobSpec per job to run.

    parse("a {red, blue} lighthouse::2 sea --ar 16:9 --seed 7 --no people", registry)

Pure: text in, frozen specs out, or one PromptError whose message names the parameter, the value and what is allowed.
The steps: (0) expand the member's custom options and suffix (core/preferences.py); (1) expand `{}` permutations
over the whole text (core/permutations.py); (2) split each expansion into its prompt and `--name value` parameters;
(3) fill what is absent from the user's saved defaults, then the built-in ones; (4) check each value and derive the
model-dependent numbers (size, guidance, steps); (5) count the jobs against the cap, then give each its seed.
`canonical` writes a spec back as text that parses to the same spec.
"""

from __future__ import annotations

import difflib
import functools
import math
import random
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from core import images, permutations
from core.errors import PromptError
from core.models import ModelInfo, ModelRegistry
from core.preferences import MAX_OPTION_CHARS, Preferences, check_name, check_text
from core.spec import MAX_SEED, MAX_TEXT_CHARS, JobSpec, Mode, PromptPart

DEFAULT_ASPECT = "1:1"
DEFAULT_CHAOS = 0
DEFAULT_STYLIZE = 100
DEFAULT_QUALITY = 1.0
DEFAULT_STOP = 100

MAX_ASPECT = 4
"""Widest ratio accepted either way: `--ar` runs from 1:4 to 4:1."""

ASPECT_TOLERANCE = 0.02
"""Relative aspect-ratio error accepted in exchange for a larger image (2% does not show)."""

REPEAT_SEED_STEP = 4
"""With `--seed S --repeat N`, repeat i starts at S + 4i, so the grids (seeds S+4i .. S+4i+3) share no seed."""

MAX_WEIGHT = 1000.0
"""Largest `::` weight magnitude accepted (keeps weights finite and JSON-safe)."""

QUALITIES = {0.25: ".25", 0.5: ".5", 1.0: "1", 2.0: "2"}
"""`--quality` values -> how they are written back."""

# A parameter starts at a word boundary with `--`, or the em or en dash phones put in its place, then a letter:
# "rock--n-roll" and "a 10-20 year old tree" stay prompt text.
_PARAMETER = re.compile(r"(?<!\S)(?:--|\u2014|\u2013)([A-Za-z]\S*)")
_DASHES = "-\u2014\u2013"
_WHOLE = re.compile(r"[0-9]{1,12}")  # longer would only be out of range, and int() of a huge string is slow
_RATIO = re.compile(r"([0-9]{1,6})\s*:\s*([0-9]{1,6})")
_DECIMAL = re.compile(r"[0-9]{0,6}(?:\.[0-9]{0,6})?")
# `::` optionally followed by the weight of the part before it, e.g. `cat::2 dog::-0.5`.
_WEIGHT_MARK = re.compile(r"::(?:(-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?=\s|$|::))?")

_FLAGS = frozenset({"tile", "fast", "relax"})
_SETTING_OF = {  # every name accepted after `--` -> the setting it sets (aliases share one)
    "ar": "ar", "aspect": "ar", "seed": "seed", "no": "no", "chaos": "chaos", "c": "chaos",
    "stylize": "stylize", "s": "stylize", "quality": "quality", "q": "quality", "stop": "stop", "tile": "tile",
    "repeat": "repeat", "r": "repeat", "v": "model", "version": "model", "model": "model",
    "fast": "mode", "relax": "mode",
}  # fmt: skip
_UNSUPPORTED = frozenset(
    {"niji", "weird", "w", "style", "sref", "sw", "cref", "cw", "turbo", "raw", "p", "personalize"}
)
BUILTIN_NAMES = frozenset(_SETTING_OF) | _UNSUPPORTED | {"iw"}
"""Every parameter name the language knows (supported or not): no custom option may take one."""


@dataclass(frozen=True)
class _Given:
    """One parameter as written: the name used, its raw value, and whether it came from the saved defaults."""

    name: str
    value: str
    saved: bool = False

    def fail(self, message: str) -> PromptError:
        return PromptError(message + (" (from your saved defaults)" if self.saved else ""))


def parse(
    text: str,
    registry: ModelRegistry,
    *,
    max_jobs: int = 4,
    max_chars: int = 1000,
    defaults: Mapping[str, str] | None = None,
    default_mode: Mode = "fast",
    rng: random.Random | None = None,
    preferences: Preferences | None = None,
    image_rules: images.Rules | None = None,
) -> list[JobSpec]:
    """Parse one `/imagine` text into the jobs it asks for (permutations x `--repeat`), or raise PromptError.
    `max_chars` may lower the hard cap on a prompt's length (MAX_TEXT_CHARS), never raise it. `preferences`: the
    member's custom options and suffix, expanded first (`core.preferences`). Image links at the start of the
    prompt, their `::` weights and `--iw` are read by `core.images.split_images` under `image_rules` (default:
    Discord's hosts only) into `extras["images"]`."""
    max_chars = min(max_chars, MAX_TEXT_CHARS)
    length = len(text) - images.link_chars(text)  # image links (long signed Discord URLs) are not prompt text
    if length > max_chars or len(text) > MAX_TEXT_CHARS:
        raise PromptError(f"the prompt is {length} characters long; the limit is {max_chars}")
    if preferences is not None:
        text = preferences.expand(text)
    saved = _collect(_saved_parameters(defaults or {}), saved=True)
    template = permutations.parse(text)
    _check_job_count(permutations.count(template), max_jobs)
    plans = [_plan(expansion, registry, saved, max_jobs, default_mode, image_rules)
             for expansion in permutations.expand(template)]
    _check_job_count(sum(repeat for _, repeat, _ in plans), max_jobs)
    rng = rng or random.SystemRandom()
    specs = []
    for fields, repeat, seed in plans:
        for i in range(repeat):
            if seed is None:
                specs.append(JobSpec(**fields, seed=rng.randint(0, MAX_SEED), seed_random=True))
            else:
                specs.append(JobSpec(**fields, seed=(seed + REPEAT_SEED_STEP * i) % (MAX_SEED + 1)))
    return specs


def check_option(name: str, value: str, registry: ModelRegistry) -> tuple[str, str]:
    """A custom option (`/prefer option set`) as it may be saved: its name lowercased, its value with whitespace
    squashed, which must parse after a prompt ("x " + value) on its own.

    Raises:
        PromptError: a name of the wrong shape or a built-in one, a value empty, too long or that does not parse.
    """
    name = check_name(name, BUILTIN_NAMES)
    value = check_text(f"--{name}'s value", value, MAX_OPTION_CHARS)
    if not value:
        raise PromptError(f"--{name} needs a value: the text it stands for, e.g. `--ar 16:9 --stylize 250`")
    try:
        parse(f"x {value}", registry, max_jobs=MAX_OPTION_JOBS)
    except PromptError as exc:
        raise PromptError(f"--{name} would stand for something that does not parse: {exc}") from None
    return name, value


MAX_OPTION_JOBS = 40
"""Jobs the test parse of an option's value may make (its `{}` and `--repeat` are counted against the cap when
the option is used)."""


def canonical(spec: JobSpec, *, with_seed: bool = True) -> str:
    """The spec as Midjourney-style text, e.g. `a lighthouse --ar 16:9 --seed 7 --no people --model sd`.

    Built-in defaults are left out and `--fast` is never written, so `parse(canonical(spec), registry)` with no saved
    defaults gives the spec back (with `seed_random=False`). `with_seed=False` leaves out `--seed`, for a re-roll.
    """
    words = [spec.prompt]
    given = images.images_of(spec.extras)
    if given is not None and given.iw != images.IMAGE_WEIGHT_DEFAULT:
        words.append(f"--iw {given.iw:g}")
    if spec.aspect != DEFAULT_ASPECT:
        words.append(f"--ar {spec.aspect}")
    if with_seed:
        words.append(f"--seed {spec.seed}")
    if spec.negative_prompt:
        words.append(f"--no {spec.negative_prompt}")
    if spec.chaos != DEFAULT_CHAOS:
        words.append(f"--chaos {spec.chaos}")
    if spec.stylize != DEFAULT_STYLIZE:
        words.append(f"--stylize {spec.stylize}")
    if spec.quality != DEFAULT_QUALITY:
        words.append(f"--quality {QUALITIES.get(spec.quality, spec.quality)}")
    if spec.stop != DEFAULT_STOP:
        words.append(f"--stop {spec.stop}")
    if spec.tile:
        words.append("--tile")
    words.append(f"--model {spec.model}")
    if spec.mode == "relax":
        words.append("--relax")
    # A literal `\,` in the text must survive the permutation pass, which turns `\,` into `,`.
    return " ".join(words).replace(permutations.ESCAPED_COMMA, "\\" + permutations.ESCAPED_COMMA)


def image_size(ratio_w: int, ratio_h: int, model: ModelInfo) -> tuple[int, int]:
    """Width and height for `--ar ratio_w:ratio_h` on `model`: multiples of `model.multiple`, within `model.pixels`.

    The largest size whose ratio is within ASPECT_TOLERANCE of the one asked for; where the multiple is too coarse for
    any, the size closest to it. So 1:1 gives the largest square, sqrt(pixels) rounded down to the multiple.
    """
    size = _image_size(ratio_w, ratio_h, model.pixels, model.multiple)
    if size is None:
        raise PromptError(f"model {model.name!r} is configured with a pixel budget too small for any image")
    return size


def guidance_scale(stylize: int, model: ModelInfo) -> float:
    """`--stylize` -> guidance scale: linear from 1.5 at 0 to the model's default at 100, then to twice it at 1000."""
    if stylize <= DEFAULT_STYLIZE:
        scale = 1.5 + (model.guidance - 1.5) * stylize / DEFAULT_STYLIZE
    else:
        scale = model.guidance * (1 + (stylize - DEFAULT_STYLIZE) / (1000 - DEFAULT_STYLIZE))
    return round(scale, 4)


def sampling_steps(quality: float, model: ModelInfo) -> int:
    """`--quality` -> sampling steps: the model's default scaled, at least 2."""
    return max(2, round(model.steps * quality))


# 2. Prompt text and parameters.


def _split(text: str) -> tuple[str, list[tuple[str, str]]]:
    """`"cat --ar 16:9 --tile"` -> ("cat", [("ar", "16:9"), ("tile", "")]): each value runs to the next parameter."""
    found = list(_PARAMETER.finditer(text))
    starts = [match.start() for match in found] + [len(text)]
    values = [_squash(text[match.end() : end]) for match, end in zip(found, starts[1:], strict=True)]
    return _squash(text[: starts[0]]), [(match[1].lower(), value) for match, value in zip(found, values, strict=True)]


def _parts(prompt: str, *, may_be_empty: bool = False) -> tuple[PromptPart, ...]:
    """`"cat::2 dog::1"` -> (("cat", 2.0), ("dog", 1.0)); a weight belongs to the text before its `::`. An image
    prompt may have no text (`may_be_empty`): one empty part."""
    if may_be_empty and not prompt:
        return (PromptPart(""),)
    parts, start = [], 0
    for mark in _WEIGHT_MARK.finditer(prompt):
        weight = float(mark[1]) if mark[1] else 1.0
        if not abs(weight) <= MAX_WEIGHT:
            raise PromptError(f"a '::' weight must be from {-MAX_WEIGHT:g} to {MAX_WEIGHT:g}, not {_show(mark[1])}")
        parts.append(PromptPart(_squash(prompt[start : mark.start()]), weight))
        start = mark.end()
    parts.append(PromptPart(_squash(prompt[start:])))  # the text after the last `::` (nothing: ignored)
    kept = tuple(part for part in parts if part.text)
    if not kept:
        raise PromptError("the prompt is empty: write what to imagine before the parameters")
    total = math.fsum(part.weight for part in kept)
    if total <= 0:
        raise PromptError(f"the '::' weights must add up to more than 0, but they add up to {total:g}")
    return kept


def _collect(params: Iterable[tuple[str, str]], saved: bool = False) -> dict[str, _Given]:
    """Parameters by setting, refusing unknown names and a setting given twice (even under two aliases)."""
    given: dict[str, _Given] = {}
    for name, value in params:
        setting = _SETTING_OF.get(name)
        if setting is None:
            raise _Given(name, value, saved).fail(_unknown_message(name))
        if setting in given:
            first = given[setting].name
            if setting == "mode" and first != name:
                raise _Given(name, value, saved).fail("--fast and --relax cannot both be given: choose one")
            aliases = f" (as --{first} and --{name})" if first != name else ""
            raise _Given(name, value, saved).fail(f"--{name} is given twice{aliases}")
        given[setting] = _Given(name, value, saved)
    return given


def _saved_parameters(defaults: Mapping[str, str]) -> list[tuple[str, str]]:
    """The saved defaults as (name, value) pairs, names as after `--` ("--AR" and "ar" both mean `--ar`)."""
    return [(str(name).strip().lstrip(_DASHES).lower(), _squash(str(value))) for name, value in defaults.items()]


def _unknown_message(name: str) -> str:
    names_of: dict[str, list[str]] = {}
    for known, setting in _SETTING_OF.items():
        names_of.setdefault(setting if setting != "mode" else known, []).append(f"--{known}")
    known = ", ".join("/".join(names) for names in names_of.values())
    if name in _UNSUPPORTED:
        return f"--{name} is a Midjourney parameter this server does not support. Known parameters: {known}"
    close = difflib.get_close_matches(name, _SETTING_OF, n=1, cutoff=0.5)
    hint = f"; did you mean --{close[0]}?" if close else "."
    return f"unknown parameter --{name}{hint} Known parameters: {known}"


# 3-4. Defaults, checks and derived numbers.


def _plan(
    expansion: str, registry: ModelRegistry, saved: dict[str, _Given], max_jobs: int, default_mode: Mode,
    image_rules: images.Rules | None = None,
) -> tuple[dict[str, Any], int, int | None]:
    """One expansion -> (the JobSpec fields but the seed, how many times to repeat it, the `--seed` or None)."""
    given_images, expansion = images.split_images(expansion, image_rules)
    prompt, params = _split(expansion)
    parts = _parts(prompt, may_be_empty=bool(given_images.urls))
    if given_images.urls:
        prompt = " ".join([*(url if w == 1 else f"{url}::{w:g}" for url, w in zip(
            given_images.urls, given_images.weights, strict=True)), prompt]).strip()
    given = {**saved, **_collect(params)}  # what the prompt gives wins over the saved defaults
    for entry in given.values():
        if entry.name in _FLAGS and entry.value:
            raise entry.fail(
                f"--{entry.name} takes no value, so {_show(entry.value)} after it is not understood: "
                "put prompt text before the parameters"
            )
    checks = _checks(max_jobs)
    values = {setting: _checked(entry, *checks[setting]) for setting, entry in given.items() if setting in checks}

    model = registry.default
    if "model" in given:
        entry = given["model"]
        if not entry.value:
            raise entry.fail(f"--{entry.name} needs a value: the name of a model")
        found = registry.get(entry.value)
        if found is None:
            available = ", ".join(registry.all_names())
            raise entry.fail(
                f"--{entry.name} {_show(entry.value)} is not a model served here; choose from: {available}"
            )
        model = found

    ratio_w, ratio_h = values.get("ar", (1, 1))
    width, height = image_size(ratio_w, ratio_h, model)
    stylize = values.get("stylize", DEFAULT_STYLIZE)
    quality = values.get("quality", DEFAULT_QUALITY)
    mode: Mode = default_mode
    if "mode" in given:
        mode = "relax" if given["mode"].name == "relax" else "fast"
    fields = {
        "prompt": prompt,
        "parts": parts,
        "negative_prompt": values.get("no", ""),
        "width": width,
        "height": height,
        "aspect": f"{ratio_w}:{ratio_h}",
        "chaos": values.get("chaos", DEFAULT_CHAOS),
        "stylize": stylize,
        "guidance_scale": guidance_scale(stylize, model),
        "quality": quality,
        "steps": sampling_steps(quality, model),
        "stop": values.get("stop", DEFAULT_STOP),
        "tile": "tile" in given,
        "mode": mode,
        "model": model.name,
    }
    if given_images.urls:
        fields["extras"] = {images.EXTRAS_KEY: given_images.to_extras()}
    return fields, values.get("repeat", 1), values.get("seed")


def _checks(max_jobs: int) -> dict[str, tuple[str, Callable[[str], Any]]]:
    """Setting -> (what its value must be, in words; the function that reads it, None when the value is bad)."""
    return {
        "ar": (f"W:H, two whole numbers with a ratio from 1:{MAX_ASPECT} to {MAX_ASPECT}:1", _ratio),
        "seed": (f"a whole number from 0 to {MAX_SEED}", _whole(0, MAX_SEED)),
        "no": ("the words to leave out, e.g. --no people, text", lambda value: value),
        "chaos": ("a whole number from 0 to 100", _whole(0, 100)),
        "stylize": ("a whole number from 0 to 1000", _whole(0, 1000)),
        "quality": (f"one of {', '.join(QUALITIES.values())}", _quality),
        "stop": ("a whole number from 10 to 100", _whole(10, 100)),
        "repeat": (f"a whole number from 1 to {max_jobs}", _whole(1, max_jobs)),
    }


def _checked(entry: _Given, needs: str, read: Callable[[str], Any]) -> Any:
    if not entry.value:
        raise entry.fail(f"--{entry.name} needs a value: {needs}")
    value = read(entry.value)
    if value is None:
        raise entry.fail(f"--{entry.name} must be {needs}, not {_show(entry.value)}")
    return value


def _whole(low: int, high: int) -> Callable[[str], int | None]:
    def read(text: str) -> int | None:
        number = int(text) if _WHOLE.fullmatch(text) else None
        return number if number is not None and low <= number <= high else None

    return read


def _ratio(text: str) -> tuple[int, int] | None:
    match = _RATIO.fullmatch(text)
    if match is None:
        return None
    width, height = int(match[1]), int(match[2])
    if width == 0 or height == 0 or width > MAX_ASPECT * height or height > MAX_ASPECT * width:
        return None
    return width, height


def _quality(text: str) -> float | None:
    if not _DECIMAL.fullmatch(text) or not any(char.isdigit() for char in text):
        return None
    value = float(text)
    return value if value in QUALITIES else None


@functools.lru_cache(maxsize=256)
def _image_size(ratio_w: int, ratio_h: int, pixels: int, multiple: int) -> tuple[int, int] | None:
    """See `image_size`: tries every width; for each, the heights next to the ideal one and the tallest that fits."""
    within: tuple[int, float, int, int] | None = None  # (area, -error, w, h): the largest within tolerance
    closest: tuple[float, int, int, int] | None = None  # (error, -area, w, h): the closest ratio of all
    width = multiple
    # Wider than 2 * sqrt(pixels * ratio) would be off by 4x or more, worse than the square of side `multiple`.
    while width * multiple <= pixels and width * width * ratio_h <= 4 * pixels * ratio_w:
        tallest = pixels // width // multiple * multiple
        below = width * ratio_h // (ratio_w * multiple) * multiple
        for height in {below, below + multiple, tallest}:
            if multiple <= height <= tallest:
                error = max(width * ratio_h / (height * ratio_w), height * ratio_w / (width * ratio_h)) - 1
                if error <= ASPECT_TOLERANCE:
                    within = max(within or (0, 0.0, 0, 0), (width * height, -error, width, height))
                closest = min(closest or (math.inf, 0, 0, 0), (error, -width * height, width, height))
        width += multiple
    best = within or closest
    return (best[2], best[3]) if best else None


# Helpers for messages and text.


def _check_job_count(jobs: int, max_jobs: int) -> None:
    if jobs > max_jobs:
        count = f"{jobs}" if jobs < 10**6 else "over a million"
        raise PromptError(
            f"this prompt would make {count} jobs (permutations x --repeat); one command may make at most {max_jobs}"
        )


def _squash(text: str) -> str:
    """Whitespace runs -> one space, none at the ends."""
    return " ".join(text.split())


def _show(value: str, limit: int = 40) -> str:
    """A value quoted for a message, cut short when long."""
    return repr(value if len(value) <= limit else value[: limit - 3] + "...")
