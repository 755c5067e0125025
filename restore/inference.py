"""Restoring one photo: a network pass at the render size, transferred to full resolution cheaply.

The generator costs ~267 GFLOP per 512x512 pass, about a second on a 2-core CPU, so running it over every
native-resolution tile (4+ passes per megapixel) is too slow. Instead the network runs once on a copy scaled
so its long side is `render_factor * 16` px (DeOldify's unit), padded to a multiple of 32, and its result is
carried back to the original size:

* Luminance of a positive (print, colour scan, inverted negative): the photo's own, by default. With
  `tones="network"` a per-image monotone tone curve (LUT) fitted from the input's luminance to the network's
  at render size carries the network's tone corrections (fading, uneven exposure) over, and the network's
  own luminance supplies the coarse band; applied to the full-resolution luminance the curve keeps the fine
  detail the render size never saw. With the shipped model the network's tones cost 1-3 dB in restore-eval,
  hence the default. (`transfer` called directly can still detect and invert a negative with the curve.)
* Either way, where the network departs strongly from the curve (holes, scratches, stains: the "damage
  mask"), the network's repair is taken whole: the input's detail there is the damage itself. On colour
  photos the mask is the classically found holes (below) and what departs in colour, not in brightness.
* Negatives: the network shows what it takes for a negative by inverting it. When it inverts a photo (its
  tones, compared at 32 px, anti-correlate with the input's: `coarse_correlation`), a second pass runs on
  the photo's film-base inversion (the classical density model of `restore.baselines.negative_lut`, its levels
  read with the scan's holes inpainted): a real negative's inversion is a positive, which the network keeps.
  A scan whose clearest parts are as orange as colour film's mask (`has_orange_base`) asks the same
  question whatever the network did (it half-inverts some damaged colour negatives, or leaves them nearly
  as they are); then the network must also change the scan itself far more than its inverted copy
  (ORANGE_CHANGE_RATIO: a warm-lit positive's inverted copy is changed as much). The negative is then
  restored as that positive, like a print or a colour scan: the classical inversion sets its tones and
  removes the orange mask, the network repairs (and colourizes black-and-white film). The one free
  parameter of that inversion, the film's latitude, which sets every mid-tone, comes from the film's known
  slope (`restore.baselines.FILM_GAMMA`). The network's own inversion of the scan is not mixed in: on 165
  training photos made into negatives, fitting the latitude to it with weight 0.5 lost 2.6 dB (colour) and
  0.8 dB (b&w) against the film's slope alone. The damage found on the scan counts only where the positive
  confirms it (`Restorer._confirmed_damage`). A network that inverts the copy too inverts whatever it is shown
  (a weak one does that to some dark sepia prints), so the photo is a positive. Positives take one pass (an
  orange-lit one two); a noisy negative's scan, as it came, is denoised again by the negative denoiser (its
  loss taken on the positive: the inversion magnifies what is left of the noise on the scan's dense end) or,
  without one, with non-local means where the denoiser left it noisy, and its inversion takes a third.
* Isolated impulses (salt-and-pepper) are removed at native resolution with a 3x3 median before anything.
* Noise and film grain: a photo whose luminance noise is DENOISE_MIN_SIGMA levels or more is denoised
  at its own resolution by the denoiser (`Restorer.denoise`, the shipped models/denoiser.safetensors when
  installed), in tiles, each the mean of its four flipped copies' passes, before anything else sees it; the
  render-size copy cannot show noise the generator could remove at full size. Without a denoiser the noise
  is only cored in the full-resolution detail (below).
* Damage the damage detector finds on any photo (cracks, scratches, dust, holes: `Restorer.find_damage`, the
  shipped models/detector.safetensors) and, on a colour photo or colour negative, blobs of one near-neutral
  colour (missing emulsion, dust, opaque scratches; `restore.baselines.hole_mask`), lines of lettering
  excepted (`text_cleared`), are inpainted classically on the render-size copy before the network sees it,
  and the repair there is the mean of the network's and that fill (either alone errs more: a from-scratch
  network fills large holes poorly).
* Colour: chroma (YCrCb Cr/Cb) from the render-size output, upsampled bilinearly and combined with the
  full-resolution luminance. This is DeOldify's trick and it works because vision resolves colour far more
  coarsely than brightness (the reason JPEG subsamples chroma), so low-resolution colour looks sharp on
  sharp luminance. A colour photo that needs only repair keeps its own chroma outside the damage mask
  (smoothed when the photo is noisy: chroma noise is the most visible part of colour noise), and its
  pixels whose YCrCb nothing changed are its own, bit for bit (no 8-bit colour-space round trip).

`Restorer.restore` is pure: no printing, plotting or I/O besides loading the weights once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image
from torch import nn

from restore.baselines import (
    blob_and_ring_colours,
    denoise_gaussian,
    estimate_noise_sigma,
    hole_mask,
    inpaint_holes,
    negative_lut,
)
from restore.imageio import arrays_to_pil, pil_to_arrays
from restore.imaging import to_tensor, to_uint8
from restore.metrics import mae
from restore.weights import (
    WeightsError,
    default_denoiser_path,
    default_detector_path,
    default_negative_denoiser_path,
    default_weights_path,
    load_denoiser,
    load_detector,
    load_generator,
)

log = logging.getLogger(__name__)

INPUT_TYPES = ("auto", "negative", "bw", "color")
RENDER_UNIT = 16                 # px per render_factor step, as in DeOldify
DEFAULT_RENDER_FACTOR = 32       # 32 * 16 = 512 px long side: one ~0.2-0.26 MP pass, under a second on 2 cores
NETWORK_MULTIPLE = 32            # the U-Net downsamples 5 times
NEGATIVE_CORRELATION = -0.2      # tone-curve correlation below this: the network inverted it, a negative
COARSE_SIDE = 32                 # px: long side of the copies whose tones `coarse_correlation` compares
NEGATIVE_COARSE_CORRELATION = 0.45  # network output vs input at COARSE_SIDE below this: it inverted the tones
FILM_BASE_PERCENTILE = 98.0      # the brightest 2% of a scan: on a colour negative, its clearest film (the base)
ORANGE_BASE_RATIOS = (0.8, 0.35)  # G/R and B/R of that light below both: an orange mask, as on a colour negative
ORANGE_CHANGE_RATIO = 1.3        # with an orange mask: the network changes the scan this many times more than
                                 # its inverted copy: a negative (0.4-early on eval negatives with holes it
                                 # half-inverts 1.5-2.0, orange-lit positives 0.88-1.04)
COLOR_CHROMA_SPREAD = 4.0        # chroma not explained by luminance (8-bit levels, rms) above this: colour
DAMAGE_THRESHOLD = 40.0          # luminance levels between network and curve (high band) that mark damage
LARGE_DAMAGE_THRESHOLD = 80.0    # levels from a global linear map that mark a large hole in a positive (40 took
                                 # whole faces a weak network renders darker; 80 also scored +0.9 dB on color_holes)
DESATURATION_MIN_CHROMA = 20.0   # levels of input chroma (Cr, Cb from neutral) from which a hue is reliable
DESATURATION_MIN_SCALE = 0.2     # network chroma at least this share of the input's, same hue: its own muting
INPUT_EVIDENCE = 20.0            # levels of the input's own high band needed before the high band marks damage
NOISY_NEGATIVE_SIGMA = 6.0       # levels of noise on a negative's scan above which it is denoised before inversion ...
NOISY_NEGATIVE_FLAT_SIGMA = 5.0  # ... if its flattest blocks (`_noise_sigma`) show this much too (texture is no noise)
# A negative's damage mask keeps only what its positive confirms (`Restorer._confirmed_damage`).
CONFIRM_NEGATIVE_DAMAGE = True
RELEVEL_CONFIRMED = True         # ... and its levels are read again with only that damage inpainted
NEGATIVE_DAMAGE_SHARE = 0.2      # ... by the detector: the share of a damaged area it marks on the positive too
IMPULSE_FRACTION_NO_HOLES = 0.002  # more impulses than this (share of pixels): the hole detector is not run
IMPULSE_THRESHOLD = 48           # a pixel this far above/below all 8 neighbours is an impulse (salt/pepper)
SAME_SIZE_DETAIL_SIGMA = 2.0      # px: finest luminance band taken from the input when the photo fits the render size
TONES = ("input", "network")
CHROMA_DENOISE_PER_LEVEL = 0.2   # noisy colour photo: its own chroma blurred by this many px per level of noise
CHROMA_DENOISED_PER_LEVEL = 0.1  # ... and a denoised one by this many per level of the noise it had
MAX_SATURATION = 4.0             # colorized chroma scale: beyond this every colour clips
MIN_CORING_SIGMA = 5.0           # detail noise (levels) below this is left alone: clean photos stay untouched
DETECTOR_THRESHOLD = 0.5         # damage detector probability from which a render-size pixel is damage
DETECTOR_UPSCALE = 2             # ... extended along what it finds on the copy enlarged this many times ...
DETECTOR_EXTEND_THRESHOLD = 0.27  # ... from this probability there (`Restorer.find_damage`: fine cracks)
EDGE_BAND = 6                    # px of a render copy's side where damage along the edge is its border ...
EDGE_LINE_COVERAGE = 0.25        # ... when it runs along this share of the side and does not go further in
TEXT_HEIGHTS = (6, 48)           # px at render size: the letter heights of a line of text in a damage mask ...
TEXT_MIN_LETTERS = 3             # ... which has at least this many side by side (`text_cleared`) ...
TEXT_GAP = 0.75                  # ... at most this many letter heights apart ...
TEXT_MAX_FILL = 0.75             # ... each filling at most this share of its box (strokes, not a solid blob) ...
TEXT_MIN_COVER = 0.15            # ... the line's pieces together at least this share of its box
DENOISE_MIN_SIGMA = 5.0          # levels of luminance noise (flattest blocks) from which the denoiser runs
DENOISE_TILE = 768               # px: the denoiser runs on tiles this big (bounded memory on big scans) ...
DENOISE_MARGIN = 32              # ... each seen with this much of its neighbours around it (no seams)
DENOISE_FLIPS = ((), (3,), (2,), (2, 3))  # ... and flipped these ways (tensor dims), the passes averaged back


def _logit(probability: float) -> float:
    return float(np.log(probability / (1.0 - probability)))


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without a GPU is an error, not a silent fallback."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but no CUDA GPU is available; use --device cpu")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ValueError(f"unknown device {name!r}; choose auto, cpu or cuda")
    return torch.device(name)


def render_shape(height: int, width: int, render_factor: int = DEFAULT_RENDER_FACTOR) -> tuple[int, int]:
    """(h, w) of the render-size copy: long side render_factor*16 px, never upscaled, aspect kept."""
    if render_factor < 1:
        raise ValueError(f"render_factor must be >= 1, got {render_factor}")
    scale = min(1.0, render_factor * RENDER_UNIT / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def pad_to_multiple(image: np.ndarray, multiple: int = NETWORK_MULTIPLE) -> np.ndarray:
    """Reflect-pad bottom/right to a multiple of `multiple` (reflection avoids a hard edge the net would see)."""
    height, width = image.shape[:2]
    pad_h, pad_w = -height % multiple, -width % multiple
    if not pad_h and not pad_w:
        return image
    if height == 1 or width == 1:  # reflection needs 2 pixels; replicate instead
        return cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_REPLICATE)
    return cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_REFLECT_101)


def _isotonic_increasing(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted least-squares non-decreasing fit (pool adjacent violators); 256 points, so a loop is fine."""
    blocks: list[list[float]] = []  # [mean, weight, count]
    for value, weight in zip(values.tolist(), weights.tolist()):
        blocks.append([value, weight, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            mean2, weight2, count2 = blocks.pop()
            mean1, weight1, count1 = blocks[-1]
            total = weight1 + weight2
            blocks[-1] = [(mean1 * weight1 + mean2 * weight2) / total, total, count1 + count2]
    return np.concatenate([np.full(count, mean) for mean, _, count in blocks])


def fit_tone_curve(source: np.ndarray, target: np.ndarray, direction: int | None = None
                   ) -> tuple[np.ndarray, float]:
    """Monotone LUT (float32[256]) mapping uint8 `source` levels to `target` (same shape, any float range).

    `direction` +1/-1 forces an increasing/decreasing curve; None picks it from the sign of the correlation
    (below NEGATIVE_CORRELATION: decreasing). Returns (lut, correlation). Levels absent from `source` are
    interpolated, and beyond its range extrapolated with the end slope: the full-resolution image has more
    extreme levels than its area-averaged render-size copy.
    """
    source = np.asarray(source, dtype=np.uint8).ravel()
    target = np.asarray(target, dtype=np.float64).ravel()
    counts = np.bincount(source, minlength=256).astype(np.float64)
    sums = np.bincount(source, weights=target, minlength=256)
    std_source, std_target = source.std(), target.std()
    if std_source < 1e-6 or std_target < 1e-6:
        correlation = 0.0
    else:
        correlation = float(np.mean((source - source.mean()) * (target - target.mean())) / (std_source * std_target))
    if direction is None:
        direction = -1 if correlation < NEGATIVE_CORRELATION else 1
    levels = np.flatnonzero(counts)
    if levels.size == 0:
        return np.arange(256, dtype=np.float32), correlation
    means = sums[levels] / counts[levels]
    fitted = direction * _isotonic_increasing(direction * means, counts[levels])
    grid = np.arange(256, dtype=np.float64)
    lut = np.interp(grid, levels, fitted)
    if levels.size > 1:
        # End slopes from the fitted curve over ~1/8 of the observed range, bounded to stay sane.
        span = max(1, (levels[-1] - levels[0]) // 8)
        low_slope = (np.interp(levels[0] + span, levels, fitted) - fitted[0]) / span
        high_slope = (fitted[-1] - np.interp(levels[-1] - span, levels, fitted)) / span
        low_slope = direction * np.clip(direction * low_slope, 0.0, 4.0)
        high_slope = direction * np.clip(direction * high_slope, 0.0, 4.0)
        below, above = grid < levels[0], grid > levels[-1]
        lut[below] = fitted[0] + (grid[below] - levels[0]) * low_slope
        lut[above] = fitted[-1] + (grid[above] - levels[-1]) * high_slope
    # A light blur turns the step-like isotonic fit into a smooth curve; blurring keeps it monotone.
    kernel = np.exp(-0.5 * (np.arange(-6, 7) / 2.0) ** 2)
    padded = np.pad(lut, 6, mode="edge")
    lut = np.convolve(padded, kernel / kernel.sum(), mode="valid")
    return np.clip(lut, 0.0, 255.0).astype(np.float32), correlation


def luma_correlation(small_in: np.ndarray, small_out: np.ndarray) -> float:
    """Pearson correlation of two uint8 RGB images' luminance: about -1 when one is the other inverted."""
    a = cv2.cvtColor(np.ascontiguousarray(small_in), cv2.COLOR_RGB2GRAY).astype(np.float64).ravel()
    b = cv2.cvtColor(np.ascontiguousarray(small_out), cv2.COLOR_RGB2GRAY).astype(np.float64).ravel()
    if a.std() < 1e-6 or b.std() < 1e-6:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def coarse_correlation(small_in: np.ndarray, small_out: np.ndarray, side: int = COARSE_SIDE) -> float:
    """`luma_correlation` of the two images scaled (area filter) to `side` px on their long side: their tones.

    The U-Net's skip connections carry the input's fine detail through with its sign even where the network
    turns the tones over, so a negative it inverts only in part can still correlate positively at full size
    (-0.04 to 0.64 on three of 16 black-and-white eval negatives with the 0.3-early model). At 32 px the tones
    decide: the eval negatives measured -0.93 to -0.14 (one, at 0.64, the network does not invert at all),
    the positives of every eval category and the 25 real old photos 0.59 to 1.0 (the lowest: heavily
    scratched prints the network repairs). With the shipped 0.4-early model (0.45 is the threshold, midway):
    black-and-white negatives of 95 training photos -0.99 to +0.52 (two above 0.25, at 0.34 and 0.52) and one eval
    negative at +0.33, which 0.25 left a negative; their positives +0.67 to 1.0 (one, a glass
    beaker on grey, at -0.69: taken for a negative at any threshold), the 25 real old photos +0.87 to 1.0, the
    eval positives +0.94 to 1.0. A positive taken for one costs a second pass, and its inverted copy the
    network inverts back (or, as the beaker's, keeps).
    """
    height, width = small_in.shape[:2]
    scale = side / max(height, width)
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small_in = cv2.resize(small_in, size, interpolation=cv2.INTER_AREA)
        small_out = cv2.resize(small_out, size, interpolation=cv2.INTER_AREA)
    return luma_correlation(small_in, small_out)


def film_base_ratios(rgb: np.ndarray, percentile: float = FILM_BASE_PERCENTILE) -> tuple[float, float]:
    """(G/R, B/R) of a scan's brightest light, per channel at `percentile` in linear light.

    On a colour negative the brightest parts are its clearest film, which carries the orange mask: the eval
    colour negatives (clean and noisy) measured B/R 0.11-0.50, median 0.23 (with holes, inpainted first, the
    same but for a few holes the detector misses). A positive's highlights are near white (median B/R 0.82);
    warm ones go lower (0.27 on a skin close-up, 0.31 on a warm real print), so the ratios only raise the
    question of a negative; the network answers it.
    """
    linear = (rgb.reshape(-1, 3).astype(np.float32) / 255.0) ** 2.2
    red, green, blue = np.percentile(linear, percentile, axis=0)
    if red <= 1e-4:
        return 1.0, 1.0
    return float(green / red), float(blue / red)


def has_orange_base(rgb: np.ndarray) -> bool:
    """Whether a scan's brightest light is as orange as a colour negative's film base (`film_base_ratios`)."""
    green, blue = film_base_ratios(rgb)
    return green < ORANGE_BASE_RATIOS[0] and blue < ORANGE_BASE_RATIOS[1]


def _positive_type(rgb: np.ndarray) -> str:
    return "color" if chroma_spread(rgb) > COLOR_CHROMA_SPREAD else "bw"


def chroma_spread(rgb: np.ndarray, max_samples: int = 65536) -> float:
    """RMS (8-bit levels) of the chroma that luminance does not explain.

    Grayscale is 0; a sepia or cyanotype print has chroma that is a smooth function of luminance (one hue),
    so it is near 0 too; a colour photo has chroma independent of luminance.
    """
    ycc = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YCrCb).reshape(-1, 3)
    if ycc.shape[0] > max_samples:
        ycc = ycc[:: ycc.shape[0] // max_samples + 1]
    y = ycc[:, 0].astype(np.float64) / 255.0
    design = np.stack([np.ones_like(y), y, y * y], axis=1)
    residual = 0.0
    for channel in (1, 2):
        values = ycc[:, channel].astype(np.float64)
        coefficients, *_ = np.linalg.lstsq(design, values, rcond=None)
        residual += float(np.mean((values - design @ coefficients) ** 2))
    return float(np.sqrt(residual))


def remove_impulses(rgb: np.ndarray, threshold: int = IMPULSE_THRESHOLD) -> tuple[np.ndarray, int]:
    """Replace isolated bright/dark pixels (salt-and-pepper) by their 3x3 median; returns (rgb, count).

    A pixel counts only if it differs from *all 8* neighbours by more than `threshold`, so thin lines and
    edges (which have a similar neighbour) are never touched. The input array is not modified.
    """
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    ring = np.ones((3, 3), np.uint8)
    ring[1, 1] = 0
    salt = cv2.subtract(gray, cv2.dilate(gray, ring)) > threshold
    pepper = cv2.subtract(cv2.erode(gray, ring), gray) > threshold
    mask = salt | pepper
    del gray, salt, pepper
    count = int(np.count_nonzero(mask))
    if count == 0:
        return rgb, 0
    repaired = rgb.copy()
    repaired[mask] = cv2.medianBlur(rgb, 3)[mask]
    return repaired, count


def _noise_sigma(plane: np.ndarray, crop: int = 1024, block: int = 8) -> float:
    """Noise level (levels) of a float plane from the 2nd percentile of 8x8-block deviations of its high-pass.

    Textured areas have large block deviations; the flattest blocks show the noise alone, so fine texture is
    not mistaken for noise (a global MAD would be: clean building facades read as sigma 4-7). The 2nd
    percentile of 64-sample deviations sits at ~0.84 sigma for Gaussian noise (checked on LIVE1/Set14 with
    sigma 12 added: estimates 11.6-12.7), hence the correction.
    """
    height, width = plane.shape
    top, left = max(0, (height - crop) // 2), max(0, (width - crop) // 2)
    patch = np.ascontiguousarray(plane[top: top + crop, left: left + crop])
    high = patch - cv2.blur(patch, (3, 3))
    rows, cols = high.shape[0] // block, high.shape[1] // block
    if rows == 0 or cols == 0:
        return 0.0
    blocks = high[: rows * block, : cols * block].reshape(rows, block, cols, block)
    deviations = blocks.std(axis=(1, 3))
    # the 3x3 high-pass keeps sqrt(8/9) of white noise's deviation
    return float(np.percentile(deviations, 2) / np.sqrt(8.0 / 9.0) / 0.84)


def _luma_noise_sigma(rgb: np.ndarray) -> float:
    """`_noise_sigma` of a uint8 RGB photo's luminance (Y of YCrCb)."""
    return _noise_sigma(cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)[..., 0].astype(np.float32))


def _scan_noise_sigma(rgb: np.ndarray, crop: int = 1024) -> float:
    """The noise (levels) a photo is denoised for: its luminance's `_noise_sigma`, but on a scan with a colour
    negative's orange mask that of its chroma (the larger of Cr's and Cb's) when that reads below
    DENOISE_MIN_SIGMA: grain and scanner noise are in each dye layer, so they read in the chroma too, and
    fine texture that fills the frame (a lawn, a hedge) reads in the luminance alone. 86 synthetic colour
    negatives (46 eval, 40 training photos) read, clean, luminance 0-5.88 and chroma 0-2.51; with sigma 10,
    luminance 6.47-9.71 and chroma 6.23-7.40. All three are read on the central `crop` (where `_noise_sigma`
    reads), converted alone, and the mask looked for on a copy of about 1 MP, so a big scan costs little.
    """
    height, width = rgb.shape[:2]
    top, left = max(0, (height - crop) // 2), max(0, (width - crop) // 2)
    ycc = cv2.cvtColor(np.ascontiguousarray(rgb[top: top + crop, left: left + crop]), cv2.COLOR_RGB2YCrCb)
    luma = _noise_sigma(ycc[..., 0].astype(np.float32), crop)
    step = max(1, int(np.sqrt(height * width / 1e6)))
    if luma < DENOISE_MIN_SIGMA or not has_orange_base(rgb[::step, ::step]):
        return luma
    chroma = max(_noise_sigma(ycc[..., channel].astype(np.float32), crop) for channel in (1, 2))
    return luma if chroma >= DENOISE_MIN_SIGMA else min(luma, chroma)


def _linear_departure(source: np.ndarray, target: np.ndarray, max_samples: int = 65536) -> np.ndarray:
    """Per pixel |target - (k * source + b)| of two planes, k and b fitted globally (least squares)."""
    source = source.astype(np.float32)
    target = target.astype(np.float32)
    step = max(1, source.size // max_samples)
    x, y = source.ravel()[::step], target.ravel()[::step]
    design = np.stack([x, np.ones_like(x)], axis=1)
    (slope, offset), *_ = np.linalg.lstsq(design, y, rcond=None)
    return np.abs(target - (slope * source + offset))


def _chroma_departure(ycc_in: np.ndarray, ycc_out: np.ndarray) -> np.ndarray:
    """Per pixel, the larger `_linear_departure` of the network's chroma from the input's over Cr and Cb."""
    return np.maximum(_linear_departure(ycc_in[..., 1], ycc_out[..., 1]),
                      _linear_departure(ycc_in[..., 2], ycc_out[..., 2]))


def _network_desaturation(ycc_in: np.ndarray, ycc_out: np.ndarray) -> np.ndarray:
    """Per pixel, whether the network's chroma is the input's scaled down (same hue, kept 20-105%).

    An MSE-trained network mutes small saturated objects (a red box becomes brown) beyond any global colour
    map; that is its weakness, not damage of the photo. A stain's repair changes the hue or removes the colour.
    """
    chroma_in = ycc_in[..., 1:].astype(np.float32) - 128.0
    chroma_out = ycc_out[..., 1:].astype(np.float32) - 128.0
    power = np.einsum("...c,...c->...", chroma_in, chroma_in)
    scale = np.einsum("...c,...c->...", chroma_out, chroma_in) / np.maximum(power, 1.0)
    off_hue = np.linalg.norm(chroma_out - scale[..., None] * chroma_in, axis=-1)
    magnitude = np.sqrt(power)
    return ((magnitude >= DESATURATION_MIN_CHROMA) & (scale >= DESATURATION_MIN_SCALE) & (scale <= 1.05)
            & (off_hue <= np.maximum(6.0, 0.25 * magnitude)))


def _keep_untouched(full: np.ndarray, restored: np.ndarray, ycc_before: np.ndarray, ycc_after: np.ndarray
                    ) -> np.ndarray:
    """`restored` (uint8 RGB made from 8-bit YCrCb `ycc_after`) with `full`'s own pixels where the YCrCb of
    `full` (`ycc_before`) was not changed: an 8-bit RGB -> YCrCb -> RGB round trip moves pixels by a level or
    so (about 0.4 dE2000 on eval photos). In place on `restored`."""
    untouched = (ycc_before == ycc_after).all(axis=2)
    restored[untouched] = full[untouched]
    return restored


def transfer(full: np.ndarray, small_in: np.ndarray, small_out: np.ndarray, input_type: str = "auto",
             tones: str = "input", saturation: float = 1.0, *, holes: np.ndarray | None = None,
             removed_noise: float = 0.0, chroma_damage: bool = True, core_detail: bool = True
             ) -> tuple[np.ndarray, dict[str, Any]]:
    """Carry the render-size restoration `small_out` (of `small_in`) back to `full`'s resolution.

    All three are uint8 RGB; `small_in` is `full` resized to `small_out`'s shape. `input_type` "auto" detects
    the type; otherwise it is taken as given ("negative" here means the caller already inverted the input).
    `tones`: "input" keeps a positive's own brightness and contrast (the network's luminance is used only where
    it repairs damage); "network" carries the network's tone corrections (fading, uneven exposure) over too.
    `saturation` scales the colours the network gives a black-and-white photo (1: as predicted; the MSE-trained
    network predicts muted colours, and more scores lower in PSNR/ΔE but looks more colourful).
    `holes`: render-size mask (non-zero = known damage, e.g. `restore.baselines.hole_mask`, which already
    reaches over a hole's rim) where the repair is taken whatever it departs by (a large hole's inside shows no
    edge for the damage tests to find): the mean of the network's output and a classical (Telea) fill of
    `small_in`, which errs less than either alone.
    `removed_noise`: the luminance noise (levels) `full` had before it was denoised (`Restorer.denoise`); a colour
    photo's chroma is smoothed for it as for noise still there (the denoiser leaves chroma noise behind).
    `chroma_damage`: on a colour photo, a colour change the network makes marks damage (a stain it repaired);
    False for a negative's inversion, whose colours the network only reads: there such a change is its
    misreading (a yellow dress recoloured; restore-eval, 12 eval photos: colour negatives +0.26 dB, + holes
    +0.09 dB, ΔE lower in both), and damage is what the holes mask marks.
    `core_detail`: the input's fine band is cored where it reads as noisy (MIN_CORING_SIGMA); False for a
    negative's positive whose scan did not read noisy (`Restorer.restore_array`).
    Returns (uint8 RGB of `full`'s shape, info with "input_type" in {"negative", "bw", "color"}).
    """
    if input_type not in INPUT_TYPES:
        raise ValueError(f"unknown input type {input_type!r}; choose from {', '.join(INPUT_TYPES)}")
    if tones not in TONES:
        raise ValueError(f"unknown tones {tones!r}; choose from {', '.join(TONES)}")
    if not 0 <= saturation <= MAX_SATURATION:
        raise ValueError(f"saturation must be between 0 and {MAX_SATURATION:g}, got {saturation:g}")
    if small_in.shape != small_out.shape:
        raise ValueError(f"render-size input {small_in.shape} and output {small_out.shape} differ")
    height, width = full.shape[:2]
    small_h, small_w = small_in.shape[:2]
    ycc_small_in = cv2.cvtColor(small_in, cv2.COLOR_RGB2YCrCb)
    ycc_small_out = cv2.cvtColor(small_out, cv2.COLOR_RGB2YCrCb)
    y_small_in = np.ascontiguousarray(ycc_small_in[..., 0])
    y_small_out = ycc_small_out[..., 0].astype(np.float32)

    lut, correlation = fit_tone_curve(y_small_in, y_small_out, None if input_type == "auto" else 1)
    spread = chroma_spread(small_in)
    if input_type == "auto":
        if correlation < NEGATIVE_CORRELATION:
            detected = "negative"
        else:
            detected = "color" if spread > COLOR_CHROMA_SPREAD else "bw"
    else:
        detected = input_type

    # Prints and colour scans keep their own tones unless asked (tones="network"): with the shipped model the
    # network's tone corrections cost 1-3 dB in every positive category of restore-eval. Negatives always
    # take the curve (it is what inverts them).
    own_tones = tones == "input" and detected != "negative"

    # Damage: where the network departs from the tone curve in the high band (its low band is a legitimate
    # large-scale correction, e.g. uneven fading), the input's pixels are the damage, not detail ... and only
    # where the input shows it too (a scratch, a speck, a hole's edge): the network's own artefacts on smooth
    # skin are not damage of the photo. Not on colour, where the holes mask and the chroma test below find the
    # damage: there this test mostly fired on edges the network renders differently (1-3% of clean eval
    # photos), and leaving it out scored +0.04 to +0.67 dB in every colour category (restore-eval, 8 photos).
    residual = y_small_out - lut[y_small_in]
    sigma = max(1.0, max(small_h, small_w) / 64.0)
    if detected == "color":
        damage = np.zeros(residual.shape, bool)
    else:
        high_band = residual - cv2.GaussianBlur(residual, (0, 0), sigma)
        y_in = y_small_in.astype(np.float32)
        damage = (np.abs(high_band) > DAMAGE_THRESHOLD) & (
            np.abs(y_in - cv2.GaussianBlur(y_in, (0, 0), sigma)) > INPUT_EVIDENCE)
        del high_band
    if own_tones:
        # The network's coarse band is not taken outside damage, so a large hole's inside (invisible to the
        # high band) must be found too: what a global linear brightness map does not explain, at any scale.
        # Not on colour, where the holes mask finds them: there it fired on the network's own tone errors
        # (restore-eval's 46 photos and recipes, shipped model: +0.05 to +0.18 dB in the colour categories,
        # colour negative + holes -0.01).
        if detected != "color":
            damage |= _linear_departure(y_small_in, y_small_out) > LARGE_DAMAGE_THRESHOLD
        lut = np.arange(256, dtype=np.float32)
    curve_small = lut[y_small_in]
    if detected == "color" and chroma_damage:
        # A colour photo keeps its chroma except where the network repaired it. Stains change colour without
        # changing luminance, and can be large, so a high band would miss their inside: instead, what a global
        # linear colour map (input chroma -> network chroma: a cast correction, a weak network's overall
        # desaturation) does not explain marks damage, whatever its size ... unless the network only muted a
        # saturated colour, keeping its hue (a red box on bop_f.jpg came out a brown smear; restore-eval, 46
        # photos: colour + holes +0.01 dB, colour negative + holes -0.01, other colour categories level).
        damage |= ((_chroma_departure(ycc_small_in, ycc_small_out) > DAMAGE_THRESHOLD)
                   & ~_network_desaturation(ycc_small_in, ycc_small_out))
    damage = damage.astype(np.uint8)
    damage = cv2.dilate(damage, np.ones((3, 3), np.uint8))
    alpha_small = np.clip(cv2.GaussianBlur(damage.astype(np.float32), (0, 0), 1.0) * 1.5, 0.0, 1.0)
    if holes is not None:
        if holes.shape != damage.shape:
            raise ValueError(f"holes mask {holes.shape} does not match the render size {damage.shape}")
        # The mask is taken as it is (not grown: the pixels around a hole are the photo's), and the repair in
        # it is half the network's, half a classical fill (restore-eval's 46 photos, colour + holes: the
        # network's alone 26.47 dB, dE 0.85; with the fill 26.53, 0.81; the grown mask 26.46, 0.86).
        inside = holes > 0
        damage |= inside
        if inside.any():
            filled = inpaint_holes(small_in, inside.astype(np.uint8))
            small_out = small_out.copy()
            small_out[inside] = ((small_out[inside].astype(np.uint16) + filled[inside] + 1) // 2).astype(np.uint8)
            ycc_small_out = cv2.cvtColor(small_out, cv2.COLOR_RGB2YCrCb)
            y_small_out = ycc_small_out[..., 0].astype(np.float32)
            alpha_small[inside] = 1.0
    damage_fraction = float(damage.mean())
    del residual, damage

    ycc = cv2.cvtColor(full, cv2.COLOR_RGB2YCrCb)
    ycc_before = ycc.copy() if detected == "color" else None      # its own pixels are kept where untouched
    same_size = (small_h, small_w) == (height, width)
    size = (width, height)
    alpha = None
    coring = 0.0
    # The network supplies the coarse band of the luminance (a positive keeping its own tones: the input does)
    # and the input, through the tone curve, the fine band: detail the network blurs away (or never saw, when
    # the render size is smaller) is the photo's own.
    # When the photo fits the render size the network saw every pixel, but its finest band is still its least
    # reliable one, so the split is made there too, at a small scale (2 px scored best on eval photos: +1.2 dB on bw).
    curve_full = lut[ycc[..., 0]]
    if same_size:
        curve_coarse = cv2.GaussianBlur(curve_full, (0, 0), SAME_SIZE_DETAIL_SIGMA)
    else:
        curve_coarse = cv2.resize(curve_small, size, interpolation=cv2.INTER_LINEAR)
    detail = curve_full - curve_coarse
    del curve_full
    if own_tones:
        coarse = curve_coarse
    elif same_size:
        coarse = cv2.GaussianBlur(y_small_out, (0, 0), SAME_SIZE_DETAIL_SIGMA)
    else:
        coarse = cv2.resize(y_small_out, size, interpolation=cv2.INTER_LINEAR)
    del curve_coarse
    noise = _noise_sigma(detail)
    if core_detail and noise > MIN_CORING_SIGMA:
        # Soft-threshold (coring): small detail amplitudes are mostly grain/noise, large ones are edges.
        coring = noise
        detail -= np.clip(detail, -coring, coring)
    if damage_fraction > 0:
        # In damage (holes, scratches, stains) the input's detail is the damage itself: the network's repair
        # is taken whole there.
        alpha = alpha_small if same_size else cv2.resize(alpha_small, size, interpolation=cv2.INTER_LINEAR)
        if same_size:
            coarse += (y_small_out - coarse) * alpha
        elif own_tones:
            coarse += (cv2.resize(y_small_out, size, interpolation=cv2.INTER_LINEAR) - coarse) * alpha
        detail *= 1.0 - alpha
    luminance = coarse
    luminance += detail
    del detail
    luminance += 0.5
    np.clip(luminance, 0, 255, out=luminance)
    ycc[..., 0] = luminance.astype(np.uint8)
    del luminance

    chroma_out = np.ascontiguousarray(ycc_small_out[..., 1:])
    if not same_size:
        # Plain bilinear: a guided (joint) upsampling with the full-resolution luminance as guide scored worse
        # (36.9-38.9 dB vs 41.1 dB chroma PSNR on 20 eval photos with the true render-size chroma) because it
        # copies luminance texture into the colour.
        chroma_out = cv2.resize(chroma_out, (width, height), interpolation=cv2.INTER_LINEAR)
    if detected == "color":
        # Keep the photo's own colours; take the network's only where it repaired damage.
        chroma_sigma = max(coring * CHROMA_DENOISE_PER_LEVEL, removed_noise * CHROMA_DENOISED_PER_LEVEL)
        if chroma_sigma > 0:
            chroma_sigma = float(np.clip(chroma_sigma, 0.5, 6.0))
            for channel in (1, 2):
                ycc[..., channel] = cv2.GaussianBlur(ycc[..., channel], (0, 0), chroma_sigma)
        if alpha is not None:
            for channel in (1, 2):  # one float32 plane at a time keeps a 24 MP photo's memory bounded
                plane = ycc[..., channel].astype(np.float32)
                plane += (chroma_out[..., channel - 1] - plane) * alpha
                plane += 0.5
                ycc[..., channel] = plane.astype(np.uint8)
    else:
        if saturation != 1.0:
            boosted = (chroma_out.astype(np.float32) - 128.0) * saturation + 128.5
            chroma_out = np.clip(boosted, 0, 255).astype(np.uint8)
        ycc[..., 1:] = chroma_out
    restored = cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)
    if ycc_before is not None:
        restored = _keep_untouched(full, restored, ycc_before, ycc)
    info = {
        "input_type": detected,
        "tone_correlation": round(correlation, 4),
        "chroma_spread": round(spread, 3),
        "damage_fraction": round(damage_fraction, 5),
        "coring": round(coring, 3),
        "render_size": (small_h, small_w),   # (height, width), like "passes" shapes
    }
    return restored, info


def components_touching(mask: np.ndarray, seeds: np.ndarray, share: float = 0.0) -> np.ndarray:
    """bool HxW: the 8-connected components of `mask` that contain a pixel of `seeds` (both nonzero = set);
    with `share` above 0, those of which at least that share of the pixels are seeds."""
    count, labels = cv2.connectedComponents((mask > 0).astype(np.uint8), connectivity=8)
    hits = np.bincount(labels[seeds > 0], minlength=count)
    touched = hits >= share * np.bincount(labels.ravel(), minlength=count) if share > 0 else hits > 0
    touched[0] = False
    return touched[labels]


def edge_lines_cleared(mask: np.ndarray, band: int = EDGE_BAND,
                       coverage: float = EDGE_LINE_COVERAGE) -> np.ndarray:
    """A bool damage mask without the lines it has along the photo's edges.

    On each side, damage within `band` px of the edge is dropped where it runs along at least `coverage` of
    that side and, for at least half its run, goes no further in: a print's white border or the scan's edge,
    whose straight line the detector can take for a scratch (most on a denoised photo: one held-out training
    photo with a 4 px white frame lost 2.3 dB at colour + sigma 25 to its frame inpainted with the scene).
    Damage that reaches in from the edge (a torn corner, a crack) is kept.
    """
    mask = mask.copy()
    for side in (mask, mask[::-1], mask.T, mask.T[::-1]):     # views, each with its edge as row 0
        along = side[:band].any(axis=0)
        further_in = side[band:2 * band].any(axis=0)
        if along.mean() >= coverage and (along & further_in).sum() <= 0.5 * along.sum():
            side[:band] = False
    return mask


def text_cleared(mask: np.ndarray, heights: tuple[int, int] = TEXT_HEIGHTS,
                 min_letters: int = TEXT_MIN_LETTERS) -> np.ndarray:
    """A bool damage mask without the lines of lettering in it (a caption, a sign, a book cover's title).

    Letters are what the damage detector and the blob search look for (thin strokes, flat near-neutral shapes
    that contrast with their surroundings), and they find them one at a time, often in pieces, so a title was
    inpainted with its background. A line of text is a row of pieces side by side. From each letter-sized
    component (height within `heights` px, at most three times as wide as tall, filling at most
    TEXT_MAX_FILL of its box, clear of the photo's edges) a line runs left and right through the components
    of its row (half of each within the letter's height, a quarter of it to spare above and below) while the
    gap to the next is at most TEXT_GAP letter heights. The line is text if it holds `min_letters` letters at
    least half as tall as the one it started from, is at least three times as long as it is tall, and its
    pieces cover TEXT_MIN_COVER of its box; a line next to a line of text (in the same row, just above or
    below it, and of a like height) is text too however few of its letters were found. Those components are
    dropped. Damage does not line up like that: a scratch is one long component or pieces too flat to be
    letters, dust and cracks are scattered in two dimensions, round specks fill their boxes, and a hole cut
    by the photo's edge touches it. On the 46 eval photos (the damage categories, clean colour and
    black-and-white negatives, black-and-white prints) this dropped 5,297 marked pixels, 28 of them damage;
    on a book cover's white title it is 1,151 of the 2,987 a clean colour negative had marked.
    """
    mask = mask > 0
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    left, top, width, height, area = (stats[1:, i].astype(np.int64) for i in range(5))
    right, bottom = left + width, top + height
    inside = (left > 0) & (top > 0) & (right < mask.shape[1]) & (bottom < mask.shape[0])
    letter = ((height >= heights[0]) & (height <= heights[1]) & (width <= 3 * height) & inside
              & (area <= TEXT_MAX_FILL * width * height))
    if letter.sum() < min_letters:
        return mask
    lines = []
    for seed in np.flatnonzero(letter):
        line_height = height[seed]
        spare, reach = line_height // 4, TEXT_GAP * line_height
        overlap = np.minimum(bottom, bottom[seed] + spare) - np.maximum(top, top[seed] - spare)
        row = np.flatnonzero((2 * overlap >= height) & (2 * height <= 3 * line_height) & inside)
        row = row[np.argsort(left[row])]
        start, end = left[seed], right[seed]
        members = [seed]
        for i in row[left[row] >= left[seed]]:                # rightwards, in order of their left edges
            if left[i] - end > reach:
                break
            if i != seed:
                members.append(i)
                end = max(end, right[i])
        for i in row[np.argsort(-right[row])]:                # leftwards, in order of their right edges
            if right[i] > start:                              # (every member so far reaches past `start`)
                continue
            if start - right[i] > reach:
                break
            members.append(i)
            start = min(start, left[i])
        line = _TextLine(np.array(members), start, end, top[members].min(), bottom[members].max(), line_height)
        letters = letter[line.members] & (2 * height[line.members] >= line_height)
        line.text = bool(letters.sum() >= min_letters and line.right - line.left >= 3 * line_height
                         and area[line.members].sum() >= TEXT_MIN_COVER * line.box_area)
        lines.append(line)
    # A paragraph: a line next to a line of text (in the same row, just above or below it), of a like height, is
    # text too, however few of its letters were found.
    found = True
    while found:
        found = False
        for line in (line for line in lines if not line.text):
            if any(line.next_to(other) for other in lines if other.text):
                line.text = found = True
    drop = np.zeros(count, bool)
    for line in lines:
        if line.text:
            drop[line.members + 1] = True
    return mask & ~drop[labels]


@dataclass
class _TextLine:
    """A row of damage-mask components that `text_cleared` followed from one letter: its components' indices
    (0-based, background not counted), its box in px, the height of the letter it started from, and whether
    it is text."""

    members: np.ndarray
    left: int
    right: int
    top: int
    bottom: int
    height: int
    text: bool = False

    @property
    def box_area(self) -> int:
        return (self.right - self.left) * (self.bottom - self.top)

    def next_to(self, other: _TextLine) -> bool:
        """Within TEXT_GAP of `other`'s letter height across, half of it up or down, and of a like height."""
        return bool(max(self.left, other.left) - min(self.right, other.right) <= TEXT_GAP * other.height
                    and max(self.top, other.top) - min(self.bottom, other.bottom) <= other.height // 2
                    and other.height <= 2 * self.height <= 4 * other.height)


def flip_ensemble(net: nn.Module, tensor: torch.Tensor, flips: tuple = DENOISE_FLIPS) -> torch.Tensor:
    """The mean of `net` over flipped copies of a 1xCxHxW tensor, each flipped back (one batched pass).

    A small network's errors differ between a photo and its mirror image while the photo's content does not,
    so their mean errs less: on 16 held-out training photos (the denoiser's validation split, 512 px) the four
    flips raised colour + sigma 25 from 28.96 to 29.15 dB (dE 3.73 -> 3.69) and colour negatives + noise from
    20.44 to 20.50 dB; all eight flips and transpositions only to 29.15 and 20.55, at twice the cost.
    """
    batch = torch.cat([tensor.flip(dims) if dims else tensor for dims in flips])
    out = net(batch.contiguous(memory_format=torch.channels_last))
    return torch.stack([out[i: i + 1].flip(dims) if dims else out[i: i + 1] for i, dims in enumerate(flips)]
                       ).mean(dim=0)


def _touching_border(mask: np.ndarray) -> np.ndarray:
    """uint8 mask (255) of the components of boolean `mask` that reach the image's edge."""
    border = np.zeros(mask.shape, np.uint8)
    border[[0, -1], :] = 255
    border[:, [0, -1]] = 255
    return components_touching(mask.astype(np.uint8) * 255, border).astype(np.uint8) * 255


def _brighter_than_around(image: np.ndarray, mask: np.ndarray, ring: int = 3) -> np.ndarray:
    """uint8 mask (255) of the components of boolean `mask` whose mean luminance is above that of the `ring` px
    around them."""
    _, labels, inside, around = blob_and_ring_colours(image, mask, ring)
    bright = inside.mean(axis=1) > around.mean(axis=1)
    bright[0] = False                                   # the background
    return bright[labels].astype(np.uint8) * 255


def _denoised_if_noisy(rgb: np.ndarray, crop: int = 1024) -> tuple[float, np.ndarray | None]:
    """(noise sigma, the scan denoised or None): a negative's noise, estimated on its central crop, and above
    NOISY_NEGATIVE_SIGMA non-local means (`restore.baselines.denoise_gaussian`) before it is inverted.

    Noise on a negative is even on the scan; the inversion's steep density curve amplifies it unevenly, so the
    coring that treats noisy positives cannot measure it afterwards. On 8 eval photos (colour negative + noise
    sigma 10) denoising the scan first scored 19.2 dB against 17.3; on noisy positives (colour + sigma 25) it
    scored lower than the network and the coring (24.3 against 24.6), so positives are left to those.
    The sigma (the wavelet estimate, which sets the filter's strength) reads fine texture as noise too (fur,
    scales, grass), so the scan is denoised only where its flattest blocks also show noise
    (NOISY_NEGATIVE_FLAT_SIGMA; `_scan_noise_sigma`: the luminance's, or on an orange mask the chroma's where
    the luminance's reads noisy and the chroma's does not). Of 300 training photos made into clean colour
    negatives 13 read above 6, and non-local means cost 10 of them 2.8 to 24.7 dB; 2 of the 13 also read 5 on
    their luminance's flattest blocks, against 6.4 to 9.7 for all 300 with noise sigma 10 on the scan.
    """
    height, width = rgb.shape[:2]
    top, left = max(0, (height - crop) // 2), max(0, (width - crop) // 2)
    centre = np.ascontiguousarray(rgb[top: top + crop, left: left + crop])
    sigma = estimate_noise_sigma(centre)
    if sigma <= NOISY_NEGATIVE_SIGMA or _scan_noise_sigma(centre) < NOISY_NEGATIVE_FLAT_SIGMA:
        return round(sigma, 2), None
    return round(sigma, 2), denoise_gaussian(rgb, sigma)


class Restorer:
    """Restore photos with a generator: `Restorer().restore(PIL.Image) -> PIL.Image` of the same size.

    weights: a safetensors/.pth generator file (default: the shipped models/restore.safetensors).
    device: "auto" (CUDA if available), "cpu" or "cuda". render_factor: network input long side in 16 px
    units (default 32 = 512 px). input_type: "auto" or force "negative" | "bw" | "color". tones: "input" (a
    print or scan keeps its own brightness and contrast) or "network" (take the network's tone corrections).
    saturation: scale of the colours given to black-and-white photos (1: as the network predicts them).
    model: a ready nn.Module mapping [-1, 1] RGB to [-1, 1] RGB, instead of loading `weights` (tests, notebooks).
    detector_weights: the damage detector (`restore.arch.DamageDetector`) that finds cracks, scratches, dust and
    holes, which are then repaired (default: the shipped models/detector.safetensors, if installed).
    detector: a ready detector module instead (with `model` given, only this one is used). find_damage: False
    runs no detector (the classical hole search on colour photos still runs).
    denoiser_weights: the denoiser (`restore.arch.Denoiser`) run at full resolution on photos whose noise is
    above DENOISE_MIN_SIGMA (default: the shipped models/denoiser.safetensors, if installed); denoiser: a ready
    module instead; denoise: False runs none (noise is then only cored, as before the denoiser existed).
    negative_denoiser_weights: the denoiser that takes the noise off a noisy negative's scan before it is inverted
    (default: the shipped models/negative-denoiser.safetensors, if installed; trained with its loss on the
    positive, `restore.train.positive_mse`); negative_denoiser: a ready module instead. Without one a noisy
    negative keeps what the denoiser made of its scan.
    """

    def __init__(self, weights: str | Path | None = None, device: str | torch.device = "auto",
                 render_factor: int = DEFAULT_RENDER_FACTOR, input_type: str = "auto", *,
                 tones: str = "input", saturation: float = 1.0, model: nn.Module | None = None,
                 detector_weights: str | Path | None = None, detector: nn.Module | None = None,
                 find_damage: bool = True, denoiser_weights: str | Path | None = None,
                 denoiser: nn.Module | None = None, denoise: bool = True,
                 negative_denoiser_weights: str | Path | None = None, negative_denoiser: nn.Module | None = None):
        if input_type not in INPUT_TYPES:
            raise ValueError(f"unknown input type {input_type!r}; choose from {', '.join(INPUT_TYPES)}")
        if tones not in TONES:
            raise ValueError(f"unknown tones {tones!r}; choose from {', '.join(TONES)}")
        if not 0 <= saturation <= MAX_SATURATION:
            raise ValueError(f"saturation must be between 0 and {MAX_SATURATION:g}, got {saturation:g}")
        self.tones = tones
        self.saturation = float(saturation)
        if render_factor < 1:
            raise ValueError(f"render_factor must be >= 1, got {render_factor}")
        self.device = resolve_device(device)
        self.render_factor = int(render_factor)
        self.input_type = input_type
        self.card: dict[str, Any] = {}
        ready_model = model is not None
        if model is None:
            path = Path(weights) if weights is not None else default_weights_path()
            if weights is None and not path.is_file():
                raise WeightsError(f"{path}: no model is installed there yet; pass --weights FILE "
                                   f"(a generator exported by restore-train)")
            model, self.card = load_generator(path, self.device)
            output_space = self.card.get("generator_spec", {}).get("output_space", "rgb")
            if output_space != "rgb":
                raise WeightsError(f"{path}: output_space {output_space!r} is not supported by inference yet")
        self.model = model.to(self.device).eval().to(memory_format=torch.channels_last)
        self.detector, self.detector_card = self._helper(find_damage, detector, detector_weights,
                                                         default_detector_path(), load_detector, ready_model)
        self.denoiser, self.denoiser_card = self._helper(denoise, denoiser, denoiser_weights,
                                                         default_denoiser_path(), load_denoiser, ready_model)
        self.negative_denoiser, self.negative_denoiser_card = self._helper(
            denoise, negative_denoiser, negative_denoiser_weights, default_negative_denoiser_path(), load_denoiser,
            ready_model)

    def _helper(self, wanted: bool, module: nn.Module | None, weights: str | Path | None, shipped: Path,
                load: Any, ready_model: bool) -> tuple[nn.Module | None, dict[str, Any]]:
        """(a helper network ready to run, or None; its card): the damage detector or a denoiser. `module` as
        given, else the `weights` file (which must exist), else the `shipped` one where it is installed (not
        beside a ready `model`: tests and notebooks name what they want); None when not `wanted`."""
        card: dict[str, Any] = {}
        if not wanted:
            return None, card
        if module is None and (weights is not None or not ready_model):
            path = Path(weights) if weights is not None else shipped
            if weights is not None or path.is_file():   # the shipped one is optional, a named one not
                module, card = load(path, self.device)
        if module is None:
            return None, card
        return module.to(self.device).eval().to(memory_format=torch.channels_last), card

    def denoise(self, rgb: np.ndarray, network: nn.Module | None = None) -> tuple[float, np.ndarray]:
        """(its noise sigma in levels, the photo denoised at full resolution): uint8 HxWx3 RGB in
        and out, the photo itself when there is no denoiser or its noise is below DENOISE_MIN_SIGMA.
        `network`: the denoiser to run (default: `self.denoiser`; a negative's scan: `self.negative_denoiser`).

        The sigma is read from the flattest 8x8 blocks of the luminance (`_noise_sigma`), so texture is not
        taken for noise: on 24 held-out photos at 512 px it read 0-3.4 on clean ones (prints, JPEG, holes,
        negatives), 6.4-7.4 on colour negatives with sigma 10 on the scan, 9.3-16.3 with sigma 25 per
        channel; the wavelet estimate read up to 11 on clean ones. On a colour negative's scan the chroma
        decides where the luminance alone reads noisy (`_scan_noise_sigma`). The network is blind and takes
        the level from the photo itself. It runs on DENOISE_TILE tiles, each with DENOISE_MARGIN px of context that is
        then dropped, so big scans fit in memory without seams, and each tile's result is the mean over its
        flipped copies (`flip_ensemble`, DENOISE_FLIPS). A black-and-white photo stays grey.
        """
        network = self.denoiser if network is None else network
        sigma = round(_scan_noise_sigma(rgb), 2)
        if network is None or sigma < DENOISE_MIN_SIGMA:
            return sigma, rgb
        height, width = rgb.shape[:2]
        multiple = network.spec.multiple
        out = np.empty_like(rgb)
        for top in range(0, height, DENOISE_TILE):
            for left in range(0, width, DENOISE_TILE):
                bottom, right = min(height, top + DENOISE_TILE), min(width, left + DENOISE_TILE)
                y0, x0 = max(0, top - DENOISE_MARGIN), max(0, left - DENOISE_MARGIN)
                y1, x1 = min(height, bottom + DENOISE_MARGIN), min(width, right + DENOISE_MARGIN)
                patch = rgb[y0:y1, x0:x1]
                tensor = to_tensor(pad_to_multiple(patch, multiple)).unsqueeze(0).to(self.device)
                with torch.inference_mode():
                    clean = flip_ensemble(network, tensor, DENOISE_FLIPS)
                clean = to_uint8(clean[0, :, : y1 - y0, : x1 - x0])
                out[top:bottom, left:right] = clean[top - y0: bottom - y0, left - x0: right - x0]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
            grey = (out.astype(np.uint16).sum(axis=2) + 1) // 3
            out[...] = grey.astype(np.uint8)[..., None]
        return sigma, out

    def find_damage(self, image: np.ndarray, extend: bool = True) -> np.ndarray | None:
        """uint8 HxW mask (255 = damage) of a render-size uint8 RGB copy, by the detector; None without one.

        Damage is where the detector is sure on the copy itself (probability >= `DETECTOR_THRESHOLD`), extended
        along what it finds on the copy enlarged `DETECTOR_UPSCALE` times (logits max-pooled back, probability
        >= `DETECTOR_EXTEND_THRESHOLD`) where that touches a sure pixel (hysteresis). The detector learnt cracks
        1-3 px wide, and a real crack network on a small scan is finer: on the enlarged copy it finds it, but
        alone it also takes a scene's fine bright lines for cracks (0.1-0.9% of clean eval prints, -0.05 to
        -0.56 dB on 12 eval photos), which the link to a sure pixel rules out (0-0.05% added there, 0.6-1.0%
        on cracked real prints, whose mask it doubles). `extend` False: the sure pixels alone (colour photos,
        where on the 46 eval photos the extension cost colour + holes 0.20 dB and found no real cracks).
        Lines along the photo's edges are not damage (`edge_lines_cleared`).
        """
        if self.detector is None:
            return None
        height, width = image.shape[:2]
        logits = self._detector_logits(image)
        sure = (logits > _logit(DETECTOR_THRESHOLD)).cpu().numpy()
        if extend and DETECTOR_UPSCALE > 1 and sure.any():
            scale = DETECTOR_UPSCALE
            large = cv2.resize(image, (width * scale, height * scale), interpolation=cv2.INTER_CUBIC)
            pooled = torch.nn.functional.max_pool2d(self._detector_logits(large)[None, None], scale)[0, 0]
            candidate = (pooled > _logit(DETECTOR_EXTEND_THRESHOLD)).cpu().numpy() | sure
            sure = components_touching(candidate, sure)
        return edge_lines_cleared(sure).astype(np.uint8) * 255

    def _detector_logits(self, image: np.ndarray) -> torch.Tensor:
        """float HxW damage logits of a uint8 RGB image (padded for the detector, cropped back)."""
        height, width = image.shape[:2]
        multiple = getattr(getattr(self.detector, "spec", None), "multiple", NETWORK_MULTIPLE)
        tensor = to_tensor(pad_to_multiple(image, multiple)).unsqueeze(0)
        tensor = tensor.to(self.device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self.detector(tensor)[0, 0, :height, :width].float()

    def run_network(self, image: np.ndarray) -> np.ndarray:
        """One pass: uint8 HxWx3 (any size) -> uint8 HxWx3, padded to a multiple of 32 and cropped back."""
        height, width = image.shape[:2]
        tensor = to_tensor(pad_to_multiple(image)).unsqueeze(0)
        tensor = tensor.to(self.device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            output = self.model(tensor)
        return to_uint8(output[0, :, :height, :width])

    def restore_array(self, rgb: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """uint8 HxWx3 RGB -> (restored uint8 RGB of the same shape, info).

        info: "input_type" ("negative" | "bw" | "color", detected or forced), "passes" (network passes run:
        shape and seconds each), "impulses_repaired", "damage_fraction", "render_size", "seconds", and for a
        negative "denoised_sigma" (its scan's noise estimate) and "scan_denoised" (the scan was denoised for its
        inversion: by the negative denoiser, or with non-local means; `_negative_scan`).
        """
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected uint8 HxWx3 RGB, got {rgb.dtype} {rgb.shape}")
        start = time.perf_counter()
        rgb = np.ascontiguousarray(rgb)
        rgb, impulses = remove_impulses(rgb)
        scan = rgb                      # as it came: a negative's is denoised again for its inversion
        noise_sigma, rgb = self.denoise(rgb)
        denoiser_ran = self.denoiser is not None and noise_sigma >= DENOISE_MIN_SIGMA
        small, patched, holes = self._render_copies(rgb, impulses)
        denoised_sigma = None
        scan_denoised = False
        passes: list[dict[str, Any]] = []
        reported = None
        if self.input_type == "negative":
            # Forced: invert ourselves, so it works even where the network would not recognise the negative.
            denoised_sigma, clean = self._negative_scan(scan, rgb, noise_sigma)
            if clean is not None:
                rgb, scan_denoised = clean, True
                small, patched, holes = self._render_copies(rgb, impulses)
            rgb, small, small_out, input_type, holes = self._as_positive(rgb, small, patched, holes, passes)
            reported = "negative"
        else:
            small_out = self._timed_pass(patched, "render", passes)
            input_type = self.input_type
            correlation = coarse_correlation(patched, small_out)
            network_inverted = correlation < NEGATIVE_COARSE_CORRELATION
            # With an orange film base the same question is asked even when the network did not invert it
            # (it half-inverts some damaged colour negatives, or barely touches them).
            orange = input_type == "auto" and not network_inverted and has_orange_base(patched)
            if network_inverted or orange:
                # Ask again on the film-base-corrected inverted copy (module doc).
                levels, inverted, inverted_holes = self._negative_levels(small, patched, holes)
                inverted_out = self._timed_pass(inverted, "inverted", passes)
                keeps_inverted = luma_correlation(inverted, inverted_out) > -NEGATIVE_CORRELATION
                if orange:
                    # The network keeps a warm positive's inverted copy too: a negative is the scan it changes
                    # far more than the positive made of it.
                    keeps_inverted &= (mae(small_out, patched)
                                       > ORANGE_CHANGE_RATIO * mae(inverted_out, inverted))
                if keeps_inverted and input_type == "auto":          # a negative
                    done: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = (levels, inverted_out,
                                                                                      inverted_holes)
                    denoised_sigma, clean = self._negative_scan(scan, rgb, noise_sigma)
                    if clean is not None:                            # its inversion is asked for again
                        rgb, done, scan_denoised = clean, None, True
                        small, patched, holes = self._render_copies(rgb, impulses)
                    rgb, small, small_out, input_type, holes = self._as_positive(rgb, small, patched, holes,
                                                                                 passes, done)
                    reported = "negative"
                elif not network_inverted:
                    pass                          # orange, but a positive: the network's first render stands
                elif keeps_inverted:
                    # Told it is a positive, but the network sees a negative either way round: it cannot help
                    # with tones or colours, so the photo keeps its own (impulses and grain are still treated;
                    # its output on the inverted copy, inverted back, was tried: complementary-hue casts).
                    small_out = small
                else:
                    # It inverts whatever it is shown: the photo is a positive, and the pass on the inverted
                    # copy (which it took for a negative and turned back) is its restoration.
                    small_out = inverted_out
                    input_type = _positive_type(small) if input_type == "auto" else input_type
        # A negative's noise is judged on its scan: the inversion stretches a clean scan's fine texture back to
        # the photo's own, which the positive's flattest blocks can read as grain (a mandrill's fur on an eval
        # negative: coring 6.0, 21.99 dB against the classical inversion's 23.08; uncored, 23.08).
        restored, info = transfer(rgb, small, small_out, input_type, self.tones, self.saturation, holes=holes,
                                  removed_noise=noise_sigma if denoiser_ran else 0.0,
                                  chroma_damage=reported != "negative",
                                  core_detail=reported != "negative" or noise_sigma >= MIN_CORING_SIGMA)
        if reported is not None:
            info["input_type"] = reported
        info.update(passes=passes, impulses_repaired=impulses, denoised_sigma=denoised_sigma,
                    scan_denoised=scan_denoised,
                    noise_sigma=noise_sigma, denoiser_ran=denoiser_ran,
                    seconds=time.perf_counter() - start)
        return restored, info

    def _negative_scan(self, scan: np.ndarray, rgb: np.ndarray, noise_sigma: float
                       ) -> tuple[float | None, np.ndarray | None]:
        """(the scan's noise estimate, the scan to invert instead of `rgb`, or None) of a negative: `scan` as it
        came, `rgb` what the denoiser made of it. The estimate is `noise_sigma` (its flattest blocks) where the
        negative denoiser runs, else `_denoised_if_noisy`'s (the wavelet estimate of `rgb`).

        The inversion is steepest on the scan's dense, dark end (a colour negative's blue channel: levels
        29-115), so what any denoiser leaves of the noise there is magnified into the positive's highlights.
        The negative denoiser, trained with its loss on the positive, takes the noise off the scan as it came
        (restore-eval, 46 photos, colour negative + noise sigma 10: 22.80 -> 23.90 dB, dE 8.96 -> 7.86 with 0.3). Without one,
        non-local means (`_denoised_if_noisy`) runs on a scan the denoiser left noisy.
        """
        if self.negative_denoiser is not None and noise_sigma >= DENOISE_MIN_SIGMA:
            return noise_sigma, self.denoise(scan, self.negative_denoiser)[1]
        return _denoised_if_noisy(rgb)

    def _render_copies(self, rgb: np.ndarray, impulses: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(render-size copy, the copy the network sees, its holes mask or None) of a full-size photo."""
        height, width = rgb.shape[:2]
        small_h, small_w = render_shape(height, width, self.render_factor)
        if (small_h, small_w) != (height, width):
            # INTER_AREA: proper averaging, no aliasing of film grain or halftone into the render copy.
            small = cv2.resize(rgb, (small_w, small_h), interpolation=cv2.INTER_AREA)
        else:
            small = rgb
        # What the network sees: the render copy with its damage inpainted classically first, and `transfer` takes
        # the repair there. The damage is what the damage detector finds (cracks, scratches, dust, holes; on any
        # photo) and, on colour, hole-like blobs (one near-neutral colour, contrasting with their surroundings:
        # missing emulsion, dust, opaque scratches; restore-eval, 8 photos: colour + holes +2.3 dB, colour
        # negative + holes +1.0). The blobs only on colour (a colour photo or a colour negative): `hole_mask` finds
        # them by their flat chroma, which on a black-and-white photo is everywhere (it flagged up to 9% of the
        # real old prints). And not on a photo peppered with impulses: the JPEG-smeared remnants the median leaves
        # make flat areas contrast with their surroundings; on eval photos with salt-and-pepper + JPEG (0.4% of
        # pixels impulses; no other category above 0.11%) 99% of what it flagged was intact.
        colour = _positive_type(small) == "color"
        holes = self.find_damage(small, extend=not colour)
        if impulses <= IMPULSE_FRACTION_NO_HOLES * height * width and colour:
            found = hole_mask(small)
            holes = found if holes is None else np.maximum(holes, found)
        if holes is not None:              # a caption or title is the photo's own, not damage
            holes = text_cleared(holes).astype(np.uint8) * 255
        patched = inpaint_holes(small, holes) if holes is not None and holes.any() else small
        return small, patched, holes

    def _negative_levels(self, small: np.ndarray, patched: np.ndarray, holes: np.ndarray | None
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(inversion table, what the network sees of the positive, its damage mask) of a negative's render-size
        scan `small`, `patched` that scan with the damage found on it (`holes`) inpainted.

        The levels are read with the damage inpainted, so a bright hole does not take the film-base percentile;
        but only damage the positive confirms (`_confirmed_damage`) is damage: once that is known they are read
        again with only it inpainted, so a dense highlight taken for damage on the scan and not confirmed still
        sets the stretch (a woman's face on an eval negative: 27.30 -> 29.08 dB, the classical inversion's).
        What the positive does not confirm stays inpainted for the levels where it is brighter than what is
        around it (a hole, on the scan, would take the film-base percentile) or reaches the frame's edge (a
        stain cut by it, denser than the scene: without this rule one eval negative with holes lost 12.2 dB).
        """
        levels = negative_lut(patched)
        confirmed = self._confirmed_damage(small, holes, levels)
        if RELEVEL_CONFIRMED and holes is not None and holes.any():
            kept = confirmed if confirmed is not None else np.zeros_like(holes)
            unconfirmed = (holes > 0) & (kept == 0)
            kept = np.maximum(kept, _brighter_than_around(small, unconfirmed))
            kept = np.maximum(kept, _touching_border(unconfirmed))
            if not np.array_equal(kept > 0, holes > 0):
                levels = negative_lut(inpaint_holes(small, kept) if kept.any() else small)
        inverted = cv2.LUT(small, levels)
        return levels, inpaint_holes(inverted, confirmed) if confirmed is not None else inverted, confirmed

    def _confirmed_damage(self, small: np.ndarray, holes: np.ndarray | None, levels: np.ndarray
                          ) -> np.ndarray | None:
        """The damage mask of a negative's positive (`levels` applied to the render-size scan `small`), or None.

        The damage found on the scan (`holes`) counts only where the positive shows damage too or the blob search
        found it on the scan (dust, bright on the scan, clips to black on the positive, which the blob search
        passes over): the detector learnt damage on positives, and on a negative it takes some of the scene's
        dense highlights for it (1.1-1.4% of four clean eval negatives, a yellow flower or propeller tip
        inpainted). restore-eval, first 23 eval photos: colour negatives 28.27 -> 28.69 dB, + holes 25.31 ->
        25.44, + noise 22.50 -> 22.52, b&w 21.51 -> 21.52.
        A blob of the scan (`hole_mask`) confirms an area it touches; the detector on the positive confirms an
        area only if it marks NEGATIVE_DAMAGE_SHARE of it: touching alone let one dark detail inside a highlight
        (a pearl on a white collar) confirm the whole highlight. On the 46 eval photos (all negative categories)
        areas confirmed by the detector alone held 79.6k damaged pixels and 26.8k undamaged (12.9k on clean
        negatives); with the share rule 69.9k and 12.0k (4.8k). The positive's blobs no longer confirm: on
        the 46 clean and 46 holed colour negatives the one area they alone confirmed was a book cover's red bar
        (607 px, no damage in it; that photo 34.9 dB against the classical inversion's 44.6).
        """
        inverted = cv2.LUT(small, levels)
        if CONFIRM_NEGATIVE_DAMAGE and holes is not None and holes.any():
            # (hole_mask of the scan is found again here, ~50 ms at 512 px, rather than threaded through)
            confirmed = components_touching(holes, cv2.dilate(hole_mask(small), np.ones((5, 5), np.uint8)))
            detected = self.find_damage(inverted, extend=False)
            if detected is not None:
                confirmed |= components_touching(holes, detected, NEGATIVE_DAMAGE_SHARE)
            holes = confirmed.astype(np.uint8) * 255 if confirmed.any() else None
        return holes

    def _as_positive(self, rgb: np.ndarray, small: np.ndarray, patched: np.ndarray, holes: np.ndarray | None,
                     passes: list[dict[str, Any]],
                     done: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str, np.ndarray | None]:
        """A negative, restored as the positive that film-base removal and inversion make of it.

        The classical inversion (`restore.baselines.negative_lut`: film base divided out, density stretched
        per channel, the film's log response) sets the tones and removes the orange mask; its levels come from
        the render-size copy with its holes inpainted (`patched`: a bright hole would take the film-base
        percentile and leave the orange mask in; read again once the positive has confirmed what is damage,
        `_negative_levels`) and apply to the full size as a table. The network then only
        has to repair and, for black-and-white film, colourize: the positive is treated like a print or a
        colour scan. The film's latitude comes from its slope (`negative_lut`'s `film_gamma`); `holes`, the damage
        found on the scan, is kept where the positive confirms it (`_confirmed_damage`). `done`: (levels, network
        output on the positive's copy, its damage mask) when already computed.
        Returns (full-size positive, render-size positive, network output, type for `transfer`, damage mask).
        """
        if done is None:
            levels, network_in, holes = self._negative_levels(small, patched, holes)
            inverted_out = self._timed_pass(network_in, "render", passes)
        else:
            levels, inverted_out, holes = done
        inverted = cv2.LUT(small, levels)
        full = inverted if rgb is small else cv2.LUT(rgb, levels)
        # An orange mask is colour film: its positive's colours are recorded, however grey (a grey printer on
        # white, taken for a black-and-white print, was given the network's sepia: 31.7 dB against 44.1).
        positive_type = "color" if has_orange_base(small) else _positive_type(inverted)
        return full, inverted, inverted_out, positive_type, holes

    def _timed_pass(self, small: np.ndarray, name: str, passes: list[dict[str, Any]]) -> np.ndarray:
        pass_start = time.perf_counter()
        out = self.run_network(small)
        height, width = small.shape[:2]
        padded_shape = (height + (-height % NETWORK_MULTIPLE), width + (-width % NETWORK_MULTIPLE))
        passes.append({"name": name, "shape": padded_shape, "seconds": time.perf_counter() - pass_start})
        return out

    def restore(self, image: Image.Image) -> Image.Image:
        """PIL image (any mode) -> restored PIL image of exactly the same size; alpha is kept (RGBA out)."""
        rgb, alpha, _ = pil_to_arrays(image)
        restored, _ = self.restore_array(rgb)
        return arrays_to_pil(restored, alpha)
