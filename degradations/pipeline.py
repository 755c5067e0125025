"""The degradation pipeline: which kind of old photo an input imitates and what damage it carries.

The default recipe follows the design study (``shared/seeds/photo_restoration_fastai_gan_es.txt``): about
half the inputs are film negatives and half black-and-white prints, a share of colour photos is kept in
colour (so the model also learns to repair colour scans without recolouring them), ~65% carry one or more
light degradations (JPEG, noise or film grain, salt-and-pepper, blur) and ~25% holes, stains and
scratches; fading and low resolution come on top, as in real scans.

``degrade(image, seed)`` is the entry point for both the ``degrade`` command and on-the-fly use in a data
loader: the same image, config and seed always give the same bytes.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import tomllib
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np

from degradations.transforms import (
    DEGRADATIONS,
    Blur,
    Fade,
    Grayscale,
    Holes,
    Jpeg,
    LowRes,
    Negative,
    Noise,
    SaltPepper,
)

__all__ = [
    "CATEGORIES",
    "MIN_SIZE",
    "VISIBLE_DAMAGE_LEVELS",
    "PipelineConfig",
    "apply_pipeline",
    "build_pipeline",
    "degrade",
    "degrade_with_damage",
    "load_pipeline",
    "load_pipeline_config",
    "save_pipeline",
    "seed_for",
]

# What the input imitates; every record names one.
CATEGORIES = ("negative_color", "negative_bw", "bw", "color")

# Smallest side degrade() accepts: below this, blur kernels and damage shapes stop making sense.
MIN_SIZE = 16


@dataclass(frozen=True)
class PipelineConfig:
    """Probabilities and ranges of the degradation pipeline (defaults: the design's recipe).

    Ranges are (low, high) and drawn uniformly; sizes are pixels of the image being degraded.
    """

    # --- category: relative weights (normalised to sum 1) of what the input imitates
    negative_color_weight: float = 0.30  # colour negatives on an orange base
    negative_bw_weight: float = (
        0.125  # black-and-white negatives: with the above, half the data are negatives
    )
    bw_weight: float = 0.425  # black-and-white prints: the other half, less the colour share
    color_weight: float = 0.15  # kept in colour: teaches repair without recolouring
    # --- film negatives (colour: per channel R, G, B)
    negative_base_rgb_range: tuple = ((0.78, 0.95), (0.36, 0.52), (0.12, 0.22))  # orange-mask transmittance
    negative_gamma_rgb_range: tuple = (
        (0.50, 0.60),
        (0.55, 0.65),
        (0.60, 0.70),
    )  # density slope per dye layer
    negative_bw_base_range: tuple = (0.70, 0.92)  # clear-base transmittance of b&w film
    negative_bw_gamma_range: tuple = (0.55, 0.75)  # density slope of b&w film
    negative_exposure_range: tuple = (0.6, 1.6)  # under- to over-exposed frames
    # --- black-and-white prints
    tone_probability: float = 0.3  # share of b&w prints that are sepia-toned
    tone_strength_range: tuple = (0.3, 1.0)  # how far the toning goes (1 = full tone curve)
    # --- ageing of the print, before any scanning damage
    fade_probability: float = 0.3  # faded prints: lifted blacks, yellowed paper
    fade_contrast_range: tuple = (0.55, 0.9)  # remaining contrast (1 = none lost)
    fade_yellowing_range: tuple = (0.0, 0.35)  # blue loss of aged paper (0 = none)
    # --- physical damage (the design's "huecos o manchas", ~25%)
    holes_probability: float = 0.25  # stains, missing blobs, tears, scratches, cracks, dust
    holes_area_range: tuple = (0.005, 0.12)  # damaged share of the image
    holes_kinds: tuple = ("stain", "blob", "tear", "scratch", "scratch", "crack", "dust")  # repeat = likelier
    # --- resolution of the original or the scan
    lowres_probability: float = 0.2  # small prints scanned big
    lowres_scale_range: tuple = (0.3, 0.7)  # down-sampling factor before scaling back up
    # --- the scanner's own softness: a print scanned on a flatbed is a little blurred everywhere, hairline
    # cracks included (0 leaves it out, and the default recipe's bytes as they were)
    scan_blur_probability: float = 0.0
    scan_blur_sigma_range: tuple = (0.4, 1.0)  # gaussian sigma, px
    # --- light degradations (the design's 65%: JPEG, noise, salt-and-pepper, blur)
    light_probability: float = 0.65  # chance of at least one light degradation
    light_extra_probability: float = 0.35  # given one, chance of a second (possibly the same kind again)
    jpeg_quality_range: tuple = (30, 90)  # JPEG quality, integers
    salt_pepper_amount_range: tuple = (0.001, 0.02)  # fraction of pixels hit
    blur_sigma_range: tuple = (0.6, 2.0)  # gaussian blur sigma
    blur_motion_length_range: tuple = (3.0, 9.0)  # camera-shake length
    blur_defocus_radius_range: tuple = (1.0, 3.0)  # out-of-focus disk radius
    noise_sigma_range: tuple = (3.0, 15.0)  # gaussian noise / grain strength, 0..255 units
    grain_size_range: tuple = (0.5, 1.5)  # film-grain clump size

    def __post_init__(self) -> None:
        weights = self.category_weights()
        if min(weights.values()) < 0 or sum(weights.values()) <= 0:
            raise ValueError(f"category weights must be >= 0 with a positive sum, got {weights}")
        for field in dataclasses.fields(self):
            if field.name.endswith("_probability") and not 0.0 <= getattr(self, field.name) <= 1.0:
                raise ValueError(f"{field.name} must lie in [0, 1], got {getattr(self, field.name)}")

    def category_weights(self) -> dict[str, float]:
        """Category -> normalised share (sums to 1)."""
        raw = {
            "negative_color": self.negative_color_weight,
            "negative_bw": self.negative_bw_weight,
            "bw": self.bw_weight,
            "color": self.color_weight,
        }
        total = sum(raw.values())
        return {k: v / total if total > 0 else v for k, v in raw.items()}


def _tuples(value: Any) -> Any:
    """TOML arrays come back as lists; the frozen config wants (hashable) tuples."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def load_pipeline_config(path: str | Path | None = None, **overrides: Any) -> PipelineConfig:
    """PipelineConfig from a TOML file of top-level ``field = value`` lines (missing fields keep their
    defaults), then ``overrides``. Unknown keys are an error naming the file."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            with path.open("rb") as handle:
                values = tomllib.load(handle)
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise ValueError(f"{path}: cannot read pipeline config: {error}") from error
    values.update(overrides)
    known = {field.name for field in dataclasses.fields(PipelineConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{path or 'overrides'}: unknown pipeline config keys {unknown}")
    return PipelineConfig(**{k: _tuples(v) for k, v in values.items()})


def _light_degradations(config: PipelineConfig) -> list[A.BasicTransform]:
    """One of each light degradation, JPEG last: a scan is compressed after everything else."""
    return [
        Blur(
            sigma_range=config.blur_sigma_range,
            motion_length_range=config.blur_motion_length_range,
            defocus_radius_range=config.blur_defocus_radius_range,
            p=1.0,
        ),
        Noise(sigma_range=config.noise_sigma_range, grain_size_range=config.grain_size_range, p=1.0),
        SaltPepper(amount_range=config.salt_pepper_amount_range, p=1.0),
        Jpeg(quality_range=config.jpeg_quality_range, p=1.0),
    ]


def _stages(config: PipelineConfig) -> tuple[list[A.BasicTransform], Holes, list[A.BasicTransform]]:
    """(what the photo is and how it aged, its physical damage, how it was scanned): the pipeline's order."""
    weights = config.category_weights()
    negative_args = {
        "base_rgb_range": config.negative_base_rgb_range,
        "gamma_rgb_range": config.negative_gamma_rgb_range,
        "bw_base_range": config.negative_bw_base_range,
        "bw_gamma_range": config.negative_bw_gamma_range,
        "exposure_range": config.negative_exposure_range,
    }
    # OneOf normalises its children's p into choice weights; a zero weight would be a zero p, fine
    category = A.OneOf(
        [
            Negative(kind="color", **negative_args, p=weights["negative_color"]),
            Negative(kind="bw", **negative_args, p=weights["negative_bw"]),
            Grayscale(
                tone_probability=config.tone_probability,
                strength_range=config.tone_strength_range,
                p=weights["bw"],
            ),
            A.NoOp(p=weights["color"]),
        ],
        p=1.0,
    )
    light = A.Sequential(
        [
            # SomeOf picks uniformly, then applies its pick with the pick's own p (1 here)
            A.SomeOf(_light_degradations(config), n=1, p=1.0),
            A.SomeOf(_light_degradations(config), n=1, p=config.light_extra_probability),
        ],
        p=config.light_probability,
    )
    aged = [
        category,
        Fade(
            contrast_range=config.fade_contrast_range,
            yellowing_range=config.fade_yellowing_range,
            p=config.fade_probability,
        ),
    ]
    damage = Holes(area_range=config.holes_area_range, kinds=config.holes_kinds, p=config.holes_probability)
    scanned = [LowRes(scale_range=config.lowres_scale_range, p=config.lowres_probability), light]
    if config.scan_blur_probability > 0:
        soft = Blur(kinds=("gaussian",), sigma_range=config.scan_blur_sigma_range, p=config.scan_blur_probability)
        scanned.insert(1, soft)
    return aged, damage, scanned


def build_pipeline(config: PipelineConfig | None = None) -> A.Compose:
    """The albumentations pipeline for ``config`` (default recipe when None).

    Order: category (negative / b&w print / kept colour), fading, physical damage, low resolution, then
    the light scan degradations. Serializable with ``A.to_dict`` / ``save_pipeline``.
    """
    aged, damage, scanned = _stages(config or PipelineConfig())
    return A.Compose([*aged, damage, *scanned], p=1.0, save_applied_params=True)


def save_pipeline(pipeline: A.Compose, path: str | Path) -> None:
    """Write the pipeline as albumentations JSON (``A.save``)."""
    A.save(pipeline, str(path), data_format="json")


def load_pipeline(path: str | Path) -> A.Compose:
    """Read a pipeline written by :func:`save_pipeline`; the project's transforms are registered by the
    import of :mod:`degradations.transforms` at the top of this module."""
    return A.load(str(path), data_format="json")


def seed_for(rel_path: str, seed: int) -> int:
    """Per-file seed: ``crc32(rel_path) ^ seed``. Pass the path relative to the source folder in POSIX
    form, so the data set is the same whatever the worker count, order or machine. Names that are not valid
    UTF-8 (Latin-1 names from old archives arrive as surrogate escapes) hash by their original bytes."""
    return zlib.crc32(rel_path.encode("utf-8", "surrogateescape")) ^ seed


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise ValueError(f"degrade expects a uint8 HxWx3 RGB array, got {type(image).__name__} {shape}")
    if min(image.shape[:2]) < MIN_SIZE:
        raise ValueError(
            f"degrade needs images of at least {MIN_SIZE}x{MIN_SIZE} pixels, got {image.shape[:2]}"
        )


def apply_pipeline(pipeline: A.Compose, image: np.ndarray, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Run ``pipeline`` (from :func:`build_pipeline` or :func:`load_pipeline`) on ``image`` with ``seed``.

    Returns the degraded uint8 image (same shape) and its record (see :func:`degrade`). Not thread-safe
    for one pipeline object: each call re-seeds it.
    """
    _check_image(image)
    # the applied-params log is what the record is built from; A.from_dict does not restore this flag
    pipeline.save_applied_params = True
    # One generator pair shared by every transform: Compose(seed=...) would give each transform its own
    # identically seeded stream, so their coin flips would be correlated.
    pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))
    result = pipeline(image=np.ascontiguousarray(image))
    ops: list[dict[str, Any]] = []
    category = "color"
    for name, params in result.get("applied_transforms", []):
        if name not in DEGRADATIONS:
            continue  # NoOp (kept colour) and anything foreign carry nothing to record
        recorded = DEGRADATIONS[name].record(params)
        ops.append({"name": name, "params": recorded})
        if name == "Negative":
            category = f"negative_{recorded['kind']}"
        elif name == "Grayscale":
            category = "bw"
    return result["image"], {"category": category, "ops": ops}


_local = threading.local()


def _cached(build: Any, config: PipelineConfig) -> Any:
    """`build(config)`, built once per builder, config and thread (building costs far more than a 256 px
    degradation)."""
    cache = getattr(_local, "built", None)
    if cache is None:
        cache = _local.built = {}
    key = (build, config)
    if key not in cache:
        if len(cache) > 8:
            cache.clear()
        cache[key] = build(config)
    return cache[key]


def degrade(
    image: np.ndarray, seed: int, config: PipelineConfig | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Degrade one clean photo like an old negative or print.

    ``image``: uint8 HxWx3 RGB, any size of at least 16x16. ``seed``: non-negative int (use
    :func:`seed_for` for per-file seeds). Returns ``(degraded, record)``: degraded is uint8 of the same
    shape; record is ``{"category": one of CATEGORIES, "ops": [{"name": ..., "params": {...}}, ...]}``,
    JSON-serializable, ops in the order applied. Same image, config and seed give the same bytes.
    """
    return apply_pipeline(_cached(build_pipeline, config or PipelineConfig()), image, seed)


# Levels (0-255, any channel) by which painted damage must change a pixel to count as visible damage: a light
# crack across white sky changes nothing a detector could see.
VISIBLE_DAMAGE_LEVELS = 16


def degrade_with_damage(
    image: np.ndarray, seed: int, config: PipelineConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Degrade one clean photo as :func:`degrade` does, and say where its physical damage is.

    Returns ``(degraded, mask)``: ``mask`` is bool HxW, True where the ``Holes`` step changed the photo by more
    than ``VISIBLE_DAMAGE_LEVELS`` (before the scan's blur, noise and JPEG, which spread and hide it); the
    labels a damage detector learns from. Same image, config and seed give the same bytes (not the bytes of
    :func:`degrade`: the three stages draw from one stream but run as separate compositions).
    """
    _check_image(image)
    aged, damage, scanned = _cached(_composed_stages, config or PipelineConfig())
    np_random, py_random = np.random.default_rng(seed), random.Random(seed)
    out = np.ascontiguousarray(image)
    for stage in (aged, damage, scanned):
        stage.set_random_state(np_random, py_random)
        before = out
        out = stage(image=out)["image"]
        if stage is damage:
            mask = np.abs(out.astype(np.int16) - before.astype(np.int16)).max(axis=2) > VISIBLE_DAMAGE_LEVELS
    return out, mask


def _composed_stages(config: PipelineConfig) -> tuple[A.Compose, A.Compose, A.Compose]:
    aged, damage, scanned = _stages(config)
    return A.Compose(aged, p=1.0), A.Compose([damage], p=1.0), A.Compose(scanned, p=1.0)
