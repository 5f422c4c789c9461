"""Cheap progress previews: latents to RGB with one affine map per pixel (the model's own or SD's), no VAE decode."""

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
SD1_LATENT_RGB = torch.tensor([*SD1_LATENT_RGB_FACTORS, (0.0, 0.0, 0.0)])
"""`SD1_LATENT_RGB_FACTORS` as a map in `latents_to_rgb`'s layout: its rows, then a zero bias."""


def latents_to_rgb(latents: torch.Tensor, fitted: torch.Tensor | None = None) -> list[Image.Image] | None:
    """One small RGB image per latent (one pixel per latent pixel); None when the latents are not SD-shaped.

    rgb[y, x] = latents[:, y, x] @ F + b, then [-1, 1] -> [0, 255], with F and b the model's own map when it brings
    one (`fitted`: a row per latent channel, then b; the embedded model's, `model.loading.LATENT_RGB_FILE`), else
    F = `SD1_LATENT_RGB_FACTORS` and b = 0 (`SD1_LATENT_RGB`).
    """
    if fitted is None:
        fitted = SD1_LATENT_RGB
    if latents.ndim != 4 or latents.shape[1] != len(fitted) - 1:
        return None  # e.g. packed transformer latents (Flux) or 16-channel VAEs (SD3): no preview
    fitted = fitted.to(latents.device, torch.float32)
    rgb = latents.float().permute(0, 2, 3, 1) @ fitted[:-1] + fitted[-1]  # (n, h, w, c) @ (c, 3) -> (n, h, w, 3)
    pixels = ((rgb.nan_to_num() + 1) * 127.5).clamp(0, 255).to(torch.uint8).cpu().numpy()
    return [Image.fromarray(p, mode="RGB") for p in pixels]
