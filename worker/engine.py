"""The engine: one warm diffusers pipeline that renders the images of a JobSpec's grid.

It maps the prompt language onto the pipeline call (each mapping is commented where it happens), reports progress
with cheap previews, and stops within one sampling step when the job is cancelled. It is not thread-safe: the
scheduler holds the state of the running call, and a worker makes one call at a time (several grid jobs share one
in `render_batch`).
"""

from __future__ import annotations

import dataclasses
import logging
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
from PIL import Image

from core.errors import GenerationFailed, ImagineError, JobCancelled, TransientGenerationError
from core.models import ModelInfo
from core.safety import rendered_negative
from core.spec import JobSpec
from model import accel
from model.loading import default_inpaint_unet, load_inpaint_unet, load_ip_adapter, load_pipeline, load_upscaler
from worker.adapter import Adapter, ImagePrompt
from worker.batch_render import Rows, RowsResult, sample_batch
from worker.sampling import (
    INVALID_IMAGE,
    ProgressCallback,
    StepEnd,
    circular_padding,
    encode_weighted_prompt,
    initial_noise,
)
from worker.upscale import upscale_latent

log = logging.getLogger(__name__)

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
        # The IP-Adapter in the UNet (IMAGINE_IMAGE_IP_ADAPTER), for image prompts; None: they are image-to-image.
        # With one, every call of every pipeline above passes its `call_kwargs` (see worker.adapter).
        self.adapter = Adapter.of(pipe)

    @classmethod
    def load(
        cls, info: ModelInfo, device: str = "", *, upscaler: str = "", inpaint_unet: str = "", ip_adapter: str = "",
        dtype: str = "auto", compile: bool = False,
    ) -> Engine:
        """Load the model of `info` (see `model.loading.load_pipeline`) in `dtype` and, when named, the 2x upscaler
        (`model.loading.load_upscaler`), a dedicated inpainting UNet (`load_inpaint_unet`) and an IP-Adapter
        (`load_ip_adapter`), once, made fast for their device (`model.accel`: SDPA, and on CUDA channels_last and
        VAE slicing; `compile`: torch.compile the UNet, see `warm_up`); raises GenerationFailed when one cannot be
        loaded."""
        pipe = load_pipeline(info, device, dtype=dtype)
        if ip_adapter:
            load_ip_adapter(ip_adapter, pipe)
        plan = accel.Plan.for_device(str(pipe.device), compile=compile)
        accel.apply(pipe, plan)
        inpaint_unet = inpaint_unet or default_inpaint_unet(info)  # the embedded model brings its own
        inpainter = accel.fast_unet(load_inpaint_unet(inpaint_unet, pipe, device), plan) if inpaint_unet else None
        return cls(pipe, load_upscaler(upscaler, pipe, device) if upscaler else None, inpainter)

    def warm_up(self, spec: JobSpec, batch_size: int) -> float:
        """Render one grid and one batch of `batch_size` grids of `spec`, so that a compiled UNet is compiled (and
        CUDA's kernels chosen) before the first job; returns the seconds it took."""
        started = time.monotonic()
        self.render(spec)
        if batch_size > 1:
            self.render_batch([Rows(spec)] * batch_size)
        return time.monotonic() - started

    def render(
        self,
        spec: JobSpec,
        *,
        indices: Sequence[int] = (0, 1, 2, 3),
        on_progress: ProgressCallback | None = None,
        should_cancel: Callable[[], bool] | None = None,
        preview_interval_s: float = 1.5,
        image_prompt: ImagePrompt | None = None,
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
            image_prompt: the job's images, through this engine's IP-Adapter (`Adapter.image_prompt`).

        Returns:
            One PIL image per index, in the order of `indices`.

        Raises:
            JobCancelled: `should_cancel()` turned True; partial images are discarded.
            TransientGenerationError: the device ran out of memory.
            GenerationFailed: the model produced NaN or inf.
        """
        with self._guarded(spec, len(indices), (spec.width, spec.height), should_cancel):
            return self._sample(spec, indices, on_progress, should_cancel, preview_interval_s, image_prompt)

    def render_batch(self, jobs: Sequence[Rows], *, preview_interval_s: float = 1.5, strength: float | None = None
                     ) -> list[RowsResult]:
        """Render the grids of several jobs that share a `worker.claim.BatchKey` in one pipeline call
        (`worker.batch_render`): per job its images, None when it was cancelled meanwhile, or GenerationFailed.
        With `strength`, they are variations: each job's rows redraw its `Rows.image` as `image_to_image` would.

        Raises:
            JobCancelled: every job was cancelled.
            TransientGenerationError: the device ran out of memory.
        """
        first = jobs[0].spec
        size = (first.width, first.height)
        with self._guarded(first, 4 * len(jobs), size, None):
            if strength is None:
                return sample_batch(self.pipe, jobs, preview_interval_s, self._adapter_kwargs(first))
            sized = []
            for rows in jobs:
                if rows.image is None:
                    raise GenerationFailed("a variation in a batch has no source image")
                sized.append(dataclasses.replace(rows, image=_sized(rows.image, size)))
            return sample_batch(self.img2img, sized, preview_interval_s, self._adapter_kwargs(first), strength)

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
        with self._guarded(spec, count, (width, height), should_cancel):
            inputs = {"image": [_sized(image, (width, height))] * count, "strength": strength}
            return self._from_image(self.img2img, spec, count, inputs, on_progress, should_cancel,
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
            # strength 1: the masked part starts from pure noise
            inputs = {"image": [image.convert("RGB")] * count, "mask_image": [mask] * count, "strength": 1.0,
                      "width": image.width, "height": image.height}
            return self._from_image(self.inpainter, spec, count, inputs, on_progress, should_cancel,
                                    preview_interval_s)

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

    def _adapter_kwargs(self, spec: JobSpec, image_prompt: ImagePrompt | None = None) -> dict[str, Any]:
        """The IP-Adapter's arguments of one pipeline call: none without an adapter (see `worker.adapter`)."""
        if self.adapter is None:
            if image_prompt is not None:
                raise GenerationFailed("this worker has no IP-Adapter (IMAGINE_IMAGE_IP_ADAPTER is empty)")
            return {}
        return self.adapter.call_kwargs(image_prompt, spec.guidance_scale)

    @contextmanager
    def _guarded(
        self, spec: JobSpec, count: int, size: tuple[int, int], should_cancel: Callable[[], bool] | None
    ) -> Iterator[None]:
        """Around one pipeline call: the cancel check before it, no autograd, `--tile`, out-of-memory as transient."""
        if should_cancel is not None and should_cancel():
            raise JobCancelled("the job was cancelled before it started")
        started = time.monotonic()
        try:
            with (torch.inference_mode(), circular_padding(self.pipe, enabled=spec.tile),
                  accel.vae_tiling(self.pipe, *size)):
                yield
        except OUT_OF_MEMORY:
            accel.release_memory()
            raise TransientGenerationError(
                f"out of GPU memory while rendering {count} images of {size[0]}x{size[1]}; "
                "try again, or ask for a smaller --ar or --quality"
            ) from None
        log.info("rendered %d images of %dx%d in %d steps in %.2f s", count, size[0], size[1], spec.steps,
                 time.monotonic() - started)

    def _from_image(
        self,
        pipe: DiffusionPipeline,
        spec: JobSpec,
        count: int,
        inputs: dict[str, Any],
        on_progress: ProgressCallback | None,
        should_cancel: Callable[[], bool] | None,
        preview_interval_s: float,
    ) -> list[Image.Image]:
        """One call of the img2img or inpainting pipeline making `count` images of `spec` from `inputs` (its image
        arguments: the image and strength, and for inpainting the mask and size)."""
        # 1. the prompt, as for text-to-image
        embeds = encode_weighted_prompt(pipe, spec.parts, rendered_negative(spec), spec.guidance_scale)
        batch = {name: torch.cat([e] * count) for name, e in embeds.items()}
        # 2. one CPU generator per output, seeded like the images of a grid: they noise the image's latents
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in spec.seeds()[:count]]
        # 3. noise the image to `strength` (img2img) or the masked part from pure noise (inpainting), and denoise
        output = pipe(
            **batch,
            **inputs,
            **self._adapter_kwargs(spec),
            generator=generators,
            num_inference_steps=spec.steps,
            guidance_scale=spec.guidance_scale,
            output_type="pt",
            callback_on_step_end=StepEnd(spec.stop, on_progress, should_cancel, preview_interval_s),
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
        image_prompt: ImagePrompt | None = None,
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
        step_end = StepEnd(spec.stop, on_progress, should_cancel, preview_interval_s)
        output = pipe(
            **batch,
            **self._adapter_kwargs(spec, image_prompt),
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


def _sized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """An image-to-image call's starting image: RGB, resized (Lanczos) to `size` when it differs."""
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image.convert("RGB")
