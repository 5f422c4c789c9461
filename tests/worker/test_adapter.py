"""Image prompts through an IP-Adapter (IMAGINE_IMAGE_IP_ADAPTER): a tiny random adapter, written to disk in
h94/IP-Adapter's layout and loaded by diffusers' own `load_ip_adapter` into the tiny pipeline, on the CPU."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import redis
import torch
from PIL import Image

from core import jobs
from core.errors import GenerationFailed
from core.images import adapter_scale
from core.models import ModelRegistry, tiny_model
from core.prompt import parse
from core.settings import WorkerSettings
from model.loading import load_ip_adapter
from model.tiny import build_tiny_pipeline, build_tiny_sdxl_pipeline, save_tiny_ip_adapter
from worker import kinds
from worker.__main__ import main
from worker.batch_render import Rows
from worker.context import Context
from worker.engine import Engine

from .image_server import png, serving

REGISTRY = ModelRegistry((tiny_model(),))
RED, GREEN = Image.new("RGB", (64, 64), (220, 30, 30)), Image.new("RGB", (64, 64), (30, 200, 60))


@pytest.fixture(scope="module")
def adapter_source(tmp_path_factory: pytest.TempPathFactory) -> str:
    """IMAGINE_IMAGE_IP_ADAPTER of a tiny random IP-Adapter for the tiny model's UNet."""
    return save_tiny_ip_adapter(build_tiny_pipeline().unet, tmp_path_factory.mktemp("ip-adapter"))


@pytest.fixture(scope="module")
def engines(adapter_source: str) -> tuple[Engine, Engine]:
    """(the tiny model, the tiny model with the adapter): same weights otherwise."""
    return Engine.load(tiny_model(), device="cpu"), Engine.load(tiny_model(), device="cpu", ip_adapter=adapter_source)


def spec_of(text: str, rules=None):
    [spec] = parse(text, REGISTRY, image_rules=rules)
    return spec


def pixels(images: list[Image.Image]) -> torch.Tensor:
    return torch.stack([torch.from_numpy(np.asarray(image, dtype=np.float32)) for image in images])


def grid_of(engine: Engine, redis_conn: redis.Redis, text: str, files: dict[str, bytes]) -> list[Image.Image]:
    """The four images of an `/imagine` of `text` ("{base}" is the image server) as the worker makes them."""
    with serving(files) as (base, rules):
        spec = spec_of(text.format(base=base), rules)
        ctx = Context(conn=redis_conn, engine=engine, model=tiny_model(), settings=WorkerSettings(device="cpu"),
                      worker_name="test", image_rules=rules)
        hooks = kinds.Hooks(lambda *_: None, lambda: False, 1.5)
        return list(kinds.make(ctx, jobs.new_job_id(), "grid", spec, {}, hooks).later)


def test_every_kind_of_render_is_unchanged_by_a_loaded_adapter(engines: tuple[Engine, Engine]) -> None:
    """With the adapter in the UNet, diffusers needs image embeddings in every call: text-only grids, batches,
    variations and inpainting pass none at scale 0 and render exactly what the same model renders without it."""
    plain, adapted = engines
    assert plain.adapter is None and adapted.adapter is not None
    spec = spec_of("a red cat in the snow --seed 11")
    assert torch.equal(pixels(plain.render(spec)), pixels(adapted.render(spec)))
    [plain_batch, adapted_batch] = (e.render_batch([Rows(spec), Rows(spec)]) for e in (plain, adapted))
    assert all(torch.equal(pixels(a), pixels(b)) for a, b in zip(plain_batch, adapted_batch, strict=True))
    assert torch.equal(pixels(plain.image_to_image(spec, RED, 0.6, count=2)),
                       pixels(adapted.image_to_image(spec, RED, 0.6, count=2)))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    inpainted = [pixels(e.inpaint(spec, RED, mask, count=2)) for e in (plain, adapted)]
    assert torch.equal(*inpainted)


def test_an_image_prompt_steers_the_render_by_its_image(engines: tuple[Engine, Engine]) -> None:
    """Same text and seed: a red image and a green one give different grids, both different from text alone;
    at scale 0 the image changes nothing."""
    _, engine = engines
    assert engine.adapter is not None
    spec = spec_of("a cat --seed 5")
    text_only = pixels(engine.render(spec))
    red = pixels(engine.render(spec, image_prompt=engine.adapter.image_prompt([RED], [1.0], 1.0)))
    green = pixels(engine.render(spec, image_prompt=engine.adapter.image_prompt([GREEN], [1.0], 1.0)))
    unweighted = pixels(engine.render(spec, image_prompt=engine.adapter.image_prompt([RED], [1.0], 0.0)))
    assert (red - text_only).abs().mean() > 1 and (red - green).abs().mean() > 1
    assert torch.equal(unweighted, text_only)


def test_several_images_blend_as_the_weighted_mean_of_their_embeddings(engines: tuple[Engine, Engine]) -> None:
    """`url1 url2` averages the two embeddings; `url1::3 url2` weighs the first three times; one image twice is that
    image; weights that add up to 0 are refused."""
    adapter = engines[1].adapter
    assert adapter is not None
    red, green = (adapter.image_prompt([p], [1.0], 1.0).positive for p in (RED, GREEN))
    assert torch.allclose(adapter.image_prompt([RED, GREEN], [1.0, 1.0], 1.0).positive, (red + green) / 2, atol=1e-6)
    assert torch.allclose(adapter.image_prompt([RED, GREEN], [3.0, 1.0], 1.0).positive, 0.75 * red + 0.25 * green,
                          atol=1e-6)
    assert torch.allclose(adapter.image_prompt([RED, RED], [1.0, 1.0], 1.0).positive, red, atol=1e-6)
    with pytest.raises(GenerationFailed, match="add up to 0"):
        adapter.image_prompt([RED, GREEN], [1.0, -1.0], 1.0)


def test_an_image_prompt_job_renders_through_the_adapter(engines: tuple[Engine, Engine], redis_conn) -> None:
    """`/imagine <red image> a cat` on a worker with the adapter: the image is fetched and checked as always, and
    steers a text-to-image render (not an image-to-image one): the grid differs from `a cat` alone and from the same
    job on a worker without the adapter."""
    plain, adapted = engines
    files = {"/red.png": png(RED)}
    with_image = pixels(grid_of(adapted, redis_conn, "{base}/red.png a cat --seed 5", files))
    text_only = pixels(grid_of(adapted, redis_conn, "a cat --seed 5", files))
    img2img = pixels(grid_of(plain, redis_conn, "{base}/red.png a cat --seed 5", files))
    assert (with_image - text_only).abs().mean() > 1 and (with_image - img2img).abs().mean() > 1


@pytest.mark.parametrize(("iw", "with_text", "scale"), [
    (1, True, 0.5), (0, True, 0.0), (2, True, 1.0), (3, True, 1.0), (0.5, True, 0.25),
    (1, False, 1.0), (0.5, False, 0.5), (3, False, 1.0), (0, False, 0.0),
])  # fmt: skip
def test_iw_sets_the_adapter_scale(iw: float, with_text: bool, scale: float) -> None:
    assert adapter_scale(iw, with_text) == scale


def test_an_adapter_that_cannot_be_loaded_is_one_clear_error(tmp_path: Path) -> None:
    """A setting without a weights file, a missing folder, and an adapter made for another UNet (SDXL's tiny one):
    each a one-line GenerationFailed that names the setting."""
    pipe = build_tiny_pipeline()
    for source, said in [("h94/IP-Adapter", "is not <hub id or folder>:<weights file>"),
                         ("/no/such/folder:ip-adapter.safetensors", "does not exist"),
                         (save_tiny_ip_adapter(build_tiny_sdxl_pipeline().unet, tmp_path / "xl"), "cannot load")]:
        with pytest.raises(GenerationFailed) as caught:
            load_ip_adapter(source, pipe)
        assert said in str(caught.value) and "IMAGINE_IMAGE_IP_ADAPTER" in str(caught.value)
        assert "\n" not in str(caught.value)


def test_a_worker_whose_adapter_cannot_load_stops_at_start_with_one_line(monkeypatch, caplog) -> None:
    """`python -m worker` (its `main`, in this process) with IMAGINE_IMAGE_IP_ADAPTER naming a missing folder: exit
    status 1 before it touches Redis, one error line naming the setting."""
    monkeypatch.setenv("MODEL", "builtin:tiny")
    monkeypatch.setenv("WORKER_DEVICE", "cpu")
    monkeypatch.setenv("IMAGINE_IMAGE_IP_ADAPTER", "/no/such/folder:ip-adapter.safetensors")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # never reached
    with caplog.at_level(logging.ERROR, logger="worker"):
        assert main(["--name", "adapterless"]) == 1
    [line] = [r.getMessage() for r in caplog.records if r.name == "worker"]
    assert "IMAGINE_IMAGE_IP_ADAPTER" in line and "does not exist" in line
