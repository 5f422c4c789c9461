"""`python -m model.inpaint`: the embedded model's inpainting UNet, fine-tuned from its denoiser to fill in.

A plain UNet repaints by latent blending and cannot tell the given part from the part to draw: it draws the caption's
objects again in a zoom's or pan's new border (`model/README.md`, "Filling in"). Stable Diffusion's inpainting models
are the answer diffusers supports natively: the UNet takes 9 input channels, the noised latents z_t, the mask m
(1 = redraw) at latent size and the latents of the masked image E(x * (1 - m)), and learns

    L = E [ w(t) || v - v_theta([z_t, m, E(x (1 - m))], t, tau(y)) ||^2 ]

(the loss of `model.unet.diffusion_loss`, conditioned on the extra channels). As Stable Diffusion 2's inpainting
model was made from its base, the new UNet starts as the shipped denoiser with the 5 extra input channels' weights
at zero (so it starts out doing exactly what the base does), then trains on the edits the worker makes: a zoomed-out
image with its border to fill (Zoom Out, Make Square), a kept side (Pan), a box to fill (Vary (Region)), or the whole
image (plain text to image), each with its true answer (`example`), and pans on the wider and taller canvases the
worker draws them on (`canvas_example`, `PAN_CANVASES`). `--from-unet` continues a saved inpainting UNet instead of
starting from the denoiser. The text encoder and the autoencoder are the base model's, frozen: the
inpainting pipeline shares them.

It is saved as `<out>/unet` (fp16), the layout `WORKER_INPAINT_UNET` reads (`model.loading.load_inpaint_unet`).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from PIL import Image

from model.data import PALETTE, caption, make_dataset
from model.train import Budget, _save, adamw, ema_of, learning_rate, logged_to
from model.unet import UNetConfig, diffusion_loss, noise_scheduler
from model.vae import encode_latents, to_tensor

log = logging.getLogger("model.inpaint")

EXTRA_CHANNELS = 5
"""The mask (1) and the masked image's latents (4), after the noised latents, in diffusers' order."""
EXAMPLES = (("zoom", 0.4), ("pan", 0.3), ("region", 0.2), ("whole", 0.1))
"""Kinds of training example and how often each is drawn (`example`)."""
PAN_CANVASES = ((64, 48, 48), (96, 64, 64))
"""Pan canvases trained besides the 64x64 examples, as (long side, short side, kept side): the worker's Pan of a
64x64 image for this model (the image scaled to 48x48 at one end of a 64x48 canvas, `core.canvas.plan`) and
`model.outpaint`'s reading (the image whole at one end of a 96x64 one). Trained on 64x64 examples alone, version 2's
UNet drew a faint line along such canvases' far edge (model/README.md, "Session 15")."""
CANVAS_SHARE = 0.3
"""Share of training steps whose batch comes from the `PAN_CANVASES` pools (one shape a batch)."""
GRID = 4
"""Mask edges fall on multiples of this many pixels, as the worker's layouts do: two latent pixels at version 2's
factor 2 (one at version 1's factor 4)."""


def inpaint_unet(base: UNet2DConditionModel) -> UNet2DConditionModel:
    """A 9-channel copy of `base`: the same weights, the extra input channels' at zero."""
    unet = UNet2DConditionModel.from_config({**base.config, "in_channels": base.config.in_channels + EXTRA_CHANNELS})
    state = base.state_dict()
    weight = state["conv_in.weight"]
    state["conv_in.weight"] = torch.cat([weight, weight.new_zeros(weight.shape[0], EXTRA_CHANNELS,
                                                                  *weight.shape[2:])], dim=1)
    unet.load_state_dict(state)
    return unet


def canvas_example(image: np.ndarray, background: str, canvas: tuple[int, int, int], quarter: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """A pan on a canvas of another shape (`PAN_CANVASES`): the image scaled to kept x kept at one end of a long x
    short canvas of its background colour, the rest drawn (the background, exactly), all turned by `quarter` x 90
    degrees (0, 2: a wide canvas; 1, 3: a tall one)."""
    long, short, kept = canvas
    small = image if kept == image.shape[0] else np.asarray(
        Image.fromarray(image).resize((kept, kept), Image.Resampling.LANCZOS))
    target = np.empty((short, long, 3), dtype=np.uint8)
    target[:] = PALETTE[background]
    mask = np.ones((short, long), dtype=np.float32)
    target[:, :kept], mask[:, :kept] = small, 0
    return np.rot90(target, quarter).copy(), np.rot90(mask, quarter).copy()


def example(kind: str, image: np.ndarray, background: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One training pair in pixels: the target image and its mask (1 = draw), of a 64x64 scene `image`.

    In this world of flat shapes on one colour a zoomed-out or panned scene is known exactly: everything beyond the
    image is its background colour. So the examples are the edits the worker makes, with their true answers:
    - zoom: the image shrunk to 32 or 48 pixels (Zoom Out 2x, 1.33x) in the centre of a canvas of its background
      colour; the border is drawn;
    - pan: the last 32 or 48 pixels of the image towards one side, moved to the opposite edge; the strip beyond
      them, background, is drawn;
    - region: the image, a box in it drawn (Vary (Region));
    - whole: the image, all of it drawn (plain text to image, so the UNet keeps that too).
    """
    size = image.shape[0]
    target, mask = image.copy(), np.zeros((size, size), dtype=np.float32)
    if kind in ("zoom", "pan"):
        target[:] = PALETTE[background]
        side = int(rng.choice([32, 48]))
        mask[:] = 1
        if kind == "zoom":
            at = (size - side) // 2
            small = np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.LANCZOS))
            target[at:at + side, at:at + side] = small
            mask[at:at + side, at:at + side] = 0
        else:  # the kept side is the image's own edge on the side panned towards; the new strip lies beyond it
            quarter = int(rng.integers(4))
            turned = np.rot90(image, quarter)  # pan towards the right of the turned image
            canvas, kept = np.rot90(target, quarter).copy(), np.rot90(mask, quarter).copy()
            canvas[:, :side] = turned[:, size - side:]
            kept[:, :side] = 0
            target, mask = np.rot90(canvas, -quarter).copy(), np.rot90(kept, -quarter).copy()
    elif kind == "region":
        w, h = (int(rng.integers(4, 13)) * GRID for _ in range(2))
        left, top = (int(rng.integers(0, (size - side) // GRID + 1)) * GRID for side in (w, h))
        mask[top:top + h, left:left + w] = 1
    elif kind == "whole":
        mask[:] = 1
    else:
        raise ValueError(f"unknown example kind {kind!r}")
    return target, mask


def train(base_dir: Path, out: Path, minutes: float, steps: int, seed: int, pool: int, batch: int, lr: float,
          device: str, from_unet: Path | None = None, canvas_share: float = CANVAS_SHARE) -> Path:
    """Fine-tune the inpainting UNet (module docstring), from the base's denoiser or from the inpainting UNet saved in
    `from_unet`, with `canvas_share` of the batches from the `PAN_CANVASES` pools; resumable from
    `out/checkpoint.pt`. Returns `out`."""
    base = StableDiffusionPipeline.from_pretrained(base_dir, dtype=torch.float32).to(device)
    vae, text_encoder, tokenizer = base.vae.eval(), base.text_encoder.eval(), base.tokenizer
    scale = vae.config.scaling_factor
    torch.manual_seed(seed)
    if from_unet:
        unet = UNet2DConditionModel.from_pretrained(from_unet, dtype=torch.float32).to(device).train()
    else:
        unet = inpaint_unet(base.unet).to(device).train()
    opt = adamw(unet.parameters(), lr, weight_decay=0.01)
    objective = UNetConfig()  # the base's EMA decay, caption dropout and loss weights
    ema = ema_of(list(unet.parameters()), objective.ema_decay)
    scheduler = noise_scheduler(base.scheduler.config.prediction_type)
    gen = torch.Generator().manual_seed(seed)
    ckpt = out / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=False) if ckpt.exists() else None
    if state:
        unet.load_state_dict(state["unet"])
        opt.load_state_dict(state["opt"])
        ema.load_state_dict(state["ema"])
        gen.set_state(state["gen"])
    budget = Budget(minutes, steps, *((state["spent_s"], state["step"]) if state else (0.0, 0)))
    started = time.monotonic()
    images, first, scenes = make_dataset(pool, seed + 7, split="train")
    rng = np.random.default_rng(seed + 8)
    texts = [[a, caption(sc, rng)] for a, sc in zip(first, scenes, strict=True)]
    kinds = rng.choice(len(EXAMPLES), size=pool, p=[p for _, p in EXAMPLES])
    pairs = [example(EXAMPLES[k][0], im, sc.background or "gray", rng)
             for k, im, sc in zip(kinds, images, scenes, strict=True)]
    pools = [(texts, *_encoded(vae, scale, pairs, device))]
    if canvas_share > 0:  # one pool per canvas shape, wide and tall, of pool / 16 pans each
        n = max(pool // 16, 1)
        for i, (canvas, tall) in enumerate((c, t) for c in PAN_CANVASES for t in (0, 1)):
            images, first, scenes = make_dataset(n, seed + 100 + i, split="train")
            pairs = [canvas_example(im, sc.background or "gray", canvas, tall + 2 * int(rng.integers(2)))
                     for im, sc in zip(images, scenes, strict=True)]
            pools.append(([[a, caption(sc, rng)] for a, sc in zip(first, scenes, strict=True)],
                          *_encoded(vae, scale, pairs, device)))
    empty = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt")
    log.info("inpaint: %d examples encoded in %.0fs", sum(len(p[0]) for p in pools), time.monotonic() - started)
    last_ckpt = time.monotonic()

    def checkpoint() -> None:
        _save(ckpt, {"unet": unet.state_dict(), "opt": opt.state_dict(), "ema": ema.state_dict(),
                     "gen": gen.get_state(), "step": budget.step, "spent_s": budget.spent_s})

    while not budget.done():
        texts, latents, masked, small = pools[0]
        if len(pools) > 1 and torch.rand(1, generator=gen).item() < canvas_share:
            texts, latents, masked, small = pools[1 + int(torch.randint(len(pools) - 1, (1,), generator=gen))]
        idx = torch.randint(len(texts), (batch,), generator=gen)
        phrasing = torch.randint(2, (batch,), generator=gen).tolist()
        chosen = [texts[i][p] for i, p in zip(idx.tolist(), phrasing, strict=True)]
        tokens = tokenizer(chosen, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                           return_tensors="pt").input_ids
        drop = torch.rand(batch, generator=gen) < objective.caption_dropout
        tokens[drop] = empty.input_ids[0]
        with torch.no_grad():
            text = text_encoder(tokens.to(device))[0]
        for group in opt.param_groups:
            group["lr"] = learning_rate(lr, budget.step, budget.progress, 100)
        loss = diffusion_loss(unet, scheduler, latents[idx].to(device), text, objective.min_snr_gamma,
                              generator=gen if device == "cpu" else None,
                              extra=torch.cat([small[idx], masked[idx]], dim=1).to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema.step(unet.parameters())
        budget.tick(loss=loss.item())
        if budget.step % 100 == 0:
            log.info("inpaint step %d %.0fs loss %.4f", budget.step, budget.spent_s, loss.item())
        if time.monotonic() - last_ckpt > 300:
            checkpoint()
            last_ckpt = time.monotonic()
    budget.bar.close()
    checkpoint()
    ema.copy_to(unet.parameters())
    unet.eval().to("cpu", torch.float16).save_pretrained(out / "unet", safe_serialization=True)
    log.info("inpaint: %d steps in %.1f min, saved to %s", budget.step, budget.spent_s / 60, out / "unet")
    return out


def _encoded(vae: torch.nn.Module, scale: float, pairs: list[tuple[np.ndarray, np.ndarray]], device: str
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pipeline's inputs for training pairs of one shape, fixed per example: the targets' scaled latents, the
    masked images' latents, and the mask at latent size (nearest)."""
    targets = to_tensor(np.stack([t for t, _ in pairs]))
    masks = torch.from_numpy(np.stack([m for _, m in pairs]))[:, None]
    latents = encode_latents(vae, targets.to(device)).cpu() * scale
    masked = encode_latents(vae, (targets * (masks < 0.5)).to(device)).cpu() * scale
    return latents, masked, F.interpolate(masks, size=latents.shape[-2:])


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="python -m model.inpaint", description=__doc__.splitlines()[0])
    p.add_argument("--base", type=Path, default=Path(__file__).parent / "embedded", help="the base pipeline folder")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "embedded" / "inpaint",
                   help="where <out>/unet goes (default: model/embedded/inpaint)")
    p.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget")
    p.add_argument("--steps", type=int, default=0, help="a fixed number of steps instead of minutes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pool", type=int, default=8000, help="training images (encoded once)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--from-unet", type=Path, default=None, metavar="DIR",
                   help="continue this saved inpainting UNet (e.g. model/embedded/inpaint/unet) instead of starting "
                        "from the base's denoiser")
    p.add_argument("--canvas-share", type=float, default=CANVAS_SHARE,
                   help=f"share of batches of pans on other canvases (PAN_CANVASES; default {CANVAS_SHARE})")
    args = p.parse_args(argv)
    if not 0 <= args.canvas_share <= 1:
        p.error(f"--canvas-share must be between 0 and 1, not {args.canvas_share:g}")
    if args.from_unet and not (args.from_unet / "config.json").is_file():
        p.error(f"--from-unet: {args.from_unet} is not a saved UNet folder")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    with logged_to(log, args.out / "train.log"):
        train(args.base, args.out, args.minutes, args.steps, args.seed, args.pool, args.batch, args.lr, args.device,
              args.from_unet, args.canvas_share)
    print(f"saved the inpainting UNet to {args.out / 'unet'}")
    return args.out


if __name__ == "__main__":
    main()
