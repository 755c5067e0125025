"""``degrade``: build (degraded, clean) training pairs from a folder of clean photos.

A thin typer layer over :func:`degradations.builder.build_pairs`: options, a rich progress bar, one line
per problem file and a summary table.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import cv2
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from degradations.builder import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    ImageReadError,
    OutputError,
    build_pairs,
    contact_sheet,
    read_rgb,
    resize_short_side,
)
from degradations.pipeline import load_pipeline_config

app = typer.Typer(add_completion=False, no_args_is_help=True)


def _write_contact_sheet(src: Path, target: Path, count: int, seed: int, config, console: Console) -> None:
    photos = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    images = []
    for path in photos:
        if len(images) == count:
            break
        try:
            images.append(resize_short_side(read_rgb(path), 384))
        except ImageReadError as error:
            console.print(f"skipped: {error}", highlight=False, markup=False, soft_wrap=True)
    if not images:
        raise typer.BadParameter(f"{src}: no readable photos for a contact sheet")
    sheet = contact_sheet(images, seed=seed, config=config)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(target), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80]):
        raise typer.BadParameter(f"{target}: could not write the contact sheet (unsupported suffix?)")
    console.print(f"contact sheet of {len(images)} photos written to {target}")


@app.command()
def degrade(
    src: Annotated[
        Path,
        typer.Argument(
            metavar="SRC_DIR",
            help="Folder of clean photos, searched recursively. Never modified.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Output folder: input/<rel>.png (degraded), target/<rel>.png (clean), manifest.jsonl.",
            show_default=False,
        ),
    ] = None,
    per_image: Annotated[
        int, typer.Option("--per-image", min=1, help="Pairs per photo; above 1, names get a _kNN suffix.")
    ] = 1,
    seed: Annotated[
        int, typer.Option("--seed", min=0, help="Run seed; each file's seed mixes in its path.")
    ] = 0,
    size: Annotated[
        int,
        typer.Option(
            "--size",
            min=0,
            help="Shrink so the SHORT side is PX pixels (square crops of PX always fit); "
            "smaller photos are never upscaled; 0 keeps the original size.",
        ),
    ] = 512,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Worker processes; the output is the same for any count.")
    ] = 1,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="TOML file of PipelineConfig fields (others keep their defaults).",
            show_default=False,
        ),
    ] = None,
    max_pixels: Annotated[
        int,
        typer.Option(
            "--max-pixels", min=1, help="Refuse images with more pixels (decompression-bomb guard)."
        ),
    ] = DEFAULT_MAX_PIXELS,
    sheet: Annotated[
        Path | None,
        typer.Option(
            "--contact-sheet",
            help="Instead of pairs, write a labelled contact sheet (JPEG/PNG) of the first 3 photos of SRC.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Degrade every photo under SRC like an old negative or print; write (input, target) pairs to --out.

    Re-running with the same options skips the pairs already written.
    Unreadable files are reported one per line and skipped; the exit code is 1 if any file failed.
    """
    console = Console(stderr=True)
    if not src.is_dir():
        raise typer.BadParameter(f"{src}: not a folder", param_hint="SRC")
    try:
        pipeline_config = load_pipeline_config(config)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--config") from error
    if sheet is not None:
        _write_contact_sheet(src, sheet, 3, seed, pipeline_config, console)
        return
    if out is None:
        raise typer.BadParameter("an output folder is required", param_hint="--out")

    start = time.perf_counter()
    with Progress(
        TextColumn("degrading"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("pairs"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        bar = progress.add_task("pairs", total=None)
        try:
            summary = build_pairs(
                src,
                out,
                per_image=per_image,
                seed=seed,
                size=size,
                workers=workers,
                config=pipeline_config,
                max_pixels=max_pixels,
                on_total=lambda total: progress.update(bar, total=total),
                on_pairs=lambda n: progress.advance(bar, n),
                on_problem=lambda message, failed: progress.console.print(
                    f"{'failed' if failed else 'skipped'}: {message}",
                    highlight=False,
                    markup=False,
                    soft_wrap=True,
                ),
            )
        except OutputError as error:
            progress.stop()
            console.print(f"error: {error}", highlight=False, markup=False, soft_wrap=True)
            raise typer.Exit(code=1) from error
    elapsed = time.perf_counter() - start

    table = Table(title=f"degrade {src} -> {out}", show_header=False)
    table.add_row("photos found", str(summary.sources))
    table.add_row("pairs written", str(summary.written))
    table.add_row("pairs already done", str(summary.already_done))
    table.add_row("files failed", str(len(summary.failed)))
    table.add_row("non-image files skipped", str(len(summary.skipped)))
    table.add_row("seconds", f"{elapsed:.1f}")
    console.print(table)
    if summary.failed:
        raise typer.Exit(code=1)


def main() -> None:
    app()
