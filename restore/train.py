"""The three training stages on stock fastai: generator pretrain, critic pretrain, GAN.

Each stage has a frozen config dataclass (loadable from TOML with `restore.config.load_config`) and one
function that runs it: `train_generator`, `train_critic`, `train_gan`; beside them the two small networks
inference also runs, `train_detector` (where the damage is) and `train_denoiser` (noise at full resolution). Every stage counts optimizer steps
globally across its phases (frozen/unfrozen, or one phase per progressive-resizing size), writes a checkpoint
every `checkpoint_every` steps plus one at the end (rank 0 only), with the resolved config as JSON beside it,
and resumes from a checkpoint at the saved step with the learning-rate schedule where it was.

Under `torchrun` all three stages run data-parallel through fastai's `distrib_ctx`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pickle
import platform
import time
import zipfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
import torch.nn.functional as F
from fastai.callback.channelslast import ChannelsLast
from fastai.callback.core import Callback, CancelFitException, CancelTrainException
from fastai.learner import Learner
from fastai.losses import L1LossFlat, MSELossFlat
from fastai.optimizer import Adam
from fastai.torch_core import get_model, num_distrib, rank_distrib
from fastai.vision.gan import (
    AdaptiveGANSwitcher,
    AdaptiveLoss,
    GANDiscriminativeLR,
    GANLearner,
    GANTrainer,
    accuracy_thresh_expand,
)
from PIL import Image
from torch import nn
from torch.utils.data import Dataset
from torchvision.models.vgg import cfgs as vgg_cfgs
from torchvision.models.vgg import make_layers as vgg_make_layers

from degradations.pipeline import PipelineConfig
from degradations.transforms import Grayscale, Jpeg, Negative, Noise
from restore.arch import (
    CriticSpec,
    DenoiserSpec,
    DetectorSpec,
    GeneratorSpec,
    build_critic,
    build_denoiser,
    build_detector,
    build_generator,
    generator_learner,
    unbake_weight_norms,
)
from restore.baselines import DISPLAY_GAMMA, FILM_GAMMA, LATITUDE_RANGE
from restore.config import config_to_dict, from_dict
from restore.data import (
    IDENTITY_TABLE,
    DataOptions,
    dataloaders_from,
    default_device,
    lab_scaled_to_rgb,
    make_damage_datasets,
    make_dataloaders,
    make_datasets,
    make_noise_datasets,
    read_rgb,
    rgb_to_lab_scaled,
)
from restore.imaging import to_tensor, to_uint8
from restore.weights import (
    WeightsError,
    load_denoiser,
    load_detector,
    load_generator,
    save_denoiser,
    save_detector,
    save_weights,
)

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
# What torch.load(weights_only=True) raises for a missing, truncated, foreign or code-carrying file.
_LOAD_ERRORS = (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile)


# ----------------------------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class PixelLossOptions:
    """Generator reconstruction loss: a weighted sum of terms (the generator stage and the GAN's pixel term)."""

    mse_weight: float = 1.0              # MSELossFlat on [-1, 1] images (the design's loss)
    l1_weight: float = 0.0               # L1LossFlat: sharper than MSE, the pix2pix choice
    ssim_weight: float = 0.0             # 1 - SSIM (7x7 window): rewards structure over exact values
    vgg_weight: float = 0.0              # VGG16 feature (perceptual) loss; needs vgg_weights
    vgg_weights: str = ""                # local torchvision VGG16 state dict; nothing is ever downloaded
    vgg_layers: tuple = (3, 8, 15, 22)   # indices in vgg16.features whose outputs are compared (relu1_2..4_3)


@dataclass(frozen=True)
class GeneratorConfig(DataOptions, PixelLossOptions):
    spec: GeneratorSpec = GeneratorSpec()  # noqa: RUF009 (frozen) the U-Net: [spec] table in TOML
    encoder_weights: str = ""            # local ResNet state dict; "" = random encoder: no frozen phase, which
                                         # only makes sense with a pretrained encoder, so training is unfrozen
    init_weights: str = ""               # start from these generator weights (a .pth checkpoint or exported
                                         # .safetensors) with a fresh schedule: fine-tuning, not resuming
    freeze_epochs: int = 1               # epochs with the encoder frozen (only with encoder_weights)
    epochs: int = 4                      # epochs with the whole network trained
    max_steps: int = 0                   # stop after this many optimizer steps in all (0: no cap)
    lr: float = 1e-3                     # peak one-cycle learning rate (decoder)
    encoder_lr_div: float = 100.0        # unfrozen with encoder_weights: encoder lr = lr / this (discriminative)
    wd: float = 1e-3                     # weight decay
    checkpoint_every: int = 500          # optimizer steps between checkpoints (a final one is always written)
    mixed_precision: bool = True         # bf16 autocast on CUDA (fp16 if bf16 is unsupported); ignored on CPU
    export: bool = True                  # write generator.safetensors (fp16) + card at the end


@dataclass(frozen=True)
class CriticConfig(DataOptions):
    generator_checkpoint: str = ""       # generator stage checkpoint (.pth) or exported .safetensors (required)
    critic: CriticSpec = CriticSpec()  # noqa: RUF009 (frozen) gan_critic or PatchGAN: [critic] in TOML
    n_samples: int = 0                   # generated training images (0: one per training item)
    epochs: int = 2                      # epochs over the generated/real images
    max_steps: int = 0                   # stop after this many optimizer steps (0: no cap)
    lr: float = 1e-3                     # peak one-cycle learning rate
    wd: float = 1e-3                     # weight decay
    checkpoint_every: int = 500          # optimizer steps between checkpoints (a final one is always written)
    mixed_precision: bool = True         # bf16 autocast on CUDA; ignored on CPU


@dataclass(frozen=True)
class GanConfig(DataOptions, PixelLossOptions):
    generator_checkpoint: str = ""       # generator stage checkpoint or .safetensors; "" = random generator
    critic_checkpoint: str = ""          # critic stage checkpoint; "" = random critic (given critic spec)
    spec: GeneratorSpec = GeneratorSpec()  # noqa: RUF009 (frozen) when no generator checkpoint is given
    critic: CriticSpec = CriticSpec()  # noqa: RUF009 (frozen) when the critic checkpoint has no spec
    sizes: tuple = (64, 128, 192)        # progressive resizing: one phase per size (replaces `size`)
    batch_sizes: tuple = (16, 8, 4)      # batch size per size (replaces `bs`)
    epochs_per_size: int = 1             # epochs per size
    max_steps_per_size: int = 0          # cap on optimizer steps per size (0: no cap)
    critic_thresh: float = 0.65          # AdaptiveGANSwitcher: train the critic until its loss < this
    weights_gen: tuple = (1.0, 50.0)     # (adversarial, pixel): MSE on [-1, 1] is ~0.05 vs BCE ~0.7, so the
                                         # pixel term is scaled up to keep content ahead of texture
    lr: float = 1e-4                     # constant learning rate (a one-cycle momentum schedule breaks beta1=0)
    betas: tuple = (0.0, 0.99)           # Adam (beta1, beta2): low beta1 is the usual GAN setting
    critic_lr_mult: float = 5.0          # GANDiscriminativeLR: critic lr = lr * this
    wd: float = 1e-3                     # weight decay
    checkpoint_every: int = 200          # optimizer steps between checkpoints: pick the last before artifacts
    mixed_precision: bool = True         # bf16 autocast on CUDA; ignored on CPU
    export: bool = True                  # write gan_generator.safetensors (fp16) + card at the end

    def __post_init__(self):
        if len(self.sizes) != len(self.batch_sizes):
            raise ValueError(f"sizes {self.sizes} and batch_sizes {self.batch_sizes} differ in length")


@dataclass(frozen=True)
class DetectorConfig(DataOptions):
    spec: DetectorSpec = DetectorSpec()  # noqa: RUF009 (frozen) the small U-Net: [spec] table in TOML
    size: int = 192                      # crop side (px), a multiple of spec.multiple
    bs: int = 12                         # batch size
    max_zoom: float = 1.6                # crops show 60-100% of the photo's short side: damage at photo scale
    holes_probability: float = 0.85      # share of crops with damage painted on; the rest show what is not damage
    holes_area_range: tuple = (0.003, 0.06)  # damaged share of a damaged crop
    holes_kinds: tuple = ("crack", "crack", "crack", "scratch", "dust", "dust", "blob", "stain", "tear")  # as
                                         # on real old prints: mostly cracks, scratches and dust
    category_weights: tuple = (0.1, 0.05, 0.65, 0.2)  # colour negative, b&w negative, b&w print, colour: mostly
                                         # prints, where the damage must be found (with the default recipe's
                                         # 42.5% negatives the detector missed most cracks on real sepia prints)
    tone_probability: float = 0.5        # share of the prints that are sepia-toned, as many real old ones are
    scan_blur_probability: float = 0.0   # share of crops blurred a little after the damage, as a flatbed scan is
    scan_blur_sigma_range: tuple = (0.4, 1.0)  # (a sigma of 0.8 px and JPEG took the recall of 0.1 on crazed
                                         # prints from 0.79 to 0.17: real cracks on scans are soft)
    pos_weight: float = 3.0              # BCE weight of damage pixels (damage is ~2% of the pixels)
    dice_weight: float = 1.0             # soft-Dice term: the mask's overlap, whatever share of the crop it is
    init_weights: str = ""               # start from these weights (a .pth checkpoint of this stage or
                                         # exported .safetensors) with a fresh schedule: fine-tuning
    epochs: int = 4                      # epochs over the training photos (one fresh crop each)
    max_steps: int = 0                   # stop after this many optimizer steps in all (0: no cap)
    lr: float = 2e-3                     # peak one-cycle learning rate
    wd: float = 1e-4                     # weight decay
    checkpoint_every: int = 500          # optimizer steps between checkpoints (a final one is always written)
    export: bool = True                  # write detector.safetensors (fp16) + card at the end

    def degrade_config(self) -> PipelineConfig:
        """The default degradation recipe with this stage's damage and mix of what the photos are."""
        negative_color, negative_bw, bw, color = self.category_weights
        return PipelineConfig(holes_probability=self.holes_probability, holes_area_range=self.holes_area_range,
                              holes_kinds=self.holes_kinds, negative_color_weight=negative_color,
                              negative_bw_weight=negative_bw, bw_weight=bw, color_weight=color,
                              tone_probability=self.tone_probability,
                              scan_blur_probability=self.scan_blur_probability,
                              scan_blur_sigma_range=self.scan_blur_sigma_range)


@dataclass(frozen=True)
class DenoiserConfig(DataOptions):
    spec: DenoiserSpec = DenoiserSpec()  # noqa: RUF009 (frozen) the small U-Net: [spec] table in TOML
    size: int = 128                      # crop side (px), a multiple of spec.multiple
    bs: int = 16                         # batch size
    max_zoom: float = 5.0                # the short side resized to 1-5 crops: from whole-photo views (as the
                                         # evaluation's 512 px photos) to a scan's own fine detail
    gray_probability: float = 0.3        # share of crops made black-and-white prints (sepia toned as the recipe's)
    noise_probability: float = 0.9       # share with noise added; the rest teach it to leave clean photos alone
    noise_kinds: tuple = ("gaussian", "gaussian", "gaussian", "grain")  # repeat = likelier
    sigma_range: tuple = (1.0, 50.0)     # noise / grain strength, 0..255 units
    monochrome_probability: float = 0.3  # luminance-only noise (else independent per channel)
    jpeg_probability: float = 0.1        # noisy scans saved as JPEG afterwards
    jpeg_quality_range: tuple = (70, 95)
    negative_probability: float = 0.0    # share of crops made scanned film negatives (the noise then on the
                                         # scan), whose loss is taken on the positive their inversion makes
    negative_kinds: tuple = ("color", "color", "color", "bw")   # degradations' Negative kinds; repeat = likelier
    negative_levels: str = "clean"       # the levels a negative's output is inverted with for its loss: "clean"
                                         # (the clean scan's, `positive_mse`), "output" (read from the output
                                         # itself, as inference reads them from the denoised scan: `own_levels_mse`)
                                         # or "both" (the mean of the two losses, `both_levels_mse`)
    init_weights: str = ""               # start from these weights (a .pth checkpoint of this stage or
                                         # exported .safetensors) with a fresh schedule: fine-tuning
    epochs: int = 60                     # epochs over the training photos (one fresh crop each): the shipped run
    max_steps: int = 0                   # stop after this many optimizer steps in all (0: no cap)
    lr: float = 1e-3                     # peak one-cycle learning rate
    wd: float = 1e-4                     # weight decay
    checkpoint_every: int = 250          # optimizer steps between checkpoints (a final one is always written)
    export: bool = True                  # write denoiser.safetensors (fp16) + card at the end

    def __post_init__(self):
        if self.negative_levels not in DENOISER_LOSSES:
            raise ValueError(f"negative_levels must be one of {sorted(DENOISER_LOSSES)}, got {self.negative_levels!r}")

    def recipes(self) -> tuple[A.Compose, A.Compose]:
        """(what the photo is, what is done to it): a clean crop is first maybe made a black-and-white print
        (the target too: the denoiser must not colourize) or a scanned negative, then maybe given noise or
        grain, maybe JPEG."""
        negatives = [Negative(kind=kind) for kind in self.negative_kinds]
        photo = A.Compose([Grayscale(p=self.gray_probability), A.OneOf(negatives, p=self.negative_probability)])
        noise = A.Compose([
            Noise(kinds=self.noise_kinds, sigma_range=self.sigma_range,
                  monochrome_probability=self.monochrome_probability, p=self.noise_probability),
            Jpeg(quality_range=self.jpeg_quality_range, p=self.jpeg_probability),
        ])
        return photo, noise


STAGE_CONFIGS = {"generator": GeneratorConfig, "critic": CriticConfig, "gan": GanConfig,
                 "detector": DetectorConfig, "denoiser": DenoiserConfig}


@dataclass
class TrainResult:
    """What a stage produced. `history` has one row per epoch: phase, size, train/valid loss, metrics."""

    stage: str
    checkpoint: Path | None
    step: int
    history: list[dict[str, Any]]
    learner: Learner | None = field(default=None, repr=False)
    exported: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ losses
def ssim_loss(output: torch.Tensor, target: torch.Tensor, window: int = 7) -> torch.Tensor:
    """1 - mean SSIM over 3-channel images in [-1, 1] (uniform window: cheap and differentiable)."""
    c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2  # data range 2
    pool = partial(F.avg_pool2d, kernel_size=window, stride=1, padding=window // 2, count_include_pad=False)
    mu_x, mu_y = pool(output), pool(target)
    var_x = pool(output * output) - mu_x**2
    var_y = pool(target * target) - mu_y**2
    cov = pool(output * target) - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return 1.0 - ssim.mean()


def load_vgg16_features(weights_path: str | Path, layers: tuple = (3, 8, 15, 22)) -> nn.Sequential:
    """`vgg16.features` up to max(layers), loaded from a local state dict (full VGG16 or features only).

    Only the convolutions that the loss uses must be present, so a truncated file is enough.
    """
    path = Path(weights_path)
    features = vgg_make_layers(vgg_cfgs["D"], batch_norm=False)[: max(layers) + 1]
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except _LOAD_ERRORS as error:
        raise ValueError(f"{path}: not a loadable VGG16 state dict ({type(error).__name__})") from None
    state = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}
    needed = features.state_dict()
    missing = [k for k in needed if k not in state]
    if missing:
        raise ValueError(f"{path}: VGG16 weights lack {len(missing)} tensors (e.g. features.{missing[0]})")
    features.load_state_dict({k: state[k] for k in needed})
    for parameter in features.parameters():
        parameter.requires_grad_(False)
    return features.eval()


class VggFeatureLoss(nn.Module):
    """Mean L1 distance between VGG16 feature maps of output and target (RGB in [-1, 1])."""

    def __init__(self, features: nn.Sequential, layers: tuple):
        super().__init__()
        self.features, self.layers = features, set(layers)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def _maps(self, image: torch.Tensor) -> list[torch.Tensor]:
        x = ((image + 1.0) / 2.0 - self.mean) / self.std  # VGG was trained on ImageNet-normalised [0, 1]
        maps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.layers:
                maps.append(x)
        return maps

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.features.eval()  # never let the Learner's train() flip the frozen extractor
        with torch.no_grad():
            target_maps = self._maps(target)
        return sum(F.l1_loss(o, t) for o, t in zip(self._maps(output), target_maps)) / len(target_maps)


class PixelLoss(nn.Module):
    """Weighted MSE (+ L1, SSIM, VGG feature) loss between generator output and target."""

    def __init__(self, options: PixelLossOptions, output_space: str = "rgb"):
        super().__init__()
        self.options = options
        self.mse, self.l1 = MSELossFlat(), L1LossFlat()
        self.vgg = None
        if options.vgg_weight > 0:
            if not options.vgg_weights:
                raise ValueError("vgg_weight > 0 needs vgg_weights: a local VGG16 state dict (nothing is downloaded)")
            if output_space != "rgb":
                raise ValueError("the VGG feature loss compares RGB images; use it with output_space='rgb'")
            self.vgg = VggFeatureLoss(load_vgg16_features(options.vgg_weights, options.vgg_layers),
                                      options.vgg_layers)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # Losses in fp32 even under autocast: SSIM's variance terms lose precision in bf16.
        output, target = output.float(), target.float()
        o = self.options
        loss = output.new_zeros(())
        if o.mse_weight:
            loss = loss + o.mse_weight * self.mse(output, target)
        if o.l1_weight:
            loss = loss + o.l1_weight * self.l1(output, target)
        if o.ssim_weight:
            loss = loss + o.ssim_weight * ssim_loss(output, target)
        if self.vgg is not None:
            loss = loss + o.vgg_weight * self.vgg(output, target)
        return loss


class DamageLoss(nn.Module):
    """BCE on the detector's logits (damage pixels weighted by `pos_weight`) + `dice_weight` x soft Dice."""

    def __init__(self, pos_weight: float = 3.0, dice_weight: float = 1.0):
        super().__init__()
        self.register_buffer("pos_weight", torch.tensor(float(pos_weight)))
        self.dice_weight = float(dice_weight)

    def forward(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits, mask = logits.float(), mask.float()
        loss = F.binary_cross_entropy_with_logits(logits, mask, pos_weight=self.pos_weight)
        if self.dice_weight:
            probability = torch.sigmoid(logits)
            overlap = (probability * mask).sum()
            loss = loss + self.dice_weight * (1.0 - (2.0 * overlap + 1.0) / (probability.sum() + mask.sum() + 1.0))
        return loss


def damage_f1(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Pixel F1 (Dice) of the detector's mask at probability 0.5 against the painted damage, over the batch."""
    found, truth = logits > 0, mask > 0.5
    return (2.0 * (found & truth).sum() + 1e-6) / (found.sum() + truth.sum() + 1e-6)


def through_tables(images: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """Each channel of Nx3xHxW images in [-1, 1] mapped by its Nx3x256 table (the value of each uint8 level, as
    `restore.data.positive_table` gives), interpolated linearly between levels and past the ends (so the
    identity table returns the images exactly, out-of-range values included); differentiable."""
    position = (images + 1.0) * 127.5
    low = position.detach().floor().clamp(0, 254)
    frac = position - low
    index = low.long().flatten(2)
    below = tables.gather(2, index).view_as(images)
    above = tables.gather(2, index + 1).view_as(images)
    return below + (above - below) * frac


def positive_mse(output: torch.Tensor, target: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """The denoiser's loss: MSE of output and clean crop after their tables (a negative's: on its positive,
    where the inversion magnifies what is left of the noise on the scan's dense end; a print's: plain MSE)."""
    tables = tables.float()
    return F.mse_loss(through_tables(output.float(), tables), through_tables(target.float(), tables))


def invert_negatives(scans: torch.Tensor) -> torch.Tensor:
    """Nx3xHxW scans of negatives in [-1, 1] -> the positives `restore.baselines.negative_lut` makes of them
    (default settings: film base, density stretch and latitude from each scan's own percentiles), in [-1, 1],
    differentiable through the levels as well as the pixels (`torch.quantile`): what inference does to the
    denoised scan, as a function the loss can follow."""
    linear = (((scans.float() + 1.0) * 0.5).clamp(0.0, 1.0) ** DISPLAY_GAMMA).flatten(2)
    base = torch.quantile(linear, 0.995, dim=2, keepdim=True).clamp_min(1e-4)
    density = -torch.log10((linear / base).clamp(1e-4, 1.0))
    low = torch.quantile(density, 0.005, dim=2, keepdim=True)
    scale = (torch.quantile(density, 0.995, dim=2, keepdim=True) - low).clamp_min(1e-6)
    normalised = ((density - low) / scale).clamp(0.0, 1.0)
    k = (scale.mean(dim=1, keepdim=True) / FILM_GAMMA).clamp(*LATITUDE_RANGE)
    positive = (10.0 ** (k * normalised) - 1.0) / (10.0**k - 1.0)
    return (positive.clamp_min(1e-6) ** (1.0 / DISPLAY_GAMMA) * 2.0 - 1.0).view_as(scans)


def own_levels_mse(output: torch.Tensor, target: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """The denoiser's loss with a negative's output inverted by the levels read from the output itself
    (`invert_negatives`, as inference inverts the denoised scan) and its clean crop by the clean scan's table:
    MSE of the positive inference would make against the clean scan's positive. A negative is a crop whose table
    is not the identity; a print's or colour photo's loss is plain MSE, as `positive_mse`."""
    tables = tables.float()
    identity = torch.from_numpy(IDENTITY_TABLE).to(tables.device)
    negative = ~(tables == identity).flatten(1).all(dim=1)
    mapped = output.float().clone()
    if negative.any():
        mapped[negative] = invert_negatives(output[negative])
    return F.mse_loss(mapped, through_tables(target.float(), tables))


def both_levels_mse(output: torch.Tensor, target: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """The mean of `positive_mse` and `own_levels_mse`: the output's own levels, as inference inverts it, with
    the clean scan's levels anchoring what those levels cannot see (a crop's levels absorb a shift or stretch of
    the whole crop, a photo's do not: its levels come from the whole scan)."""
    return 0.5 * (positive_mse(output, target, tables) + own_levels_mse(output, target, tables))


def own_levels_psnr(output: torch.Tensor, target: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) of what `own_levels_mse` compares (a negative's output inverted with its own levels), over the
    batch: the validation figure of a denoiser trained with those levels."""
    mse = own_levels_mse(output.float().clamp(-1, 1), target, tables)
    return 10.0 * torch.log10(4.0 / mse.clamp_min(1e-10))


DENOISER_LOSSES = {"clean": positive_mse, "output": own_levels_mse, "both": both_levels_mse}


def denoised_psnr(output: torch.Tensor, target: torch.Tensor, tables: torch.Tensor | None = None) -> torch.Tensor:
    """PSNR (dB) of the denoiser's output against the clean crop, both in [-1, 1], over the batch; with
    `tables`, of what they map to (a negative's positive)."""
    output, target = output.float().clamp(-1, 1), target.float()
    if tables is not None:
        output, target = through_tables(output, tables.float()), through_tables(target, tables.float())
    mse = F.mse_loss(output, target)
    return 10.0 * torch.log10(4.0 / mse.clamp_min(1e-10))


# --------------------------------------------------------------------------------- steps and checkpoints
def _plain(value: Any) -> Any:
    """Optimizer state as plain lists/dicts, so `torch.load(weights_only=True)` can read it back."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "L":
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def hardware() -> dict[str, Any]:
    info = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "processes": max(1, num_distrib())}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


class StepCheckpoints(Callback):
    """Global step counter across phases: resumes mid-schedule, checkpoints every N steps, stops at the cap.

    Runs after TrainEvalCallback (which resets the counters) and after Recorder (which must log the last
    batch before training is cut short).
    """

    order = 55

    def __init__(self, stage: str, out_dir: Path, every: int, describe: Callable[[], dict], elapsed_s: float = 0):
        self.stage, self.out_dir, self.every, self.describe = stage, Path(out_dir), every, describe
        self.offset, self.local_start, self.local_steps = 0, 0, 0
        self.last_path: Path | None = None
        self.last_step = -1
        self.elapsed_before, self.started = elapsed_s, time.monotonic()

    def phase(self, offset: int, local_start: int, local_steps: int) -> None:
        self.offset, self.local_start, self.local_steps = offset, local_start, local_steps

    @property
    def step(self) -> int:
        return self.offset + self.learn.train_iter

    def before_fit(self):
        self.learn.train_iter = self.local_start

    def before_train(self):
        if self.learn.train_iter >= self.local_steps:
            raise CancelFitException()

    def before_batch(self):
        # The schedule (ParamScheduler, order 60, reads pct_train in before_batch) spans this phase's planned
        # steps, not whole epochs: a step cap still ends the one cycle, and a resumed run picks it up where
        # the checkpoint left it.
        if self.training:
            self.learn.pct_train = min(1.0, self.learn.train_iter / max(1, self.local_steps))

    def after_batch(self):
        if not self.training:
            return
        if self.every and self.step % self.every == 0:
            self.save()
        if self.learn.train_iter >= self.local_steps:
            raise CancelTrainException()  # still validate this epoch

    def after_cancel_train(self):
        # Recorder drops the train loss of a cancelled epoch; ours is a planned stop, so keep logging it.
        if hasattr(self.learn, "recorder"):
            self.learn.recorder.cancel_train = False

    def save(self) -> Path | None:
        if self.step == self.last_step:
            return self.last_path
        self.last_step = self.step
        if rank_distrib() != 0:  # one copy of the weights: rank 0 writes, the others only train
            return None
        directory = self.out_dir / CHECKPOINT_DIR
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.stage}_step{self.step:07d}.pth"
        state = {"model": get_model(self.learn.model).state_dict(), "step": self.step, "stage": self.stage}
        if self.learn.opt is not None:
            state["opt"] = _plain(self.learn.opt.state_dict())
        tmp = path.with_name(path.name + ".tmp")
        torch.save(state, tmp)
        tmp.replace(path)
        elapsed = self.elapsed_before + time.monotonic() - self.started
        meta = {"stage": self.stage, "step": self.step, "elapsed_s": round(elapsed, 1),
                "hardware": hardware(), **self.describe()}
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")
        self.last_path = path
        log.info("checkpoint %s", path)
        return path


@dataclass
class _Phase:
    name: str
    size: int
    bs: int
    epochs: int
    max_steps: int                       # 0: no cap
    setup: Callable[[Learner], None] | None = None
    lr: Any = None


def _read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state, meta) of a checkpoint written by StepCheckpoints; never unpickles code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except _LOAD_ERRORS as error:
        first = (str(error).strip().splitlines() or [""])[0][:160]
        raise ValueError(f"{path}: not a training checkpoint ({type(error).__name__}: {first})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path}: not a training checkpoint (no 'model' entry)")
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else {}
    return state, meta


def _resume(learn: Learner, path: str | Path, stage: str) -> tuple[int, float]:
    """Load model and optimizer state; returns (step, elapsed seconds so far)."""
    state, meta = _read_checkpoint(path)
    if state.get("stage", stage) != stage:
        raise ValueError(f"{path}: a {state.get('stage')} checkpoint cannot resume the {stage} stage")
    get_model(learn.model).load_state_dict(state["model"])
    if "opt" in state:
        from fastcore.foundation import L

        learn.create_opt()
        learn.opt.load_state_dict({"state": state["opt"]["state"], "hypers": L(state["opt"]["hypers"])})
    log.info("resuming %s from %s at step %d", stage, path, state["step"])
    return int(state["step"]), float(meta.get("elapsed_s", 0.0))


@contextmanager
def _distributed(learn: Learner):
    """fastai's `distrib_ctx` when launched by torchrun with more than one process, else nothing."""
    if num_distrib() <= 1:
        yield learn
        return
    from fastai.distributed import DistributedDL, DistributedTrainer  # noqa: F401 (patches Learner)

    cuda = torch.cuda.is_available()
    # SyncBatchNorm needs CUDA; on CPU (gloo) each process keeps its own batch statistics.
    extra = {}
    gan = isinstance(learn, GANLearner)
    if gan:
        from accelerate import DistributedDataParallelKwargs

        # Each GAN step trains either the generator or the critic, so half the parameters get no gradient:
        # DistributedDataParallel must be told, or it waits for them.
        extra["kwargs_handlers"] = [DistributedDataParallelKwargs(find_unused_parameters=True)]
    with learn.distrib_ctx(sync_bn=cuda, cpu=not cuda, **extra):
        if not cuda:
            trainer = next(cb for cb in learn.cbs if isinstance(cb, DistributedTrainer))
            trainer._wrap_dl = partial(_wrap_dl_gloo, trainer)
        if gan:
            with learn.added_cbs([_SwitchThroughWrapper(), _RankAveragedLoss()]):
                yield learn
        else:
            yield learn


class _RankAveragedLoss(Callback):
    """Average the batch loss over the processes before AdaptiveGANSwitcher reads it.

    The switcher decides from the loss it sees; with per-process losses the processes would switch at
    different steps, run different halves of the GAN, and their gradient exchanges would no longer match.
    """

    order = -1  # before AdaptiveGANSwitcher (order 0) in after_batch

    def after_batch(self):
        if not self.training:
            return
        import torch.distributed as dist

        loss = self.learn.loss.detach().clone()
        dist.all_reduce(loss)
        self.learn.loss = loss / dist.get_world_size()


class _SwitchThroughWrapper(Callback):
    """Let fastai's GANTrainer reach `GANModule.switch` after DistributedTrainer has wrapped the model.

    GANTrainer calls `learn.model.switch(...)` at every epoch and switch; DistributedDataParallel does not
    forward attribute lookups to the module it wraps.
    """

    order = 12  # right after DistributedTrainer (11) has wrapped the model

    def before_fit(self):
        wrapped = self.learn.model
        if not hasattr(wrapped, "switch") and hasattr(getattr(wrapped, "module", None), "switch"):
            wrapped.switch = wrapped.module.switch


def _wrap_dl_gloo(trainer, dl):
    from fastai.distributed import DistributedDL

    if isinstance(dl, DistributedDL):
        return dl
    wrapped = DistributedDL(dl, device=torch.device("cpu"))
    # fastai broadcasts the shuffled indices through a CUDA tensor (NCCL); gloo takes CPU tensors.
    wrapped._broadcast = _broadcast_cpu
    return wrapped


def _broadcast_cpu(values, rank):
    tensor = torch.tensor(values, dtype=torch.long)
    torch.distributed.broadcast(tensor, rank)
    return tensor.tolist()


def _mixed_precision(learn: Learner, enabled: bool) -> None:
    if enabled and torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            learn.to_bf16()
        else:
            learn.to_fp16()


def _history_rows(learn: Learner, phase: _Phase) -> list[dict[str, Any]]:
    names = [n for n in learn.recorder.metric_names[1:] if n != "time"]
    rows = []
    for values in learn.recorder.values:
        row = {"phase": phase.name, "size": phase.size}
        row.update({n: (float(v) if v is not None else None) for n, v in zip(names, values)})
        rows.append(row)
    return rows


def _fit_phases(learn: Learner, phases: list[_Phase], make_dls: Callable[[int, int], Any], fit: Callable,
                checkpoints: StepCheckpoints, start_step: int = 0, max_steps: int = 0,
                on_phase: Callable[[_Phase], None] | None = None) -> list[dict[str, Any]]:
    """Run each phase from the global step `start_step` on; returns the per-epoch history."""
    history: list[dict[str, Any]] = []
    offset = 0
    current = None
    with learn.added_cbs(checkpoints), _distributed(learn):
        for phase in phases:
            if max_steps and offset >= max_steps:
                break
            if current != (phase.size, phase.bs):
                learn.dls = make_dls(phase.size, phase.bs)
                current = (phase.size, phase.bs)
            # Under torchrun each process sees its share of every batch list (fastai's DistributedDL).
            n_iter = -(-len(learn.dls.train) // max(1, num_distrib()))
            steps = phase.epochs * n_iter
            if phase.max_steps:
                steps = min(steps, phase.max_steps)
            if max_steps:
                steps = min(steps, max_steps - offset)
            if start_step >= offset + steps:  # finished before the checkpoint we resume from
                offset += steps
                continue
            if phase.setup is not None:
                phase.setup(learn)
            if on_phase is not None:
                on_phase(phase)
            checkpoints.phase(offset, max(0, start_step - offset), steps)
            fit(learn, math.ceil(steps / n_iter), phase.lr)
            history += _history_rows(learn, phase)
            offset += steps
        checkpoints.save()  # the final weights, whatever the checkpoint interval
    return history


def _elapsed_describe(config, data_dir, extra: Callable[[], dict] | None = None) -> Callable[[], dict]:
    def describe() -> dict:
        meta = {"config": config_to_dict(config), "data_dir": str(data_dir)}
        if extra is not None:
            meta.update(extra())
        return meta

    return describe


# ------------------------------------------------------------------------------------------ the stages
def train_generator(config: GeneratorConfig = GeneratorConfig(), data_dir: str | Path = ".",
                    out_dir: str | Path = "runs/generator", resume: str | Path | None = None,
                    device: str | torch.device | None = None) -> TrainResult:
    """Stage 1: the U-Net generator with the pixel loss (MSE by default), one-cycle schedule.

    With `encoder_weights` the encoder first trains frozen for `freeze_epochs`, then everything with
    discriminative learning rates; with a random encoder it trains unfrozen from the start.
    """
    out_dir = Path(out_dir)
    spec = config.spec
    target_space = spec.output_space
    make_dls = partial(_make_dls, data_dir, config, device, target_space)
    dls = make_dls(config.size, config.bs)
    pretrained = bool(config.encoder_weights)
    learn = generator_learner(dls, spec, encoder_weights=config.encoder_weights or None,
                              loss_func=PixelLoss(config, target_space), wd=config.wd, path=out_dir,
                              model_dir=CHECKPOINT_DIR)
    _mixed_precision(learn, config.mixed_precision)
    phases = []
    if pretrained and config.freeze_epochs > 0:
        phases.append(_Phase("frozen", config.size, config.bs, config.freeze_epochs, 0,
                             setup=lambda lrn: lrn.freeze(), lr=config.lr))
    unfrozen_lr = slice(config.lr / config.encoder_lr_div, config.lr) if pretrained else config.lr
    phases.append(_Phase("unfrozen", config.size, config.bs, config.epochs, 0,
                         setup=lambda lrn: lrn.unfreeze(), lr=unfrozen_lr))
    if config.init_weights and not resume:
        _load_init_weights(get_model(learn.model), config.init_weights)
    start_step, elapsed = _resume(learn, resume, "generator") if resume else (0, 0.0)
    describe = _elapsed_describe(config, data_dir, lambda: {"generator_spec": dataclasses.asdict(spec)})
    checkpoints = StepCheckpoints("generator", out_dir, config.checkpoint_every, describe, elapsed)
    history = _fit_phases(learn, phases, make_dls, _fit_one_cycle, checkpoints, start_step, config.max_steps)
    result = TrainResult("generator", checkpoints.last_path, checkpoints.last_step, history, learn,
                         extra={"generator_spec": spec})
    if config.export and rank_distrib() == 0:
        result.exported = export_generator(result, out_dir / "generator.safetensors")
    return result


def _load_init_weights(model: nn.Module, path: str | Path) -> None:
    """Load a generator checkpoint (.pth) or exported weights (.safetensors) into `model`."""
    source, _ = load_generator_checkpoint(path)
    try:
        model.load_state_dict(source.state_dict())
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise WeightsError(f"{path}: does not fit the generator being trained ({first})") from None
    log.info("generator initialised from %s", path)


def _fit_one_cycle(learn: Learner, n_epoch: int, lr) -> None:
    learn.fit_one_cycle(n_epoch, lr)


def _fit_constant(learn: Learner, n_epoch: int, lr) -> None:
    learn.fit(n_epoch, lr)


def _make_dls(data_dir, options: DataOptions, device, target_space: str, size: int, bs: int):
    return make_dataloaders(data_dir, options, size=size, bs=bs, device=device, target_space=target_space)


def load_generator_checkpoint(path: str | Path, spec: GeneratorSpec | None = None
                              ) -> tuple[nn.Module, GeneratorSpec]:
    """A trainable generator from a stage checkpoint (.pth, generator or GAN) or exported weights.

    Exported `.safetensors` weights have their norms baked; they are unbaked (`unbake_weight_norms`), so the
    network trains under the same spectral/weight norm as the run that made it.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        baked, card = load_generator(path, "cpu", spec)
        spec = from_dict(GeneratorSpec, card["generator_spec"])
        model = build_generator(spec)
        model.load_state_dict(unbake_weight_norms(model, baked.state_dict()))
        return model.train(), spec
    state, meta = _read_checkpoint(path)
    weights = state["model"]
    if any(k.startswith("generator.") for k in weights):  # a GAN checkpoint holds generator and critic
        weights = {k.removeprefix("generator."): v for k, v in weights.items() if k.startswith("generator.")}
    if spec is None:
        spec = from_dict(GeneratorSpec, meta["generator_spec"]) if "generator_spec" in meta else GeneratorSpec()
    model = build_generator(spec)
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise WeightsError(f"{path}: does not fit the {spec.encoder} generator ({first})") from None
    return model, spec


def export_generator(source: TrainResult | Learner | str | Path, path: str | Path,
                     card: dict[str, Any] | None = None, spec: GeneratorSpec | None = None) -> Path:
    """Shipped weights: fp16 safetensors + JSON card (training config, data, hardware, hours).

    `source` is a TrainResult of the generator or GAN stage, a checkpoint path (.pth), or a Learner (then
    pass `spec`). `card` entries are added to / override the card's automatic ones.
    """
    path = Path(path)
    auto: dict[str, Any] = {"hardware": hardware()}
    if isinstance(source, (str, Path)):
        model, spec = load_generator_checkpoint(source, spec)
        _, meta = _read_checkpoint(source)
        auto.update(training={k: meta[k] for k in ("stage", "step", "config", "data_dir") if k in meta},
                    hours=round(meta.get("elapsed_s", 0.0) / 3600, 4), checkpoint=Path(source).name)
        if "hardware" in meta:
            auto["hardware"] = meta["hardware"]
    else:
        learn = source.learner if isinstance(source, TrainResult) else source
        if isinstance(source, TrainResult):
            spec = spec or source.extra.get("generator_spec")
            if source.checkpoint is not None:
                meta = _read_checkpoint(source.checkpoint)[1]
                auto.update(training={k: meta[k] for k in ("stage", "step", "config", "data_dir") if k in meta},
                            hours=round(meta.get("elapsed_s", 0.0) / 3600, 4), checkpoint=source.checkpoint.name)
        if spec is None:
            raise ValueError("export_generator: pass spec= with a Learner")
        model = get_model(learn.model)
        model = getattr(model, "generator", model)  # GANModule -> its generator
    auto.update(card or {})
    save_weights(model, path, spec, auto, fp16=True)
    log.info("exported %s", path)
    return path


class _CriticImages(Dataset):
    """(image tensor, label) with label 1.0 for real photos and 0.0 for generator outputs."""

    def __init__(self, items: list[tuple[Path, float]], target_space: str):
        self.items, self.target_space = items, target_space

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        path, label = self.items[index]
        image = read_rgb(path)
        tensor = rgb_to_lab_scaled(image) if self.target_space == "lab" else to_tensor(image)
        return tensor, torch.tensor(label)


def _save_generated(generator: nn.Module, dataset, n: int, directory: Path, spec: GeneratorSpec, bs: int,
                    device) -> list[tuple[Path, float]]:
    """Write `n` (generated, real) image pairs as PNG; returns the labelled file list."""
    (directory / "fake").mkdir(parents=True, exist_ok=True)
    (directory / "real").mkdir(parents=True, exist_ok=True)
    to_image = lab_scaled_to_rgb if spec.output_space == "lab" else to_uint8
    items: list[tuple[Path, float]] = []
    generator = generator.to(device).eval()
    for start in range(0, n, bs):
        pairs = [dataset.pair(i % len(dataset)) for i in range(start, min(n, start + bs))]
        batch = torch.stack([to_tensor(degraded) for degraded, _ in pairs]).to(device)
        with torch.no_grad():
            fakes = generator(batch).float().cpu()
        for offset, ((_, clean), fake) in enumerate(zip(pairs, fakes)):
            name = f"{start + offset:06d}.png"
            Image.fromarray(to_image(fake)).save(directory / "fake" / name)
            Image.fromarray(clean).save(directory / "real" / name)
            items += [(directory / "real" / name, 1.0), (directory / "fake" / name, 0.0)]
    return items


def train_critic(config: CriticConfig = CriticConfig(), data_dir: str | Path = ".",
                 out_dir: str | Path = "runs/critic", resume: str | Path | None = None,
                 device: str | torch.device | None = None) -> TrainResult:
    """Stage 2: save generator outputs, then train the critic on generated vs real with BCE.

    Reports the critic's validation accuracy (`extra["accuracy"]`); the design reached ~95% before the GAN.
    """
    if not config.generator_checkpoint:
        raise ValueError("the critic stage needs generator_checkpoint (a generator stage checkpoint)")
    out_dir = Path(out_dir)
    device = torch.device(device) if device is not None else default_device()
    generator, spec = load_generator_checkpoint(config.generator_checkpoint)
    train_pairs, valid_pairs = make_datasets(data_dir, config, target_space="rgb")
    n_train = config.n_samples or len(train_pairs)
    images = out_dir / "critic_images"
    if rank_distrib() == 0:
        log.info("writing %d generated/real training pairs to %s", n_train, images)
        train_items = _save_generated(generator, train_pairs, n_train, images / "train", spec, config.bs, device)
        valid_items = _save_generated(generator, valid_pairs, len(valid_pairs), images / "valid", spec,
                                      config.bs, device)
    if num_distrib() > 1:  # the other ranks read what rank 0 wrote
        _init_process_group()
        torch.distributed.barrier()
    if rank_distrib() != 0:
        train_items = _list_critic_items(images / "train")
        valid_items = _list_critic_items(images / "valid")
    del generator

    def make_dls(size: int, bs: int):
        return dataloaders_from(_CriticImages(train_items, spec.output_space),
                                _CriticImages(valid_items, spec.output_space), bs, device, config.num_workers)

    critic = build_critic(config.critic)
    learn = Learner(make_dls(config.size, config.bs), critic, loss_func=AdaptiveLoss(nn.BCEWithLogitsLoss()),
                    metrics=accuracy_thresh_expand, opt_func=Adam, wd=config.wd, path=out_dir,
                    model_dir=CHECKPOINT_DIR)
    _mixed_precision(learn, config.mixed_precision)
    start_step, elapsed = _resume(learn, resume, "critic") if resume else (0, 0.0)
    describe = _elapsed_describe(config, data_dir, lambda: {"critic_spec": dataclasses.asdict(config.critic),
                                                            "generator_spec": dataclasses.asdict(spec)})
    checkpoints = StepCheckpoints("critic", out_dir, config.checkpoint_every, describe, elapsed)
    phases = [_Phase("critic", config.size, config.bs, config.epochs, 0, lr=config.lr)]
    history = _fit_phases(learn, phases, make_dls, _fit_one_cycle, checkpoints, start_step, config.max_steps)
    accuracy = history[-1].get("accuracy_thresh_expand") if history else None
    return TrainResult("critic", checkpoints.last_path, checkpoints.last_step, history, learn,
                       extra={"accuracy": accuracy, "critic_spec": config.critic})


def _list_critic_items(directory: Path) -> list[tuple[Path, float]]:
    items = []
    for real in sorted((directory / "real").glob("*.png")):
        items += [(real, 1.0), (directory / "fake" / real.name, 0.0)]
    return items


def _init_process_group() -> None:
    """Join torchrun's process group early (accelerate's shared state, which distrib_ctx reuses later)."""
    from accelerate import PartialState

    PartialState(cpu=not torch.cuda.is_available())


def load_critic_checkpoint(path: str | Path, spec: CriticSpec) -> nn.Module:
    state, meta = _read_checkpoint(path)
    if "critic_spec" in meta:
        spec = from_dict(CriticSpec, meta["critic_spec"])
    critic = build_critic(spec)
    try:
        critic.load_state_dict(state["model"])
    except RuntimeError as error:
        raise ValueError(f"{path}: does not fit the {spec.kind} critic ({str(error).splitlines()[0]})") from None
    return critic


class GanSteps(Callback):
    """Records, per training batch, which network the switcher trained and the input size the model saw."""

    order = 1  # before_batch: after GANTrainer set the mode, before the switcher changes it in after_batch

    def __init__(self):
        self.modes: list[str] = []
        self.sizes: list[int] = []

    def before_batch(self):
        if self.training:
            self.modes.append("generator" if self.learn.gan_trainer.gen_mode else "critic")
            self.sizes.append(int(self.learn.xb[0].shape[-1]))


class EvalValidation(Callback):
    """Validate the GAN with both networks in eval mode.

    fastai's GANTrainer switches to generator mode for validation, which puts the generator back in train
    mode: BatchNorm would then update its statistics on validation data (and fail on a 1-image batch).
    """

    order = GANTrainer.order + 1  # fastai runs callbacks by `order` alone: after GANTrainer's switch

    def before_validate(self):
        self.learn.model.eval()


def train_gan(config: GanConfig = GanConfig(), data_dir: str | Path = ".", out_dir: str | Path = "runs/gan",
              resume: str | Path | None = None, device: str | torch.device | None = None) -> TrainResult:
    """Stage 3: GANLearner from the pretrained generator and critic, AdaptiveGANSwitcher, progressive resizing.

    `extra` holds `generator_steps`, `critic_steps` (what the switcher chose) and the input `sizes` seen.
    """
    out_dir = Path(out_dir)
    if config.generator_checkpoint:
        generator, spec = load_generator_checkpoint(config.generator_checkpoint)
    else:
        log.warning("no generator_checkpoint: the GAN starts from a random generator")
        generator, spec = build_generator(config.spec), config.spec
    if config.critic_checkpoint:
        critic = load_critic_checkpoint(config.critic_checkpoint, config.critic)
    else:
        log.warning("no critic_checkpoint: the GAN starts from a random critic")
        critic = build_critic(config.critic)
    make_dls = partial(_make_dls, data_dir, config, device, spec.output_space)
    dls = make_dls(config.sizes[0], config.batch_sizes[0])
    gen_learn = Learner(dls, generator, loss_func=PixelLoss(config, spec.output_space))
    crit_learn = Learner(dls, critic, loss_func=AdaptiveLoss(nn.BCEWithLogitsLoss()))
    steps = GanSteps()
    learn = GANLearner.from_learners(
        gen_learn, crit_learn,
        switcher=AdaptiveGANSwitcher(critic_thresh=config.critic_thresh),  # an instance: fastai 2.8 needs it
        weights_gen=tuple(config.weights_gen),
        opt_func=partial(Adam, mom=config.betas[0], sqr_mom=config.betas[1]),
        wd=config.wd, cbs=[GANDiscriminativeLR(mult_lr=config.critic_lr_mult), steps, EvalValidation()],
        show_img=False, path=out_dir, model_dir=CHECKPOINT_DIR,
    )
    _mixed_precision(learn, config.mixed_precision)
    start_step, elapsed = _resume(learn, resume, "gan") if resume else (0, 0.0)
    describe = _elapsed_describe(config, data_dir, lambda: {"generator_spec": dataclasses.asdict(spec),
                                                            "critic_spec": dataclasses.asdict(config.critic)})
    checkpoints = StepCheckpoints("gan", out_dir, config.checkpoint_every, describe, elapsed)
    phases = [_Phase(f"{size}px", size, bs, config.epochs_per_size, config.max_steps_per_size, lr=config.lr)
              for size, bs in zip(config.sizes, config.batch_sizes)]
    history = _fit_phases(learn, phases, make_dls, _fit_constant, checkpoints, start_step)
    extra = {"generator_steps": steps.modes.count("generator"), "critic_steps": steps.modes.count("critic"),
             "sizes": sorted(set(steps.sizes), key=steps.sizes.index), "generator_spec": spec}
    result = TrainResult("gan", checkpoints.last_path, checkpoints.last_step, history, learn, extra=extra)
    if config.export and rank_distrib() == 0:
        result.exported = export_generator(result, out_dir / "gan_generator.safetensors")
    return result


def _train_small(stage: str, config: DetectorConfig | DenoiserConfig, model: nn.Module, datasets, loss_func,
                 metric, data_dir, out_dir: Path, resume, device) -> TrainResult:
    """One-cycle training of the detector or the denoiser (a small U-Net, channels-last) with step checkpoints."""
    if config.size % config.spec.multiple:
        raise ValueError(f"size {config.size} is not a multiple of {config.spec.multiple} (the {stage}'s levels)")
    device = torch.device(device) if device is not None else default_device()
    train_set, valid_set = datasets

    def make_dls(size: int, bs: int):
        return dataloaders_from(train_set, valid_set, bs, device, config.num_workers)

    # channels-last convolutions: 27% faster steps on a 2-core CPU (0.84 -> 0.61 s at batch 12, 192 px)
    learn = Learner(make_dls(config.size, config.bs), model, loss_func=loss_func, metrics=metric, opt_func=Adam,
                    wd=config.wd, path=out_dir, model_dir=CHECKPOINT_DIR, cbs=ChannelsLast())
    if config.init_weights and not resume:
        _load_small_init(stage, model, config.init_weights)
    start_step, elapsed = _resume(learn, resume, stage) if resume else (0, 0.0)
    describe = _elapsed_describe(config, data_dir, lambda: {f"{stage}_spec": dataclasses.asdict(config.spec)})
    checkpoints = StepCheckpoints(stage, out_dir, config.checkpoint_every, describe, elapsed)
    phases = [_Phase(stage, config.size, config.bs, config.epochs, 0, lr=config.lr)]
    history = _fit_phases(learn, phases, make_dls, _fit_one_cycle, checkpoints, start_step, config.max_steps)
    return TrainResult(stage, checkpoints.last_path, checkpoints.last_step, history, learn)


def _load_small_init(stage: str, model: nn.Module, path: str | Path) -> None:
    """Load a detector or denoiser checkpoint (.pth, of this stage) or exported weights into `model`."""
    if Path(path).suffix == ".pth":
        state, _ = _read_checkpoint(path)
        if state.get("stage", stage) != stage:
            raise ValueError(f"{path}: a {state.get('stage')} checkpoint cannot start the {stage} stage")
        source = state["model"]
    else:
        source = {"detector": load_detector, "denoiser": load_denoiser}[stage](path)[0].state_dict()
    try:
        model.load_state_dict(source)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise WeightsError(f"{path}: does not fit the {stage} being trained ({first})") from None
    log.info("%s initialised from %s", stage, path)


def train_detector(config: DetectorConfig = DetectorConfig(), data_dir: str | Path = ".",
                   out_dir: str | Path = "runs/detector", resume: str | Path | None = None,
                   device: str | torch.device | None = None) -> TrainResult:
    """The damage detector (`restore.arch.DamageDetector`): clean photos degraded on the fly with damage painted
    on (`degradations.pipeline.degrade_with_damage`), BCE + Dice against where it shows, one-cycle schedule.

    Inference replaces the photo where the detector finds damage (the generator alone leaves most cracks on real
    prints). Reports the validation pixel F1 (`extra["f1"]`).
    """
    out_dir = Path(out_dir)
    datasets = make_damage_datasets(data_dir, config, config.degrade_config())
    result = _train_small("detector", config, build_detector(config.spec), datasets,
                          DamageLoss(config.pos_weight, config.dice_weight), damage_f1, data_dir, out_dir, resume,
                          device)
    result.extra["f1"] = result.history[-1].get("damage_f1") if result.history else None
    if config.export and rank_distrib() == 0:
        result.exported = export_detector(result.checkpoint, out_dir / "detector.safetensors",
                                          {"validation_f1": result.extra["f1"]})
    return result


def train_denoiser(config: DenoiserConfig = DenoiserConfig(), data_dir: str | Path = ".",
                   out_dir: str | Path = "runs/denoiser", resume: str | Path | None = None,
                   device: str | torch.device | None = None) -> TrainResult:
    """The denoiser (`restore.arch.Denoiser`): clean photos with gaussian noise or film grain added on the fly
    (`DenoiserConfig.recipes`), MSE against the clean crop (a negative's: on its positive, `positive_mse`; with
    `negative_levels` "output" on the positive the output's own levels make, `own_levels_mse`; "both": their mean),
    one-cycle schedule.

    Inference runs it at a noisy photo's own resolution before the generator (which sees a 512 px copy).
    Reports the validation PSNR (`extra["psnr"]`; with `negative_levels` not "clean" also `extra["own_levels_psnr"]`,
    both written into the exported card).
    """
    out_dir = Path(out_dir)
    datasets = make_noise_datasets(data_dir, config, config.recipes())
    metrics = denoised_psnr if config.negative_levels == "clean" else [denoised_psnr, own_levels_psnr]
    result = _train_small("denoiser", config, build_denoiser(config.spec), datasets,
                          DENOISER_LOSSES[config.negative_levels], metrics, data_dir, out_dir, resume, device)
    last = result.history[-1] if result.history else {}
    result.extra["psnr"] = last.get("denoised_psnr")
    card = {"validation_psnr": result.extra["psnr"]}
    if "own_levels_psnr" in last:
        result.extra["own_levels_psnr"] = card["validation_own_levels_psnr"] = last["own_levels_psnr"]
    if config.export and rank_distrib() == 0:
        result.exported = export_denoiser(result.checkpoint, out_dir / "denoiser.safetensors", card)
    return result


def _export_small(stage: str, checkpoint: str | Path, path: str | Path, card: dict[str, Any] | None) -> Path:
    spec_class, build, save = {"detector": (DetectorSpec, build_detector, save_detector),
                               "denoiser": (DenoiserSpec, build_denoiser, save_denoiser)}[stage]
    state, meta = _read_checkpoint(checkpoint)
    if state.get("stage") != stage:
        raise ValueError(f"{checkpoint}: a {state.get('stage')} checkpoint, not a {stage} one")
    spec = from_dict(spec_class, meta.get(f"{stage}_spec", {}))
    model = build(spec)
    model.load_state_dict(state["model"])
    auto = {"hardware": meta.get("hardware", hardware()),
            "training": {k: meta[k] for k in ("stage", "step", "config", "data_dir") if k in meta},
            "hours": round(meta.get("elapsed_s", 0.0) / 3600, 4), "checkpoint": Path(checkpoint).name,
            **(card or {})}
    save(model, path, spec, auto)
    log.info("exported %s", path)
    return Path(path)


def export_detector(checkpoint: str | Path, path: str | Path, card: dict[str, Any] | None = None) -> Path:
    """A detector checkpoint (.pth) -> fp16 safetensors + JSON card (training config, data, hardware, hours)."""
    return _export_small("detector", checkpoint, path, card)


def export_denoiser(checkpoint: str | Path, path: str | Path, card: dict[str, Any] | None = None) -> Path:
    """A denoiser checkpoint (.pth) -> fp16 safetensors + JSON card (training config, data, hardware, hours)."""
    return _export_small("denoiser", checkpoint, path, card)


# ------------------------------------------------------------------------------------------- notebooks
def latest_checkpoint(run_dir: str | Path, stage: str | None = None) -> Path:
    """The checkpoint with the highest step in `run_dir/checkpoints` (optionally of one stage)."""
    directory = Path(run_dir) / CHECKPOINT_DIR
    found = sorted(directory.glob(f"{stage or '*'}_step*.pth"), key=lambda p: int(p.stem.rsplit("step", 1)[1]))
    if not found:
        raise FileNotFoundError(f"{directory}: no checkpoints")
    return found[-1]


def show_restorations(generator: nn.Module, dataset, n: int = 3, output_space: str = "rgb",
                      device: str | torch.device = "cpu", figsize_per: float = 2.5):
    """Matplotlib figure: degraded input, generator output and clean target for `n` items of `dataset`."""
    import matplotlib.pyplot as plt

    n = min(n, len(dataset))
    to_image = lab_scaled_to_rgb if output_space == "lab" else to_uint8
    fig, axes = plt.subplots(n, 3, figsize=(3 * figsize_per, n * figsize_per), squeeze=False)
    generator = generator.to(device).eval()
    for row in range(n):
        degraded, clean = dataset.pair(row)
        with torch.no_grad():
            restored = to_image(generator(to_tensor(degraded)[None].to(device))[0].float().cpu())
        for col, (image, title) in enumerate(((degraded, "degraded"), (restored, "restored"), (clean, "clean"))):
            axes[row][col].imshow(image)
            axes[row][col].set_axis_off()
            if row == 0:
                axes[row][col].set_title(title)
    fig.tight_layout()
    return fig


def show_damage(detector: nn.Module, dataset, n: int = 3, device: str | torch.device = "cpu",
                figsize_per: float = 2.5):
    """Matplotlib figure: degraded crop, the damage painted on it and what `detector` finds, for `n` items of an
    `OnTheFlyDamage` dataset."""
    import matplotlib.pyplot as plt

    n = min(n, len(dataset))
    fig, axes = plt.subplots(n, 3, figsize=(3 * figsize_per, n * figsize_per), squeeze=False)
    detector = detector.to(device).eval()
    for row in range(n):
        degraded, mask = dataset.pair(row)
        with torch.no_grad():
            found = detector(to_tensor(degraded)[None].to(device))[0, 0].float().cpu().numpy() > 0
        for col, (image, title) in enumerate(((degraded, "degraded"), (mask, "damage"), (found, "detected"))):
            axes[row][col].imshow(image, cmap="gray" if image.ndim == 2 else None)
            axes[row][col].set_axis_off()
            if row == 0:
                axes[row][col].set_title(title)
    fig.tight_layout()
    return fig
