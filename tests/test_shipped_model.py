"""The shipped default model: what a fresh clone's `restore photo.jpg` uses."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from restore import cli
from restore.weights import card_path, default_weights_path, sha256_of

pytestmark = pytest.mark.skipif(not default_weights_path().is_file(), reason="no model shipped in models/")


def test_card_matches_the_weights_it_describes():
    card = json.loads(card_path(default_weights_path()).read_text(encoding="utf-8"))
    assert card["sha256"] == sha256_of(default_weights_path())
    assert card["dtype"] == "float16"
    assert card["generator_spec"]["encoder"] == "resnet34"
    # the card's numbers come from restore-eval --update-card: every category with the baselines beside it
    summary = card["evaluation"]["summary"]
    label = card["evaluation"]["model_label"]
    for by_method in summary.values():
        assert {"input", "classical", label} <= set(by_method)


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
