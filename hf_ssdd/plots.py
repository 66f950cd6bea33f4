"""Figures every run saves: an image grid of (synthetic) images and loss curves, written atomically as PNG."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hf_ssdd.io import atomic_path


def _unit_range(
    images: torch.Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> torch.Tensor:
    """Images as float in [0, 1] on the CPU: uint8 / 255, or float with ``mean``/``std`` undone when given."""
    x = images.detach().to("cpu")
    if x.dtype == torch.uint8:
        return x.float() / 255.0
    x = x.float()
    if mean is not None and std is not None:
        x = x * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)
    return x.clamp(0, 1)


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
    x = _unit_range(images[:max_images], mean, std)
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
        grid = grid.resize((grid.size[0] * scale, grid.size[1] * scale), Image.Resampling.NEAREST)
    with atomic_path(path) as tmp:
        grid.save(tmp, format="PNG")
    return Path(path)


def save_before_after_grid(
    path: str | Path,
    before: torch.Tensor,
    after: torch.Tensor,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    per_row: int = 10,
    max_pairs: int = 40,
    tile_px: int = 96,
) -> Path:
    """Save the initial real images above their distilled versions, row pair by row pair, as a PNG (atomically).

    Args:
        before: the initial images (uint8, or float normalized with ``mean``/``std``), N×3×H×W.
        after: the same images after distillation, in the same order.
        mean, std: normalization to undo for float images.
        per_row: images per row; rows alternate before / after.
        max_pairs: show at most this many pairs (whole rows only).
        tile_px: upscale (nearest neighbour, by an integer factor) so that tiles are at least this large.
    """
    from PIL import ImageDraw

    if before.shape != after.shape:
        raise ValueError(f"before and after differ in shape: {tuple(before.shape)} vs {tuple(after.shape)}")
    n = min(len(before), max_pairs)
    per_row = max(1, min(per_row, n))
    n -= n % per_row
    x, y = _unit_range(before[:n], mean, std), _unit_range(after[:n], mean, std)
    rows = [t for i in range(0, n, per_row) for t in (x[i : i + per_row], y[i : i + per_row])]
    grid = image_grid(torch.cat(rows), nrow=per_row, max_images=2 * n)
    scale = max(1, -(-tile_px // before.shape[-1]))
    grid = grid.resize((grid.size[0] * scale, grid.size[1] * scale), Image.Resampling.NEAREST)
    margin, row_px = 56, grid.size[1] // len(rows)
    canvas = Image.new("RGB", (grid.size[0] + margin, grid.size[1]), "white")
    canvas.paste(grid.convert("RGB"), (margin, 0))
    draw = ImageDraw.Draw(canvas)
    for r in range(len(rows)):
        draw.text((4, r * row_px + row_px // 2 - 5), "before" if r % 2 == 0 else "after", fill="black")
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
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
    if ax.get_legend_handles_labels()[0]:  # curves may all be empty (a run stopped before its first record)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)
