"""Evaluation: categories, the classical baseline, the report and JSON, --compare, the CLI.

Images are skimage samples scaled down or generated here; the model is a random tiny U-Net (its numbers are
meaningless, the plumbing is what is tested).
"""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from skimage import data
from typer.testing import CliRunner

from degradations.functional import negative as film_negative
from restore import baselines, metrics
from restore.eval_cli import app
from restore.evaluate import (
    CATEGORIES,
    category_seed,
    comparability,
    compare,
    contact_sheet,
    degrade_category,
    evaluate,
    evaluate_no_reference,
    find_photos,
    fit_max_side,
    model_labels,
    recipe,
    resolve_categories,
)
from restore.imageio import read_image


def _small(image: np.ndarray, long_side: int) -> np.ndarray:
    scale = long_side / max(image.shape[:2])
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    return _small(data.chelsea(), 192)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    """A scene from black to white: a negative's inversion (stretched to that range) can recover it, where
    chelsea's brightest parts are well below white and come out too bright (a known limit, the README's)."""
    return _small(data.astronaut(), 192)


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    """Three small ground-truth photos, one of them in a subfolder (the search is recursive)."""
    root = tmp_path_factory.mktemp("photos")
    (root / "sub").mkdir()
    for path, image in ((root / "astronaut.png", data.astronaut()), (root / "coffee.png", data.coffee()),
                        (root / "sub" / "chelsea.jpg", data.chelsea())):
        cv2.imwrite(str(path), cv2.cvtColor(_small(image, 72), cv2.COLOR_RGB2BGR))
    (root / "notes.txt").write_text("not a photo")
    return root


@pytest.fixture(scope="module")
def second_weights(tmp_path_factory):
    """Another random tiny generator, standing in for a GAN checkpoint beside the MSE one."""
    import torch

    from restore.arch import GeneratorSpec, build_generator
    from restore.weights import save_weights

    torch.manual_seed(1)
    spec = GeneratorSpec(encoder="resnet18", self_attention=False)
    path = tmp_path_factory.mktemp("weights2") / "gan.safetensors"
    save_weights(build_generator(spec), path, spec)
    return path


@pytest.fixture(scope="module")
def report(photo_dir, tiny_weights, second_weights, tmp_path_factory):
    """One full evaluation: 2 photos, every category, two models (shared by the tests below)."""
    out = tmp_path_factory.mktemp("report")
    result = evaluate(photo_dir, [tiny_weights, second_weights], seed=3, out_dir=out, limit=2, max_side=64,
                      sheet_photos=2)
    return out, result


# --- categories -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(CATEGORIES))
def test_category_is_deterministic_and_degrades(name, chelsea):
    seed = category_seed("a/photo.png", name, 0)
    first, second = degrade_category(chelsea, name, seed), degrade_category(chelsea, name, seed)
    assert first.dtype == np.uint8 and first.shape == chelsea.shape
    assert np.array_equal(first, second)
    assert metrics.psnr(first, chelsea) < 40.0  # it really is damaged
    if CATEGORIES[name].colorize:
        assert metrics.colourfulness(first) < 0.1 * metrics.colourfulness(chelsea)


def test_seeds_differ_per_photo_and_category():
    assert category_seed("a.png", "bw", 0) != category_seed("b.png", "bw", 0)
    assert category_seed("a.png", "bw", 0) != category_seed("a.png", "bw_jpeg", 0)
    assert category_seed("a.png", "bw", 0) != category_seed("a.png", "bw", 1)


def test_noise_depends_on_seed(chelsea):
    a = degrade_category(chelsea, "color_gaussian25", 1)
    b = degrade_category(chelsea, "color_gaussian25", 2)
    assert not np.array_equal(a, b)
    # sigma 25 per channel, give or take clipping
    assert 20.0 < np.std(a.astype(float) - chelsea) < 26.0


def test_unknown_category_is_refused():
    with pytest.raises(ValueError, match="unknown category nope"):
        resolve_categories(["bw", "nope"])
    assert resolve_categories(None) == list(CATEGORIES)


# --- the classical baseline ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, photo, gain_db", [
    ("negative_color", "astronaut", 8.0), ("negative_bw", "astronaut", 4.0),
    ("negative_color_noise", "astronaut", 4.0), ("negative_color_holes", "astronaut", 4.0),
    ("bw_saltpepper", "chelsea", 0.3), ("color_saltpepper_jpeg", "chelsea", 0.3),
    ("color_gaussian25", "chelsea", 2.0), ("color_holes", "chelsea", 1.0),
])
def test_classical_improves_psnr_over_input(name, photo, gain_db, request):
    truth = request.getfixturevalue(photo)
    degraded = degrade_category(truth, name, category_seed(photo, name, 0))
    restored = baselines.classical(degraded, CATEGORIES[name].hints)
    assert metrics.psnr(restored, truth) > metrics.psnr(degraded, truth) + gain_db


def test_classical_leaves_what_it_cannot_fix_alone(chelsea):
    gray = degrade_category(chelsea, "bw_blur", 0)
    restored = baselines.classical(gray, CATEGORIES["bw_blur"].hints)
    assert np.array_equal(restored, gray) and restored is not gray
    assert np.array_equal(baselines.input_baseline(gray), gray)


def test_impulses_are_removed_and_clean_pixels_kept():
    y, x = np.mgrid[0:64, 0:64]
    clean = np.stack([60 + 2 * x, 80 + y, 140 - x], axis=-1).astype(np.uint8)
    noisy = clean.copy()
    rng = np.random.default_rng(0)
    idx = rng.choice(64 * 64, 80, replace=False)
    noisy.reshape(-1, 3)[idx[:40]] = 255
    noisy.reshape(-1, 3)[idx[40:]] = 0
    repaired = baselines.remove_impulses(noisy)
    assert metrics.psnr(repaired, clean) > 38.0
    assert np.array_equal(baselines.remove_impulses(clean), clean)


def test_painted_hole_is_detected_and_inpainted():
    y, x = np.mgrid[0:96, 0:96]
    rng = np.random.default_rng(0)
    clean = np.stack([60 + x, 90 + y // 2, 160 - x // 2], axis=-1) + rng.normal(0, 3, (96, 96, 3))
    clean = np.clip(clean, 0, 255).astype(np.uint8)
    damaged = clean.copy()
    # a cream blob with a grey paper mottle, as the Holes transform paints it
    blob = (x - 40) ** 2 + (y - 50) ** 2 < 12 ** 2
    mottle = rng.normal(0, 4, (96, 96))
    damaged[blob] = np.clip(np.array([236, 228, 208]) + mottle[blob][:, None], 0, 255).astype(np.uint8)
    mask = baselines.hole_mask(damaged) > 0
    assert mask[blob].mean() > 0.9
    assert mask[~blob].mean() < 0.05
    assert metrics.psnr(baselines.inpaint_holes(damaged), clean) > metrics.psnr(damaged, clean) + 5.0
    # the clean photo has no such blob: nothing inpainted
    assert (baselines.hole_mask(clean) > 0).mean() < 0.01


def test_shaded_grey_scenery_is_not_taken_for_a_hole():
    # a neutral grey surface (concrete, a wall in shade) is one chroma like a hole, but not one brightness
    y, x = np.mgrid[0:96, 0:96]
    rng = np.random.default_rng(0)
    photo = np.stack([60 + x, 90 + y // 2, 160 - x // 2], axis=-1) + rng.normal(0, 3, (96, 96, 3))
    photo = np.clip(photo, 0, 255).astype(np.uint8)
    patch = (np.abs(x - 40) < 10) & (np.abs(y - 50) < 9)
    shade = 200 + 50 * np.sin(x / 3.0) * np.cos(y / 4.0)                 # luminance std ~ 25 levels
    photo[patch] = np.clip(shade[patch], 0, 254).astype(np.uint8)[:, None]
    assert (baselines.hole_mask(photo) > 0)[patch].mean() < 0.05
    # without the brightness tests it would be one
    assert (baselines.hole_mask(photo, max_texture=None, max_blob_texture=None) > 0)[patch].mean() > 0.5


def test_negative_inversion_recovers_the_photo(astronaut):
    negative = degrade_category(astronaut, "negative_color", 0)
    positive = baselines.invert_negative(negative)
    assert metrics.psnr(positive, astronaut) > 30.0
    # the orange mask is gone: each channel's mean level is back near the truth's
    truth_means = astronaut.reshape(-1, 3).mean(axis=0)
    assert np.abs(positive.reshape(-1, 3).mean(axis=0) - truth_means).max() < 5.0
    assert metrics.delta_e(positive, astronaut) < 0.2 * metrics.delta_e(negative, astronaut)


@pytest.mark.parametrize("key", [1.8, 0.55])                  # low key (dark mid-tones), high key
@pytest.mark.parametrize("slope", [0.5, 0.75])                 # the ends of the training films' slopes
def test_the_films_slope_sets_the_inversions_tones_whatever_the_scenes_key(key, slope):
    photo = np.clip(255 * (data.astronaut()[::2, ::2] / 255.0) ** key + 0.5, 0, 255).astype(np.uint8)
    negative = film_negative(photo, base=(0.86, 0.44, 0.17), gamma=(slope - 0.03, slope, slope + 0.03),
                             exposure=1.0, flare=0.01, gain=1.0)
    by_slope = metrics.psnr(baselines.invert_negative(negative), photo)
    # the mid-grey prior takes every scene for an average one, so it errs with the key
    by_mid_grey = metrics.psnr(baselines.invert_negative(negative, film_gamma=None), photo)
    assert by_slope > 25.0 and by_slope > by_mid_grey + 5.0
    with pytest.raises(ValueError, match="film_gamma"):
        baselines.negative_lut(negative, film_gamma=0.0)


def test_a_rough_reference_positive_sets_the_inversions_tones():
    photo = np.clip(255 * (data.astronaut()[::2, ::2] / 255.0) ** 1.8, 0, 255).astype(np.uint8)   # low key
    negative = degrade_category(photo, "negative_color", 0)
    # (against the mid-grey prior: the film's slope, the default, already gets a clean negative's tones)
    by_prior = cv2.LUT(negative, baselines.negative_lut(negative, film_gamma=None))
    # a blurred, noisy positive of the scene (what a network's inversion gives) carries its overall tones
    rough = cv2.GaussianBlur(photo, (0, 0), 4.0).astype(np.float32)
    rough += np.random.default_rng(0).normal(0, 20, rough.shape)
    rough = np.clip(rough, 0, 255).astype(np.uint8)
    by_reference = cv2.LUT(negative, baselines.negative_lut(negative, film_gamma=None, reference=rough,
                                                             reference_weight=1.0))
    assert metrics.psnr(by_reference, photo) > metrics.psnr(by_prior, photo) + 3.0
    # the detail is still the scan's own: sharper than the reference
    assert metrics.psnr(by_reference, photo) > metrics.psnr(rough, photo) + 5.0
    # by default the reference's latitude is averaged with the prior's: in between
    mixed = metrics.psnr(cv2.LUT(negative, baselines.negative_lut(negative, film_gamma=None, reference=rough)),
                         photo)
    assert metrics.psnr(by_prior, photo) + 1.0 < mixed < metrics.psnr(by_reference, photo)
    with pytest.raises(ValueError, match="reference"):
        baselines.negative_lut(negative, reference=rough[:-1])


# --- helpers ---------------------------------------------------------------------------------------------------------

def test_find_photos_and_fit_max_side(photo_dir):
    assert find_photos(photo_dir) == ["astronaut.png", "coffee.png", "sub/chelsea.jpg"]
    assert find_photos(photo_dir, limit=1) == ["astronaut.png"]
    image = np.zeros((100, 40, 3), np.uint8)
    assert fit_max_side(image, 50).shape == (50, 20, 3)
    assert fit_max_side(image, 200) is image


def test_find_photos_errors_name_the_folder(tmp_path):
    with pytest.raises(ValueError, match="no images"):
        find_photos(tmp_path)
    with pytest.raises(ValueError, match="not a folder"):
        find_photos(tmp_path / "missing")


def test_model_labels_are_unique():
    assert model_labels(["a/mse.safetensors", "b/gan.safetensors"]) == ["mse", "gan"]
    assert model_labels(["a/m.safetensors", "b/m.safetensors"]) == ["m-1", "m-2"]
    assert model_labels(["input.safetensors"]) == ["model-input"]


def test_contact_sheet_layout():
    tile = np.full((30, 60, 3), 200, np.uint8)
    sheet = contact_sheet([[tile, tile, tile]] * 2, ["a", "b", "c"], side=50, gap=4)
    assert sheet.shape == (22 + 2 * 54 + 4, 3 * 50 + 4 * 4, 3)


# --- the end-to-end evaluation ----------------------------------------------------------------------------------------

def test_evaluate_writes_report_json_and_sheets(report):
    out, _ = report
    names = list(CATEGORIES)
    text = (out / "report.md").read_text(encoding="utf-8")
    for name in names:
        assert f"## {name}" in text
        assert (out / "sheets" / f"{name}.jpg").is_file()
    # random weights cannot beat the classical pipeline, and the report must say so plainly
    assert "does not beat the classical pipeline" in text
    assert "gan vs tiny: wins on" in text
    assert "## Targets (issue 7)" in text
    saved = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert saved["meta"]["methods"] == ["input", "classical", "tiny", "gan"]
    assert saved["meta"]["photos"] == 2
    assert set(saved["images"]["bw"]) == {"astronaut.png", "coffee.png"}
    for name in names:
        for method in saved["meta"]["methods"]:
            assert set(saved["summary"][name][method]) == set(metrics.METRIC_DIRECTIONS)
    # sheets: 2 photo rows, columns input | classical | tiny | gan | ground truth
    sheet = read_image(out / "sheets" / "bw.jpg").rgb
    assert sheet.shape[1] == 5 * 176 + 6 * 4 and sheet.shape[0] == 22 + 2 * 180 + 4


def test_evaluate_numbers_can_be_recomputed(report, photo_dir):
    out, result = report
    truth = fit_max_side(read_image(photo_dir / "coffee.png").rgb, 64)
    name = "negative_color_noise"
    degraded = degrade_category(truth, name, category_seed("coffee.png", name, 3))
    saved = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["images"][name]["coffee.png"]
    assert saved["input"]["psnr"] == pytest.approx(metrics.psnr(degraded, truth))
    restored = baselines.classical(degraded, CATEGORIES[name].hints)
    assert saved["classical"]["delta_e"] == pytest.approx(metrics.delta_e(restored, truth))
    means = result["summary"][name]["tiny"]["ssim"]
    per_image = [result["images"][name][p]["tiny"]["ssim"] for p in ("astronaut.png", "coffee.png")]
    assert means == pytest.approx(np.mean(per_image))


def test_evaluate_baselines_only_on_a_subset(photo_dir, tmp_path):
    result = evaluate(photo_dir, [], out_dir=tmp_path, limit=1, categories=["bw", "color_holes"], max_side=48)
    assert list(result["summary"]) == ["bw", "color_holes"]
    assert result["meta"]["methods"] == ["input", "classical"]
    text = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "baselines only" in text
    bw = result["summary"]["bw"]["input"]
    assert f"| bw | {bw['psnr']:.2f} / {bw['delta_e']:.2f} | {bw['psnr']:.2f} / {bw['delta_e']:.2f} |" in text


def test_compare_reports_differences(report, tmp_path):
    out, _ = report
    old = out / "metrics.json"
    changed = json.loads(old.read_text(encoding="utf-8"))
    changed["summary"]["bw"]["tiny"]["psnr"] += 1.5
    changed["summary"]["bw"]["tiny"]["delta_e"] += 2.0
    changed["meta"]["seed"] = 99
    changed["meta"]["recipes"]["bw_jpeg"][1]["quality_range"] = [90, 90]
    new = tmp_path / "new.json"
    new.write_text(json.dumps(changed), encoding="utf-8")
    rows = {(r["category"], r["method"], r["metric"]): r for r in compare(old, new)}
    assert rows[("bw", "tiny", "psnr")]["difference"] == pytest.approx(1.5)
    assert rows[("bw", "tiny", "psnr")]["better"] is True
    assert rows[("bw", "tiny", "delta_e")]["worse"] is True
    assert rows[("bw", "input", "psnr")]["difference"] == pytest.approx(0.0)
    assert rows[("bw", "input", "psnr")]["better"] is False
    runner = CliRunner()
    printed = runner.invoke(app, ["--compare", str(old), str(new)], terminal_width=200)
    assert printed.exit_code == 0, printed.output
    assert "+1.50" in printed.output and "better" in printed.output and "worse" in printed.output
    assert comparability(old, new) == ["seed differs: 3 -> 99", "degradation recipes differ for bw_jpeg"]
    assert "seed differs" in printed.output
    assert comparability(old, old) == []


def test_compare_refuses_a_file_that_is_not_metrics(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{}", encoding="utf-8")
    result = CliRunner().invoke(app, ["--compare", str(bad), str(bad)])
    assert result.exit_code != 0
    assert "bad.json" in result.output


# --- no-reference mode and the CLI --------------------------------------------------------------------------------------

def test_no_reference_writes_sheets_only(photo_dir, tiny_weights, tmp_path):
    result = evaluate_no_reference(photo_dir, [tiny_weights], out_dir=tmp_path, max_side=48, rows_per_sheet=2)
    assert sorted(p.name for p in (tmp_path / "sheets").iterdir()) == ["no_reference_01.jpg", "no_reference_02.jpg"]
    assert "summary" not in result and set(result["images"]) == set(find_photos(photo_dir))
    assert result["images"]["coffee.png"]["tiny"]["input_type"] in ("negative", "bw", "color")


def test_cli_runs_an_evaluation(photo_dir, tiny_weights, tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["--data", str(photo_dir), "--weights", str(tiny_weights), "--out", str(out),
                                      "--limit", "1", "--categories", "bw,negative_color", "--max-side", "48"],
                                terminal_width=200)
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert list(saved["summary"]) == ["bw", "negative_color"]
    assert not math.isnan(saved["summary"]["negative_color"]["tiny"]["psnr"])
    assert "negative_color" in result.output


def test_update_card_records_the_evaluation_in_the_model_card(photo_dir, tiny_weights, tmp_path, monkeypatch):
    import shutil

    monkeypatch.chdir(tmp_path)

    # two models (shipped, candidate) in one run: each card gets its own row
    paths = [tmp_path / "shipped" / "model.safetensors", tmp_path / "candidate.safetensors"]
    for weights in paths:
        weights.parent.mkdir(exist_ok=True)
        shutil.copy(tiny_weights, weights)
        shutil.copy(tiny_weights.with_suffix(".json"), weights.with_suffix(".json"))
    out = tmp_path / "report"
    args = ["--data", str(photo_dir), "--out", str(out), "--limit", "1", "--categories", "bw", "--max-side", "48",
            "--update-card"]
    result = CliRunner().invoke(app, args + ["--weights", str(paths[0]), "--weights", str(paths[1])])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    for weights, label in zip(paths, ["model", "candidate"]):
        card = json.loads(weights.with_suffix(".json").read_text(encoding="utf-8"))
        assert card["evaluation"]["model_label"] == label
        # the card holds exactly the numbers the run wrote, for the model and both baselines
        assert card["evaluation"]["summary"]["bw"][label] == saved["summary"]["bw"][label]
        assert set(card["evaluation"]["summary"]["bw"]) == {"input", "classical", label}
        assert "| bw |" in card["evaluation"]["table"]
        assert card["generator_spec"]["encoder"] == "resnet18"  # the rest of the card is kept
        # the path is recorded relative to the working directory, so the card does not name this machine
        assert card["evaluation"]["meta"]["models"][label] == weights.relative_to(tmp_path).as_posix()


def test_cli_evaluates_with_the_detector_it_is_given(photo_dir, tiny_weights, tmp_path):
    import torch

    from restore.arch import DetectorSpec, build_detector
    from restore.weights import save_detector

    torch.manual_seed(0)
    spec = DetectorSpec(channels=(4, 8))
    detector = tmp_path / "candidate_detector.safetensors"
    card = save_detector(build_detector(spec), detector, spec, {"name": "candidate", "version": "9"})
    out = tmp_path / "report"
    args = ["--data", str(photo_dir), "--weights", str(tiny_weights), "--out", str(out), "--limit", "1",
            "--categories", "bw_holes", "--max-side", "48"]
    result = CliRunner().invoke(app, args + ["--detector", str(detector)])
    assert result.exit_code == 0, result.output
    ran = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["meta"]["detectors"]["tiny"]
    assert (ran["name"], ran["version"], ran["sha256"]) == ("candidate", "9", card["sha256"])
    missing = CliRunner().invoke(app, args + ["--detector", str(tmp_path / "no_detector.safetensors")])
    assert missing.exit_code == 2 and "no_detector.safetensors" in missing.output


def test_cli_errors_are_one_line(photo_dir, tmp_path):
    result = CliRunner().invoke(app, ["--data", str(photo_dir), "--out", str(tmp_path), "--categories", "nope"])
    assert result.exit_code == 2
    assert "unknown category nope" in result.output
    missing = CliRunner().invoke(app, ["--data", str(photo_dir), "--weights", str(tmp_path / "none.safetensors")])
    assert missing.exit_code != 0 and "none.safetensors" in missing.output


def test_a_photo_too_small_is_named(tmp_path):
    cv2.imwrite(str(tmp_path / "tiny.png"), np.zeros((8, 40, 3), np.uint8))
    with pytest.raises(ValueError, match=r"tiny\.png: too small"):
        evaluate(tmp_path, [], out_dir=tmp_path / "out", categories=["bw"])


def test_a_failing_restorer_names_the_photo(photo_dir, tmp_path):
    class Broken:
        def restore_array(self, rgb):
            raise RuntimeError("out of memory")

    with pytest.raises(ValueError, match=r"astronaut\.png \(bw, broken\): restoration failed: out of memory"):
        evaluate(photo_dir, [], out_dir=tmp_path, limit=1, categories=["bw"], restorers={"broken": Broken()})



def test_colour_damage_categories_keep_their_kinds_and_the_print_one_has_cracks():
    # the colour categories were measured before Holes learnt cracks: their recipe must not change under the
    # cards that hold those numbers; the print category takes every kind there is
    kinds = {name: next(t["kinds"] for t in recipe(name) if t["__class_fullname__"].endswith("Holes"))
             for name in ("color_holes", "negative_color_holes", "bw_holes")}
    assert "crack" not in kinds["color_holes"] and kinds["color_holes"] == kinds["negative_color_holes"]
    assert "crack" in kinds["bw_holes"]
