"""Per-channel normalization of image batches: exact dataset statistics, ``normalize`` and its inverse.

:func:`compute_normalization_stats` gives the per-channel mean and std of a uint8 batch on the [0, 1] scale (from
histograms, exact); :func:`normalize` maps uint8 or [0, 1] float images to ``(x − mean) / std`` and
:func:`denormalize` maps them back.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hf_ssdd.data.catalog import RGB


def compute_normalization_stats(images: torch.Tensor) -> tuple[RGB, RGB]:
    """Per-channel mean and (population) std on the [0, 1] scale over all pixels of a uint8 N×C×H×W batch.

    Computed exactly from per-channel 256-bin histograms, accumulated in float64.
    """
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise TypeError(f"expected a uint8 N×C×H×W tensor, got {images.dtype} {tuple(images.shape)}")
    counts = torch.stack(
        [torch.bincount(images[:, c].reshape(-1), minlength=256) for c in range(images.shape[1])]
    ).to("cpu", torch.float64)
    values = torch.arange(256, dtype=torch.float64) / 255
    total = counts.sum(1)
    mean = counts @ values / total
    var = (counts * (values[None] - mean[:, None]) ** 2).sum(1) / total
    return tuple(mean.tolist()), tuple(var.sqrt().tolist())


def _channel_tensor(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=like.dtype, device=like.device).view(-1, 1, 1)


def normalize(
    x: torch.Tensor, mean: Sequence[float], std: Sequence[float], dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``(x − mean) / std`` per channel; uint8 input is first scaled to [0, 1] in ``dtype``, float input kept."""
    if not x.is_floating_point():
        x = x.to(dtype) / 255
    return (x - _channel_tensor(mean, x)) / _channel_tensor(std, x)


def denormalize(
    x: torch.Tensor, mean: Sequence[float], std: Sequence[float], clamp: bool = True
) -> torch.Tensor:
    """Inverse of :func:`normalize`: ``x · std + mean``, clamped to [0, 1] unless ``clamp=False``."""
    out = x * _channel_tensor(std, x) + _channel_tensor(mean, x)
    return out.clamp(0, 1) if clamp else out
