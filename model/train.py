"""`python -m model.train`: the embedded latent diffusion model, from scratch, seeded, resumable.

Stages, as in latent diffusion (Rombach et al. 2022):
1. the autoencoder (`model.vae`) on generated images, until `--minutes-vae` are spent; held-out PSNR is logged;
2. the latent cache: z_0 = scaling_factor * mu(x) for a pool of captioned training images;
3. the UNet (`model.unet`) and the text encoder (`model.text`), jointly, until `--minutes-unet` are spent, with
   EMA weights;
4. the pipeline, saved in the diffusers layout with fp16 weights, DPM-Solver++ as its scheduler.

Everything lives under `--out`: the pipeline folders, `train.log`, and `checkpoints/` (written every few minutes and at
the end of each stage). `--resume` continues from `checkpoints/` with the time already spent counted. Budgets are in
wall-clock minutes, so the number of steps depends on the machine; `--steps-vae/--steps-unet` fix them instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.training_utils import EMAModel
from tqdm import tqdm
from transformers import CLIPTextModel

from model.data import caption, make_dataset
from model.loading import LATENT_RGB_FILE
from model.text import QUICK_TEXT, TextConfig, build_text_encoder, build_tokenizer
from model.unet import (
    LATENT_32_UNET,
    QUICK_UNET,
    TIMESTEP_SAMPLERS,
    UNetConfig,
    build_unet,
    diffusion_loss,
    narrowed,
    noise_scheduler,
    sampling_scheduler,
    transplant,
)
from model.vae import (
    FACTOR_2_VAE,
    QUICK_VAE,
    VAEConfig,
    build_vae,
    encode_latents,
    latent_rgb,
    psnr,
    reconstruct,
    scaling_factor,
    to_tensor,
    vae_loss,
)

log = logging.getLogger("model.train")

DEFAULT_OUT = Path(__file__).parent / "embedded"
"""Where the shipped model lives."""
CHECKPOINT_EVERY_S = 5 * 60
"""Seconds between checkpoints within a stage."""
HELDOUT_IMAGES = 256
"""Held-out images the VAE's PSNR is measured on."""


@dataclass(frozen=True)
class Plan:
    """Everything a run depends on besides the seed and the time budgets."""

    vae: VAEConfig
    unet: UNetConfig
    text: TextConfig
    vae_pool: int  # generated training images the autoencoder samples batches from
    vae_crop_px: int  # side of the random crops it trains on (fully convolutional, so crops are cheaper, same model)
    vae_batch: int
    vae_lr: float
    latent_pool: int  # captioned training images whose latents are cached for the UNet
    unet_batch: int
    unet_lr: float
    warmup_steps: int  # linear learning-rate warm-up of both stages


VERSIONS = {1: (VAEConfig(), UNetConfig()), 2: (FACTOR_2_VAE, LATENT_32_UNET)}
"""The model's shapes by version: 2 is the shipped one (32x32x4 latents that keep squares' corners, issue 19); 1 is
its predecessor (16x16x4 latents), whose trained levels start version 2's (`--init-from`, model/README.md)."""


def plan_for(quick: bool, device: str, version: int = 2) -> Plan:
    """The full model of a version, or a throwaway one for tests; batches sized by device (a GPU takes far larger
    ones)."""
    gpu = device.startswith("cuda")
    if quick:
        return Plan(QUICK_VAE, QUICK_UNET, QUICK_TEXT, vae_pool=256, vae_crop_px=32, vae_batch=16, vae_lr=1e-3,
                    latent_pool=256, unet_batch=16, unet_lr=1e-3, warmup_steps=5)
    vae, unet = VERSIONS[version]
    return Plan(vae, unet, TextConfig(), vae_pool=20_000, vae_crop_px=32 if not gpu else 64,
                vae_batch=128 if gpu else 32, vae_lr=5e-4, latent_pool=100_000 if gpu else 12_000,
                unet_batch=256 if gpu else 32, unet_lr=1e-3 if gpu else 5e-4, warmup_steps=200)


def adamw(params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with its fused kernel (one pass over all parameters, on CPU as on CUDA): for `LATENT_32_UNET` at one
    thread the for-loop version's step took 0.057 s, the fused one 0.010 s, of a ~1.2 s training step."""
    return torch.optim.AdamW(params, lr, weight_decay=weight_decay, fused=True)


def ema_of(params: list[torch.nn.Parameter], decay: float) -> EMAModel:
    """The EMA of `params` (decay warming up to `decay`), updated with multi-tensor (foreach) operations."""
    return EMAModel(params, decay=decay, use_ema_warmup=True, foreach=True)


def learning_rate(base: float, step: int, progress: float, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then a cosine decay to 10% of `base` as progress goes 0 -> 1."""
    return base * min(1.0, (step + 1) / warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0))))


class Budget:
    """Progress of a stage: by steps when `steps` > 0, else by wall-clock seconds (time from earlier sessions kept)."""

    def __init__(self, minutes: float, steps: int, spent_s: float, step: int) -> None:
        self.seconds, self.steps, self.step = minutes * 60, steps, step
        self.started = time.monotonic() - spent_s
        self.bar = tqdm(total=steps or int(self.seconds), initial=step if steps else int(spent_s),
                        unit="step" if steps else "s", dynamic_ncols=True)

    @property
    def spent_s(self) -> float:
        return time.monotonic() - self.started

    @property
    def progress(self) -> float:
        return self.step / self.steps if self.steps else self.spent_s / max(self.seconds, 1e-9)

    def tick(self, **postfix: float) -> None:
        self.step += 1
        self.bar.update(1 if self.steps else int(self.spent_s) - self.bar.n)
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)

    def done(self) -> bool:
        return self.progress >= 1.0


@contextmanager
def logged_to(logger: logging.Logger, path: Path) -> Iterator[None]:
    """`logger`'s INFO lines also appended to `path` (a run's `train.log`, kept across resumed runs) while inside."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()


def _save(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic: a run killed mid-write leaves the previous checkpoint


def train_vae(plan: Plan, args: argparse.Namespace, ckpt: Path, frozen: bool) -> torch.nn.Module:
    """Stage 1: minimise the negative ELBO of `model.vae` on random crops of generated images.

    A resumed run with a larger --minutes-vae continues a finished autoencoder, unless it is `frozen`: once latents
    are cached, the UNet depends on it.
    """
    torch.manual_seed(args.seed)
    vae = build_vae(plan.vae).to(args.device)
    opt = adamw(vae.parameters(), plan.vae_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed)
    state = torch.load(ckpt, weights_only=False) if ckpt.exists() else None
    if state is None and args.vae_from:
        # an autoencoder trained earlier (e.g. the shipped one), taken as stage 1's result: retrain only the denoiser
        vae.load_state_dict(AutoencoderKL.from_pretrained(args.vae_from / "vae", dtype=torch.float32).state_dict())
        state = {"model": vae.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(), "step": 0,
                 "spent_s": 0.0, "done": True}
        _save(ckpt, state)
        log.info("VAE: taken from %s", args.vae_from)
    if state:
        vae.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
    budget = Budget(args.minutes_vae, args.steps_vae, *((state["spent_s"], state["step"]) if state else (0.0, 0)))
    if state and state["done"] and (frozen or budget.done() or args.vae_from):
        log.info("VAE: finished in an earlier run (%d steps)", state["step"])
        budget.bar.close()
        return vae.eval()
    pool = to_tensor(make_dataset(plan.vae_pool, args.seed, split="train")[0])
    heldout = to_tensor(make_dataset(HELDOUT_IMAGES, args.seed + 1, split="heldout")[0])
    last_ckpt, c = time.monotonic(), plan.vae_crop_px

    def checkpoint(done: bool) -> None:
        _save(ckpt, {"model": vae.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(), "step": budget.step,
                     "spent_s": budget.spent_s, "done": done})

    vae.train()
    while not budget.done():
        idx = torch.randint(len(pool), (plan.vae_batch,), generator=gen)
        i, j = torch.randint(0, pool.shape[-1] - c + 1, (2,), generator=gen).tolist()
        x = pool[idx, :, i:i + c, j:j + c]
        if torch.rand((), generator=gen) < 0.5:
            x = x.flip(-1)  # shapes are left-right symmetric in distribution; the autoencoder has no captions
        for group in opt.param_groups:
            group["lr"] = learning_rate(plan.vae_lr, budget.step, budget.progress, plan.warmup_steps)
        loss, parts = vae_loss(vae, x.to(args.device), plan.vae)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        budget.tick(loss=loss.item(), **parts)
        if budget.step % 100 == 0:
            log.info("VAE step %d %.0fs loss %.4f %s", budget.step, budget.spent_s, loss.item(), parts)
        if time.monotonic() - last_ckpt > CHECKPOINT_EVERY_S:
            checkpoint(False)
            last_ckpt = time.monotonic()
    budget.bar.close()
    vae.eval()
    log.info("VAE: %d steps in %.1f min, held-out PSNR %.2f dB", budget.step, budget.spent_s / 60,
             psnr(heldout, reconstruct(vae, heldout.to(args.device)).cpu()))
    checkpoint(True)
    return vae


def saved_denoiser(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The fp32 weights of a saved pipeline's denoiser ("unet") and text encoder ("text")."""
    return {"unet": UNet2DConditionModel.from_pretrained(folder / "unet", dtype=torch.float32).state_dict(),
            "text": CLIPTextModel.from_pretrained(folder / "text_encoder", dtype=torch.float32).state_dict()}


def pretrained_denoiser(folder: Path, plan: Plan, parts: tuple[str, ...] = ("unet", "text")
                        ) -> dict[str, dict[str, torch.Tensor]]:
    """`saved_denoiser`'s weights, to continue training them (`--unet-from`, both parts) or to start another
    version's from (`--init-from`, whose denoiser need not fit: only the text encoder is checked); ValueError when a
    checked part is not the plan's shape (another version's model)."""
    weights = saved_denoiser(folder)
    factor = 2 ** (len(plan.vae.channels) - 1)
    built = {"unet": lambda: build_unet(plan.unet, plan.vae.latent_channels, plan.vae.sample_size // factor,
                                        plan.text.width),
             "text": lambda: build_text_encoder(plan.text, build_tokenizer(plan.text.max_tokens))}
    for part in parts:
        got = {k: tuple(v.shape) for k, v in weights[part].items()}
        if got != {k: tuple(v.shape) for k, v in built[part]().state_dict().items()}:
            raise ValueError(f"the {part} in {folder} is not this version's shape")
    return weights


def cache_latents(plan: Plan, args: argparse.Namespace, vae: torch.nn.Module, path: Path
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 2: scaled posterior means of a captioned pool, and token ids of two phrasings per image. A denoiser
    continued from a saved pipeline (`--unet-from`) keeps that pipeline's scaling factor: its latent space."""
    if path.exists():
        cached = torch.load(path)
        vae.register_to_config(scaling_factor=float(cached["scaling_factor"]))
        return cached["latents"], cached["ids"]
    started = time.monotonic()
    images, first, scenes = make_dataset(plan.latent_pool, args.seed + 2, split="train")
    rng = np.random.default_rng(args.seed + 3)
    tokenizer = build_tokenizer(plan.text.max_tokens)
    texts = first + [caption(s, rng) for s in scenes]
    ids = tokenizer(texts, padding="max_length", max_length=plan.text.max_tokens, truncation=True,
                    return_tensors="pt").input_ids.view(2, len(scenes), -1).transpose(0, 1).contiguous()
    mu = encode_latents(vae, to_tensor(images).to(args.device)).cpu()
    s = plan.unet.input_scale * scaling_factor(mu)  # the denoiser's latents have std `input_scale`
    if args.unet_from:
        s = float(AutoencoderKL.load_config(args.unet_from / "vae")["scaling_factor"])
    vae.register_to_config(scaling_factor=s)
    log.info("latents: %s in %.0fs, scaling_factor %.4f", tuple(mu.shape), time.monotonic() - started, s)
    _save(path, {"latents": mu * s, "ids": ids, "scaling_factor": s})
    return mu * s, ids


def kept_snapshot(checkpoints: Path, step: int) -> Path:
    """Where `--keep-every` keeps the denoiser's EMA weights at `step`."""
    return checkpoints / f"unet-ema-{step}.pt"


def train_unet(plan: Plan, args: argparse.Namespace, latents: torch.Tensor, ids: torch.Tensor, ckpt: Path
               ) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Stage 3: the Min-SNR v-prediction loss, the caption dropped to "" now and then; returns the EMA weights."""
    torch.manual_seed(args.seed + 4)
    tokenizer = build_tokenizer(plan.text.max_tokens)
    text_encoder = build_text_encoder(plan.text, tokenizer).to(args.device)
    unet = build_unet(plan.unet, latents.shape[1], latents.shape[-1], plan.text.width).to(args.device)
    state = torch.load(ckpt, weights_only=False) if ckpt.exists() else None
    if state is None and args.unet_from:  # continue a saved model's denoiser (its EMA weights) with a fresh optimizer
        weights = pretrained_denoiser(args.unet_from, plan)
        unet.load_state_dict(weights["unet"])
        text_encoder.load_state_dict(weights["text"])
        log.info("UNet and text encoder: continued from %s", args.unet_from)
    elif state is None and args.init_from:  # another version's trained denoiser starts this one's lower levels
        weights = saved_denoiser(args.init_from)
        text_encoder.load_state_dict(weights["text"])
        copied = transplant(unet, weights["unet"])
        log.info("UNet: %d of %d parameters and the text encoder started from %s", copied,
                 sum(p.numel() for p in unet.parameters()), args.init_from)
    params = [*unet.parameters(), *text_encoder.parameters()]
    opt = adamw(params, plan.unet_lr, weight_decay=0.01)
    ema = ema_of(params, plan.unet.ema_decay)
    scheduler = noise_scheduler(plan.unet.prediction)
    empty = tokenizer("", padding="max_length", max_length=plan.text.max_tokens, return_tensors="pt").input_ids[0]
    gen = torch.Generator().manual_seed(args.seed + 5)
    if state:
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text"])
        opt.load_state_dict(state["opt"])
        ema.load_state_dict(state["ema"])
        gen.set_state(state["gen"])
    budget = Budget(args.minutes_unet, args.steps_unet, *((state["spent_s"], state["step"]) if state else (0.0, 0)))
    last_ckpt = time.monotonic()

    def checkpoint(done: bool) -> None:
        _save(ckpt, {"unet": unet.state_dict(), "text": text_encoder.state_dict(), "opt": opt.state_dict(),
                     "ema": ema.state_dict(), "gen": gen.get_state(), "step": budget.step, "spent_s": budget.spent_s,
                     "done": done, "plan": plan})

    autocast = torch.autocast("cuda", torch.bfloat16, enabled=args.device.startswith("cuda"))
    unet.train()
    text_encoder.train()
    while not budget.done():  # a resumed run with a larger --minutes-unet continues
        idx = torch.randint(len(latents), (plan.unet_batch,), generator=gen)
        phrasing = torch.randint(ids.shape[1], (plan.unet_batch,), generator=gen)
        tokens = ids[idx, phrasing]
        drop = torch.rand(plan.unet_batch, generator=gen) < plan.unet.caption_dropout
        tokens[drop] = empty  # classifier-free guidance: also learn eps_theta(z_t, t, tau(""))
        for group in opt.param_groups:
            group["lr"] = learning_rate(plan.unet_lr, budget.step, budget.progress, plan.warmup_steps)
        with autocast:
            text = text_encoder(tokens.to(args.device))[0]
            loss = diffusion_loss(unet, scheduler, latents[idx].to(args.device), text, plan.unet.min_snr_gamma,
                                  generator=gen if args.device == "cpu" else None, timesteps=plan.unet.timesteps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.step(params)
        budget.tick(loss=loss.item())
        if budget.step % 100 == 0:
            log.info("UNet step %d %.0fs loss %.4f", budget.step, budget.spent_s, loss.item())
        if args.keep_every and budget.step % args.keep_every == 0:  # the learning curve, read by `model.snapshot`
            _save(kept_snapshot(ckpt.parent, budget.step), {"ema": ema.state_dict(), "step": budget.step,
                                                           "plan": plan})
        if time.monotonic() - last_ckpt > CHECKPOINT_EVERY_S:
            checkpoint(False)
            last_ckpt = time.monotonic()
    budget.bar.close()
    log.info("UNet: %d steps in %.1f min", budget.step, budget.spent_s / 60)
    checkpoint(True)
    ema.copy_to(params)  # ship the averaged weights
    return unet.eval(), text_encoder.eval()


def save_pipeline(vae: torch.nn.Module, text_encoder: torch.nn.Module, unet: torch.nn.Module, plan: Plan, out: Path
                  ) -> StableDiffusionPipeline:
    """Stage 4: a StableDiffusionPipeline in the diffusers layout, weights in fp16."""
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=build_tokenizer(plan.text.max_tokens), unet=unet,
        scheduler=sampling_scheduler(plan.unet.prediction), safety_checker=None, feature_extractor=None,
        image_encoder=None, requires_safety_checker=False,
    )
    save_latent_rgb(vae, out)
    for module in (vae, text_encoder, unet):
        module.to("cpu", torch.float16)  # the shipped weights: half the bytes; loaders cast them to their dtype
    pipe.save_pretrained(out, safe_serialization=True)
    return pipe


def save_latent_rgb(vae: AutoencoderKL, out: Path, n: int = 256) -> None:
    """The autoencoder's latent-to-RGB map for previews (`model.vae.latent_rgb`), fitted on `n` held-out images and
    written where `model.loading` reads it (`LATENT_RGB_FILE`)."""
    images, _, _ = make_dataset(n, seed=1, split="heldout")
    vae = vae.to("cpu", torch.float32).eval()
    factors = latent_rgb(vae, to_tensor(images), vae.config.scaling_factor)
    out.mkdir(parents=True, exist_ok=True)
    (out / LATENT_RGB_FILE).write_text(json.dumps({"latent_rgb": [[round(v, 5) for v in row]
                                                                  for row in factors.tolist()]}) + "\n")


def main(argv: list[str] | None = None) -> Path:
    """Train (or resume) and save the pipeline; returns its folder."""
    p = argparse.ArgumentParser(prog="python -m model.train", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="pipeline folder (default: model/embedded)")
    p.add_argument("--quick", action="store_true", help="a throwaway model in well under two minutes, for tests")
    p.add_argument("--minutes-vae", type=float, default=None, help="autoencoder budget (default 25; quick 0.1)")
    p.add_argument("--minutes-unet", type=float, default=None, help="UNet budget (default 60; quick 0.2)")
    p.add_argument("--steps-vae", type=int, default=0, help="fixed number of autoencoder steps instead of minutes")
    p.add_argument("--steps-unet", type=int, default=0, help="fixed number of UNet steps instead of minutes")
    p.add_argument("--unet-batch", type=int, default=0,
                   help="rows a denoiser step (0: the plan's, 32 on CPU, 256 on CUDA); fewer rows, more steps a minute")
    p.add_argument("--unet-lr", type=float, default=None,
                   help="the denoiser's peak learning rate (default: the plan's, 5e-4 on CPU, 1e-3 on CUDA)")
    p.add_argument("--keep-every", type=int, default=0, metavar="N",
                   help="also keep the denoiser's EMA weights every N steps (read them with python -m model.snapshot)")
    p.add_argument("--unet-width", type=float, default=1.0, metavar="FACTOR",
                   help="every width of the denoiser times FACTOR (0.5: a quarter of the parameters, ~1.85x the "
                        "steps a minute on a CPU; give the same one to --init-from's and --unet-from's runs)")
    p.add_argument("--timesteps", choices=TIMESTEP_SAMPLERS, default=None,
                   help="how the denoiser's training draws t (default: the version's, uniform)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--version", type=int, choices=sorted(VERSIONS), default=2,
                   help="the model's shapes: 2, the shipped one (32x32 latents that keep corners); 1, its predecessor")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints")
    p.add_argument("--vae-from", type=Path, default=None, metavar="DIR",
                   help="skip stage 1: take the autoencoder of this saved pipeline (e.g. model/embedded)")
    p.add_argument("--unet-from", type=Path, default=None, metavar="DIR",
                   help="continue the denoiser and text encoder of this saved pipeline (its autoencoder and latent "
                        "scale too) instead of starting them from random weights")
    p.add_argument("--init-from", type=Path, default=None, metavar="DIR",
                   help="start the denoiser's lower levels and the text encoder from this saved pipeline's (another "
                        "version's, e.g. model/embedded for --version 2) instead of random weights")
    args = p.parse_args(argv)
    if args.minutes_vae is None:
        args.minutes_vae = 0.1 if args.quick else 25.0
    if args.minutes_unet is None:
        args.minutes_unet = 0.2 if args.quick else 60.0
    if args.threads:
        torch.set_num_threads(args.threads)
    plan = plan_for(args.quick, args.device, args.version)
    if args.unet_batch:
        plan = replace(plan, unet_batch=args.unet_batch)
    if args.timesteps:
        plan = replace(plan, unet=replace(plan.unet, timesteps=args.timesteps))
    if args.unet_width != 1.0:
        if not (math.isfinite(args.unet_width) and 0 < args.unet_width <= 4):
            p.error(f"--unet-width must be above 0 and at most 4, not {args.unet_width:g}")
        try:
            plan = replace(plan, unet=narrowed(plan.unet, args.unet_width))
        except ValueError as e:
            p.error(f"--unet-width: {e}")
    if args.unet_lr is not None:
        if not (math.isfinite(args.unet_lr) and 0 < args.unet_lr < 1):
            p.error(f"--unet-lr must be between 0 and 1, not {args.unet_lr:g}")
        plan = replace(plan, unet_lr=args.unet_lr)
    if args.keep_every < 0:
        p.error("--keep-every must be 0 (off) or a number of steps")
    if args.unet_from:
        if args.vae_from and args.vae_from.resolve() != args.unet_from.resolve():
            p.error("--unet-from takes the autoencoder of the same folder: leave out --vae-from")
        if not (args.unet_from / "model_index.json").is_file():
            p.error(f"--unet-from: {args.unet_from} is not a saved pipeline folder")
        try:
            pretrained_denoiser(args.unet_from, plan)
        except ValueError as e:
            p.error(f"--unet-from: {e} ({'--quick' if args.quick else f'--version {args.version}'})")
        args.vae_from = args.unet_from
    if args.init_from:
        if args.unet_from:
            p.error("--init-from and --unet-from both start the denoiser: give one")
        if not (args.init_from / "model_index.json").is_file():
            p.error(f"--init-from: {args.init_from} is not a saved pipeline folder")
        try:
            pretrained_denoiser(args.init_from, plan, parts=("text",))
        except (OSError, ValueError) as e:
            p.error(f"--init-from: {e}")
    ckpts = args.out / "checkpoints"
    if ckpts.exists() and not args.resume:
        raise SystemExit(f"{ckpts} exists: pass --resume to continue it, or remove it to start again")
    ckpts.mkdir(parents=True, exist_ok=True)
    with logged_to(log, args.out / "train.log"):
        log.info("args %s plan %s", vars(args), asdict(plan))
        vae = train_vae(plan, args, ckpts / "vae.pt", frozen=(ckpts / "latents.pt").exists())
        latents, ids = cache_latents(plan, args, vae, ckpts / "latents.pt")
        unet, text_encoder = train_unet(plan, args, latents, ids, ckpts / "unet.pt")
        save_pipeline(vae, text_encoder, unet, plan, args.out)
        log.info("saved the pipeline to %s", args.out)
    print(f"saved the pipeline to {args.out} (log: {args.out / 'train.log'})")
    return args.out


if __name__ == "__main__":
    main()
