"""The denoiser: its network, data, metric, training stage, weights, and how inference runs it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from restore import inference
from restore.arch import DenoiserSpec, DetectorSpec, build_denoiser, build_detector, count_parameters
from restore.baselines import negative_lut
from restore.config import load_config
from restore.data import IDENTITY_TABLE, DataOptions, make_noise_datasets, positive_table
from restore.inference import Restorer
from restore.train import (
    DenoiserConfig,
    both_levels_mse,
    denoised_psnr,
    export_denoiser,
    invert_negatives,
    own_levels_mse,
    positive_mse,
    through_tables,
    train_denoiser,
)
from restore.weights import WeightsError, load_denoiser, save_denoiser, save_detector

TINY = DenoiserSpec(channels=(4, 8))


def _write_images(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:40, 0:48].astype(np.float32)
    for i in range(n):
        gray = 60 + 120 * x / 48 + 30 * np.sin((y + 5 * i) / 6.0)
        image = np.stack([gray, gray * 0.8 + 20, gray * 0.6 + 40 + i], axis=2)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"photo_{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return _write_images(tmp_path_factory.mktemp("photos"), 6)


@pytest.fixture(scope="module")
def denoiser_run(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("denoiser")
    config = DenoiserConfig(spec=TINY, size=32, bs=2, valid_fraction=0.34, epochs=2, checkpoint_every=2,
                            max_zoom=1.0)
    return config, out, train_denoiser(config, photos, out, device="cpu")


def test_the_denoiser_subtracts_what_its_body_predicts():
    model = build_denoiser().eval()
    assert count_parameters(model) < 3_000_000 and DenoiserSpec().multiple == 16
    x = torch.rand(1, 3, 48, 64) * 2 - 1
    with torch.no_grad():
        assert model(x).shape == x.shape
        nn.init.zeros_(model.head.weight)
        nn.init.zeros_(model.head.bias)
        assert torch.equal(model(x), x)          # predicting no noise leaves the photo as it is
        model.head.bias.fill_(0.25)              # a constant prediction is taken off every pixel
        assert torch.allclose(model(x), x - 0.25, atol=1e-6)


def test_noise_data_pairs_a_noisy_crop_with_its_clean_one(photos):
    options = DataOptions(size=32, valid_fraction=0.34, max_zoom=1.0)
    noisy_recipes = DenoiserConfig(noise_probability=1.0, sigma_range=(20.0, 20.0), gray_probability=0.0,
                                   jpeg_probability=0.0, noise_kinds=("gaussian",)).recipes()
    train, valid = make_noise_datasets(photos, options, noisy_recipes)
    noisy, clean = train.pair(0)
    assert noisy.shape == clean.shape == (32, 32, 3)
    assert 12 < np.std(noisy.astype(float) - clean.astype(float)) < 24
    first, again = valid[0], valid[0]            # validation items are fixed
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    untouched = DenoiserConfig(noise_probability=0.0, gray_probability=0.0, jpeg_probability=0.0).recipes()
    noisy, clean = make_noise_datasets(photos, options, untouched)[1].pair(0)
    assert np.array_equal(noisy, clean)
    # a black-and-white print is the target too: the denoiser is not asked to colourize
    prints = DenoiserConfig(noise_probability=0.0, gray_probability=1.0, jpeg_probability=0.0).recipes()
    noisy, clean = make_noise_datasets(photos, options, prints)[1].pair(0)
    assert np.array_equal(noisy, clean) and np.ptp(clean.astype(int), axis=2).max() <= 60   # toned at most
    assert np.abs(clean.astype(int) - make_noise_datasets(photos, options, untouched)[1].pair(0)[1]).max() > 5
    for side in ("input", "target"):
        _write_images(photos.parent / "paired" / side, 2)
    with pytest.raises(ValueError, match="paired"):
        make_noise_datasets(photos.parent / "paired", options, untouched)


def test_negative_crops_come_with_the_table_of_their_positive(photos):
    options = DataOptions(size=32, valid_fraction=0.34, max_zoom=1.0)
    recipes = DenoiserConfig(negative_probability=1.0, negative_kinds=("color",), noise_probability=1.0,
                             sigma_range=(10.0, 10.0), gray_probability=0.0, jpeg_probability=0.0,
                             noise_kinds=("gaussian",)).recipes()
    valid = make_noise_datasets(photos, options, recipes)[1]
    noisy, clean, table = valid.sample(0)
    assert clean[..., 0].mean() > clean[..., 2].mean() + 40          # the clean crop is an orange-based scan
    assert 6 < np.std(noisy.astype(float) - clean.astype(float)) < 14   # and the noise is on the scan
    np.testing.assert_array_equal(table, positive_table(clean))
    lut = negative_lut(clean)
    # the table maps each level of the scan to its positive, in [-1, 1] units
    np.testing.assert_allclose((table + 1) * 127.5, lut[:, 0, :].T, atol=1e-3)
    x, y, t = valid[0]
    assert x.shape == y.shape == (3, 32, 32) and t.shape == (3, 256) and valid.n_inp == 1
    prints = DenoiserConfig(gray_probability=1.0).recipes()
    _, _, table = make_noise_datasets(photos, options, prints)[1].sample(0)
    np.testing.assert_array_equal(table, np.repeat(IDENTITY_TABLE[None], 3, axis=0))


def test_through_tables_maps_each_channel_by_its_levels():
    images = torch.linspace(-1.3, 1.3, 3 * 4 * 5).reshape(1, 3, 4, 5)
    identity = torch.from_numpy(np.repeat(IDENTITY_TABLE[None, None], 3, axis=1))
    torch.testing.assert_close(through_tables(images, identity), images)   # out-of-range values too
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 256, (2, 3, 6, 7)).astype(np.uint8)
    lut = np.sort(rng.integers(0, 256, (256, 1, 3)), axis=0).astype(np.uint8)[::-1].copy()  # a negative's: falling
    table = torch.from_numpy(lut[:, 0, :].T.astype(np.float32) / 127.5 - 1).expand(2, 3, 256)
    mapped = through_tables(torch.from_numpy(levels.astype(np.float32) / 127.5 - 1), table)
    expected = np.stack([cv2.LUT(np.ascontiguousarray(im.transpose(1, 2, 0)), lut).transpose(2, 0, 1)
                         for im in levels]).astype(np.float32) / 127.5 - 1
    np.testing.assert_allclose(mapped.numpy(), expected, atol=1e-5)
    half = torch.full((1, 3, 1, 1), (10.5 / 127.5) - 1, requires_grad=True)  # halfway between levels 10 and 11
    out = through_tables(half, table[:1])
    np.testing.assert_allclose(out.detach().numpy().ravel(), (lut[10, 0].astype(np.float32) + lut[11, 0]) / 255 - 1,
                               atol=1e-5)
    out.sum().backward()
    np.testing.assert_allclose(half.grad.numpy().ravel(), (lut[11, 0].astype(np.float32) - lut[10, 0]) / 1.0,
                               atol=1e-4)


def test_the_denoiser_loss_weighs_a_negatives_errors_by_its_inversion():
    target = torch.rand(2, 3, 16, 16) * 2 - 1
    error = torch.randn(2, 3, 16, 16) * 0.05
    identity = torch.from_numpy(np.repeat(IDENTITY_TABLE[None, None], 3, axis=1)).expand(2, 3, 256)
    assert float(positive_mse(target + error, target, identity)) == pytest.approx(
        float(F.mse_loss(target + error, target)), rel=1e-5)             # a print's: plain MSE
    scan = np.zeros((64, 64, 3), np.uint8)
    scan[..., 0] = np.linspace(75, 230, 64)[None]                           # an orange base's red ...
    scan[..., 1] = np.linspace(50, 170, 64)[None]
    scan[..., 2] = np.linspace(29, 115, 64)[None]                           # ... and its dense, dark blue
    table = torch.from_numpy(positive_table(scan))[None]
    dense, thin = torch.full((1, 3, 1, 1), 35 / 127.5 - 1), torch.full((1, 3, 1, 1), 100 / 127.5 - 1)
    step = 3 / 127.5                                                        # 3 levels off on the scan
    assert float(positive_mse(dense + step, dense, table)) > 4 * float(positive_mse(thin + step, thin, table))


def _negative_scan() -> np.ndarray:
    """A 48x64 colour negative's scan: an orange base over a gradient and a bright square (dense on film)."""
    y, x = np.mgrid[0:48, 0:64].astype(np.float32)
    light = 0.2 + 0.6 * x / 63 + 0.1 * np.sin(y / 5)
    light[10:25, 30:50] = 0.95
    return np.stack([75 + 155 * (1 - light), 50 + 120 * (1 - light), 29 + 86 * (1 - light)], axis=2).astype(np.uint8)


def test_invert_negatives_is_the_classical_inversion_with_each_scans_own_levels():
    scans = [_negative_scan(), np.ascontiguousarray(_negative_scan()[::-1, :, ::-1] // 2 + 40)]
    tensors = torch.stack([torch.from_numpy(s.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1) for s in scans])
    positives = invert_negatives(tensors)
    for scan, positive in zip(scans, positives):
        expected = cv2.LUT(scan, negative_lut(scan)).transpose(2, 0, 1).astype(np.float32) / 127.5 - 1
        assert np.abs(positive.numpy() - expected).max() <= 1.01 / 127.5       # the table's rounding: 1 level
    assert not torch.allclose(positives[0], positives[1], atol=0.1)


def test_the_output_levels_loss_follows_the_levels_the_output_gives():
    scan = _negative_scan()
    clean = torch.from_numpy(scan.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1)[None]
    photo = torch.rand(1, 3, 48, 64) * 2 - 1
    identity = torch.from_numpy(np.repeat(IDENTITY_TABLE[None, None], 3, axis=1))
    tables = torch.cat([torch.from_numpy(positive_table(scan))[None], identity])
    target = torch.cat([clean, photo])
    assert float(own_levels_mse(target, target, tables)) < 1e-5               # the clean scan: its own levels
    # brighter by a whole-crop amount: the clean scan's levels see it, the output's own absorb most of it
    output = torch.cat([clean * 0.95 + 0.05, photo + 0.02])
    own_loss, clean_loss = float(own_levels_mse(output, target, tables)), float(positive_mse(output, target, tables))
    print_error = float(F.mse_loss(output[1], photo[0]))
    expected = (float(F.mse_loss(invert_negatives(output[:1]), through_tables(clean, tables[:1]))) + print_error) / 2
    assert own_loss == pytest.approx(expected, rel=1e-5) and own_loss < 0.5 * clean_loss
    assert float(both_levels_mse(output, target, tables)) == pytest.approx(0.5 * (own_loss + clean_loss), rel=1e-5)
    output.requires_grad_(True)
    own_levels_mse(output, target, tables).backward()
    assert torch.isfinite(output.grad).all() and float(output.grad[0].abs().sum()) > 0


def test_the_denoiser_stage_trains_with_the_output_levels_loss_and_checks_its_name(photos, tmp_path):
    config = DenoiserConfig(spec=TINY, size=32, bs=2, valid_fraction=0.34, epochs=1, max_zoom=1.0,
                            negative_probability=1.0, negative_levels="both")
    result = train_denoiser(config, photos, tmp_path, device="cpu")
    assert result.learner.loss_func is both_levels_mse
    assert result.step == 2 and all(np.isfinite(row["train_loss"]) for row in result.history)
    _, card = load_denoiser(result.exported)                     # reported beside denoised_psnr, and kept
    assert card["validation_own_levels_psnr"] == pytest.approx(result.history[-1]["own_levels_psnr"])
    assert np.isfinite(card["validation_own_levels_psnr"])
    with pytest.raises(ValueError, match="negative_levels"):
        DenoiserConfig(negative_levels="scan")


def test_denoised_psnr_is_the_psnr_of_images_in_minus_one_to_one():
    target = torch.zeros(2, 3, 8, 8)
    # an error of 0.1 on a range of 2: mse 0.01, PSNR 10 log10(4 / 0.01)
    assert float(denoised_psnr(target + 0.1, target)) == pytest.approx(10 * np.log10(400), abs=1e-4)
    assert float(denoised_psnr(target + 0.2, target)) < float(denoised_psnr(target + 0.1, target))


def test_denoiser_stage_checkpoints_exports_and_resumes(denoiser_run, photos, tmp_path):
    config, out, result = denoiser_run
    assert result.step == 4 and result.extra["psnr"] is not None    # 4 photos, batch 2, 2 epochs
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pth")) == [
        "denoiser_step0000002.pth", "denoiser_step0000004.pth"]
    model, card = load_denoiser(result.exported)
    assert tuple(card["denoiser_spec"]["channels"]) == (4, 8) and card["training"]["step"] == 4
    assert card["dtype"] == "float16" and "validation_psnr" in card
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    trained = build_denoiser(TINY)
    trained.load_state_dict(torch.load(result.checkpoint, weights_only=True)["model"])
    with torch.no_grad():
        assert torch.allclose(model(x), trained.eval()(x), atol=5e-2)
    resumed = train_denoiser(config, photos, tmp_path, resume=out / "checkpoints" / "denoiser_step0000002.pth",
                             device="cpu")
    assert resumed.step == 4 and len(resumed.learner.recorder.losses) == 2
    with pytest.raises(ValueError, match="multiple of 4"):
        train_denoiser(DenoiserConfig(spec=TINY, size=30), photos, tmp_path, device="cpu")


def test_denoiser_stage_fine_tunes_given_weights_with_a_fresh_schedule(denoiser_run, photos, tmp_path):
    config, _, result = denoiser_run
    start = dict(load_denoiser(result.exported)[0].named_parameters())   # (batch-norm statistics move anyway)
    calm = dataclasses.replace(config, epochs=1, lr=1e-9, export=False)
    tuned = train_denoiser(dataclasses.replace(calm, init_weights=str(result.exported)), photos,
                           tmp_path / "a", device="cpu")
    assert tuned.step == 2                                   # a fresh schedule: counted from 0, not from 4
    weights = dict(tuned.learner.model.named_parameters())
    assert all(torch.allclose(weights[k].float(), v, atol=1e-4) for k, v in start.items())
    fresh = dict(train_denoiser(calm, photos, tmp_path / "b", device="cpu").learner.model.named_parameters())
    assert not all(torch.allclose(fresh[k].float(), v, atol=1e-4) for k, v in start.items())
    from_checkpoint = train_denoiser(dataclasses.replace(calm, init_weights=str(result.checkpoint)), photos,
                                     tmp_path / "c", device="cpu").learner.model.named_parameters()
    from_checkpoint = dict(from_checkpoint)
    assert all(torch.allclose(from_checkpoint[k].float(), v, atol=1e-3) for k, v in start.items())
    wider = dataclasses.replace(calm, spec=DenoiserSpec(channels=(8, 16)), init_weights=str(result.exported))
    with pytest.raises(WeightsError, match="denoiser.safetensors: does not fit the denoiser"):
        train_denoiser(wider, photos, tmp_path / "d", device="cpu")
    detector_checkpoint = tmp_path / "detector_step0000001.pth"
    torch.save({"model": {}, "step": 1, "stage": "detector"}, detector_checkpoint)
    with pytest.raises(ValueError, match="a detector checkpoint cannot start the denoiser stage"):
        train_denoiser(dataclasses.replace(calm, init_weights=str(detector_checkpoint)), photos,
                       tmp_path / "e", device="cpu")


def test_cli_denoiser_init_fine_tunes_and_names_a_missing_file(denoiser_run, photos, tmp_path):
    from typer.testing import CliRunner

    from restore.train_cli import app

    _, _, result = denoiser_run
    config = tmp_path / "tiny.toml"
    config.write_text("size = 32\nbs = 2\nepochs = 1\nvalid_fraction = 0.34\nmax_zoom = 1.0\nexport = false\n"
                      "[spec]\nchannels = [4, 8]\n")
    run = CliRunner().invoke(app, ["denoiser", "--config", str(config), "--data", str(photos), "--out",
                                   str(tmp_path / "run"), "--init", str(result.exported)])
    assert run.exit_code == 0, run.output
    assert "denoiser_step0000002.pth" in run.output
    missing = CliRunner().invoke(app, ["denoiser", "--config", str(config), "--data", str(photos), "--out",
                                       str(tmp_path / "run2"), "--init", str(tmp_path / "none.safetensors")])
    assert missing.exit_code == 1 and "none.safetensors" in missing.output and "not found" in missing.output


def test_denoiser_export_and_loading_refuse_other_networks(tmp_path):
    path = tmp_path / "detector_step0000001.pth"
    torch.save({"model": {}, "step": 1, "stage": "detector"}, path)
    with pytest.raises(ValueError, match="not a denoiser"):
        export_denoiser(path, tmp_path / "denoiser.safetensors")
    torch.manual_seed(0)
    model = build_denoiser(TINY).eval()
    saved = tmp_path / "denoiser.safetensors"
    card = save_denoiser(model, saved, TINY, {"name": "test-denoiser"})
    assert json.loads(saved.with_suffix(".json").read_text())["sha256"] == card["sha256"]
    loaded, loaded_card = load_denoiser(saved)
    assert loaded_card["name"] == "test-denoiser"
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=5e-2)
    with pytest.raises(WeightsError, match="not found"):
        load_denoiser(tmp_path / "missing.safetensors")
    detector = tmp_path / "detector.safetensors"        # same widths, but 3 channels in, not 12
    save_detector(build_detector(DetectorSpec(channels=(4, 8))), detector, DetectorSpec(channels=(4, 8)))
    with pytest.raises(WeightsError, match="detector.safetensors"):
        load_denoiser(detector)


class _BoxBlur(nn.Module):
    """Stand-in denoiser: a 3x3 mean (replicated borders), so a tiled run can be checked against one pass."""

    spec = DenoiserSpec(channels=(4, 8))

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)


class _Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _noisy_photo(sigma: float, shape=(156, 172)) -> np.ndarray:
    y, x = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    gray = 60 + 120 * x / shape[1] + 20 * np.sin(y / 15.0)
    clean = np.stack([gray, gray * 0.9 + 10, gray * 0.7 + 30], axis=2)
    noise = np.random.default_rng(1).normal(0, sigma, clean.shape) if sigma else 0
    return np.clip(clean + noise, 0, 255).round().astype(np.uint8)


def test_the_denoiser_runs_on_noisy_photos_in_tiles_without_seams(monkeypatch):
    monkeypatch.setattr(inference, "DENOISE_TILE", 64)       # 156 x 172 px: 3 x 3 tiles
    noisy = _noisy_photo(20.0)
    blur = _BoxBlur()
    sigma, denoised = Restorer(model=_Identity(), denoiser=blur, device="cpu", find_damage=False).denoise(noisy)
    assert 10 < sigma < 18 and blur.calls == 9    # the luminance's noise: 0.67 of the channels' 20
    whole = cv2.blur(noisy.astype(np.float32), (3, 3), borderType=cv2.BORDER_REPLICATE)
    assert np.abs(denoised.astype(np.float32) - whole).max() <= 1.0  # as one pass over the whole photo
    restored, info = Restorer(model=_Identity(), denoiser=_BoxBlur(), device="cpu").restore_array(noisy)
    assert info["denoiser_ran"] and info["noise_sigma"] == pytest.approx(sigma)
    plain, plain_info = Restorer(model=_Identity(), device="cpu").restore_array(noisy)
    assert not plain_info["denoiser_ran"] and not np.array_equal(restored, plain)


def test_the_denoiser_result_is_the_mean_of_its_flipped_passes():
    class _Shift(nn.Module):
        """Not mirror-symmetric: the mean of the pixels to the left and above; each flip sees other ones."""

        spec = DenoiserSpec(channels=(4, 8))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            padded = F.pad(x, (1, 0, 1, 0), mode="replicate")
            return 0.5 * (padded[..., 1:, :-1] + padded[..., :-1, 1:])

    noisy = _noisy_photo(20.0)
    restorer = Restorer(model=_Identity(), denoiser=_Shift(), device="cpu", find_damage=False)
    _, denoised = restorer.denoise(noisy)
    image = noisy.astype(np.float32)
    passes = []
    for flip_code in (None, 1, 0, -1):                       # none, left-right, up-down, both
        flipped = image if flip_code is None else cv2.flip(image, flip_code)
        padded = np.pad(flipped, ((1, 0), (1, 0), (0, 0)), mode="edge")
        out = 0.5 * (padded[1:, :-1] + padded[:-1, 1:])
        passes.append(out if flip_code is None else cv2.flip(out, flip_code))
    assert np.abs(denoised.astype(np.float32) - np.mean(passes, axis=0)).max() <= 1.0
    assert np.abs(denoised.astype(np.float32) - passes[0]).max() > 5     # not the one plain pass


def test_a_clean_photo_is_not_denoised():
    clean = _noisy_photo(0.0)
    blur = _BoxBlur()
    restorer = Restorer(model=_Identity(), denoiser=blur, device="cpu")
    restored, info = restorer.restore_array(clean)
    assert blur.calls == 0 and not info["denoiser_ran"] and info["noise_sigma"] < inference.DENOISE_MIN_SIGMA
    assert np.array_equal(restored, Restorer(model=_Identity(), device="cpu").restore_array(clean)[0])
    # texture is not noise: a fine pattern over half the photo (as a fabric or foliage) is left alone too
    y, x = np.mgrid[0:156, 0:172]
    pattern = 128 + 60 * np.sin(x * 1.3) * np.cos(y * 0.9) * (x < 86)
    texture = np.repeat(pattern.astype(np.uint8)[..., None], 3, axis=2)
    assert restorer.denoise(texture)[0] < inference.DENOISE_MIN_SIGMA and blur.calls == 0


def test_a_black_and_white_photo_stays_grey():
    class _Tints(nn.Module):
        spec = DenoiserSpec(channels=(4, 8))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.tensor([0.2, 0.0, -0.2]).view(1, 3, 1, 1)

    grey = np.repeat(_noisy_photo(20.0)[..., :1], 3, axis=2)
    sigma, out = Restorer(model=_Identity(), denoiser=_Tints(), device="cpu").denoise(grey)
    assert sigma >= inference.DENOISE_MIN_SIGMA
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    assert np.abs(out[..., 0].astype(int) - grey[..., 0]).mean() < 1.0   # the tints cancel: its own grey
    colour = _noisy_photo(20.0)
    _, tinted = Restorer(model=_Identity(), denoiser=_Tints(), device="cpu").denoise(colour)
    assert tinted[..., 0].astype(int).mean() > colour[..., 0].mean() + 15   # a colour photo takes the output
    assert Restorer(model=_Identity(), denoiser=_Tints(), device="cpu", denoise=False).denoiser is None


class _Gives(nn.Module):
    """Stand-in denoiser whose output is a given photo, whatever it is shown."""

    spec = DenoiserSpec(channels=(4, 8))

    def __init__(self, photo: np.ndarray):
        super().__init__()
        self.photo = torch.from_numpy(photo).permute(2, 0, 1).float() / 255.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = self.photo.shape[1:]
        padded = F.pad(self.photo, (0, x.shape[3] - width, 0, x.shape[2] - height))
        return padded.expand(x.shape[0], -1, -1, -1).to(x)


def test_the_chroma_noise_a_denoiser_leaves_is_smoothed_for_the_noise_it_removed(monkeypatch):
    clean = _noisy_photo(0.0)
    ycc = cv2.cvtColor(clean, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    ycc[..., 1:] += np.random.default_rng(2).normal(0, 6, ycc[..., 1:].shape)
    left = cv2.cvtColor(np.clip(ycc, 0, 255).round().astype(np.uint8), cv2.COLOR_YCrCb2RGB)  # chroma noise only

    def chroma_error(restored: np.ndarray) -> float:
        chroma = cv2.cvtColor(restored, cv2.COLOR_RGB2YCrCb)[..., 1:].astype(np.float32)
        return float(np.abs(chroma - cv2.cvtColor(clean, cv2.COLOR_RGB2YCrCb)[..., 1:]).mean())

    noisy = _noisy_photo(20.0)
    monkeypatch.setattr(inference, "DENOISE_FLIPS", ((),))   # one pass: the stand-in gives `left` unflipped
    restorer = Restorer(model=_Identity(), denoiser=_Gives(left), device="cpu", find_damage=False)
    smoothed, info = restorer.restore_array(noisy)
    assert info["denoiser_ran"] and info["input_type"] == "color" and info["coring"] == 0  # no luma noise left
    monkeypatch.setattr(inference, "CHROMA_DENOISED_PER_LEVEL", 0.0)
    kept, _ = restorer.restore_array(noisy)
    assert chroma_error(kept) > 2.0 and chroma_error(smoothed) < 0.6 * chroma_error(kept)
    luma = [cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb)[..., 0].astype(int) for image in (smoothed, kept)]
    assert np.abs(luma[0] - luma[1]).max() <= 2   # the luminance is the denoiser's either way


def test_the_shipped_denoiser_comes_with_the_shipped_weights_only(tmp_path, tiny_weights, monkeypatch):
    path = tmp_path / "denoiser.safetensors"
    save_denoiser(build_denoiser(TINY), path, TINY)
    monkeypatch.setattr("restore.inference.default_denoiser_path", lambda: path)
    assert Restorer(weights=tiny_weights, device="cpu").denoiser is not None
    assert Restorer(weights=tiny_weights, device="cpu", denoise=False).denoiser is None
    assert Restorer(model=_Identity(), device="cpu").denoiser is None   # a ready model: only a ready denoiser
    monkeypatch.setattr("restore.inference.default_denoiser_path", lambda: tmp_path / "none.safetensors")
    assert Restorer(weights=tiny_weights, device="cpu").denoiser is None  # not installed: optional
    with pytest.raises(WeightsError, match="none.safetensors"):         # named: required
        Restorer(weights=tiny_weights, device="cpu", denoiser_weights=tmp_path / "none.safetensors")


def test_the_packaged_denoiser_config_is_the_default_one():
    packaged = Path(__file__).resolve().parents[1] / "restore" / "configs" / "denoiser.toml"
    assert load_config(DenoiserConfig, packaged) == DenoiserConfig()
