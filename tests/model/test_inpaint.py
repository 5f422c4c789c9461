"""The inpainting UNet's fine-tune (`model.inpaint`): how it starts, the masks it trains on, and what it saves."""

from __future__ import annotations

import torch

from model import inpaint
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


def test_training_masks_are_each_kind_on_the_latent_grid():
    """Masks are 0/1 with edges on whole latent pixels, never empty; among 400 every kind shows: whole, a kept box
    (a zoom: the redrawn part surrounds it), a kept side (a pan: a full-height or full-width strip redrawn at one
    edge) and a box to redraw (a region)."""
    masks = inpaint.random_masks(400, 64, torch.Generator().manual_seed(0))
    assert masks.shape == (400, 1, 64, 64) and set(masks.unique().tolist()) <= {0.0, 1.0}
    cells = masks[:, 0].reshape(400, 16, 4, 16, 4)
    assert (cells == cells[:, :, :1, :, :1]).all()  # constant on every 4x4 cell: edges on the grid
    assert (masks.sum(dim=(1, 2, 3)) > 0).all()
    whole = masks.mean(dim=(1, 2, 3)) == 1
    edge_rows = masks[:, 0, [0, -1], :].amin(dim=2)  # top and bottom rows all redrawn
    edge_cols = masks[:, 0, :, [0, -1]].amin(dim=1)
    surrounded = (edge_rows.amin(dim=1) == 1) & (edge_cols.amin(dim=1) == 1) & ~whole
    strip = ((edge_rows.amax(dim=1) == 1) | (edge_cols.amax(dim=1) == 1)) & ~surrounded & ~whole
    inside = masks[:, 0, [0, -1], :].amax(dim=(1, 2)) + masks[:, 0, :, [0, -1]].amax(dim=(1, 2)) == 0
    for kind, found in (("whole", whole), ("kept box", surrounded), ("kept side", strip), ("region", inside)):
        assert found.sum() > 20, kind
