"""The inpainting UNet's fine-tune (`model.inpaint`): how it starts, the masks it trains on, and what it saves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model import inpaint
from model.data import PALETTE, make_dataset
from model.loading import INPAINT_UNET_CHANNELS
from model.unet import QUICK_UNET, build_unet


def test_the_inpainting_unet_starts_as_the_base_whatever_its_extra_inputs():
    """Nine input channels, the base's weights, the extra channels' at zero: before training it predicts exactly
    what the base does from z_t, whatever the mask and the masked image say."""
    torch.manual_seed(0)
    base = build_unet(QUICK_UNET, 4, 8, 32).eval()
    unet = inpaint.inpaint_unet(base).eval()
    assert unet.config.in_channels == INPAINT_UNET_CHANNELS
    zt, text, t = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 32), torch.tensor([10, 900])
    with torch.no_grad():
        expected = base(zt, t, encoder_hidden_states=text).sample
        for extra in (torch.zeros(2, 5, 8, 8), torch.randn(2, 5, 8, 8)):
            got = unet(torch.cat([zt, extra], dim=1), t, encoder_hidden_states=text).sample
            torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("kind", [k for k, _ in inpaint.EXAMPLES])
def test_training_examples_are_the_edits_with_their_true_answers(kind):
    """Each kind of example, for 20 scenes: masks 0/1 with edges on whole latent pixels; the kept pixels are the
    scene's own (shrunk into the centre for a zoom, an edge moved across for a pan); what a zoom or pan draws is the
    background colour; a region's and a whole image's answer is the scene itself."""
    images, _, scenes = make_dataset(20, seed=1, split="train")
    rng = np.random.default_rng(0)
    for image, scene in zip(images, scenes, strict=True):
        target, mask = inpaint.example(kind, image, scene.background, rng)
        assert target.shape == image.shape and set(np.unique(mask)) <= {0.0, 1.0} and mask.any()
        cells = mask.reshape(16, 4, 16, 4)
        assert (cells == cells[:, :1, :, :1]).all()  # constant on every 4x4 cell
        kept = mask == 0
        if kind in ("zoom", "pan"):
            assert (target[~kept] == PALETTE[scene.background]).all()
            side = int(kept.any(axis=0).sum()) if kind == "zoom" else None
            if kind == "zoom":
                assert side in (32, 48) and kept[32, 32] and not kept[0, 0]
            else:  # the kept part runs the whole length of one edge; what it shows is a strip of the scene
                assert kept.all(axis=0).any() or kept.all(axis=1).any()
                strips = [np.rot90(image, q)[:, -w:] for q in range(4) for w in (32, 48)]
                shown = [np.rot90(target, q)[:, :w] for q in range(4) for w in (32, 48)]
                assert any(np.array_equal(a, b) for a in strips for b in shown)
        else:
            assert np.array_equal(target, image)
            assert kind == "whole" and mask.all() or kind == "region" and kept.any()
