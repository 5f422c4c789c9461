"""The tiny 2x latent upscaler: a real `StableDiffusionLatentUpscalePipeline` built from configs with random weights.

It is what `WORKER_UPSCALER=builtin:tiny-upscaler` loads, so the worker's diffusers-upscaler path runs in tests
without a download: 64x64 in, 128x128 out, a few steps in seconds on a CPU. Shapes follow diffusers' own
`get_dummy_components()` test of this pipeline (its K-diffusion UNet blocks need four levels of 32/64 channels).
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionLatentUpscalePipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from model.tiny import TINY_IMAGE_SIZE_PX, build_tiny_text_encoder, build_tiny_tokenizer

NOISE_LEVEL_EMBED_WIDTH = 128
"""Width of the noise-level embedding the pipeline puts before the pooled text embedding in `timestep_cond`
(64 ones and 64 zeros, `StableDiffusionLatentUpscalePipeline.__call__` step 5)."""


def build_tiny_latent_upscaler(
    text_encoder: CLIPTextModel | None = None, tokenizer: CLIPTokenizer | None = None, seed: int = 0
) -> StableDiffusionLatentUpscalePipeline:
    """The tiny upscaler on the CPU in fp32; the same `seed` gives the same weights (the global RNG is left as it
    was). Given a CLIP `text_encoder` and its `tokenizer` (a base pipeline's), it uses them and sizes its UNet's
    text conditioning to match; else it builds the tiny ones of `model.tiny`."""
    tokenizer = tokenizer if text_encoder is not None and tokenizer is not None else build_tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        if text_encoder is None:
            torch.manual_seed(seed + 2)
            text_encoder = build_tiny_text_encoder(tokenizer)
        width = text_encoder.config.hidden_size
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=2 * TINY_IMAGE_SIZE_PX // 8,  # output latent side
            in_channels=8,  # the noisy latents and the (nearest-upsampled) low-resolution latents
            out_channels=5,  # 4 latent channels and a variance channel the pipeline drops
            block_out_channels=(32, 32, 64, 64),
            down_block_types=("KDownBlock2D",) + ("KCrossAttnDownBlock2D",) * 3,
            up_block_types=("KCrossAttnUpBlock2D",) * 3 + ("KUpBlock2D",),
            mid_block_type=None,
            act_fn="gelu",
            attention_head_dim=8,
            norm_num_groups=None,
            conv_in_kernel=1,
            conv_out_kernel=1,
            cross_attention_dim=width,
            time_cond_proj_dim=NOISE_LEVEL_EMBED_WIDTH + width,  # noise level + pooled text embedding
            resnet_time_scale_shift="scale_shift",
            time_embedding_type="fourier",
            timestep_post_act="gelu",
        )
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            block_out_channels=(16, 16, 32, 32),  # factor 8, as the base model's VAE
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=1,
            norm_num_groups=8,
            sample_size=2 * TINY_IMAGE_SIZE_PX,
        )
    # Euler: the pipeline reads its sigmas for the Karras preconditioning; the UNet predicts the clean sample.
    scheduler = EulerDiscreteScheduler(prediction_type="sample")
    pipe = StableDiffusionLatentUpscalePipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
