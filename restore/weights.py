"""Saving and loading generator weights without pickle.

Shipped weights are fp16 safetensors with a JSON card beside them (`name.safetensors` + `name.json`). The
generator's spec is also stored in the safetensors metadata, so a weights file alone is enough to rebuild
its network. User checkpoints in PyTorch format are read with `torch.load(weights_only=True)`, which refuses
to execute pickled code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from restore.arch import (
    DenoiserSpec,
    DetectorSpec,
    GeneratorSpec,
    bake_weight_norms,
    build_denoiser,
    build_detector,
    build_generator,
)
from restore.config import from_dict

DEFAULT_MODEL_NAME = "restore.safetensors"
DEFAULT_DETECTOR_NAME = "detector.safetensors"
DEFAULT_DENOISER_NAME = "denoiser.safetensors"
DEFAULT_NEGATIVE_DENOISER_NAME = "negative-denoiser.safetensors"


class WeightsError(ValueError):
    """A weights file that cannot be used; the message names the file and the reason."""


def models_dir() -> Path:
    """`models/` at the root of the source tree (the README installs the project in editable mode)."""
    return Path(__file__).resolve().parent.parent / "models"


def default_weights_path() -> Path:
    return models_dir() / DEFAULT_MODEL_NAME


def default_detector_path() -> Path:
    return models_dir() / DEFAULT_DETECTOR_NAME


def default_denoiser_path() -> Path:
    return models_dir() / DEFAULT_DENOISER_NAME


def default_negative_denoiser_path() -> Path:
    return models_dir() / DEFAULT_NEGATIVE_DENOISER_NAME


def card_path(weights_path: str | Path) -> Path:
    return Path(weights_path).with_suffix(".json")


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_weights(model: nn.Module, path: str | Path, spec: GeneratorSpec, card: dict[str, Any] | None = None,
                 fp16: bool = True) -> dict[str, Any]:
    """Bake weight norms into a copy of `model`, write safetensors (fp16 by default) and the JSON card.

    Returns the card as written (with `generator_spec`, `sha256`, `dtype`, `parameters`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Rebuild from the spec rather than deep-copying: a spectral-normed module that has run cannot be copied.
    baked = _baked_generator(spec, {k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    spec_dict = dataclasses.asdict(spec)
    return _write(baked.state_dict(), path, {"generator_spec": json.dumps(spec_dict), "format": "restore-generator"},
                  fp16, card, generator_spec=spec_dict)


def _write(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str], fp16: bool,
           card: dict[str, Any] | None, **fields: Any) -> dict[str, Any]:
    """Write `state` as safetensors (float tensors cast to fp16 or fp32) and the JSON card beside it, the card
    updated with `fields`, the file's name, sha256, dtype and number of (float) values."""
    dtype = torch.float16 if fp16 else torch.float32
    # Integer buffers (BatchNorm's num_batches_tracked) keep their type; float tensors are cast.
    state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=metadata)
    tmp.chmod(0o644)  # safetensors writes owner-only files; shipped weights must be readable by every user
    tmp.replace(path)
    written = dict(card or {})
    written.update(fields, weights_file=path.name, sha256=sha256_of(path), dtype=str(dtype).removeprefix("torch."),
                   parameters=sum(v.numel() for v in state.values() if v.is_floating_point()))
    card_path(path).write_text(json.dumps(written, indent=2) + "\n", encoding="utf-8")
    return written


# The small networks beside the generator: kind -> (spec class, builder, what error messages call it)
_SMALL_NETS = {
    "detector": (DetectorSpec, build_detector, "damage detector"),
    "denoiser": (DenoiserSpec, build_denoiser, "denoiser"),
}


def _save_small(kind: str, model: nn.Module, path: str | Path, spec: DetectorSpec, card: dict[str, Any] | None,
                fp16: bool) -> dict[str, Any]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    spec_dict = dataclasses.asdict(spec)
    return _write(state, path, {f"{kind}_spec": json.dumps(spec_dict), "format": f"restore-{kind}"}, fp16, card,
                  **{f"{kind}_spec": spec_dict})


def _load_small(kind: str, path: str | Path, device: str | torch.device) -> tuple[nn.Module, dict[str, Any]]:
    spec_class, build, what = _SMALL_NETS[kind]
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: {kind} weights file not found")
    state, metadata = _read_state(path)
    card = read_card(path)
    raw = metadata.get(f"{kind}_spec")
    try:
        spec = from_dict(spec_class, json.loads(raw) if raw else card.get(f"{kind}_spec", {}))
    except (TypeError, ValueError) as error:
        raise WeightsError(f"{path}: {kind} spec in the file is not understood ({error})") from None
    model = build(spec)
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise WeightsError(f"{path}: weights do not match the {what} ({first[:200]})") from None
    return model.to(device).eval(), {**card, f"{kind}_spec": dataclasses.asdict(spec)}


def save_detector(model: nn.Module, path: str | Path, spec: DetectorSpec, card: dict[str, Any] | None = None,
                  fp16: bool = True) -> dict[str, Any]:
    """Write a damage detector as safetensors (fp16 by default, its spec in the metadata) and its JSON card."""
    return _save_small("detector", model, path, spec, card, fp16)


def load_detector(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The damage detector of a file written by `save_detector` (or a training checkpoint), in eval mode.

    Returns (model, card). Raises WeightsError with the file name for anything unusable.
    """
    return _load_small("detector", path, device)


def save_denoiser(model: nn.Module, path: str | Path, spec: DenoiserSpec, card: dict[str, Any] | None = None,
                  fp16: bool = True) -> dict[str, Any]:
    """Write a denoiser as safetensors (fp16 by default, its spec in the metadata) and its JSON card."""
    return _save_small("denoiser", model, path, spec, card, fp16)


def load_denoiser(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The denoiser of a file written by `save_denoiser` (or a training checkpoint), in eval mode.

    Returns (model, card). Raises WeightsError with the file name for anything unusable.
    """
    return _load_small("denoiser", path, device)


def read_card(weights_path: str | Path) -> dict[str, Any]:
    path = card_path(weights_path)
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise WeightsError(f"{path}: model card is not valid JSON ({error})") from None


def _read_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if path.suffix == ".safetensors":
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
            return load_file(str(path)), metadata
        except (SafetensorError, OSError, ValueError) as error:
            raise WeightsError(f"{path}: not a valid safetensors file ({error})") from None
    # torch.load reports any non-checkpoint (a photo passed as --weights, say) as an unpickling failure,
    # which would read as "unsafe pickle": tell those apart by the container's first bytes.
    try:
        with open(path, "rb") as file:
            head = file.read(4)
    except OSError as error:
        raise WeightsError(f"{path}: cannot read ({error.strerror or error})") from None
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise WeightsError(f"{path}: not a PyTorch or safetensors weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise WeightsError(
            f"{path}: refused: the file needs pickle code execution to load, which is unsafe for untrusted "
            f"files ({first[:160]}). Convert it to safetensors or save a plain state dict."
        ) from None
    except (OSError, RuntimeError, EOFError, ValueError) as error:
        raise WeightsError(f"{path}: not a loadable PyTorch weights file ({type(error).__name__})") from None
    # fastai's Learner.save writes {"model": state_dict, "opt": ...}
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: does not contain a state dict of tensors")
    return state, {}


def _baked_generator(spec: GeneratorSpec, state: dict[str, torch.Tensor], path: Path) -> nn.Module:
    """A fresh eval-mode generator for `spec` holding `state`, with weight norms baked."""
    # Built on the meta device: random initialisation of 41 M parameters that are overwritten at once costs
    # seconds on a CPU; `assign=True` below makes the loaded tensors the parameters.
    with torch.device("meta"):
        model = build_generator(spec).eval()
    # A training checkpoint still has spectral-norm tensors (weight_orig/weight_u/weight_v): load them into the
    # un-baked network, then bake. Exported weights are already baked.
    if not any(k.endswith(("weight_orig", "weight_g")) for k in state):
        bake_weight_norms(model)
    reference = model.state_dict()
    missing = sorted(set(reference) - set(state))
    unexpected = sorted(set(state) - set(reference))
    mismatched = [k for k in reference if k in state and tuple(state[k].shape) != tuple(reference[k].shape)]
    if missing or unexpected or mismatched:
        detail = []
        if mismatched:
            k = mismatched[0]
            detail.append(f"{len(mismatched)} shape mismatches (e.g. {k}: file {tuple(state[k].shape)} vs "
                          f"model {tuple(reference[k].shape)})")
        if missing:
            detail.append(f"{len(missing)} missing tensors (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
        raise WeightsError(f"{path}: weights do not match the {spec.encoder} generator: {'; '.join(detail)}")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, assign=True)
    return bake_weight_norms(model)


def load_generator(path: str | Path | None = None, device: str | torch.device = "cpu",
                   spec: GeneratorSpec | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Build the generator described by the weights file and load it, in eval mode with norms baked.

    The spec comes from (in order) the `spec` argument, the safetensors metadata, the JSON card, the default.
    Returns (model, card). Raises WeightsError with the file name for anything unusable.
    """
    path = Path(path) if path is not None else default_weights_path()
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    state, metadata = _read_state(path)
    card = read_card(path)
    if spec is None:
        raw = metadata.get("generator_spec")
        spec_dict = json.loads(raw) if raw else card.get("generator_spec", {})
        try:
            spec = from_dict(GeneratorSpec, spec_dict)
        except (TypeError, ValueError) as error:
            raise WeightsError(f"{path}: generator spec in the file is not understood ({error})") from None
    model = _baked_generator(spec, state, path)
    card = {**card, "generator_spec": dataclasses.asdict(spec)}
    return model.to(device).eval(), card
