"""The second stage of latent diffusion: a text-conditioned UNet that predicts the noise in a noised latent.

Forward process (Ho et al. 2020, eq. 4), in the VAE's scaled latent space z_0 = scaling_factor * mu(x):

    q(z_t | z_0) = N(sqrt(abar_t) z_0, (1 - abar_t) I),   i.e.   z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps

with the cosine schedule abar_t (Nichol & Dhariwal 2021, eq. 17; diffusers' "squaredcos_cap_v2"). The UNet eps_theta
reads the caption through cross-attention to the text encoder's last hidden states tau(y) (Rombach et al. 2022, eq. 3).
The objective is the simplified loss of Ho et al. (eq. 14) with Min-SNR-gamma weights (Hang et al. 2023, eq. 6 for
eps-prediction), which stop the many easy low-noise steps from dominating the gradient:

    L = E_{t, z_0, eps} [ min(SNR(t), gamma) / SNR(t) * || eps - eps_theta(z_t, t, tau(y)) ||^2 ],
    SNR(t) = abar_t / (1 - abar_t).

The caption is replaced by "" with probability `caption_dropout`, so the same network also learns eps_theta(z_t, t,
tau("")), which classifier-free guidance (Ho & Salimans 2022) needs at sampling time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, UNet2DConditionModel

NUM_TRAIN_TIMESTEPS = 1000
"""T, the number of steps of the forward process."""
BETA_SCHEDULE = "squaredcos_cap_v2"
"""The cosine schedule of Nichol & Dhariwal 2021 (betas capped at 0.999)."""


@dataclass(frozen=True)
class UNetConfig:
    """Shape of the denoiser and the settings of its objective."""

    channels: tuple[int, ...] = (32, 64, 128)  # width of each level; latents 16 -> 8 -> 4 (3.2 M parameters)
    cross_attention: tuple[bool, ...] = (True, True, False)  # which levels attend to the caption
    layers_per_block: int = 1  # ResNet (+ transformer) blocks per level on the way down; one more on the way up
    head_dim: int = 32  # width of one attention head
    norm_groups: int = 16  # GroupNorm groups; must divide every width
    min_snr_gamma: float = 5.0  # gamma of the Min-SNR weights (Hang et al. 2023 use 5)
    caption_dropout: float = 0.1  # probability of training on the empty caption, for classifier-free guidance
    ema_decay: float = 0.999  # largest decay of the exponential moving average of the weights


QUICK_UNET = UNetConfig(channels=(32, 32), cross_attention=(True, False), head_dim=16, norm_groups=8)
"""A throwaway denoiser for tests."""


def build_unet(cfg: UNetConfig, latent_channels: int, latent_size: int, text_width: int) -> UNet2DConditionModel:
    """A fresh `UNet2DConditionModel` of the given shape (random weights; seed torch before calling)."""
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cfg.cross_attention)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.cross_attention))
    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=latent_channels,
        out_channels=latent_channels,
        block_out_channels=cfg.channels,
        down_block_types=down,
        up_block_types=up,
        layers_per_block=cfg.layers_per_block,
        cross_attention_dim=text_width,
        attention_head_dim=tuple(c // cfg.head_dim for c in cfg.channels),  # diffusers reads it as heads per level
        norm_num_groups=cfg.norm_groups,
    )


def noise_scheduler() -> DDPMScheduler:
    """The forward process q(z_t | z_0) and ancestral sampler of Ho et al. 2020, on the cosine schedule."""
    return DDPMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_schedule=BETA_SCHEDULE,
                         prediction_type="epsilon", clip_sample=False)


def sampling_scheduler() -> DPMSolverMultistepScheduler:
    """DPM-Solver++ (Lu et al. 2022) on the same schedule: the shipped default, as `model.loading` uses for all."""
    return DPMSolverMultistepScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_schedule=BETA_SCHEDULE,
                                       prediction_type="epsilon", algorithm_type="dpmsolver++",
                                       steps_offset=1)  # as SD 1.x ships it; diffusers warns about 0


def min_snr_weights(scheduler: DDPMScheduler, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """min(SNR(t), gamma) / SNR(t) with SNR(t) = abar_t / (1 - abar_t): the Min-SNR-gamma weight for eps-prediction."""
    abar = scheduler.alphas_cumprod.to(t.device)[t]
    snr = abar / (1 - abar)
    return snr.clamp(max=gamma) / snr


def diffusion_loss(unet: UNet2DConditionModel, scheduler: DDPMScheduler, z0: torch.Tensor, text: torch.Tensor,
                   gamma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The Min-SNR-weighted eps-prediction loss of a batch of scaled latents z0 and text hidden states."""
    n = z0.shape[0]
    # 1. t ~ U{0..T-1}, eps ~ N(0, I)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=generator, device=z0.device)
    eps = torch.randn(z0.shape, generator=generator, device=z0.device, dtype=z0.dtype)
    # 2. z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps
    zt = scheduler.add_noise(z0, eps, t)
    # 3. || eps - eps_theta(z_t, t, tau(y)) ||^2 per sample, weighted by min(SNR, gamma) / SNR
    eps_hat = unet(zt, t, encoder_hidden_states=text).sample
    per_sample = (eps_hat - eps).pow(2).mean(dim=(1, 2, 3))
    return (min_snr_weights(scheduler, t, gamma) * per_sample).mean()
