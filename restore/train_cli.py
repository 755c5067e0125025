"""`restore-train`: run one training stage from a TOML config (a thin layer over `restore.train`).

    restore-train generator --config restore/configs/generator.toml --data ../shared/data/train --out runs/gen
    restore-train critic    --config restore/configs/critic.toml    --data ../shared/data/train --out runs/critic \
        --generator runs/gen/checkpoints/generator_step0001000.pth
    restore-train gan       --config restore/configs/gan.toml       --data ../shared/data/train --out runs/gan \
        --generator runs/gen/checkpoints/... --critic runs/critic/checkpoints/...
    restore-train detector  --data ../shared/data/train --out runs/detector     # the damage detector
    restore-train denoiser  --data ../shared/data/train --out runs/denoiser     # the full-resolution denoiser

Multi-GPU (or multi-process CPU): `torchrun --nproc_per_node N -m restore.train_cli generator ...`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import torch.distributed as dist
import typer
from fastai.torch_core import rank_distrib
from rich.console import Console
from rich.table import Table

from restore.config import load_config
from restore.train import (
    STAGE_CONFIGS,
    TrainResult,
    train_critic,
    train_denoiser,
    train_detector,
    train_gan,
    train_generator,
)

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train the restoration model: generator, then critic, then GAN.")
console = Console()

ConfigOption = Annotated[Path | None, typer.Option("--config", help="TOML config for the stage "
                                                      "(default: the packaged restore/configs/<stage>.toml)")]
DataOption = Annotated[Path, typer.Option("--data", help="clean photos (degraded on the fly) or a `degrade` "
                                          "output folder with input/ and target/")]
OutOption = Annotated[Path | None, typer.Option("--out", help="output folder (default runs/<stage>)")]
ResumeOption = Annotated[Path | None, typer.Option("--resume", help="checkpoint (.pth) to continue from")]
SizeOption = Annotated[int | None, typer.Option("--size", help="crop size in px (multiple of 32); "
                                                   "for gan: a single progressive-resizing size")]
BsOption = Annotated[int | None, typer.Option("--bs", help="batch size")]
EpochsOption = Annotated[int | None, typer.Option("--epochs", help="epochs (gan: per size)")]
StepsOption = Annotated[int | None, typer.Option("--max-steps", help="stop after this many optimizer steps "
                                                    "(gan: per size)")]
EveryOption = Annotated[int | None, typer.Option("--checkpoint-every", help="steps between checkpoints")]
SmallInitOption = Annotated[Path | None, typer.Option("--init", help="weights to fine-tune (.pth checkpoint "
                                                      "of the stage or exported .safetensors), fresh schedule")]


def _default_config(stage: str) -> Path:
    return Path(__file__).resolve().parent / "configs" / f"{stage}.toml"


def _load(stage: str, config: Path | None, **overrides):
    try:
        return load_config(STAGE_CONFIGS[stage], config or _default_config(stage), **overrides)
    except (ValueError, TypeError) as error:
        raise typer.BadParameter(str(error)) from None


def _report(result: TrainResult) -> None:
    if rank_distrib() != 0:
        return
    table = Table(title=f"{result.stage} stage")
    columns = list(dict.fromkeys(k for row in result.history for k in row))
    for column in columns:
        table.add_column(column)
    for row in result.history:
        table.add_row(*[f"{row[c]:.4f}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns])
    console.print(table)
    for key in ("accuracy", "f1", "psnr", "generator_steps", "critic_steps", "sizes"):
        if key in result.extra:
            console.print(f"{key}: {result.extra[key]}")
    line = f"checkpoint: {result.checkpoint} (step {result.step})"
    if result.exported is not None:
        line += f"; exported weights: {result.exported}"
    console.print(line, soft_wrap=True)  # unwrapped, so the paths can be copied


def _run(function, config, data: Path, out: Path | None, stage: str, resume: Path | None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = function(config, data_dir=data, out_dir=out or Path("runs") / stage, resume=resume)
    except (ValueError, FileNotFoundError, NotImplementedError) as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        _leave_process_group()
    _report(result)


def _leave_process_group() -> None:
    """Under torchrun, destroy the process group before the interpreter exits.

    Left to interpreter shutdown, gloo's worker threads can outlive Python and the process dies with
    SIGABRT ("terminate called without an active exception") after training has already finished.
    Local to each process (no barrier): a rank that failed must not leave the others waiting.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@app.command()
def generator(
    *, data: DataOption, config: ConfigOption = None, out: OutOption = None, resume: ResumeOption = None,
    size: SizeOption = None, bs: BsOption = None, epochs: EpochsOption = None, max_steps: StepsOption = None,
    checkpoint_every: EveryOption = None,
    encoder_weights: Annotated[Path | None, typer.Option(help="local ResNet state dict for the encoder "
                                                             "(enables the frozen phase)")] = None,
    init: Annotated[Path | None, typer.Option("--init", help="generator weights to fine-tune (.pth checkpoint "
                                              "or shipped .safetensors), with a fresh schedule")] = None,
) -> None:
    """Stage 1: pretrain the U-Net generator with the pixel (MSE) loss."""
    cfg = _load("generator", config, size=size, bs=bs, epochs=epochs, max_steps=max_steps,
                checkpoint_every=checkpoint_every, encoder_weights=str(encoder_weights) if encoder_weights else None,
                init_weights=str(init) if init else None)
    _run(train_generator, cfg, data, out, "generator", resume)


@app.command()
def critic(
    *, data: DataOption, config: ConfigOption = None, out: OutOption = None, resume: ResumeOption = None,
    size: SizeOption = None, bs: BsOption = None, epochs: EpochsOption = None, max_steps: StepsOption = None,
    checkpoint_every: EveryOption = None,
    generator: Annotated[Path | None, typer.Option("--generator", help="generator stage checkpoint")] = None,
    samples: Annotated[int | None, typer.Option("--samples", help="generated training images "
                                                "(default: one per training photo)")] = None,
) -> None:
    """Stage 2: save generator outputs, pretrain the critic on generated vs real (BCE); reports accuracy."""
    cfg = _load("critic", config, size=size, bs=bs, epochs=epochs, max_steps=max_steps,
                checkpoint_every=checkpoint_every, generator_checkpoint=str(generator) if generator else None,
                n_samples=samples)
    _run(train_critic, cfg, data, out, "critic", resume)


@app.command()
def gan(
    *, data: DataOption, config: ConfigOption = None, out: OutOption = None, resume: ResumeOption = None,
    size: SizeOption = None, bs: BsOption = None, epochs: EpochsOption = None, max_steps: StepsOption = None,
    checkpoint_every: EveryOption = None,
    generator: Annotated[Path | None, typer.Option("--generator", help="generator checkpoint")] = None,
    critic: Annotated[Path | None, typer.Option("--critic", help="critic stage checkpoint")] = None,
) -> None:
    """Stage 3: GAN with the adaptive switcher and progressive resizing; exports the generator."""
    base = _load("gan", config)
    cfg = _load("gan", config, epochs_per_size=epochs, max_steps_per_size=max_steps,
                checkpoint_every=checkpoint_every,
                generator_checkpoint=str(generator) if generator else None,
                critic_checkpoint=str(critic) if critic else None,
                sizes=(size,) if size else None,
                batch_sizes=(bs or base.batch_sizes[0],) if size else (tuple([bs] * len(base.sizes)) if bs else None))
    _run(train_gan, cfg, data, out, "gan", resume)


@app.command()
def detector(
    *, data: Annotated[Path, typer.Option("--data", help="clean photos (damage is painted on the fly)")],
    config: ConfigOption = None, out: OutOption = None, resume: ResumeOption = None,
    size: Annotated[int | None, typer.Option("--size", help="crop size in px (multiple of 8)")] = None,
    bs: BsOption = None, epochs: EpochsOption = None, max_steps: StepsOption = None,
    checkpoint_every: EveryOption = None, init: SmallInitOption = None,
) -> None:
    """The damage detector: where cracks, scratches, dust and holes are; reports pixel F1."""
    cfg = _load("detector", config, size=size, bs=bs, epochs=epochs, max_steps=max_steps,
                checkpoint_every=checkpoint_every, init_weights=str(init) if init else None)
    _run(train_detector, cfg, data, out, "detector", resume)


@app.command()
def denoiser(
    *, data: Annotated[Path, typer.Option("--data", help="clean photos (noise is added on the fly)")],
    config: ConfigOption = None, out: OutOption = None, resume: ResumeOption = None,
    size: Annotated[int | None, typer.Option("--size", help="crop size in px (multiple of 8)")] = None,
    bs: BsOption = None, epochs: EpochsOption = None, max_steps: StepsOption = None,
    checkpoint_every: EveryOption = None, init: SmallInitOption = None,
) -> None:
    """The denoiser: gaussian noise and film grain off photos at full resolution; reports PSNR."""
    cfg = _load("denoiser", config, size=size, bs=bs, epochs=epochs, max_steps=max_steps,
                checkpoint_every=checkpoint_every, init_weights=str(init) if init else None)
    _run(train_denoiser, cfg, data, out, "denoiser", resume)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
