"""Metrics on cases whose answer is known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.color import deltaE_ciede2000, rgb2lab

from restore import metrics


def _photo(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth colour image with texture, values away from 0 and 255 so shifts do not clip."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([40 + 150 * x / width, 60 + 120 * y / height, 180 - 100 * x / width], axis=-1)
    return np.clip(base + rng.normal(0, 10, base.shape), 20, 230).astype(np.uint8)


def test_identical_images_are_perfect():
    image = _photo()
    assert metrics.psnr(image, image) == metrics.PSNR_CAP
    assert metrics.ssim(image, image) == pytest.approx(1.0)
    assert metrics.mae(image, image) == 0.0
    assert metrics.delta_e(image, image) == pytest.approx(0.0, abs=1e-6)
    assert metrics.colourfulness_ratio(image, image) == pytest.approx(1.0)


@pytest.mark.parametrize("k", [1, 5, 20])
def test_uniform_shift_gives_closed_form_psnr_and_mae(k):
    image = _photo()
    shifted = image + np.uint8(k)
    assert metrics.psnr(shifted, image) == pytest.approx(20 * math.log10(255 / k), abs=1e-9)
    assert metrics.mae(shifted, image) == pytest.approx(k / 255)
    assert metrics.ssim(shifted, image) < 1.0


def test_metrics_get_worse_with_more_noise():
    image = _photo()
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 1, image.shape)
    light, heavy = (np.clip(image + s * noise, 0, 255).astype(np.uint8) for s in (5, 30))
    assert metrics.psnr(light, image) > metrics.psnr(heavy, image)
    assert metrics.ssim(light, image) > metrics.ssim(heavy, image)
    assert metrics.delta_e(light, image) < metrics.delta_e(heavy, image)


def test_delta_e_matches_skimage_on_lab():
    a, b = _photo(seed=2), _photo(seed=3)
    expected = deltaE_ciede2000(rgb2lab(b / 255.0), rgb2lab(a / 255.0)).mean()
    assert metrics.delta_e(a, b) == pytest.approx(expected, rel=1e-3)


def test_colourfulness_of_gray_is_zero_and_ratio_undefined():
    gray = np.repeat(_photo()[..., :1], 3, axis=2)
    assert metrics.colourfulness(gray) == 0.0
    assert math.isnan(metrics.colourfulness_ratio(_photo(), gray))
    # a gray output against a colour truth has lost all colour
    assert metrics.colourfulness_ratio(gray, _photo()) == 0.0


def test_colourfulness_closed_form_and_desaturation():
    # flat colour: sigma 0, so M = 0.3 * |(rg, yb)|; red (200, 0, 0): rg 200, yb 100
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 200
    assert metrics.colourfulness(red) == pytest.approx(0.3 * math.hypot(200, 100))
    image = _photo()
    gray = image.mean(axis=2, keepdims=True)
    half = np.clip(np.rint(gray + 0.5 * (image - gray)), 0, 255).astype(np.uint8)
    assert 0.4 < metrics.colourfulness_ratio(half, image) < 0.6


def test_full_reference_keys_and_better():
    image = _photo()
    values = metrics.full_reference(image, image)
    assert set(values) == set(metrics.METRIC_DIRECTIONS)
    assert metrics.better("psnr", 30, 20) and not metrics.better("psnr", 20, 30)
    assert metrics.better("delta_e", 2, 5) and not metrics.better("mae", 0.2, 0.1)
    assert metrics.better("colourfulness_ratio", 0.9, 1.3) and not metrics.better("colourfulness_ratio", 0.5, 1.5)
    assert not metrics.better("psnr", math.nan, 20)


@pytest.mark.parametrize("func", [metrics.psnr, metrics.ssim, metrics.mae, metrics.delta_e])
def test_bad_inputs_are_refused(func):
    image = _photo()
    with pytest.raises(ValueError, match="shape"):
        func(image, image[:-1])
    with pytest.raises(ValueError, match="uint8"):
        func(image.astype(np.float32), image)
