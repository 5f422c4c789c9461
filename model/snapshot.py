"""`python -m model.snapshot RUN --out DIR [--step N]`: a training run's denoiser, as it was, saved as a pipeline.

A run of `python -m model.train` keeps its stages in `RUN/checkpoints/`: the autoencoder (`vae.pt`), the latent cache
with its scaling factor (`latents.pt`), the denoiser's latest state (`unet.pt`) and, with `--keep-every N`, the
denoiser's EMA weights every N steps (`unet-ema-<step>.pt`). This writes the pipeline the run would have shipped had
it stopped there (the EMA weights, as `model.train` ships them), so `python -m model.evaluate --model DIR` reads any
point of a run's learning curve while it goes on. Exit code 2 names what is missing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from model.text import build_text_encoder, build_tokenizer
from model.train import Plan, ema_of, kept_snapshot, save_pipeline
from model.unet import build_unet
from model.vae import build_vae


def export(run: Path, out: Path, step: int | None = None) -> int:
    """Save the run's pipeline with its denoiser's EMA weights at `step` (None: the latest checkpoint) to `out`;
    returns the step.

    Raises:
        FileNotFoundError: the run has no such checkpoint (or none from a `model.train` that records its plan).
    """
    checkpoints = run / "checkpoints"
    source = checkpoints / "unet.pt" if step is None else kept_snapshot(checkpoints, step)
    for needed in (checkpoints / "vae.pt", checkpoints / "latents.pt", source):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed} does not exist")
    state = torch.load(source, weights_only=False, map_location="cpu")
    plan = state.get("plan")
    if not isinstance(plan, Plan):
        raise FileNotFoundError(f"{source} does not record its plan (a run from before `model.snapshot`)")
    vae = build_vae(plan.vae)
    vae.load_state_dict(torch.load(checkpoints / "vae.pt", weights_only=False, map_location="cpu")["model"])
    latents = torch.load(checkpoints / "latents.pt", map_location="cpu")
    vae.register_to_config(scaling_factor=float(latents["scaling_factor"]))
    text_encoder = build_text_encoder(plan.text, build_tokenizer(plan.text.max_tokens))
    unet = build_unet(plan.unet, latents["latents"].shape[1], latents["latents"].shape[-1], plan.text.width)
    params = [*unet.parameters(), *text_encoder.parameters()]
    ema = ema_of(params, plan.unet.ema_decay)
    ema.load_state_dict(state["ema"])
    ema.copy_to(params)
    save_pipeline(vae.eval(), text_encoder.eval(), unet.eval(), plan, out)
    return int(state["step"])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m model.snapshot", description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="the --out folder of a model.train run")
    p.add_argument("--out", type=Path, required=True, help="where to save the pipeline")
    p.add_argument("--step", type=int, default=None, help="a step kept with --keep-every (default: the latest)")
    args = p.parse_args(argv)
    try:
        step = export(args.run, args.out, args.step)
    except FileNotFoundError as exc:
        p.error(str(exc))
    print(f"saved the denoiser of {args.run} at step {step} to {args.out}")


if __name__ == "__main__":
    main()
