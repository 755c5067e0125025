"""Evaluation: fixed degradation categories, the models against the baselines, a report and every number.

Every ground-truth photo is scaled so its long side is at most `max_side` (default 512 px, area filter)
*before* anything else: the ground truth, the degraded inputs and the restorations all have that size, so a
restoration is one network pass at the CLI's default render size (`render_factor` 32 = 512 px; two for a
suspected negative) and the evaluation of 46 photos x 12 categories fits in minutes on a CPU. Each category
is a fixed recipe of the project's degradation transforms with fixed parameters; the random parts (which
pixels get salt and pepper, the noise field, the shape of the holes) come from a seed per (photo, category), so a run is reproducible
and two runs with the same seed compare like with like.

Methods per category: "input" (the degraded photo itself), "classical" (`restore.baselines.classical`, told
the category's damage, unlike the model), and each model, run through `restore.inference.Restorer`, the
same path the `restore` command takes.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import albumentations as A
import cv2
import numpy as np

from degradations.pipeline import seed_for
from degradations.transforms import Blur, Grayscale, Holes, Jpeg, Negative, Noise, SaltPepper
from restore import metrics
from restore.baselines import Hints, classical
from restore.imageio import read_image, write_image

log = logging.getLogger(__name__)

DEFAULT_MAX_SIDE = 512
MIN_SIDE = 16                 # smaller photos cannot carry the damage shapes, nor SSIM's 7x7 windows
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
METRIC_NAMES = ("psnr", "ssim", "mae", "delta_e", "colourfulness_ratio")
METRIC_HEADERS = {"psnr": "PSNR dB ↑", "ssim": "SSIM ↑", "mae": "MAE ↓", "delta_e": "ΔE2000 ↓",
                  "colourfulness_ratio": "colourf. ratio (→1)"}
BASELINES = ("input", "classical")
SHEET_TILE = 176              # px: contact-sheet tiles fit in a square of this side
SHEET_PHOTOS = 4              # photos per category sheet
NO_REFERENCE_SHEET_ROWS = 8   # photos per no-reference sheet


# --- the fixed categories ------------------------------------------------------------------------------------

# Mid-range film parameters of the degradation pipeline's defaults, fixed.
_COLOR_NEGATIVE = {"kind": "color", "base_rgb_range": ((0.86, 0.86), (0.44, 0.44), (0.17, 0.17)),
                   "gamma_rgb_range": ((0.55, 0.55), (0.60, 0.60), (0.65, 0.65)), "exposure_range": (1.0, 1.0),
                   "flare_range": (0.01, 0.01), "gain_range": (1.0, 1.0)}
_BW_NEGATIVE = {"kind": "bw", "bw_base_range": (0.81, 0.81), "bw_tint": 0.0, "bw_gamma_range": (0.65, 0.65),
                "exposure_range": (1.0, 1.0), "flare_range": (0.01, 0.01), "gain_range": (1.0, 1.0)}


def _gray() -> Grayscale:
    return Grayscale(tone_probability=0.0)


def _salt_pepper(amount: float) -> SaltPepper:
    return SaltPepper(amount_range=(amount, amount), salt_range=(0.5, 0.5))


def _gaussian(sigma: float) -> Noise:
    # independent noise per channel (monochrome 0): the CBSD68 colour-denoising convention
    return Noise(kinds=("gaussian",), sigma_range=(sigma, sigma), monochrome_probability=0.0)


# The damage kinds of the colour categories, fixed as they were before Holes learnt "crack", so their numbers
# stay comparable with the cards measured then; the print category takes every kind.
_LEGACY_HOLE_KINDS = ("stain", "blob", "tear", "scratch", "scratch", "dust")


def _holes(kinds: tuple[str, ...] = _LEGACY_HOLE_KINDS) -> Holes:
    return Holes(area_range=(0.02, 0.04), kinds=kinds)


@dataclass(frozen=True)
class Category:
    name: str
    description: str
    build: Callable[[], list[A.BasicTransform]]   # the recipe: fixed-parameter transforms, in order
    hints: Hints                                  # what the classical pipeline is told
    expected_type: str                            # what Restorer should detect: negative | bw | color
    colorize: bool = False                        # no colour in the input: the model has to invent it


CATEGORIES: dict[str, Category] = {c.name: c for c in (
    Category("bw", "black-and-white print (luma)", lambda: [_gray()], Hints(), "bw", True),
    Category("bw_jpeg", "black-and-white, JPEG quality 40", lambda: [_gray(), Jpeg(quality_range=(40, 40))],
             Hints(), "bw", True),
    Category("bw_saltpepper", "black-and-white, salt-and-pepper on 1% of pixels",
             lambda: [_gray(), _salt_pepper(0.01)], Hints(impulse_noise=True), "bw", True),
    Category("bw_blur", "black-and-white, gaussian blur sigma 1.5 px",
             lambda: [_gray(), Blur(kinds=("gaussian",), sigma_range=(1.5, 1.5))], Hints(), "bw", True),
    Category("bw_holes", "black-and-white print + cracks/scratches/holes/stains/dust on 2-4% of it",
             lambda: [_gray(), _holes(Holes().kinds)], Hints(holes=True), "bw", True),
    Category("negative_color", "colour negative on an orange base (mid-range film)",
             lambda: [Negative(**_COLOR_NEGATIVE)], Hints(negative=True), "negative"),
    Category("negative_bw", "black-and-white negative", lambda: [Negative(**_BW_NEGATIVE)],
             Hints(negative=True), "negative", True),
    Category("negative_color_noise", "colour negative + gaussian noise sigma 10 on the scan",
             lambda: [Negative(**_COLOR_NEGATIVE), _gaussian(10.0)], Hints(negative=True, gaussian_noise=True),
             "negative"),
    Category("negative_color_holes", "colour negative + holes/scratches/stains on 2-4% of the scan",
             lambda: [Negative(**_COLOR_NEGATIVE), _holes()], Hints(negative=True, holes=True), "negative"),
    Category("color_saltpepper_jpeg", "colour, salt-and-pepper on 1% of pixels, then JPEG quality 50",
             lambda: [_salt_pepper(0.01), Jpeg(quality_range=(50, 50))], Hints(impulse_noise=True), "color"),
    Category("color_holes", "colour, holes/scratches/stains on 2-4% of the photo", lambda: [_holes()],
             Hints(holes=True), "color"),
    Category("color_gaussian25", "colour, gaussian noise sigma 25 (0-255), per channel",
             lambda: [_gaussian(25.0)], Hints(gaussian_noise=True), "color"),
)}

# Targets of issue 7, checked per model and category in the report.
TARGET_MARGIN_DB = 2.0            # PSNR above the classical pipeline
NEGATIVE_PSNR_DB = 24.0           # colour-negative categories
COLOURFULNESS_RANGE = (0.6, 1.2)  # colourfulness ratio of colorized outputs
DENOISE_REFERENCE_DB = 31.23      # CDnCNN-B on CBSD68, sigma 25
DENOISE_TOLERANCE_DB = 2.0


def category_seed(rel_path: str, category: str, seed: int) -> int:
    """Seed of one (photo, category): independent of run order, threads and the other categories."""
    return seed_for(f"{rel_path}#{category}", seed)


_local = threading.local()


def _pipeline(category: Category) -> A.Compose:
    """One built Compose per category and thread (a Compose re-seeded per call is not thread-safe)."""
    cache = getattr(_local, "pipelines", None)
    if cache is None:
        cache = _local.pipelines = {}
    if category.name not in cache:
        cache[category.name] = A.Compose(category.build())
    return cache[category.name]


def degrade_category(image: np.ndarray, category: str | Category, seed: int) -> np.ndarray:
    """Apply a category's fixed recipe with `seed`; uint8 RGB in, uint8 RGB of the same shape out."""
    cat = CATEGORIES[category] if isinstance(category, str) else category
    pipeline = _pipeline(cat)
    # one generator pair for the whole recipe, as degradations.pipeline does
    pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))
    return pipeline(image=np.ascontiguousarray(image))["image"]


def recipe(category: str) -> list[dict[str, Any]]:
    """A category's transforms with every parameter, as albumentations serialises them (for metrics.json)."""
    return A.to_dict(A.Compose(CATEGORIES[category].build()))["transform"]["transforms"]


def resolve_categories(names: Iterable[str] | None) -> list[str]:
    if names is None:
        return list(CATEGORIES)
    names = [n.strip() for n in names if n.strip()]
    unknown = [n for n in names if n not in CATEGORIES]
    if unknown:
        raise ValueError(f"unknown categor{'ies' if len(unknown) > 1 else 'y'} {', '.join(unknown)}; "
                         f"known: {', '.join(CATEGORIES)}")
    if not names:
        raise ValueError("no categories selected")
    return names


# --- photos ---------------------------------------------------------------------------------------------------

def find_photos(data_dir: str | Path, limit: int | None = None) -> list[str]:
    """Image files under `data_dir` (recursive), as sorted POSIX paths relative to it; the first `limit`."""
    root = Path(data_dir)
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder")
    photos = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not photos:
        raise ValueError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return photos[:limit] if limit is not None else photos


def fit_max_side(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Scale down (area filter) so the long side is at most `max_side`; never up. None: unchanged."""
    if max_side is None or max(image.shape[:2]) <= max_side:
        return image
    scale = max_side / max(image.shape[:2])
    height, width = (max(1, round(s * scale)) for s in image.shape[:2])
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def load_photo(path: Path, max_side: int | None) -> np.ndarray:
    return np.ascontiguousarray(fit_max_side(read_image(path).rgb, max_side))


# --- models ---------------------------------------------------------------------------------------------------

def model_labels(weights: Sequence[str | Path]) -> list[str]:
    """Short unique labels for weights files: the file stem, numbered where stems repeat."""
    stems = [Path(w).stem for w in weights]
    labels = []
    for index, stem in enumerate(stems):
        label = stem if stems.count(stem) == 1 else f"{stem}-{index + 1}"
        if label in BASELINES:
            label = f"model-{label}"
        labels.append(label)
    return labels


def load_restorers(weights: Sequence[str | Path], device: str = "auto", render_factor: int | None = None,
                   saturation: float = 1.0, find_damage: bool = True, denoise: bool = True,
                   detector: str | Path | None = None) -> dict:
    """label -> Restorer for each weights file (the CLI's inference path, with the damage detector `detector`,
    by default the shipped one, unless `find_damage` is False, and the shipped denoiser unless `denoise` is
    False)."""
    from restore.inference import Restorer  # torch and the network stack load only when models are used

    kwargs = {"render_factor": render_factor} if render_factor is not None else {}
    kwargs.update(saturation=saturation, find_damage=find_damage, denoise=denoise,
                  detector_weights=detector if find_damage else None)
    return {label: Restorer(weights=path, device=device, **kwargs)
            for label, path in zip(model_labels(weights), weights)}


# --- contact sheets -------------------------------------------------------------------------------------------

def _tile(image: np.ndarray, side: int = SHEET_TILE) -> np.ndarray:
    """`image` fitted into a side x side square on a mid-grey background."""
    scale = side / max(image.shape[:2])
    height, width = (max(1, round(s * scale)) for s in image.shape[:2])
    small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    canvas = np.full((side, side, 3), 128, np.uint8)
    top, left = (side - height) // 2, (side - width) // 2
    canvas[top:top + height, left:left + width] = small
    return canvas


def contact_sheet(rows: Sequence[Sequence[np.ndarray]], labels: Sequence[str], side: int = SHEET_TILE,
                  gap: int = 4) -> np.ndarray:
    """A grid of tiles (one row per photo) under a header naming each column; uint8 RGB."""
    columns = len(labels)
    header = 22
    width = columns * side + (columns + 1) * gap
    height = header + len(rows) * (side + gap) + gap
    sheet = np.full((height, width, 3), 255, np.uint8)
    for column, label in enumerate(labels):
        x = gap + column * (side + gap)
        text = label if len(label) <= 22 else label[:20] + ".."
        cv2.putText(sheet, text, (x + 2, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for row, images in enumerate(rows):
        y = header + row * (side + gap)
        for column, image in enumerate(images):
            x = gap + column * (side + gap)
            sheet[y:y + side, x:x + side] = _tile(image, side)
    return sheet


# --- the evaluation -------------------------------------------------------------------------------------------

@dataclass
class _Prepared:
    """One photo's ground truth, degraded inputs and baseline results."""

    rel_path: str
    truth: np.ndarray
    degraded: dict[str, np.ndarray] = field(default_factory=dict)
    scores: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)   # cat -> method -> metric
    sheet: dict[str, list[np.ndarray]] = field(default_factory=dict)               # cat -> tiles so far


def _prepare(root: Path, rel_path: str, categories: Sequence[str], seed: int, max_side: int | None,
             keep_sheet: bool) -> _Prepared:
    truth = load_photo(root / rel_path, max_side)
    if min(truth.shape[:2]) < MIN_SIDE:
        raise ValueError(f"{root / rel_path}: too small to evaluate ({truth.shape[1]}x{truth.shape[0]}; "
                         f"both sides must be at least {MIN_SIDE} px)")
    prepared = _Prepared(rel_path, truth)
    for name in categories:
        category = CATEGORIES[name]
        degraded = degrade_category(truth, category, category_seed(rel_path, name, seed))
        restored = classical(degraded, category.hints)
        input_scores = metrics.full_reference(degraded, truth)
        # the classical pipeline leaves some categories alone: same pixels, same numbers
        same = np.array_equal(restored, degraded)
        prepared.degraded[name] = degraded
        prepared.scores[name] = {"input": input_scores,
                                 "classical": dict(input_scores) if same else metrics.full_reference(restored, truth)}
        if keep_sheet:
            prepared.sheet[name] = [_tile(degraded), _tile(restored)]
    return prepared


def _small_net_of(restorer: Any, kind: str) -> dict[str, Any] | None:
    """What damage detector, denoiser or negative denoiser (`kind`) a restorer ran (weights file, name, version, sha256), or None."""
    if getattr(restorer, kind, None) is None:
        return None
    card = getattr(restorer, f"{kind}_card", {}) or {}
    return {key: card.get(key) for key in ("weights_file", "name", "version", "sha256")}


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def _mean(values: Iterable[float]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def evaluate(data_dir: str | Path, weights_list: Sequence[str | Path] = (), seed: int = 0,
             out_dir: str | Path = "eval_report", limit: int | None = None,
             categories: Iterable[str] | None = None, max_side: int | None = DEFAULT_MAX_SIDE,
             device: str = "auto", render_factor: int | None = None, saturation: float = 1.0, workers: int = 2,
             sheet_photos: int = SHEET_PHOTOS, restorers: dict | None = None, find_damage: bool = True,
             denoise: bool = True, progress: Callable[[int, int, str], None] | None = None,
             detector: str | Path | None = None) -> dict[str, Any]:
    """Degrade, restore and score every photo of `data_dir` in every category; write the report.

    Writes `out_dir`/report.md, metrics.json and sheets/<category>.jpg. `restorers` (label -> object with
    `restore_array`) replaces loading `weights_list`; `find_damage` / `denoise` False load them without the damage
    detector / the denoiser; `detector` names damage detector weights other than the shipped ones.
    `progress(done, total, what)` is called as work finishes.
    Returns the metrics dictionary written to metrics.json.
    """
    start = time.perf_counter()
    root = Path(data_dir)
    names = resolve_categories(categories)
    photos = find_photos(root, limit)
    if restorers is None:
        restorers = (load_restorers(list(weights_list), device, render_factor, saturation, find_damage, denoise,
                                    detector) if weights_list else {})
    models = list(restorers)
    out = Path(out_dir)
    (out / "sheets").mkdir(parents=True, exist_ok=True)

    total = len(photos) * len(names) * (1 + len(models))
    done = 0

    def advance(what: str, count: int = 1) -> None:
        nonlocal done
        done += count
        if progress is not None:
            progress(done, total, what)

    per_image: dict[str, dict[str, dict[str, dict[str, float]]]] = {n: {} for n in names}
    model_info: dict[str, dict[str, dict[str, dict[str, Any]]]] = {m: {n: {} for n in names} for m in models}
    sheets: dict[str, list[list[np.ndarray]]] = {n: [] for n in names}
    network_seconds = 0.0
    pending: list[tuple[str, str, str, Future]] = []

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        # prepare photos ahead (degradation, classical, baseline metrics) while the network runs in this thread
        queue: list[Future] = []
        ahead = max(1, workers)
        for index in range(min(ahead, len(photos))):
            queue.append(pool.submit(_prepare, root, photos[index], names, seed, max_side, index < sheet_photos))
        for index, rel_path in enumerate(photos):
            prepared: _Prepared = queue.pop(0).result()
            nxt = index + ahead
            if nxt < len(photos):
                queue.append(pool.submit(_prepare, root, photos[nxt], names, seed, max_side, nxt < sheet_photos))
            for name in names:
                per_image[name][rel_path] = prepared.scores[name]
            advance(rel_path, len(names))
            rows = {name: list(prepared.sheet.get(name, [])) for name in names}
            for model in models:
                for name in names:
                    try:
                        restored, info = restorers[model].restore_array(prepared.degraded[name])
                    except (ValueError, RuntimeError) as error:  # name the photo; the restorer cannot
                        raise ValueError(f"{root / rel_path} ({name}, {model}): restoration failed: "
                                         f"{error}") from None
                    if restored.shape != prepared.truth.shape:
                        raise RuntimeError(f"{model}: restored {rel_path} to {restored.shape}, expected "
                                           f"{prepared.truth.shape}")
                    network_seconds += float(info.get("seconds", 0.0))
                    model_info[model][name][rel_path] = {"input_type": info.get("input_type"),
                                                         "seconds": round(float(info.get("seconds", 0.0)), 3)}
                    pending.append((name, rel_path, model, pool.submit(metrics.full_reference, restored,
                                                                       prepared.truth)))
                    if index < sheet_photos:
                        rows[name].append(_tile(restored))
                    advance(f"{rel_path} {model} {name}")
            if index < sheet_photos:
                for name in names:
                    sheets[name].append(rows[name] + [_tile(prepared.truth)])
        for name, rel_path, model, future in pending:
            per_image[name][rel_path][model] = future.result()

    methods = list(BASELINES) + models
    summary = {name: {method: {metric: _mean(per_image[name][p][method][metric] for p in photos)
                               for metric in METRIC_NAMES} for method in methods} for name in names}
    detection = {model: {name: _mean(float(model_info[model][name][p]["input_type"]
                                           == CATEGORIES[name].expected_type) for p in photos)
                         for name in names} for model in models}
    targets = check_targets(summary, models)
    result = {
        "meta": {
            "data_dir": str(root), "photos": len(photos), "seed": seed, "max_side": max_side,
            "render_factor": sorted({getattr(r, "render_factor", render_factor) for r in restorers.values()}
                                    - {None}),
            "device": sorted({str(getattr(r, "device", device)) for r in restorers.values()} or [device]),
            "saturation": sorted({getattr(r, "saturation", saturation) for r in restorers.values()}),
            "categories": {name: CATEGORIES[name].description for name in names},
            "recipes": {name: recipe(name) for name in names},
            "models": {label: str(path) for label, path in zip(models, weights_list)} if weights_list else
                      {label: None for label in models},
            "detectors": {label: _small_net_of(restorers[label], "detector") for label in models},
            "denoisers": {label: _small_net_of(restorers[label], "denoiser") for label in models},
            "negative_denoisers": {label: _small_net_of(restorers[label], "negative_denoiser") for label in models},
            "methods": methods,
            "seconds": round(time.perf_counter() - start, 1),
            "network_seconds": round(network_seconds, 1),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "summary": summary,
        "detection": detection,
        "targets": targets,
        "images": per_image,
        "model_info": model_info,
    }
    (out / "metrics.json").write_text(json.dumps(_nan_to_none(result), indent=1) + "\n", encoding="utf-8")
    for name in names:
        labels = ["input", "classical"] + models + ["ground truth"]
        if sheets[name]:
            write_image(out / "sheets" / f"{name}.jpg", contact_sheet(sheets[name], labels), quality=85)
    (out / "report.md").write_text(render_report(result), encoding="utf-8")
    return result


# --- targets and the report -----------------------------------------------------------------------------------

def check_targets(summary: dict, models: Sequence[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """Issue 7's targets per model and category: {model: {category: {target: {"value", "goal", "met"}}}}."""
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for model in models:
        result[model] = {}
        for name, methods in summary.items():
            ours, base = methods[model], methods["classical"]
            checks = {
                "psnr_vs_classical": {"value": ours["psnr"] - base["psnr"], "goal": f">= +{TARGET_MARGIN_DB} dB",
                                      "met": ours["psnr"] - base["psnr"] >= TARGET_MARGIN_DB},
                "delta_e_vs_classical": {"value": ours["delta_e"] - base["delta_e"], "goal": "< 0",
                                         "met": ours["delta_e"] < base["delta_e"]},
            }
            if name.startswith("negative_color"):
                checks["negative_psnr"] = {"value": ours["psnr"], "goal": f">= {NEGATIVE_PSNR_DB} dB",
                                           "met": ours["psnr"] >= NEGATIVE_PSNR_DB}
            if CATEGORIES[name].colorize:
                low, high = COLOURFULNESS_RANGE
                ratio = ours["colourfulness_ratio"]
                checks["colourfulness_ratio"] = {"value": ratio, "goal": f"{low}-{high}",
                                                 "met": bool(low <= ratio <= high)}
            if name == "color_gaussian25":
                goal = DENOISE_REFERENCE_DB - DENOISE_TOLERANCE_DB
                checks["denoise_psnr"] = {"value": ours["psnr"], "goal": f">= {goal:.2f} dB (CDnCNN-B 31.23)",
                                          "met": ours["psnr"] >= goal}
            result[model][name] = checks
    return result


def _format(metric: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if metric == "psnr":
        return f"{value:.2f}"
    if metric in ("ssim", "mae"):
        return f"{value:.4f}"
    if metric == "delta_e":
        return f"{value:.2f}"
    return f"{value:.2f}"


def _value(value: Any) -> float:
    return math.nan if value is None else float(value)


def verdicts(summary: dict, models: Sequence[str]) -> dict[str, list[str]]:
    """Plain sentences per category: where a model does not beat the classical pipeline, and how each later
    model (e.g. after the GAN stage) wins or loses against the first (e.g. the MSE-pretrained generator)."""
    lines: dict[str, list[str]] = {}
    for name, methods in summary.items():
        out = []
        base = methods["classical"]
        for model in models:
            ours = methods[model]
            psnr_gap = _value(ours["psnr"]) - _value(base["psnr"])
            de_gap = _value(ours["delta_e"]) - _value(base["delta_e"])
            if not (psnr_gap > 0 and de_gap < 0):
                out.append(f"**{model} does not beat the classical pipeline here**: PSNR {psnr_gap:+.2f} dB, "
                           f"ΔE2000 {de_gap:+.2f} against it.")
            else:
                out.append(f"{model} beats the classical pipeline: PSNR {psnr_gap:+.2f} dB, ΔE2000 {de_gap:+.2f}.")
        for model in models[1:]:
            reference = models[0]
            wins, losses = [], []
            for metric in METRIC_NAMES:
                a, b = _value(methods[model][metric]), _value(methods[reference][metric])
                if metrics.better(metric, a, b):
                    wins.append(f"{METRIC_HEADERS[metric].split()[0]} {_format(metric, a)} vs {_format(metric, b)}")
                elif metrics.better(metric, b, a):
                    losses.append(f"{METRIC_HEADERS[metric].split()[0]} {_format(metric, a)} vs "
                                  f"{_format(metric, b)}")
            out.append(f"{model} vs {reference}: wins on {', '.join(wins) or 'nothing'}; "
                       f"loses on {', '.join(losses) or 'nothing'}.")
        lines[name] = out
    return lines


def summary_table(result: dict[str, Any]) -> str:
    """Markdown table, one row per category, "PSNR / ΔE2000" per method: the README's and model card's table."""
    methods = result["meta"]["methods"]
    lines = ["| category | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
    for name, by_method in result["summary"].items():
        cells = [f"{_format('psnr', _value(by_method[m]['psnr']))} / "
                 f"{_format('delta_e', _value(by_method[m]['delta_e']))}" for m in methods]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _relative_to_cwd(path: str | None) -> str | None:
    """`path` relative to the working directory when it lies under it, else as given."""
    if path is None:
        return None
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def record_in_card(result: dict[str, Any], weights_path: str | Path, label: str | None = None) -> dict[str, Any]:
    """Write this evaluation into the JSON card beside `weights_path` (numbers come from here, never by hand).

    Stores the summary (every category, every method: input, classical and the model), the targets check,
    the markdown summary table and the run's meta (data, seed, size, recipes). Returns the updated card.
    """
    from restore.weights import card_path, read_card

    card = read_card(weights_path)
    label = label or model_labels([weights_path])[0]
    keep = ["input", "classical", label]
    meta = {k: v for k, v in result["meta"].items() if k != "methods"}
    # a card travels with the project: a model path under the working directory is kept relative to it
    meta["models"] = {name: _relative_to_cwd(path) for name, path in (meta.get("models") or {}).items()}
    card["evaluation"] = {
        "meta": meta,
        "model_label": label,
        "summary": {name: {m: by_method[m] for m in keep if m in by_method}
                    for name, by_method in result["summary"].items()},
        "targets": result.get("targets", {}).get(label, {}),
        "table": summary_table({"meta": {"methods": [m for m in result["meta"]["methods"] if m in keep]},
                                "summary": result["summary"]}),
    }
    card_path(weights_path).write_text(json.dumps(_nan_to_none(card), indent=2) + "\n", encoding="utf-8")
    return card


def render_report(result: dict[str, Any]) -> str:
    """The markdown report of an `evaluate` result."""
    meta, summary = result["meta"], result["summary"]
    methods = meta["methods"]
    models = [m for m in methods if m not in BASELINES]
    lines = [
        "# Evaluation report",
        "",
        (f"Data: `{meta['data_dir']}`, {meta['photos']} photos, long side scaled to at most {meta['max_side']} px "
        f"before degrading; seed {meta['seed']}; {meta['seconds']} s in all ({meta['network_seconds']} s in the "
        f"restorer)."),
        "",
        ("Rows: **input** = the degraded photo itself; **classical** = no-learning pipeline (told the category: "
        "negative inversion with film-base removal, switching median for impulses, non-local means for "
        "gaussian noise, OpenCV inpainting of detectable holes); then each model through `Restorer`. "
        "Columns: PSNR (dB, higher better), SSIM (higher better), MAE (mean absolute error on 0-1, lower "
        "better), ΔE2000 (mean CIEDE2000 colour difference, lower better), colourfulness ratio "
        "(Hasler-Süsstrunk, output over ground truth; 1 is right, below 1 duller)."),
        "",
    ]
    if models:
        for model, path in meta["models"].items():
            lines.append(f"- model **{model}**: `{path}`")
        lines.append("")
        lines += ["## Summary: PSNR dB / ΔE2000 per category", "", summary_table(result), ""]
        losing = [(m, n) for n, by_method in summary.items() for m in models
                  if not (_value(by_method[m]["psnr"]) > _value(by_method["classical"]["psnr"])
                          and _value(by_method[m]["delta_e"]) < _value(by_method["classical"]["delta_e"]))]
        if losing:
            lines.append("**Where a model does not beat the classical pipeline (higher PSNR and lower ΔE):** "
                         + ", ".join(f"{m} on {n}" for m, n in losing) + ".")
        else:
            lines.append("Every model beats the classical pipeline (higher PSNR and lower ΔE) in every category.")
        lines.append("")
    else:
        lines += ["No model was given: baselines only.", "", "## Summary: PSNR dB / ΔE2000 per category", "",
                  summary_table(result), ""]

    talk = verdicts(summary, models)
    for name, by_method in summary.items():
        lines += [f"## {name}", "", f"{meta['categories'][name]}.", ""]
        lines.append("| method | " + " | ".join(METRIC_HEADERS[m] for m in METRIC_NAMES) + " |")
        lines.append("|---|" + "---:|" * len(METRIC_NAMES))
        for method in methods:
            cells = [_format(metric, _value(by_method[method][metric])) for metric in METRIC_NAMES]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
        for sentence in talk.get(name, []):
            lines.append(f"- {sentence}")
        for model in models:
            share = _value(result["detection"][model][name])
            lines.append(f"- {model} detected the input type ({CATEGORIES[name].expected_type}) in "
                         f"{share:.0%} of photos.")
        lines += ["", f"![{name}](sheets/{name}.jpg)", ""]

    if models:
        lines += ["## Targets (issue 7)", "",
                  ("PSNR at least 2 dB above the classical pipeline and lower ΔE2000 in every category; colour "
                  f"negatives at least {NEGATIVE_PSNR_DB:g} dB; colourfulness ratio of colorized outputs in "
                  f"{COLOURFULNESS_RANGE[0]}-{COLOURFULNESS_RANGE[1]}; colour + gaussian sigma 25 within "
                  f"{DENOISE_TOLERANCE_DB:g} dB of CDnCNN-B's {DENOISE_REFERENCE_DB} dB (CBSD68). **no** marks a miss."),
                  "", "| model | category | PSNR − classical | ΔE − classical | other target | all met |",
                  "|---|---|---:|---:|---|---|"]

        def mark(check: dict) -> str:
            return "" if check["met"] else " **no**"

        for model, by_category in result["targets"].items():
            for name, checks in by_category.items():
                psnr_check, de_check = checks["psnr_vs_classical"], checks["delta_e_vs_classical"]
                others = [f"{target} {_value(check['value']):.2f} (goal {check['goal']}){mark(check)}"
                          for target, check in checks.items()
                          if target not in ("psnr_vs_classical", "delta_e_vs_classical")]
                met = all(check["met"] for check in checks.values())
                lines.append(f"| {model} | {name} | {_value(psnr_check['value']):+.2f}{mark(psnr_check)} | "
                             f"{_value(de_check['value']):+.2f}{mark(de_check)} | {'; '.join(others) or '-'} | "
                             f"{'yes' if met else '**no**'} |")
        lines.append("")
    return "\n".join(lines)


# --- no-reference mode ----------------------------------------------------------------------------------------

def evaluate_no_reference(data_dir: str | Path, weights_list: Sequence[str | Path] = (),
                          out_dir: str | Path = "eval_report", limit: int | None = None,
                          max_side: int | None = DEFAULT_MAX_SIDE, device: str = "auto",
                          render_factor: int | None = None, saturation: float = 1.0, restorers: dict | None = None,
                          rows_per_sheet: int = NO_REFERENCE_SHEET_ROWS, find_damage: bool = True,
                          denoise: bool = True, progress: Callable[[int, int, str], None] | None = None,
                          detector: str | Path | None = None) -> dict[str, Any]:
    """Photos without ground truth (real old photos): contact sheets input | each model, no metrics.

    Writes `out_dir`/sheets/no_reference_NN.jpg, report.md and metrics.json (the detected input type and time
    of each restoration). Returns what metrics.json holds.
    """
    start = time.perf_counter()
    root = Path(data_dir)
    photos = find_photos(root, limit)
    if restorers is None:
        restorers = (load_restorers(list(weights_list), device, render_factor, saturation, find_damage, denoise,
                                    detector) if weights_list else {})
    if not restorers:
        raise ValueError("no-reference mode needs at least one model (--weights FILE, or a shipped model)")
    models = list(restorers)
    out = Path(out_dir)
    (out / "sheets").mkdir(parents=True, exist_ok=True)
    info: dict[str, dict[str, Any]] = {}
    rows: list[list[np.ndarray]] = []
    sheet_names: list[str] = []
    total = len(photos) * len(models)
    done = 0

    def flush() -> None:
        name = f"no_reference_{len(sheet_names) + 1:02d}.jpg"
        write_image(out / "sheets" / name, contact_sheet(rows, ["input"] + models), quality=85)
        sheet_names.append(name)
        rows.clear()

    for rel_path in photos:
        image = load_photo(root / rel_path, max_side)
        row = [_tile(image)]
        info[rel_path] = {}
        for model in models:
            restored, details = restorers[model].restore_array(image)
            info[rel_path][model] = {"input_type": details.get("input_type"),
                                     "seconds": round(float(details.get("seconds", 0.0)), 3)}
            row.append(_tile(restored))
            done += 1
            if progress is not None:
                progress(done, total, f"{rel_path} {model}")
        rows.append(row)
        if len(rows) == rows_per_sheet:
            flush()
    if rows:
        flush()
    result = {"meta": {"data_dir": str(root), "photos": len(photos), "max_side": max_side, "mode": "no-reference",
                       "models": {label: str(path) for label, path in zip(models, weights_list)} if weights_list
                       else {label: None for label in models},
                       "seconds": round(time.perf_counter() - start, 1)},
              "images": info}
    (out / "metrics.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    columns = " | ".join(["input", *models])
    lines = ["# No-reference report", "",
             (f"Data: `{root}`, {len(photos)} photos without ground truth (long side at most {max_side} px): "
             f"contact sheets only, {columns}."), ""]
    lines += [f"![{name}](sheets/{name})" for name in sheet_names]
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return result


# --- comparing two runs ---------------------------------------------------------------------------------------

def load_metrics(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: cannot read metrics JSON ({error})") from None
    if "summary" not in data:
        raise ValueError(f"{path}: not a restore-eval metrics.json (no 'summary'; no-reference runs have none)")
    return data


def comparability(old_json: str | Path, new_json: str | Path) -> list[str]:
    """Why two runs' means may not be comparable: different photos, seed or size (empty when they match)."""
    old, new = load_metrics(old_json)["meta"], load_metrics(new_json)["meta"]
    reasons = [f"{key} differs: {old.get(key)!r} -> {new.get(key)!r}"
               for key in ("data_dir", "photos", "seed", "max_side", "render_factor", "saturation")
               if old.get(key) != new.get(key)]
    old_recipes, new_recipes = old.get("recipes", {}), new.get("recipes", {})
    changed = [name for name in old_recipes if name in new_recipes and old_recipes[name] != new_recipes[name]]
    if changed:
        reasons.append(f"degradation recipes differ for {', '.join(changed)}")
    return reasons


def compare(old_json: str | Path, new_json: str | Path) -> list[dict[str, Any]]:
    """Per category, method and metric: old and new means, the difference, and whether new is better.

    Only (category, method) pairs present in both runs are compared; the rest are listed with None values.
    """
    old, new = load_metrics(old_json)["summary"], load_metrics(new_json)["summary"]
    rows = []
    for name in list(dict.fromkeys(list(old) + list(new))):
        methods = list(dict.fromkeys(list(old.get(name, {})) + list(new.get(name, {}))))
        for method in methods:
            before, after = old.get(name, {}).get(method), new.get(name, {}).get(method)
            for metric in METRIC_NAMES:
                a = _value(before.get(metric)) if before else math.nan
                b = _value(after.get(metric)) if after else math.nan
                both = before is not None and after is not None
                rows.append({"category": name, "method": method, "metric": metric,
                             "old": None if before is None else a, "new": None if after is None else b,
                             "difference": b - a if both else None,
                             "better": metrics.better(metric, b, a) if both else None,
                             "worse": metrics.better(metric, a, b) if both else None})
    return rows
