"""Worker fixtures: one tiny engine per test session, and the job spec of a small tiny-model grid."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from core.models import tiny_model
from core.spec import JobSpec, PromptPart
from worker.engine import Engine


@pytest.fixture(scope="session")
def tiny_engine() -> Engine:
    """An Engine on the tiny random pipeline (CPU), shared by the session: render with it, do not modify it."""
    return Engine.load(tiny_model(), device="cpu")


@pytest.fixture
def tiny_spec() -> JobSpec:
    """A 64x64, 4-step grid for the tiny model; vary it with `dataclasses.replace`."""
    info = tiny_model()
    return JobSpec(
        prompt="a red cat",
        parts=(PromptPart("a red cat"),),
        negative_prompt="",
        width=64,
        height=64,
        aspect="1:1",
        seed=7,
        chaos=0,
        stylize=100,
        guidance_scale=info.guidance,
        quality=1,
        steps=info.steps,
        stop=100,
        tile=False,
        mode="fast",
        model=info.name,
    )


@pytest.fixture
def unet_calls(tiny_engine: Engine) -> Iterator[list[int]]:
    """A list that grows by one item per UNet forward pass (one per sampling step: guidance is batched)."""
    calls: list[int] = []
    handle = tiny_engine.pipe.unet.register_forward_hook(lambda *_: calls.append(1))
    yield calls
    handle.remove()
