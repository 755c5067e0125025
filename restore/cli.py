"""`restore`: restore photos, folders and videos from the command line (a thin layer over restore.batch)."""

from __future__ import annotations

import logging
import os
import time
import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from restore.imageio import DEFAULT_MAX_PIXELS

log = logging.getLogger(__name__)

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,   # never a traceback for the user; --debug re-raises
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Restore old photos (film negatives, black-and-white prints, damaged colour scans) and videos.",
)


class InputType(str, Enum):
    auto = "auto"
    negative = "negative"
    bw = "bw"
    color = "color"


class Tones(str, Enum):
    input = "input"
    network = "network"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


def _default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return _printable(lines[0] if lines else type(error).__name__)


def _printable(text: str) -> str:
    """File names that are not valid UTF-8 (Latin-1 archives) reach us as surrogates, which a strict stdout
    cannot encode: show their bytes as \\xNN escapes instead of crashing."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _error(message: str) -> None:
    typer.echo(f"error: {_printable(message)}", err=True)


def _version_text(weights: Path | None, detector: Path | None = None, denoiser: Path | None = None,
                  negative_denoiser: Path | None = None) -> str:
    from restore import __version__
    from restore.weights import (
        default_denoiser_path,
        default_detector_path,
        default_negative_denoiser_path,
        default_weights_path,
    )

    lines = [f"restore {__version__}",
             _weights_line("model", weights if weights is not None else default_weights_path()),
             _weights_line("damage detector", detector if detector is not None else default_detector_path()),
             _weights_line("denoiser", denoiser if denoiser is not None else default_denoiser_path()),
             _weights_line("negative denoiser", negative_denoiser if negative_denoiser is not None
                           else default_negative_denoiser_path())]
    return "\n".join(lines)


def _weights_line(what: str, path: Path) -> str:
    from restore.weights import WeightsError, read_card

    if not path.is_file():
        return f"{what}: none installed ({path} not found)"
    try:
        card = read_card(path)
    except WeightsError as error:
        return f"{what}: {path} ({_one_line(error)})"
    name = card.get("name") or path.stem
    version = card.get("version")
    text = f"{what}: {name}" + (f" {version}" if version else "")
    if card.get("placeholder") is True:
        text += " (placeholder: an early model, far from the project's targets; see its card)"
    return f"{text} [{path}]"


@app.command()
def restore(
    inputs: Annotated[list[Path] | None, typer.Argument(
        help="Photos, folders (restored recursively) or videos (.mp4 .mov .avi .mkv .webm .m4v).",
        show_default=False)] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Output folder. Without it, each output goes beside its original as "
                            "NAME_restored.EXT; with it, folders are mirrored and names kept.")] = None,
    render_factor: Annotated[int, typer.Option(
        min=1, max=256, help="Network input size in 16 px units (long side): 32 = 512 px. Higher: more "
                             "colour detail, slower (cost grows with its square).")] = 32,
    input_type: Annotated[InputType, typer.Option(
        case_sensitive=False, help="What the inputs are: auto-detect, or force negative | bw | color.")
    ] = InputType.auto,
    tones: Annotated[Tones, typer.Option(
        case_sensitive=False, help="Prints and colour scans: keep their own brightness and contrast (input), "
                                   "or take the model's corrections of fading (network). Negatives are inverted "
                                   "by film-base removal either way.")] = Tones.input,
    saturation: Annotated[float, typer.Option(
        min=0.0, max=4.0, help="Scale of the colours given to black-and-white photos: 1 = as the model predicts "
                               "them (muted, the most accurate); 2 = twice as vivid, less accurate.")] = 1.0,
    weights: Annotated[Path | None, typer.Option(
        help="Generator weights (.safetensors, or a .pth state dict). Default: the shipped model.")] = None,
    detector: Annotated[Path | None, typer.Option(
        help="Damage detector weights (finds cracks, scratches, dust and holes to repair). Default: the "
             "shipped one.")] = None,
    no_detector: Annotated[bool, typer.Option(
        "--no-detector", help="Do not run the damage detector: cracks and scratches stay unless the model "
                              "repairs them itself.")] = False,
    denoiser: Annotated[Path | None, typer.Option(
        help="Denoiser weights (takes noise and film grain off noisy photos at full resolution). Default: the "
             "shipped one.")] = None,
    negative_denoiser: Annotated[Path | None, typer.Option(
        help="Weights of the denoiser for noisy negatives (takes the noise off the scan before it is "
             "inverted). Default: the shipped one.")] = None,
    no_denoiser: Annotated[bool, typer.Option(
        "--no-denoiser", help="Do not run the denoisers: noise is only softened.")] = False,
    device: Annotated[Device, typer.Option(
        case_sensitive=False, help="Where the network runs: auto (CUDA if available), cpu or cuda.")
    ] = Device.auto,
    compare: Annotated[bool, typer.Option(
        "--compare", help="Also write a before|after side-by-side NAME_compare.jpg.")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace existing outputs (never the originals). Default: skip files already restored.")] = False,
    workers: Annotated[int, typer.Option(
        min=1, max=32, help="Threads decoding and encoding around the single network thread.")
    ] = _default_workers(),
    max_megapixels: Annotated[float, typer.Option(
        min=0.001, help="Refuse images larger than this (decompression-bomb guard).")
    ] = DEFAULT_MAX_PIXELS / 1e6,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks and debug logs.")] = False,
    version: Annotated[bool, typer.Option(
        "--version", help="Print the package version and the model's name/version, then exit.")] = False,
) -> None:
    """Restore photos, folders and videos. Outputs keep each input's exact size."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(message)s")
    if not debug:
        # torch warns about its own deprecated jit.script use inside fastai/torchvision: noise for users.
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    if version:
        typer.echo(_version_text(weights, detector, denoiser, negative_denoiser))
        raise typer.Exit(0)
    if not inputs:
        typer.echo("error: give at least one photo, folder or video (see restore --help)", err=True)
        raise typer.Exit(2)
    try:
        failed = _run(inputs, out=out, render_factor=render_factor, input_type=input_type.value, tones=tones.value,
                      saturation=saturation, weights=weights, detector=None if no_detector else detector,
                      find_damage=not no_detector, denoiser=None if no_denoiser else denoiser,
                      negative_denoiser=None if no_denoiser else negative_denoiser, denoise=not no_denoiser,
                      device=device.value, compare=compare, overwrite=overwrite,
                      workers=workers, max_pixels=int(max_megapixels * 1e6), quiet=quiet, debug=debug)
    except KeyboardInterrupt:
        typer.echo("interrupted: finished outputs are complete; run the same command again to resume", err=True)
        raise typer.Exit(130) from None
    except Exception as error:  # one line for the user; --debug shows the traceback
        if debug:
            raise
        _error(_one_line(error))
        raise typer.Exit(2) from None
    raise typer.Exit(1 if failed else 0)


def _run(inputs: list[Path], *, out: Path | None, render_factor: int, input_type: str, tones: str,
         saturation: float, weights: Path | None, detector: Path | None, find_damage: bool,
         denoiser: Path | None, negative_denoiser: Path | None, denoise: bool, device: str, compare: bool, overwrite: bool, workers: int, max_pixels: int, quiet: bool,
         debug: bool) -> int:
    """Plan, run and report; returns the number of failed files."""
    from restore.batch import BatchRunner, output_folders, plan, remove_stale_temporaries
    from restore.inference import Restorer, resolve_device

    resolve_device(device)  # a bad --device fails before any work
    console = Console(quiet=quiet, highlight=False)
    started = time.perf_counter()
    jobs, settled = plan(inputs, out, compare=compare, overwrite=overwrite)
    remove_stale_temporaries(output_folders(jobs, settled))
    results = list(settled)
    for result in settled:
        if result.status == "failed":
            _error(result.message)
        elif not quiet:
            console.print(f"skipped {escape(_printable(str(result.source)))}: {result.message}", soft_wrap=True)

    def make_restorer() -> Restorer:
        return Restorer(weights=weights, device=device, render_factor=render_factor, input_type=input_type,
                        tones=tones, saturation=saturation, detector_weights=detector, find_damage=find_damage,
                        denoiser_weights=denoiser, negative_denoiser_weights=negative_denoiser, denoise=denoise)

    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True,
                        disable=quiet or not jobs)
    video_tasks: dict[Path, int] = {}
    with progress:
        photo_count = sum(job.kind == "image" for job in jobs)
        photos_task = progress.add_task("photos", total=photo_count) if photo_count else None

        def on_result(result) -> None:
            if result.status == "failed":
                _error(result.message)
            else:
                detected = f"{result.input_type}, " if result.input_type else ""
                progress.console.print(
                    f"restored {escape(_printable(str(result.source)))} -> "
                    f"{escape(_printable(str(result.output)))} ({detected}{result.seconds:.1f} s)", soft_wrap=True)
            if photos_task is not None and result.source.suffix.lower() not in _video_suffixes():
                progress.advance(photos_task)

        def on_video_progress(job, done: int, total: int) -> None:
            if job.source not in video_tasks:
                name = escape(_printable(job.source.name))
                video_tasks[job.source] = progress.add_task(f"{name} (frames)", total=total or None)
            progress.update(video_tasks[job.source], completed=done, total=total or None)

        runner = BatchRunner(make_restorer, workers=workers, max_pixels=max_pixels, debug=debug,
                             on_result=on_result, on_video_progress=on_video_progress)
        results += runner.run(jobs)

    counts = {status: sum(r.status == status for r in results) for status in ("restored", "skipped", "failed")}
    if not quiet:
        table = Table(title="restore summary")
        for column in ("restored", "skipped", "failed", "seconds"):
            table.add_column(column, justify="right")
        table.add_row(str(counts["restored"]), str(counts["skipped"]), str(counts["failed"]),
                      f"{time.perf_counter() - started:.1f}")
        console.print(table)
        detected: dict[str, int] = {}
        for result in results:
            if result.status == "restored" and result.input_type:
                detected[result.input_type] = detected.get(result.input_type, 0) + 1
        if detected:
            console.print("detected: " + ", ".join(f"{name} {count}" for name, count in sorted(detected.items())))
    return counts["failed"]


def _video_suffixes() -> frozenset[str]:
    from restore.batch import VIDEO_SUFFIXES
    return VIDEO_SUFFIXES


def main() -> None:
    app()
