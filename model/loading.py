"""Loading a text-to-image pipeline for a registry entry (the tiny built-in one, a local folder or a hub id), and what
a worker may load beside it: the 2x latent upscaler (`WORKER_UPSCALER`), a dedicated inpainting UNet
(`WORKER_INPAINT_UNET`) and an IP-Adapter for image prompts (`IMAGINE_IMAGE_IP_ADAPTER`)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import torch
from diffusers import (
    AutoPipelineForText2Image,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    StableDiffusionLatentUpscalePipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel

from core.errors import GenerationFailed
from core.models import BUILTIN_EMBEDDED, BUILTIN_TINY, EMBEDDED_DIR, ModelInfo
from model.accel import weights_dtype
from model.tiny import build_tiny_pipeline
from model.tiny_upscaler import NOISE_LEVEL_EMBED_WIDTH, build_tiny_latent_upscaler

log = logging.getLogger(__name__)

PIPELINE_LOADS = 0
"""Pipelines loaded by this process so far; a worker reports it so that a reload per job would show."""

UPSCALER_LOADS = 0
"""2x upscalers loaded by this process so far (reported like PIPELINE_LOADS)."""

BUILTIN_TINY_UPSCALER = "builtin:tiny-upscaler"
"""`WORKER_UPSCALER` source of the tiny random latent upscaler built from configs (model/tiny_upscaler.py)."""

SHARED_TEXT_ENCODER_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                              "vocab_size", "max_position_embeddings")
"""CLIP text encoder config fields that must agree for the upscaler to use the base model's encoder instead of its
own (sd-x2-latent-upscaler ships OpenAI CLIP ViT-L/14, the encoder of SD 1.x and the first of SDXL)."""


def default_device() -> str:
    """The device a pipeline goes to when none is configured: the first GPU, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_pipeline(
    info: ModelInfo, device: str = "", *, keep_scheduler: bool = False, dtype: str = "auto"
) -> DiffusionPipeline:
    """Load the pipeline of `info` onto `device` ("" = `default_device()`), ready to render.

    Weights are `dtype` (`model.accel.weights_dtype`: "auto" is fp16 on CUDA and fp32 elsewhere); the built-in
    tiny pipeline stays fp32 everywhere (its random weights are not made for fp16). Unless `keep_scheduler`, the
    model's scheduler is replaced by DPM-Solver++ with the same noise schedule, which gives good images in 20-30
    steps.

    Raises:
        GenerationFailed: the folder does not exist or the model cannot be loaded; the message is one line.
    """
    global PIPELINE_LOADS
    device = device or default_device()
    if info.source == BUILTIN_TINY:
        pipe: DiffusionPipeline = build_tiny_pipeline()
    elif info.source == BUILTIN_EMBEDDED:
        # trained in fp32 and stored in fp16; fp16 on CUDA like any model, fp32 on the CPU
        pipe = _from_pretrained(dataclasses.replace(info, source=str(EMBEDDED_DIR)), weights_dtype(device, dtype))
    else:
        pipe = _from_pretrained(info, weights_dtype(device, dtype))
    if not keep_scheduler:
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, algorithm_type="dpmsolver++")
    try:
        pipe = pipe.to(device)
    except (RuntimeError, AssertionError) as exc:  # e.g. "Torch not compiled with CUDA enabled"
        raise GenerationFailed(f"cannot move model {info.name!r} to device {device!r}: {_first_line(exc)}") from None
    pipe.set_progress_bar_config(disable=True)
    PIPELINE_LOADS += 1
    log.info("loaded model %r from %r on %s (%d pipeline loads in this process)", info.name, info.source, device,
             PIPELINE_LOADS)
    return pipe


def load_upscaler(source: str, base: DiffusionPipeline, device: str = "") -> StableDiffusionLatentUpscalePipeline:
    """Load the 2x latent upscaler at `source` (a diffusers folder, a hub id or BUILTIN_TINY_UPSCALER) onto `device`.

    It uses `base`'s text encoder and tokenizer instead of loading its own when they are the same CLIP architecture
    (one copy of those weights in memory); otherwise it loads the ones it ships. fp16 on CUDA, fp32 elsewhere.

    Raises:
        GenerationFailed: it cannot be loaded, or it is not a 2x latent upscaler for this text encoder; one line.
    """
    global UPSCALER_LOADS
    device = device or default_device()
    base_encoder, base_tokenizer = getattr(base, "text_encoder", None), getattr(base, "tokenizer", None)
    shareable = isinstance(base_encoder, CLIPTextModel) and base_tokenizer is not None
    if source == BUILTIN_TINY_UPSCALER:
        shared = {"text_encoder": base_encoder, "tokenizer": base_tokenizer} if shareable else {}
        pipe = build_tiny_latent_upscaler(**shared)  # type: ignore[arg-type]
    else:
        dtype = weights_dtype(device)
        share = shareable and _same_text_encoder(source, base_encoder.config)  # type: ignore[union-attr]
        shared = {"text_encoder": base_encoder, "tokenizer": base_tokenizer} if share else {}
        pipe = _upscaler_from_pretrained(source, dtype, shared)
    _check_upscaler(source, pipe)
    try:
        pipe = pipe.to(device)
    except (RuntimeError, AssertionError) as exc:
        raise GenerationFailed(f"cannot move upscaler {source!r} to device {device!r}: {_first_line(exc)}") from None
    pipe.set_progress_bar_config(disable=True)
    UPSCALER_LOADS += 1
    log.info("loaded upscaler %r on %s (%s the model's text encoder; %d upscaler loads in this process)", source,
             device, "sharing" if pipe.text_encoder is base_encoder else "not sharing", UPSCALER_LOADS)
    return pipe


INPAINT_UNET_CHANNELS = 9
"""A dedicated inpainting UNet's input: 4 noisy latents, 1 mask, 4 latents of the masked image (SD 1.x/2.x, SDXL
inpainting checkpoints)."""

BUILTIN_TINY_INPAINT = "builtin:tiny-inpaint"
"""`WORKER_INPAINT_UNET` source of a random 9-channel UNet shaped like the base model's (tests)."""


LATENT_RGB_FILE = "latent_rgb.json"
"""A model folder's own latent-to-RGB map for progress previews, `{"latent_rgb": [[r, g, b], ...]}`: one row per latent
channel, then the bias (`model.vae.latent_rgb`; `python -m model.train` writes it). Without one the previews use
Stable Diffusion's (`worker.preview`)."""

EMBEDDED_INPAINT = EMBEDDED_DIR / "inpaint"
"""The embedded model's inpainting checkpoint (`python -m model.inpaint`; its UNet in `unet/`)."""


def default_inpaint_unet(info: ModelInfo) -> str:
    """The inpainting checkpoint a model brings along when WORKER_INPAINT_UNET names none: the embedded model's own
    (EMBEDDED_INPAINT, when it is there); "" for any other model, whose own UNet then repaints by latent blending."""
    shipped = info.source == BUILTIN_EMBEDDED and (EMBEDDED_INPAINT / "unet" / "config.json").is_file()
    return str(EMBEDDED_INPAINT) if shipped else ""


def load_inpaint_unet(source: str, base: DiffusionPipeline, device: str = "") -> UNet2DConditionModel:
    """The UNet of the dedicated inpainting checkpoint at `source` (a diffusers folder or hub id; its `unet`
    subfolder), for Zoom Out, Pan and Vary (Region) on `base`'s other components: only the UNet is loaded.

    Raises:
        GenerationFailed: it cannot be loaded, or it is not a 9-channel UNet for `base`'s text encoder; one line.
    """
    device = device or default_device()
    base_unet = base.unet
    if source == BUILTIN_TINY_INPAINT:
        config = {**base_unet.config, "in_channels": INPAINT_UNET_CHANNELS}
        unet = UNet2DConditionModel.from_config(config)
    else:
        folder = Path(source).expanduser()
        if not folder.is_dir() and _looks_like_path(source):
            raise GenerationFailed(f"inpainting model folder {source!r} does not exist (WORKER_INPAINT_UNET)")
        try:
            unet = UNet2DConditionModel.from_pretrained(_local_or_hub(source), subfolder="unet",
                                                        torch_dtype=base_unet.dtype)
        except Exception as exc:  # noqa: BLE001 - diffusers raises many types
            raise GenerationFailed(f"cannot load inpainting model {source!r} (WORKER_INPAINT_UNET): "
                                   f"{_first_line(exc)}") from None
    found = (unet.config.in_channels, unet.config.cross_attention_dim)
    expected = (INPAINT_UNET_CHANNELS, base_unet.config.cross_attention_dim)
    if found != expected:
        raise GenerationFailed(f"inpainting model {source!r} (WORKER_INPAINT_UNET) does not fit the model: its UNet "
                               f"takes (in_channels, cross_attention_dim) {found}, not {expected}")
    log.info("loaded inpainting UNet %r on %s", source, device)
    return unet.to(device, base_unet.dtype)


IP_ADAPTER_ENCODER_FOLDER = "image_encoder"
"""Where an IP-Adapter's CLIP image encoder is, beside its weights file (h94/IP-Adapter's layout)."""


def load_ip_adapter(source: str, pipe: DiffusionPipeline) -> None:
    """Load the IP-Adapter `source` into `pipe` for image prompts (`IMAGINE_IMAGE_IP_ADAPTER`, see `worker.adapter`):
    `<hub id or folder>:<path of the weights file>`, e.g. `h94/IP-Adapter:models/ip-adapter_sd15.safetensors`; its
    image encoder is read from the `image_encoder` folder beside the weights file.

    Raises:
        GenerationFailed: a malformed setting, or weights that cannot be loaded or do not fit the model; one line.
    """
    repo, _, weights = source.rpartition(":")
    subfolder, _, weight_name = weights.rpartition("/")
    if not repo or not weight_name:
        raise GenerationFailed(f"IMAGINE_IMAGE_IP_ADAPTER={source!r} is not <hub id or folder>:<weights file>, e.g. "
                               "h94/IP-Adapter:models/ip-adapter_sd15.safetensors")
    folder = Path(repo).expanduser()
    if not folder.is_dir() and _looks_like_path(repo):
        raise GenerationFailed(f"IP-Adapter folder {repo!r} does not exist (IMAGINE_IMAGE_IP_ADAPTER)")
    if not hasattr(pipe, "load_ip_adapter") or not hasattr(pipe, "image_encoder"):
        raise GenerationFailed(f"{type(pipe).__name__} cannot take an IP-Adapter (IMAGINE_IMAGE_IP_ADAPTER)")
    try:
        pipe.load_ip_adapter(_local_or_hub(repo), subfolder=subfolder, weight_name=weight_name,
                             image_encoder_folder=IP_ADAPTER_ENCODER_FOLDER)
    except Exception as exc:  # noqa: BLE001 - diffusers raises many types
        raise GenerationFailed(f"cannot load IP-Adapter {source!r} (IMAGINE_IMAGE_IP_ADAPTER): "
                               f"{_first_line(exc)}") from None
    log.info("loaded IP-Adapter %r on %s", source, pipe.device)


def _same_text_encoder(source: str, base_config: CLIPTextConfig) -> bool:
    """Whether the upscaler's own text encoder (read from its config only) has the base encoder's architecture."""
    try:
        own = CLIPTextConfig.from_pretrained(_local_or_hub(source), subfolder="text_encoder")
    except Exception:  # noqa: BLE001 - no such config: let the full load below report what is wrong
        return False
    return all(getattr(own, name, None) == getattr(base_config, name, None) for name in SHARED_TEXT_ENCODER_FIELDS)


def _upscaler_from_pretrained(
    source: str, dtype: torch.dtype, shared: dict[str, object]
) -> StableDiffusionLatentUpscalePipeline:
    """`StableDiffusionLatentUpscalePipeline.from_pretrained`, any failure as a one-line GenerationFailed."""
    folder = Path(source).expanduser()
    if not folder.is_dir() and _looks_like_path(source):
        raise GenerationFailed(f"upscaler folder {source!r} does not exist (WORKER_UPSCALER)")
    try:
        return StableDiffusionLatentUpscalePipeline.from_pretrained(_local_or_hub(source), dtype=dtype, **shared)
    except Exception as exc:  # noqa: BLE001 - diffusers raises many types
        raise GenerationFailed(f"cannot load upscaler {source!r} (WORKER_UPSCALER): {_first_line(exc)}") from None


def _check_upscaler(source: str, pipe: DiffusionPipeline) -> None:
    """Refuse what would fail at the first job: not the latent upscaler, or a UNet that does not fit its encoder."""
    unet, vae, encoder = (getattr(pipe, name, None) for name in ("unet", "vae", "text_encoder"))
    if not isinstance(pipe, StableDiffusionLatentUpscalePipeline) or unet is None or vae is None or encoder is None:
        raise GenerationFailed(f"upscaler {source!r} is not a StableDiffusionLatentUpscalePipeline (WORKER_UPSCALER "
                               "takes an sd-x2-latent-upscaler style model)")
    width = encoder.config.hidden_size
    expected = (2 * vae.config.latent_channels, width, NOISE_LEVEL_EMBED_WIDTH + width)
    found = (unet.config.in_channels, unet.config.cross_attention_dim, unet.config.time_cond_proj_dim)
    if found != expected:
        raise GenerationFailed(f"upscaler {source!r} (WORKER_UPSCALER) is not a 2x latent upscaler for its text "
                               f"encoder and VAE: its UNet takes (in_channels, cross_attention_dim, "
                               f"time_cond_proj_dim) {found}, not {expected}")


def _local_or_hub(source: str) -> str:
    folder = Path(source).expanduser()
    return str(folder) if folder.is_dir() else source


def _from_pretrained(info: ModelInfo, dtype: torch.dtype) -> DiffusionPipeline:
    """`AutoPipelineForText2Image.from_pretrained`, with a missing folder and any load failure as one-line errors;
    a folder's `LATENT_RGB_FILE`, when it has one, goes to `pipe.vae.latent_rgb` for the previews."""
    folder = Path(info.source).expanduser()
    if not folder.is_dir() and _looks_like_path(info.source):
        raise GenerationFailed(f"model {info.name!r}: folder {info.source!r} does not exist")
    source = str(folder) if folder.is_dir() else info.source
    try:
        pipe = AutoPipelineForText2Image.from_pretrained(source, dtype=dtype)
    except Exception as exc:  # noqa: BLE001 - diffusers raises many types (OSError, ValueError, EnvironmentError...)
        raise GenerationFailed(f"cannot load model {info.name!r} from {info.source!r}: {_first_line(exc)}") from None
    if (folder / LATENT_RGB_FILE).is_file():
        pipe.vae.latent_rgb = torch.tensor(json.loads((folder / LATENT_RGB_FILE).read_text())["latent_rgb"])
    return pipe


def _looks_like_path(source: str) -> bool:
    """A filesystem path rather than a hub id (`org/name`): absolute, relative with dots, or home-relative."""
    return source.startswith(("/", "./", "../", "~", "\\")) or (len(source) > 1 and source[1] == ":")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
