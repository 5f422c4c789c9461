"""Several jobs' grids in one sampler call: `Engine.render_batch` (README, Batching).

Job j owns rows 4j..4j+3 of the batch. Each job keeps what it has alone: its prompt parts and negative prompt (its
own text embeddings), its seeds and `--chaos` (its own starting noise, `initial_noise`), for a variation its source
image (its rows start from it, noised by its own seeds), its progress and previews (sliced from the batch's
latents), and its cancel: a cancelled job's rows are dropped (computed to the end of the call, since the
scheduler's state spans the batch, but never returned, and its job is told at once). What the rows share is the
call itself: size, steps, guidance, `--tile`, `--stop` and a variation's strength (`worker.claim.BatchKey`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import DiffusionPipeline
from PIL import Image

from core.errors import GenerationFailed, JobCancelled
from core.safety import rendered_negative
from core.spec import JobSpec
from worker.grid import compose_grid
from worker.preview import latents_to_rgb
from worker.sampling import (
    INVALID_IMAGE,
    ProgressCallback,
    encode_weighted_prompt,
    initial_noise,
    predicted_x0,
    steps_to_run,
)


@dataclass(frozen=True)
class Rows:
    """One job in a batch: its spec and its per-step hooks."""

    spec: JobSpec
    on_progress: ProgressCallback | None = None
    should_cancel: Callable[[], bool] | None = None
    on_dropped: Callable[[], None] | None = None  # called once, within a step of its cancel being seen
    image: Image.Image | None = None  # a variation's source image, of the spec's size (image-to-image batches)


RowsResult = list[Image.Image] | None | GenerationFailed
"""A job's images; None when it was cancelled (its rows dropped); GenerationFailed when its rows are NaN or inf."""


def sample_batch(pipe: DiffusionPipeline, jobs: Sequence[Rows], preview_interval_s: float,
                 extra: dict[str, Any] | None = None, strength: float | None = None) -> list[RowsResult]:
    """One pipeline call rendering every job's four images; results in the order of `jobs`. `extra`: more arguments
    of the call (an IP-Adapter's, `worker.adapter`). With `strength`, `pipe` is an image-to-image pipeline and each
    job's rows start from its `Rows.image` noised to `strength` (as `Engine.image_to_image` does for one job).

    Raises:
        JobCancelled: every job was cancelled (the call stops within one step).
    """
    results: list[RowsResult] = [None] * len(jobs)
    guidance = jobs[0].spec.guidance_scale
    # 1. each job's prompt -> its embeddings (a job whose prompt cannot be encoded fails alone, before the call)
    embeds: dict[int, dict[str, torch.Tensor]] = {}
    for j, rows in enumerate(jobs):
        try:
            embeds[j] = encode_weighted_prompt(pipe, rows.spec.parts, rendered_negative(rows.spec), guidance)
        except GenerationFailed as exc:
            results[j] = exc
    called = [j for j in range(len(jobs)) if j in embeds]
    if not called:
        return results
    for j, images in zip(called, _sample(pipe, [jobs[j] for j in called], [embeds[j] for j in called],
                                         preview_interval_s, extra or {}, strength), strict=True):
        results[j] = images
    return results


def _sample(pipe: DiffusionPipeline, jobs: Sequence[Rows], embeds: Sequence[dict[str, torch.Tensor]],
            preview_interval_s: float, extra: dict[str, Any], strength: float | None) -> list[RowsResult]:
    first = jobs[0].spec
    # 1. the embeddings, each job's repeated for its four rows, concatenated in job order
    batch = {name: torch.cat([e[name] for e in embeds for _ in range(4)]) for name in embeds[0]}
    # 2. each job's starting point from its own seeds, as a lone render would draw it: text to image, its noise
    #    (with its chaos); image to image, its source image, which the pipeline noises with the same generators
    generators = [torch.Generator("cpu").manual_seed(seed) for r in jobs for seed in r.spec.seeds()]
    if strength is None:
        start: dict[str, Any] = {"width": first.width, "height": first.height, "latents": torch.cat(
            [initial_noise(pipe, r.spec, generators[4 * j: 4 * j + 4]) for j, r in enumerate(jobs)])}
    else:
        start = {"image": [r.image for r in jobs for _ in range(4)], "strength": strength}
    # 3. sample once, each job's progress, previews and cancel in the per-step callback
    step_end = _BatchStepEnd(jobs, first.stop, preview_interval_s)
    output = pipe(
        **batch,
        **extra,
        **start,
        generator=generators,
        num_inference_steps=first.steps,
        guidance_scale=first.guidance_scale,
        output_type="pt",
        callback_on_step_end=step_end,
        callback_on_step_end_tensor_inputs=["latents"],
    )
    # 4. per job: dropped, NaN/inf (that job fails, the others do not), or its four images
    images = output.images
    results: list[RowsResult] = []
    for j in range(len(jobs)):
        rows = images[4 * j: 4 * j + 4]
        if j in step_end.dropped:
            results.append(None)
        elif not torch.isfinite(rows).all():
            results.append(GenerationFailed(INVALID_IMAGE))
        else:
            results.append(pipe.image_processor.numpy_to_pil(pipe.image_processor.pt_to_numpy(rows)))
    return results


class _BatchStepEnd:
    """`callback_on_step_end` of a batch: per job, cancel and progress with its rows' preview; `--stop` for all."""

    def __init__(self, jobs: Sequence[Rows], stop_percent: int, preview_interval_s: float) -> None:
        self.jobs = jobs
        self.stop_percent = stop_percent
        self.preview_interval_s = preview_interval_s
        self.last_preview = time.monotonic()
        self.dropped: set[int] = set()

    def __call__(self, pipe: DiffusionPipeline, i: int, t: Any, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
        latents = tensors["latents"]
        # 1. cancellation: a cancelled job's rows are dropped and its job told; all cancelled -> stop the call
        for j, rows in enumerate(self.jobs):
            if j not in self.dropped and rows.should_cancel is not None and rows.should_cancel():
                self.dropped.add(j)
                if rows.on_dropped is not None:
                    rows.on_dropped()
        if len(self.dropped) == len(self.jobs):
            raise JobCancelled("every job of the batch was cancelled")
        # 2. `--stop N` (shared by the batch): after N% of the steps, jump to the x0 estimate, skip the rest
        total = steps_to_run(pipe.num_timesteps, self.stop_percent)
        done = i + 1
        last = done >= total
        if last and total < pipe.num_timesteps:
            latents = predicted_x0(pipe, latents)
            pipe._interrupt = True
        # 3. progress per job, with a preview of its own rows at most every `preview_interval_s`
        estimate = None
        if not last and time.monotonic() - self.last_preview >= self.preview_interval_s:
            estimate = predicted_x0(pipe, latents)
            self.last_preview = time.monotonic()
        for j, rows in enumerate(self.jobs):
            if j in self.dropped or rows.on_progress is None:
                continue
            preview = None
            if estimate is not None:
                small = latents_to_rgb(estimate[4 * j: 4 * j + 4])
                preview = compose_grid(small) if small else None
            rows.on_progress(done, total, preview)
        return {"latents": latents}
