"""The engine: one warm diffusers pipeline that renders the images of a JobSpec's grid.

It maps the prompt language onto the pipeline call (each mapping is commented where it happens), reports progress
with cheap previews, and stops within one sampling step when the job is cancelled. It is not thread-safe: the
scheduler holds the state of the running call, and a worker renders one job at a time.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from diffusers import (
    AutoPipelineForImage2Image,
    AutoPipelineForInpainting,
    DiffusionPipeline,
    StableDiffusionLatentUpscalePipeline,
    UNet2DConditionModel,
)
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from core.errors import GenerationFailed, ImagineError, JobCancelled, TransientGenerationError
from core.models import ModelInfo
from core.safety import rendered_negative
from core.spec import JobSpec, PromptPart
from model.loading import load_inpaint_unet, load_pipeline, load_upscaler
from worker.grid import compose_grid
from worker.preview import latents_to_rgb
from worker.upscale import upscale_latent

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, Image.Image | None], None]
"""on_progress(steps done, steps in total, preview image or None)."""

SHARED_NOISE_SEED_OFFSET = 2**32
"""Added to `spec.seed` to seed the noise the grid's images share under `--chaos`; image seeds are all below 2**32,
so the shared noise is never any image's own noise."""

OUT_OF_MEMORY = (torch.OutOfMemoryError, torch.cuda.OutOfMemoryError, MemoryError)


class Engine:
    """A loaded pipeline and the one way the worker renders with it."""

    def __init__(
        self,
        pipe: DiffusionPipeline,
        upscaler: StableDiffusionLatentUpscalePipeline | None = None,
        inpaint_unet: UNet2DConditionModel | None = None,
    ) -> None:
        # The mappings below need a text-conditioned UNet with an SD-style `encode_prompt` (SD 1.x/2.x, SDXL).
        if getattr(pipe, "unet", None) is None or not hasattr(pipe, "encode_prompt"):
            raise GenerationFailed(
                f"{type(pipe).__name__} is not supported: this worker renders text-to-image UNet pipelines "
                "(Stable Diffusion 1.x, 2.x, XL)"
            )
        self.pipe = pipe
        self.pipe.set_progress_bar_config(disable=True)
        # Image-to-image (variations, the 2x refine pass) on the same modules: built once, no second copy of weights.
        self.img2img = AutoPipelineForImage2Image.from_pipe(pipe)
        self.img2img.set_progress_bar_config(disable=True)
        # Inpainting (Zoom Out, Pan, Make Square, Vary (Region)) on the same modules too: with a plain 4-channel
        # UNet diffusers blends the kept part's noised latents back in at every step; a dedicated 9-channel
        # inpainting UNet (WORKER_INPAINT_UNET) takes the mask and the masked image as inputs instead.
        overrides = {"unet": inpaint_unet} if inpaint_unet is not None else {}
        self.inpainter = AutoPipelineForInpainting.from_pipe(pipe, **overrides)
        self.inpainter.set_progress_bar_config(disable=True)
        # The diffusers 2x upscaler (WORKER_UPSCALER), loaded with the pipeline; None: Upscale (2x) resizes instead.
        self.upscaler = upscaler

    @classmethod
    def load(cls, info: ModelInfo, device: str = "", *, upscaler: str = "", inpaint_unet: str = "") -> Engine:
        """Load the model of `info` (see `model.loading.load_pipeline`) and, when named, the 2x upscaler
        (`model.loading.load_upscaler`) and a dedicated inpainting UNet (`load_inpaint_unet`), once; raises
        GenerationFailed when one cannot be loaded."""
        pipe = load_pipeline(info, device)
        return cls(pipe, load_upscaler(upscaler, pipe, device) if upscaler else None,
                   load_inpaint_unet(inpaint_unet, pipe, device) if inpaint_unet else None)

    def render(
        self,
        spec: JobSpec,
        *,
        indices: Sequence[int] = (0, 1, 2, 3),
        on_progress: ProgressCallback | None = None,
        should_cancel: Callable[[], bool] | None = None,
        preview_interval_s: float = 1.5,
    ) -> list[Image.Image]:
        """Render images `indices` of the grid of `spec` in one batched pipeline call.

        Image k depends only on `spec` and k, so `render(spec, indices=(k,))` redraws image k of the full grid
        (for upscale and variation buttons), up to float differences between batch sizes.

        Args:
            spec: the job; its width, height, steps, guidance, prompt parts, negative prompt, seed, chaos, stop
                and tile are used.
            indices: which of the grid's images to render, 0..3.
            on_progress: called after every sampling step with (steps done, steps in total, preview); the preview
                is a cheap low-res image of the batch, at most once per `preview_interval_s` and never on the last
                step, else None.
            should_cancel: polled before the call and after every step; once True the render stops.
            preview_interval_s: seconds between two previews.

        Returns:
            One PIL image per index, in the order of `indices`.

        Raises:
            JobCancelled: `should_cancel()` turned True; partial images are discarded.
            TransientGenerationError: the device ran out of memory.
            GenerationFailed: the model produced NaN or inf.
        """
        with self._guarded(spec, len(indices), (spec.width, spec.height), should_cancel):
            return self._sample(spec, indices, on_progress, should_cancel, preview_interval_s)

    def image_to_image(
        self,
        spec: JobSpec,
        image: Image.Image,
        strength: float,
        *,
        count: int = 4,
        size: tuple[int, int] | None = None,
        on_progress: ProgressCallback | None = None,
        should_cancel: Callable[[], bool] | None = None,
        preview_interval_s: float = 1.5,
    ) -> list[Image.Image]:
        """Redraw `image` `count` times under the prompt of `spec`, in one batched img2img call.

        Image k starts from the image's latents noised to `strength` with seed `spec.seeds()[k]` and is denoised
        for the last `strength` fraction of `spec.steps` (SDEdit, Meng et al. 2021): 0 keeps the image, 1 ignores it.

        Args:
            spec: prompt parts, negative prompt, steps, guidance, seed, stop and tile are used.
            image: the starting image; resized (Lanczos) to `size` when it differs.
            strength: fraction of the noise schedule to redo, in (0, 1].
            count: images to make (at most 4: one per seed of the grid).
            size: (width, height) of the output; default (spec.width, spec.height).
            on_progress, should_cancel, preview_interval_s: as for `render`.

        Returns:
            `count` PIL images of `size`.

        Raises:
            JobCancelled, TransientGenerationError, GenerationFailed: as for `render`.
        """
        width, height = size or (spec.width, spec.height)
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.LANCZOS)
        with self._guarded(spec, count, (width, height), should_cancel):
            return self._sample_from_image(spec, image.convert("RGB"), strength, count, on_progress, should_cancel,
                                           preview_interval_s)

    def inpaint(
        self,
        spec: JobSpec,
        image: Image.Image,
        mask: Image.Image,
        *,
        count: int = 4,
        on_progress: ProgressCallback | None = None,
        should_cancel: Callable[[], bool] | None = None,
        preview_interval_s: float = 1.5,
    ) -> list[Image.Image]:
        """Redraw the white part of `mask` over `image` `count` times under the prompt of `spec`, in one batched call.

        Image k starts from noise seeded `spec.seeds()[k]` in the masked part; the rest of the latents are the image's,
        noised to each step's level (a 4-channel UNet), or its masked image is an input (a 9-channel inpainting
        UNet). The output is the whole canvas as decoded: `worker.editing.finish` puts the kept pixels back.

        Args:
            spec: prompt parts, negative prompt, steps, guidance, seed, stop and tile are used; its size is the
                image's.
            image: the canvas, of the spec's size.
            mask: "L" image of the same size; white is redrawn.
            count, on_progress, should_cancel, preview_interval_s: as for `image_to_image`.

        Raises:
            JobCancelled, TransientGenerationError, GenerationFailed: as for `render`.
        """
        with self._guarded(spec, count, image.size, should_cancel):
            pipe = self.inpainter
            # 1. the prompt, as for text-to-image
            embeds = encode_weighted_prompt(pipe, spec.parts, rendered_negative(spec), spec.guidance_scale)
            batch = {name: torch.cat([e] * count) for name, e in embeds.items()}
            # 2. one CPU generator per output, seeded like the images of a grid
            generators = [torch.Generator("cpu").manual_seed(seed) for seed in spec.seeds()[:count]]
            # 3. strength 1: the masked part starts from pure noise
            output = pipe(
                **batch,
                image=[image.convert("RGB")] * count,
                mask_image=[mask] * count,
                strength=1.0,
                width=image.width,
                height=image.height,
                generator=generators,
                num_inference_steps=spec.steps,
                guidance_scale=spec.guidance_scale,
                output_type="pt",
                callback_on_step_end=_StepEnd(spec.stop, on_progress, should_cancel, preview_interval_s),
                callback_on_step_end_tensor_inputs=["latents"],
            )
            # 4. reject NaN/inf
            images = output.images
            if not torch.isfinite(images).all():
                raise GenerationFailed(INVALID_IMAGE)
            return pipe.image_processor.numpy_to_pil(pipe.image_processor.pt_to_numpy(images))

    def upscale(
        self,
        spec: JobSpec,
        image: Image.Image,
        *,
        on_progress: ProgressCallback | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> list[Image.Image]:
        """`image` at exactly twice its size, made by the 2x upscaler in one call (`worker.upscale`); no previews.

        Returns:
            A list of the one upscaled image (the shape `render` returns).

        Raises:
            GenerationFailed: this engine has no upscaler, or the upscaler failed; the message names it.
            JobCancelled, TransientGenerationError: as for `render`.
        """
        if self.upscaler is None:
            raise GenerationFailed("this worker has no 2x upscaler (WORKER_UPSCALER is empty)")
        size = (image.width * 2, image.height * 2)
        on_step = None if on_progress is None else lambda done, total: on_progress(done, total, None)
        with self._guarded(spec, 1, size, should_cancel), circular_padding(self.upscaler, enabled=spec.tile):
            try:
                big = upscale_latent(self.upscaler, spec, image, on_step, should_cancel)
            except (ImagineError, *OUT_OF_MEMORY):
                raise
            except Exception as exc:  # a model that does not fit its config: permanent, and said in one line
                log.exception("the 2x upscaler failed")
                raise GenerationFailed(f"the 2x upscaler failed ({type(exc).__name__}); tell an admin "
                                       "(WORKER_UPSCALER)") from None
        # sides that were not a multiple of the VAE factor were rounded down: bring the result to exactly 2x
        return [big if big.size == size else big.resize(size, Image.Resampling.LANCZOS)]

    @contextmanager
    def _guarded(
        self, spec: JobSpec, count: int, size: tuple[int, int], should_cancel: Callable[[], bool] | None
    ) -> Iterator[None]:
        """Around one pipeline call: the cancel check before it, no autograd, `--tile`, out-of-memory as transient."""
        if should_cancel is not None and should_cancel():
            raise JobCancelled("the job was cancelled before it started")
        started = time.monotonic()
        try:
            with torch.inference_mode(), circular_padding(self.pipe, enabled=spec.tile):
                yield
        except OUT_OF_MEMORY:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise TransientGenerationError(
                f"out of GPU memory while rendering {count} images of {size[0]}x{size[1]}; "
                "try again, or ask for a smaller --ar or --quality"
            ) from None
        log.info("rendered %d images of %dx%d in %d steps in %.2f s", count, size[0], size[1], spec.steps,
                 time.monotonic() - started)

    def _sample_from_image(
        self,
        spec: JobSpec,
        image: Image.Image,
        strength: float,
        count: int,
        on_progress: ProgressCallback | None,
        should_cancel: Callable[[], bool] | None,
        preview_interval_s: float,
    ) -> list[Image.Image]:
        pipe = self.img2img
        # 1. the prompt, as for text-to-image
        embeds = encode_weighted_prompt(pipe, spec.parts, rendered_negative(spec), spec.guidance_scale)
        batch = {name: torch.cat([e] * count) for name, e in embeds.items()}
        # 2. one CPU generator per output, seeded like the images of a grid: they noise the image's latents
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in spec.seeds()[:count]]
        # 3. noise the image to `strength` and denoise the rest of the schedule
        output = pipe(
            **batch,
            image=[image] * count,
            strength=strength,
            generator=generators,
            num_inference_steps=spec.steps,
            guidance_scale=spec.guidance_scale,
            output_type="pt",
            callback_on_step_end=_StepEnd(spec.stop, on_progress, should_cancel, preview_interval_s),
            callback_on_step_end_tensor_inputs=["latents"],
        )
        # 4. reject NaN/inf
        images = output.images
        if not torch.isfinite(images).all():
            raise GenerationFailed(INVALID_IMAGE)
        return pipe.image_processor.numpy_to_pil(pipe.image_processor.pt_to_numpy(images))

    def _sample(
        self,
        spec: JobSpec,
        indices: Sequence[int],
        on_progress: ProgressCallback | None,
        should_cancel: Callable[[], bool] | None,
        preview_interval_s: float,
    ) -> list[Image.Image]:
        pipe = self.pipe
        # 1. the prompt: `::` parts -> weighted mean of their embeddings; `--no` plus the guild's safety negative
        #    prompt (outside age-restricted channels) -> the negative prompt
        embeds = encode_weighted_prompt(pipe, spec.parts, rendered_negative(spec), spec.guidance_scale)
        batch = {name: torch.cat([e] * len(indices)) for name, e in embeds.items()}
        # 2. the initial noise: one CPU generator per image, seeded `seeds()[k]` (CPU so a seed gives the same image
        #    on any device); `--chaos` sets how much of it the images share
        seeds = spec.seeds()
        generators = [torch.Generator("cpu").manual_seed(seeds[k]) for k in indices]
        latents = initial_noise(pipe, spec, generators)
        # 3. sample, with progress, cancellation and `--stop` in the per-step callback
        step_end = _StepEnd(spec.stop, on_progress, should_cancel, preview_interval_s)
        output = pipe(
            **batch,
            latents=latents,
            generator=generators,
            num_inference_steps=spec.steps,
            guidance_scale=spec.guidance_scale,
            width=spec.width,
            height=spec.height,
            output_type="pt",
            callback_on_step_end=step_end,
            callback_on_step_end_tensor_inputs=["latents"],
        )
        # 4. reject NaN/inf (a broken model, or an fp16 VAE overflowing) rather than post black squares
        images = output.images
        if not torch.isfinite(images).all():
            raise GenerationFailed(INVALID_IMAGE)
        return pipe.image_processor.numpy_to_pil(pipe.image_processor.pt_to_numpy(images))


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
    Gaussian, so every image starts from noise the sampler expects. `shared` is seeded `spec.seed` plus
    SHARED_NOISE_SEED_OFFSET and `own_k` comes from image k's generator, so image k never depends on the others.
    """
    vae_factor = pipe.vae_scale_factor
    shape = (1, pipe.unet.config.in_channels, spec.height // vae_factor, spec.width // vae_factor)
    shared_generator = torch.Generator("cpu").manual_seed(spec.seed + SHARED_NOISE_SEED_OFFSET)
    shared = randn_tensor(shape, generator=shared_generator, device=torch.device("cpu"), dtype=torch.float32)
    own = torch.cat([randn_tensor(shape, generator=g, device=torch.device("cpu"), dtype=torch.float32)
                     for g in generators])
    r = 0.5 + 0.5 * spec.chaos / 100
    noise = math.sqrt(1 - r) * shared + math.sqrt(r) * own
    return noise.to(pipe.device, pipe.unet.dtype)


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


class _StepEnd:
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
                small = latents_to_rgb(predicted_x0(pipe, latents))
                preview = compose_grid(small) if small else None
                self.last_preview = time.monotonic()
            self.on_progress(done, total, preview)
        return {"latents": latents}
