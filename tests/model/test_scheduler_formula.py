"""The DDPM math under the scheduler the worker samples the embedded model with, checked against the textbook.

Ho et al. 2020 (DDPM), with alpha_t = 1 - beta_t and abar_t = prod_{s<=t} alpha_s:

    forward:  q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)                                  (eq. 4)
    reverse:  x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps_theta) + sigma_t z   (Algorithm 2)
              sigma_t^2 = (1 - abar_{t-1}) / (1 - abar_t) beta_t                                  (eq. 7, "fixed_small")

A popular write-up gives the reverse step as 1/sqrt(1 - beta_t) (x_t - sqrt(beta_t) eps): the 1/sqrt(alpha_t) factor
is the same, but the noise coefficient sqrt(beta_t) is wrong, it must be beta_t / sqrt(1 - abar_t). The two agree only
when abar_t = beta_t, i.e. at t = 1; everywhere else the wrong form removes the wrong amount of noise.
`test_the_popular_form_is_wrong` shows they differ on the worker's schedule.
"""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.utils.torch_utils import randn_tensor

from model.unet import sampling_scheduler

SHAPE = (2, 4, 16, 16)


def worker_scheduler() -> DPMSolverMultistepScheduler:
    """The scheduler as `model.loading.load_pipeline` hands it to the worker for the embedded model."""
    return DPMSolverMultistepScheduler.from_config(sampling_scheduler().config, algorithm_type="dpmsolver++")


@pytest.fixture
def ddpm() -> DDPMScheduler:
    """Plain DDPM on the worker scheduler's noise schedule, without x_0 clipping (the textbook has none).

    steps_offset=0: the saved config says 1 (what diffusers expects of SD-style models, and what DPM-Solver's
    "linspace" spacing ignores), but DDPM's "leading" spacing would then run t = 1000..1 instead of 999..0.
    """
    return DDPMScheduler.from_config(worker_scheduler().config, clip_sample=False, variance_type="fixed_small",
                                     steps_offset=0)


def test_worker_schedule_is_the_cosine_schedule(ddpm):
    """abar_t is Nichol & Dhariwal's f(t)/f(0), f(t) = cos^2((t/T + s)/(1 + s) pi/2), wherever beta_t is not capped."""
    T, s = 1000, 0.008
    f = [math.cos(((t / T) + s) / (1 + s) * math.pi / 2) ** 2 for t in range(T + 1)]
    expected = torch.tensor([f[t + 1] / f[0] for t in range(T)], dtype=torch.float64)
    assert torch.allclose(ddpm.alphas_cumprod[:990].double(), expected[:990], rtol=1e-4)
    assert torch.equal(worker_scheduler().alphas_cumprod, ddpm.alphas_cumprod)


@pytest.mark.parametrize("t", [1, 10, 250, 500, 999])
def test_add_noise_samples_the_forward_process(ddpm, t):
    """add_noise(x_0, eps, t) = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps."""
    g = torch.Generator().manual_seed(t)
    x0, eps = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    abar = ddpm.alphas_cumprod[t]
    expected = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    actual = ddpm.add_noise(x0, eps, torch.tensor([t] * SHAPE[0]))
    torch.testing.assert_close(actual, expected)


def textbook_step(ddpm: DDPMScheduler, x_t: torch.Tensor, eps: torch.Tensor, t: int, z: torch.Tensor) -> torch.Tensor:
    """x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps) + sigma_t z (Ho et al. 2020, Algorithm 2)."""
    abar_t = ddpm.alphas_cumprod[t]
    abar_prev = ddpm.alphas_cumprod[t - 1] if t > 0 else torch.tensor(1.0)
    alpha_t = abar_t / abar_prev
    beta_t = 1 - alpha_t
    sigma_t = ((1 - abar_prev) / (1 - abar_t) * beta_t).sqrt() if t > 0 else 0.0
    return 1 / alpha_t.sqrt() * (x_t - beta_t / (1 - abar_t).sqrt() * eps) + sigma_t * z


def _inputs(t: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + t)
    return torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)


def velocity(scheduler: DDPMScheduler | DPMSolverMultistepScheduler, x_t: torch.Tensor, eps: torch.Tensor, t: int
             ) -> torch.Tensor:
    """The v-network output that means noise `eps` at x_t: v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0_hat with
    x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), i.e. v = (eps - sqrt(1 - abar_t) x_t) / sqrt(abar_t)."""
    abar = scheduler.alphas_cumprod[t]
    return (eps - (1 - abar).sqrt() * x_t) / abar.sqrt()


@pytest.mark.parametrize("t", [1, 10, 250, 500, 900])
def test_ddpm_step_is_the_textbook_reverse_step(ddpm, t):
    """DDPMScheduler.step, given the v-network output for a noise eps and a fixed noise z, equals the textbook
    reverse update in eps."""
    assert ddpm.config.prediction_type == "v_prediction"
    ddpm.set_timesteps(ddpm.config.num_train_timesteps)
    x_t, eps = _inputs(t)
    # the noise z the scheduler draws: same generator seed, same call
    z = randn_tensor(SHAPE, generator=torch.Generator().manual_seed(7), dtype=x_t.dtype)
    v = velocity(ddpm, x_t, eps, t)
    actual = ddpm.step(v, t, x_t, generator=torch.Generator().manual_seed(7)).prev_sample
    torch.testing.assert_close(actual, textbook_step(ddpm, x_t, eps, t, z), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("t", [10, 250, 500, 900])
def test_the_popular_form_is_wrong(ddpm, t):
    """1/sqrt(1 - beta_t) (x_t - sqrt(beta_t) eps) + sigma_t z is not the reverse step: it differs from DDPM's."""
    ddpm.set_timesteps(ddpm.config.num_train_timesteps)
    x_t, eps = _inputs(t)
    z = torch.zeros(SHAPE)
    right = textbook_step(ddpm, x_t, eps, t, z)
    beta_t = 1 - ddpm.alphas_cumprod[t] / ddpm.alphas_cumprod[t - 1]
    wrong = 1 / (1 - beta_t).sqrt() * (x_t - beta_t.sqrt() * eps)
    assert (wrong - right).abs().max() > 1e-2


@pytest.mark.parametrize("step", [0, 1, 5])
def test_worker_first_order_step_is_ddim(step):
    """DPM-Solver++'s first step is DDIM (Lu et al. 2022): x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s) eps, where
    the embedded model's output is the velocity v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0 (Salimans & Ho 2022)."""
    dpm = worker_scheduler()
    assert dpm.config.prediction_type == "v_prediction"
    dpm.set_timesteps(20)
    dpm._step_index = step  # a first-order step from timestep `step` on, as the solver's first step is
    t, s = int(dpm.timesteps[step]), int(dpm.timesteps[step + 1])
    x_t, eps = _inputs(t)
    abar_t, abar_s = dpm.alphas_cumprod[t], dpm.alphas_cumprod[s]
    x0_hat = (x_t - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()  # inverting q(x_t | x_0) at eps
    v = velocity(dpm, x_t, eps, t)
    expected = abar_s.sqrt() * x0_hat + (1 - abar_s).sqrt() * eps
    torch.testing.assert_close(dpm.step(v, t, x_t).prev_sample, expected, rtol=1e-4, atol=1e-4)


def test_velocity_is_the_textbook_velocity():
    """The training target: get_velocity(x0, eps, t) = sqrt(abar_t) eps - sqrt(1 - abar_t) x0."""
    from model.unet import noise_scheduler

    scheduler = noise_scheduler()
    t = torch.tensor([1, 250, 999])
    x0, eps = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    abar = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(scheduler.get_velocity(x0, eps, t), abar.sqrt() * eps - (1 - abar).sqrt() * x0)
