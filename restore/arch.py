"""Network builders shared by training, inference and export.

The generator is fastai's DynamicUnet over a torchvision ResNet encoder, exactly what `unet_learner` builds,
so a checkpoint made by training loads into the model that inference builds from the same `GeneratorSpec`.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from fastai.layers import NormType
from fastai.vision.learner import create_body
from fastai.vision.models.unet import DynamicUnet
from torch import nn
from torch.nn.utils import remove_spectral_norm, remove_weight_norm
from torchvision import models as tv_models

from restore.imaging import Y_RANGE

log = logging.getLogger(__name__)

_ENCODERS = {
    "resnet18": tv_models.resnet18,
    "resnet34": tv_models.resnet34,
    "resnet50": tv_models.resnet50,
}
_NORMS = {
    "spectral": NormType.Spectral,
    "weight": NormType.Weight,
    "batch": NormType.Batch,
    "none": None,
}


@dataclass(frozen=True)
class GeneratorSpec:
    encoder: str = "resnet34"            # torchvision ResNet used as the U-Net encoder
    self_attention: bool = True          # fastai SelfAttention in the decoder (DeOldify's choice)
    blur: bool = True                    # blur after pixel shuffle: removes checkerboard artifacts
    norm_type: str = "spectral"          # decoder conv norm: spectral | weight | batch | none
    y_range: tuple = Y_RANGE             # sigmoid output range; data is [-1, 1] (restore.imaging)
    last_cross: bool = True              # final cross connection from the input (keeps fine detail)
    bottle: bool = False                 # bottleneck in the last cross connection
    output_space: str = "rgb"            # "rgb": predict RGB; "lab": predict L*a*b* scaled to [-1, 1]

    def __post_init__(self):
        if self.encoder not in _ENCODERS:
            raise ValueError(f"unknown encoder {self.encoder!r}; choose from {', '.join(_ENCODERS)}")
        if self.norm_type not in _NORMS:
            raise ValueError(f"unknown norm_type {self.norm_type!r}; choose from {', '.join(_NORMS)}")
        if self.output_space not in ("rgb", "lab"):
            raise ValueError(f"unknown output_space {self.output_space!r}; choose rgb or lab")

    def unet_kwargs(self) -> dict:
        return {
            "blur": self.blur,
            "self_attention": self.self_attention,
            "norm_type": _NORMS[self.norm_type],
            "y_range": tuple(self.y_range),
            "last_cross": self.last_cross,
            "bottle": self.bottle,
        }


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Load a user-supplied torchvision ResNet state dict (e.g. ImageNet weights) into `encoder`.

    Never unpickles arbitrary objects (`weights_only=True`); the classifier head (`fc.*`) is ignored because
    the U-Net cuts it off.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  torch raises several types for bad files: all mean unusable
        raise ValueError(f"{path}: not a loadable weights file ({type(error).__name__}: {error})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(
            f"{path}: encoder weights do not match: {len(missing)} missing (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )


def _encoder(spec: GeneratorSpec, encoder_weights: str | Path | None) -> nn.Module:
    encoder = _ENCODERS[spec.encoder](weights=None)
    if encoder_weights is not None:
        load_encoder_weights(encoder, encoder_weights)
    return encoder


def build_generator(spec: GeneratorSpec = GeneratorSpec(), encoder_weights: str | Path | None = None,
                    img_size: tuple[int, int] = (128, 128)) -> nn.Module:
    """The U-Net generator, randomly initialised unless `encoder_weights` (a local ResNet state dict) is given.

    `img_size` only sizes the layers' construction pass; the network runs on any size that is a multiple of 32.
    """
    body = create_body(_encoder(spec, encoder_weights), n_in=3, pretrained=encoder_weights is not None)
    return DynamicUnet(body, n_out=3, img_size=img_size, **spec.unet_kwargs())


def generator_learner(dls, spec: GeneratorSpec = GeneratorSpec(), encoder_weights: str | Path | None = None,
                      **learner_kwargs):
    """fastai `unet_learner` for `spec`.

    Inputs are already scaled to [-1, 1] by our data pipeline, so fastai's ImageNet normalisation is off.
    With `encoder_weights` the learner starts frozen (fastai's default for pretrained encoders).
    """

    from fastai.vision.learner import model_meta, unet_learner  # training-only: keep inference imports lean

    def arch(weights=None, pretrained=False):
        # unet_learner calls arch(weights=...) for torchvision models; we supply our own encoder instead.
        return _encoder(spec, encoder_weights)

    # fastai looks up cut/split metadata by the arch function; reuse the stock ResNet entry.
    model_meta[arch] = {k: v for k, v in model_meta[_ENCODERS[spec.encoder]].items() if k != "weights"}
    try:
        learn = unet_learner(dls, arch, normalize=False, n_out=3, pretrained=encoder_weights is not None,
                             **spec.unet_kwargs(), **learner_kwargs)
    finally:
        model_meta.pop(arch, None)
    return learn


@dataclass(frozen=True)
class CriticSpec:
    kind: str = "fastai"                 # "fastai": fastai gan_critic (DeOldify); "patch": PatchGAN (pix2pix)
    nf: int = 128                        # base number of filters (fastai critic) / 64 for PatchGAN is usual
    n_blocks: int = 3                    # downsampling blocks
    dropout: float = 0.15                # fastai critic dropout

    def __post_init__(self):
        if self.kind not in ("fastai", "patch"):
            raise ValueError(f"unknown critic kind {self.kind!r}; choose fastai or patch")


def patch_critic(n_channels: int = 3, nf: int = 64, n_blocks: int = 3) -> nn.Sequential:
    """PatchGAN discriminator (pix2pix): one logit per receptive-field patch, spectral-normalised convs."""
    sn = nn.utils.spectral_norm
    layers: list[nn.Module] = [sn(nn.Conv2d(n_channels, nf, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, True)]
    channels = nf
    for i in range(1, n_blocks + 1):
        out = nf * min(2 ** i, 8)
        stride = 2 if i < n_blocks else 1
        layers += [sn(nn.Conv2d(channels, out, 4, stride=stride, padding=1)), nn.LeakyReLU(0.2, True)]
        channels = out
    layers += [sn(nn.Conv2d(channels, 1, 4, stride=1, padding=1)), nn.Flatten()]
    return nn.Sequential(*layers)


def build_critic(spec: CriticSpec = CriticSpec()) -> nn.Module:
    if spec.kind == "patch":
        return patch_critic(3, spec.nf, spec.n_blocks)
    from fastai.vision.gan import gan_critic  # training-only

    return gan_critic(n_channels=3, nf=spec.nf, n_blocks=spec.n_blocks, p=spec.dropout)


@dataclass(frozen=True)
class DetectorSpec:
    channels: tuple = (16, 32, 64, 128)  # conv widths of the U-Net's levels; each level halves the size

    def __post_init__(self):
        if len(self.channels) < 2 or min(self.channels) < 1:
            raise ValueError(f"{type(self).__name__} channels need two or more positive widths, got {self.channels}")

    @property
    def multiple(self) -> int:
        """Input sides must be a multiple of this (one halving per level below the first)."""
        return 2 ** (len(self.channels) - 1)


@dataclass(frozen=True)
class DenoiserSpec(DetectorSpec):
    channels: tuple = (32, 64, 128, 256)  # widths of the levels below the half-resolution input

    @property
    def multiple(self) -> int:
        """Input sides must be a multiple of this (the 2x2 pixel unshuffle, then one halving per level)."""
        return 2 ** len(self.channels)


def _conv_block(n_in: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(n_in, n_out, 3, padding=1, bias=False), nn.BatchNorm2d(n_out), nn.ReLU(True),
                         nn.Conv2d(n_out, n_out, 3, padding=1, bias=False), nn.BatchNorm2d(n_out), nn.ReLU(True))


class _PlainUNet(nn.Module):
    """Conv blocks that halve the size level by level, bilinear upsampling with skip connections back up, and a
    1x1 head to `n_out` channels: the body of the damage detector and the denoiser."""

    def __init__(self, spec: DetectorSpec, n_in: int, n_out: int):
        super().__init__()
        widths = tuple(spec.channels)
        self.spec = spec
        self.down = nn.ModuleList([_conv_block(n_in, widths[0])]
                                  + [_conv_block(a, b) for a, b in itertools.pairwise(widths)])
        self.up = nn.ModuleList([_conv_block(b + a, a) for a, b in zip(widths[-2::-1], widths[:0:-1])])
        self.head = nn.Conv2d(widths[0], n_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, block in enumerate(self.down):
            x = block(x if level == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)


class DamageDetector(_PlainUNet):
    """Where a photo is physically damaged (cracks, scratches, dust, holes): RGB in [-1, 1], N x 3 x H x W, to
    one logit per pixel, N x 1 x H x W (H, W multiples of `spec.multiple`).

    A small U-Net (0.5 M parameters with the default widths, ~0.1 s at 512 px on a CPU): finding damage is a
    local question (a thin bright line that continues across the picture), which the generator's ResNet34
    answers too weakly when it has to restore everything else at the same time, as Bringing-Old-Photos-Back-
    to-Life also found; its mask tells inference where the photo itself must be replaced.
    """

    def __init__(self, spec: DetectorSpec = DetectorSpec()):
        super().__init__(spec, 3, 1)


class Denoiser(_PlainUNet):
    """Noise and film grain off a photo at its full resolution: RGB in [-1, 1], N x 3 x H x W, to the same image
    denoised (H, W multiples of `spec.multiple`). Blind: it is not told the noise level.

    The network predicts the noise and subtracts it (residual learning, as DnCNN), on the four half-resolution
    sub-images of the photo (2x2 pixel unshuffle, as FFDNet: a quarter of the work at full resolution). The
    generator works on a 512 px copy and cannot remove noise at a scan's own resolution; this small U-Net
    (1.9 M parameters with the default widths) can, tile by tile.
    """

    def __init__(self, spec: DenoiserSpec = DenoiserSpec()):
        super().__init__(spec, 12, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - F.pixel_shuffle(super().forward(F.pixel_unshuffle(x, 2)), 2)


def build_detector(spec: DetectorSpec = DetectorSpec()) -> DamageDetector:
    return DamageDetector(spec)


def build_denoiser(spec: DenoiserSpec = DenoiserSpec()) -> Denoiser:
    return Denoiser(spec)


def bake_weight_norms(model: nn.Module) -> nn.Module:
    """Fold spectral/weight-norm reparametrisations into plain `weight` tensors, in place.

    Exported weights are baked so inference needs no power iteration and the safetensors file holds one tensor
    per layer; in eval mode the result is numerically the same network.
    """
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            name = type(hook).__name__
            if name == "SpectralNorm":
                remove_spectral_norm(module, name=hook.name)
            elif name == "WeightNorm":
                remove_weight_norm(module, name=hook.name)
        # torch >= 2.x wraps spectral norm's load-state-dict pre-hook, and remove_spectral_norm no longer
        # finds it: left in place it would demand `weight_orig` keys from a baked state dict.
        for key, hook in list(module._load_state_dict_pre_hooks.items()):
            inner = getattr(hook, "hook", hook)
            if type(inner).__name__ == "SpectralNormLoadStateDictPreHook":
                del module._load_state_dict_pre_hooks[key]
    return model


def unbake_weight_norms(model: nn.Module, baked: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict for `model` (spectral/weight-normed, as training builds it) from exported, baked weights.

    The inverse of `bake_weight_norms` for fine-tuning shipped weights: each normed layer's raw weight is the
    baked one, and its power-iteration vectors are the exact top singular vectors, so the normed layer starts
    out as the baked one (a baked weight's sigma is 1 once training's power iteration has converged, as in any
    long run) and trains under the same norm as before.
    """
    reference = model.state_dict()
    spectral = {key.removesuffix("weight_orig") for key in reference if key.endswith("weight_orig")}
    weight_normed = {key.removesuffix("weight_g") for key in reference if key.endswith("weight_g")}
    state = {}
    for stem in spectral:
        state[f"{stem}weight_orig"] = weight = baked[f"{stem}weight"].float()
        # torch's spectral norm reads the weight as a matrix by rows (dim 0); one SVD gives both vectors
        u, _, vh = torch.linalg.svd(weight.flatten(1), full_matrices=False)
        state[f"{stem}weight_u"], state[f"{stem}weight_v"] = u[:, 0].contiguous(), vh[0].contiguous()
    for stem in weight_normed:
        weight = baked[f"{stem}weight"].float()
        state[f"{stem}weight_v"] = weight
        state[f"{stem}weight_g"] = weight.flatten(1).norm(dim=1).reshape(reference[f"{stem}weight_g"].shape)
    for key in reference:
        if key not in state:
            value = baked[key]  # a KeyError names what the baked weights lack
            state[key] = value.float() if value.is_floating_point() else value
    return state


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
