"""Reading and writing photos safely, at the edges of the pipeline.

`read_image` turns whatever a scanner or an old archive produced (EXIF-rotated JPEG, grayscale, palette with
transparency, CMYK, 16-bit, alpha) into one uint8 RGB array plus an optional alpha plane, and refuses bad files
(empty, truncated, not an image, decompression bombs) with a one-line `ImageReadError` naming the file.
`write_image` writes atomically: a temporary file in the destination folder, then `os.replace`, so a crash or
a full disk never leaves a half-written photo under the final name.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import secrets
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 80_000_000          # refuse larger images: a small file can declare a gigantic canvas
JPEG_QUALITY = 95
TEMP_SUFFIX = ".restore-tmp"             # temporary outputs: ".NAME.<random>.restore-tmp" in the output folder
_ORIENTATION_TAG = 0x0112

# Output format by input suffix: JPEG/PNG/TIFF/WebP keep their format; everything else (GIF's 256-colour
# palette, BMP, PPM, ...) becomes PNG, which is lossless and keeps alpha.
_KEEP_SUFFIX = {".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".jfif": "JPEG", ".png": "PNG",
                ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP"}
IMAGE_SUFFIXES = frozenset(_KEEP_SUFFIX) | {".bmp", ".gif", ".ppm", ".pgm", ".pbm", ".pnm", ".jp2", ".tga"}


class ImageReadError(ValueError):
    """A file that cannot be used as a photo; the message is one line: '<path>: <reason>'."""


class ImageWriteError(OSError):
    """Writing an output failed; the message is one line naming the file: 'cannot write <path> (<reason>)'."""

    def __str__(self) -> str:
        return str(self.strerror)


@dataclass
class LoadedImage:
    rgb: np.ndarray                      # uint8 HxWx3, EXIF orientation applied
    alpha: np.ndarray | None             # uint8 HxW, or None when the file has no transparency
    mode: str                            # the file's PIL mode before conversion ("L", "P", "CMYK", "I;16", ...)
    format: str | None                   # the file's format ("JPEG", "PNG", ...)
    exif: bytes | None = None            # EXIF block with orientation reset to 1 (pixels are already upright)
    icc_profile: bytes | None = None     # kept for RGB inputs; dropped when we converted to sRGB ourselves
    path: Path | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), PIL's order."""
        return self.rgb.shape[1], self.rgb.shape[0]


def output_suffix(source: Path) -> str:
    """The suffix of the restored file for `source`: its own for JPEG/PNG/TIFF/WebP, else '.png'."""
    suffix = source.suffix.lower()
    return source.suffix if suffix in _KEEP_SUFFIX else ".png"


def format_for(path: Path) -> str:
    """The format `write_image` uses for `path`: JPEG/PNG/TIFF/WEBP by suffix, PNG otherwise."""
    return _KEEP_SUFFIX.get(path.suffix.lower(), "PNG")


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def _scale_to_uint8(array: np.ndarray) -> np.ndarray:
    """16-bit or float samples -> uint8 (rounded)."""
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        array = np.nan_to_num(array.astype(np.float32))
        peak = float(array.max()) if array.size else 0.0
        scale = 255.0 if peak <= 1.0 else 1.0
        return np.clip(array * scale + 0.5, 0, 255).astype(np.uint8)
    array = array.astype(np.int64, copy=False)
    # 16-bit data stored in a 32-bit "I" image is common (PNG 16-bit gray); true 8-bit data stays as is.
    if array.size and int(array.max()) > 255:
        return np.clip((array + 128) // 257, 0, 255).astype(np.uint8)
    return np.clip(array, 0, 255).astype(np.uint8)


def _cmyk_to_rgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    # With an embedded profile, a colour-managed conversion; PIL's naive formula otherwise.
    if icc:
        try:
            from PIL import ImageCms

            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except Exception as error:  # noqa: BLE001 - a broken profile must not lose the photo
            log.debug("CMYK profile conversion failed (%s); using PIL's conversion", error)
    return image.convert("RGB")


def pil_to_arrays(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """Any PIL image -> (uint8 HxWx3 RGB, uint8 HxW alpha or None, icc_still_valid).

    Pure: no EXIF handling, no I/O. `icc_still_valid` is False when the pixels were colour-converted to sRGB
    (CMYK), so an embedded profile no longer describes them.
    """
    mode = image.mode
    icc = image.info.get("icc_profile")
    if mode == "RGB":
        return np.asarray(image, dtype=np.uint8).copy(), None, True
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or (mode in ("P", "L", "RGB") and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.uint8)
        return np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3]), mode != "CMYK"
    if mode == "CMYK":
        return np.asarray(_cmyk_to_rgb(image, icc), dtype=np.uint8).copy(), None, False
    if mode.startswith("I") or mode == "F":
        gray = _scale_to_uint8(np.asarray(image))
        if gray.ndim == 3:  # multi-channel 16-bit modes, if a plugin produces them
            gray = gray[..., :3] if gray.shape[2] >= 3 else gray[..., :1].repeat(3, axis=2)
            return np.ascontiguousarray(gray), None, True
        return np.repeat(gray[..., None], 3, axis=2), None, True
    # "1", "L", "P" without transparency, "YCbCr", "LAB", "HSV", ...
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy(), None, mode in ("1", "L", "P")


def _upright_exif(image: Image.Image) -> bytes | None:
    try:
        exif = image.getexif()
        if not exif:
            return None
        exif[_ORIENTATION_TAG] = 1
        return exif.tobytes()
    except Exception:  # noqa: BLE001 - malformed EXIF is dropped, the photo is still usable
        return None


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Decode `path` into upright uint8 RGB (+ alpha). Raises ImageReadError('<path>: <reason>') for bad files.

    Animated images give their first frame. `max_pixels` guards against decompression bombs: the declared
    size is checked before any pixel is decoded.
    """
    path = Path(path)
    try:
        # A FIFO or device named .jpg would block open() or never end: only regular files are read.
        if not stat.S_ISREG(os.stat(path).st_mode):
            kind = "a directory" if path.is_dir() else "not a regular file (pipe, socket or device)"
            raise ImageReadError(f"{path}: {kind}")
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        raise ImageReadError(f"{path}: cannot read ({error.strerror or _one_line(error)})") from None
    if not data:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # PIL warns (and errors above 2x its own limit) for large canvases; our limit is checked below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width <= 0 or height <= 0:
                raise ImageReadError(f"{path}: image has no pixels ({width}x{height})")
            if width * height > max_pixels:
                raise ImageReadError(
                    f"{path}: too large: {width}x{height} = {width * height / 1e6:.0f} MP exceeds the limit of "
                    f"{max_pixels / 1e6:.0f} MP (decompression-bomb guard; raise it with --max-megapixels)")
            mode, file_format = image.mode, image.format
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)
            image.load()
            try:
                upright = ImageOps.exif_transpose(image)
            except Exception:  # noqa: BLE001 - a broken orientation tag: keep the stored orientation
                upright = image
            exif = _upright_exif(image)  # after the transpose: this resets the (cached) orientation tag
            icc = image.info.get("icc_profile")
            rgb, alpha, icc_valid = pil_to_arrays(upright)
    except ImageReadError:
        raise
    except Image.DecompressionBombError:
        raise ImageReadError(f"{path}: too large (decompression-bomb guard)") from None
    except Image.UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image (unrecognised format)") from None
    except MemoryError:
        raise ImageReadError(f"{path}: not enough memory to decode") from None
    except Exception as error:  # noqa: BLE001 - PIL plugins raise many types for malformed data
        reason = _one_line(error)
        if "truncated" in reason.lower() or isinstance(error, (EOFError, SyntaxError)):
            reason = f"truncated or corrupt image data ({reason})"
        else:
            reason = f"corrupt image data ({type(error).__name__}: {reason})"
        raise ImageReadError(f"{path}: {reason}") from None
    return LoadedImage(rgb=rgb, alpha=alpha, mode=mode, format=file_format, exif=exif,
                       icc_profile=icc if icc_valid else None, path=path)


def arrays_to_pil(rgb: np.ndarray, alpha: np.ndarray | None = None) -> Image.Image:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 HxWx3 RGB, got {rgb.dtype} {rgb.shape}")
    image = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    if alpha is not None:
        if alpha.shape != rgb.shape[:2]:
            raise ValueError(f"alpha {alpha.shape} does not match image {rgb.shape[:2]}")
        image.putalpha(Image.fromarray(np.ascontiguousarray(alpha, dtype=np.uint8), "L"))
    return image


def temporary_path(path: Path) -> Path:
    """A fresh temporary name beside `path`; hidden and recognisable so a later run can clean it up."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def is_temporary(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(TEMP_SUFFIX)


def atomic_write_bytes(path: str | Path, write) -> None:
    """Call `write(file)` on a temporary file beside `path`, fsync, then rename over `path`.

    The temporary file is removed if anything fails, so a failed write leaves no partial output.
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        # O_EXCL: never clobber anything; 0o666 & umask gives the usual permissions (mkstemp would give 0600).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def write_image(path: str | Path, rgb: np.ndarray, alpha: np.ndarray | None = None,
                like: LoadedImage | None = None, quality: int = JPEG_QUALITY) -> Path:
    """Write RGB (+ alpha) to `path` atomically, in the format its suffix names (JPEG/PNG/TIFF/WebP, else PNG).

    JPEG is written at quality 95. JPEG cannot hold alpha: callers choose the suffix with `output_suffix`,
    which keeps PNG/TIFF/WebP (all with alpha) and turns GIF and others into PNG, so alpha with a JPEG path is
    a caller error. EXIF and ICC from `like` are kept, EXIF orientation reset to 1 since pixels are upright.
    Raises ImageWriteError (an OSError) naming the file on failure (permission denied, disk full).
    """
    path = Path(path)
    file_format = format_for(path)
    if alpha is not None and file_format == "JPEG":
        raise ValueError(f"{path}: JPEG cannot hold transparency; write a .png")
    image = arrays_to_pil(rgb, alpha)
    options: dict = {}
    if like is not None:
        if like.exif and file_format in ("JPEG", "PNG", "TIFF", "WEBP"):
            options["exif"] = like.exif
        if like.icc_profile:
            options["icc_profile"] = like.icc_profile
    if file_format == "JPEG":
        options.update(quality=quality, optimize=False)
    elif file_format == "WEBP":
        options.update(quality=quality, method=4)
    elif file_format == "PNG":
        options.update(compress_level=6)
    elif file_format == "TIFF":
        options.update(compression="tiff_deflate")

    def encode(file):
        image.save(file, format=file_format, **options)

    try:
        atomic_write_bytes(path, encode)
    except OSError as error:
        reason = error.strerror or _one_line(error)
        if error.errno == errno.ENOSPC:
            reason = "no space left on device"
        raise ImageWriteError(error.errno or errno.EIO, f"cannot write {path} ({reason})") from None
    return path
