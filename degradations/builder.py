"""The paired-data builder behind the ``degrade`` command, and the README contact sheet.

``build_pairs(src, out)`` walks ``src`` recursively and, for every photo, writes ``out/input/<rel>.png``
(degraded) and ``out/target/<rel>.png`` (clean, resized the same way), plus ``out/manifest.jsonl`` with
one line per pair. It is deterministic (per-file seeds, see :func:`degradations.pipeline.seed_for`), so
the bytes do not depend on the worker count; resumable (finished pairs are skipped); it writes every file
atomically and never writes into ``src``.
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from degradations import transforms as T
from degradations.pipeline import MIN_SIZE, PipelineConfig, degrade, seed_for

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "BuildSummary",
    "ImageReadError",
    "OutputError",
    "build_pairs",
    "contact_sheet",
    "output_name",
    "read_rgb",
    "resize_short_side",
]

# File types read as photos; anything else in the source tree is reported and skipped.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
# Decompression-bomb guard: larger images are refused before their pixels are decoded.
DEFAULT_MAX_PIXELS = 80_000_000
MANIFEST = "manifest.jsonl"
_TMP_SUFFIX = ".degrade-tmp"  # hidden "<.name>.<pid>.degrade-tmp" files, renamed into place when complete
# PNG with the run-length strategy at level 1: about the size of the default at half its time or less
# (still lossless; encoding is the slowest step of a pair at 256 px)
_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]


class ImageReadError(ValueError):
    """A source file that is not a readable photo; the message names the file and the reason."""


class OutputError(OSError):
    """The output folder cannot be written (permissions, full disk): fatal for the whole run, since every
    later pair would fail the same way. The message names the path and the reason."""


def _output_error(path: Path, error: OSError) -> str:
    return f"{path}: cannot write ({error.strerror or error})"


def read_rgb(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode ``path`` as uint8 HxWx3 RGB (EXIF orientation applied), refusing images over ``max_pixels``."""
    try:
        # a pipe or device would block the reader forever: only regular files are images
        if not stat.S_ISREG(path.stat().st_mode):
            raise ImageReadError(f"{path}: not a regular file")
        with Image.open(path) as image:
            # the header alone gives the size: check it before decoding a possibly huge bitmap
            if image.width * image.height > max_pixels:
                raise ImageReadError(
                    f"{path}: {image.width}x{image.height} exceeds the {max_pixels:,}-pixel limit (--max-pixels)"
                )
            image = ImageOps.exif_transpose(image)
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except ImageReadError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise ImageReadError(f"{path}: not a readable image ({type(error).__name__})") from error
    except (OSError, ValueError, SyntaxError) as error:  # truncated or corrupt data, bad headers
        raise ImageReadError(f"{path}: corrupt or truncated image ({error})") from error


def resize_short_side(image: np.ndarray, size: int) -> np.ndarray:
    """Shrink so the short side is ``size`` pixels (area filter); smaller images and ``size`` 0 are kept."""
    h, w = image.shape[:2]
    if size <= 0 or min(h, w) <= size:
        return image
    scale = size / min(h, w)
    new_size = (max(size, round(w * scale)), max(size, round(h * scale)))
    return cv2.resize(image, new_size, interpolation=cv2.INTER_AREA)


def output_name(rel: str, k: int, per_image: int) -> str:
    """Relative output name (POSIX) of pair ``k`` of source ``rel``: same folders and stem, ``.png``, and
    a ``_kNN`` suffix when there are several pairs per image."""
    stem = PurePosixPath(rel).with_suffix("")
    if per_image > 1:
        width = max(2, len(str(per_image - 1)))
        stem = stem.with_name(f"{stem.name}_k{k:0{width}d}")
    return f"{stem}.png"


def pair_seed(rel: str, k: int, per_image: int, seed: int) -> int:
    """Seed of pair ``k`` of source ``rel``: per file, plus the pair index when there are several."""
    return seed_for(rel if per_image == 1 else f"{rel}#{k}", seed)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and os.replace: readers never see half a file.
    A failed write removes its temporary; one left by a killed run is removed by the next build."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{_TMP_SUFFIX}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def _remove_stale_temporaries(out: Path) -> None:
    """Delete temporaries of an earlier run that was killed between writing and renaming."""
    for path in out.rglob(f".*{_TMP_SUFFIX}"):
        if path.is_file():
            path.unlink(missing_ok=True)


def _png_bytes(image: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), _PNG_PARAMS)
    if not ok:
        raise RuntimeError("OpenCV could not encode a PNG")
    return buffer.tobytes()


@dataclass(frozen=True)
class _Task:
    """Everything a worker needs for one source file (picklable, so spawn-started workers work)."""

    src_root: str
    out_root: str
    rel: str
    ks: tuple[int, ...]
    per_image: int
    seed: int
    size: int
    max_pixels: int
    config: PipelineConfig


def _run_task(task: _Task) -> tuple[str, list[dict[str, Any]], str | None, bool]:
    """Read, resize and degrade one source; write its pairs.

    Returns (rel, manifest records, error message or None, whether the error is an output error)."""
    try:
        clean = resize_short_side(read_rgb(Path(task.src_root) / task.rel, task.max_pixels), task.size)
    except ImageReadError as error:
        return task.rel, [], str(error), False
    if min(clean.shape[:2]) < MIN_SIZE:
        return (
            task.rel,
            [],
            f"{Path(task.src_root) / task.rel}: {clean.shape[1]}x{clean.shape[0]} is below {MIN_SIZE} px",
        )
    out_root = Path(task.out_root)
    target_bytes = _png_bytes(clean)
    records = []
    for k in task.ks:
        name = output_name(task.rel, k, task.per_image)
        seed = pair_seed(task.rel, k, task.per_image, task.seed)
        degraded, record = degrade(clean, seed, task.config)
        for path, data in ((out_root / "target" / name, target_bytes), (out_root / "input" / name, None)):
            try:
                _write_atomic(path, data if data is not None else _png_bytes(degraded))
            except OSError as error:
                return task.rel, records, _output_error(path, error), True
        records.append(
            {
                "input": f"input/{name}",
                "target": f"target/{name}",
                "source": task.rel,
                "seed": seed,
                "category": record["category"],
                "ops": record["ops"],
            }
        )
    return task.rel, records, None, False


def _init_worker() -> None:
    # one OpenCV thread per worker process: the processes already fill the cores
    cv2.setNumThreads(1)


@dataclass
class BuildSummary:
    """What a build did. ``failed`` lists one message per unreadable file (the run should exit non-zero)."""

    sources: int = 0  # photos found
    written: int = 0  # pairs written by this run
    already_done: int = 0  # pairs skipped because a previous run finished them
    failed: list[str] = field(default_factory=list)  # "path: reason" for files that could not be used
    skipped: list[str] = field(default_factory=list)  # "path: reason" for non-image files, not an error


def _list_sources(src: Path, out: Path) -> tuple[list[str], list[str]]:
    """(relative POSIX paths of candidate photos, messages for other files), sorted; hidden files and the
    output folder (when inside ``src``) are left out."""
    out_resolved = out.resolve()
    photos, others = [], []
    for root, dirs, files in os.walk(src):
        root_path = Path(root)
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and (root_path / d).resolve() != out_resolved
        )
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = root_path / name
            rel = path.relative_to(src).as_posix()
            if path.suffix.lower() in IMAGE_SUFFIXES:
                photos.append(rel)
            else:
                others.append(f"{path}: not an image file type ({path.suffix or 'no suffix'})")
    return sorted(photos), others


def _load_manifest(path: Path) -> dict[str, dict[str, Any]]:
    """Records of an earlier run by input name; a torn last line (a run killed mid-write) is ignored."""
    records: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                records[record["input"]] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return records


def _manifest_line(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"


def build_pairs(
    src: str | Path,
    out: str | Path,
    *,
    per_image: int = 1,
    seed: int = 0,
    size: int = 512,
    workers: int = 1,
    config: PipelineConfig | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    on_total: Callable[[int], None] | None = None,
    on_pairs: Callable[[int], None] | None = None,
    on_problem: Callable[[str, bool], None] | None = None,
) -> BuildSummary:
    """Write degraded/clean pairs of every photo under ``src`` into ``out`` (see the module docstring).

    ``size``: short side in pixels (never upscaled; 0 keeps the original size). ``workers`` > 1 uses
    that many spawn-started processes; the output is byte-identical for any worker count.
    Callbacks: ``on_total(pairs to do)`` once, ``on_pairs(n)`` as pairs are done (written or failed),
    ``on_problem(message, failed)`` per failed (True) or skipped non-image (False) file. The manifest
    ends sorted by input name, one line per pair. Raises :class:`OutputError` when ``out`` cannot be
    written; pairs finished before that stay valid (and recorded) for a resumed run.
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise NotADirectoryError(f"{src}: source folder not found")
    if per_image < 1:
        raise ValueError(f"per_image must be >= 1, got {per_image}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    config = config or PipelineConfig()
    summary = BuildSummary()
    photos, others = _list_sources(src, out)
    summary.sources = len(photos)
    for message in others:
        summary.skipped.append(message)
        if on_problem:
            on_problem(message, False)

    manifest_path = out / MANIFEST
    records = _load_manifest(manifest_path)
    tasks: list[_Task] = []
    owners: dict[str, str] = {}  # output name -> source that claimed it
    for rel in photos:
        todo = []
        for k in range(per_image):
            name = output_name(rel, k, per_image)
            if owners.setdefault(name, rel) != rel:
                message = f"{src / rel}: output name {name} already used by {owners[name]}"
                summary.failed.append(message)
                if on_problem:
                    on_problem(message, True)
                break
            done = (
                f"input/{name}" in records
                and (out / "input" / name).exists()
                and (out / "target" / name).exists()
            )
            if done:
                summary.already_done += 1
            else:
                todo.append(k)
        else:
            if todo:
                tasks.append(
                    _Task(str(src), str(out), rel, tuple(todo), per_image, seed, size, max_pixels, config)
                )
    if on_total:
        on_total(sum(len(task.ks) for task in tasks))

    pairs_of = {task.rel: len(task.ks) for task in tasks}
    try:
        out.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(out)
        manifest = manifest_path.open("a", encoding="utf-8")
    except OSError as error:
        raise OutputError(_output_error(out, error)) from error
    try:
        with manifest:
            for rel, new_records, error, fatal in _run_all(tasks, workers):
                for record in new_records:  # appended as we go: a killed run keeps its work
                    records[record["input"]] = record
                    manifest.write(_manifest_line(record))
                manifest.flush()
                summary.written += len(new_records)
                if fatal:
                    raise OutputError(error)
                if error:
                    summary.failed.append(error)
                    if on_problem:
                        on_problem(error, True)
                if on_pairs:
                    on_pairs(pairs_of[rel])
        # final form: sorted and deduplicated, so the manifest is the same bytes whatever the order of work
        _write_atomic(
            manifest_path, "".join(_manifest_line(records[k]) for k in sorted(records)).encode("utf-8")
        )
    except OutputError:
        raise
    except OSError as error:
        raise OutputError(_output_error(manifest_path, error)) from error
    return summary


def _run_all(
    tasks: Sequence[_Task], workers: int
) -> Iterable[tuple[str, list[dict[str, Any]], str | None, bool]]:
    """Results of all tasks, in completion order: in this process for one worker, else a process pool."""
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield _run_task(task)
        return
    # spawn, not fork: the parent may run threads (the progress bar, OpenCV's pool) that fork would copy
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=min(workers, len(tasks)), mp_context=context, initializer=_init_worker
    ) as pool:
        futures = [pool.submit(_run_task, task) for task in tasks]
        try:
            for future in concurrent.futures.as_completed(futures):
                yield future.result()
        finally:  # on a fatal error, do not wait for the queued work
            for future in futures:
                future.cancel()


# --- contact sheet -------------------------------------------------------------------------------------

# (label, transform factory) for each column after the original; ranges pushed a little past the
# defaults where a thumbnail would otherwise hide the effect.
_SHEET_COLUMNS: tuple[tuple[str, Callable[[], T.Degradation]], ...] = (
    ("colour negative", lambda: T.Negative(kind="color")),
    ("b&w negative", lambda: T.Negative(kind="bw")),
    ("b&w print", lambda: T.Grayscale(tone_probability=0.0)),
    ("sepia print", lambda: T.Grayscale(tone_probability=1.0, strength_range=(0.8, 1.0))),
    ("faded", lambda: T.Fade(contrast_range=(0.55, 0.65), yellowing_range=(0.25, 0.35))),
    ("holes, stains", lambda: T.Holes(area_range=(0.06, 0.10), kinds=("stain", "blob", "tear"))),
    ("scratches, dust", lambda: T.Holes(area_range=(0.02, 0.03), kinds=("scratch", "scratch", "dust"))),
    ("JPEG", lambda: T.Jpeg(quality_range=(12, 18))),
    ("salt & pepper", lambda: T.SaltPepper(amount_range=(0.015, 0.02))),
    (
        "blur",
        lambda: T.Blur(
            kinds=("motion", "defocus"), motion_length_range=(5, 7), defocus_radius_range=(2, 2.5)
        ),
    ),
    ("film grain", lambda: T.Noise(kinds=("grain",), sigma_range=(10, 12), monochrome_probability=1.0)),
    ("low-res", lambda: T.LowRes(scale_range=(0.25, 0.3))),
)


def _square(image: np.ndarray, tile: int) -> np.ndarray:
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return cv2.resize(image[top : top + side, left : left + side], (tile, tile), interpolation=cv2.INTER_AREA)


def _label(text: str, width: int, height: int) -> np.ndarray:
    strip = np.full((height, width, 3), 255, np.uint8)
    scale = 0.42 * height / 20
    (text_w, text_h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    origin = (max(2, (width - text_w) // 2), (height + text_h) // 2)
    cv2.putText(strip, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def contact_sheet(
    images: Sequence[np.ndarray],
    seed: int = 0,
    tile: int = 144,
    config: PipelineConfig | None = None,
    samples: int = 2,
) -> np.ndarray:
    """Labelled grid, one row per image (uint8 RGB): the original, each category and main degradation on
    its own, then ``samples`` draws of the full pipeline (labelled with their category; drawn so that a
    row shows different categories)."""
    rows = []
    for row_index, image in enumerate(images):
        square = _square(image, max(tile, MIN_SIZE))
        tiles = [("original", square)]
        for column, (label, factory) in enumerate(_SHEET_COLUMNS):
            transform = factory()
            transform.set_random_seed(seed + 101 * row_index + column)
            tiles.append((label, transform(image=square)["image"]))
        shown: set[str] = set()
        for sample in range(samples):
            # first draw (in a fixed seed order) of a category not shown yet in this row, with some damage:
            # the sheet should show the variety, and stays reproducible
            for attempt in range(50):
                degraded, record = degrade(
                    square, seed_for(f"sheet/{row_index}/{sample}/{attempt}", seed), config
                )
                if record["category"] not in shown and len(record["ops"]) >= 2:
                    break
            shown.add(record["category"])
            tiles.append((f"pipeline: {record['category'].replace('_', ' ')}", degraded))
        gap = np.full((tile + 20, 4, 3), 255, np.uint8)
        cells = []
        for label, picture in tiles:
            cells += [np.concatenate([_label(label, tile, 20), picture]), gap]
        rows.append(np.concatenate(cells[:-1], axis=1))
    return np.concatenate(rows, axis=0)
