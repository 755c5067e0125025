"""Pixel conventions shared by training, inference and evaluation.

Every network input and target is RGB scaled to [-1, 1]. Keeping one scaling everywhere is what lets a
checkpoint trained by `restore-train` be used unchanged by `restore` and `restore-eval`.
"""

from __future__ import annotations

import numpy as np
import torch

IMAGE_RANGE = (-1.0, 1.0)
# The generator's sigmoid output range is a little wider than the data range: a sigmoid never reaches its
# bounds, so without the margin pure black and pure white would be unreachable. Outputs are clamped.
Y_RANGE = (-1.1, 1.1)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 RGB -> float32 3xHxW in [-1, 1]."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected uint8 HxWx3 RGB, got {image.dtype} {image.shape}")
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(127.5).sub_(1.0)


def to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """float 3xHxW (or 1x3xHxW) in [-1, 1] -> uint8 HxWx3 RGB, clamped and rounded."""
    if tensor.ndim == 4:
        if tensor.shape[0] != 1:
            raise ValueError(f"expected a single image, got a batch of {tensor.shape[0]}")
        tensor = tensor[0]
    array = tensor.detach().float().clamp(-1.0, 1.0).add(1.0).mul(127.5).round().to(torch.uint8)
    return array.permute(1, 2, 0).cpu().numpy()


def batch_to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """List of same-sized uint8 HxWx3 -> float Nx3xHxW in [-1, 1]."""
    return torch.stack([to_tensor(image) for image in images])
