"""Drawing an edit: the inpainting call's canvas and mask, and the kept pixels put back exactly (worker.editing)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core.canvas import Edit, plan
from core.errors import GenerationFailed
from core.models import ModelRegistry, tiny_model
from core.prompt import parse
from model.loading import BUILTIN_TINY_INPAINT, load_inpaint_unet
from model.tiny import build_tiny_sdxl_pipeline
from worker import editing
from worker.engine import Engine

SD15 = {"multiple": 8, "max_pixels": 512 * 512}


def noise_image(size: tuple[int, int], seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def test_the_mask_is_white_exactly_where_the_model_redraws() -> None:
    """Zoom Out 2x of 128x128: the mask is white on the border strips and black on the source's box, which holds
    the source shrunk to half its sides."""
    layout = plan(Edit("zoom", zoom=2.0), (128, 128), **SD15)
    source = noise_image((128, 128), 1)
    canvas, mask = editing.start(layout, source)
    m = np.asarray(mask)
    assert canvas.size == mask.size == (128, 128)
    assert (m[32:96, 32:96] == 0).all() and (m[:32] == 255).all() and (m[:, 96:] == 255).all()
    shrunk = source.resize((64, 64), Image.Resampling.LANCZOS)
    assert np.array_equal(np.asarray(canvas)[32:96, 32:96], np.asarray(shrunk))


def test_an_outpaint_keeps_the_source_exactly_away_from_the_seam() -> None:
    """After decoding, the kept part is the source's pixels exactly except in a band `feather` pixels wide along
    the seam, where it blends into the new border; the border is the model's."""
    layout = plan(Edit("pan", direction="right"), (128, 128), **SD15)
    canvas, _ = editing.start(layout, noise_image((128, 128), 2))
    generated = noise_image(layout.canvas, 3)
    result = np.asarray(editing.finish(layout, canvas, generated)).astype(int)
    band = editing.feather(layout)
    kept, new = np.asarray(canvas).astype(int), np.asarray(generated).astype(int)
    assert layout.paste == (0, 0, 128, 128) and band == 8
    assert np.array_equal(result[:, : 128 - band], kept[:, : 128 - band])
    assert np.array_equal(result[:, 128:], new[:, 128:])
    seam = result[:, 128 - band : 128]
    assert not np.array_equal(seam, kept[:, 128 - band : 128]) and not np.array_equal(seam, new[:, 128 - band : 128])


def test_a_region_repaint_leaves_everything_outside_the_region_exactly_as_it_was() -> None:
    """Vary (Region) of the centre: every pixel outside the region is the source's; the band is inside it."""
    layout = plan(Edit("region", region="centre"), (128, 128), **SD15)
    source = noise_image((128, 128), 4)
    canvas, mask = editing.start(layout, source)
    result = np.asarray(editing.finish(layout, canvas, noise_image((128, 128), 5)))
    outside = np.asarray(mask) == 0
    assert np.array_equal(canvas, source) and outside.sum() == 128 * 128 - 64 * 64
    assert np.array_equal(result[outside], np.asarray(source)[outside])
    assert not np.array_equal(result[~outside], np.asarray(source)[~outside])


def test_a_region_on_the_images_border_blends_only_along_its_inner_edges() -> None:
    """The top-left cell: no band along the image's own border, where there is no seam."""
    layout = plan(Edit("region", region="r1c1"), (96, 96), **SD15)
    source = noise_image((96, 96), 6)
    generated = noise_image((96, 96), 7)
    result = np.asarray(editing.finish(layout, source, generated))
    ((left, top, right, bottom),) = layout.repaint
    assert (left, top) == (0, 0)
    assert np.array_equal(result[0, 0], np.asarray(generated)[0, 0])  # the corner is the model's, unblended


def test_a_dedicated_inpainting_unet_shares_the_rest_of_the_model(tiny_engine) -> None:
    """WORKER_INPAINT_UNET: only its 9-channel UNet is loaded; the inpainting pipeline uses the model's own VAE
    and text encoder (the same objects), takes mask and masked image as inputs, and the kept pixels come back."""

    engine = Engine(tiny_engine.pipe, inpaint_unet=load_inpaint_unet(BUILTIN_TINY_INPAINT, tiny_engine.pipe, "cpu"))
    assert engine.inpainter.unet.config.in_channels == 9 and engine.pipe.unet.config.in_channels == 4
    assert engine.inpainter.vae is tiny_engine.pipe.vae
    assert engine.inpainter.text_encoder is tiny_engine.pipe.text_encoder
    layout = plan(Edit("zoom", zoom=2.0), (64, 64), multiple=8, max_pixels=64 * 64)
    start, mask = editing.start(layout, noise_image((64, 64), 8))
    spec = parse("a cat --seed 1", ModelRegistry((tiny_model(),)))[0]
    images = engine.inpaint(spec, start, mask, count=2)
    kept = np.asarray(start)[16 + 4 : 48 - 4, 16 + 4 : 48 - 4]
    assert [i.size for i in images] == [(64, 64)] * 2
    assert np.array_equal(np.asarray(editing.finish(layout, start, images[0]))[20:44, 20:44], kept)


def test_an_inpainting_unet_that_does_not_fit_stops_with_one_line(tiny_engine, tmp_path) -> None:
    """A missing folder, or a checkpoint whose UNet is not a 9-channel one for this text encoder: GenerationFailed
    in one line naming WORKER_INPAINT_UNET (the worker logs it and exits at start)."""
    with pytest.raises(GenerationFailed, match=r"does not exist \(WORKER_INPAINT_UNET\)"):
        load_inpaint_unet(str(tmp_path / "nowhere"), tiny_engine.pipe, "cpu")
    tiny_engine.pipe.unet.save_pretrained(tmp_path / "plain" / "unet")
    with pytest.raises(GenerationFailed, match=r"\(in_channels, cross_attention_dim\) \(4, 32\), not \(9, 32\)"):
        load_inpaint_unet(str(tmp_path / "plain"), tiny_engine.pipe, "cpu")


@pytest.mark.parametrize("dedicated", [False, True])
def test_sdxl_renders_and_repaints_on_the_same_modules(dedicated: bool) -> None:
    """A tiny SDXL pipeline (two text encoders, pooled and size conditioning): the engine renders its grid and
    repaints a zoom with diffusers' SDXL inpainting pipeline made from it, with its own UNet (masked latent
    blending) or a dedicated 9-channel one; the kept pixels come back exactly."""
    pipe = build_tiny_sdxl_pipeline()
    unet = load_inpaint_unet(BUILTIN_TINY_INPAINT, pipe, "cpu") if dedicated else None
    engine = Engine(pipe, inpaint_unet=unet)
    assert type(engine.inpainter).__name__ == "StableDiffusionXLInpaintPipeline"
    assert engine.inpainter.text_encoder_2 is pipe.text_encoder_2 and engine.inpainter.vae is pipe.vae
    spec = parse("a red cat --seed 3", ModelRegistry((tiny_model(),)))[0]
    grid = engine.render(spec)
    assert len({image.tobytes() for image in grid}) == 4
    layout = plan(Edit("zoom", zoom=2.0), (64, 64), multiple=8, max_pixels=64 * 64)
    start, mask = editing.start(layout, grid[0])
    (new,) = engine.inpaint(spec, start, mask, count=1)
    assert np.array_equal(np.asarray(editing.finish(layout, start, new))[20:44, 20:44], np.asarray(start)[20:44, 20:44])
