"""``restore-eval``: score models against the baselines per degradation category, or compare two runs.

    restore-eval --data DIR [--weights FILE ...] [--seed S] [--out REPORT_DIR] [--limit N]
                 [--categories a,b] [--max-side PX] [--no-reference]
    restore-eval --compare old.json new.json

A thin typer layer over :mod:`restore.evaluate`: options, a rich progress bar and summary tables.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from restore.evaluate import (
    CATEGORIES,
    DEFAULT_MAX_SIDE,
    comparability,
    compare,
    evaluate,
    evaluate_no_reference,
    model_labels,
    record_in_card,
)

app = typer.Typer(add_completion=False, no_args_is_help=True)


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), TextColumn("{task.fields[what]}"), console=console, transient=False)


def _cell(metric: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}" if metric in ("ssim", "mae") else f"{value:.2f}"


def _print_compare(console: Console, old: Path, new: Path) -> None:
    rows = compare(old, new)
    table = Table(title=f"{new} minus {old}")
    for column in ("category", "method", "metric", "old", "new", "difference", ""):
        table.add_column(column, justify="right" if column in ("old", "new", "difference") else "left")
    for row in rows:
        verdict = ("[green]better[/]" if row["better"] else "[red]worse[/]" if row["worse"] else
                   "missing" if row["difference"] is None else "same")
        difference = row["difference"]
        table.add_row(row["category"], row["method"], row["metric"], _cell(row["metric"], row["old"]),
                      _cell(row["metric"], row["new"]),
                      "n/a" if difference is None else f"{difference:+.4f}" if row["metric"] in ("ssim", "mae")
                      else f"{difference:+.2f}", verdict)
    console.print(table)
    better = sum(1 for r in rows if r["better"])
    worse = sum(1 for r in rows if r["worse"])
    console.print(f"{better} numbers better, {worse} worse, {len(rows) - better - worse} same or missing.")
    for warning in comparability(old, new):
        console.print(f"[yellow]warning:[/] {warning}: the means cover different work", highlight=False)


def _print_summary(console: Console, result: dict) -> None:
    methods = result["meta"]["methods"]
    table = Table(title="PSNR dB / ΔE2000 per category")
    table.add_column("category")
    for method in methods:
        table.add_column(method, justify="right")
    for name, by_method in result["summary"].items():
        table.add_row(name, *[f"{_cell('psnr', by_method[m]['psnr'])} / {_cell('delta_e', by_method[m]['delta_e'])}"
                              for m in methods])
    console.print(table)


@app.command()
def main_command(
    data: Annotated[Path | None, typer.Option(
        "--data", help="Folder of ground-truth photos (searched recursively), or of old photos with "
        "--no-reference. Never modified.", show_default=False)] = None,
    weights: Annotated[list[Path] | None, typer.Option(
        "--weights", help="Generator weights to evaluate; repeat for several (e.g. MSE pretrain then GAN: the "
        "report compares each later one with the first). Default: the shipped model if one is installed, "
        "else the baselines only.", show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Run seed; each (photo, category) mixes in its "
                                      "own.")] = 0,
    out: Annotated[Path, typer.Option("--out", help="Report folder: report.md, metrics.json, sheets/.")] = Path(
        "eval_report"),
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N photos (sorted by path).",
                                              show_default=False)] = None,
    categories: Annotated[str | None, typer.Option(
        "--categories", help=f"Comma-separated subset of: {', '.join(CATEGORIES)}.", show_default=False)] = None,
    max_side: Annotated[int, typer.Option(
        "--max-side", min=32, help="Scale ground truth down (area filter) so its long side is at most PX before "
        "degrading: one render-size network pass per restoration (two for a suspected negative).")] = DEFAULT_MAX_SIDE,
    no_reference: Annotated[bool, typer.Option(
        "--no-reference", help="Photos without ground truth: contact sheets input | each model, no metrics.")
    ] = False,
    render_factor: Annotated[int | None, typer.Option(
        "--render-factor", min=1, help="Restorer render size in 16 px units (default: the CLI's).",
        show_default=False)] = None,
    saturation: Annotated[float, typer.Option(
        "--saturation", min=0.0, max=4.0, help="Scale of the colours given to black-and-white photos, as the "
        "restore command's option.")] = 1.0,
    device: Annotated[str, typer.Option("--device", help="Where the network runs: auto (CUDA if available), cpu "
                                        "or cuda; as the restore command.")] = "auto",
    workers: Annotated[int, typer.Option("--workers", min=1, help="Threads for degradation, the classical "
                                         "pipeline and metrics (the network runs beside them).")] = 2,
    detector: Annotated[Path | None, typer.Option(
        "--detector", help="Damage detector weights, as restore --detector (default: the shipped one): to "
        "measure a new detector against the report of the shipped one.", show_default=False)] = None,
    no_detector: Annotated[bool, typer.Option(
        "--no-detector", help="Restore without the damage detector, as restore --no-detector (to measure it).")
    ] = False,
    no_denoiser: Annotated[bool, typer.Option(
        "--no-denoiser", help="Restore without the denoiser, as restore --no-denoiser (to measure it).")
    ] = False,
    update_card: Annotated[bool, typer.Option(
        "--update-card", help="Write the results into the JSON card beside each --weights file (its own row "
        "and both baselines): the model card's numbers come from this command, never typed by hand.")] = False,
    compare_paths: Annotated[tuple[Path, Path] | None, typer.Option(
        "--compare", help="Print the differences between two metrics.json files (OLD NEW) and exit.",
        show_default=False)] = None,
) -> None:
    """Score restorations per degradation category against the input and a classical pipeline."""
    console = Console()
    if compare_paths is not None:
        try:
            _print_compare(console, *compare_paths)
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="--compare") from None
        return
    if data is None:
        raise typer.BadParameter("give --data DIR (or --compare OLD NEW)", param_hint="--data")
    weight_files = list(weights or [])
    if not weight_files:
        from restore.weights import default_weights_path

        if default_weights_path().is_file():
            weight_files = [default_weights_path()]
            console.print(f"no --weights: evaluating the shipped model {weight_files[0]}")
        elif no_reference:
            raise typer.BadParameter("no model installed: pass --weights FILE", param_hint="--weights")
        else:
            console.print("no --weights and no shipped model: baselines only")
    for path in weight_files:
        if not path.is_file():
            # a plain line, like the other errors: typer's error panel may cut a long path at the terminal width
            console.print(f"[red]error:[/] {path}: weights file not found", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2)
    try:
        names = None if categories is None else categories.split(",")
        with _progress(console) as progress:
            task = progress.add_task("restore-eval", total=None, what="loading")

            def report(done: int, total: int, what: str) -> None:
                progress.update(task, completed=done, total=total, what=what[-48:])

            if no_reference:
                result = evaluate_no_reference(data, weight_files, out_dir=out, limit=limit, max_side=max_side,
                                               device=device, render_factor=render_factor, saturation=saturation,
                                               find_damage=not no_detector, denoise=not no_denoiser,
                                               progress=report, detector=detector)
            else:
                result = evaluate(data, weight_files, seed=seed, out_dir=out, limit=limit, categories=names,
                                  max_side=max_side, device=device, render_factor=render_factor,
                                  saturation=saturation, workers=workers, find_damage=not no_detector,
                                  denoise=not no_denoiser, progress=report, detector=detector)
    except ValueError as error:  # bad folder, unknown category, unreadable image or weights: one line
        console.print(f"[red]error:[/] {error}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None
    if not no_reference:
        _print_summary(console, result)
        if update_card:
            for path, label in zip(weight_files, model_labels(weight_files)):
                record_in_card(result, path, label)
                console.print(f"evaluation written into the card of {path}", highlight=False, soft_wrap=True)
    meta = result["meta"]
    console.print(f"{meta['photos']} photos in {meta['seconds']} s; report: {out / 'report.md'}, numbers: "
                  f"{out / 'metrics.json'}, sheets: {out / 'sheets'}")


def main() -> None:
    app()
