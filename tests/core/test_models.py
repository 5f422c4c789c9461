"""The model registry: the default model, MODELS_FILE tables, names and aliases."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import models
from core.errors import ImagineError
from core.models import BUILTIN_EMBEDDED, BUILTIN_TINY, ModelInfo, ModelRegistry, load_registry


def test_default_is_the_embedded_model_when_its_weights_are_present(monkeypatch, tmp_path: Path) -> None:
    """With no MODEL, the registry serves the embedded model if its folder holds a pipeline, else the tiny one."""
    monkeypatch.setattr(models, "EMBEDDED_DIR", tmp_path)
    assert load_registry("").default.source == BUILTIN_TINY
    (tmp_path / "model_index.json").write_text("{}")
    assert load_registry("").default == models.embedded_model()


def test_the_shipped_weights_make_the_embedded_model_the_default() -> None:
    """The repository ships the embedded model, so a fresh checkout's default is it (the README's first command)."""
    assert (models.EMBEDDED_DIR / "model_index.json").is_file()
    assert load_registry("").default.source == BUILTIN_EMBEDDED


@pytest.mark.parametrize(("source", "name"), [(BUILTIN_TINY, "tiny"), (BUILTIN_EMBEDDED, "embedded"),
                                              ("stabilityai/sd-turbo", "sd-turbo"), ("/models/My Model/", "my-model")])
def test_a_single_model_is_named_after_its_source(source: str, name: str) -> None:
    """MODEL alone gives one registry entry named for its source (used in lane names and --model)."""
    assert load_registry(source).default.name == name


def test_models_file_lists_several_models_with_aliases(tmp_path: Path) -> None:
    """A MODELS_FILE of [[model]] tables gives each model, the first as default; aliases match case-insensitively."""
    path = tmp_path / "models.toml"
    path.write_text('[[model]]\nsource = "org/sdxl"\naliases = [6]\npixels = 1048576\n\n'
                    '[[model]]\nname = "tiny"\nsource = "builtin:tiny"\n')
    registry = load_registry("", path)
    assert [m.name for m in registry.models] == ["sdxl", "tiny"]
    assert registry.get("6") is registry.default and registry.get("TINY") is registry.models[1]


@pytest.mark.parametrize("text", ["[[model]]\nname = 'x'\n", "[[model]\n", "[[model]]\nsource = 'a'\nbogus = 1\n"])
def test_a_malformed_models_file_is_one_clear_error(tmp_path: Path, text: str) -> None:
    """A MODELS_FILE without a source, with bad TOML or an unknown field raises ImagineError naming the file."""
    path = tmp_path / "models.toml"
    path.write_text(text)
    with pytest.raises(ImagineError, match="MODELS_FILE"):
        load_registry("", path)


def test_a_name_used_twice_is_refused() -> None:
    """Two models answering to one name would make --model ambiguous: the registry refuses it."""
    with pytest.raises(ImagineError, match="twice"):
        ModelRegistry((ModelInfo("a", "x"), ModelInfo("b", "y", aliases=("A",))))
