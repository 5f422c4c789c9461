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


@pytest.mark.parametrize("canvas", inpaint.PAN_CANVASES)
def test_pans_on_other_canvases_keep_the_scene_at_one_end(canvas):
    """`canvas_example`: a wide (quarters 0, 2) or tall (1, 3) canvas of the pan's shape, the scene scaled to the kept
    side at one end and kept (mask 0, edges on whole latent pixels), the rest the background colour and drawn."""
    long, short, kept_side = canvas
    images, _, scenes = make_dataset(4, seed=2, split="train")
    for quarter, (image, scene) in enumerate(zip(images, scenes, strict=True)):
        target, mask = inpaint.canvas_example(image, scene.background, canvas, quarter)
        assert target.shape[:2] == mask.shape == ((short, long) if quarter % 2 == 0 else (long, short))
        kept = mask == 0
        assert kept.sum() == kept_side * kept_side and (mask[~kept] == 1).all()
        assert (target[~kept] == PALETTE[scene.background]).all()
        turned_back, kept_back = np.rot90(target, -quarter), np.rot90(kept, -quarter)
        assert kept_back[:, :kept_side].all()  # the scene at the start of the long side, turned back
        if kept_side == image.shape[0]:
            assert np.array_equal(turned_back[:, :kept_side], image)
        cells = mask.reshape(mask.shape[0] // inpaint.GRID, inpaint.GRID, mask.shape[1] // inpaint.GRID, inpaint.GRID)
        assert (cells == cells[:, :1, :, :1]).all()
