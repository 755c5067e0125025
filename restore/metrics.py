"""Full-reference image metrics for the evaluation; pure functions on uint8 HxWx3 RGB arrays.

Every metric compares an `output` with its ground truth `target` of the same shape. Conventions:

- PSNR in dB on the 0..255 scale, capped at `PSNR_CAP` (identical images would give infinity, which neither
  a mean nor JSON can hold).
- SSIM on the three RGB channels (scikit-image, `channel_axis`), 1.0 for identical images.
- Mean absolute error on the 0..1 scale, the metric of the autoencoder-vs-GAN study in `shared/seeds`
  (so a uniform shift of k levels gives k / 255).
- CIEDE2000 colour difference, the mean over pixels of `deltaE_ciede2000` in CIE L*a*b* (D65); about 2.3 is
  a just-noticeable difference.
- Hasler-Suesstrunk colourfulness (0 for a gray image, roughly 30-60 for ordinary colour photos) and its
  ratio output / ground truth: below 1 means the output is duller than the truth (the usual complaint about
  DeOldify-style colorizers), above 1 more saturated.
"""

from __future__ import annotations

import math

import numpy as np
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.metrics import structural_similarity

PSNR_CAP = 100.0  # dB reported for identical images
# Ground truth below this colourfulness is (near) gray: the ratio output / truth is meaningless there.
MIN_REFERENCE_COLOURFULNESS = 1.0

# Direction of each metric in `full_reference`: +1 higher is better, -1 lower is better, 0 closer to 1 is.
METRIC_DIRECTIONS = {"psnr": 1, "ssim": 1, "mae": -1, "delta_e": -1, "colourfulness_ratio": 0}


def _check_pair(output: np.ndarray, target: np.ndarray) -> None:
    for name, image in (("output", output), ("target", target)):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{name}: expected uint8 HxWx3 RGB, got {image.dtype} {image.shape}")
    if output.shape != target.shape:
        raise ValueError(f"output {output.shape} and target {target.shape} differ in shape")


def psnr(output: np.ndarray, target: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB (peak 255), `PSNR_CAP` for identical images."""
    _check_pair(output, target)
    mse = float(np.mean((output.astype(np.float64) - target.astype(np.float64)) ** 2))
    if mse == 0.0:
        return PSNR_CAP
    return min(PSNR_CAP, 10.0 * math.log10(255.0**2 / mse))


def ssim(output: np.ndarray, target: np.ndarray) -> float:
    """Structural similarity on RGB (7x7 windows, channels averaged); images need both sides >= 7 px."""
    _check_pair(output, target)
    return float(structural_similarity(output, target, channel_axis=2, data_range=255))


def mae(output: np.ndarray, target: np.ndarray) -> float:
    """Mean absolute error per pixel and channel, on the 0..1 scale."""
    _check_pair(output, target)
    return float(np.mean(np.abs(output.astype(np.float64) - target.astype(np.float64)))) / 255.0


def delta_e(output: np.ndarray, target: np.ndarray) -> float:
    """Mean CIEDE2000 colour difference between the two images in CIE L*a*b* (D65)."""
    _check_pair(output, target)
    # float32 halves the memory and time of the Lab conversion; the error is far below 0.01 dE.
    lab_out = rgb2lab(output.astype(np.float32) / 255.0)
    lab_target = rgb2lab(target.astype(np.float32) / 255.0)
    return float(np.mean(deltaE_ciede2000(lab_target, lab_out, channel_axis=-1)))


def colourfulness(image: np.ndarray) -> float:
    """Hasler & Suesstrunk (2003) colourfulness M = sigma_rgyb + 0.3 mu_rgyb, on 0..255 values."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected uint8 HxWx3 RGB, got {image.dtype} {image.shape}")
    rgb = image.astype(np.float64)
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    sigma = math.hypot(float(rg.std()), float(yb.std()))
    mu = math.hypot(float(rg.mean()), float(yb.mean()))
    return sigma + 0.3 * mu


def colourfulness_ratio(output: np.ndarray, target: np.ndarray) -> float:
    """colourfulness(output) / colourfulness(target); NaN where the target is (near) gray."""
    _check_pair(output, target)
    reference = colourfulness(target)
    if reference < MIN_REFERENCE_COLOURFULNESS:
        return math.nan
    return colourfulness(output) / reference


def full_reference(output: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Every metric of this module for one output/target pair, keyed as in `METRIC_DIRECTIONS`."""
    return {
        "psnr": psnr(output, target),
        "ssim": ssim(output, target),
        "mae": mae(output, target),
        "delta_e": delta_e(output, target),
        "colourfulness_ratio": colourfulness_ratio(output, target),
    }


def better(metric: str, a: float, b: float) -> bool:
    """True when value `a` is strictly better than `b` for `metric` (ratio: closer to 1 on a log scale)."""
    direction = METRIC_DIRECTIONS[metric]
    if math.isnan(a) or math.isnan(b):
        return False
    if direction > 0:
        return a > b
    if direction < 0:
        return a < b
    if a <= 0 or b <= 0:
        return a > b
    return abs(math.log(a)) < abs(math.log(b))
