"""scripts/gpu-v2, the one device call that trains version 2 on a GPU (issue 19), run here on its CPU path, small: a
session that is lent a GPU for 15 minutes runs it as it is, so it must not fail on anything but the GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_script_trains_evaluates_and_packs_the_model_on_its_cpu_path(tmp_path: Path) -> None:
    """Every stage runs (training, the inpainting UNet, evaluation) and $OUT holds the figures and the pipeline
    folder without its checkpoints, in at most 8 files (what a device call brings back)."""
    out = tmp_path / "out"
    env = os.environ | {
        "OUT": str(out), "V2_RUN": str(tmp_path / "run"), "DEVICE": "cpu", "PYTHON": sys.executable,
        "OMP_NUM_THREADS": "1",  # beside the other test process: two threads each on 2 cores run 5x slower
        "V2_TRAIN_ARGS": "--quick --steps-vae 4 --steps-unet 4 --threads 1",
        "V2_INPAINT_ARGS": "--steps 2 --pool 32 --batch 4 --threads 1",
        "V2_EVAL_ARGS": "--n 2 --validate-n 0 --n-outpaint 1 --n-squares 2",
    }  # fmt: skip
    done = subprocess.run([REPO / "scripts" / "gpu-v2"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "done:" in done.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == ["evaluate.json", "evaluate.txt", "inpaint.txt", "train.log", "train.txt", "v2.tgz"]
    figures = json.loads((out / "evaluate.json").read_text())
    assert {"default", "squares", "outpainting", "outpainting, inpainting UNet"} <= set(figures)
    with tarfile.open(out / "v2.tgz") as packed:
        names = {n.removeprefix("./") for n in packed.getnames()}
    assert {"model_index.json", "unet/config.json", "vae/config.json", "inpaint/unet/config.json"} <= names
    assert not [n for n in names if "checkpoint" in n]
