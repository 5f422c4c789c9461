"""The first stage of latent diffusion: a KL-regularised autoencoder from 64x64 RGB to 32x32x4 latents (v1: 16x16x4).

Following Rombach et al. 2022 ("High-Resolution Image Synthesis with Latent Diffusion Models", sec. 3.1 and app. G),
the encoder E gives a diagonal Gaussian posterior q(z|x) = N(mu(x), sigma(x)^2) and the decoder D maps z back to
pixels. Training maximises the ELBO, i.e. minimises

    L_VAE = E_q[ -log p(x|z) ] + beta * KL(q(z|x) || N(0, I))

with -log p(x|z) taken as a squared distance in pixel space (a Gaussian likelihood, which is what PSNR measures) plus
the same on image gradients, which keeps thin edges such as rings sharp, and a small beta, so the latent space is
smooth but reconstructions stay exact.
Latents are then scaled by `scaling_factor` = 1 / std(z) (stored in the VAE config as diffusers does) so that the
diffusion model sees unit-variance inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL


@dataclass(frozen=True)
class VAEConfig:
    """Shape of the autoencoder and the weights of its loss."""

    channels: tuple[int, ...] = (32, 64, 64)  # width of each encoder/decoder block; len - 1 halvings (3 -> factor 4)
    layers_per_block: int = 1  # ResNet blocks per level (the decoder has one more, as in diffusers)
    latent_channels: int = 4  # channels of z, as in Stable Diffusion
    norm_groups: int = 16  # GroupNorm groups; must divide every width
    mid_attention: bool = False  # self-attention in the bottleneck; off: fully convolutional, so crops train it
    kl_weight: float = 1e-6  # beta of the ELBO, per latent element relative to the per-pixel reconstruction term
    gradient_weight: float = 0.5  # weight of the squared distance between image gradients (sharp thin shapes)
    initial_log_variance: float = -8.0  # log sigma^2 of q(z|x) at initialisation (see `build_vae`)
    sample_size: int = 64  # image side the model is made for, in pixels


FACTOR_2_VAE = VAEConfig(channels=(32, 64))
"""The second version's first stage (issue 19): 64x64 -> 32x32x4 latents, so a square's 2-3 pixel corner is a whole
latent pixel; its reconstructions keep the corners the factor-4 one rounds off (model/README.md, "Where the shapes go
soft")."""

QUICK_VAE = VAEConfig(channels=(8, 16, 16), norm_groups=8)
"""A throwaway autoencoder for tests: the same factor 4, a few seconds to train."""


def build_vae(cfg: VAEConfig) -> AutoencoderKL:
    """A fresh `AutoencoderKL` of the given shape (random weights; seed torch before calling).

    The posterior starts nearly deterministic: with diffusers' default initialisation sigma is about 1 while mu is
    about 0.1, so z is mostly noise and the decoder learns nothing until the encoder has shrunk sigma; the KL term,
    small by design, lets sigma grow again wherever that costs no reconstruction.
    """
    n = len(cfg.channels)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=cfg.latent_channels,
        block_out_channels=cfg.channels,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        layers_per_block=cfg.layers_per_block,
        norm_num_groups=cfg.norm_groups,
        sample_size=cfg.sample_size,
        mid_block_add_attention=cfg.mid_attention,
        scaling_factor=1.0,  # replaced by 1/std(z) once the autoencoder is trained, see `scaling_factor`
    )
    with torch.no_grad():  # quant_conv's output is (mu, log sigma^2) stacked along the channels
        vae.quant_conv.bias[cfg.latent_channels:] = cfg.initial_log_variance
    return vae


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (n, h, w, 3) images -> float (n, 3, h, w) in [-1, 1], the range diffusers' VAEs work in."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal and vertical finite differences of an image batch."""
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def vae_loss(vae: AutoencoderKL, x: torch.Tensor, cfg: VAEConfig, generator: torch.Generator | None = None
             ) -> tuple[torch.Tensor, dict[str, float]]:
    """The negative ELBO of a batch x in [-1, 1] (with the gradient term), and its parts for the log."""
    # 1. q(z|x) = N(mu, sigma^2); z = mu + sigma * eps (the reparameterisation trick)
    posterior = vae.encode(x).latent_dist
    z = posterior.sample(generator)
    # 2. x_hat = D(z); -log p(x|z) up to scale and constant: the squared error, plus that of the image gradients
    x_hat = vae.decode(z).sample
    rec = (x_hat - x).pow(2).mean()
    (gx, gy), (hx, hy) = _gradients(x), _gradients(x_hat)
    grad = (gx - hx).pow(2).mean() + (gy - hy).pow(2).mean()
    # 3. KL(q(z|x) || N(0, I)) = 1/2 sum(mu^2 + sigma^2 - 1 - log sigma^2), averaged over latent elements
    kl = posterior.kl().mean() / z[0].numel()
    loss = rec + cfg.gradient_weight * grad + cfg.kl_weight * kl
    return loss, {"rec": rec.item(), "grad": grad.item(), "kl": kl.item()}


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """D(mu(x)): the deterministic reconstruction, in [-1, 1]."""
    out = [vae.decode(vae.encode(x[i:i + batch]).latent_dist.mode()).sample for i in range(0, len(x), batch)]
    return torch.cat(out).clamp(-1, 1)


def psnr(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [-1, 1] (peak-to-peak 2), over the whole batch."""
    mse = F.mse_loss(x_hat.clamp(-1, 1), x).item()
    return 10 * math.log10(4.0 / max(mse, 1e-12))


@torch.no_grad()
def encode_latents(vae: AutoencoderKL, x: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """mu(x), the posterior means, unscaled (the cache the diffusion model trains on)."""
    return torch.cat([vae.encode(x[i:i + batch]).latent_dist.mode() for i in range(0, len(x), batch)])


def latent_rgb(vae: AutoencoderKL, x: torch.Tensor, scale: float) -> torch.Tensor:
    """The least-squares affine map from a scaled latent pixel to the mean RGB (in [-1, 1]) of the image pixels it
    covers, over the images `x`: a (channels + 1, 3) matrix, one row per latent channel, then the bias. It is what a
    worker's progress previews apply per pixel instead of decoding (`worker.preview`); Stable Diffusion's was fitted
    the same way on its own latents (Birch-san's `SD1_LATENT_RGB_FACTORS`), and does not fit this model's."""
    with torch.no_grad():
        z = encode_latents(vae, x) * scale
    rgb = F.avg_pool2d(x, x.shape[-1] // z.shape[-1])
    inputs = torch.cat([z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]), torch.ones(z.numel() // z.shape[1], 1)], 1)
    return torch.linalg.lstsq(inputs.double(), rgb.permute(0, 2, 3, 1).reshape(-1, 3).double()).solution.float()


def scaling_factor(latents: torch.Tensor) -> float:
    """1 / std of the latents, so that scaled latents have unit variance (Rombach et al. 2022, sec. 4.3.2)."""
    return 1.0 / latents.float().std().item()
