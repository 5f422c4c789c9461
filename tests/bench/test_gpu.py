"""`python -m bench gpu` on a CPU: the pipelines it builds are shaped like the real ones, and every one runs."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import UNet2DConditionModel

from bench.__main__ import main
from bench.gpu import ARCHITECTURES, CONFIGS


@pytest.mark.parametrize(("name", "millions"), [("sd15", 860), ("sdxl", 2568), ("sd_turbo", 866)])
def test_shipped_configs_have_the_real_unets_size(name: str, millions: int) -> None:
    """Each config's UNet has the parameter count of the model it stands for (built on the meta device: no memory)."""
    config = json.loads((CONFIGS / f"{name}.json").read_text())
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config["unet"])
    assert sum(p.numel() for p in unet.parameters()) / 1e6 == pytest.approx(millions, rel=0.01)


def test_cpu_run_times_a_batch_of_every_architecture(capsys: pytest.CaptureFixture[str]) -> None:
    """On a CPU the command prints a JSON row for each of SD 1.5, SDXL and SD-Turbo (shrunk, 64x64): one call of one
    step rendering a batch of two grids, with positive timings. (One torch thread: the test machine's cores are
    shared, and threads spinning against other programs make these small calls many times slower.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["gpu", "--device", "cpu"]) == 0
    finally:
        torch.set_num_threads(threads)
    result = json.loads(capsys.readouterr().out)
    rows = result["rows"]
    assert [(r["model"], r["images_per_call"]) for r in rows] == [(m, 8) for m in ARCHITECTURES]
    assert all(r["steps"] == 1 and r["seconds_per_call"] > 0 and r["size"] == "64x64" for r in rows)
    assert result["device"].startswith("cpu") and result["dtype"] == "float32"
