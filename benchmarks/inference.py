"""Inference speed and memory on this machine, in one run.

Prints:
1. a 1 MP photo end-to-end through the `restore` CLI (in-process, typer's CliRunner, weights already loaded,
   so the figure is the per-photo cost a batch pays), the bare network passes the CLI runs for that photo
   (which passes, their seconds: the generator and the damage detector, same networks, same padded shapes,
   no I/O), and the ratio (target <= 1.15);
   also the cold `python -m restore photo.jpg` subprocess time (interpreter, imports, weights load included);
2. folder throughput in photos/min at default settings (in-process CLI over a folder of 1 MP photos);
3. peak RSS of `python -m restore` on a 24 MP photo (a subprocess; resource.getrusage(RUSAGE_CHILDREN)).

Usage: python benchmarks/inference.py [--weights FILE] [--photos 8] [--skip-rss]
Without shipped weights it times a randomly initialised ResNet34 self-attention U-Net saved to a temporary
file: timing and memory do not depend on weight values.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def _photo(width: int, height: int, seed: int) -> np.ndarray:
    """A photo-like picture: a real image (skimage's astronaut/coffee/chelsea) with added grain."""
    from skimage import data

    sources = (data.astronaut, data.coffee, data.chelsea)
    base = sources[seed % len(sources)]()
    image = cv2.resize(base, (width, height), interpolation=cv2.INTER_CUBIC)
    rng = np.random.default_rng(seed)
    grain = rng.normal(0, 6, image.shape[:2]).astype(np.float32)[..., None]
    return np.clip(image.astype(np.float32) + grain, 0, 255).astype(np.uint8)


def _weights(path: str | None, folder: Path) -> tuple[Path, str]:
    from restore.weights import default_weights_path

    if path is not None:
        return Path(path), "given"
    shipped = default_weights_path()
    if shipped.is_file():
        return shipped, "shipped"
    from restore.arch import GeneratorSpec, build_generator
    from restore.weights import save_weights

    spec = GeneratorSpec()
    target = folder / "random_resnet34.safetensors"
    save_weights(build_generator(spec), target, spec, card={"name": "random-init benchmark model"})
    return target, "random ResNet34 U-Net (no shipped weights)"


def _cli(args: list[str]):
    from typer.testing import CliRunner

    from restore import cli

    result = CliRunner().invoke(cli.app, args)
    if result.exit_code != 0:
        raise SystemExit(f"restore {' '.join(args)} failed ({result.exit_code}):\n{result.output}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="generator weights (default: the shipped model)")
    parser.add_argument("--photos", type=int, default=8, help="photos in the throughput folder")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
    parser.add_argument("--skip-rss", action="store_true", help="skip the 24 MP peak-RSS subprocess")
    args = parser.parse_args()

    import torch

    from restore import inference
    from restore.inference import Restorer

    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        weights, origin = _weights(args.weights, folder)
        print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
              f"load average {os.getloadavg()[0]:.1f} (other processes slow every figure)")
        print(f"weights: {weights} ({origin})")

        start = time.perf_counter()
        restorer = Restorer(weights=weights, device="cpu")
        load_seconds = time.perf_counter() - start
        # The CLI builds its own Restorer; hand it the model already loaded so per-photo cost is measured.
        loaded = inference.load_generator(weights, restorer.device)
        inference.load_generator = lambda *a, **k: loaded
        detector = restorer.detector
        if detector is not None:                    # the same for the damage detector, if one is installed
            detector_loaded = (detector, restorer.detector_card)
            inference.load_detector = lambda *a, **k: detector_loaded

        width, height = 1155, 866                                 # 1.0 MP, 4:3
        photo = folder / "photo.jpg"
        Image.fromarray(_photo(width, height, 0)).save(photo, quality=92)
        # Every network pass the CLI runs (the generator, the damage detector), recorded by hooks on the networks it
        # uses as (name, network, padded input shape): the bare passes replay exactly those. The same hooks time
        # the forward calls inside each CLI run: the same run, the same load, so that ratio holds even on a busy
        # machine.
        networks = {"generator": loaded[0]} | ({"detector": detector} if detector is not None else {})
        passes: list[tuple[str, torch.nn.Module, tuple[int, int]]] = []
        forward_times: list[float] = []
        recording = True

        def before(module, inputs, name):
            if recording:
                passes.append((name, module, tuple(inputs[0].shape[2:])))
            forward_times.append(-time.perf_counter())

        for name, network in networks.items():
            network.register_forward_pre_hook(lambda module, inputs, name=name: before(module, inputs, name))
            network.register_forward_hook(lambda module, inputs, output: forward_times.append(time.perf_counter()))

        def bare_passes() -> float:
            total = 0.0
            for _, network, shape in passes:
                tensor = torch.rand(1, 3, *shape).mul_(2).sub_(1).contiguous(memory_format=torch.channels_last)
                tick = time.perf_counter()
                with torch.inference_mode():
                    network(tensor)
                total += time.perf_counter() - tick
            return total

        def cli_photo() -> float:
            tick = time.perf_counter()
            _cli([str(photo), "--weights", str(weights), "--overwrite", "-q"])
            return time.perf_counter() - tick

        cli_photo()                                   # warm-up, and the record of the passes
        recording = False
        bare_passes()
        bare, cli_times, in_run = [], [], []
        for _ in range(args.repeats):
            bare.append(bare_passes())
            forward_times.clear()
            cli_times.append(cli_photo())
            in_run.append(sum(forward_times))
        bare_seconds, cli_seconds = statistics.median(bare), statistics.median(cli_times)
        ratios_in_run = [total / network for total, network in zip(cli_times, in_run)]
        with Image.open(folder / "photo_restored.jpg") as image:
            assert image.size == (width, height), image.size

        # where the CLI's time goes, from the library's own report
        rgb = np.asarray(Image.open(photo).convert("RGB"))
        _, info = restorer.restore_array(rgb)

        print(f"\n1 MP photo ({width}x{height}) end-to-end through the CLI (in-process CliRunner, weights "
              f"loaded): {cli_seconds:.2f} s (median of {args.repeats}; target <= 2.5 s)")
        print("  network passes the CLI runs: " + ", ".join(f"{name} {shape[1]}x{shape[0]}" for name, _, shape in
                                                         passes)
              + f" (render size {info['render_size'][1]}x{info['render_size'][0]}, padded to x32)")
        print(f"  bare network passes (separate, interleaved runs): {bare_seconds:.2f} s  ->  CLI / bare = "
              f"{cli_seconds / bare_seconds:.2f} (target <= 1.15)")
        print(f"  network forward time inside the CLI runs: {statistics.median(in_run):.2f} s  ->  CLI / network "
              f"(same run) = {statistics.median(ratios_in_run):.2f} (median of {args.repeats})")
        print(f"  library restore_array alone: {info['seconds']:.2f} s (of which network "
              f"{sum(p['seconds'] for p in info['passes']):.2f} s)")
        print(f"  weights load (Restorer construction, once per run): {load_seconds:.2f} s")

        env = dict(os.environ)
        tick = time.perf_counter()
        subprocess.run([sys.executable, "-m", "restore", str(photo), "--weights", str(weights), "--overwrite",
                        "-q"], check=True, env=env)
        print(f"  cold subprocess `python -m restore photo.jpg` (imports + load + photo): "
              f"{time.perf_counter() - tick:.2f} s")

        scans = folder / "scans"
        scans.mkdir()
        sizes = [(1155, 866), (866, 1155), (1000, 1000), (1224, 816)]
        for index in range(args.photos):
            w, h = sizes[index % len(sizes)]
            Image.fromarray(_photo(w, h, index)).save(scans / f"scan_{index:02d}.jpg", quality=92)
        tick = time.perf_counter()
        _cli([str(scans), "--out", str(folder / "restored"), "--weights", str(weights), "-q"])
        seconds = time.perf_counter() - tick
        print(f"\nfolder throughput (default settings, {args.photos} photos of ~1 MP, in-process CLI): "
              f"{args.photos / seconds * 60:.1f} photos/min ({seconds / args.photos:.2f} s per photo)")

        if not args.skip_rss:
            big = folder / "big.jpg"
            Image.fromarray(_photo(6000, 4000, 1)).save(big, quality=92)
            probe = ("import resource, subprocess, sys; "
                     "subprocess.run([sys.executable, '-m', 'restore', *sys.argv[1:]], check=True); "
                     "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
            for label, target in (("24 MP (6000x4000)", big), ("1 MP (baseline: interpreter + model)", photo)):
                tick = time.perf_counter()
                done = subprocess.run([sys.executable, "-c", probe, str(target), "--weights", str(weights),
                                       "--overwrite", "-q"], capture_output=True, text=True, check=True, env=env)
                peak_kb = int(done.stdout.strip().splitlines()[-1])
                print(f"peak RSS, `python -m restore` on a {label} photo: {peak_kb / 1024 ** 2:.2f} GB "
                      f"({time.perf_counter() - tick:.1f} s){'  (target <= 2.5 GB)' if target == big else ''}")


if __name__ == "__main__":
    main()
