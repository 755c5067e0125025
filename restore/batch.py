"""Restoring many files: planning outputs, resuming, overlapping decode/encode with inference.

Guarantees: an original is never opened for writing; an existing output (or the input itself) is never
replaced unless `overwrite` (the input never); every output is written atomically (temporary file in the same
folder, then rename), and temporary files left by a killed run are removed by the next one; a bad file costs
one line naming it and the batch goes on.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from restore.imageio import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    ImageReadError,
    LoadedImage,
    format_for,
    is_temporary,
    output_suffix,
    read_image,
    write_image,
)

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"})
RESTORED_MARK = "_restored"          # photo.jpg -> photo_restored.jpg when written beside the original
COMPARE_MARK = "_compare"            # side-by-side before|after, always JPEG
LARGE_PIXELS = 12_000_000           # above this, read/write only one photo ahead/behind the model
COMPARE_MAX_SIDE = 4096              # the side-by-side is a preview: bounded so 24 MP scans stay cheap


@dataclass(frozen=True)
class Job:
    source: Path
    output: Path                     # the restored file (written only if write_output)
    compare: Path | None = None      # the side-by-side (written only if not None)
    write_output: bool = True        # False when only a missing side-by-side is wanted
    kind: str = "image"              # "image" | "video"


@dataclass
class FileResult:
    source: Path
    status: str                      # "restored" | "skipped" | "failed"
    output: Path | None = None
    input_type: str | None = None    # "negative" | "bw" | "color" (photos restored in this run)
    message: str = ""                # failure reason (one line, names the file) or skip reason
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


def kind_of(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    return None


def is_earlier_output(path: Path) -> bool:
    """Files an earlier run wrote beside the originals (NAME_restored.*, NAME_compare.*) or left half-written."""
    return path.stem.endswith((RESTORED_MARK, COMPARE_MARK)) or is_temporary(path)


def _walk(root: Path, skip_dirs: set[Path], errors: list[FileResult]) -> Iterator[Path]:
    """Files under `root`, sorted, hidden entries skipped; directory symlinks are not followed (no loops)."""

    def on_error(error: OSError) -> None:
        where = error.filename or root
        errors.append(FileResult(Path(where), "failed",
                                 message=f"{where}: cannot list folder ({error.strerror or error})"))

    for directory, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and _resolved(Path(directory, d)) not in skip_dirs)
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(directory, name)


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # symlink loops raise RuntimeError on older Pythons
        return path.absolute()


def compare_path(output: Path, beside: bool) -> Path:
    stem = output.stem.removesuffix(RESTORED_MARK) if beside else output.stem
    return output.with_name(f"{stem}{COMPARE_MARK}.jpg")


def plan(inputs: Iterable[str | Path], out: str | Path | None = None, *, compare: bool = False,
         overwrite: bool = False) -> tuple[list[Job], list[FileResult]]:
    """Decide what to write for each input. Returns (jobs to run, results already settled: skips/errors).

    Files named explicitly are restored whatever their suffix says; folders are walked recursively for
    photo/video suffixes, skipping earlier outputs and the output folder itself. Without `out`, outputs go
    beside the originals as NAME_restored.ext; with it, a folder is mirrored into `out` with the same names
    (GIF/BMP/other become .png, videos .mp4), and single files go straight into `out`.
    """
    out_dir = Path(out) if out is not None else None
    skip_dirs = {_resolved(out_dir)} if out_dir is not None else set()
    jobs: list[Job] = []
    settled: list[FileResult] = []
    claimed: dict[Path, Path] = {}  # resolved output -> source, to catch two inputs with one output name

    def add(source: Path, relative: Path | None) -> None:
        kind = kind_of(source) or "image"
        suffix = ".mp4" if kind == "video" else output_suffix(source)
        beside = out_dir is None
        if beside:
            output = source.with_name(f"{source.stem}{RESTORED_MARK}{suffix}")
        else:
            output = (out_dir / (relative if relative is not None else Path(source.name))).with_suffix(suffix)
        target = _resolved(output)
        if target == _resolved(source):
            settled.append(FileResult(source, "failed", output,
                                      message=f"{source}: the output would replace the original; choose "
                                              f"another --out"))
            return
        if target in claimed:
            settled.append(FileResult(source, "failed", output,
                                      message=f"{source}: output {output} is also the output of "
                                              f"{claimed[target]}; restore them into different folders"))
            return
        claimed[target] = source
        side_by_side = compare_path(output, beside) if compare and kind == "image" else None
        need_output = overwrite or not output.exists()
        need_compare = side_by_side is not None and (overwrite or not side_by_side.exists())
        if not need_output and not need_compare:
            settled.append(FileResult(source, "skipped", output, message="already restored"))
            return
        jobs.append(Job(source, output, side_by_side if need_compare else None, need_output, kind))

    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for source in _walk(path, skip_dirs, settled):
                if kind_of(source) is not None and not is_earlier_output(source):
                    add(source, source.relative_to(path))
        elif path.exists() or path.is_symlink():
            add(path, None)
        else:
            settled.append(FileResult(path, "failed", message=f"{path}: no such file or folder"))
    return jobs, settled


def remove_stale_temporaries(folders: Iterable[Path]) -> int:
    """Delete temporary outputs a killed run left behind (only our own '.NAME.xxxx.restore-tmp' names)."""
    removed = 0
    for folder in set(folders):
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if is_temporary(Path(entry.name)) and entry.is_file(follow_symlinks=False):
                try:
                    os.unlink(entry.path)
                    removed += 1
                except OSError as error:
                    log.debug("cannot remove stale temporary %s: %s", entry.path, error)
    return removed


def side_by_side(before: np.ndarray, after: np.ndarray, gap: int = 8) -> np.ndarray:
    """before | after on one white canvas, scaled down so the long side is at most COMPARE_MAX_SIDE."""
    height, width = before.shape[:2]
    scale = min(1.0, COMPARE_MAX_SIDE / max(height, 2 * width + gap))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        before = cv2.resize(before, size, interpolation=cv2.INTER_AREA)
        after = cv2.resize(after, size, interpolation=cv2.INTER_AREA)
    spacer = np.full((before.shape[0], gap, 3), 255, np.uint8)
    return np.concatenate([before, spacer, after], axis=1)


def _timed_read(path: Path, max_pixels: int) -> tuple[LoadedImage, float]:
    tick = time.perf_counter()
    return read_image(path, max_pixels), time.perf_counter() - tick


def _write_outputs(job: Job, loaded: LoadedImage, restored: np.ndarray) -> float:
    """Write the restored photo (and side-by-side); returns the seconds spent."""
    tick = time.perf_counter()
    for target in (job.output if job.write_output else None, job.compare):
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
    if job.write_output:
        # A mislabelled file (PNG with alpha named .jpg) keeps its suffix; JPEG cannot hold the alpha.
        alpha = loaded.alpha if format_for(job.output) != "JPEG" else None
        write_image(job.output, restored, alpha, like=loaded)
    if job.compare is not None:
        write_image(job.compare, side_by_side(loaded.rgb, restored))
    return time.perf_counter() - tick


def describe_error(source: Path, error: BaseException) -> str:
    """One line naming the file: ImageReadError already does; others get the source prefixed."""
    if isinstance(error, ImageReadError):
        return str(error)
    if isinstance(error, OSError):
        detail = str(error) if type(error).__name__ == "ImageWriteError" else None
        if detail is None:
            where = f" {error.filename}" if error.filename else ""
            detail = f"{error.strerror or error}{':' + where if where else ''}"
        return f"{source}: {detail}"
    if isinstance(error, MemoryError):
        return f"{source}: not enough memory"
    text = str(error).strip().splitlines()
    return f"{source}: {type(error).__name__}: {text[0][:200] if text else ''}".rstrip(": ")


class BatchRunner:
    """Runs jobs with one model thread; `workers` threads decode ahead and encode behind it.

    `restorer_factory` is called once, when the first file actually needs the network (a resumed batch
    where everything is done never loads the weights). Errors from it (WeightsError) propagate: without a
    model no file can be restored.
    """

    def __init__(self, restorer_factory: Callable[[], Any], *, workers: int = 2,
                 max_pixels: int = DEFAULT_MAX_PIXELS, debug: bool = False,
                 on_result: Callable[[FileResult], None] | None = None,
                 on_video_progress: Callable[[Job, int, int], None] | None = None):
        self._factory = restorer_factory
        self._restorer = None
        self.workers = max(1, int(workers))
        self.max_pixels = max_pixels
        self.debug = debug
        self.on_result = on_result or (lambda result: None)
        self.on_video_progress = on_video_progress

    @property
    def restorer(self):
        if self._restorer is None:
            self._restorer = self._factory()
        return self._restorer

    def _fail(self, job: Job, error: BaseException, started: float) -> FileResult:
        if self.debug:
            log.exception("%s failed", job.source)
        return FileResult(job.source, "failed", job.output, message=describe_error(job.source, error),
                          seconds=time.perf_counter() - started)

    def run(self, jobs: list[Job]) -> list[FileResult]:
        results = self._run_images([job for job in jobs if job.kind == "image"])
        for job in (job for job in jobs if job.kind == "video"):
            results.append(self._run_video(job))
            self.on_result(results[-1])
        return results

    def _run_images(self, jobs: list[Job]) -> list[FileResult]:
        results: list[FileResult] = []
        if not jobs:
            return results
        queue = iter(jobs)
        reads: deque[tuple[Job, float, Future]] = deque()
        writes: deque[tuple[Job, float, dict, Future]] = deque()

        def finish_write(job: Job, started: float, info: dict, future: Future) -> None:
            try:
                write_seconds = future.result()
                # The photo's own work (decode + restore + encode), not the time it queued behind others.
                seconds = info.get("read_seconds", 0.0) + info.get("seconds", 0.0) + write_seconds
                result = FileResult(job.source, "restored", job.output if job.write_output else job.compare,
                                    input_type=info.get("input_type"), seconds=seconds, info=info)
            except Exception as error:  # noqa: BLE001 - one bad file must not stop the batch
                result = self._fail(job, error, started)
            results.append(result)
            self.on_result(result)

        with ThreadPoolExecutor(self.workers, thread_name_prefix="restore-read") as readers, \
                ThreadPoolExecutor(self.workers, thread_name_prefix="restore-write") as writers:

            depth = [self.workers]

            def read_ahead() -> None:
                # Bounded prefetch keeps memory bounded: at most `workers` decoded photos wait for the model,
                # one once photos turn out large (a 24 MP scan is ~150 MB in and out).
                while len(reads) < depth[0]:
                    job = next(queue, None)
                    if job is None:
                        return
                    reads.append((job, time.perf_counter(), readers.submit(_timed_read, job.source,
                                                                           self.max_pixels)))

            read_ahead()
            while reads:
                job, started, future = reads.popleft()
                read_ahead()
                try:
                    loaded, read_seconds = future.result()
                except (ImageReadError, OSError, MemoryError) as error:
                    result = self._fail(job, error, started)
                    results.append(result)
                    self.on_result(result)
                    continue
                depth[0] = 1 if loaded.rgb.shape[0] * loaded.rgb.shape[1] > LARGE_PIXELS else self.workers
                restorer = self.restorer  # outside the try: a weights error ends the batch, it is not per file
                try:
                    restored, info = restorer.restore_array(loaded.rgb)
                    info["read_seconds"] = read_seconds
                except Exception as error:  # noqa: BLE001 - one bad file must not stop the batch
                    result = self._fail(job, error, started)
                    results.append(result)
                    self.on_result(result)
                    continue
                writes.append((job, started, info, writers.submit(_write_outputs, job, loaded, restored)))
                del loaded, restored
                while writes and (writes[0][3].done() or len(writes) > depth[0]):
                    finish_write(*writes.popleft())
            while writes:
                finish_write(*writes.popleft())
        return results

    def _run_video(self, job: Job) -> FileResult:
        started = time.perf_counter()
        try:
            from restore.video import restore_video  # lazy: PyAV is only needed for videos
        except ImportError as error:
            return FileResult(job.source, "failed", job.output, seconds=0.0,
                              message=f"{job.source}: video support is unavailable ({error})")

        def progress(done: int, total: int) -> None:
            if self.on_video_progress is not None:
                self.on_video_progress(job, done, total)

        restorer = self.restorer
        try:
            job.output.parent.mkdir(parents=True, exist_ok=True)
            stats = restore_video(job.source, job.output, restorer, progress=progress)
        except Exception as error:  # noqa: BLE001 - decoders raise many types; one line, go on
            return self._fail(job, error, started)
        stats = stats if isinstance(stats, dict) else {}
        return FileResult(job.source, "restored", job.output, input_type=stats.get("input_type"),
                          seconds=time.perf_counter() - started, info=stats)


def output_folders(jobs: Iterable[Job], settled: Iterable[FileResult]) -> set[Path]:
    """Every folder this batch writes (or would have written) outputs into."""
    folders = {job.output.parent for job in jobs}
    folders |= {job.compare.parent for job in jobs if job.compare is not None}
    folders |= {result.output.parent for result in settled if result.output is not None}
    return folders
