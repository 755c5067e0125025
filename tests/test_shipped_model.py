"""The shipped default model: what a fresh clone's `restore photo.jpg` uses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from restore import cli
from restore.config import load_config
from restore.train import DenoiserConfig
from restore.weights import (
    card_path,
    default_denoiser_path,
    default_detector_path,
    default_negative_denoiser_path,
    default_weights_path,
    sha256_of,
)

pytestmark = pytest.mark.skipif(not default_weights_path().is_file(), reason="no model shipped in models/")


def _card(weights):
    return json.loads(card_path(weights).read_text(encoding="utf-8"))


def test_card_matches_the_weights_it_describes():
    card = _card(default_weights_path())
    assert card["sha256"] == sha256_of(default_weights_path())
    assert card["dtype"] == "float16"
    assert card["generator_spec"]["encoder"] == "resnet34"
    # the card's numbers come from restore-eval --update-card: every category with the baselines beside it
    summary = card["evaluation"]["summary"]
    label = card["evaluation"]["model_label"]
    for by_method in summary.values():
        assert {"input", "classical", label} <= set(by_method)


def test_the_evaluation_names_the_detector_and_denoisers_that_ship():
    """The card's numbers are those of the shipped helpers: each one's file, its own card and the run agree."""
    evaluation = _card(default_weights_path())["evaluation"]
    label = evaluation["model_label"]
    for kind, weights in (("detectors", default_detector_path()), ("denoisers", default_denoiser_path()),
                          ("negative_denoisers", default_negative_denoiser_path())):
        ran = evaluation["meta"][kind][label]
        own = _card(weights)
        assert ran["sha256"] == own["sha256"] == sha256_of(weights)
        assert (ran["name"], ran["version"]) == (own["name"], own["version"])


def test_the_shipped_denoiser_was_trained_with_its_documented_config():
    trained = _card(default_denoiser_path())["training"]["config"]
    documented = load_config(DenoiserConfig, Path(__file__).resolve().parents[1] / "docs" / "configs"
                             / "denoiser-finetune3-cpu.toml")
    for key in ("size", "bs", "epochs", "lr", "wd", "noise_kinds", "sigma_range", "gray_probability"):
        value = getattr(documented, key)
        assert trained[key] == (list(value) if isinstance(value, tuple) else value), key
    assert trained["spec"]["channels"] == list(documented.spec.channels)


def test_the_shipped_negative_denoiser_was_trained_with_its_documented_config():
    card = _card(default_negative_denoiser_path())
    trained = card["training"]["config"]
    documented = load_config(DenoiserConfig, Path(__file__).resolve().parents[1] / "docs" / "configs"
                             / "negative-denoiser-levels-cpu.toml")
    for key in ("size", "bs", "epochs", "lr", "wd", "noise_kinds", "sigma_range", "gray_probability",
                "negative_probability", "negative_kinds", "max_zoom", "negative_levels"):
        value = getattr(documented, key)
        assert trained[key] == (list(value) if isinstance(value, tuple) else value), key
    assert trained["spec"]["channels"] == list(documented.spec.channels)
    assert trained["init_weights"] == "models/negative-denoiser.safetensors"
    # fine-tuned from the negative denoiser 0.2, from 0.1, itself fine-tuned from the denoiser that ships beside it
    parent = card["fine_tuned_from"]
    assert (parent["name"], parent["version"]) == (card["name"], "0.2")
    assert (parent["fine_tuned_from"]["name"], parent["fine_tuned_from"]["version"]) == (card["name"], "0.1")
    assert len({card["sha256"], parent["sha256"], parent["fine_tuned_from"]["sha256"]}) == 3
    assert parent["fine_tuned_from"]["fine_tuned_from"]["sha256"] == _card(default_denoiser_path())["sha256"]


def test_restore_photo_with_the_default_model(tmp_path):
    rng = np.random.default_rng(0)
    gray = np.repeat(rng.integers(0, 256, (75, 101, 1), dtype=np.uint8), 3, axis=2)
    photo = tmp_path / "old print.jpg"
    Image.fromarray(gray).save(photo, quality=95)
    before = photo.read_bytes()
    result = CliRunner().invoke(cli.app, [str(photo), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    restored = Image.open(tmp_path / "old print_restored.jpg")
    assert restored.size == (101, 75)
    assert photo.read_bytes() == before
