"""scripts/train-embedded, the shipped model from nothing (version 1, version 2 from it, its inpainting UNet), run
here on throwaway budgets (`--quick`, a few steps a stage): each stage runs, in order, and a second run skips what
is done and resumes what is not, so a stopped background run loses nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(run: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {
        "PYTHON": sys.executable,
        "OMP_NUM_THREADS": "1",  # beside the other test process
        "TRAIN_ARGS": "--quick --steps-vae 2 --steps-unet 2 --threads 1",
        "INPAINT_ARGS": "--steps 2 --pool 32 --batch 4 --threads 1",
    }  # fmt: skip
    return subprocess.run([REPO / "scripts" / "train-embedded", str(run)], env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_chain_trains_each_stage_then_skips_or_resumes_them(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = _run(run)
    assert first.returncode == 0, first.stderr[-3000:] + (run / "train.txt").read_text()[-3000:]
    model = run / "version-2"
    assert (run / "version-1" / "model_index.json").is_file()
    assert (model / "model_index.json").is_file() and (model / "inpaint" / "unet" / "config.json").is_file()
    assert not (model / "inpaint" / "checkpoint.pt").exists()  # the folder to copy holds no training state
    logged = (model / "train.log").read_text()  # its first line holds the run's arguments
    assert f"'init_from': PosixPath('{run / 'version-1'}')" in logged  # version 2 started from version 1's levels
    assert "'version': 2" in logged

    saved = (model / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    again = _run(run)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("done before") == 3
    assert (model / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == saved

    (model / "model_index.json").unlink()  # as if stopped before saving: its checkpoints are there
    resumed = _run(run)
    assert resumed.returncode == 0, resumed.stderr[-3000:] + (run / "train.txt").read_text()[-3000:]
    assert "version 2 from version 1 (resumed)" in resumed.stderr
    assert (model / "model_index.json").is_file()
