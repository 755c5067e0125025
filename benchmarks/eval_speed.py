"""How long `restore-eval` takes: a few photos over every category, extrapolated to the whole folder.

    python benchmarks/eval_speed.py [--data /work/shared/data/eval] [--limit 3] [--weights FILE]

Without --weights a randomly initialised generator of the default spec (ResNet34 U-Net with self-attention,
the shipped architecture) is timed: the speed does not depend on what the weights have learned. Prints wall
time and process CPU time (all threads): on a machine shared with other jobs the wall time overstates what
an idle 2-core machine takes, and CPU seconds / cores is the better estimate there.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from restore.arch import GeneratorSpec, build_generator
from restore.evaluate import CATEGORIES, evaluate, find_photos
from restore.weights import save_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="/work/shared/data/eval", help="ground-truth folder")
    parser.add_argument("--limit", type=int, default=3, help="photos to time")
    parser.add_argument("--weights", default=None, help="generator to time (default: random default spec)")
    parser.add_argument("--max-side", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    total_photos = len(find_photos(args.data))
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights
        if weights is None:
            torch.manual_seed(0)
            spec = GeneratorSpec()
            weights = Path(tmp) / "random_resnet34.safetensors"
            save_weights(build_generator(spec), weights, spec)
        load = os.getloadavg()[0]
        wall, cpu = time.perf_counter(), time.process_time()
        result = evaluate(args.data, [weights], out_dir=Path(tmp) / "report", limit=args.limit,
                          max_side=args.max_side, workers=args.workers)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    photos = result["meta"]["photos"]
    restores = photos * len(CATEGORIES)
    cores = os.cpu_count() or 1
    print(f"torch threads {torch.get_num_threads()}, {cores} cores, load average {load:.1f} at start")
    print(f"{photos} photos x {len(CATEGORIES)} categories = {restores} restorations, max side {args.max_side}")
    print(f"wall {wall:.1f} s ({wall / restores:.2f} s per restoration), of which restorer "
          f"{result['meta']['network_seconds']:.1f} s; process CPU {cpu:.1f} s")
    scale = total_photos / photos
    print(f"extrapolated to {total_photos} photos: wall {wall * scale / 60:.1f} min; "
          f"CPU / {cores} cores {cpu * scale / cores / 60:.1f} min (an idle {cores}-core machine)")


if __name__ == "__main__":
    main()
