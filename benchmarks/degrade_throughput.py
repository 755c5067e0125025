"""Throughput of the `degrade` paired-data builder at 256 px, for 1 and 2 workers.

    python benchmarks/degrade_throughput.py                 # 400 generated 320x384 photos
    python benchmarks/degrade_throughput.py PHOTOS --count 0  # your own folder (all of it)

Prints, per worker count: pairs/s end to end (reading, resizing to a 256 px short side, degrading, writing
two PNGs and the manifest, including worker start-up) and pairs/s in steady state (from the first finished
pair on, so without the start-up of spawned workers), pairs per CPU-second of one worker, and the load
average (other processes on the cores lower every figure). Also prints the in-memory rate of `degrade()` alone
on 256x256 crops, the figure that matters for on-the-fly training. Target: >= 50 pairs/s with 2 workers.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from degradations.builder import build_pairs, read_rgb, resize_short_side
from degradations.pipeline import degrade


def make_photos(folder: Path, count: int, seed: int = 0) -> None:
    """Photo-like PNGs: smooth colour fields with some texture and edges (not noise, which PNG can't pack)."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        base = cv2.resize(
            rng.integers(0, 256, (6, 5, 3), dtype=np.uint8), (320, 384), interpolation=cv2.INTER_CUBIC
        )
        texture = cv2.GaussianBlur(rng.normal(0, 12, (384, 320, 3)).astype(np.float32), (0, 0), 1.2)
        image = np.clip(base.astype(np.float32) + texture, 0, 255).astype(np.uint8)
        for _ in range(4):
            x, y = (int(v) for v in rng.integers(0, 300, 2))
            cv2.rectangle(image, (x, y), (x + 40, y + 60), tuple(int(c) for c in rng.integers(0, 256, 3)), -1)
        cv2.imwrite(str(folder / f"photo_{i:04d}.png"), image)


def time_build(src: Path, out: Path, workers: int) -> tuple[int, float, float, float]:
    """(pairs, end-to-end seconds, steady-state pairs/s, CPU seconds of this process)."""
    stamps: list[tuple[float, int]] = []
    cpu_start = time.process_time()
    start = time.perf_counter()
    summary = build_pairs(
        src, out, size=256, workers=workers, on_pairs=lambda n: stamps.append((time.perf_counter(), n))
    )
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    steady = float("nan")
    if len(stamps) > 1:
        pairs_after_first = sum(n for _, n in stamps[1:])
        steady = pairs_after_first / max(stamps[-1][0] - stamps[0][0], 1e-9)
    return summary.written, elapsed, steady, cpu


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", nargs="?", type=Path, help="photos to use (default: generated ones)")
    parser.add_argument("--count", type=int, default=400, help="photos to generate (ignored with a folder)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        src = args.folder
        if src is None:
            src = tmp_path / "src"
            src.mkdir()
            make_photos(src, args.count)
        print(f"source: {src}")

        photos = sorted(p for p in src.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
        if photos:
            crop = np.ascontiguousarray(resize_short_side(read_rgb(photos[0]), 256)[:256, :256])
            degrade(crop, 0)  # build the cached pipeline first
            start, calls = time.perf_counter(), 300
            for seed in range(calls):
                degrade(crop, seed)
            rate = calls / (time.perf_counter() - start)
            print(f"degrade() alone, {crop.shape[1]}x{crop.shape[0]}: {rate:.0f} images/s")

        for workers in (1, 2):
            pairs, elapsed, steady, cpu = time_build(src, tmp_path / f"out{workers}", workers)
            print(
                f"workers={workers}: {pairs} pairs in {elapsed:.1f} s = {pairs / elapsed:.0f} pairs/s end to end, "
                f"{steady:.0f} pairs/s steady state"
            )
            if workers == 1:
                # CPU time is what a busy, shared machine distorts least: pairs per CPU-second of one worker
                # is about what each idle core adds
                print(f"  one worker: {pairs / max(cpu, 1e-9):.0f} pairs per CPU-second")
        print(
            f"load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (figures drop when the cores are shared)"
        )


if __name__ == "__main__":
    main()
