"""Degradations: one table of every transform drives the shared property tests, then each op's own
property, then the pipeline (config, serialization, determinism, category shares)."""

from __future__ import annotations

import dataclasses
import json
import math
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest

from degradations import functional as F
from degradations import transforms as T
from degradations.pipeline import (
    CATEGORIES,
    VISIBLE_DAMAGE_LEVELS,
    PipelineConfig,
    apply_pipeline,
    build_pipeline,
    degrade,
    degrade_with_damage,
    load_pipeline,
    load_pipeline_config,
    save_pipeline,
    seed_for,
)

DEFAULT_TOML = Path(__file__).resolve().parents[1] / "degradations" / "configs" / "default.toml"

# THE table: every degradation (and each kind of the multi-kind ones), configured so that its randomness
# is visible in the output (e.g. toning always on), all with p=1.
TABLE: list[tuple[str, Callable[[], T.Degradation]]] = [
    ("negative_color", lambda: T.Negative(kind="color")),
    ("negative_bw", lambda: T.Negative(kind="bw")),
    ("grayscale_toned", lambda: T.Grayscale(tone_probability=1.0)),
    ("jpeg", lambda: T.Jpeg()),
    ("salt_pepper", lambda: T.SaltPepper()),
    ("blur_gaussian", lambda: T.Blur(kinds=("gaussian",))),
    ("blur_motion", lambda: T.Blur(kinds=("motion",))),
    ("blur_defocus", lambda: T.Blur(kinds=("defocus",))),
    ("holes", lambda: T.Holes()),
    ("holes_crack", lambda: T.Holes(kinds=("crack",))),
    ("holes_craze", lambda: T.Holes(kinds=("craze",))),
    ("noise_gaussian", lambda: T.Noise(kinds=("gaussian",))),
    ("noise_grain", lambda: T.Noise(kinds=("grain",))),
    ("fade", lambda: T.Fade()),
    ("lowres", lambda: T.LowRes()),
]
IDS = [name for name, _ in TABLE]
FACTORIES = [factory for _, factory in TABLE]


def photo(h: int = 48, w: int = 64) -> np.ndarray:
    """Deterministic test picture: colour gradients, a smooth pattern and a fine checkerboard."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 30 + 200 * x / (w - 1)
    g = 30 + 200 * y / (h - 1)
    b = 128 + 90 * np.sin(x / 3.0) * np.cos(y / 4.0)
    checker = ((x.astype(int) // 2 + y.astype(int) // 2) % 2) * 30 - 15
    return np.clip(np.stack([r, g, b], -1) + checker[..., None], 0, 255).astype(np.uint8)


def run(factory: Callable[[], T.Degradation], image: np.ndarray, seed: int) -> tuple[np.ndarray, dict]:
    transform = factory()
    transform.set_random_seed(seed)
    out = transform(image=image)["image"]
    return out, transform.params


def luma(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64)


def high_frequency(image: np.ndarray) -> float:
    return float(cv2.Laplacian(luma(image), cv2.CV_64F).var())


def test_table_covers_every_degradation():
    covered = {type(factory()).__name__ for factory in FACTORIES}
    assert covered == set(T.DEGRADATIONS)


# --- properties every degradation shares -----------------------------------------------------------------


@pytest.mark.parametrize("factory", FACTORIES, ids=IDS)
@pytest.mark.parametrize("shape", [(16, 16), (37, 53), (64, 48)])
def test_dtype_and_shape_kept_and_input_untouched(factory, shape):
    image = photo(*shape)
    before = image.copy()
    out, _ = run(factory, image, seed=1)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert np.array_equal(image, before)


@pytest.mark.parametrize("factory", FACTORIES, ids=IDS)
def test_same_seed_same_bytes_and_different_seeds_differ(factory):
    image = photo()
    first, _ = run(factory, image, seed=7)
    again, _ = run(factory, image, seed=7)
    other, _ = run(factory, image, seed=8)
    assert first.tobytes() == again.tobytes()
    assert first.tobytes() != other.tobytes()
    assert first.tobytes() != image.tobytes()


@pytest.mark.parametrize("factory", FACTORIES, ids=IDS)
def test_serialization_round_trip_gives_identical_output(factory):
    transform = factory()
    data = A.to_dict(transform)
    json.dumps(data)  # plain JSON types only
    restored = A.from_dict(json.loads(json.dumps(data)))
    assert type(restored) is type(transform)
    assert A.to_dict(restored) == data
    image = photo()
    transform.set_random_seed(3)
    restored.set_random_seed(3)
    assert np.array_equal(transform(image=image)["image"], restored(image=image)["image"])


@pytest.mark.parametrize("factory", FACTORIES, ids=IDS)
def test_record_is_small_json(factory):
    _, params = run(factory, photo(), seed=2)
    record = type(factory()).record(params)
    assert record, "every degradation records at least one parameter"
    assert len(json.dumps(record)) < 400  # no arrays leak into the manifest


# --- each degradation's own property -----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_salt_pepper_fraction_within_range(seed):
    flat = np.full((40, 50, 3), 128, np.uint8)
    out, _params = run(lambda: T.SaltPepper(amount_range=(0.01, 0.05), salt_range=(0.5, 0.5)), flat, seed)
    hit = np.any(out != 128, axis=-1)
    assert 0.01 - 1 / hit.size <= hit.mean() <= 0.05 + 1 / hit.size
    assert set(np.unique(out[hit])) <= {0, 255}
    assert abs((out[hit][:, 0] == 255).mean() - 0.5) < 0.02  # salt share as drawn


def test_jpeg_lower_quality_larger_error():
    image = photo(64, 64)
    errors = []
    for quality in (10, 40, 95):
        out, _ = run(lambda q=quality: T.Jpeg(quality_range=(q, q)), image, seed=0)
        errors.append(np.abs(out.astype(int) - image.astype(int)).mean())
    assert errors[0] > errors[1] > errors[2]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("shape", [(16, 16), (64, 48), (96, 128)])
def test_holes_area_within_range_and_only_inside_mask(seed, shape):
    area_range = (0.02, 0.10)
    image = photo(*shape)
    out, params = run(lambda: T.Holes(area_range=area_range), image, seed)
    mask = params["alpha"] > 0
    assert area_range[0] <= mask.mean() <= area_range[1]
    assert params["area"] == pytest.approx(mask.mean())
    assert np.array_equal(out[~mask], image[~mask])  # nothing painted outside the damage


def test_holes_fill_with_stain_like_colours_not_only_black():
    fills = []
    for seed in range(12):
        _, params = run(lambda: T.Holes(area_range=(0.05, 0.1)), photo(), seed)
        fills.append(params["colour"][params["alpha"] > 0].astype(int))
    fills = np.concatenate(fills)
    assert (fills.mean(axis=1) > 150).mean() > 0.2  # light paper/card shows through, not only black
    assert (np.ptp(fills, axis=1) > 40).mean() > 0.05  # and brown/ochre stains (coloured, not grey)


@pytest.mark.parametrize("seed", range(6))
def test_cracks_are_thin_branching_lines_unlike_blobs(seed):
    flat = np.full((128, 128, 3), 90, np.uint8)
    _, crack = run(lambda: T.Holes(area_range=(0.03, 0.06), kinds=("crack",)), flat, seed)
    _, blob = run(lambda: T.Holes(area_range=(0.03, 0.06), kinds=("blob",)), flat, seed)
    opened = {name: cv2.morphologyEx((params["alpha"] > 0).astype(np.uint8), cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
              for name, params in (("crack", crack), ("blob", blob))}
    assert opened["crack"].sum() < 0.2 * (crack["alpha"] > 0).sum()    # lines, 5 px wide only where they fold
    assert opened["blob"].sum() > 0.5 * (blob["alpha"] > 0).sum()
    assert set(crack["shapes"]) == {"crack"}
    # one crack is one network: its forks and pieces touch the line they come from (the border may cut one)
    _, single = run(lambda: T.Holes(area_range=(0.02, 0.5), kinds=("crack",), max_shapes=1), flat, seed)
    count, _ = cv2.connectedComponents((single["alpha"] > 0).astype(np.uint8), connectivity=8)
    assert 1 <= count - 1 <= 2


def _enclosed_cells(drawn: np.ndarray, min_pixels: int = 30) -> int:
    """Regions of at least `min_pixels` that the drawn lines close off from the image's border."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(1 - drawn, connectivity=4)
    border = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])).tolist())
    return sum(1 for k in range(1, count) if k not in border and stats[k, cv2.CC_STAT_AREA] >= min_pixels)


def test_crazing_is_a_mesh_of_thin_light_lines_enclosing_cells():
    flat = np.full((160, 160, 3), 70, np.uint8)
    cells = {"craze": 0, "crack": 0}
    for seed in range(12):
        for kind in cells:
            out, params = run(lambda kind=kind: T.Holes(area_range=(0.04, 0.08), kinds=(kind,), max_shapes=1),
                              flat, seed)
            drawn = (params["alpha"] > 0).astype(np.uint8)
            cells[kind] += _enclosed_cells(drawn)
            if kind == "craze":
                assert set(params["shapes"]) == {"craze"}
                opened = cv2.morphologyEx(drawn, cv2.MORPH_OPEN, np.ones((4, 4), np.uint8))
                assert opened.sum() < 0.2 * drawn.sum()                    # hairlines, not patches
                assert (out[drawn > 0].mean(axis=1) > 110).mean() > 0.3   # the paper shows: lighter than the print
    # the walls meet at the cells' corners, so one patch closes off many cells; one branching crack few
    assert cells["craze"] >= 3 * max(cells["crack"], 1)


def test_negative_darkens_highlights_with_orange_base():
    white = np.full((16, 16, 3), 255, np.uint8)
    black = np.zeros((16, 16, 3), np.uint8)
    for seed in range(10):
        out_white, _ = run(lambda: T.Negative(kind="color"), white, seed)
        out_black, _ = run(lambda: T.Negative(kind="color"), black, seed)
        r, g, b = (int(v) for v in out_white[0, 0])
        assert max(r, g, b) < 110, "a white scene is dense, dark film"
        assert r > g > b, "the orange base tints highlights R > G > B"
        r0, g0, b0 = (int(v) for v in out_black[0, 0])
        assert r0 > g0 > b0 and r0 > 200, "clear film shows the orange base itself"
        assert r0 - b0 > 60, "orange, not the grey of a plain 255 - x"


def test_negative_is_an_inversion_per_channel():
    ramp = np.repeat(np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 16, axis=0), 3, axis=2)
    out, _ = run(lambda: T.Negative(kind="color"), ramp, seed=4)
    assert np.all(np.diff(out[0].astype(int), axis=0) <= 0)  # brighter scene, denser film
    assert out[0, 0].astype(int).sum() > out[0, -1].astype(int).sum() + 300


def test_bw_negative_is_neutral_and_inverted():
    out_white, _ = run(lambda: T.Negative(kind="bw"), np.full((16, 16, 3), 255, np.uint8), 0)
    out_black, _ = run(lambda: T.Negative(kind="bw"), np.zeros((16, 16, 3), np.uint8), 0)
    assert out_white.max() < 110 and out_black.min() > 150
    assert np.ptp(out_black[0, 0].astype(int)) < 20  # near-neutral base


def test_grayscale_has_equal_channels_and_tone_warms():
    image = photo()
    plain, _ = run(lambda: T.Grayscale(tone_probability=0.0), image, 0)
    assert np.array_equal(plain[..., 0], plain[..., 1]) and np.array_equal(plain[..., 1], plain[..., 2])
    assert np.array_equal(plain[..., 0], cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
    grey = np.full((16, 16, 3), 128, np.uint8)
    toned, _ = run(lambda: T.Grayscale(tone_probability=1.0, strength_range=(1.0, 1.0)), grey, 0)
    r, g, b = (int(v) for v in toned[0, 0])
    assert r > g > b  # sepia


def test_fade_reduces_contrast_and_yellows():
    image = photo()
    out, _params = run(lambda: T.Fade(contrast_range=(0.6, 0.6), yellowing_range=(0.3, 0.3)), image, 0)
    assert luma(out).std() < 0.8 * luma(image).std()
    assert out[..., 0].min() >= int(255 * 0.4) - 1  # blacks lifted to 1 - contrast (red is not yellowed)
    white, _ = run(lambda: T.Fade(yellowing_range=(0.3, 0.3)), np.full((16, 16, 3), 255, np.uint8), 0)
    r, g, b = (int(v) for v in white[0, 0])
    assert r > g > b


@pytest.mark.parametrize("factory", [lambda: T.LowRes(), lambda: T.Blur()], ids=["lowres", "blur"])
def test_lowres_and_blur_lose_high_frequency(factory):
    image = photo(64, 64)
    for seed in range(4):
        out, _ = run(factory, image, seed)
        assert high_frequency(out) < 0.6 * high_frequency(image)


@pytest.mark.parametrize("kind", ["gaussian", "grain"])
def test_noise_strength_follows_sigma(kind):
    flat = np.full((64, 64, 3), 128, np.uint8)
    out, _params = run(lambda: T.Noise(kinds=(kind,), sigma_range=(10, 10)), flat, 0)
    deviation = (out.astype(float) - 128).std()
    assert 7 < deviation < 11  # grain is weighted 1.0 at mid-grey


def test_motion_and_defocus_kernels_are_normalised():
    for kernel in (F.motion_kernel(7.5, 33), F.defocus_kernel(2.5)):
        assert kernel.sum() == pytest.approx(1.0, abs=1e-5) and kernel.min() >= 0


def test_functions_reject_non_rgb_input():
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        F.fade(np.zeros((8, 8), np.uint8), 0.5, 0.0)
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        F.jpeg(np.zeros((8, 8, 3), np.float32), 50)


# --- pipeline ---------------------------------------------------------------------------------------------


def test_default_toml_matches_defaults():
    assert load_pipeline_config(DEFAULT_TOML) == PipelineConfig()


def test_config_from_toml_with_overrides_and_unknown_keys(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("holes_probability = 0.5\njpeg_quality_range = [10, 20]\n")
    config = load_pipeline_config(path, color_weight=0.0)
    assert (
        config.holes_probability == 0.5 and config.jpeg_quality_range == (10, 20) and config.color_weight == 0
    )
    hash(config)  # frozen and hashable (lists became tuples)
    path.write_text("holes_probabilty = 0.5\n")
    with pytest.raises(ValueError, match="holes_probabilty"):
        load_pipeline_config(path)
    with pytest.raises(ValueError, match="fade_probability"):
        PipelineConfig(fade_probability=1.5)


def test_degrade_is_deterministic_and_records_json():
    image = photo()
    out, record = degrade(image, 11)
    again, record_again = degrade(image, 11)
    assert out.tobytes() == again.tobytes() and record == record_again
    assert record["category"] in CATEGORIES
    assert all(op["name"] in T.DEGRADATIONS for op in record["ops"])
    json.dumps(record)
    outputs = {degrade(image, seed)[0].tobytes() for seed in range(6)}
    assert len(outputs) == 6


@pytest.mark.parametrize("shape", [(16, 16), (17, 250), (64, 64), (256, 96)])
def test_degrade_any_size(shape):
    out, _ = degrade(photo(*shape), 5)
    assert out.shape == (*shape, 3) and out.dtype == np.uint8


def test_degrade_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 16"):
        degrade(photo(15, 40), 0)
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        degrade(np.zeros((32, 32), np.uint8), 0)


def test_seed_for_is_per_file():
    assert seed_for("a/b.jpg", 5) == zlib.crc32(b"a/b.jpg") ^ 5
    assert seed_for("a/b.jpg", 5) != seed_for("a/c.jpg", 5) != seed_for("a/c.jpg", 6)


def test_pipeline_save_load_round_trip(tmp_path):
    pipeline = build_pipeline(PipelineConfig(holes_probability=0.9))
    save_pipeline(pipeline, tmp_path / "pipeline.json")
    loaded = load_pipeline(tmp_path / "pipeline.json")
    assert A.to_dict(loaded) == A.to_dict(pipeline)
    image = photo()
    for seed in range(10):
        assert (
            apply_pipeline(pipeline, image, seed)[0].tobytes()
            == apply_pipeline(loaded, image, seed)[0].tobytes()
        )
        assert apply_pipeline(pipeline, image, seed)[1] == apply_pipeline(loaded, image, seed)[1]


def _within(share: float, expected: float, draws: int) -> bool:
    """Within 4 binomial standard deviations (deterministic seeds, so never flaky)."""
    return abs(share - expected) <= 4 * math.sqrt(expected * (1 - expected) / draws) + 1e-9


def test_category_and_damage_shares_follow_the_config():
    draws, image = 400, photo(16, 16)
    config = PipelineConfig()
    records = [degrade(image, seed_for(f"img{i}.png", 0), config)[1] for i in range(draws)]
    counts = Counter(r["category"] for r in records)
    for category, expected in config.category_weights().items():
        assert _within(counts[category] / draws, expected, draws), (category, counts)
    names = [{op["name"] for op in r["ops"]} for r in records]
    assert _within(sum("Holes" in n for n in names) / draws, config.holes_probability, draws)
    light = sum(bool(n & {"Jpeg", "Noise", "SaltPepper", "Blur"}) for n in names) / draws
    assert _within(light, config.light_probability, draws)


def test_config_weights_are_obeyed():
    config = PipelineConfig(
        negative_color_weight=0,
        negative_bw_weight=0,
        bw_weight=0,
        color_weight=1,
        holes_probability=0,
        light_probability=0,
        fade_probability=0,
        lowres_probability=0,
    )
    image = photo()
    for seed in range(20):
        out, record = degrade(image, seed, config)
        assert record == {"category": "color", "ops": []}
        assert np.array_equal(out, image)


def test_scan_blur_softens_the_damage_it_follows_and_keeps_its_label():
    quiet = PipelineConfig(negative_color_weight=0, negative_bw_weight=0, bw_weight=1, color_weight=0,
                           tone_probability=0, fade_probability=0, lowres_probability=0, light_probability=0,
                           holes_probability=1, holes_kinds=("crack",))
    scanned = dataclasses.replace(quiet, scan_blur_probability=1.0)
    image = np.full((64, 64, 3), 80, np.uint8)
    for seed in range(4):
        sharp, sharp_mask = degrade_with_damage(image, seed, quiet)
        soft, soft_mask = degrade_with_damage(image, seed, scanned)
        assert np.array_equal(sharp_mask, soft_mask) and sharp_mask.any()     # the same crack, labelled alike
        assert high_frequency(soft) < 0.6 * high_frequency(sharp)
        _, record = degrade(image, seed, scanned)
        assert [op["name"] for op in record["ops"]] == ["Grayscale", "Holes", "Blur"]


def test_degrade_with_damage_marks_exactly_the_visible_damage():
    only_damage = PipelineConfig(negative_color_weight=0, negative_bw_weight=0, bw_weight=0, color_weight=1,
                                 holes_probability=1.0, light_probability=0, fade_probability=0,
                                 lowres_probability=0)
    image = photo(64, 80)
    for seed in range(6):
        out, mask = degrade_with_damage(image, seed, only_damage)
        assert mask.dtype == bool and mask.shape == image.shape[:2] and mask.any()
        changed = np.abs(out.astype(int) - image.astype(int)).max(axis=2)
        assert np.array_equal(mask, changed > VISIBLE_DAMAGE_LEVELS)
    undamaged = dataclasses.replace(only_damage, holes_probability=0.0)
    out, mask = degrade_with_damage(image, 0, undamaged)
    assert not mask.any() and np.array_equal(out, image)


def test_degrade_with_damage_is_seeded_and_the_scan_comes_after_the_damage():
    config = PipelineConfig(holes_probability=1.0, light_probability=1.0)
    image = photo(64, 80)
    first, again, other = (degrade_with_damage(image, seed, config) for seed in (3, 3, 4))
    assert first[0].tobytes() == again[0].tobytes() and np.array_equal(first[1], again[1])
    assert first[0].tobytes() != other[0].tobytes()
    # the mask is painted damage, not the scan's noise or JPEG over the whole photo
    assert 0 < first[1].mean() < 0.5
