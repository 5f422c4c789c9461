"""Making a loaded pipeline fast on its device: the choices a worker (and `python -m bench gpu`) makes per device.

On CUDA: fp16 (or bf16) weights (`weights_dtype`), PyTorch's scaled-dot-product attention (fused flash or
memory-efficient kernels), channels_last memory format for the UNet and VAE convolutions, and VAE slicing (a batch
of images is decoded one image at a time: a batch of grids would otherwise hold every image's full-size activations
at once). Everywhere: VAE tiling for images larger than `VAE_TILING_MIN_PIXELS` (decoding 2048x2048 at once needs
tens of GB), and an optional `torch.compile` of the UNet (WORKER_COMPILE), warmed up at start so the first job does
not pay for compilation. Each choice is a field of `Plan`, so tests check them on a CPU.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import DiffusionPipeline
from diffusers.models.attention_processor import AttnProcessor2_0

log = logging.getLogger(__name__)

VAE_TILING_MIN_PIXELS = 1536 * 1536
"""Images with more pixels than this are decoded in overlapping tiles (an Upscale (2x) of a 1024x1024 image is
2048x2048); smaller ones at once, which is exact (tiling blends tile seams)."""

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
"""WORKER_DTYPE values and their torch dtypes ("auto": fp16 on CUDA, fp32 elsewhere)."""


def weights_dtype(device: str, setting: str = "auto") -> torch.dtype:
    """The dtype of a pipeline's weights on `device`: `setting` (fp16, bf16, fp32), or for "auto" fp16 on CUDA (half
    the memory, tensor cores) and fp32 elsewhere (CPUs are slow or wrong at fp16).

    Raises:
        ValueError: an unknown setting.
    """
    if setting == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    if setting not in DTYPES:
        raise ValueError(f"WORKER_DTYPE must be auto, {', '.join(DTYPES)}; not {setting!r}")
    return DTYPES[setting]


@dataclass(frozen=True)
class Plan:
    """What to apply to a pipeline on one device."""

    sdpa: bool  # scaled-dot-product attention processors in the UNet and VAE
    channels_last: bool  # NHWC memory format for the UNet and VAE (faster convolutions on tensor cores)
    vae_slicing: bool  # decode a batch one image at a time (peak memory of one image, not of the batch)
    compile: bool  # torch.compile the UNet (WORKER_COMPILE)

    @classmethod
    def for_device(cls, device: str, *, compile: bool = False) -> Plan:
        """The choices for `device`: everything that helps on CUDA; on a CPU only SDPA (and compile if asked)."""
        cuda = device.startswith("cuda")
        return cls(sdpa=hasattr(torch.nn.functional, "scaled_dot_product_attention"), channels_last=cuda,
                   vae_slicing=cuda, compile=compile)


def apply(pipe: DiffusionPipeline, plan: Plan, *, backend: str = "inductor") -> DiffusionPipeline:
    """Apply `plan` to `pipe` in place (and return it). `backend`: torch.compile's backend ("eager" in tests)."""
    vae = pipe.vae
    if plan.sdpa:
        vae.set_attn_processor(AttnProcessor2_0())
    if plan.channels_last:
        vae.to(memory_format=torch.channels_last)
    if plan.vae_slicing:
        vae.enable_slicing()
    pipe.unet = fast_unet(pipe.unet, plan, backend=backend)
    log.info("pipeline on %s: %s", pipe.device, plan)
    return pipe


def fast_unet(unet: Any, plan: Plan, *, backend: str = "inductor") -> Any:
    """`unet` with the plan's UNet choices, in place, or compiled (a new module) when the plan compiles: the
    pipeline's own UNet, and a dedicated inpainting UNet (WORKER_INPAINT_UNET) likewise."""
    if plan.sdpa and getattr(unet.config, "encoder_hid_dim_type", None) != "ip_image_proj":
        unet.set_attn_processor(AttnProcessor2_0())  # an IP-Adapter's processors use SDPA already
    if plan.channels_last:
        unet.to(memory_format=torch.channels_last)
    if plan.compile:
        # Shapes change with the batch and the image size: dynamic shapes avoid a recompilation per size.
        return torch.compile(unet, backend=backend, dynamic=True)
    return unet


@contextmanager
def vae_tiling(pipe: DiffusionPipeline, width: int, height: int) -> Iterator[None]:
    """Decode in tiles while the images are larger than VAE_TILING_MIN_PIXELS; as before afterwards."""
    vae = getattr(pipe, "vae", None)
    if vae is None or width * height <= VAE_TILING_MIN_PIXELS or getattr(vae, "use_tiling", False):
        yield
        return
    vae.enable_tiling()
    try:
        yield
    finally:
        vae.disable_tiling()


def release_memory() -> None:
    """After an out-of-memory error: drop what the failed call left referenced and return the cached blocks, so the
    retry (and the next job) start from the memory the warm pipeline needs."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_bytes(device: Any) -> int | None:
    """The device's peak allocated memory since the last reset; None off CUDA."""
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated(device))
    return None
