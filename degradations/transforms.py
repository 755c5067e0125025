"""Albumentations transforms, one per degradation, over the pure functions in :mod:`degradations.functional`.

Each transform draws all of its randomness in ``get_params`` / ``get_params_dependent_on_data`` from
``self.random_generator`` (numpy) and ``self.py_random`` (stdlib), the generators albumentations hands it,
never from the global ``np.random``; ``apply`` is then a pure function of the image and those parameters.

Serialization: the classes register themselves with albumentations when this module is imported, under
the stable name ``degradations.transforms.<Class>``, so ``A.to_dict`` / ``A.from_dict`` (and
``A.save`` / ``A.load``) work once ``degradations.transforms`` is imported. The serialized arguments are
read back from attributes named like the ``__init__`` arguments; ranges are stored as tuples and JSON
lists are turned back into tuples, so a round trip gives an equal transform.

``record(params)`` turns the parameters of one application into the small JSON-safe dict stored in
the paired-data manifest (no arrays).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from albumentations.core.transforms_interface import ImageOnlyTransform
from scipy.spatial import Voronoi

from degradations import functional as F

__all__ = [
    "DEGRADATIONS",
    "Blur",
    "Degradation",
    "Fade",
    "Grayscale",
    "Holes",
    "Jpeg",
    "LowRes",
    "Negative",
    "Noise",
    "SaltPepper",
]

Range = tuple[float, float]


def _as_range(value: Sequence[float], name: str) -> tuple[float, float]:
    """A (low, high) interval as a tuple (JSON gives lists back), checked for order."""
    low, high = (float(v) for v in value)
    if low > high:
        raise ValueError(f"{name}: low {low} is above high {high}")
    return (low, high)


def _as_int_range(value: Sequence[float], name: str) -> tuple[int, int]:
    low, high = _as_range(value, name)
    return (int(low), int(high))


def _rounded(value: Any) -> Any:
    """JSON-safe copy of a parameter value, floats rounded to 4 decimals to keep manifest lines short."""
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return round(float(value), 4)
    if isinstance(value, dict):
        return {str(k): _rounded(v) for k, v in value.items()}
    return [_rounded(v) for v in value]


class Degradation(ImageOnlyTransform):
    """Base of the project's transforms: uint8 RGB images only, and a JSON-safe record of each use."""

    # names of the params (as produced by get_params*) worth keeping in a pair's record
    record_keys: tuple[str, ...] = ()

    @classmethod
    def record(cls, params: dict[str, Any]) -> dict[str, Any]:
        """The JSON-safe part of one application's params (scalars and short lists, no arrays)."""
        return {key: _rounded(params[key]) for key in cls.record_keys if key in params}

    def _uniform(self, value_range: Range) -> float:
        return float(self.random_generator.uniform(value_range[0], value_range[1]))


class Negative(Degradation):
    """Scanned film negative (see :func:`degradations.functional.negative`).

    ``kind`` "color": colour negative on an orange base; base transmittance and density slope drawn per
    channel (R, G, B) from ``base_rgb_range`` / ``gamma_rgb_range``. ``kind`` "bw": black-and-white
    negative on a near-neutral base (level from ``bw_base_range``, each channel tinted by up to
    ``bw_tint``) with one slope from ``bw_gamma_range``. Both draw ``exposure_range``, ``flare_range``
    (toe of the film curve) and ``gain_range`` (scanner exposure).
    """

    record_keys = ("kind", "base", "gamma", "exposure", "flare", "gain")

    def __init__(
        self,
        kind: Literal["color", "bw"] = "color",
        base_rgb_range: Sequence[Sequence[float]] = ((0.78, 0.95), (0.36, 0.52), (0.12, 0.22)),
        gamma_rgb_range: Sequence[Sequence[float]] = ((0.50, 0.60), (0.55, 0.65), (0.60, 0.70)),
        bw_base_range: Sequence[float] = (0.70, 0.92),
        bw_tint: float = 0.04,
        bw_gamma_range: Sequence[float] = (0.55, 0.75),
        exposure_range: Sequence[float] = (0.6, 1.6),
        flare_range: Sequence[float] = (0.004, 0.02),
        gain_range: Sequence[float] = (0.9, 1.1),
        p: float = 1.0,
    ):
        super().__init__(p=p)
        if kind not in ("color", "bw"):
            raise ValueError(f"Negative kind must be 'color' or 'bw', got {kind!r}")
        self.kind = kind
        self.base_rgb_range = tuple(_as_range(r, "base_rgb_range") for r in base_rgb_range)
        self.gamma_rgb_range = tuple(_as_range(r, "gamma_rgb_range") for r in gamma_rgb_range)
        if len(self.base_rgb_range) != 3 or len(self.gamma_rgb_range) != 3:
            raise ValueError(
                "base_rgb_range and gamma_rgb_range need one (low, high) pair per channel (R, G, B)"
            )
        self.bw_base_range = _as_range(bw_base_range, "bw_base_range")
        self.bw_tint = float(bw_tint)
        self.bw_gamma_range = _as_range(bw_gamma_range, "bw_gamma_range")
        self.exposure_range = _as_range(exposure_range, "exposure_range")
        self.flare_range = _as_range(flare_range, "flare_range")
        if self.flare_range[0] <= 0:
            raise ValueError("flare_range must be above 0 (it divides the exposure)")
        self.gain_range = _as_range(gain_range, "gain_range")

    def get_params(self) -> dict[str, Any]:
        if self.kind == "color":
            base = [self._uniform(r) for r in self.base_rgb_range]
            gamma: float | list[float] = [self._uniform(r) for r in self.gamma_rgb_range]
        else:
            level = self._uniform(self.bw_base_range)
            base = [level * self._uniform((1.0 - self.bw_tint, 1.0 + self.bw_tint)) for _ in range(3)]
            gamma = self._uniform(self.bw_gamma_range)
        return {
            "kind": self.kind,
            "base": base,
            "gamma": gamma,
            "exposure": self._uniform(self.exposure_range),
            "flare": self._uniform(self.flare_range),
            "gain": self._uniform(self.gain_range),
        }

    def apply(
        self, img: np.ndarray, kind: str, base, gamma, exposure, flare, gain, **params: Any
    ) -> np.ndarray:
        if kind == "color":
            return F.negative(img, base, gamma, exposure, flare, gain)
        return F.negative_bw(img, base, gamma, exposure, flare, gain)


class Grayscale(Degradation):
    """Black-and-white print (luma); with probability ``tone_probability`` toned (sepia-like) with
    per-channel curve exponents from ``tone_rgb_range`` blended by a strength from ``strength_range``."""

    record_keys = ("tone", "strength")

    def __init__(
        self,
        tone_probability: float = 0.3,
        tone_rgb_range: Sequence[Sequence[float]] = ((0.78, 0.95), (0.97, 1.03), (1.15, 1.55)),
        strength_range: Sequence[float] = (0.3, 1.0),
        p: float = 1.0,
    ):
        super().__init__(p=p)
        self.tone_probability = float(tone_probability)
        self.tone_rgb_range = tuple(_as_range(r, "tone_rgb_range") for r in tone_rgb_range)
        if len(self.tone_rgb_range) != 3:
            raise ValueError("tone_rgb_range needs one (low, high) pair per channel (R, G, B)")
        self.strength_range = _as_range(strength_range, "strength_range")

    def get_params(self) -> dict[str, Any]:
        if self.py_random.random() >= self.tone_probability:
            return {"tone": [1.0, 1.0, 1.0], "strength": 0.0}
        return {
            "tone": [self._uniform(r) for r in self.tone_rgb_range],
            "strength": self._uniform(self.strength_range),
        }

    def apply(self, img: np.ndarray, tone, strength, **params: Any) -> np.ndarray:
        return F.grayscale(img, tone, strength)


class Jpeg(Degradation):
    """JPEG compression round trip with a quality drawn from ``quality_range`` (integers, inclusive)."""

    record_keys = ("quality",)

    def __init__(self, quality_range: Sequence[int] = (30, 90), p: float = 1.0):
        super().__init__(p=p)
        self.quality_range = _as_int_range(quality_range, "quality_range")
        if not 1 <= self.quality_range[0] <= self.quality_range[1] <= 100:
            raise ValueError(f"quality_range must lie in 1..100, got {self.quality_range}")

    def get_params(self) -> dict[str, Any]:
        return {
            "quality": int(self.random_generator.integers(self.quality_range[0], self.quality_range[1] + 1))
        }

    def apply(self, img: np.ndarray, quality, **params: Any) -> np.ndarray:
        return F.jpeg(img, quality)


class SaltPepper(Degradation):
    """Salt-and-pepper noise: a fraction from ``amount_range`` of the pixels set to white or black, the
    white share drawn from ``salt_range``."""

    record_keys = ("amount", "salt")

    def __init__(
        self,
        amount_range: Sequence[float] = (0.001, 0.02),
        salt_range: Sequence[float] = (0.3, 0.7),
        p: float = 1.0,
    ):
        super().__init__(p=p)
        self.amount_range = _as_range(amount_range, "amount_range")
        self.salt_range = _as_range(salt_range, "salt_range")

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params["shape"][:2]
        amount = self._uniform(self.amount_range)
        salt = self._uniform(self.salt_range)
        count = round(amount * h * w)
        idx = self.random_generator.choice(h * w, size=count, replace=False)
        return {"amount": count / (h * w), "salt": salt, "idx": idx, "n_salt": round(count * salt)}

    def apply(self, img: np.ndarray, idx, n_salt, **params: Any) -> np.ndarray:
        return F.salt_pepper(img, idx, n_salt)


class Blur(Degradation):
    """Blur, one of ``kinds``: "gaussian" (sigma from ``sigma_range``), "motion" (straight shake, length
    from ``motion_length_range``, any angle) or "defocus" (disk, radius from ``defocus_radius_range``).
    Sizes are in pixels of the image it is applied to."""

    record_keys = ("kind", "sigma", "length", "angle", "radius")

    def __init__(
        self,
        kinds: Sequence[str] = ("gaussian", "motion", "defocus"),
        sigma_range: Sequence[float] = (0.6, 2.0),
        motion_length_range: Sequence[float] = (3.0, 9.0),
        defocus_radius_range: Sequence[float] = (1.0, 3.0),
        p: float = 1.0,
    ):
        super().__init__(p=p)
        self.kinds = tuple(kinds)
        unknown = set(self.kinds) - {"gaussian", "motion", "defocus"}
        if unknown or not self.kinds:
            raise ValueError(f"Blur kinds must be among gaussian, motion, defocus; got {self.kinds}")
        self.sigma_range = _as_range(sigma_range, "sigma_range")
        self.motion_length_range = _as_range(motion_length_range, "motion_length_range")
        self.defocus_radius_range = _as_range(defocus_radius_range, "defocus_radius_range")

    def get_params(self) -> dict[str, Any]:
        kind = self.py_random.choice(self.kinds)
        if kind == "gaussian":
            return {"kind": kind, "sigma": self._uniform(self.sigma_range)}
        if kind == "motion":
            return {
                "kind": kind,
                "length": self._uniform(self.motion_length_range),
                "angle": self._uniform((0, 180)),
            }
        return {"kind": kind, "radius": self._uniform(self.defocus_radius_range)}

    def apply(self, img: np.ndarray, kind, **params: Any) -> np.ndarray:
        if kind == "gaussian":
            return F.gaussian_blur(img, params["sigma"])
        if kind == "motion":
            return F.convolve(img, F.motion_kernel(params["length"], params["angle"]))
        return F.convolve(img, F.defocus_kernel(params["radius"]))


class Noise(Degradation):
    """Sensor or film noise, one of ``kinds``: "gaussian" (sigma from ``sigma_range``, 0..255 units;
    luminance-only with probability ``monochrome_probability``) or "grain" (film grain, clumps of
    ``grain_size_range`` pixels, strongest in the mid-tones)."""

    record_keys = ("kind", "sigma", "grain_size", "monochrome")

    def __init__(
        self,
        kinds: Sequence[str] = ("gaussian", "grain"),
        sigma_range: Sequence[float] = (3.0, 15.0),
        grain_size_range: Sequence[float] = (0.5, 1.5),
        monochrome_probability: float = 0.5,
        p: float = 1.0,
    ):
        super().__init__(p=p)
        self.kinds = tuple(kinds)
        if set(self.kinds) - {"gaussian", "grain"} or not self.kinds:
            raise ValueError(f"Noise kinds must be among gaussian, grain; got {self.kinds}")
        self.sigma_range = _as_range(sigma_range, "sigma_range")
        self.grain_size_range = _as_range(grain_size_range, "grain_size_range")
        self.monochrome_probability = float(monochrome_probability)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params["shape"][:2]
        kind = self.py_random.choice(self.kinds)
        monochrome = self.py_random.random() < self.monochrome_probability
        noise = self.random_generator.standard_normal((h, w, 1 if monochrome else 3), dtype=np.float32)
        out = {
            "kind": kind,
            "sigma": self._uniform(self.sigma_range),
            "monochrome": monochrome,
            "noise": noise,
        }
        if kind == "grain":
            out["grain_size"] = self._uniform(self.grain_size_range)
        return out

    def apply(self, img: np.ndarray, kind, sigma, noise, **params: Any) -> np.ndarray:
        if kind == "grain":
            return F.film_grain(img, noise, sigma, params["grain_size"])
        return F.gaussian_noise(img, noise, sigma)


class Fade(Degradation):
    """Faded print: contrast from ``contrast_range`` (1 = unchanged; blacks lift, paper white stays) and
    yellowing from ``yellowing_range`` (0 = none)."""

    record_keys = ("contrast", "yellowing")

    def __init__(
        self,
        contrast_range: Sequence[float] = (0.55, 0.9),
        yellowing_range: Sequence[float] = (0.0, 0.35),
        p: float = 1.0,
    ):
        super().__init__(p=p)
        self.contrast_range = _as_range(contrast_range, "contrast_range")
        self.yellowing_range = _as_range(yellowing_range, "yellowing_range")

    def get_params(self) -> dict[str, Any]:
        return {
            "contrast": self._uniform(self.contrast_range),
            "yellowing": self._uniform(self.yellowing_range),
        }

    def apply(self, img: np.ndarray, contrast, yellowing, **params: Any) -> np.ndarray:
        return F.fade(img, contrast, yellowing)


class LowRes(Degradation):
    """Low resolution: down-sampled by a factor from ``scale_range`` and back up with one of
    ``interpolations`` (names in :data:`degradations.functional.INTERPOLATIONS`)."""

    record_keys = ("scale", "interpolation")

    def __init__(
        self,
        scale_range: Sequence[float] = (0.3, 0.7),
        interpolations: Sequence[str] = ("linear", "cubic"),
        p: float = 1.0,
    ):
        super().__init__(p=p)
        self.scale_range = _as_range(scale_range, "scale_range")
        self.interpolations = tuple(interpolations)
        if set(self.interpolations) - set(F.INTERPOLATIONS) or not self.interpolations:
            raise ValueError(
                f"interpolations must be among {sorted(F.INTERPOLATIONS)}; got {self.interpolations}"
            )

    def get_params(self) -> dict[str, Any]:
        return {
            "scale": self._uniform(self.scale_range),
            "interpolation": self.py_random.choice(self.interpolations),
        }

    def apply(self, img: np.ndarray, scale, interpolation, **params: Any) -> np.ndarray:
        return F.low_res(img, scale, interpolation)


# Fill colours (RGB) of each kind of damage: what shows through or sits on a damaged print.
_PALETTES: dict[str, tuple[tuple[int, int, int], ...]] = {
    # torn-off corners and holes show the album page or mount behind: cream, white, grey card, black
    "tear": ((236, 228, 208), (246, 245, 240), (150, 146, 136), (32, 30, 28)),
    "blob": ((236, 228, 208), (246, 245, 240), (205, 200, 185), (40, 36, 32), (120, 112, 100)),
    # water, tea and foxing stains are brown and ochre, mould grey-green
    "stain": ((128, 92, 56), (186, 148, 84), (160, 120, 72), (112, 116, 92), (92, 70, 50)),
    # scratches through the emulsion are light, scratches in the varnish or on the negative dark
    "scratch": ((242, 240, 232), (220, 216, 205), (36, 34, 32)),
    # cracked emulsion shows the paper base (white to beige) or holds dirt
    "crack": ((242, 240, 232), (232, 222, 200), (250, 248, 242), (214, 202, 178), (226, 214, 186), (40, 36, 32)),
    # crazing shows the paper base, gone cream with age (the mesh on ../shared/data/old/bop_scratch_d.jpg)
    "craze": ((236, 224, 190), (226, 210, 170), (244, 236, 214), (218, 200, 158), (232, 220, 198)),
    "dust": ((20, 18, 16), (60, 56, 50), (238, 236, 230)),
}


class Holes(Degradation):
    """Physical damage painted over the photo: "stain" (translucent brown patch with a darker rim),
    "blob" (opaque missing patch), "tear" (missing piece from an edge), "scratch" (thin long line), "crack"
    (a branching network of jagged lines where the emulsion split), "craze" (a patch of emulsion split into
    cells, a mesh of thin, often faint, cream lines) and "dust" (specks), in stain-like colours, never only
    black.

    Shapes of ``kinds`` (repeat a kind to make it likelier) are added until the damaged share of the image
    reaches a target drawn from ``area_range``; a shape that would push it above the range is dropped, so
    the damaged fraction stays inside ``area_range`` (up to ``max_shapes`` tries).
    """

    record_keys = ("area", "shapes")

    def __init__(
        self,
        area_range: Sequence[float] = (0.005, 0.12),
        kinds: Sequence[str] = ("stain", "blob", "tear", "scratch", "scratch", "crack", "dust"),
        max_shapes: int = 40,
        p: float = 1.0,
    ):
        super().__init__(p=p)
        self.area_range = _as_range(area_range, "area_range")
        if not (0.0 < self.area_range[0] and self.area_range[1] < 1.0):
            raise ValueError(f"area_range must lie inside (0, 1), got {self.area_range}")
        self.kinds = tuple(kinds)
        if set(self.kinds) - set(_PALETTES) or not self.kinds:
            raise ValueError(f"Holes kinds must be among {sorted(_PALETTES)}; got {self.kinds}")
        self.max_shapes = int(max_shapes)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        h, w = params["shape"][:2]
        total = h * w
        target = self._uniform(self.area_range) * total
        limit = self.area_range[1] * total
        alpha = np.zeros((h, w), np.uint8)
        covered = 0
        shapes: list[dict[str, Any]] = []
        counts: dict[str, int] = {}
        for _ in range(self.max_shapes):
            kind = self.py_random.choice(self.kinds)
            new = self._shapes(kind, h, w, budget=max(target - covered, 4.0))
            trial = alpha.copy()
            for shape in new:
                F.draw_shape(trial, None, shape)
            trial_covered = int(np.count_nonzero(trial))
            if trial_covered > limit:
                continue  # would overshoot the range: try another (usually smaller) shape
            alpha, covered = trial, trial_covered
            shapes.extend(new)
            counts[kind] = counts.get(kind, 0) + 1
            if covered >= target:
                break
        alpha, colour = F.draw_shapes(h, w, shapes)
        # coarse fibre/mottle texture, about 4 px grains, +-6 grey levels
        texture = self.random_generator.standard_normal((h // 4 + 1, w // 4 + 1), dtype=np.float32) * 6.0
        return {
            "alpha": alpha,
            "colour": colour,
            "texture": texture,
            "area": covered / total,
            "shapes": counts,
        }

    def apply(self, img: np.ndarray, alpha, colour, texture, **params: Any) -> np.ndarray:
        return F.holes(img, alpha, colour, texture)

    # --- shape drawing: sizes follow the remaining area budget (pixels) so the target is met in few shapes

    def _colour(self, kind: str) -> list[int]:
        palette = _PALETTES[kind]
        base = np.array(palette[int(self.random_generator.integers(len(palette)))])
        jitter = self.random_generator.integers(-14, 15, size=3)
        return [int(c) for c in np.clip(base + jitter, 0, 255)]

    def _outline(self, cx: float, cy: float, radius: float, jaggedness: float) -> np.ndarray:
        """Organic closed outline around (cx, cy) as an int32 N x 2 polygon: the radius wobbles with a few
        low harmonics (lobes) plus a little per-vertex fraying, unlike a jittered regular polygon."""
        rng = self.random_generator
        n = 28
        angles = np.linspace(0, 2 * math.pi, n, endpoint=False)
        wobble = np.zeros(n)
        for harmonic in range(2, 6):
            wobble += rng.uniform(0, jaggedness / harmonic) * np.cos(
                harmonic * angles + rng.uniform(0, 2 * math.pi)
            )
        radii = radius * (1.0 + wobble + rng.uniform(-0.06, 0.06, n))
        return (
            np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
            .round()
            .astype(np.int32)
        )

    def _shapes(self, kind: str, h: int, w: int, budget: float) -> list[dict[str, Any]]:
        rng = self.random_generator
        scale = max(1.0, min(h, w) / 256.0)  # line widths and specks grow with the image
        if kind in ("blob", "stain"):
            radius = max(1.5, math.sqrt(budget * rng.uniform(0.3, 1.0) / math.pi))
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            points = self._outline(cx, cy, radius, jaggedness=0.9 if kind == "blob" else 0.6)
            if kind == "blob":
                return [{"type": "polygon", "points": points, "color": self._colour(kind), "opacity": 1.0}]
            colour = self._colour(kind)
            rim = [int(c * 0.75) for c in colour]
            opacity = self._uniform((0.35, 0.75))
            return [
                {"type": "polygon", "points": points, "color": colour, "opacity": opacity},
                {
                    "type": "polyline",
                    "points": np.concatenate([points, points[:1]]),
                    "color": rim,
                    "opacity": min(1.0, opacity + 0.2),
                    "thickness": max(1, round(scale * rng.uniform(1, 2.5))),
                },
            ]
        if kind == "tear":
            return [self._tear(h, w, budget)]
        if kind == "crack":
            return self._crack(h, w, budget, scale)
        if kind == "craze":
            return self._craze(h, w, budget, scale)
        if kind == "scratch":
            thickness = max(1, round(scale * rng.uniform(0.6, 1.6)))
            length = min(budget / thickness, math.hypot(h, w) * rng.uniform(0.2, 0.9))
            n = int(rng.integers(4, 9))
            heading = rng.uniform(0, 2 * math.pi) + np.cumsum(rng.normal(0, 0.12, n))  # slow bends
            steps = np.stack([np.cos(heading), np.sin(heading)], axis=1) * (length / n)
            start = np.array([rng.uniform(0, w), rng.uniform(0, h)])
            points = np.concatenate([start[None], start + np.cumsum(steps, axis=0)]).round().astype(np.int32)
            return [
                {
                    "type": "polyline",
                    "points": points,
                    "color": self._colour(kind),
                    "opacity": self._uniform((0.7, 1.0)),
                    "thickness": thickness,
                }
            ]
        # dust: specks of 1..3 px radius (scaled), as many as the budget allows, at most 60 per cluster
        radii = rng.integers(0, 2, size=60) + round(scale) - 1
        count = int(np.clip(budget / (math.pi * (np.mean(radii) + 0.7) ** 2), 1, 60))
        points = np.stack([rng.uniform(0, w, count), rng.uniform(0, h, count)], axis=1).astype(np.int32)
        return [
            {
                "type": "circles",
                "points": points,
                "radii": radii[:count],
                "color": self._colour(kind),
                "opacity": 1.0,
            }
        ]

    def _crack(self, h: int, w: int, budget: float, scale: float) -> list[dict[str, Any]]:
        """Cracked emulsion: from one point, a jagged line that forks into thinner, shorter branches (up to 4
        levels), drawn as pieces whose width, shade and opacity change along it, as on a real print's crazing.
        Stops when the drawn area reaches `budget` pixels."""
        rng = self.random_generator
        base = np.array(_PALETTES["crack"][int(rng.integers(len(_PALETTES["crack"])))])
        branches = [(np.array([rng.uniform(0, w), rng.uniform(0, h)]), rng.uniform(0, 2 * math.pi),
                     math.hypot(h, w) * rng.uniform(0.2, 0.9), 0)]
        shapes: list[dict[str, Any]] = []
        drawn = 0.0
        while branches and drawn < budget:
            start, heading, length, depth = branches.pop()
            step = rng.uniform(1.5, 4.0) * scale
            n = max(2, int(length / step))
            # a slow drift plus a sharp zigzag at every step: cracks run jagged, not in smooth bends
            headings = heading + 0.5 * np.cumsum(rng.normal(0, 0.5, n)) + rng.normal(0, 0.4, n)
            steps = np.stack([np.cos(headings), np.sin(headings)], axis=1) * step
            points = np.concatenate([start[None], start + np.cumsum(steps, axis=0)])
            cuts = [0, len(points) - 1]
            if len(points) > 2:
                cuts += rng.integers(1, len(points) - 1, int(rng.integers(0, 4))).tolist()
            cuts = sorted(set(cuts))
            for first, last in itertools.pairwise(cuts):
                thickness = max(1, round(scale * rng.uniform(0.6, 2.6) / (1 + 0.4 * depth)))
                shapes.append({
                    "type": "polyline",
                    "points": points[first:last + 1].round().astype(np.int32),
                    "color": [int(c) for c in np.clip(base + rng.integers(-18, 19, 3), 0, 255)],
                    "opacity": self._uniform((0.55, 1.0)),
                    "thickness": thickness,
                })
                drawn += (last - first) * step * thickness
            if depth < 4:
                for _ in range(int(rng.poisson(2.5 / (1 + 0.5 * depth)))):
                    fork = int(rng.integers(1, len(points)))
                    turn = rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 1.5)
                    branches.append((points[fork], headings[min(fork, n - 1)] + turn,
                                     length * rng.uniform(0.15, 0.6), depth + 1))
        return shapes

    def _craze(self, h: int, w: int, budget: float, scale: float) -> list[dict[str, Any]]:
        """Crazed emulsion: a round patch of the print split into cells, as a flexed or dried-out print's
        gelatin splits, drawn as the cells' walls (a Voronoi diagram of random points), each wall a jagged
        line pinned at its corners, 1-2 px wide and of its own opacity (many faint: the paper shows through a
        hairline only in part); a tenth of the walls have not split. Walls are added from the patch's
        centre outwards until the drawn area reaches `budget` pixels, so a small budget is a small patch."""
        rng = self.random_generator
        cell = rng.uniform(8.0, 36.0) * scale                       # mean cell side, px
        radius = math.hypot(h, w) * rng.uniform(0.15, 0.6)
        centre = np.array([rng.uniform(0, w), rng.uniform(0, h)])
        count = int(np.clip(math.pi * radius**2 / cell**2, 8, 400))
        polar = rng.uniform(0, 2 * math.pi, count)
        points = centre + (radius * np.sqrt(rng.uniform(0, 1, count)))[:, None] * np.stack(
            [np.cos(polar), np.sin(polar)], axis=1)
        diagram = Voronoi(points)
        walls = [(diagram.vertices[a], diagram.vertices[b]) for a, b in diagram.ridge_vertices if a >= 0 and b >= 0]
        walls = [(p, q) for p, q in walls if max(np.hypot(*(p - centre)), np.hypot(*(q - centre))) < radius]
        walls.sort(key=lambda wall: float(np.hypot(*((wall[0] + wall[1]) / 2 - centre))))
        base = np.array(_PALETTES["craze"][int(rng.integers(len(_PALETTES["craze"])))])
        shapes: list[dict[str, Any]] = []
        drawn = 0.0
        for start, end in walls:
            if drawn >= budget:
                break
            if rng.uniform() < 0.1:
                continue
            length = float(np.hypot(*(end - start)))
            n = max(2, int(length / (1.5 * scale)))
            t = np.linspace(0.0, 1.0, n + 1)[:, None]
            # a random walk across the wall, pinned at both corners (a bridge): jagged, and the mesh stays joined
            walk = np.concatenate([[0.0], np.cumsum(rng.normal(0, 0.4 * scale, n))])
            offset = (walk - t[:, 0] * walk[-1])[:, None]
            normal = np.array([-(end - start)[1], (end - start)[0]]) / max(length, 1e-6)
            line = start + t * (end - start) + offset * normal
            thickness = max(1, round(scale * rng.uniform(0.6, 2.2)))
            shapes.append({
                "type": "polyline",
                "points": line.round().astype(np.int32),
                "color": [int(c) for c in np.clip(base + rng.integers(-10, 11) + rng.integers(-4, 5, 3), 0, 255)],
                "opacity": self._uniform((0.35, 1.0)),
                "thickness": thickness,
            })
            drawn += length * thickness
        return shapes

    def _tear(self, h: int, w: int, budget: float) -> dict[str, Any]:
        """A missing piece torn from one edge: straight along the border, jagged inside."""
        rng = self.random_generator
        side = int(rng.integers(4))
        along, across = (w, h) if side < 2 else (h, w)  # top/bottom run along x, left/right along y
        depth = max(2.0, min(across * 0.45, math.sqrt(budget) * rng.uniform(0.4, 1.0)))
        span = max(3.0, min(along, 2.0 * budget / depth))
        start = rng.uniform(0, max(along - span, 0) + 1e-9)
        n = int(rng.integers(16, 29))
        u = np.linspace(start + span, start, n) + rng.uniform(-0.4, 0.4, n) * span / n
        # a tear bulges in the middle and frays: smooth depth profile plus a random walk of small notches
        fray = np.cumsum(rng.normal(0, 0.08, n))
        v = depth * np.clip(
            np.sin(np.linspace(0, math.pi, n)) ** 0.6 * rng.uniform(0.8, 1.1) + fray, 0.05, None
        )
        u = np.concatenate([[start, start + span], u])
        v = np.concatenate([[-2.0, -2.0], v])
        if side == 0:
            x, y = u, v
        elif side == 1:
            x, y = u, (h - 1) - v
        elif side == 2:
            x, y = v, u
        else:
            x, y = (w - 1) - v, u
        points = np.stack([x, y], axis=1).round().astype(np.int32)
        return {"type": "polygon", "points": points, "color": self._colour("tear"), "opacity": 1.0}


# Every degradation, by name: the table the pipeline, the records and the tests share.
DEGRADATIONS: dict[str, type[Degradation]] = {
    cls.__name__: cls for cls in (Negative, Grayscale, Jpeg, SaltPepper, Blur, Holes, Noise, Fade, LowRes)
}
