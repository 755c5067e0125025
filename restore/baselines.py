"""Baselines the learned model must beat: the degraded input itself, and a classical pipeline (no learning).

Unlike the model, the classical pipeline is *told* what is wrong with the photo (`Hints`: a negative?
impulse noise? gaussian noise? holes?); the evaluation passes the hints of each category's recipe. It only
fixes what classical image processing can fix: it never colorizes a black-and-white photo, never deblurs and
never removes JPEG artifacts, so in those categories it is the input unchanged.

Order of the steps follows where the damage sits: impulses and holes are on the medium as scanned (the
negative or the print), so they are repaired first, then gaussian noise is removed, then a negative is
inverted (its film-base estimate is only sound once the holes are gone).

All functions take and return uint8 HxWx3 RGB and never modify their input.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Display gamma used to linearise a scan: negative density is defined on linear light.
DISPLAY_GAMMA = 2.2
# Film exposure latitude K of `negative_lut`'s log response: the range it is looked for in.
LATITUDE_RANGE = (0.2, 5.0)
# Density slope (gamma) of a typical negative film: about 0.6 for colour negative film (its dye layers 0.55-0.65,
# the middle of degradations' Negative ranges), and b&w film is developed to about the same (0.55-0.75 there).
FILM_GAMMA = 0.6


@dataclass(frozen=True)
class Hints:
    """What the classical pipeline is told about a degraded photo (the category's recipe)."""

    negative: bool = False        # a scanned film negative (colour or black-and-white)
    impulse_noise: bool = False   # salt-and-pepper pixels
    gaussian_noise: bool = False  # additive gaussian (sensor/grain) noise
    holes: bool = False           # painted-over damage: missing patches, scratches, dust


def input_baseline(image: np.ndarray) -> np.ndarray:
    """The degraded input as its own restoration: the floor every method must clear."""
    _check(image)
    return image.copy()


def classical(image: np.ndarray, hints: Hints) -> np.ndarray:
    """Classical restoration of `image` given what is wrong with it; uint8 RGB in and out."""
    _check(image)
    out = image
    if hints.impulse_noise:
        out = remove_impulses(out)
    if hints.holes:
        out = inpaint_holes(out)
    if hints.gaussian_noise:
        out = denoise_gaussian(out)
    if hints.negative:
        out = invert_negative(out)
    return out.copy() if out is image else out


def _check(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected uint8 HxWx3 RGB, got {image.dtype} {image.shape}")


def invert_negative(scan: np.ndarray, base_percentile: float = 99.5,
                    stretch_percentiles: tuple[float, float] = (0.5, 99.5),
                    film_gamma: float | None = FILM_GAMMA, target_mean: float = 0.45) -> np.ndarray:
    """Invert a scanned negative (colour or black-and-white) with film-base removal; uint8 RGB in and out.

    See `negative_lut`, which sets the levels from the scan itself here.
    """
    _check(scan)
    return cv2.LUT(np.ascontiguousarray(scan),
                   negative_lut(scan, base_percentile, stretch_percentiles, film_gamma, target_mean))


def negative_lut(sample: np.ndarray, base_percentile: float = 99.5,
                 stretch_percentiles: tuple[float, float] = (0.5, 99.5),
                 film_gamma: float | None = FILM_GAMMA, target_mean: float = 0.45,
                 reference: np.ndarray | None = None, reference_weight: float = 0.5) -> np.ndarray:
    """Per-channel inversion table (uint8 256x1x3, for `cv2.LUT`) of a negative, its levels set from `sample`.

    Every step is a per-channel function of the pixel value, so the levels can come from a small copy and the
    table be applied to any resolution (inference inverts full-size scans this way):

    1. Linearise the scan and estimate the film base per channel as a high percentile: the most transparent
       film (scene shadows, or the unexposed rebate) is the brightest part of the scan, and on colour film it
       carries the orange mask.
    2. Divide the base out: what remains is the transmittance of the exposed dyes, whose optical density
       -log10(T) grows with the log of the scene light. Stretch the density per channel (percentiles), which
       also cancels each dye layer's different contrast and so the orange cast.
    3. Map density back to light with the film's log response, out = (10^(K d) - 1) / (10^K - 1). K (the
       film's exposure latitude: the log range of scene light between the stretch percentiles) sets every
       mid-tone, so it is where most of the error is. Film turns log exposure into density with a known slope
       (`film_gamma`, about 0.6 for colour negative film), so K is the stretched density range divided by it
       (the mean over channels), and the curve is then the film's own, its toe at the scene's shadows.
       `film_gamma` None: K instead makes the mean display level `target_mean`, the auto-exposure prior of a
       mid-grey average scene, which errs with every scene's key. The 2,119 training photos, each made into a
       colour and a b&w negative (degradations' `Negative` ranges: film slopes 0.5-0.75, exposure and flare
       varied; 384 px), inverted with the film's slope scored 29.7 dB (colour) and 20.5 (b&w; not colourized),
       with the mid-grey prior 20.9 and 17.4; the best K for each photo would score 32.5 and 21.7. It fails
       where the scene's brightest parts are well below white (a dim interior; skimage's chelsea): the
       stretch makes them white and every mid-tone too bright with them, which only a larger K offsets; of
       212 of those photos made into colour negatives, 34 lost over 1 dB to the mid-grey prior (worst -10).
       `reference` (uint8 RGB, `sample`'s shape): a positive of the same scene, however rough (e.g. a
       network's inversion of `sample`); the K whose positive is closest to it (least squares over all
       pixels; it only has to get the overall tones right, not the detail) is averaged with the prior's in
       log, weighted `reference_weight`.

    The percentiles and `target_mean` (for `film_gamma` None) were checked on training photos (whose mean
    level is 0.47) over the four negative categories: wider percentiles (0.1/99.9) gain on clean negatives
    but lose more where dust and scratches the hole detector misses sit outside the film's range.
    """
    _check(sample)
    if reference is not None and reference.shape != sample.shape:
        raise ValueError(f"reference {reference.shape} and sample {sample.shape} differ in shape")
    levels = (np.arange(256, dtype=np.float32) / 255.0) ** DISPLAY_GAMMA   # linear light of each uint8 level
    linear = levels[sample]
    base = np.percentile(linear.reshape(-1, 3), base_percentile, axis=0)

    def density_of(values: np.ndarray) -> np.ndarray:
        return -np.log10(np.clip(values / np.maximum(base, 1e-4), 1e-4, 1.0))

    density = density_of(linear).reshape(-1, 3)
    low, high = np.percentile(density, list(stretch_percentiles), axis=0)
    scale = np.maximum(high - low, 1e-6)
    # normalised density of each uint8 level, per channel (256x3): the table is a function of this and K
    grid_density = np.clip((density_of(np.repeat(levels[:, None], 3, axis=1)) - low) / scale, 0.0, 1.0)

    def positive(k: np.ndarray | float, nd: np.ndarray) -> np.ndarray:
        return ((10.0 ** (k * nd) - 1.0) / (10.0**k - 1.0)) ** (1.0 / DISPLAY_GAMMA)

    if film_gamma is not None:
        if film_gamma <= 0:
            raise ValueError(f"film_gamma must be above 0, got {film_gamma:g}")
        k = float(np.clip(np.mean(scale) / film_gamma, *LATITUDE_RANGE))
    else:
        # Bisection on K on a subsample: the mean level falls monotonically as K grows.
        sample_density = np.clip((density_of(linear[::4, ::4]) - low) / scale, 0.0, 1.0)
        k_low, k_high = LATITUDE_RANGE
        for _ in range(20):
            k = 0.5 * (k_low + k_high)
            if float(np.mean(positive(k, sample_density))) > target_mean:
                k_low = k
            else:
                k_high = k
        k = 0.5 * (k_low + k_high)
    if reference is not None:
        # Squared error of each candidate K from per-level sums of the reference: sum over levels and channels
        # of n*p^2 - 2*p*sum(ref) (the sum of ref^2 is the same for every K), so no image is rendered.
        counts = np.stack([np.bincount(sample[..., c].ravel(), minlength=256) for c in range(3)], axis=1)
        ref_sums = np.stack([np.bincount(sample[..., c].ravel(), reference[..., c].ravel() / 255.0, minlength=256)
                             for c in range(3)], axis=1)
        candidates = np.linspace(*LATITUDE_RANGE, 481)[:, None, None]
        tables = positive(candidates, grid_density[None].astype(np.float64))
        errors = np.sum(counts * tables**2 - 2.0 * tables * ref_sums, axis=(1, 2))
        k_reference = float(candidates[int(np.argmin(errors)), 0, 0])
        k = float(np.exp((1.0 - reference_weight) * np.log(k) + reference_weight * np.log(k_reference)))
    table = positive(k, grid_density)
    return np.clip(np.rint(table * 255.0), 0, 255).astype(np.uint8).reshape(256, 1, 3)


def impulse_mask(image: np.ndarray, threshold: int = 40) -> np.ndarray:
    """bool HxW: pixels that are near-black or near-white and stand out from their 3x3 median by `threshold`.

    A switching median: only these pixels are replaced, so detail elsewhere is not smoothed. The loose
    "near" bounds keep impulses detectable after a JPEG round trip has smeared them a little.
    """
    _check(image)
    median = cv2.medianBlur(image, 3)
    distance = np.abs(image.astype(np.int16) - median.astype(np.int16)).max(axis=2)
    extreme = (image.min(axis=2) >= 190) | (image.max(axis=2) <= 65)
    return extreme & (distance > threshold)


def remove_impulses(image: np.ndarray, threshold: int = 40) -> np.ndarray:
    """Replace salt-and-pepper pixels (see `impulse_mask`) by the median of their 3x3 neighbourhood."""
    _check(image)
    # two passes: where impulses touch, the first 3x3 median can itself be an impulse
    out = image.copy()
    for _ in range(2):
        mask = impulse_mask(out, threshold)
        out[mask] = cv2.medianBlur(out, 3)[mask]
    return out


def estimate_noise_sigma(image: np.ndarray) -> float:
    """Gaussian noise deviation (0..255 units), the wavelet MAD estimator on Haar diagonal details.

    The finest diagonal detail of a photo is almost all noise, and the median absolute value is robust to
    the few edges there: sigma = median(|HH|) / 0.6745. Averaged over the three channels.
    """
    _check(image)
    height, width = (image.shape[0] // 2) * 2, (image.shape[1] // 2) * 2
    pixels = image[:height, :width].astype(np.float32)
    diagonal = (pixels[0::2, 0::2] - pixels[0::2, 1::2] - pixels[1::2, 0::2] + pixels[1::2, 1::2]) / 2.0
    return float(np.mean(np.median(np.abs(diagonal.reshape(-1, 3)), axis=0)) / 0.6745)


def denoise_gaussian(image: np.ndarray, sigma: float | None = None, strength: float = 0.8) -> np.ndarray:
    """Non-local means (OpenCV, colour) with its filter strength set from the noise level.

    `sigma` (0..255 units) is estimated from the image (wavelet median estimator) when not given; the
    filter strength h = `strength` * sigma, the usual rule for NL-means.
    """
    _check(image)
    if sigma is None:
        sigma = estimate_noise_sigma(image)
    h = max(1.0, strength * sigma)
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    denoised = cv2.fastNlMeansDenoisingColored(bgr, None, h=h, hColor=h, templateWindowSize=7,
                                               searchWindowSize=21)
    return cv2.cvtColor(denoised, cv2.COLOR_BGR2RGB)


def hole_mask(image: np.ndarray, min_core: int = 4, max_core: float = 0.06, reach: int = 3,
              tolerance: int = 1, max_spread: int = 30, min_contrast: float = 60.0,
              max_texture: float | None = 16.0, max_blob_texture: float | None = 20.0) -> np.ndarray:
    """uint8 HxW (255 = hole): blobs of one unclipped colour up to a grey texture, the mark of painted damage.

    A missing patch, an opaque scratch or a dust speck shows the mount or the dirt: one colour, at most with
    a grey paper mottle, and none of the chroma texture of a photographed surface. Cores are pixels whose 3x3
    neighbourhood has one chroma (R-G, G-B within `tolerance`) and is not clipped (real photos have pure
    black and white areas); at least `min_core` connected. Each core then claims the pixels of its chroma
    within `reach` px, which picks up thin scratches and blob rims. Cores above `max_core` of the image are
    taken for flat scenery (overcast sky, a painted wall) rather than damage, and so are cores whose
    colour is not near-neutral (channel spread above `max_spread`). JPEG's subsampled chroma makes many
    smooth areas flat too, so a blob is kept only if it contrasts with a ring around it by `min_contrast`
    (RGB distance): damage sits *on* the picture, scenery fades into its surroundings. (Tuned on training
    photos: about 0.2% of a clean photo is flagged.) Translucent stains keep the picture under them and are
    not detected. Damage is one colour in brightness too: cores whose luminance varies by more than
    `max_texture` levels (standard deviation) and blobs (a core with what it claimed) by more than
    `max_blob_texture` are grey scenery, e.g. the shaded concrete of a bridge on a real old photo (eval
    photos with holes, classical pipeline: 26.55 -> 26.67 dB; on colour negatives with holes unchanged).
    None: no such test.
    """
    _check(image)
    pixels = image.astype(np.int16)
    chroma = np.stack([pixels[..., 0] - pixels[..., 1], pixels[..., 1] - pixels[..., 2]], axis=-1)
    kernel = np.ones((3, 3), np.uint8)
    spread = np.stack([cv2.dilate(chroma[..., c], kernel) - cv2.erode(chroma[..., c], kernel) for c in range(2)],
                      axis=-1)
    flat = np.all(spread <= tolerance, axis=2)
    clipped = (image.max(axis=2) == 255) | (image.min(axis=2) == 0)
    cores = (flat & ~cv2.dilate(clipped.astype(np.uint8), kernel).astype(bool)).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(cores, connectivity=8)
    if count <= 1:
        return np.zeros(image.shape[:2], np.uint8)
    area = stats[:, cv2.CC_STAT_AREA]
    # damage shows a near-neutral mount, paper or dirt; a flat but clearly coloured area is scenery
    core_colour = np.zeros((count, 3), np.int16)
    core_colour[labels.ravel()] = pixels.reshape(-1, 3)
    saturated = core_colour.max(axis=1) - core_colour.min(axis=1) > max_spread
    rejected = (area < min_core) | (area > max_core * image.shape[0] * image.shape[1]) | saturated
    if max_texture is not None:
        rejected |= _brightness_spread(pixels, labels, count) > max_texture
    rejected[0] = True
    labels[rejected[labels]] = 0
    # chroma of each core (its pixels share it up to the tolerance), then spread the labels `reach` px outward
    core_chroma = np.zeros((count, 2), np.int16)
    core_chroma[labels.ravel()] = chroma.reshape(-1, 2)
    grown = cv2.dilate(labels.astype(np.float32), np.ones((2 * reach + 1,) * 2, np.uint8)).astype(np.int32)
    same = np.all(np.abs(chroma - core_chroma[grown]) <= tolerance + 1, axis=2)
    mask = (((grown > 0) & same) | (labels > 0)).astype(np.uint8)
    return _contrasting(pixels, mask, min_contrast, max_blob_texture) * 255


def _brightness_spread(pixels: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """Standard deviation (levels) of the mean-of-channels brightness within each of `count` labels."""
    luma = pixels.reshape(-1, 3).mean(axis=1)
    ids = labels.ravel()
    counts = np.maximum(np.bincount(ids, minlength=count), 1)
    mean = np.bincount(ids, luma, minlength=count) / counts
    return np.sqrt(np.maximum(np.bincount(ids, luma * luma, minlength=count) / counts - mean * mean, 0.0))


def _contrasting(pixels: np.ndarray, mask: np.ndarray, min_contrast: float,
                 max_blob_texture: float | None = None) -> np.ndarray:
    """Keep the blobs of `mask` (uint8 0/1) whose mean colour differs from a 2 px ring around them by
    `min_contrast` (RGB distance): damage sits *on* the picture, flat scenery fades into its surroundings."""
    count, labels, inside, around = blob_and_ring_colours(pixels, mask, ring=2)
    if count <= 1:
        return mask
    keep = np.linalg.norm(inside - around, axis=1) >= min_contrast
    if max_blob_texture is not None:
        keep &= _brightness_spread(pixels, labels, count) <= max_blob_texture
    keep[0] = False
    return keep[labels].astype(np.uint8)


def blob_and_ring_colours(image: np.ndarray, mask: np.ndarray, ring: int
                          ) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(label count, labels, mean colour of each 8-connected blob of `mask` (nonzero = set), mean colour of
    the `ring` px around it): count x channels arrays, row 0 the background's."""
    count, labels = cv2.connectedComponents((mask > 0).astype(np.uint8), connectivity=8)
    if count <= 1:
        empty = np.zeros((count, image.shape[2]))
        return count, labels, empty, empty
    grown = cv2.dilate(labels.astype(np.float32), np.ones((2 * ring + 1,) * 2, np.uint8)).astype(np.int32)
    around = (labels == 0) & (grown > 0)
    flat = image.reshape(-1, image.shape[2]).astype(np.float64)

    def mean_colour(where: np.ndarray, label_of: np.ndarray) -> np.ndarray:
        ids = label_of[where]
        sums = np.stack([np.bincount(ids, flat[where.ravel(), c], minlength=count)
                         for c in range(flat.shape[1])], axis=1)
        return sums / np.maximum(np.bincount(ids, minlength=count), 1)[:, None]

    return count, labels, mean_colour(labels > 0, labels), mean_colour(around, grown)


def inpaint_holes(image: np.ndarray, mask: np.ndarray | None = None, radius: int = 5) -> np.ndarray:
    """OpenCV (Telea) inpainting of `mask` (default: `hole_mask(image)`); the image unchanged if no holes."""
    _check(image)
    if mask is None:
        mask = hole_mask(image)
    if not mask.any():
        return image.copy()
    return cv2.inpaint(image, mask, radius, cv2.INPAINT_TELEA)
