"""Generic fixtures any test file may use."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """A randomly initialised ResNet18 U-Net without self-attention, saved as safetensors (+ card).

    Small enough to build and run on CPU in a test; its outputs are meaningless but have the right shapes.
    """
    import torch

    from restore.arch import GeneratorSpec, build_generator
    from restore.weights import save_weights

    torch.manual_seed(0)
    spec = GeneratorSpec(encoder="resnet18", self_attention=False)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_weights(build_generator(spec), path, spec, card={"note": "random test weights"})
    return path
