"""restore.inference: the render-size pass and its transfer back to full resolution.

Most tests drive `transfer` with synthetic arrays and stand-in "models" whose behaviour is known (invert,
desaturate, tint, repair), so they check the transfer itself, not a random network.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skimage_data
from torch import nn

from degradations.functional import negative as film_negative
from degradations.functional import negative_bw as film_negative_bw
from restore.arch import DenoiserSpec
from restore.baselines import hole_mask, inpaint_holes, negative_lut
from restore.imaging import to_tensor
from restore.inference import (
    NEGATIVE_COARSE_CORRELATION,
    NEGATIVE_CORRELATION,
    Restorer,
    _luma_noise_sigma,
    chroma_spread,
    coarse_correlation,
    film_base_ratios,
    fit_tone_curve,
    has_orange_base,
    luma_correlation,
    remove_impulses,
    render_shape,
    transfer,
)
from restore.metrics import psnr
from restore.weights import WeightsError

HEIGHT, WIDTH = 400, 600
SMALL = (90, 135)   # render-size (h, w): 0.225x, so 3-pixel texture is invisible there


def _scene(seed: int = 0) -> np.ndarray:
    """Gray positive: smooth gradient, a flat region, and fine 3-px texture only in the right half."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    base = 40 + 150 * x / WIDTH + 30 * np.sin(y / 45.0)
    texture = 25 * np.sin(2 * np.pi * x / 3.0) * np.sin(2 * np.pi * y / 3.0) * (x > WIDTH / 2)
    gray = np.clip(base + texture, 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def _small(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image, (SMALL[1], SMALL[0]), interpolation=cv2.INTER_AREA)


def _high_pass(image: np.ndarray) -> np.ndarray:
    gray = image[..., 0].astype(np.float32) if image.ndim == 3 else image.astype(np.float32)
    return gray - cv2.GaussianBlur(gray, (0, 0), 2.0)


def _ycc(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb).astype(np.float32)


def test_transfer_inverts_a_negative_and_keeps_detail_the_render_size_never_saw():
    positive = _scene()
    negative = 255 - positive
    small_in = _small(negative)
    restored, info = transfer(negative, small_in, 255 - small_in)      # stand-in model: inverts
    assert info["input_type"] == "negative" and info["tone_correlation"] < -0.9
    assert np.abs(restored.astype(int) - positive).mean() < 3.0
    # The 3-px texture is averaged away at render size: only the tone-curve transfer can bring it back.
    detail_in, detail_out = _high_pass(positive)[:, WIDTH // 2 + 10:], _high_pass(restored)[:, WIDTH // 2 + 10:]
    assert np.corrcoef(detail_in.ravel(), detail_out.ravel())[0, 1] > 0.9
    assert detail_out.std() > 0.7 * detail_in.std()
    upsampled_only = cv2.resize(255 - small_in, (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)
    assert _high_pass(upsampled_only)[:, WIDTH // 2 + 10:].std() < 0.2 * detail_in.std()


def test_transfer_carries_a_contrast_stretch_to_full_resolution():
    faded = (60 + _scene().astype(np.float32) * 0.5).astype(np.uint8)        # levels 60..187
    small_in = _small(faded)
    stretched = np.clip((small_in.astype(np.float32) - 60) * 2.0, 0, 255).astype(np.uint8)
    restored, info = transfer(faded, small_in, stretched, tones="network")
    assert info["input_type"] == "bw"
    expected = np.clip((faded.astype(np.float32) - 60) * 2.0, 0, 255)
    assert np.abs(restored.astype(np.float32) - expected).mean() < 4.0
    # by default a print keeps its own tones: the network's stretch is not taken
    kept, _ = transfer(faded, small_in, stretched)
    assert np.abs(kept.astype(np.float32) - faded).mean() < 2.0


@pytest.mark.parametrize("make", [_scene, lambda: _colourful()], ids=["bw", "colour"])
def test_a_network_that_darkens_does_not_darken_a_positive_by_default(make):
    photo = make()
    small_in = _small(photo)
    darker = (small_in.astype(np.float32) * 0.7).astype(np.uint8)            # a global tone shift, no repair
    kept, info = transfer(photo, small_in, darker)
    assert info["damage_fraction"] < 0.01
    luma = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY).astype(np.float32)
    assert np.abs(cv2.cvtColor(kept, cv2.COLOR_RGB2GRAY) - luma).mean() < 2.0
    shifted, _ = transfer(photo, small_in, darker, tones="network")
    assert cv2.cvtColor(shifted, cv2.COLOR_RGB2GRAY).mean() < luma.mean() - 15
    with pytest.raises(ValueError, match="tones"):
        transfer(photo, small_in, darker, tones="auto")


def test_transfer_repairs_a_hole_from_the_network_and_keeps_detail_elsewhere():
    clean = _scene()
    damaged = clean.copy()
    damaged[150:230, 380:460] = 255                                 # a hole in the textured half
    small_in = _small(damaged)
    restored, info = transfer(damaged, small_in, _small(clean))     # stand-in model: knows the clean photo
    assert info["damage_fraction"] > 0
    hole = (slice(160, 220), slice(390, 450))
    assert np.abs(restored[hole].astype(int) - clean[hole]).mean() < 25    # was ~100 in the damaged input
    assert np.abs(damaged[hole].astype(int) - clean[hole]).mean() > 80
    away = (slice(20, 120), slice(330, 580))
    assert np.abs(restored[away].astype(int) - clean[away]).mean() < 4.0


def test_grain_is_reduced_but_a_clean_photo_is_left_alone():
    clean = _scene()
    rng = np.random.default_rng(0)
    noisy = np.clip(clean + rng.normal(0, 12, clean.shape[:2])[..., None], 0, 255).astype(np.uint8)
    restored, info = transfer(noisy, _small(noisy), _small(noisy))           # stand-in model: identity
    assert 9 < info["coring"] < 15
    assert np.abs(restored.astype(int) - clean).mean() < 0.8 * np.abs(noisy.astype(int) - clean).mean()
    untouched, clean_info = transfer(clean, _small(clean), _small(clean))
    assert clean_info["coring"] == 0.0 and np.abs(untouched.astype(int) - clean).mean() < 0.6


def _colourful(seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    blobs = rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)
    return cv2.resize(blobs, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)


def test_colour_photo_keeps_its_own_colours():
    photo = _colourful()
    small_in = _small(photo)
    grayish = np.repeat(cv2.cvtColor(small_in, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)  # model desaturates
    restored, info = transfer(photo, small_in, grayish)
    assert info["input_type"] == "color"
    chroma_error = np.abs(_ycc(restored)[..., 1:] - _ycc(photo)[..., 1:]).mean()
    assert chroma_error < 2.0
    forced, forced_info = transfer(photo, small_in, grayish, input_type="bw")   # forced bw: model's chroma
    assert forced_info["input_type"] == "bw"
    assert np.abs(_ycc(forced)[..., 1:] - 128).mean() < 2.0


def test_colour_stain_is_repaired_even_when_luminance_is_unchanged():
    clean = _colourful()
    stained = _ycc(clean)
    stained[150:250, 250:370, 1] = 200                               # a magenta stain: Cr only
    stained = cv2.cvtColor(np.clip(stained, 0, 255).astype(np.uint8), cv2.COLOR_YCrCb2RGB)
    small_in = _small(stained)
    restored, info = transfer(stained, small_in, _small(clean))     # stand-in model: knows the clean photo
    assert info["input_type"] == "color"
    stain = (slice(165, 235), slice(265, 355))
    assert np.abs(_ycc(restored)[stain][..., 1] - _ycc(clean)[stain][..., 1]).mean() < 6
    assert np.abs(_ycc(stained)[stain][..., 1] - _ycc(clean)[stain][..., 1]).mean() > 40
    away = (slice(20, 120), slice(20, 200))
    assert np.abs(_ycc(restored)[away][..., 1:] - _ycc(stained)[away][..., 1:]).mean() < 1.0  # own colours


def test_a_colour_photos_untouched_pixels_are_its_own_exactly():
    clean = _colourful()
    stained = clean.copy()
    stained[150:250, 250:370] = (235, 230, 225)                       # a paper-white hole
    small = _small(stained)
    holes = hole_mask(small)                                           # as `Restorer` finds it
    restored, info = transfer(stained, small, _small(clean), holes=holes)  # stand-in model: knows the clean photo
    assert info["input_type"] == "color" and 0 < info["damage_fraction"] < 0.2
    away = (slice(0, 100), slice(0, 200))
    assert np.array_equal(restored[away], stained[away])             # no 8-bit YCrCb round trip outside it
    hole = (slice(170, 230), slice(270, 350))                        # repaired (half network, half fill)
    assert np.abs(restored[hole].astype(int) - clean[hole]).mean() < 0.5 * np.abs(stained[hole].astype(int)
                                                                                  - clean[hole]).mean()


def test_a_holes_repair_is_half_the_networks_half_a_classical_fill_and_stops_at_the_mask():
    photo = _small(_colourful())                                        # render size: no resizing
    holes = np.zeros(photo.shape[:2], np.uint8)
    holes[30:60, 40:80] = 255
    painted = photo.copy()
    painted[holes > 0] = 0                                              # the network fills the hole with black
    restored, info = transfer(photo, photo, painted, holes=holes)
    assert info["input_type"] == "color"
    expected = (painted.astype(int) + inpaint_holes(photo, holes)) / 2
    inner = (slice(32, 58), slice(42, 78))
    assert np.abs(restored[inner] - expected[inner]).mean() < 3.0
    # the pixels around the hole are the photo's own, exactly
    ring = (cv2.dilate(holes, np.ones((5, 5), np.uint8)) > 0) & (holes == 0)
    assert np.array_equal(restored[ring], photo[ring])


@pytest.mark.parametrize("colour", [True, False])
def test_a_networks_large_departure_is_not_damage_on_a_colour_photo(colour):
    photo = (_colourful() * 0.4 + 100).astype(np.uint8) if colour else _scene()     # mid-tones
    small_in = _small(photo)
    y, x = np.mgrid[0:SMALL[0], 0:SMALL[1]]
    disc = (y - 45) ** 2 + (x - 60) ** 2 < 20**2
    ycc = _ycc(small_in)
    ycc[disc, 0] -= 90                                                  # a large area far darker, same colours
    darker = cv2.cvtColor(np.clip(ycc, 0, 255).astype(np.uint8), cv2.COLOR_YCrCb2RGB)
    restored, info = transfer(photo, small_in, darker)
    if colour:      # its holes are the holes mask's to find: the photo is kept
        assert info["damage_fraction"] == 0 and np.array_equal(restored, photo)
    else:           # a print has no holes mask: a departure this large is a hole, taken from the network
        assert info["damage_fraction"] > 0.02


def _red_box_photo() -> tuple[np.ndarray, tuple[slice, slice]]:
    """A colour photo with a small saturated red box (a boat's sail, a sign) and its box's slices."""
    photo = _colourful().astype(np.float32) * 0.5 + 64            # muted colours around
    box = (slice(170, 230), slice(280, 350))
    photo[box] = (200, 40, 30)
    return photo.astype(np.uint8), box


def _with_box_chroma(small: np.ndarray, box: tuple[slice, slice], chroma) -> np.ndarray:
    """`small` (render size) with the render-size box's Cr/Cb replaced by `chroma(cr_cb)` (offsets from 128)."""
    ycc = _ycc(small)
    rows = slice(round(box[0].start * SMALL[0] / HEIGHT), round(box[0].stop * SMALL[0] / HEIGHT))
    cols = slice(round(box[1].start * SMALL[1] / WIDTH), round(box[1].stop * SMALL[1] / WIDTH))
    ycc[rows, cols, 1:] = 128 + chroma(ycc[rows, cols, 1:] - 128)
    return cv2.cvtColor(np.clip(ycc, 0, 255).astype(np.uint8), cv2.COLOR_YCrCb2RGB)


@pytest.mark.parametrize("muted, kept", [
    (lambda chroma: chroma * 0.3, True),                           # the network's muting: same hue, less of it
    (lambda chroma: chroma * 0.0 + np.array([-20.0, 25.0]), False),  # a repair: another hue altogether
    (lambda chroma: chroma * 0.05, False),                         # a repair: the colour removed
])
def test_muted_saturated_object_keeps_its_colour_but_a_hue_change_is_taken(muted, kept):
    photo, box = _red_box_photo()
    small_in = _small(photo)
    out = _with_box_chroma(small_in, box, muted)
    restored, info = transfer(photo, small_in, out)
    assert info["input_type"] == "color"
    inside = (slice(box[0].start + 12, box[0].stop - 12), slice(box[1].start + 12, box[1].stop - 12))
    own = np.abs(_ycc(restored)[inside][..., 1:] - _ycc(photo)[inside][..., 1:]).mean()
    taken = np.abs(_ycc(restored)[inside][..., 1:] - cv2.resize(
        _ycc(out), (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)[inside][..., 1:]).mean()
    assert (own < 3.0) if kept else (taken < 3.0 and own > 15.0)


def test_black_and_white_photo_takes_the_networks_colours():
    photo = _scene()
    small_in = _small(photo)
    tinted = np.clip(small_in.astype(int) + np.array([30, 0, -30]), 0, 255).astype(np.uint8)
    restored, info = transfer(photo, small_in, tinted)
    assert info["input_type"] == "bw"
    red_minus_blue = restored[..., 0].astype(int) - restored[..., 2].astype(int)
    assert 45 < np.median(red_minus_blue) < 75
    assert restored.shape == photo.shape


@pytest.mark.parametrize("name, make, colour", [
    ("gray", lambda: _scene(), False),
    ("sepia", lambda: np.clip(_scene() * np.array([1.0, 0.82, 0.6]) + np.array([10, 5, 0]), 0, 255), False),
    ("colour", lambda: _colourful(), True),
])
def test_chroma_spread_separates_colour_from_toned_monochrome(name, make, colour):
    spread = chroma_spread(make().astype(np.uint8))
    assert (spread > 4.0) == colour, (name, spread)


def test_tone_curve_is_monotone_and_follows_the_direction():
    rng = np.random.default_rng(0)
    source = rng.integers(20, 230, 20000).astype(np.uint8)
    noisy_increasing = source * 0.8 + 30 + rng.normal(0, 15, source.size)
    lut, correlation = fit_tone_curve(source, noisy_increasing)
    assert correlation > 0.9 and np.all(np.diff(lut) >= -1e-4)
    assert abs(lut[128] - (128 * 0.8 + 30)) < 4
    assert lut[255] > lut[230] and lut[0] < lut[20]                 # extrapolated, not clipped flat
    lut, correlation = fit_tone_curve(source, 255.0 - source + rng.normal(0, 15, source.size))
    assert correlation < -0.9 and np.all(np.diff(lut) <= 1e-4)
    forced, _ = fit_tone_curve(source, 255.0 - source, direction=1)  # forced increasing cannot invert
    assert np.all(np.diff(forced) >= -1e-4)


def test_remove_impulses_fixes_salt_and_pepper_but_not_thin_lines():
    image = _scene()[:100, :100].copy()
    image[:, 50] = 0                                                 # a one-pixel line
    for row, col, value in ((10, 10, 255), (30, 70, 0), (80, 20, 255), (60, 85, 0)):
        image[row, col] = value
    repaired, count = remove_impulses(image)
    assert count == 4
    assert np.all(repaired[:, 50] == 0)
    assert abs(int(repaired[10, 10, 0]) - int(_scene()[10, 10, 0])) < 15
    assert image[10, 10, 0] == 255                                   # the input was not modified


class _Invert(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -x


class _Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _InvertsOrange(nn.Module):
    """Stand-in for a network that recognises colour negatives by their orange base: inverts an image whose
    red clearly exceeds its blue, keeps any other."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -x if float(x[:, 0].mean() - x[:, 2].mean()) > 0.2 else x


def _orange(image: np.ndarray) -> np.ndarray:
    return (image.astype(np.float32) * np.array([1.0, 0.75, 0.5], np.float32)).astype(np.uint8)


def _colour_film(positive: np.ndarray) -> np.ndarray:
    """A colour negative of `positive` as film makes it (log response, orange base), which a plain inversion
    is not: the film-slope inversion takes a negative's dark highlights for dense film."""
    return film_negative(positive, base=(0.86, 0.44, 0.17), gamma=(0.55, 0.6, 0.65), exposure=1.0,
                         flare=0.01, gain=1.0)


def test_restorer_keeps_odd_sizes_and_checks_a_negative_on_its_inverted_copy():
    positive = np.ascontiguousarray(_scene()[:217, :333])
    negative = _orange(255 - positive)
    restorer = Restorer(model=_InvertsOrange(), device="cpu", render_factor=8)     # 128 px long side
    restored, info = restorer.restore_array(negative)
    assert restored.shape == positive.shape
    assert info["input_type"] == "negative"
    # the network inverted it, so a second pass on the film-base-corrected inverted copy confirmed it
    assert [p["name"] for p in info["passes"]] == ["render", "inverted"]
    assert info["passes"][0]["shape"] == (96, 128)
    assert render_shape(217, 333, 8) == info["render_size"] == (83, 128)
    # restored as the positive that film-base removal makes of it, its levels read on the render-size copy:
    # neutral, not orange or blue
    levels_from = cv2.resize(negative, (128, 83), interpolation=cv2.INTER_AREA)
    levels = negative_lut(levels_from)
    assert np.abs(restored.astype(int) - cv2.LUT(negative, levels)).mean() < 4.0
    assert np.abs(restored[..., 0].astype(int) - restored[..., 2]).mean() < 3.0
    assert np.corrcoef(restored[..., 1].ravel().astype(float), positive[..., 1].ravel().astype(float))[0, 1] > 0.95


class _InvertsOrangeTones(nn.Module):
    """Like `_InvertsOrange`, but as a U-Net that inverts only in part: it turns the coarse tones over and
    lets the fine detail through its skip connections with its sign kept (output = detail - tones)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float(x[:, 0].mean() - x[:, 2].mean()) <= 0.2:
            return x
        tones = torch.nn.functional.avg_pool2d(x, 9, stride=1, padding=4, count_include_pad=False)
        return (x - tones) - tones


def _detailed_scene() -> np.ndarray:
    """Gray positive whose fine texture carries as much contrast as its tones (a busy street, foliage)."""
    y, x = np.mgrid[0:217, 0:333].astype(np.float32)
    tones = 70 + 110 * x / 333
    texture = 60 * np.sign(np.sin(2 * np.pi * x / 4.0) * np.sin(2 * np.pi * y / 4.0))
    gray = np.clip(tones + texture, 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def test_a_negative_inverted_only_in_its_tones_is_found_at_the_coarse_scale():
    positive = _detailed_scene()
    negative = _colour_film(positive)
    network = _InvertsOrangeTones()
    restorer = Restorer(model=network, device="cpu", render_factor=32)      # the photo fits: no resizing
    first_pass = restorer.run_network(negative)
    # at full size the kept detail hides the inversion; at 32 px the tones show it
    assert luma_correlation(negative, first_pass) > NEGATIVE_CORRELATION
    assert coarse_correlation(negative, first_pass) < NEGATIVE_COARSE_CORRELATION
    restored, info = restorer.restore_array(negative)
    assert info["input_type"] == "negative"
    assert [p["name"] for p in info["passes"]] == ["render", "inverted"]
    coarse = [cv2.resize(image, (33, 22), interpolation=cv2.INTER_AREA)[..., 1].ravel().astype(float)
              for image in (restored, positive)]
    assert np.corrcoef(*coarse)[0, 1] > 0.9
    # the positive itself stays a positive, in one pass
    assert len(restorer.restore_array(positive)[1]["passes"]) == 1


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
def test_a_positives_highlights_are_not_an_orange_film_base(name):
    positive = getattr(skimage_data, name)()
    assert not has_orange_base(positive)
    assert not has_orange_base(np.repeat(cv2.cvtColor(positive, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2))
    assert not has_orange_base(255 - positive)                  # a plain inversion has no orange mask


@pytest.mark.parametrize("name", ["astronaut", "coffee"])      # chelsea has no deep shadow: no clear film
def test_the_orange_mask_of_colour_film_is_found_in_its_clearest_parts(name):
    # the evaluation's mid-range colour film
    negative = film_negative(getattr(skimage_data, name)(), base=(0.86, 0.44, 0.17), gamma=(0.55, 0.6, 0.65),
                             exposure=1.0, flare=0.01, gain=1.0)
    green, blue = film_base_ratios(negative)
    assert blue < 0.3 and blue < green < 0.7
    assert has_orange_base(negative)


def _is_orange(x: torch.Tensor) -> bool:
    return float(x[:, 0].mean() - x[:, 2].mean()) > 0.2


class _InvertsBand(nn.Module):
    """A network that half-recognises negatives: on an image it `recognises` (by default an orange one, a
    colour negative) it inverts a left band only (`1 / parts` of the width), so the tones of its output still
    correlate with its input; any other image it keeps."""

    def __init__(self, parts: int = 5, recognises: Callable[[torch.Tensor], bool] = _is_orange):
        super().__init__()
        self.parts = parts
        self.recognises = recognises

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.recognises(x):
            return x
        out = x.clone()
        band = x.shape[-1] // self.parts
        out[..., :band] = -x[..., :band]
        return out


def test_a_black_and_white_negative_the_network_turns_over_only_a_little_is_still_asked_about():
    # as the shipped network does with one eval negative (live1_bikes: tones correlating +0.33 with the scan)
    y, x = np.mgrid[0:217, 0:333].astype(np.float32)
    gray = np.clip(40 + 180 * x / 333 + 25 * np.sin(y / 9.0), 0, 255).astype(np.uint8)
    positive = np.repeat(gray[..., None], 3, axis=2)
    negative = film_negative_bw(positive, base=(0.9, 0.9, 0.92), gamma=0.6, exposure=1.0, flare=0.01, gain=1.0)
    # the network knows the negative by its bright left (the scene brightens to the right)
    network = _InvertsBand(8, recognises=lambda x: float(x[..., : x.shape[-1] // 2].mean()
                                                          - x[..., x.shape[-1] // 2:].mean()) > 0.1)
    restorer = Restorer(model=network, device="cpu", render_factor=32)
    assert 0.25 < coarse_correlation(negative, restorer.run_network(negative)) < NEGATIVE_COARSE_CORRELATION
    restored, info = restorer.restore_array(negative)
    assert info["input_type"] == "negative"
    assert [p["name"] for p in info["passes"]] == ["render", "inverted"]
    assert np.corrcoef(restored[..., 1].ravel().astype(float), positive[..., 1].ravel().astype(float))[0, 1] > 0.9
    # the positive, which the network keeps, is restored in one pass
    assert len(restorer.restore_array(positive)[1]["passes"]) == 1


@pytest.mark.parametrize("parts", [8, 12])      # weakly or strongly correlated with the scan, never inverted
def test_an_orange_base_asks_about_a_negative_the_network_inverted_only_in_part(parts):
    positive = np.ascontiguousarray(_colourful()[:217, :333])
    negative = _colour_film(positive)
    restorer = Restorer(model=_InvertsBand(parts), device="cpu", render_factor=32)
    correlation = coarse_correlation(negative, restorer.run_network(negative))
    assert correlation > NEGATIVE_COARSE_CORRELATION
    restored, info = restorer.restore_array(negative)
    assert info["input_type"] == "negative"
    assert [p["name"] for p in info["passes"]] == ["render", "inverted"]
    assert np.corrcoef(restored[..., 1].ravel().astype(float), positive[..., 1].ravel().astype(float))[0, 1] > 0.9
    # without the orange base the same partial inversion is not asked about: a positive in one pass
    plain = 255 - positive
    assert not has_orange_base(plain)
    assert [p["name"] for p in restorer.restore_array(plain)[1]["passes"]] == ["render"]


class _Smooths(nn.Module):
    """A network that changes whatever it is shown the same way: a light blur, no inversion."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)


def test_an_orange_lit_positive_that_the_network_changes_no_more_than_its_inversion_stays_a_positive():
    positive = np.ascontiguousarray(_orange(_colourful()[:217, :333]))      # warm light, deep orange highlights
    assert has_orange_base(positive)
    restored, info = Restorer(model=_Smooths(), device="cpu", render_factor=32).restore_array(positive)
    assert [p["name"] for p in info["passes"]] == ["render", "inverted"]     # asked, and answered: a positive
    assert info["input_type"] == "color"
    assert np.abs(restored.astype(int) - positive).mean() < 4.0


def _with_dust(image: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """Four flat blobs of one colour (dust, missing emulsion), ~3% of a 217x333 photo."""
    damaged = image.copy()
    for row, col in ((30, 40), (120, 200), (60, 280), (170, 90)):
        cv2.circle(damaged, (col, row), 13, colour, -1)
    return damaged


class _RecoloursBox(nn.Module):
    """Keeps what it is shown except a box in the middle, whose red and blue it swaps (a hue change)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        out = x.clone()
        box = (slice(None), slice(None), slice(height // 3, 2 * height // 3), slice(width // 3, 2 * width // 3))
        out[box] = x[box][:, [2, 1, 0]]
        return out


@pytest.mark.parametrize("input_type", ["color", "negative"])
def test_a_colour_change_is_taken_as_a_repair_on_a_positive_but_not_on_a_negatives_inversion(input_type):
    # On a negative the network's colours are its reading of an inversion, not a repair: where it changes a
    # hue, the inversion's own colours stay (restore-eval: a yellow dress recoloured on a clean negative).
    photo = _colourful()
    scan = photo if input_type == "color" else _colour_film(photo)
    restorer = Restorer(model=_RecoloursBox(), device="cpu", render_factor=8, input_type=input_type)
    restored, info = restorer.restore_array(scan)
    assert info["input_type"] == input_type
    own = photo if input_type == "color" else cv2.LUT(scan, negative_lut(_small(scan)))
    swapped = own[..., [2, 1, 0]]
    centre = (slice(170, 230), slice(250, 350))
    changed = np.abs(_ycc(own)[centre][..., 1:] - _ycc(swapped)[centre][..., 1:]).mean(axis=2) > 40
    assert changed.sum() > 500                                      # the box's hues do change by much
    kept = np.abs(_ycc(restored)[centre][..., 1:] - _ycc(own)[centre][..., 1:]).mean(axis=2)[changed].mean()
    taken = np.abs(_ycc(restored)[centre][..., 1:] - _ycc(swapped)[centre][..., 1:]).mean(axis=2)[changed].mean()
    if input_type == "color":
        assert taken < kept
    else:
        assert kept < 8 < taken


def test_dust_on_a_colour_negative_neither_tints_it_nor_stays():
    negative = _colour_film(np.ascontiguousarray(_colourful()[:217, :333]))
    damaged = _with_dust(negative, (235, 235, 235))
    dust = (damaged != negative).any(axis=2)
    clean = cv2.LUT(negative, negative_lut(negative)).astype(int)       # the undamaged negative's positive

    def error(image: np.ndarray, where: np.ndarray) -> float:
        return float(np.abs(image.astype(int) - clean)[where].mean())

    # read plainly, the bright dust takes the film base: the orange mask is not divided out anywhere
    assert error(cv2.LUT(damaged, negative_lut(damaged)), ~dust) > 10
    restorer = Restorer(model=_InvertsOrange(), device="cpu", render_factor=32)     # fits: no resizing
    restored, info = restorer.restore_array(damaged)
    assert info["input_type"] == "negative"
    assert error(restored, ~dust) < 2
    # a network that repairs nothing still gets the dust inpainted, and its output is taken there
    assert error(restored, dust) < 0.2 * error(cv2.LUT(damaged, negative_lut(negative)), dust)


def test_holes_in_a_colour_photo_are_inpainted_even_by_a_network_that_repairs_nothing():
    photo = np.ascontiguousarray(_colourful()[:217, :333])
    damaged = _with_dust(photo, (200, 200, 200))
    holes = (damaged != photo).any(axis=2)
    restored, info = Restorer(model=_Identity(), device="cpu", render_factor=32).restore_array(damaged)
    assert info["input_type"] == "color"
    error = np.abs(restored.astype(int) - photo)
    assert error[holes].mean() < 0.2 * np.abs(damaged.astype(int) - photo)[holes].mean()
    assert error[~holes].mean() < 1.0


def test_a_flat_area_of_a_black_and_white_print_is_not_taken_for_a_hole():
    # on black-and-white, flat chroma is everywhere, so the colour hole detector flags plain flat areas
    rng = np.random.default_rng(0)
    scan = np.clip(_scene()[:217, :333].astype(int) + rng.integers(-6, 7, (217, 333, 3)), 0, 255)  # grain
    print_ = _with_dust(scan.astype(np.uint8), (200, 200, 200))
    assert hole_mask(print_).any()
    restored, info = Restorer(model=_Identity(), device="cpu", render_factor=32).restore_array(print_)
    assert info["input_type"] == "bw"
    assert np.abs(restored.astype(int) - print_).max(axis=2).mean() < 1.5


class _Blurs(nn.Module):
    """A weak network: renders every edge soft."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x, 7, stride=1, padding=3, count_include_pad=False)


def test_edges_a_network_renders_differently_are_not_damage_of_a_colour_photo():
    # muted colours under a checkerboard of bright and dark tiles: sharp brightness edges, a scan's faint noise
    y, x = np.mgrid[0:217, 0:333]
    tiles = np.where(((x // 37) + (y // 31)) % 2 == 0, 1.6, 0.6)[..., None]
    muted = _colourful()[:217, :333].astype(np.float32) * 0.35 + 0.65 * 128
    noise = np.random.default_rng(0).normal(0, 2, muted.shape)
    photo = np.clip(muted * tiles + noise, 0, 255).astype(np.uint8)
    restorer = Restorer(model=_Blurs(), device="cpu", render_factor=32)
    restored, info = restorer.restore_array(photo)
    assert info["input_type"] == "color" and info["damage_fraction"] == 0
    assert np.abs(restored.astype(int) - photo).mean() < 1.0
    # on a black-and-white photo the same edges still read as damage the network repaired (scratches do)
    gray = np.repeat(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    assert restorer.restore_array(gray)[1]["damage_fraction"] > 0


def test_a_noisy_negative_is_denoised_before_it_is_inverted():
    negative = _orange(255 - np.ascontiguousarray(_colourful()[:217, :333]))
    noise = np.random.default_rng(0).normal(0, 12, negative.shape)
    noisy = np.clip(negative + noise, 0, 255).astype(np.uint8)
    restorer = Restorer(model=_InvertsOrange(), device="cpu", render_factor=32)
    restored, info = restorer.restore_array(noisy)
    assert info["input_type"] == "negative" and info["denoised_sigma"] > 6 and info["scan_denoised"]
    # the inversion of the denoised scan is asked for again
    assert [p["name"] for p in info["passes"]] == ["render", "inverted", "render"]
    clean = cv2.LUT(negative, negative_lut(negative)).astype(int)
    plain = cv2.LUT(noisy, negative_lut(noisy))
    assert np.abs(restored - clean).mean() < 0.6 * np.abs(plain - clean).mean()
    # a clean negative is not touched by the denoiser
    info = restorer.restore_array(negative)[1]
    assert info["denoised_sigma"] <= 6 and not info["scan_denoised"]


class _RecordsBlur(nn.Module):
    """Stand-in denoiser: a 3x3 mean (blur False: none) that keeps what it was shown (its unflipped copy)."""

    spec = DenoiserSpec(channels=(4, 8))

    def __init__(self, blur: bool = True):
        super().__init__()
        self.blur = blur
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x[0].detach().clone())
        if not self.blur:
            return x
        return torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)


def test_a_noisy_negative_scan_as_it_came_goes_to_the_negative_denoiser():
    negative = _colour_film(np.ascontiguousarray(_colourful()[:217, :333]))
    noisy = np.clip(negative + np.random.default_rng(0).normal(0, 10, negative.shape), 0, 255).astype(np.uint8)
    general, scans = _RecordsBlur(), _RecordsBlur()
    restorer = Restorer(model=_InvertsOrange(), device="cpu", render_factor=32, denoiser=general,
                        negative_denoiser=scans)
    restored, info = restorer.restore_array(noisy)
    assert info["input_type"] == "negative" and info["denoiser_ran"] and info["scan_denoised"]
    assert len(general.seen) == 1 and len(scans.seen) == 1
    # both were shown the scan as it came, not the negative denoiser what the other one made of it
    for seen in (general.seen[0], scans.seen[0]):
        torch.testing.assert_close(seen[:, :217, :333], to_tensor(noisy))
    assert [p["name"] for p in info["passes"]] == ["render", "inverted", "render"]
    # its result is what is inverted: a negative denoiser that takes more noise off gives a cleaner positive
    clean = cv2.LUT(negative, negative_lut(negative)).astype(int)
    plain = Restorer(model=_InvertsOrange(), device="cpu", render_factor=32, denoiser=_RecordsBlur(),
                     negative_denoiser=_RecordsBlur(blur=False)).restore_array(noisy)[0]
    assert np.abs(restored - clean).mean() < np.abs(plain.astype(int) - clean).mean()
    # forced negatives take the same path; a noisy colour print never reaches the negative denoiser
    forced = _RecordsBlur()
    Restorer(model=_Identity(), device="cpu", render_factor=32, input_type="negative", denoiser=_RecordsBlur(),
             negative_denoiser=forced).restore_array(noisy)
    assert len(forced.seen) == 1
    positive = np.clip(_colourful()[:217, :333] + np.random.default_rng(1).normal(0, 10, negative.shape), 0, 255)
    info = restorer.restore_array(positive.astype(np.uint8))[1]
    assert info["input_type"] == "color" and info["denoiser_ran"] and len(scans.seen) == 1
    # without denoising, neither runs
    quiet = _RecordsBlur()
    info = Restorer(model=_InvertsOrange(), device="cpu", render_factor=32, denoise=False,
                    negative_denoiser=quiet).restore_array(noisy)[1]
    assert not quiet.seen and not info["denoiser_ran"]


def test_a_clean_negative_of_fine_texture_is_not_denoised():
    # fur-like texture over most of the photo, smooth colour on the left: the wavelet estimate reads the
    # texture as heavy noise, the flattest blocks show none
    photo = _colourful()[:217, :333].astype(np.float32)
    fur = cv2.GaussianBlur(np.random.default_rng(0).normal(0, 1, photo.shape[:2]).astype(np.float32), (0, 0), 0.5)
    photo[:, 60:] += (fur / fur.std() * 70)[:, 60:, None]
    negative = _colour_film(np.clip(photo, 0, 255).astype(np.uint8))
    restorer = Restorer(model=_InvertsOrange(), device="cpu", render_factor=32)
    restored, info = restorer.restore_array(negative)
    assert info["input_type"] == "negative" and info["denoised_sigma"] > 6 and not info["scan_denoised"]
    # the fur is inverted as it is, not smoothed away
    plain = cv2.LUT(negative, negative_lut(negative)).astype(np.float32)
    def texture(image: np.ndarray) -> float:
        grey = cv2.cvtColor(image.astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
        return float(np.abs(grey - cv2.blur(grey, (3, 3)))[:, 60:].mean())
    assert texture(restored) > 0.8 * texture(plain)


def test_a_clean_negative_textured_all_over_is_inverted_without_coring():
    # fine texture everywhere (fur): the scan's flattest blocks read clean, but the inversion stretches the
    # texture back to the photo's own, which the flattest blocks of the positive read as grain
    photo = _colourful()[:217, :333].astype(np.float32)
    fur = cv2.GaussianBlur(np.random.default_rng(0).normal(0, 1, photo.shape[:2]).astype(np.float32), (0, 0), 0.7)
    photo += (fur / fur.std() * 16)[..., None]
    negative = _colour_film(np.clip(photo, 0, 255).astype(np.uint8))
    restored, info = Restorer(model=_InvertsOrange(), device="cpu", render_factor=32).restore_array(negative)
    assert info["input_type"] == "negative" and info["noise_sigma"] < 5 and info["coring"] == 0
    plain = cv2.LUT(negative, negative_lut(negative))
    def texture(image: np.ndarray) -> float:
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
        return float(np.abs(grey - cv2.blur(grey, (3, 3))).mean())
    assert texture(restored) > 0.95 * texture(plain)        # cored, it kept half of it


def test_texture_filling_a_colour_negative_is_not_taken_for_noise():
    # fine texture the same in every channel (a lawn) reads like noise in the luminance's flattest blocks;
    # noise, in each channel on its own, reads in the chroma too
    negative = _colour_film(np.ascontiguousarray(_colourful()[:217, :333])).astype(np.float32)
    rng = np.random.default_rng(0)
    lawn = cv2.GaussianBlur(rng.normal(0, 1, negative.shape[:2]).astype(np.float32), (0, 0), 0.7)
    textured = np.clip(negative + (lawn / lawn.std() * 14)[..., None], 0, 255).astype(np.uint8)
    noisy = np.clip(negative + rng.normal(0, 10, negative.shape), 0, 255).astype(np.uint8)
    assert _luma_noise_sigma(textured) > _luma_noise_sigma(noisy) > 6
    for scan, noise in ((textured, False), (noisy, True)):
        general, scans = _RecordsBlur(), _RecordsBlur()
        info = Restorer(model=_InvertsOrange(), device="cpu", render_factor=32, denoiser=general,
                        negative_denoiser=scans).restore_array(scan)[1]
        assert info["input_type"] == "negative"
        assert info["denoiser_ran"] == info["scan_denoised"] == noise
        assert len(general.seen) == len(scans.seen) == int(noise)
    # without a negative denoiser, non-local means is not run on the texture either
    info = Restorer(model=_InvertsOrange(), device="cpu", render_factor=32, denoise=False).restore_array(textured)[1]
    assert not info["scan_denoised"]


class _InvertsOrangeWarmsTheRest(nn.Module):
    """Stand-in colourizer: inverts an orange image (a colour negative), gives any other a warm tint."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _is_orange(x):
            return -x
        return x + torch.tensor([0.15, 0.0, -0.15]).view(1, 3, 1, 1)


@pytest.mark.parametrize("input_type", ["auto", "negative"])
def test_a_grey_scene_on_colour_film_keeps_its_recorded_colours(input_type):
    # colour film of a grey subject: its positive reads as grey, but an orange mask means the colours were
    # recorded, so none are made up; the same scene on black-and-white film is colourized
    scene = np.ascontiguousarray(_scene()[:217, :333])
    restorer = Restorer(model=_InvertsOrangeWarmsTheRest(), device="cpu", render_factor=32, input_type=input_type)
    restored, info = restorer.restore_array(_colour_film(scene))
    assert info["input_type"] == "negative"
    warmth = restored[..., 0].astype(float) - restored[..., 2]
    assert abs(warmth.mean()) < 3
    bw_film = 255 - scene
    colourized = Restorer(model=_InvertsOrangeWarmsTheRest(), device="cpu", render_factor=32,
                          input_type="negative").restore_array(bw_film)[0]
    assert (colourized[..., 0].astype(float) - colourized[..., 2]).mean() > 30


def test_transfer_refuses_a_holes_mask_of_another_size():
    photo = _scene()
    small = _small(photo)
    with pytest.raises(ValueError, match="holes mask"):
        transfer(photo, small, small, holes=np.zeros((10, 10), np.uint8))


def test_a_positive_the_network_keeps_takes_one_pass():
    positive = np.ascontiguousarray(_scene()[:217, :333])
    restored, info = Restorer(model=_InvertsOrange(), device="cpu", render_factor=8).restore_array(positive)
    assert info["input_type"] == "bw" and len(info["passes"]) == 1
    assert np.abs(restored.astype(int) - positive).mean() < 4.0


@pytest.mark.parametrize("input_type", ["auto", "bw"])
def test_a_network_that_inverts_everything_does_not_invert_a_print(input_type):
    # a dark print the network takes for a negative: it also inverts the inverted copy, so the photo is a positive
    positive = np.ascontiguousarray(_scene()[:217, :333])
    restored, info = Restorer(model=_Invert(), device="cpu", render_factor=8,
                              input_type=input_type).restore_array(positive)
    assert info["input_type"] == "bw" and len(info["passes"]) == 2
    assert np.abs(restored.astype(int) - positive).mean() < 4.0


def test_forced_bw_keeps_the_photos_tones_when_the_network_sees_a_negative_either_way():
    toned = np.ascontiguousarray(_orange(_scene()[:217, :333]))         # a warm-toned print
    restorer = Restorer(model=_InvertsOrange(), device="cpu", render_factor=8, input_type="bw")
    restored, info = restorer.restore_array(toned)
    assert info["input_type"] == "bw"
    luma = cv2.cvtColor(toned, cv2.COLOR_RGB2GRAY).astype(int)
    assert np.abs(cv2.cvtColor(restored, cv2.COLOR_RGB2GRAY).astype(int) - luma).mean() < 4.0
    auto = Restorer(model=_InvertsOrange(), device="cpu", render_factor=8).restore_array(toned)[1]
    assert auto["input_type"] == "negative"      # what auto-detection alone would have done


def test_forced_negative_is_inverted_even_by_a_network_that_does_not_invert():
    positive = _scene()
    restorer = Restorer(model=_Identity(), device="cpu", render_factor=8, input_type="negative")
    restored, info = restorer.restore_array(_colour_film(positive))
    assert info["input_type"] == "negative"
    # per-channel levels also stretch the range: compare after normalising both
    correlation = np.corrcoef(restored[..., 0].ravel().astype(float), positive[..., 0].ravel().astype(float))
    assert correlation[0, 1] > 0.95


class _ReadsNegative(nn.Module):
    """A network that reads colour negatives about right: on an orange image it answers a blurred copy of the
    true positive (the scene's tones, none of its detail); any other image it keeps."""

    def __init__(self, positive: np.ndarray):
        super().__init__()
        self.register_buffer("positive", to_tensor(cv2.GaussianBlur(positive, (0, 0), 4.0))[None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.positive.clone() if float(x[:, 0].mean() - x[:, 2].mean()) > 0.2 else x


def _low_key_scene() -> np.ndarray:
    """Colour blobs with fine texture, tone curve x^1.8: darker mid-tones than a mid-grey scene's."""
    y, x = np.mgrid[0:224, 0:320]
    texture = 15 * np.sin(2 * np.pi * x / 8.0) * np.sin(2 * np.pi * y / 8.0)
    scene = np.clip(_colourful()[:224, :320] + texture[..., None], 0, 255) / 255.0
    return np.clip(255 * scene**1.8 + 0.5, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("input_type", ["auto", "negative"])
def test_a_negatives_tones_come_from_the_films_slope_not_the_networks_reading(input_type):
    positive = _low_key_scene()                                          # fits the render size: no resizing
    negative = _colour_film(positive)
    restored, info = Restorer(model=_ReadsNegative(positive), device="cpu", render_factor=32,
                              input_type=input_type).restore_array(negative)
    assert info["input_type"] == "negative"
    # told it is a negative, no pass on the scan is needed
    assert [p["name"] for p in info["passes"]] == (["render", "inverted"] if input_type == "auto" else ["render"])
    # restored as the film-slope inversion, which beats the mid-grey prior on this low-key scene
    by_slope = cv2.LUT(negative, negative_lut(negative))
    by_mid_grey = cv2.LUT(negative, negative_lut(negative, film_gamma=None))
    assert np.abs(restored.astype(int) - by_slope).mean() < 1.0
    assert psnr(restored, positive) > psnr(by_mid_grey, positive) + 3.0
    # told it is a negative, a network that does not invert it gets the same tones
    plain, _ = Restorer(model=_Identity(), device="cpu", render_factor=32,
                        input_type="negative").restore_array(negative)
    assert np.abs(plain.astype(int) - by_slope).mean() < 1.0


def test_restore_pil_keeps_size_and_alpha_with_real_weights(tiny_weights):
    restorer = Restorer(weights=tiny_weights, device="cpu", render_factor=4)
    rng = np.random.default_rng(0)
    rgba = Image.fromarray(rng.integers(0, 256, (31, 45, 4), dtype=np.uint8), "RGBA")
    restored = restorer.restore(rgba)
    assert restored.size == (45, 31) and restored.mode == "RGBA"
    assert np.array_equal(np.asarray(restored)[..., 3], np.asarray(rgba)[..., 3])
    gray = restorer.restore(Image.fromarray(rng.integers(0, 256, (70, 33), dtype=np.uint8), "L"))
    assert gray.size == (33, 70) and gray.mode == "RGB"


def test_missing_default_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr("restore.inference.default_weights_path", lambda: tmp_path / "restore.safetensors")
    with pytest.raises(WeightsError, match="--weights"):
        Restorer(device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_refused():
    with pytest.raises(ValueError, match="cuda"):
        Restorer(model=_Identity(), device="cuda")


def test_saturation_scales_the_colours_given_to_a_black_and_white_photo():
    gray = _scene()
    small_in = _small(gray)
    tinted = small_in.astype(np.float32) * np.array([1.0, 0.9, 0.75], np.float32)   # stand-in model: sepia
    tinted = np.clip(tinted, 0, 255).astype(np.uint8)
    chroma = {}
    for saturation in (0.0, 1.0, 2.0):
        restored, info = transfer(gray, small_in, tinted, saturation=saturation)
        assert info["input_type"] == "bw"
        ycc = _ycc(restored)
        chroma[saturation] = np.abs(ycc[..., 1:] - 128).mean()
        # the photo's own luminance is kept whatever the saturation
        assert np.abs(ycc[..., 0] - _ycc(gray)[..., 0]).mean() < 2.0
    assert chroma[0.0] < 0.6 and chroma[1.0] > 3.0
    assert chroma[2.0] == pytest.approx(2 * chroma[1.0], rel=0.1)
    with pytest.raises(ValueError, match="saturation"):
        transfer(gray, small_in, tinted, saturation=-1)
    with pytest.raises(ValueError, match="saturation"):
        Restorer(model=nn.Identity(), saturation=9)


def test_saturation_leaves_a_colour_photo_its_own_colours():
    photo = _colourful()
    small_in = _small(photo)
    plain, _ = transfer(photo, small_in, small_in)
    boosted, info = transfer(photo, small_in, small_in, saturation=3.0)
    assert info["input_type"] == "color"
    assert np.array_equal(plain, boosted)
