"""The image safety check: the classifier registry, the shipped skin-tone classifier, blur and withhold."""

from __future__ import annotations

import json

import numpy as np
import pytest
import redis
from PIL import Image

import moderation as modstore
from core import keys
from model.data import make_dataset
from worker import safety
from worker.safety import SafetySettings, SkinToneClassifier

SKIN = (224, 172, 140)  # a light skin tone inside the Kovač et al. RGB rule


def _solid(colour: tuple[int, int, int], size: tuple[int, int] = (64, 64)) -> Image.Image:
    return Image.new("RGB", size, colour)


def _half(colour: tuple[int, int, int], fraction: float) -> Image.Image:
    """A blue image whose top `fraction` of rows is `colour`."""
    pixels = np.zeros((64, 64, 3), dtype=np.uint8)
    pixels[...] = (30, 70, 230)
    pixels[: int(64 * fraction)] = colour
    return Image.fromarray(pixels)


def test_no_classifier_configured_is_said_plainly(redis_conn: redis.Redis) -> None:
    """An empty WORKER_SAFETY_CLASSIFIER loads nothing, and status says outputs are not checked."""
    classifier = safety.load(SafetySettings(classifier=""))
    assert classifier is None
    assert "not checked" in safety.describe(None)
    safety.report(redis_conn, "w1", None, now=1.0)
    assert any("none configured" in line for line in modstore.status_lines(redis_conn, "g"))


def test_registry_builds_by_name_and_reports(redis_conn: redis.Redis) -> None:
    """A known name builds its classifier and the worker's report reaches /admin moderation status."""
    classifier = safety.load(SafetySettings(classifier="builtin:skin"))
    assert isinstance(classifier, SkinToneClassifier)
    safety.report(redis_conn, "w1", classifier, now=1.0)
    assert json.loads(redis_conn.hget(keys.safety_classifiers(), "w1"))["classifier"] == "builtin:skin"
    assert "Image safety classifier: builtin:skin" in modstore.status_lines(redis_conn, "g")


def test_unknown_classifier_name_is_refused() -> None:
    """An unknown name fails at start with the known names in the message."""
    with pytest.raises(ValueError, match="builtin:skin"):
        safety.load(SafetySettings(classifier="magic"))


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """WORKER_SAFETY_CLASSIFIER and WORKER_SAFETY_THRESHOLD configure the check."""
    monkeypatch.setenv("WORKER_SAFETY_CLASSIFIER", "builtin:skin")
    monkeypatch.setenv("WORKER_SAFETY_THRESHOLD", "0.3")
    settings = SafetySettings()
    assert (settings.classifier, settings.threshold) == ("builtin:skin", 0.3)


def test_sd_checker_without_weights_fails_clearly(tmp_path) -> None:
    """The "sd" classifier loads lazily and, without its weights (none here), says what is missing on first use."""
    classifier = safety.load(SafetySettings(classifier="sd", sd_path=str(tmp_path / "absent")))
    with pytest.raises(RuntimeError, match="safety_checker/ and feature_extractor/"):
        classifier.flags([_solid(SKIN)])
    with pytest.raises(RuntimeError, match="WORKER_SAFETY_SD_PATH"):
        safety.load(SafetySettings(classifier="sd")).flags([_solid(SKIN)])


def test_skin_classifier_scores_skin_fraction() -> None:
    """Mostly skin-coloured images score 1, ones with a little skin 0, in between rising; deterministic."""
    classifier = SkinToneClassifier()
    scores = classifier.flags([_solid(SKIN), _half(SKIN, 0.1), _half(SKIN, 0.4), _solid((30, 70, 230))])
    assert scores[0] == 1.0 and scores[1] == 0.0 and scores[3] == 0.0
    assert 0.4 < scores[2] < 0.6
    assert classifier.flags([_half(SKIN, 0.4)]) == [scores[2]]


def test_skin_classifier_passes_the_synthetic_shapes() -> None:
    """Of the shapes data set only pink-background scenes are flagged (skin-like colour: the stated weakness)."""
    pixels, captions, _ = make_dataset(64, seed=3)
    scores = SkinToneClassifier().flags([Image.fromarray(image) for image in pixels])
    flagged = [caption for caption, score in zip(captions, scores, strict=True) if score >= 0.5]
    assert flagged and all("pink background" in caption for caption in flagged)
    assert len(flagged) <= len(captions) // 4


def test_blur_replaces_only_flagged_images() -> None:
    """Flagged images are blurred to shapes (same size); the others are returned untouched."""
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    clean = _solid((30, 70, 230))
    images, flagged = safety.apply_policy([noisy, clean], [0.9, 0.1], "blur", threshold=0.5)
    assert flagged == [0] and images[1] is clean and images[0].size == (64, 64)
    assert np.asarray(images[0], dtype=np.float32).std() < 0.2 * np.asarray(noisy, dtype=np.float32).std()
    assert safety.spoiler_name("grid.png") == "SPOILER_grid.png"
    assert safety.spoiler_name("SPOILER_grid.png") == "SPOILER_grid.png"


def test_withhold_replaces_with_placeholder() -> None:
    """Withheld images become a grey placeholder of the same size."""
    images, flagged = safety.apply_policy([_solid(SKIN, (96, 80))], [1.0], "withhold")
    assert flagged == [0] and images[0].size == (96, 80)
    assert tuple(np.asarray(images[0])[0, 0]) == safety.PLACEHOLDER_GREY


def test_apply_policy_refuses_bad_input() -> None:
    """An unknown action or a score count that does not match is an error, not a silent pass."""
    with pytest.raises(ValueError, match="blur"):
        safety.apply_policy([_solid(SKIN)], [1.0], "delete")
    with pytest.raises(ValueError, match="scores"):
        safety.apply_policy([_solid(SKIN)], [], "blur")
