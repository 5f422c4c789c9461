"""Grid latency and throughput of pipelines shaped like SD 1.5, SDXL and SD-Turbo, built with random weights from
the configs in `bench/gpu_configs/` (an architecture alone sets the speed: nothing is downloaded).

Each pipeline gets the worker's device choices (`model.accel`: fp16, SDPA, channels_last and VAE slicing on CUDA)
and is timed per call shape: one image (what public figures quote), one grid (4 images: one job) and `batch` grids
(one batched call of the worker), at each size, uncompiled and (with `--compile`) with its UNet torch.compiled.
Prompts are random embeddings of the right shape: the text encoders run once per job and are not what is timed.
Each figure is one warm call after one untimed call (which, compiled, is also the compilation).

On a CPU (`--device cpu`, or no CUDA) it proves the code path only: every architecture shrunk (channels / 10,
VAE channels / 4, the same depth, text widths and block layout), 64x64 images, one call of one step rendering a
batch of two grids.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel

from model import accel

CONFIGS = Path(__file__).with_name("gpu_configs")
ARCHITECTURES = ("sd15", "sdxl", "sd_turbo")
TEXT_TOKENS = 77
"""CLIP's context length: the prompt embeddings are (images, 77, text width)."""


def run(*, device: str, sizes: tuple[int, ...], batch: int, compile: bool, steps: int | None) -> dict[str, Any]:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    cpu = not device.startswith("cuda")
    shapes = (1, 4, 4 * batch)
    if cpu:
        sizes, batch, steps, shapes = (64,), min(batch, 2), 1, (4 * min(batch, 2),)
    rows = []
    for name in ARCHITECTURES:
        config = json.loads((CONFIGS / f"{name}.json").read_text())
        for compiled in (False, True) if compile else (False,):
            pipe = build(config, device, reduced=cpu, compiled=compiled)
            for size in sizes:
                for images in shapes:
                    rows.append({"model": name, "size": f"{size}x{size}", "compiled": compiled,
                                 **_time(pipe, config, size, images, steps or config["steps"], warm=not cpu)})
            del pipe
            accel.release_memory()
    return {
        "device": torch.cuda.get_device_name(device) if not cpu else "cpu (shrunk architectures: code path only)",
        "dtype": str(accel.weights_dtype(device)).removeprefix("torch."),
        "batch_grids": batch,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "rows": rows,
    }


def build(config: dict[str, Any], device: str, *, reduced: bool = False, compiled: bool = False) -> DiffusionPipeline:
    """The config's pipeline with random weights on `device`, in the worker's dtype, with its device choices."""
    unet_config, vae_config = copy.deepcopy(config["unet"]), copy.deepcopy(config["vae"])
    if reduced:
        unet_config["block_out_channels"] = [c // 10 for c in unet_config["block_out_channels"]]
        unet_config["attention_head_dim"] = [c // 16 for c in unet_config["block_out_channels"]]
        vae_config["block_out_channels"] = [c // 4 for c in vae_config["block_out_channels"]]
    dtype = accel.weights_dtype(device)
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(unet_config).to(dtype)
        vae = AutoencoderKL.from_config(vae_config).to(dtype)
    scheduler = getattr(diffusers, config["scheduler"]["class"]).from_config(config["scheduler"]["config"])
    pipeline_class = getattr(diffusers, config["pipeline"])
    if config["pipeline"] == "StableDiffusionXLPipeline":
        pipe = pipeline_class(vae=vae, unet=unet, scheduler=scheduler, text_encoder=None, text_encoder_2=None,
                              tokenizer=None, tokenizer_2=None)
    else:
        pipe = pipeline_class(vae=vae, unet=unet, scheduler=scheduler, text_encoder=None, tokenizer=None,
                              safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return accel.apply(pipe, accel.Plan.for_device(device, compile=compiled))


def _time(pipe: DiffusionPipeline, config: dict[str, Any], size: int, images: int, steps: int, *, warm: bool
          ) -> dict[str, Any]:
    """One untimed call (when `warm`), then one timed call of `images` images; seconds, per grid, grids a minute,
    peak memory."""
    device, dtype = pipe.unet.device, pipe.unet.dtype
    kwargs: dict[str, Any] = {"prompt_embeds": torch.randn(images, TEXT_TOKENS, config["text_width"], device=device,
                                                           dtype=dtype)}
    guidance = config["guidance_scale"]
    if guidance > 1:
        kwargs["negative_prompt_embeds"] = torch.zeros_like(kwargs["prompt_embeds"])
    if "pooled_width" in config:
        kwargs["pooled_prompt_embeds"] = torch.randn(images, config["pooled_width"], device=device, dtype=dtype)
        if guidance > 1:
            kwargs["negative_pooled_prompt_embeds"] = torch.zeros_like(kwargs["pooled_prompt_embeds"])

    def call() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        with torch.inference_mode(), accel.vae_tiling(pipe, size, size):
            pipe(**kwargs, width=size, height=size, num_inference_steps=steps, guidance_scale=guidance,
                 output_type="pt")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    first_s = call() if warm else None  # compiles, picks kernels, allocates
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = call()
    peak = accel.peak_memory_bytes(device)
    return {
        "images_per_call": images,
        "steps": steps,
        "first_call_s": round(first_s, 3) if first_s is not None else None,
        "seconds_per_call": round(seconds, 3),
        "seconds_per_grid": round(seconds * 4 / images, 3),
        "grids_per_minute": round(60 * images / 4 / seconds, 2),
        "peak_memory_mb": round(peak / 2**20) if peak is not None else None,
    }
