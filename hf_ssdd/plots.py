"""Figures every run saves: an image grid of (synthetic) images and loss curves, written atomically as PNG."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hf_ssdd.io import atomic_path


def image_grid(
    images: torch.Tensor,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    nrow: int | None = None,
    max_images: int = 100,
    padding: int = 2,
) -> Image.Image:
    """Tile a batch into one RGB image.

    Args:
        images: N×3×H×W, uint8, or float — normalized with ``mean``/``std`` when given, else in [0, 1].
        mean, std: normalization to undo for float images.
        nrow: images per row (default: a square-ish grid).
        max_images: show at most this many (the first ones).
        padding: pixels between tiles.
    """
    x = images[:max_images].detach().to("cpu")
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    else:
        x = x.float()
        if mean is not None and std is not None:
            x = x * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)
    x = x.clamp(0, 1)
    n, c, h, w = x.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    canvas = torch.ones(c, rows * (h + padding) + padding, nrow * (w + padding) + padding)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        canvas[:, top : top + h, left : left + w] = x[i]
    array = (canvas.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(array.squeeze(-1) if c == 1 else array)


def save_image_grid(path: str | Path, images: torch.Tensor, **kwargs) -> Path:
    """Save :func:`image_grid` as a PNG (atomically); small images are upscaled for viewing."""
    grid = image_grid(images, **kwargs)
    if max(grid.size) < 512:
        scale = max(1, 512 // max(grid.size))
        grid = grid.resize((grid.size[0] * scale, grid.size[1] * scale), Image.NEAREST)
    with atomic_path(path) as tmp:
        grid.save(tmp, format="PNG")
    return Path(path)


def save_curves(
    path: str | Path,
    curves: Mapping[str, Sequence[float] | tuple[Sequence[float], Sequence[float]]],
    title: str = "",
    xlabel: str = "step",
    logy: bool = False,
    markers: bool = False,
    references: Mapping[str, float] | None = None,
    ylim: tuple[float, float] | None = None,
    ylabel: str = "",
) -> Path:
    """Plot named curves (``values`` or ``(steps, values)``) into a PNG, atomically.

    ``markers`` marks every measured point (for sparse curves such as a kNN monitor, so that two points do not
    read as a trend); ``references`` draws labelled horizontal lines (e.g. chance, the value at initialization);
    ``ylim`` fixes the axis (an honest one instead of a range zoomed onto the data).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for name, values in curves.items():
        xs, ys = values if isinstance(values, tuple) else (range(1, len(values) + 1), values)
        if len(ys):
            ax.plot(list(xs), list(ys), label=name, marker="o" if markers else None, markersize=4)
    for (name, value), style in zip((references or {}).items(), ("--", ":", "-.")):
        ax.axhline(value, color="gray", linestyle=style, linewidth=1, label=f"{name} ({value:.1f})")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if curves or references:
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)
