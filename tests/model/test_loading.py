"""Loading pipelines: the tiny built-in one, a saved diffusers folder, and the one-line errors when loading fails."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    StableDiffusionLatentUpscalePipeline,
    StableDiffusionPipeline,
)
from transformers import CLIPTextConfig, CLIPTextModel

import model.loading as loading
from core.errors import GenerationFailed
from core.models import ModelInfo, tiny_model
from model.tiny import COMMON_WORDS, build_tiny_pipeline, build_tiny_tokenizer
from model.tiny_upscaler import build_tiny_latent_upscaler

RENDER = {"prompt": "a red cat", "num_inference_steps": 2, "height": 64, "width": 64, "output_type": "np"}


def render(pipe: StableDiffusionPipeline) -> np.ndarray:
    return pipe(**RENDER, generator=torch.Generator().manual_seed(0)).images


def test_tiny_pipeline_weights_depend_only_on_the_seed() -> None:
    """build_tiny_pipeline(seed) gives the same weights for the same seed, others for another, and leaves the global
    torch RNG where it was."""
    state = torch.random.get_rng_state()
    a, b, c = build_tiny_pipeline(0), build_tiny_pipeline(0), build_tiny_pipeline(1)
    assert torch.equal(torch.random.get_rng_state(), state)
    weight = "conv_in.weight"
    assert torch.equal(a.unet.state_dict()[weight], b.unet.state_dict()[weight])
    assert not torch.equal(a.unet.state_dict()[weight], c.unet.state_dict()[weight])
    assert a.safety_checker is None and a.vae_scale_factor == 8


def test_tiny_tokenizer_knows_common_words_and_never_fails_on_others() -> None:
    """Every common prompt word is one token; any other text (misspelt, Unicode, emoji) falls back to byte pieces."""
    tokenizer = build_tiny_tokenizer()
    assert [w for w in COMMON_WORDS if tokenizer.tokenize(w) != [w + "</w>"]] == []
    ids = tokenizer("zxqv ünïcode 日本 🐱, kat!!", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[0] == tokenizer.bos_token_id
    assert tokenizer.unk_token_id not in ids[1 : ids.index(tokenizer.eos_token_id)]


def test_builtin_tiny_loads_with_dpm_solver_and_counts_the_load() -> None:
    """BUILTIN_TINY loads the tiny pipeline in fp32 with DPM-Solver++, and PIPELINE_LOADS goes up by one."""
    before = loading.PIPELINE_LOADS
    pipe = loading.load_pipeline(tiny_model(), device="cpu")
    assert loading.PIPELINE_LOADS == before + 1
    assert isinstance(pipe.scheduler, DPMSolverMultistepScheduler)
    assert pipe.scheduler.config.algorithm_type == "dpmsolver++"
    assert pipe.unet.dtype == torch.float32 and pipe.device.type == "cpu"


def test_saved_folder_loads_the_same_model(tmp_path: Path) -> None:
    """A pipeline saved with save_pretrained loads from its folder (AutoPipeline, fp32 on CPU) and renders the same
    images as the pipeline that was saved."""
    original = build_tiny_pipeline()
    original.scheduler = EulerDiscreteScheduler.from_config(original.scheduler.config)
    original.save_pretrained(tmp_path / "tiny-sd")
    info = ModelInfo(name="saved", source=str(tmp_path / "tiny-sd"))
    loaded = loading.load_pipeline(info, device="cpu")
    assert isinstance(loaded, StableDiffusionPipeline) and loaded.unet.dtype == torch.float32
    assert isinstance(loaded.scheduler, DPMSolverMultistepScheduler)  # swapped in by default
    kept = loading.load_pipeline(info, device="cpu", keep_scheduler=True)
    assert isinstance(kept.scheduler, EulerDiscreteScheduler)
    np.testing.assert_allclose(render(kept), render(original), atol=1e-5)


def test_missing_folder_is_a_one_line_error(tmp_path: Path) -> None:
    """A source folder that does not exist fails with GenerationFailed naming the model and the folder."""
    info = ModelInfo(name="gone", source=str(tmp_path / "no-such-model"))
    with pytest.raises(GenerationFailed) as caught:
        loading.load_pipeline(info, device="cpu")
    message = str(caught.value)
    assert "'gone'" in message and "no-such-model" in message and "\n" not in message
    assert caught.value.__cause__ is None and (caught.value.__context__ is None or caught.value.__suppress_context__)


@pytest.mark.parametrize("content", [{}, {"model_index.json": "{not json"}, {"model_index.json": '{"unet": 3}'}])
def test_unloadable_folder_is_a_one_line_error(tmp_path: Path, content: dict[str, str]) -> None:
    """A folder that is not a diffusers model (empty, broken model_index.json) gives a one-line GenerationFailed."""
    for name, text in content.items():
        (tmp_path / name).write_text(text)
    info = dataclasses.replace(tiny_model("broken"), source=str(tmp_path))
    with pytest.raises(GenerationFailed, match="cannot load model 'broken'") as caught:
        loading.load_pipeline(info, device="cpu")
    assert "\n" not in str(caught.value)


def test_builtin_tiny_upscaler_shares_the_text_encoder_and_counts_the_load() -> None:
    """BUILTIN_TINY_UPSCALER builds a latent upscaler on the base pipeline's own text encoder and tokenizer (one copy
    in memory), fp32 on the CPU, and UPSCALER_LOADS goes up by one."""
    base = build_tiny_pipeline()
    before = loading.UPSCALER_LOADS
    upscaler = loading.load_upscaler(loading.BUILTIN_TINY_UPSCALER, base, device="cpu")
    assert loading.UPSCALER_LOADS == before + 1
    assert isinstance(upscaler, StableDiffusionLatentUpscalePipeline)
    assert upscaler.text_encoder is base.text_encoder and upscaler.tokenizer is base.tokenizer
    assert upscaler.unet.dtype == torch.float32 and upscaler.device.type == "cpu"


def test_saved_upscaler_shares_a_matching_text_encoder_and_loads_its_own_otherwise(tmp_path: Path) -> None:
    """A saved upscaler folder whose text encoder has the base's architecture loads with the base's encoder (its own
    is never read); one with another encoder loads its own, and both load the saved UNet weights."""
    base = build_tiny_pipeline()
    matching = build_tiny_latent_upscaler(seed=5)
    matching.save_pretrained(tmp_path / "matching")
    tokenizer = build_tiny_tokenizer()
    wide = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=48, intermediate_size=37,
                                        num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=77))
    build_tiny_latent_upscaler(wide, tokenizer).save_pretrained(tmp_path / "other")
    shared = loading.load_upscaler(str(tmp_path / "matching"), base, device="cpu")
    assert shared.text_encoder is base.text_encoder
    assert torch.equal(shared.unet.state_dict()["conv_in.weight"], matching.unet.state_dict()["conv_in.weight"])
    own = loading.load_upscaler(str(tmp_path / "other"), base, device="cpu")
    assert own.text_encoder is not base.text_encoder and own.text_encoder.config.hidden_size == 48


def test_an_upscaler_that_cannot_be_used_is_a_one_line_error(tmp_path: Path) -> None:
    """A missing upscaler folder, and a folder holding a text-to-image model instead, fail at load with a one-line
    GenerationFailed naming the source and WORKER_UPSCALER; no load is counted."""
    base = build_tiny_pipeline()
    base.save_pretrained(tmp_path / "not-an-upscaler")
    before = loading.UPSCALER_LOADS
    for source in (tmp_path / "no-such-upscaler", tmp_path / "not-an-upscaler"):
        with pytest.raises(GenerationFailed) as caught:
            loading.load_upscaler(str(source), base, device="cpu")
        message = str(caught.value)
        assert str(source) in message and "WORKER_UPSCALER" in message and "\n" not in message
    assert loading.UPSCALER_LOADS == before


def test_the_embedded_model_brings_its_inpainting_unet_once_trained(tmp_path: Path, monkeypatch) -> None:
    """With no WORKER_INPAINT_UNET the worker takes the embedded model's own inpainting checkpoint when
    `python -m model.inpaint` has made one (model/embedded/inpaint/unet), and none for any other model."""
    from core.models import embedded_model, tiny_model
    from model import loading

    monkeypatch.setattr(loading, "EMBEDDED_INPAINT", tmp_path / "inpaint")
    assert loading.default_inpaint_unet(embedded_model()) == ""
    (tmp_path / "inpaint" / "unet").mkdir(parents=True)
    (tmp_path / "inpaint" / "unet" / "config.json").write_text("{}")
    assert loading.default_inpaint_unet(embedded_model()) == str(tmp_path / "inpaint")
    assert loading.default_inpaint_unet(tiny_model()) == ""
