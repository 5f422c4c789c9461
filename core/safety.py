"""What the worker must do for one job's safety, set by the bot from the guild's NSFW policy and the channel, carried
in `JobSpec.extras["safety"]`: the negative prompt added at render time, and whether (and how) outputs are checked."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

from core.spec import JobSpec

FLAGGED_ACTIONS = ("blur", "withhold")
"""What happens to an image the safety classifier flags: posted blurred as a spoiler, or replaced by a placeholder."""


@dataclass(frozen=True)
class Safety:
    """The safety negative prompt added at render time, and whether (and how) the outputs are checked."""

    negative_prompt: str = ""
    check_outputs: bool = False
    action: str = "blur"  # one of FLAGGED_ACTIONS


def with_safety(spec: JobSpec, safety: Safety) -> JobSpec:
    """The spec carrying `safety` in its extras (the spec's own prompt and `--no` text are unchanged)."""
    return dataclasses.replace(spec, extras={**spec.extras, "safety": dataclasses.asdict(safety)})


def safety_of(spec: JobSpec) -> Safety:
    """The safety a spec carries (none: no negative prompt added, outputs not checked)."""
    data = spec.extras.get("safety")
    if not isinstance(data, dict):
        return Safety()
    action = str(data.get("action", "blur"))
    return Safety(str(data.get("negative_prompt", "")), bool(data.get("check_outputs")),
                  action if action in FLAGGED_ACTIONS else "withhold")


def rendered_negative(spec: JobSpec) -> str:
    """The negative prompt the model sees: the member's `--no` text, then the safety negative prompt."""
    return ", ".join(text for text in (spec.negative_prompt, safety_of(spec).negative_prompt) if text)


def parse_flags(raw: object) -> tuple[str, tuple[int, ...]]:
    """(action, image indices) of a job's replaced images from `keys.job_flagged`'s value; ("", ()) for none."""
    if not isinstance(raw, bytes | str):
        return "", ()
    data = json.loads(raw)
    return str(data.get("action", "")), tuple(int(i) for i in data.get("flagged", ()))
