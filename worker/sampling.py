"""The pieces of a sampler call that a lone grid and a batch of grids share: the prompt's embeddings, the starting
noise, `--stop`, `--tile`, and the per-step callback (cancel, progress, previews). `worker.engine` and
`worker.batch_render` make their pipeline calls from these.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from core.errors import GenerationFailed, JobCancelled
from core.spec import JobSpec, PromptPart
from worker.grid import compose_grid
from worker.preview import latents_to_rgb

ProgressCallback = Callable[[int, int, Image.Image | None], None]
"""on_progress(steps done, steps in total, preview image or None)."""

SHARED_NOISE_STREAM = 1
"""Tags the numpy stream (`numpy.random.SeedSequence((seed, SHARED_NOISE_STREAM))`) the noise a grid's images share
under `--chaos` is drawn from. Not a torch generator: torch's CPU generator keeps only a seed's low 32 bits, so the
former torch seed `spec.seed + 2**32` gave image 0 its own noise twice over (starting noise of std 1.41, one tile in
four speckled; model/README.md, "Speckled backgrounds")."""

INVALID_IMAGE = "the model produced an invalid image (NaN); this model or its settings are broken, tell an admin"


def encode_weighted_prompt(
    pipe: DiffusionPipeline, parts: Sequence[PromptPart], negative_prompt: str, guidance_scale: float
) -> dict[str, torch.Tensor]:
    """Pipeline keyword arguments (`prompt_embeds`, ...) of batch 1 for a multi-prompt.

    Each part is encoded alone; the positive embeddings are averaged with weights w_i / sum(w) (negative weights
    push away from a part). The negative embeddings, of `negative_prompt` ("" = unconditional), are present when
    `guidance_scale` > 1, i.e. when the pipeline uses classifier-free guidance.
    """
    total = sum(part.weight for part in parts)
    if not parts or abs(total) < 1e-6:
        raise GenerationFailed("the weights of a multi-prompt must not add up to 0")
    use_guidance = guidance_scale > 1
    mixed: dict[str, torch.Tensor] = {}
    for part in parts:
        encoded = pipe.encode_prompt(
            prompt=part.text,
            device=pipe.device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=use_guidance,
            negative_prompt=negative_prompt or None,
        )
        # SD 1.x/2.x return (positive, negative); SDXL adds (pooled positive, pooled negative).
        names = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")
        for name, tensor in zip(names, encoded, strict=False):
            if tensor is None:
                continue
            if name.startswith("negative_"):
                mixed.setdefault(name, tensor)  # the same for every part
            else:
                mixed[name] = mixed.get(name, 0) + (part.weight / total) * tensor
    return mixed


def initial_noise(pipe: DiffusionPipeline, spec: JobSpec, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """The starting latents: noise_k = sqrt(1 - r) * shared + sqrt(r) * own_k, with r = 0.5 + 0.5 * chaos / 100.

    `--chaos` 0 makes the four images share half their noise variance (similar compositions); 100 makes them
    independent. The sum of two independent unit Gaussians with squared weights (1 - r) + r = 1 is again a unit
    Gaussian, so every image starts from noise the sampler expects, provided `shared` is independent of every
    `own_k`: it comes from its own numpy stream (`shared_noise`), `own_k` from image k's torch generator, so image k
    never depends on the others.
    """
    vae_factor = pipe.vae_scale_factor
    shape = (1, pipe.unet.config.in_channels, spec.height // vae_factor, spec.width // vae_factor)
    shared = shared_noise(spec.seed, shape)
    own = torch.cat([randn_tensor(shape, generator=g, device=torch.device("cpu"), dtype=torch.float32)
                     for g in generators])
    r = 0.5 + 0.5 * spec.chaos / 100
    noise = math.sqrt(1 - r) * shared + math.sqrt(r) * own
    return noise.to(pipe.device, pipe.unet.dtype)


def shared_noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The standard normal noise a grid seeded `seed` shares across its images (`initial_noise`), from the numpy
    stream (seed, SHARED_NOISE_STREAM): independent of the torch generators that draw each image's own noise."""
    rng = np.random.default_rng(np.random.SeedSequence((seed, SHARED_NOISE_STREAM)))
    return torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))


def steps_to_run(total: int, stop_percent: int) -> int:
    """Sampling steps `--stop N` keeps: N% of `total`, rounded half up, at least 1."""
    return max(1, min(total, math.floor(total * stop_percent / 100 + 0.5)))


def predicted_x0(pipe: DiffusionPipeline, latents: torch.Tensor) -> torch.Tensor:
    """The sampler's current estimate of the clean latents.

    DPM-Solver++ converts every model output to a data prediction x0 and keeps the latest in `model_outputs[-1]`
    (Lu et al. 2022, "DPM-Solver++", eq. 4; diffusers `DPMSolverMultistepScheduler.convert_model_output`). Other
    schedulers keep no such estimate: their current latents are the best at hand.
    """
    scheduler = pipe.scheduler
    if getattr(scheduler.config, "algorithm_type", "") in ("dpmsolver++", "sde-dpmsolver++"):
        outputs = getattr(scheduler, "model_outputs", None)
        if outputs and outputs[-1] is not None and outputs[-1].shape == latents.shape:
            return outputs[-1]
    return latents


@contextmanager
def circular_padding(pipe: DiffusionPipeline, enabled: bool = True) -> Iterator[None]:
    """`--tile`: every Conv2d of the UNet and the VAE pads circularly, so the image is a function on a torus and
    wraps around at its edges. The padding modes are restored on exit, also on error."""
    if not enabled:
        yield
        return
    convs = [
        module
        for component in (getattr(pipe, "unet", None), getattr(pipe, "vae", None))
        if component is not None
        for module in component.modules()
        if isinstance(module, torch.nn.Conv2d)
    ]
    saved = [conv.padding_mode for conv in convs]
    try:
        for conv in convs:
            conv.padding_mode = "circular"
        yield
    finally:
        for conv, mode in zip(convs, saved, strict=True):
            conv.padding_mode = mode


class StepEnd:
    """The pipeline's `callback_on_step_end`: cancellation, `--stop`, the NaN check and progress, once per step."""

    def __init__(
        self,
        stop_percent: int,
        on_progress: ProgressCallback | None,
        should_cancel: Callable[[], bool] | None,
        preview_interval_s: float,
    ) -> None:
        self.stop_percent = stop_percent
        self.on_progress = on_progress
        self.should_cancel = should_cancel
        self.preview_interval_s = preview_interval_s
        self.last_preview = time.monotonic()

    def __call__(self, pipe: DiffusionPipeline, i: int, t: Any, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
        latents = tensors["latents"]
        # 1. cancellation: raising here leaves the denoising loop within one step
        if self.should_cancel is not None and self.should_cancel():
            raise JobCancelled("the job was cancelled")
        # 2. `--stop N`: after N% of the steps, jump to the sampler's x0 estimate and skip the remaining steps
        total = steps_to_run(pipe.num_timesteps, self.stop_percent)
        done = i + 1
        last = done >= total
        if last and total < pipe.num_timesteps:
            latents = predicted_x0(pipe, latents)
            pipe._interrupt = True  # the loop `continue`s through the remaining timesteps, then decodes `latents`
        # 3. a model that produced NaN or inf cannot recover: stop before the VAE decode
        if last and not torch.isfinite(latents).all():
            raise GenerationFailed(INVALID_IMAGE)
        # 4. progress, with a preview from the x0 estimate at most every `preview_interval_s`
        if self.on_progress is not None:
            preview = None
            if not last and time.monotonic() - self.last_preview >= self.preview_interval_s:
                small = latents_to_rgb(predicted_x0(pipe, latents), getattr(pipe.vae, "latent_rgb", None))
                preview = compose_grid(small) if small else None
                self.last_preview = time.monotonic()
            self.on_progress(done, total, preview)
        return {"latents": latents}
