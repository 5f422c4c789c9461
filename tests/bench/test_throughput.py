"""`python -m bench throughput`'s sampler ceiling: the sampler alone, one grid a call against B grids a call."""

from __future__ import annotations

import pytest
import torch

from bench.throughput import sampler_ceiling
from core.settings import ModelSettings


def test_sampler_ceiling_times_one_grid_against_a_batch_side_by_side() -> None:
    """On the tiny pipeline (the tests' MODEL), two alternating runs of each: per-image medians, their ratio (one
    grid's over the batch's, so > 1 when batching pays), and every run kept; the caller's torch threads untouched
    when none are asked for."""
    threads = torch.get_num_threads()
    result = sampler_ceiling(ModelSettings().registry(), 3, runs=2)
    assert torch.get_num_threads() == threads
    assert result["model"] == "tiny" and result["grids_per_call"] == 3
    one, batched = result["ms_per_image"]["one_grid"], result["ms_per_image"]["batched"]
    assert one > 0 and batched > 0
    assert result["ratio"] == pytest.approx(one / batched, rel=0.02)  # of the unrounded medians
    assert [len(v) for v in result["ms_per_image_all"].values()] == [2, 2]
