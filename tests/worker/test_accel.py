"""The per-device speed choices (`model.accel`), checked on a CPU: the CUDA plan's code paths run here too."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from core.models import tiny_model
from core.spec import JobSpec
from model import accel
from model.loading import BUILTIN_TINY_INPAINT, load_inpaint_unet
from model.tiny import build_tiny_pipeline
from worker.engine import Engine


@pytest.mark.parametrize(("device", "setting", "expected"), [
    ("cuda", "auto", torch.float16), ("cuda:1", "bf16", torch.bfloat16), ("cpu", "auto", torch.float32),
    ("cpu", "bf16", torch.bfloat16), ("cuda", "fp32", torch.float32),
])
def test_weights_dtype_by_device_and_setting(device: str, setting: str, expected: torch.dtype) -> None:
    """auto is fp16 on CUDA and fp32 elsewhere; an explicit WORKER_DTYPE wins."""
    assert accel.weights_dtype(device, setting) == expected


def test_unknown_dtype_is_refused_with_the_choices() -> None:
    """A WORKER_DTYPE that is not one of them names the ones there are."""
    with pytest.raises(ValueError, match="auto, fp16, bf16, fp32; not 'fp8'"):
        accel.weights_dtype("cuda", "fp8")


def test_cuda_plan_runs_on_a_cpu_and_renders_the_same_grid(tiny_spec: JobSpec) -> None:
    """The CUDA plan (SDPA, channels_last, VAE slicing) applied to a pipeline renders what the plain one renders;
    the CPU plan keeps the default memory format and decodes batches whole."""
    assert accel.Plan.for_device("cpu") == accel.Plan(sdpa=True, channels_last=False, vae_slicing=False,
                                                      compile=False)
    plan = accel.Plan.for_device("cuda")
    assert (plan.sdpa, plan.channels_last, plan.vae_slicing, plan.compile) == (True, True, True, False)
    plain, fast = build_tiny_pipeline(), accel.apply(build_tiny_pipeline(), plan)
    assert fast.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert fast.vae.use_slicing
    assert all(isinstance(p, AttnProcessor2_0) for p in fast.unet.attn_processors.values())
    expected, got = Engine(plain).render(tiny_spec), Engine(fast).render(tiny_spec)
    for a, b in zip(expected, got, strict=True):
        assert np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)).mean() < 1.0


def test_compile_setting_wraps_the_unet_and_warm_up_renders_single_and_batched(tiny_engine: Engine,
                                                                               tiny_spec: JobSpec) -> None:
    """WORKER_COMPILE's path: the UNet is wrapped by torch.compile (compiling it, even with the eager backend,
    takes about a minute of this CPU: `python -m bench gpu --compile` runs it); the warm-up renders one grid and
    one batch, which is what compiles it at start."""
    pipe = accel.apply(build_tiny_pipeline(), accel.Plan.for_device("cpu", compile=True), backend="eager")
    assert isinstance(pipe.unet, torch._dynamo.eval_frame.OptimizedModule)
    assert tiny_engine.warm_up(tiny_spec, batch_size=2) > 0


def test_a_dedicated_inpainting_unet_gets_the_plan_too() -> None:
    """WORKER_INPAINT_UNET's 9-channel UNet is made fast like the model's own: the CUDA plan's SDPA and channels_last
    (run here on a CPU), and with WORKER_COMPILE both UNets are compiled."""
    base = build_tiny_pipeline()
    unet = accel.fast_unet(load_inpaint_unet(BUILTIN_TINY_INPAINT, base, "cpu"), accel.Plan.for_device("cuda"))
    assert unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(isinstance(p, AttnProcessor2_0) for p in unet.attn_processors.values())
    engine = Engine.load(tiny_model(), device="cpu", inpaint_unet=BUILTIN_TINY_INPAINT, compile=True)
    compiled = torch._dynamo.eval_frame.OptimizedModule
    assert isinstance(engine.pipe.unet, compiled) and isinstance(engine.inpainter.unet, compiled)


def test_vae_tiles_only_images_larger_than_the_limit() -> None:
    """Tiling is on inside the block for a 2048x2048 decode, off for 1024x1024, and off again afterwards."""
    pipe = build_tiny_pipeline()
    with accel.vae_tiling(pipe, 1024, 1024):
        assert not pipe.vae.use_tiling
    with accel.vae_tiling(pipe, 2048, 2048):
        assert pipe.vae.use_tiling
    assert not pipe.vae.use_tiling
