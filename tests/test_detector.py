"""The damage detector: its data, loss, training stage, weights, and what inference does with its mask."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from degradations.functional import negative as negative_film
from degradations.pipeline import PipelineConfig
from restore.arch import DetectorSpec, build_detector, count_parameters
from restore.config import load_config
from restore.data import DataOptions, make_damage_datasets
from restore.inference import (
    Restorer,
    _brighter_than_around,
    components_touching,
    edge_lines_cleared,
    text_cleared,
)
from restore.train import DamageLoss, DetectorConfig, damage_f1, export_detector, train_detector
from restore.weights import WeightsError, load_detector, save_detector

TINY = DetectorSpec(channels=(4, 8))


def _write_images(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        base = np.linspace(30, 220, 48)[None, :, None] * rng.uniform(0.5, 1.0, (1, 1, 3))
        image = np.clip(base + rng.normal(0, 10, (40, 48, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"photo_{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return _write_images(tmp_path_factory.mktemp("photos"), 6)


@pytest.fixture(scope="module")
def detector_run(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("detector")
    config = DetectorConfig(spec=TINY, size=32, bs=2, valid_fraction=0.34, epochs=2, checkpoint_every=2)
    return config, out, train_detector(config, photos, out, device="cpu")


def test_the_default_detector_is_small_and_maps_each_pixel_to_a_logit():
    model = build_detector()
    assert count_parameters(model) < 1_000_000
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 40, 56)).shape == (1, 1, 40, 56)
    with pytest.raises(ValueError, match="channels"):
        DetectorSpec(channels=(8,))


def test_damage_data_marks_the_painted_damage(photos):
    options = DataOptions(size=32, valid_fraction=0.34)
    always = PipelineConfig(holes_probability=1.0, holes_area_range=(0.05, 0.1), light_probability=0.0)
    train, valid = make_damage_datasets(photos, options, always)
    image, mask = train[0]
    assert image.shape == (3, 32, 32) and mask.shape == (1, 32, 32) and mask.dtype == torch.float32
    assert 0.0 < float(mask.mean()) < 0.5 and set(mask.unique().tolist()) <= {0.0, 1.0}
    # validation items are fixed: the same crop, damage and mask every time
    first, again = valid[0], valid[0]
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    never = PipelineConfig(holes_probability=0.0)
    assert float(make_damage_datasets(photos, options, never)[1][0][1].sum()) == 0.0


def test_a_paired_folder_is_refused_for_the_detector(tmp_path):
    for side in ("input", "target"):
        _write_images(tmp_path / side, 2)
    with pytest.raises(ValueError, match="paired"):
        make_damage_datasets(tmp_path, DataOptions(size=32), PipelineConfig())


def test_damage_loss_and_f1_reward_the_right_mask():
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:4, :] = 1.0
    right, wrong = (mask * 2 - 1) * 8, (1 - mask * 2) * 8
    loss = DamageLoss(pos_weight=3.0, dice_weight=1.0)
    assert float(loss(right, mask)) < 0.05 < float(loss(wrong, mask))
    assert float(damage_f1(right, mask)) == pytest.approx(1.0)
    assert float(damage_f1(wrong, mask)) == pytest.approx(0.0, abs=1e-6)
    # damage pixels weigh pos_weight times more: missing them costs more than a false alarm on as many
    missed, alarm = right.clone(), right.clone()
    missed[..., 2, :] = -8
    alarm[..., 6, :] = 8
    plain = DamageLoss(pos_weight=3.0, dice_weight=0.0)
    assert float(plain(missed, mask)) > 2.5 * float(plain(alarm, mask))


def test_detector_stage_checkpoints_exports_and_resumes(detector_run, photos, tmp_path):
    config, out, result = detector_run
    # 4 training photos, batch 2 -> 2 steps per epoch, 2 epochs
    assert result.step == 4 and result.extra["f1"] is not None
    assert sorted(p.name for p in (out / "checkpoints").glob("*.pth")) == [
        "detector_step0000002.pth", "detector_step0000004.pth"]
    model, card = load_detector(result.exported)
    assert tuple(card["detector_spec"]["channels"]) == (4, 8) and card["training"]["step"] == 4
    assert card["dtype"] == "float16" and "validation_f1" in card
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    trained = build_detector(TINY)
    trained.load_state_dict(torch.load(result.checkpoint, weights_only=True)["model"])
    with torch.no_grad():
        assert torch.allclose(model(x), trained.eval()(x), atol=5e-2)
    resumed = train_detector(config, photos, tmp_path, resume=out / "checkpoints" / "detector_step0000002.pth",
                             device="cpu")
    assert resumed.step == 4 and len(resumed.learner.recorder.losses) == 2


def test_detector_stage_fine_tunes_given_weights(detector_run, photos, tmp_path):
    config, _, result = detector_run
    start = dict(load_detector(result.exported)[0].named_parameters())
    calm = dataclasses.replace(config, epochs=1, lr=1e-9, export=False)
    tuned = train_detector(dataclasses.replace(calm, init_weights=str(result.exported)), photos,
                           tmp_path / "a", device="cpu")
    weights = dict(tuned.learner.model.named_parameters())
    assert tuned.step == 2 and all(torch.allclose(weights[k], v, atol=1e-4) for k, v in start.items())
    fresh = dict(train_detector(calm, photos, tmp_path / "b", device="cpu").learner.model.named_parameters())
    assert not all(torch.allclose(fresh[k], v, atol=1e-4) for k, v in start.items())


def test_export_refuses_a_checkpoint_of_another_stage(tmp_path):
    path = tmp_path / "generator_step0000001.pth"
    torch.save({"model": {}, "step": 1, "stage": "generator"}, path)
    with pytest.raises(ValueError, match="not a detector"):
        export_detector(path, tmp_path / "detector.safetensors")


def test_detector_weights_round_trip_and_bad_files_name_themselves(tmp_path, tiny_weights):
    torch.manual_seed(0)
    model = build_detector(TINY).eval()
    path = tmp_path / "detector.safetensors"
    card = save_detector(model, path, TINY, {"name": "test-detector"})
    assert json.loads(path.with_suffix(".json").read_text())["sha256"] == card["sha256"]
    loaded, loaded_card = load_detector(path)
    assert loaded_card["name"] == "test-detector"
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=5e-2)
    with pytest.raises(WeightsError, match="not found"):
        load_detector(tmp_path / "missing.safetensors")
    with pytest.raises(WeightsError, match=str(tiny_weights.name)):   # a generator is not a detector
        load_detector(tiny_weights)


class _FlagsWhite(nn.Module):
    """Stand-in detector: damage wherever the photo is near white (an opaque light crack), nowhere else."""

    spec = DetectorSpec()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x.mean(dim=1, keepdim=True) > 0.9, 10.0, -10.0)


class _Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _cracked_print() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a gray print with a white crack across it, the print without it, the crack's mask)."""
    y, x = np.mgrid[0:200, 0:300].astype(np.float32)
    gray = np.clip(50 + 130 * x / 300 + 20 * np.sin(y / 17.0), 0, 255).astype(np.uint8)
    clean = np.repeat(gray[..., None], 3, axis=2)
    crack = np.zeros(gray.shape, np.uint8)
    cv2.polylines(crack, [np.array([[10, 20], [90, 70], [160, 60], [290, 180]], np.int32)], False, 1, 2)
    cracked = clean.copy()
    cracked[crack > 0] = 250
    return cracked, clean, crack > 0


def test_what_the_detector_finds_is_repaired_and_nothing_else():
    cracked, clean, crack = _cracked_print()
    restored, info = Restorer(model=_Identity(), detector=_FlagsWhite(), device="cpu").restore_array(cracked)
    assert info["input_type"] == "bw"
    error = np.abs(restored.astype(int) - clean.astype(int)).max(axis=2)
    assert error[crack].mean() < 12          # the crack is gone: 200 levels above the print before
    far = cv2.dilate(crack.astype(np.uint8), np.ones((9, 9), np.uint8)) == 0
    assert error[far].mean() < 2             # and the rest of the print is its own
    kept, _ = Restorer(model=_Identity(), detector=_FlagsWhite(), device="cpu",
                       find_damage=False).restore_array(cracked)
    assert np.abs(kept.astype(int) - clean.astype(int)).max(axis=2)[crack].mean() > 100


def test_a_line_along_the_edge_is_a_border_but_what_reaches_in_is_damage():
    mask = np.zeros((100, 120), bool)
    mask[:, -4:] = True                  # a 4 px frame down the right side
    mask[:25, :25] = True                # a torn corner: along the left and top sides, and further in
    mask[50, 30:] = True                 # a crack that runs out to the frame
    mask[80:83, 2:5] = True              # a speck at the left edge (3% of that side)
    cleared = edge_lines_cleared(mask)
    assert not cleared[:, -6:].any()
    assert cleared[:25, :25].all() and cleared[50, 30:114].all() and cleared[80:83, 2:5].all()
    assert (cleared == mask)[:, :-6].all()
    assert mask[:, -4:].all()                           # the mask given is not changed


def test_a_print_keeps_its_white_border_and_loses_its_crack():
    cracked, clean, crack = _cracked_print()
    framed, clean_framed = cracked.copy(), clean.copy()
    for image in (framed, clean_framed):
        image[:, :4] = image[:, -4:] = image[:4] = image[-4:] = 252
    restored, _ = Restorer(model=_Identity(), detector=_FlagsWhite(), device="cpu").restore_array(framed)
    error = np.abs(restored.astype(int) - clean_framed.astype(int)).max(axis=2)
    assert error[crack].mean() < 12                      # repaired as without the frame
    assert restored[:, -4:].min() > 240 and restored[:4].min() > 240   # the frame is the print's own


def test_the_shipped_detector_comes_with_the_shipped_weights_only(tmp_path, tiny_weights, monkeypatch):
    path = tmp_path / "detector.safetensors"
    save_detector(build_detector(TINY), path, TINY)
    monkeypatch.setattr("restore.inference.default_detector_path", lambda: path)
    assert Restorer(weights=tiny_weights, device="cpu").detector is not None
    assert Restorer(weights=tiny_weights, device="cpu", find_damage=False).detector is None
    assert Restorer(model=_Identity(), device="cpu").detector is None   # a ready model: only a ready detector
    monkeypatch.setattr("restore.inference.default_detector_path", lambda: tmp_path / "none.safetensors")
    assert Restorer(weights=tiny_weights, device="cpu").detector is None  # not installed: optional
    with pytest.raises(WeightsError, match="none.safetensors"):         # named: required
        Restorer(weights=tiny_weights, device="cpu", detector_weights=tmp_path / "none.safetensors")


def test_the_packaged_detector_config_is_the_default_one():
    packaged = Path(__file__).resolve().parents[1] / "restore" / "configs" / "detector.toml"
    assert load_config(DetectorConfig, packaged) == DetectorConfig()
    # its damage: mostly cracks, on most crops, mostly of prints
    degrade = DetectorConfig().degrade_config()
    assert degrade.holes_kinds.count("crack") >= 3 and degrade.holes_probability > 0.5
    assert degrade.category_weights()["bw"] > 0.5 and degrade.tone_probability == 0.5


class _SureOnTheLeft(nn.Module):
    """A detector sure of white pixels in the left third of the render copy, and, on an enlarged copy, only
    unsure (probability 0.5) of every white pixel: as the real one is of a fine crack network."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        white = x.mean(dim=1, keepdim=True) > 0.9
        if x.shape[-1] > 400:                                      # the enlarged copy
            return torch.where(white, 0.0, -10.0)
        left = torch.arange(x.shape[-1]).view(1, 1, 1, -1) < 100
        return torch.where(white & left, 10.0, -10.0)


def test_the_enlarged_pass_extends_sure_damage_and_finds_nothing_alone(monkeypatch):
    cracked, _, crack = _cracked_print()
    apart = np.zeros(crack.shape, bool)
    apart[195, 150:290] = True                                     # a bright line the crack does not touch
    cracked[apart] = 250
    restorer = Restorer(model=_Identity(), detector=_SureOnTheLeft(), device="cpu")
    found = restorer.find_damage(cracked) > 0
    assert found[crack].mean() > 0.95                              # the whole crack, from its sure left part
    assert not found[apart].any() and not found[~crack & ~apart].any()
    monkeypatch.setattr("restore.inference.DETECTOR_UPSCALE", 1)
    alone = restorer.find_damage(cracked) > 0
    assert alone[crack].any() and alone[crack].mean() < 0.5 and not alone[:, 100:].any()   # the sure part only


class _FlagsDark(nn.Module):
    """Stand-in detector: damage wherever the image is dark (below 0.24 of white; it sees -1..1). On a
    negative that is the scene's highlights (the densest film), a false alarm its positive does not repeat."""

    spec = DetectorSpec()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x.mean(dim=1, keepdim=True) < -0.52, 10.0, -10.0)


class _InvertsOrangeScans(nn.Module):
    """Stand-in generator that takes an orange image for a colour negative and inverts it, keeps any other."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -x if float(x[:, 0].mean() - x[:, 2].mean()) > 0.2 else x


@pytest.mark.parametrize("input_type", ["auto", "negative"])
def test_damage_found_on_a_negative_counts_only_where_its_positive_shows_it_too(input_type, monkeypatch):
    y, x = np.mgrid[0:200, 0:300].astype(np.float32)
    gray = np.clip(40 + 150 * x / 300 + 15 * np.sin(y / 13.0), 0, 255)
    scene = np.stack([0.6 * gray, 0.8 * gray, gray], axis=2).astype(np.uint8)     # blue light
    scene[80:120, 120:180] = 250                       # a white shirt: the darkest part of the negative
    negative = negative_film(scene, base=(0.86, 0.44, 0.17), gamma=(0.55, 0.6, 0.65), exposure=1.0,
                             flare=0.01, gain=1.0)
    restorer = Restorer(model=_InvertsOrangeScans(), detector=_FlagsDark(), device="cpu", input_type=input_type)
    assert (restorer.find_damage(negative)[80:120, 120:180] > 0).all()       # flagged on the scan
    restored, info = restorer.restore_array(negative)
    assert info["input_type"] == "negative"
    assert restored[85:115, 125:175].min() > 240       # the inversion's own white, not inpainted over
    monkeypatch.setattr("restore.inference.CONFIRM_NEGATIVE_DAMAGE", False)
    unconfirmed, _ = restorer.restore_array(negative)
    assert unconfirmed[85:115, 125:175].mean() < 200   # filled from the darker scene around it


@pytest.mark.parametrize("input_type", ["auto", "negative"])
def test_damage_its_positive_does_not_confirm_leaves_a_negative_s_levels_as_without_it(input_type, monkeypatch):
    # the scan's densest part (a white shirt) taken for damage and not confirmed: the levels are read as if
    # nothing had been found, not from a scan with its highlight inpainted away (mid-tones too bright)
    y, x = np.mgrid[0:200, 0:300].astype(np.float32)
    gray = np.clip(40 + 150 * x / 300 + 15 * np.sin(y / 13.0), 0, 255)
    scene = np.stack([0.6 * gray, 0.8 * gray, gray], axis=2).astype(np.uint8)
    scene[80:120, 120:180] = 250
    negative = negative_film(scene, base=(0.86, 0.44, 0.17), gamma=(0.55, 0.6, 0.65), exposure=1.0,
                             flare=0.01, gain=1.0)
    flagged = Restorer(model=_InvertsOrangeScans(), detector=_FlagsDark(), device="cpu", input_type=input_type)
    unflagged = Restorer(model=_InvertsOrangeScans(), detector=None, device="cpu", input_type=input_type)
    assert (flagged.find_damage(negative)[80:120, 120:180] > 0).all()
    restored, info = flagged.restore_array(negative)
    reference, _ = unflagged.restore_array(negative)
    assert info["input_type"] == "negative"
    scene_part = np.ones(negative.shape[:2], bool)
    scene_part[70:130, 110:190] = False
    assert np.abs(restored.astype(int) - reference)[scene_part].max() <= 2
    monkeypatch.setattr("restore.inference.RELEVEL_CONFIRMED", False)
    inpainted_levels, _ = flagged.restore_array(negative)
    assert (inpainted_levels.astype(int) - reference)[scene_part].mean() > 10      # brighter


def test_unconfirmed_damage_that_reaches_the_edge_or_is_bright_still_sets_a_negative_s_levels(monkeypatch):
    # a dense area cut by the frame (a stain or tear reaching in) or a bright one (a hole on the scan, which
    # would take the film-base percentile) stays inpainted for the levels even when the positive does not
    # confirm it: only interior dense areas, which a scene's highlights are, are read again
    y, x = np.mgrid[0:200, 0:300].astype(np.float32)
    gray = np.clip(40 + 150 * x / 300 + 15 * np.sin(y / 13.0), 0, 255)
    scene = np.stack([0.6 * gray, 0.8 * gray, gray], axis=2).astype(np.uint8)
    scene[0:40, 120:180] = 250                         # dense on the scan, and at its top edge
    negative = negative_film(scene, base=(0.86, 0.44, 0.17), gamma=(0.55, 0.6, 0.65), exposure=1.0,
                             flare=0.01, gain=1.0)
    flagged = Restorer(model=_InvertsOrangeScans(), detector=_FlagsDark(), device="cpu")
    unflagged = Restorer(model=_InvertsOrangeScans(), detector=None, device="cpu")
    restored, info = flagged.restore_array(negative)
    assert info["input_type"] == "negative"
    monkeypatch.setattr("restore.inference.RELEVEL_CONFIRMED", False)
    inpainted_levels, _ = flagged.restore_array(negative)
    reference, _ = unflagged.restore_array(negative)
    assert np.array_equal(restored, inpainted_levels)
    assert (restored.astype(int) - reference)[60:, :].mean() > 10

    image = np.full((60, 90, 3), 100, np.uint8)
    image[10:20, 10:20] = 200                          # brighter than around it
    image[30:40, 50:60] = 20                           # darker
    image[45:55, 5:15] = 101                           # a shade brighter
    mask = np.zeros((60, 90), bool)
    mask[8:22, 8:22] = mask[28:42, 48:62] = mask[45:55, 5:15] = True
    found = _brighter_than_around(image, mask) > 0
    assert found[8:22, 8:22].all() and found[45:55, 5:15].all()
    assert not found[28:42, 48:62].any() and found.sum() == 14 * 14 + 100


def test_a_blob_on_a_negative_s_positive_does_not_confirm_damage_found_on_its_scan(monkeypatch):
    # the scan's mask marks the white shirt (dense film); a blob search that finds it flat and bright on the
    # positive, as it found a book cover's red bar, must not make it damage: only the scan's blobs confirm
    y, x = np.mgrid[0:200, 0:300].astype(np.float32)
    scene = np.stack([40 + 150 * x / 300, 40 + 150 * y / 200, 110 + 60 * np.sin(x / 23.0)], axis=2)
    scene = scene.astype(np.uint8)                     # a colour photo (its positive is taken for colour)
    scene[80:120, 120:180] = 250
    negative = negative_film(scene, base=(0.86, 0.44, 0.17), gamma=(0.55, 0.6, 0.65), exposure=1.0,
                             flare=0.01, gain=1.0)

    def bright_shirt(image: np.ndarray, *args, **kwargs) -> np.ndarray:
        positive = image[85:115, 125:175].mean() > 200                # the shirt is dark on the scan
        return _shirt(image.shape[:2]) if positive else np.zeros(image.shape[:2], np.uint8)

    monkeypatch.setattr("restore.inference.hole_mask", bright_shirt)
    restorer = Restorer(model=_InvertsOrangeScans(), detector=_FlagsDark(), device="cpu")
    restored, info = restorer.restore_array(negative)
    assert info["input_type"] == "negative"
    assert restored[85:115, 125:175].min() > 240       # the inversion's own white, not inpainted over
    # the same blob on the scan does confirm it: damage the scan's blob search finds is repaired
    monkeypatch.setattr("restore.inference.hole_mask", lambda image, *args, **kwargs: _shirt(image.shape[:2]))
    confirmed, _ = restorer.restore_array(negative)
    assert confirmed[85:115, 125:175].mean() < 200     # filled from the darker scene around it


def _shirt(shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[80:120, 120:180] = 255
    return mask


def test_a_dark_detail_on_a_negative_s_highlight_does_not_confirm_all_of_it():
    # a white shirt with a black button: on the scan the shirt is dark (flagged), the button clear film (not);
    # on the positive the button is dark (flagged) and sits inside the shirt, a sliver of what the scan flagged
    y, x = np.mgrid[0:200, 0:300].astype(np.float32)
    gray = np.clip(40 + 150 * x / 300 + 15 * np.sin(y / 13.0), 0, 255)
    scene = np.stack([0.6 * gray, 0.8 * gray, gray], axis=2).astype(np.uint8)
    scene[80:120, 120:180] = 250
    scene[97:103, 147:153] = 10
    negative = negative_film(scene, base=(0.86, 0.44, 0.17), gamma=(0.55, 0.6, 0.65), exposure=1.0,
                             flare=0.01, gain=1.0)
    restorer = Restorer(model=_InvertsOrangeScans(), detector=_FlagsDark(), device="cpu")
    restored, info = restorer.restore_array(negative)
    assert info["input_type"] == "negative"
    shirt = np.zeros(scene.shape[:2], bool)
    shirt[85:115, 125:175] = True
    shirt[92:108, 142:158] = False                     # the button and what inpainting round it may touch
    assert restored[shirt].min() > 240
    # an area the positive marks for the most part is still damage
    components = np.zeros((20, 40), np.uint8)
    components[5:15, 2:12] = components[5:15, 20:30] = 1
    seeds = np.zeros_like(components)
    seeds[5:15, 2:5] = seeds[5:7, 20:30] = 1           # 30% and 20% of them
    assert np.array_equal(components_touching(components, seeds, 0.25), (components > 0) & (np.arange(40) < 15))
    assert np.array_equal(components_touching(components, seeds, 0.2), components > 0)
    assert not components_touching(components, np.zeros_like(seeds), 0.2).any()


def _caption(image: np.ndarray, text: str, origin: tuple[int, int], scale: float, value) -> None:
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, value, 2, cv2.LINE_AA)


def test_a_line_of_lettering_is_not_damage_but_scratches_dust_and_cracks_are():
    mask = np.zeros((300, 400), np.uint8)
    _caption(mask, "Summer 1921", (20, 60), 1.0, 255)                  # letters 16-22 px tall
    _caption(mask, "Rue de Paris", (200, 280), 0.6, 255)               # a smaller line, elsewhere
    text = mask > 0
    damage = np.zeros_like(mask)
    cv2.line(damage, (30, 120), (380, 170), 255, 2)                    # a long scratch ...
    for x in range(40, 360, 40):                                       # ... and one worn into dashes
        cv2.line(damage, (x, 200), (x + 30, 206), 255, 2)
    for x in range(60, 300, 45):                                       # a row of round specks
        cv2.circle(damage, (x, 95), 7, 255, -1)
    rng = np.random.default_rng(0)
    for row, col in rng.integers(130, 260, (40, 2)):                   # scattered dust
        cv2.circle(damage, (int(col), int(row)), int(rng.integers(1, 5)), 255, -1)
    cv2.polylines(damage, [np.array([[250, 10], [270, 40], [300, 35], [330, 80], [390, 60]], np.int32)],
                  False, 255, 1)                                       # a crack
    cv2.circle(damage, (60, 300), 30, 255, -1)                         # a hole at the edge
    damage[text] = 0
    cleared = text_cleared(np.maximum(mask, damage))
    assert not cleared[text].any()
    assert (cleared == (damage > 0))[~text].all()
    assert text_cleared(damage).sum() == (damage > 0).sum()           # damage alone: all of it kept


def test_a_print_keeps_its_caption_and_loses_its_crack():
    cracked, clean, crack = _cracked_print()
    captioned, clean_captioned = cracked.copy(), clean.copy()
    for image in (captioned, clean_captioned):
        _caption(image, "Paris 1921", (12, 180), 0.7, (255, 255, 255))
    caption = (clean_captioned != clean).any(axis=2)
    restored, _ = Restorer(model=_Identity(), detector=_FlagsWhite(), device="cpu").restore_array(captioned)
    error = np.abs(restored.astype(int) - clean_captioned.astype(int)).max(axis=2)
    assert error[crack & ~caption].mean() < 12                         # the crack is repaired ...
    assert error[caption].mean() < 2                                   # ... the caption is the print's own
