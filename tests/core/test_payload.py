"""`core.payload.JobPayload.from_json`, the worker's door: every payload `core.queue.payload` writes comes back
unchanged, and arbitrary mutations of one (extra keys, wrong types, huge strings and lists, NaN and infinity,
negative sizes, bad ids, deep nesting) are refused with `MalformedPayload` and never with anything else."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import queue
from core.canvas import DIRECTIONS, REGIONS, ZOOM_MAX, ZOOM_MIN, Edit
from core.errors import MalformedPayload
from core.models import tiny_model
from core.payload import MAX_LIST_ITEMS, MAX_PAYLOAD_CHARS, MAX_STRING_CHARS, JobPayload, check_fits
from core.safety import Safety, with_safety
from core.spec import BASE_SIZE, MAX_PARTS, MAX_SEED, QUALITIES, JobSpec, PromptPart
from tests.core.test_jobs import make_spec

EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

job_ids = st.text("0123456789abcdef", min_size=32, max_size=32)
texts = st.text(max_size=200)
parts = st.builds(PromptPart, texts, st.floats(-1000, 1000, allow_nan=False))


@st.composite
def specs(draw: st.DrawFn) -> JobSpec:
    spec = JobSpec(
        prompt=draw(texts),
        parts=tuple(draw(st.lists(parts, min_size=1, max_size=8))),
        negative_prompt=draw(texts),
        width=8 * draw(st.integers(1, 16)),
        height=8 * draw(st.integers(1, 16)),
        aspect=f"{draw(st.integers(1, 999))}:{draw(st.integers(1, 999))}",
        seed=draw(st.integers(0, MAX_SEED)),
        chaos=draw(st.integers(0, 100)),
        stylize=draw(st.integers(0, 1000)),
        guidance_scale=draw(st.floats(0, 100, allow_nan=False)),
        quality=draw(st.sampled_from(QUALITIES)),
        steps=draw(st.integers(1, 1000)),
        stop=draw(st.integers(10, 100)),
        tile=draw(st.booleans()),
        mode=draw(st.sampled_from(["fast", "relax"])),
        model=draw(st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True)),
        seed_random=draw(st.booleans()),
    )
    if draw(st.booleans()):
        spec = with_safety(spec, Safety(draw(texts), draw(st.booleans()), draw(st.sampled_from(["blur", "withhold"]))))
    return spec


edits = st.one_of(
    st.builds(Edit, st.just("zoom"), zoom=st.floats(ZOOM_MIN, ZOOM_MAX)),
    st.just(Edit("square")),
    st.builds(Edit, st.just("pan"), direction=st.sampled_from(list(DIRECTIONS))),
    st.builds(Edit, st.just("region"), region=st.sampled_from(list(REGIONS))),
)


@st.composite
def payloads(draw: st.DrawFn) -> dict[str, Any]:
    """A payload as the bot writes it, through JSON as RQ stores it."""
    kind = draw(st.sampled_from(queue.KINDS))
    new = kind in ("grid", "describe")  # no source, or a re-roll's parent
    source: dict[str, Any] = {"job_id": draw(job_ids)} if new and draw(st.booleans()) else {}
    if kind not in ("grid", "describe"):
        source = {"job_id": draw(job_ids), "index": draw(st.integers(1, 4))}
        if kind == "vary":
            source["strength"] = draw(st.sampled_from(["strong", "subtle"]))
        if kind == "edit":
            source.update(draw(edits).to_source())
    written = queue.payload(draw(job_ids), draw(specs()), draw(st.sampled_from(["discord:42", "cli:me", "o"])),
                            kind=kind, source=source)
    return json.loads(json.dumps(written))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
"""Any JSON value, NaN and infinity included (RQ's JSON decoder accepts them)."""

hostile = st.one_of(
    json_values,
    st.sampled_from([math.nan, math.inf, -math.inf, -1, -64, 0, 2**64, -(2**64), 1e308, True, "", "x" * 70_000]),
    st.just(["x"] * (MAX_LIST_ITEMS + 1)),
    st.just([[[[[[[["deep"]]]]]]]]),
    st.just({"nested": {"a": {"b": {"c": {"d": {"e": {}}}}}}}),
)
"""Values a forged payload might put anywhere."""


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside `value` (dict keys and list indexes)."""
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*path, index))
    return found


def _set(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _set(value[head], rest, new)}
    return [_set(v, rest, new) if i == head else v for i, v in enumerate(value)]


def _read(data: Any) -> JobPayload | None:
    """The checked payload, or None when it was refused; any other exception fails the test."""
    try:
        return JobPayload.from_json(data)
    except MalformedPayload:
        return None


@EXAMPLES
@given(payloads())
def test_every_payload_the_bot_writes_round_trips(data: dict[str, Any]) -> None:
    """A payload from `core.queue.payload`, through JSON, is accepted and gives back the same spec, ids and source."""
    checked = JobPayload.from_json(data)
    assert checked.spec == JobSpec.from_dict(data["spec"]) and checked.spec.to_dict() == data["spec"]
    assert (checked.job_id, checked.owner, checked.kind) == (data["job_id"], data["owner"], data["kind"])
    expected = dict(data["source"])
    if checked.kind == "vary":
        expected.setdefault("strength", "strong")
    assert checked.source_dict() == expected


@EXAMPLES
@given(payloads(), st.data())
def test_any_value_anywhere_is_refused_or_checked_never_crashes(data: dict[str, Any], draw: st.DataObject) -> None:
    """Any value put at any place in a valid payload either passes every check (and reads back as written) or is
    refused with MalformedPayload; nothing else is ever raised."""
    path = draw.draw(st.sampled_from(_paths(data)))
    mutated = _set(data, path, draw.draw(hostile))
    checked = _read(mutated)
    if checked is not None:
        assert JobPayload.from_json(json.loads(json.dumps(queue.payload(
            checked.job_id, checked.spec, checked.owner, kind=checked.kind, source=checked.source_dict())))) == checked


@EXAMPLES
@given(payloads(), st.data(), st.text(min_size=1, max_size=20), json_values)
def test_an_unknown_field_is_refused_at_any_level(
    data: dict[str, Any], draw: st.DataObject, key: str, value: Any
) -> None:
    """An extra key in the payload, its spec, a prompt part, the safety extras or the source is refused."""
    objects = [p for p in _paths(data) if isinstance(_get(data, p), dict)]
    where = draw.draw(st.sampled_from(objects))
    target = _get(data, where)
    if key in target:
        return
    assert _read(_set(data, where, {**target, key: value})) is None


@EXAMPLES
@given(payloads(), st.data())
def test_a_missing_field_is_refused(data: dict[str, Any], draw: st.DataObject) -> None:
    """Dropping a required key (top level, spec, a part, source) is refused."""
    optional = {("spec", "seed_random"), ("spec", "extras"), ("source", "strength")}
    if data["kind"] in ("grid", "describe"):
        optional.add(("source", "job_id"))  # a grid without a parent is a new grid, not a re-roll
    keyed = [p for p in _paths(data) if p and isinstance(p[-1], str) and p[-2:] not in optional
             and not (len(p) >= 2 and p[-2] == "extras") and not (len(p) >= 3 and p[-3] == "extras")]
    path = draw.draw(st.sampled_from(keyed))
    parent = _get(data, path[:-1])
    assert _read(_set(data, path[:-1], {k: v for k, v in parent.items() if k != path[-1]})) is None


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


BAD_FIELDS = [
    (("job_id",), "ABCDEF0123456789ABCDEF0123456789"),
    (("job_id",), "0" * 31),
    (("job_id",), "../../etc/passwd"),
    (("job_id",), 12345),
    (("owner",), ""),
    (("owner",), "discord:1\n2"),
    (("owner",), "x" * 200),
    (("kind",), "os.system"),
    (("spec", "width"), -64),
    (("spec", "width"), 0),
    (("spec", "width"), 64.0),
    (("spec", "height"), 10**9),
    (("spec", "seed"), -1),
    (("spec", "seed"), MAX_SEED + 1),
    (("spec", "steps"), 0),
    (("spec", "steps"), 10**6),
    (("spec", "steps"), True),
    (("spec", "guidance_scale"), math.nan),
    (("spec", "guidance_scale"), math.inf),
    (("spec", "guidance_scale"), -1.0),
    (("spec", "quality"), 3),
    (("spec", "stop"), 5),
    (("spec", "chaos"), 101),
    (("spec", "stylize"), -5),
    (("spec", "mode"), "turbo"),
    (("spec", "model"), "../../x"),
    (("spec", "model"), "m" * 65),
    (("spec", "aspect"), "16/9"),
    (("spec", "tile"), "yes"),
    (("spec", "prompt"), "x" * (MAX_STRING_CHARS + 1)),
    (("spec", "parts"), []),
    (("spec", "parts"), [{"text": "a", "weight": 1.0}] * (MAX_PARTS + 1)),
    (("spec", "parts", 0, "weight"), math.nan),
    (("spec", "parts", 0, "weight"), 1e9),
    (("spec", "extras"), {"unknown": 1}),
    (("spec", "extras"), {"safety": {"check_outputs": "yes"}}),
    (("spec", "extras"), {"safety": {"negative_prompt": 5}}),
    (("source",), {"job_id": "a" * 32, "index": 1}),  # a grid (re-roll) names no image
    (("source",), {"job_id": "not an id"}),
    (("spec",), "not an object"),
    (("spec",), None),
]


@pytest.mark.parametrize(("path", "value"), BAD_FIELDS, ids=[f"{'.'.join(map(str, p))}={str(v)[:20]!r}"
                                                              for p, v in BAD_FIELDS])
def test_each_bad_field_is_refused_naming_it(path: tuple[Any, ...], value: Any) -> None:
    """A table of the forgeries the hardening issue names: each is refused, and the message names the field."""
    good = json.loads(json.dumps(queue.payload("ab" * 16, _spec(), "discord:42")))
    with pytest.raises(MalformedPayload) as refused:
        JobPayload.from_json(_set(good, path, value))
    name = next(str(p) for p in reversed(path) if isinstance(p, str))
    assert name in str(refused.value)


@pytest.mark.parametrize(
    ("kind", "source"),
    [
        ("upscale", {}),
        ("upscale", {"job_id": "ab" * 16, "index": 0}),
        ("upscale", {"job_id": "ab" * 16, "index": 5}),
        ("upscale", {"job_id": "ab" * 16, "index": "1"}),
        ("upscale", {"job_id": "AB" * 16, "index": 1}),
        ("upscale", {"job_id": "ab" * 16, "index": 1, "strength": "strong"}),
        ("vary", {"job_id": "ab" * 16, "index": 1, "strength": "wild"}),
        ("vary", []),
    ],
)
def test_bad_sources_are_refused(kind: str, source: Any) -> None:
    """A button job's source must name a parent job id, an image 1-4 and (variations only) a known strength."""
    good = json.loads(json.dumps(queue.payload("ab" * 16, _spec(), "o", kind=kind,
                                               source={"job_id": "cd" * 16, "index": 2})))
    assert JobPayload.from_json(good).source_dict()["index"] == 2
    with pytest.raises(MalformedPayload):
        JobPayload.from_json({**good, "source": source})


def test_whole_payload_and_structure_caps() -> None:
    """Over MAX_PAYLOAD_CHARS in all (even with each string under its cap), a non-object, or a non-JSON value
    (a set, bytes) is refused."""
    good = json.loads(json.dumps(queue.payload("ab" * 16, _spec(), "o")))
    many = [{"text": "y" * (MAX_STRING_CHARS // 2), "weight": 1.0}] * 40
    assert 40 * MAX_STRING_CHARS // 2 > MAX_PAYLOAD_CHARS
    for bad in ({**good, "spec": {**good["spec"], "parts": many}}, [good], "payload", None, {**good, "job_id": b"x"},
                {**good, "owner": {1, 2}}):
        with pytest.raises(MalformedPayload):
            JobPayload.from_json(bad)


def test_size_must_fit_the_serving_model() -> None:
    """`check_fits`: a size that is not a multiple of the model's, or over its pixel budget, is refused."""
    model = tiny_model()
    check_fits(_spec(), model)
    for width, height in ((60, 64), (128, 64)):
        with pytest.raises(MalformedPayload):
            check_fits(JobSpec.from_dict({**_spec().to_dict(), "width": width, "height": height}), model)


def _spec() -> JobSpec:
    return JobSpec(prompt="a red cat", parts=(PromptPart("a red cat"),), negative_prompt="", width=64, height=64,
                   aspect="1:1", seed=7, chaos=0, stylize=100, guidance_scale=5.0, quality=1.0, steps=4, stop=100,
                   tile=False, mode="fast", model="tiny")


def test_an_upscale_2x_spec_keeps_its_grids_size() -> None:
    """An Upscale (2x) job's spec carries the size of the grid it came from (`BASE_SIZE`): accepted when it is two
    whole sides, refused otherwise."""
    spec = dataclasses.replace(make_spec(width=128, height=128), extras={BASE_SIZE: [64, 64]})
    assert JobSpec.from_dict(spec.to_dict()).extras == {BASE_SIZE: [64, 64]}
    for bad in ([64], [64, "64"], [0, 64], "64x64"):
        with pytest.raises(MalformedPayload, match=BASE_SIZE):
            JobSpec.from_dict({**spec.to_dict(), "extras": {BASE_SIZE: bad}})


def test_an_upscale_2x_may_go_past_the_grid_budget_up_to_the_models_upscale_limit() -> None:
    """A 2x job renders twice its source's sides: `check_fits` allows it up to `max_upscaled_pixels`, not past it,
    and a grid of that size is still refused."""
    model = tiny_model()  # 64x64 grids, 2x up to 128x128
    big = JobSpec.from_dict({**_spec().to_dict(), "width": 128, "height": 128})
    check_fits(big, model, "upscale2x")
    with pytest.raises(MalformedPayload, match="over the model's"):
        check_fits(big, model, "grid")
    bigger = JobSpec.from_dict({**_spec().to_dict(), "width": 256, "height": 256})
    with pytest.raises(MalformedPayload, match="over the model's"):
        check_fits(bigger, model, "upscale2x")
