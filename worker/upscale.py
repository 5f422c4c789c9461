"""Upscale (2x) with the diffusers latent upscaler (`WORKER_UPSCALER`): one call of a
`StableDiffusionLatentUpscalePipeline` under the job's prompt, 2x the size of the image it is given.

The upscaler (Crowson's sd-x2-latent-upscaler) denoises latents of twice the size conditioned on the image's own
latents, so it adds detail without redrawing content, unlike the fallback (a Lanczos resize and a light img2img
pass, `worker.kinds`). `worker.engine.Engine.upscale` runs this inside its guard (cancel, OOM, `--tile`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from diffusers import StableDiffusionLatentUpscalePipeline
from PIL import Image

from core.errors import GenerationFailed, JobCancelled
from core.spec import JobSpec, PromptPart

UPSCALER_GUIDANCE_SCALE = 0.0
"""No classifier-free guidance: the sd-x2-latent-upscaler model card's setting. The low-resolution latents carry
the content and the prompt only steers texture, so the negative prompt is not used (the output check still runs)."""

INVALID_UPSCALE = "the 2x upscaler produced an invalid image (NaN); tell an admin (WORKER_UPSCALER)"


def upscale_latent(
    pipe: StableDiffusionLatentUpscalePipeline,
    spec: JobSpec,
    image: Image.Image,
    on_step: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> Image.Image:
    """`image` at twice its size (sides rounded down to the VAE factor first), in `spec.steps` Euler steps.

    Args:
        spec: the prompt parts, steps and seed are used.
        on_step: called after every step with (steps done, steps in total).
        should_cancel: polled after every step; once True the call stops.

    Raises:
        JobCancelled: `should_cancel()` turned True.
        GenerationFailed: the upscaler produced NaN or inf.
    """
    # 1. the prompt: `::` parts -> weighted mean of their embeddings and pooled embeddings
    prompt_embeds, pooled = encode_weighted(pipe, spec.parts)
    # 2. one CPU generator, seeded like image 1 of the job's grid: it samples the image's latents and the noise
    generator = torch.Generator("cpu").manual_seed(spec.seeds()[0])

    # 3. the denoising loop; this pipeline has the older per-step `callback` (no callback_on_step_end)
    def step_end(i: int, t: Any, latents: torch.Tensor) -> None:
        if should_cancel is not None and should_cancel():
            raise JobCancelled("the job was cancelled")
        if on_step is not None:
            on_step(i + 1, spec.steps)

    output = pipe(
        prompt_embeds=prompt_embeds,
        pooled_prompt_embeds=pooled,
        image=image.convert("RGB"),
        num_inference_steps=spec.steps,
        guidance_scale=UPSCALER_GUIDANCE_SCALE,
        generator=generator,
        output_type="pt",
        callback=step_end,
        callback_steps=1,
    )
    # 4. reject NaN/inf rather than post a black square
    images = output.images
    if not torch.isfinite(images).all():
        raise GenerationFailed(INVALID_UPSCALE)
    return pipe.image_processor.numpy_to_pil(pipe.image_processor.pt_to_numpy(images))[0]


def encode_weighted(
    pipe: StableDiffusionLatentUpscalePipeline, parts: Sequence[PromptPart]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(prompt_embeds, pooled_prompt_embeds) of batch 1: each part encoded alone, averaged with weights w_i / sum(w),
    as `worker.sampling.encode_weighted_prompt` does for the base model."""
    total = sum(part.weight for part in parts)
    if not parts or abs(total) < 1e-6:
        raise GenerationFailed("the weights of a multi-prompt must not add up to 0")
    embeds: torch.Tensor | float = 0.0
    pooled: torch.Tensor | float = 0.0
    for part in parts:
        part_embeds, _, part_pooled, _ = pipe.encode_prompt(part.text, pipe.device, False)
        embeds = embeds + (part.weight / total) * part_embeds
        pooled = pooled + (part.weight / total) * part_pooled
    assert isinstance(embeds, torch.Tensor) and isinstance(pooled, torch.Tensor)
    return embeds, pooled
