"""The tiny Stable Diffusion pipeline: real diffusers components, built from configs with random weights.

It downloads nothing and renders a 4-image 64x64 grid in well under a second on a CPU, so the worker and its tests
exercise the real pipeline code path. Its images are structured noise: the weights are random but deterministic.
Shapes follow diffusers' own `get_dummy_components()` tests, with a VAE of four blocks (factor 8, as in SD 1.x).
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DPMSolverMultistepScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import save_file
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from model.text import build_tokenizer

TINY_IMAGE_SIZE_PX = 64
"""Side of the tiny model's native square image, in pixels (latents are 8x8)."""

TINY_MAX_TOKENS = 77
"""Prompt length the tiny text encoder reads, in tokens (as in CLIP)."""

TINY_TEXT_WIDTH = 32
"""Width of the tiny text encoder's embeddings (the UNet's cross-attention dimension)."""

# Words that become single tokens; any other text falls back to byte-level pieces, so nothing is unknown.
COMMON_WORDS = """
a an the of in on at with and or by from to for under over near by is
cat cats dog dogs bird fish horse fox owl dragon robot person man woman girl boy child face portrait
tree trees forest flower flowers garden grass mountain mountains river lake sea ocean beach sky cloud clouds
sun moon star stars night day sunset sunrise rain snow fog storm fire water city street house castle room
red orange yellow green blue purple pink black white gray grey gold silver brown dark light bright
big small tiny old new ancient futuristic cute beautiful detailed realistic cinematic epic
photo photograph painting drawing sketch illustration render art style oil watercolor anime pixel
lighting light shadow color colors colorful pattern texture tile seamless wallpaper background
""".split()


def build_tiny_tokenizer() -> CLIPTokenizer:
    """A CLIP byte-level BPE tokenizer in which every one of `COMMON_WORDS` is a single token."""
    return build_tokenizer(TINY_MAX_TOKENS, words=COMMON_WORDS)


def build_tiny_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    """A 2-layer CLIP text encoder of width TINY_TEXT_WIDTH for `tokenizer`, weights from the global torch RNG."""
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=TINY_TEXT_WIDTH,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=TINY_MAX_TOKENS,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def build_tiny_vae() -> AutoencoderKL:
    """The tiny VAE, weights from the global torch RNG: four blocks, 2**3 = 8 pixels per latent, as in SD 1.x."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(16, 16, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=TINY_IMAGE_SIZE_PX,
    )


def build_tiny_scheduler() -> DPMSolverMultistepScheduler:
    """SD 1.x's noise schedule, sampled with DPM-Solver++ (the fast scheduler `load_pipeline` uses for every model)."""
    return DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
        algorithm_type="dpmsolver++",
    )


def build_tiny_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """The tiny SD pipeline on the CPU in fp32; the same `seed` gives the same weights.

    The global torch RNG is left as it was: weights are drawn inside `torch.random.fork_rng`.
    """
    tokenizer = build_tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=TINY_IMAGE_SIZE_PX // 8,  # latent side
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=TINY_TEXT_WIDTH,
            attention_head_dim=8,
            norm_num_groups=16,
        )
        torch.manual_seed(seed + 1)
        vae = build_tiny_vae()
        torch.manual_seed(seed + 2)
        text_encoder = build_tiny_text_encoder(tokenizer)
    scheduler = build_tiny_scheduler()
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_sdxl_pipeline(seed: int = 0) -> StableDiffusionXLPipeline:
    """A tiny SDXL pipeline (two text encoders, a pooled projection, size-and-crop conditioning), random weights
    from `seed`, on the CPU in fp32: what proves the worker's SDXL paths (shapes from diffusers' own SDXL tests)."""
    tokenizer = build_tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=TINY_IMAGE_SIZE_PX // 8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",  # SDXL: pooled text + original size, crop and target size
            addition_time_embed_dim=8,
            transformer_layers_per_block=(1, 1),
            projection_class_embeddings_input_dim=TINY_TEXT_WIDTH + 6 * 8,
            cross_attention_dim=2 * TINY_TEXT_WIDTH,  # both encoders' hidden states, concatenated
            norm_num_groups=16,
        )
        torch.manual_seed(seed + 1)
        vae = build_tiny_vae()
        torch.manual_seed(seed + 2)
        text_encoder = build_tiny_text_encoder(tokenizer)
        torch.manual_seed(seed + 3)
        text_encoder_2 = CLIPTextModelWithProjection(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=TINY_TEXT_WIDTH,
                intermediate_size=37,
                num_attention_heads=4,
                num_hidden_layers=2,
                max_position_embeddings=TINY_MAX_TOKENS,
                projection_dim=TINY_TEXT_WIDTH,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    scheduler = build_tiny_scheduler()
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


TINY_IP_ADAPTER_WEIGHTS = "ip-adapter.safetensors"
"""File name of the weights `save_tiny_ip_adapter` writes (its image encoder goes in `image_encoder/` beside it)."""


def save_tiny_ip_adapter(unet: UNet2DConditionModel, folder: Path, seed: int = 0) -> str:
    """Write a random IP-Adapter for `unet` to `folder`, in the layout of h94/IP-Adapter: the weights file (image
    projection to 4 tokens, a key and value projection per cross-attention layer) and a tiny CLIP image encoder in
    `image_encoder/`. Returns the `IMAGINE_IMAGE_IP_ADAPTER` value that loads it."""
    cross = unet.config.cross_attention_dim
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                              image_size=32, patch_size=8, projection_dim=32)
    tensors: dict[str, torch.Tensor] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = CLIPVisionModelWithProjection(config)
        tokens = 4
        tensors["image_proj.proj.weight"] = torch.randn(cross * tokens, config.projection_dim) * 0.5
        tensors["image_proj.proj.bias"] = torch.zeros(cross * tokens)
        tensors["image_proj.norm.weight"] = torch.ones(cross)
        tensors["image_proj.norm.bias"] = torch.zeros(cross)
        # diffusers numbers the cross-attention layers 1, 3, 5... in the order of `unet.attn_processors`
        cross_layers = [name for name in unet.attn_processors if name.endswith("attn2.processor")]
        for number, name in zip(range(1, 2 * len(cross_layers), 2), cross_layers, strict=True):
            width = unet.get_submodule(name.removesuffix(".processor")).to_q.in_features
            for projection in ("to_k_ip", "to_v_ip"):
                tensors[f"ip_adapter.{number}.{projection}.weight"] = torch.randn(width, cross) / cross**0.5
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / TINY_IP_ADAPTER_WEIGHTS))
    encoder.save_pretrained(folder / "image_encoder")
    return f"{folder}:{TINY_IP_ADAPTER_WEIGHTS}"
