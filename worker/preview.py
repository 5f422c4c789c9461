"""Cheap progress previews: SD latents to RGB with one linear map per pixel, no VAE decode."""

from __future__ import annotations

import torch
from PIL import Image

SD1_LATENT_RGB_FACTORS = (
    # R       G       B
    (0.298, 0.207, 0.208),  # latent channel 1
    (0.187, 0.286, 0.173),  # latent channel 2
    (-0.158, 0.189, 0.264),  # latent channel 3
    (-0.184, -0.271, -0.473),  # latent channel 4
)
"""Least-squares fit of SD 1.x VAE-decoded RGB in [-1, 1] on its 4 latent channels (Birch-san, "Decoding latents to
RGB without upscaling", discuss.huggingface.co/t/23204). Roughly right for SD 2.x and SDXL, which share the layout."""


def latents_to_rgb(latents: torch.Tensor) -> list[Image.Image] | None:
    """One small RGB image per latent (one pixel per latent pixel); None when the latents are not SD-shaped.

    rgb[y, x] = latents[:, y, x] @ F with F = `SD1_LATENT_RGB_FACTORS`, then [-1, 1] -> [0, 255].
    """
    if latents.ndim != 4 or latents.shape[1] != len(SD1_LATENT_RGB_FACTORS):
        return None  # e.g. packed transformer latents (Flux) or 16-channel VAEs (SD3): no preview
    factors = torch.tensor(SD1_LATENT_RGB_FACTORS, dtype=torch.float32, device=latents.device)
    rgb = latents.float().permute(0, 2, 3, 1) @ factors  # (n, h, w, 4) @ (4, 3) -> (n, h, w, 3)
    pixels = ((rgb.nan_to_num() + 1) * 127.5).clamp(0, 255).to(torch.uint8).cpu().numpy()
    return [Image.fromarray(p, mode="RGB") for p in pixels]
