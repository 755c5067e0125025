"""Pure degradation functions.

Every public function takes an RGB image as ``uint8`` ``H x W x 3`` (values 0..255) and returns a new
``uint8`` array of the same shape; the input is never modified. No function here draws random numbers:
all randomness (noise fields, pixel indices, shapes) comes in as arguments, drawn by the transforms in
:mod:`degradations.transforms` from their own generators. That keeps every function testable and every
output reproducible from its parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

__all__ = [
    "INTERPOLATIONS",
    "convolve",
    "defocus_kernel",
    "draw_shape",
    "draw_shapes",
    "fade",
    "film_grain",
    "gaussian_blur",
    "gaussian_noise",
    "grayscale",
    "holes",
    "jpeg",
    "low_res",
    "motion_kernel",
    "negative",
    "negative_bw",
    "salt_pepper",
]

# Names (used in configs and records) of the OpenCV up-sampling filters LowRes may use.
INTERPOLATIONS = {"nearest": cv2.INTER_NEAREST, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}

_LEVELS = np.arange(256, dtype=np.float64) / 255.0


def _check_rgb(img: np.ndarray) -> None:
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 RGB image, got dtype {img.dtype} and shape {img.shape}")


def _apply_channel_luts(img: np.ndarray, curves: Sequence[np.ndarray]) -> np.ndarray:
    """Apply one 256-entry float curve (values 0..1) per channel through cv2.LUT (a table lookup, fast)."""
    lut = np.stack([np.clip(np.rint(c * 255.0), 0, 255) for c in curves], axis=-1).astype(np.uint8)
    return cv2.LUT(img, lut.reshape(256, 1, 3))


def _density_curve(base: float, gamma: float, exposure: float, flare: float, gain: float) -> np.ndarray:
    """Scanned value (0..1, display gamma) of film exposed to each input level.

    The scene level is linearised (display gamma 2.2), exposed (``exposure``), and turned into optical
    density ``gamma * log10(1 + E / flare)``: the log response of film, with ``flare`` setting where the toe
    starts. The scanner sees the transmittance ``base * 10**-density`` (``base`` is the clear film base,
    the orange mask on colour film) times its ``gain``, stored with display gamma again.
    """
    linear = _LEVELS**2.2 * exposure
    density = gamma * np.log10(1.0 + linear / flare)
    transmittance = np.clip(base * gain * 10.0 ** (-density), 0.0, 1.0)
    return transmittance ** (1.0 / 2.2)


def negative(
    img: np.ndarray,
    base: Sequence[float],
    gamma: Sequence[float],
    exposure: float,
    flare: float,
    gain: float,
) -> np.ndarray:
    """Colour negative as a flat scan shows it; uint8 HxWx3 RGB in, uint8 out.

    ``base`` is the per-channel (R, G, B) transmittance of unexposed film, 0..1: the orange mask of colour
    film passes red best and blue worst, so shadows come out orange and highlights dark brown, never the
    blue-grey of a plain ``255 - x`` (which a model trained on it then leaves on real negatives).
    ``gamma`` is the per-channel density slope (contrast of each dye layer), ``exposure`` scales the scene
    light, ``flare`` (> 0) sets the toe of the curve and ``gain`` the scanner's exposure.
    """
    _check_rgb(img)
    curves = [_density_curve(base[c], gamma[c], exposure, flare, gain) for c in range(3)]
    return _apply_channel_luts(img, curves)


def negative_bw(
    img: np.ndarray,
    base: Sequence[float],
    gamma: float,
    exposure: float,
    flare: float,
    gain: float,
) -> np.ndarray:
    """Black-and-white negative; uint8 HxWx3 RGB in, uint8 out (channels equal up to the base tint).

    The luma is exposed on one silver layer with density slope ``gamma``; ``base`` is the (nearly
    neutral, often slightly bluish or grey) per-channel transmittance of the film base.
    """
    _check_rgb(img)
    gray = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    curves = [_density_curve(base[c], gamma, exposure, flare, gain) for c in range(3)]
    return _apply_channel_luts(gray, curves)


def grayscale(img: np.ndarray, tone: Sequence[float] = (1.0, 1.0, 1.0), strength: float = 0.0) -> np.ndarray:
    """Black-and-white print; uint8 HxWx3 RGB in, uint8 out.

    Luma (ITU-R 601 weights, as OpenCV) copied to the three channels. With ``strength`` > 0 the print is
    toned: channel ``c`` follows the curve ``x ** tone[c]``, blended with the neutral print by
    ``strength`` (0..1). Sepia is ``tone`` like (0.85, 1.0, 1.3): warm mid-tones while pure black and pure
    white stay put, as on a real toned print. With ``strength`` 0 all channels are equal.
    """
    _check_rgb(img)
    gray = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    if strength <= 0.0:
        return gray
    curves = [(1.0 - strength) * _LEVELS + strength * _LEVELS ** tone[c] for c in range(3)]
    return _apply_channel_luts(gray, curves)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip at ``quality`` (1..100, OpenCV's encoder, 4:2:0 chroma); uint8 HxWx3 RGB in and out."""
    _check_rgb(img)
    # OpenCV's encoder expects BGR: swap so the chroma subsampling lands on the real chroma
    ok, buffer = cv2.imencode(
        ".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    )
    if not ok:
        raise RuntimeError("OpenCV could not encode the image as JPEG")
    return cv2.cvtColor(cv2.imdecode(buffer, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def salt_pepper(img: np.ndarray, idx: np.ndarray, n_salt: int) -> np.ndarray:
    """uint8 HxWx3 in, uint8 out: flat pixel indices ``idx[:n_salt]`` set to 255, the rest of ``idx`` to 0."""
    _check_rgb(img)
    out = img.copy()
    flat = out.reshape(-1, img.shape[2])
    flat[idx[:n_salt]] = 255
    flat[idx[n_salt:]] = 0
    return out


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with standard deviation ``sigma`` pixels; uint8 HxWx3 in and out."""
    _check_rgb(img)
    return cv2.GaussianBlur(img, (0, 0), sigmaX=float(sigma), borderType=cv2.BORDER_REFLECT_101)


def motion_kernel(length: float, angle: float) -> np.ndarray:
    """Normalised float32 kernel of a straight camera shake ``length`` pixels long at ``angle`` degrees."""
    size = int(np.ceil(length)) | 1  # odd, so the line is centred on a pixel
    canvas = np.zeros((size * 4, size * 4), np.uint8)  # drawn 4x larger, then area-reduced: anti-aliased
    centre = np.array([size * 2, size * 2], np.float64)
    half = np.array([np.cos(np.radians(angle)), np.sin(np.radians(angle))]) * length * 2.0
    p0, p1 = np.rint(centre - half).astype(int), np.rint(centre + half).astype(int)
    cv2.line(canvas, (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1])), 255, thickness=4)
    kernel = cv2.resize(canvas.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    return kernel / kernel.sum()


def defocus_kernel(radius: float) -> np.ndarray:
    """Normalised float32 disk kernel (out-of-focus lens) of ``radius`` pixels, anti-aliased."""
    size = 2 * int(np.ceil(radius)) + 1
    canvas = np.zeros((size * 4, size * 4), np.uint8)
    cv2.circle(canvas, (size * 2, size * 2), max(round(radius * 4), 2), 255, thickness=-1)
    kernel = cv2.resize(canvas.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    return kernel / kernel.sum()


def convolve(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve each channel with a float ``kernel`` (e.g. motion/defocus); uint8 HxWx3 in and out."""
    _check_rgb(img)
    return cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT_101)


def gaussian_noise(img: np.ndarray, noise: np.ndarray, sigma: float) -> np.ndarray:
    """Add ``sigma * noise`` (sigma in 0..255 units; noise standard normal, HxWx3 or HxWx1); uint8 out."""
    _check_rgb(img)
    out = img.astype(np.float32) + noise * np.float32(sigma)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def film_grain(img: np.ndarray, noise: np.ndarray, sigma: float, grain_size: float) -> np.ndarray:
    """Film grain: ``noise`` (standard normal, HxWx1 or HxWx3) clumped by a blur of ``grain_size`` pixels.

    The clumped field is rescaled to unit deviation, then added with amplitude ``sigma`` (0..255 units)
    weighted by a mid-tone bump: grain shows most in the mid-tones and least in clipped blacks and whites.
    uint8 HxWx3 RGB in, uint8 out.
    """
    _check_rgb(img)
    field = cv2.GaussianBlur(noise, (0, 0), sigmaX=float(grain_size), borderType=cv2.BORDER_REFLECT_101)
    field = field.reshape(noise.shape)
    field = field / max(float(field.std()), 1e-6)
    level = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)[..., None] / 255.0
    weight = 0.35 + 2.6 * level * (1.0 - level)  # 0.35 at black/white, 1.0 at mid-grey
    out = img.astype(np.float32) + field * weight * np.float32(sigma)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def fade(img: np.ndarray, contrast: float, yellowing: float) -> np.ndarray:
    """Faded, yellowed print; uint8 HxWx3 RGB in, uint8 out.

    Contrast loss keeps paper white and lifts the blacks: ``y = (1 - contrast) + contrast * x`` (x in
    0..1), ``contrast`` in (0, 1]. ``yellowing`` (0..1) then darkens blue fully and green by a third of it,
    which is how aged paper and dyes drift.
    """
    _check_rgb(img)
    faded = (1.0 - contrast) + contrast * _LEVELS
    tint = (1.0, 1.0 - yellowing / 3.0, 1.0 - yellowing)
    return _apply_channel_luts(img, [faded * t for t in tint])


def low_res(img: np.ndarray, scale: float, interpolation: str = "linear") -> np.ndarray:
    """Down-sample by ``scale`` (0..1, area filter) and back up with ``interpolation`` (see
    :data:`INTERPOLATIONS`): a small or soft original scanned big. uint8 HxWx3 in, same shape out."""
    _check_rgb(img)
    h, w = img.shape[:2]
    small_size = (max(4, round(w * scale)), max(4, round(h * scale)))
    small = cv2.resize(img, small_size, interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=INTERPOLATIONS[interpolation])


def draw_shapes(height: int, width: int, shapes: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise damage ``shapes`` into ``(alpha, colour)``: uint8 HxW opacity and uint8 HxWx3 fill colour.

    Each shape is a dict with ``"type"`` ("polygon", "polyline" or "circles"), an ``int32`` ``"points"``
    array (N x 2, x/y pixels), ``"color"`` (R, G, B), ``"opacity"`` (0..1), and ``"thickness"`` for
    polylines or ``"radii"`` for circles. Later shapes paint over earlier ones.
    """
    alpha = np.zeros((height, width), np.uint8)
    colour = np.zeros((height, width, 3), np.uint8)
    for shape in shapes:
        draw_shape(alpha, colour, shape)
    return alpha, colour


def draw_shape(alpha: np.ndarray, colour: np.ndarray | None, shape: dict[str, Any]) -> None:
    """Draw one shape of :func:`draw_shapes` in place into ``alpha`` and, unless None, ``colour``."""
    level = round(255 * shape["opacity"])
    rgb = tuple(int(c) for c in shape["color"])
    canvases = [(alpha, level)] if colour is None else [(alpha, level), (colour, rgb)]
    points = shape["points"]
    for canvas, value in canvases:
        if shape["type"] == "polygon":
            cv2.fillPoly(canvas, [points], value)
        elif shape["type"] == "polyline":
            cv2.polylines(canvas, [points], False, value, thickness=int(shape["thickness"]))
        elif shape["type"] == "circles":
            for (x, y), radius in zip(points, shape["radii"], strict=True):
                cv2.circle(canvas, (int(x), int(y)), int(radius), value, thickness=-1)
        else:
            raise ValueError(f"unknown shape type {shape['type']!r}")


def holes(
    img: np.ndarray, alpha: np.ndarray, colour: np.ndarray, texture: np.ndarray | None = None
) -> np.ndarray:
    """Paint damage over the image: ``out = img * (1 - a) + fill * a`` with ``a = alpha / 255``.

    ``alpha`` uint8 HxW, ``colour`` uint8 HxWx3 (see :func:`draw_shapes`). ``texture`` (optional, float32,
    any small size, 0..255 units) is stretched over the image and added to the fill, so patches read as
    paper or card rather than flat paint. Pixels where alpha is 0 are returned unchanged.
    uint8 HxWx3 RGB in, uint8 out.
    """
    _check_rgb(img)
    a = alpha.astype(np.float32)[..., None] / 255.0
    fill = colour.astype(np.float32)
    if texture is not None:
        h, w = img.shape[:2]
        fill += cv2.resize(texture, (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
    out = img.astype(np.float32) * (1.0 - a) + fill * a
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
