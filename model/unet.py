"""The second stage of latent diffusion: a text-conditioned UNet that denoises a noised latent.

Forward process (Ho et al. 2020, eq. 4), in the VAE's scaled latent space z_0 = scaling_factor * mu(x):

    q(z_t | z_0) = N(sqrt(abar_t) z_0, (1 - abar_t) I),   i.e.   z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps

with the cosine schedule abar_t (Nichol & Dhariwal 2021, eq. 17; diffusers' "squaredcos_cap_v2"). The UNet
reads the caption through cross-attention to the text encoder's last hidden states tau(y) (Rombach et al. 2022, eq. 3).

It predicts the velocity v = sqrt(abar_t) eps - sqrt(1 - abar_t) z_0 (Salimans & Ho 2022, "Progressive
Distillation", sec. 4), from which eps and z_0 follow linearly. The loss is a weighted squared error on v; what the
weight means is clearest in terms of the implied z_0 error, since || v - v_hat ||^2 = (SNR(t) + 1) || z_0 - z0_hat ||^2
with SNR(t) = abar_t / (1 - abar_t):

    L = E_{t, z_0, eps} [ lambda(t) / (SNR(t) + 1) * || v - v_theta(z_t, t, tau(y)) ||^2 ]
      = E [ lambda(t) * || z_0 - z0_theta ||^2 ],      lambda(t) = clamp(SNR(t), 1, gamma).

lambda caps the many easy low-noise steps at gamma, as Min-SNR-gamma does (Hang et al. 2023, eq. 6), and keeps the
hardest, high-noise steps at 1, as Salimans & Ho's truncated-SNR weighting max(SNR, 1) does. Both ends matter here.
Plain eps-prediction (lambda = SNR) and Min-SNR as usually written (lambda = min(SNR, gamma)) give the steps near
t = T a weight of SNR ~ 0: there z_t is almost pure noise and only the caption says what the image is, so a network
trained that way never learns to read the background colour from the caption, and a sampler started from pure noise
commits to the data set's mean grey (what the first shipped, eps-trained model did: 14% of backgrounds right).
The v parameterisation also keeps the sampler's z_0 estimate at t ~ T well conditioned (z0_hat ~ -v_hat), where
eps-prediction divides the network's error by sqrt(abar_t) ~ 0.
(`prediction="epsilon"` trains the eps network with Min-SNR weights min(SNR, gamma) / SNR instead.)

The caption is replaced by "" with probability `caption_dropout`, so the same network also learns eps_theta(z_t, t,
tau("")), which classifier-free guidance (Ho & Salimans 2022) needs at sampling time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, UNet2DConditionModel
from diffusers.models.embeddings import get_timestep_embedding

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
    prediction: str = "v_prediction"  # what the network outputs: "v_prediction" or "epsilon" (diffusers' names)
    min_snr_gamma: float = 5.0  # cap of the loss weights on low-noise steps (Hang et al. 2023's gamma; they use 5)
    caption_dropout: float = 0.1  # probability of training on the empty caption, for classifier-free guidance
    ema_decay: float = 0.999  # largest decay of the exponential moving average of the weights
    input_scale: float = 1.0  # b of z_0 = b * mu(x) / std(mu): the latents' std, 1 as in LDM; see `LATENT_32_UNET`
    timesteps: str = "uniform"  # how training draws t: "uniform" or "shape-band" (see `sample_timesteps`)
    time_width: int | None = None  # width of the timestep embedding (None: diffusers' 4 x the first level's width)


LATENT_32_UNET = UNetConfig(channels=(16, 32, 64, 128), cross_attention=(False, True, True, False), head_dim=32,
                            input_scale=0.5, time_width=128)
"""The denoiser for `model.vae.FACTOR_2_VAE`'s 32x32 latents: version 1's three levels, now at 16, 8 and 4,
under a thin 16-wide level at 32x32 without attention (3.2 M parameters; a training step costs ~1.4x version 1's
UNet's where the same three levels at 32x32 cost ~4x). Its heads, GroupNorm groups and timestep embedding are
version 1's too (since session 14; sessions 7-12 measured 16-wide heads, 8 groups and a 64-wide embedding), so
version 1's trained levels can start its lower ones (`transplant`).

Its latents have std 0.5 (`input_scale`): twice the side means neighbouring latent pixels say more about each other,
so at the same abar_t a 32x32 latent shows its layout far more plainly than a 16x16 one, and the cosine schedule
tuned for the smaller size spends few steps where the layout is still undecided. Scaling z_0 by b multiplies
SNR(t) by b^2 at every t (Chen 2023, "On the importance of noise scheduling for diffusion models", sec. 3: input
scaling; Hoogeboom et al. 2023, "simple diffusion", shift the cosine schedule's log-SNR by 2 log(base/size), the
same factor 1/4 for 16 -> 32). It needs no change to diffusers' pipelines: `vae.config.scaling_factor` carries b."""


QUICK_UNET = UNetConfig(channels=(32, 32), cross_attention=(True, False), head_dim=16, norm_groups=8)
"""A throwaway denoiser for tests."""


def narrowed(cfg: UNetConfig, factor: float) -> UNetConfig:
    """`cfg` with every width (levels, heads, GroupNorm groups, timestep embedding) times `factor`, so a narrowed
    version 1 still starts the same-narrowed version 2 (`transplant`). At half width version 1's denoiser has 0.81 M
    parameters against 3.17 M and trains 1.85x the examples a minute on a 2-core CPU (model/README.md, "Sessions
    17-18"); ValueError when a width would not be a whole, positive multiple of the groups."""
    channels = tuple(round(c * factor) for c in cfg.channels)
    head_dim, groups = round(cfg.head_dim * factor), round(cfg.norm_groups * factor)
    if head_dim < 1 or groups < 1 or any(c < 1 or c % groups for c in channels):
        raise ValueError(f"width factor {factor} gives levels {channels}, heads {head_dim}, groups {groups}")
    time_width = None if cfg.time_width is None else round(cfg.time_width * factor)
    return replace(cfg, channels=channels, head_dim=head_dim, norm_groups=groups, time_width=time_width)


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
        # diffusers reads it as heads per level; a level without attention still needs a number
        attention_head_dim=tuple(max(1, c // cfg.head_dim) for c in cfg.channels),
        norm_num_groups=cfg.norm_groups,
        time_embedding_dim=cfg.time_width,
    )


def transplant(unet: UNet2DConditionModel, source: dict[str, torch.Tensor]) -> int:
    """Start `unet`'s lower levels from a trained denoiser with fewer levels (`source`, its state dict): version 1's
    three levels become version 2's levels 2-4, their down blocks shifted by the levels added on top; its middle,
    attention, up blocks (the added levels come last on the way up) and timestep MLP are taken where their shapes
    fit. The timestep embedding's first layer reads a sinusoid as wide as the top level, so a narrower top level
    needs another one: the least-squares fit, over t = 0..T-1, of the source's first layer on the narrower sinusoid
    (for version 1 -> 2 the embedding then differs from the source's by ~10%, against ~50% taking every other
    frequency). Everything else keeps its fresh weights. Returns how many parameters were copied."""
    shift = len(unet.config.block_out_channels) - 1 - max(
        int(k.split(".")[1]) for k in source if k.startswith("down_blocks."))
    target = unet.state_dict()
    copied = 0
    for key, value in target.items():
        parts = key.split(".")
        if parts[0] == "down_blocks":
            parts[1] = str(int(parts[1]) - shift)
        weight = source.get(".".join(parts))
        if weight is None:
            continue
        if key == "time_embedding.linear_1.weight" and weight.shape[0] == value.shape[0] != weight.shape[1]:
            weight = _refit_time_layer(weight, value.shape[1], unet.config)
        if weight.shape == value.shape:
            value.copy_(weight)  # state_dict's tensors share the parameters' storage
            copied += value.numel()
    return copied


def _refit_time_layer(weight: torch.Tensor, width: int, config: dict) -> torch.Tensor:
    """The (out, width) matrix W minimising sum over t of || weight e_src(t) - W e_width(t) ||^2, e the sinusoid
    embeddings of t = 0..T-1."""
    t = torch.arange(NUM_TRAIN_TIMESTEPS)

    def sinusoid(dim: int) -> torch.Tensor:
        return get_timestep_embedding(t, dim, flip_sin_to_cos=config["flip_sin_to_cos"],
                                      downscale_freq_shift=config["freq_shift"]).double()

    wanted = sinusoid(weight.shape[1]) @ weight.double().T
    fit = torch.linalg.lstsq(sinusoid(width), wanted, driver="gelsd").solution  # gelsd: the sinusoid is ill-conditioned
    return fit.T.to(weight.dtype)


def noise_scheduler(prediction: str = "v_prediction") -> DDPMScheduler:
    """The forward process q(z_t | z_0) and ancestral sampler of Ho et al. 2020, on the cosine schedule."""
    return DDPMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_schedule=BETA_SCHEDULE,
                         prediction_type=prediction, clip_sample=False)


def sampling_scheduler(prediction: str = "v_prediction") -> DPMSolverMultistepScheduler:
    """DPM-Solver++ (Lu et al. 2022) on the same schedule: the shipped default, as `model.loading` uses for all."""
    return DPMSolverMultistepScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_schedule=BETA_SCHEDULE,
                                       prediction_type=prediction, algorithm_type="dpmsolver++",
                                       steps_offset=1)  # as SD 1.x ships it; diffusers warns about 0


def min_snr_weights(scheduler: DDPMScheduler, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """The loss weight of each t for the scheduler's prediction type, with SNR(t) = abar_t / (1 - abar_t):
    clamp(SNR, 1, gamma) / (SNR + 1) for v-prediction (see the module's docstring), Min-SNR's min(SNR, gamma) / SNR
    for eps-prediction."""
    abar = scheduler.alphas_cumprod.to(t.device)[t]
    snr = abar / (1 - abar)
    if scheduler.config.prediction_type == "v_prediction":
        return snr.clamp(min=1.0, max=gamma) / (snr + 1)
    return snr.clamp(max=gamma) / snr


TIMESTEP_SAMPLERS = ("uniform", "shape-band")
SHAPE_BAND = 250
"""t below which version 1's samples decide their objects' shapes and colours: rendered with one caption
until step k of 20 (DPM-Solver++) and another after it, 32 scenes end with the second caption's shape 78% of the
time when the captions are swapped at t = 300, 66% at 250, 41% at 100 and 22% at 50 (`python -m model.decided`;
model/README.md, session 11)."""


def sample_timesteps(n: int, how: str, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
                     ) -> torch.Tensor:
    """n training timesteps in 0..T-1: uniform, as in Ho et al. 2020, or "shape-band": every other row uniform and
    the rest below `SHAPE_BAND`, 2.5x as many draws as uniform where samples decide their shapes. Drawing t from a
    density p(t) is the uniform loss weighted by p(t) on top of `min_snr_weights`. Measured at equal examples (session
    11), shape-band learned shapes and colours slower than uniform: it stays an option, not the default."""
    t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (n,), generator=generator, device=device)
    if how == "uniform":
        return t
    if how == "shape-band":
        band = torch.randint(0, SHAPE_BAND, (n,), generator=generator, device=device)
        return torch.where(torch.arange(n, device=device) % 2 == 1, band, t)
    raise ValueError(f"unknown timestep sampler {how!r}; expected one of {TIMESTEP_SAMPLERS}")


def diffusion_loss(unet: UNet2DConditionModel, scheduler: DDPMScheduler, z0: torch.Tensor, text: torch.Tensor,
                   gamma: float, generator: torch.Generator | None = None, extra: torch.Tensor | None = None,
                   timesteps: str = "uniform") -> torch.Tensor:
    """The weighted v- (or eps-) prediction loss of a batch of scaled latents z0 and text hidden states; `extra`:
    channels the UNet also reads beside z_t (an inpainting UNet's mask and masked-image latents, `model.inpaint`)."""
    n = z0.shape[0]
    # 1. t ~ U{0..T-1} (or `timesteps`' density), eps ~ N(0, I)
    t = sample_timesteps(n, timesteps, generator, z0.device)
    eps = torch.randn(z0.shape, generator=generator, device=z0.device, dtype=z0.dtype)
    # 2. z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps
    zt = scheduler.add_noise(z0, eps, t)
    # 3. the target: v = sqrt(abar_t) eps - sqrt(1 - abar_t) z_0, or eps itself
    target = scheduler.get_velocity(z0, eps, t) if scheduler.config.prediction_type == "v_prediction" else eps
    # 4. || target - f_theta(z_t, t, tau(y)) ||^2 per sample, weighted by `min_snr_weights`
    inputs = zt if extra is None else torch.cat([zt, extra], dim=1)
    predicted = unet(inputs, t, encoder_hidden_states=text).sample
    per_sample = (predicted - target).pow(2).mean(dim=(1, 2, 3))
    return (min_snr_weights(scheduler, t, gamma) * per_sample).mean()
