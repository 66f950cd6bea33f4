"""Batched, per-sample-random, on-device image augmentation.

Every function takes a B×C×H×W batch (uint8 or float in [0, 1]) on any device, draws one set of random
parameters per sample, and has no Python loop over samples. Randomness comes from an optional explicit
``torch.Generator``; random numbers are drawn on the generator's device and then moved, so a CPU generator gives
the same augmentation for a batch on the CPU or on a GPU.

- :func:`random_crop_flip`: KRR-ST's real-batch augmentation (kornia ``RandomCrop(size, padding=4)`` +
  ``RandomHorizontalFlip``; KRR-ST ``data/augmentation.py``).
- :func:`barlow_twins_views`: the solo-learn CIFAR Barlow Twins recipe (``scripts/pretrain/cifar/barlow.yaml``)
  presumed for the KRR-ST / MKDT teachers: RandomResizedCrop, ColorJitter, Grayscale, Solarization, HFlip.

The color functions follow ``torchvision.transforms.functional`` (tensor backend) for float images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
Factor = float | Tensor
_GRAY_WEIGHTS = (
    0.2989,
    0.587,
    0.114,
)  # ITU-R 601-2 luma, as torchvision.transforms.functional.rgb_to_grayscale

# --------------------------------------------------------------------------------------------------------------
# Random draws
# --------------------------------------------------------------------------------------------------------------


def _source_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    return generator.device if generator is not None else device


def _rand(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """U[0, 1) float64, drawn on the generator's device and moved to ``device``."""
    source = _source_device(generator, device)
    return torch.rand(shape, generator=generator, device=source, dtype=torch.float64).to(device)


def _uniform(
    shape: tuple[int, ...], low: float, high: float, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    return low + (high - low) * _rand(shape, generator, device)


def _bernoulli(p: float, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """``n`` booleans, each ``True`` with probability ``p``."""
    return _rand((n,), generator, device) < p


def _randint(high: int, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """``n`` integers uniform in ``[0, high)``."""
    source = _source_device(generator, device)
    return torch.randint(0, high, (n,), generator=generator, device=source).to(device)


def _per_sample(factor: Factor, x: Tensor) -> Tensor:
    """A scalar or a per-sample (B,) factor, shaped to broadcast over a B×C×H×W batch."""
    factor = torch.as_tensor(factor, dtype=x.dtype, device=x.device)
    return factor.view(-1, 1, 1, 1) if factor.dim() == 1 else factor


def _select(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Per-sample ``where``: sample i of ``a`` where ``mask[i]``, else of ``b``."""
    return torch.where(mask.view(-1, 1, 1, 1), a, b)


def to_float(x: Tensor) -> Tensor:
    """uint8 → float32 in [0, 1]; float input is returned unchanged."""
    return x if x.is_floating_point() else x.to(torch.float32) / 255


# --------------------------------------------------------------------------------------------------------------
# Pad-crop + flip (KRR-ST real batches)
# --------------------------------------------------------------------------------------------------------------


def crop_flip(x: Tensor, top: Tensor, left: Tensor, flip: Tensor | None = None, padding: int = 4) -> Tensor:
    """Zero-pad by ``padding``, take the H×W window at (``top``, ``left``) of each sample, mirror where ``flip``.

    Args:
        x: B×C×H×W batch of any dtype.
        top: (B,) row offsets into the padded image, in ``[0, 2·padding]``.
        left: (B,) column offsets, in ``[0, 2·padding]``.
        flip: (B,) booleans, or ``None`` for no flip.
        padding: zero padding on each side.
    """
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = top.view(-1, 1) + torch.arange(h, device=x.device)
    cols = left.view(-1, 1) + torch.arange(w, device=x.device)
    if flip is not None:
        cols = torch.where(flip.view(-1, 1), cols.flip(1), cols)
    padded = padded.gather(2, rows.view(b, 1, h, 1).expand(b, c, h, w + 2 * padding))
    return padded.gather(3, cols.view(b, 1, 1, w).expand(b, c, h, w))


def random_crop_flip(
    x: Tensor, padding: int = 4, flip: bool = True, generator: torch.Generator | None = None
) -> Tensor:
    """KRR-ST real-batch augmentation: zero-padded random crop back to H×W, then horizontal flip with p = 0.5.

    Equivalent to kornia ``RandomCrop((H, W), padding=padding)`` + ``RandomHorizontalFlip()`` with independent
    offsets and flips per sample. Draw order: rows, columns, flips. The output has the dtype of ``x``.
    """
    n = x.shape[0]
    top = _randint(2 * padding + 1, n, generator, x.device)
    left = _randint(2 * padding + 1, n, generator, x.device)
    mirror = _bernoulli(0.5, n, generator, x.device) if flip else None
    return crop_flip(x, top, left, mirror, padding)


# --------------------------------------------------------------------------------------------------------------
# Random resized crop
# --------------------------------------------------------------------------------------------------------------


def random_resized_crop_params(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    attempts: int = 10,
) -> Tensor:
    """Crop boxes as in ``torchvision.transforms.RandomResizedCrop.get_params``, vectorized over samples.

    Each sample tries ``attempts`` (area fraction, log-uniform aspect ratio) draws and keeps the first box that
    fits; samples with no fitting draw get torchvision's fallback (the central crop with the aspect ratio clamped
    to ``ratio``).

    Returns:
        int64 (n, 4) tensor of ``(top, left, box_height, box_width)``.
    """
    device = torch.device(device)
    target = height * width * _uniform((n, attempts), scale[0], scale[1], generator, device)
    aspect = torch.exp(_uniform((n, attempts), math.log(ratio[0]), math.log(ratio[1]), generator, device))
    box_w = torch.round(torch.sqrt(target * aspect))
    box_h = torch.round(torch.sqrt(target / aspect))
    fits = (box_w >= 1) & (box_w <= width) & (box_h >= 1) & (box_h <= height)
    first = fits.to(torch.uint8).argmax(1, keepdim=True)
    fallback_h, fallback_w = _central_box(height, width, ratio)
    found = fits.any(1)
    box_h = torch.where(found, box_h.gather(1, first).squeeze(1), fallback_h)
    box_w = torch.where(found, box_w.gather(1, first).squeeze(1), fallback_w)
    top = torch.floor(_rand((n,), generator, device) * (height - box_h + 1))
    left = torch.floor(_rand((n,), generator, device) * (width - box_w + 1))
    top = torch.where(found, top, (height - box_h) // 2)
    left = torch.where(found, left, (width - box_w) // 2)
    return torch.stack([top, left, box_h, box_w], 1).to(torch.int64)


def _central_box(height: int, width: int, ratio: tuple[float, float]) -> tuple[float, float]:
    """torchvision's fallback box size: the whole image with its aspect ratio clamped to ``ratio``."""
    in_ratio = width / height
    if in_ratio < min(ratio):
        return float(round(width / min(ratio))), float(width)
    if in_ratio > max(ratio):
        return float(height), float(round(height * max(ratio)))
    return float(height), float(width)


def resized_crop(x: Tensor, boxes: Tensor, size: int, flip: Tensor | None = None) -> Tensor:
    """Bilinear resize of per-sample boxes to size×size with one ``affine_grid`` + ``grid_sample``.

    Differences from torchvision's crop-then-resize: no antialiasing when a box is shrunk, and border samples of
    an enlarged box interpolate with the pixels just outside the box (torchvision clamps to the box edge). A box
    that touches the image border is clamped there (``padding_mode="border"``), as in torchvision.

    Args:
        x: float B×C×H×W batch.
        boxes: int (B, 4) ``(top, left, box_height, box_width)``.
        size: output side length.
        flip: (B,) booleans: mirror these samples horizontally.
    """
    b, c, h, w = x.shape
    top, left, box_h, box_w = boxes.to(device=x.device, dtype=torch.float64).unbind(1)
    scale_x = box_w / w
    scale_y = box_h / h
    if flip is not None:
        scale_x = torch.where(flip, -scale_x, scale_x)
    theta = torch.zeros(b, 2, 3, dtype=torch.float64, device=x.device)
    theta[:, 0, 0] = scale_x
    theta[:, 0, 2] = (2 * left + box_w) / w - 1
    theta[:, 1, 1] = scale_y
    theta[:, 1, 2] = (2 * top + box_h) / h - 1
    grid = F.affine_grid(theta, [b, c, size, size], align_corners=False).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


# --------------------------------------------------------------------------------------------------------------
# Color (torchvision semantics, per-sample factors)
# --------------------------------------------------------------------------------------------------------------


def rgb_to_grayscale(x: Tensor) -> Tensor:
    """Luma ``0.2989 R + 0.587 G + 0.114 B`` of float RGB images, B×1×H×W (as torchvision)."""
    r, g, b = x.unbind(-3)
    return (_GRAY_WEIGHTS[0] * r + _GRAY_WEIGHTS[1] * g + _GRAY_WEIGHTS[2] * b).unsqueeze(-3)


def _blend(a: Tensor, b: Tensor, factor: Factor) -> Tensor:
    factor = _per_sample(factor, a)
    return (factor * a + (1.0 - factor) * b).clamp(0, 1)


def adjust_brightness(x: Tensor, factor: Factor) -> Tensor:
    """Scale intensities by ``factor`` (scalar or per-sample (B,)), clamped to [0, 1]."""
    return _blend(x, torch.zeros_like(x), factor)


def adjust_contrast(x: Tensor, factor: Factor) -> Tensor:
    """Blend with the per-image mean gray level."""
    return _blend(x, rgb_to_grayscale(x).mean(dim=(-3, -2, -1), keepdim=True), factor)


def adjust_saturation(x: Tensor, factor: Factor) -> Tensor:
    """Blend with the grayscale image."""
    return _blend(x, rgb_to_grayscale(x), factor)


def rgb_to_hsv(x: Tensor) -> Tensor:
    """Float RGB → HSV, all channels in [0, 1] (torchvision's ``_rgb2hsv``)."""
    r, g, b = x.unbind(-3)
    maxc = x.amax(-3)
    minc = x.amin(-3)
    gray = maxc == minc
    chroma = maxc - minc
    ones = torch.ones_like(maxc)
    sat = chroma / torch.where(gray, ones, maxc)
    divisor = torch.where(gray, ones, chroma)
    rc = (maxc - r) / divisor
    gc = (maxc - g) / divisor
    bc = (maxc - b) / divisor
    hue = (maxc == r) * (bc - gc)
    hue = hue + ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hue = hue + ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    hue = torch.fmod(hue / 6.0 + 1.0, 1.0)
    return torch.stack((hue, sat, maxc), -3)


def hsv_to_rgb(x: Tensor) -> Tensor:
    """HSV → RGB with ``f(n) = V − V·S·clamp(min(k, 4 − k), 0, 1)``, ``k = (n + 6H) mod 6``, n = 5, 3, 1."""
    hue, sat, val = x.unbind(-3)
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(n + 6.0 * hue, 6.0)
        channels.append(val - val * sat * torch.minimum(k, 4.0 - k).clamp(0, 1))
    return torch.stack(channels, -3)


def adjust_hue(x: Tensor, factor: Factor) -> Tensor:
    """Rotate the hue by ``factor`` turns (in [-0.5, 0.5]; scalar or per-sample (B,))."""
    hsv = rgb_to_hsv(x)
    hue = torch.remainder(hsv[..., :1, :, :] + _per_sample(factor, x), 1.0)
    return hsv_to_rgb(torch.cat((hue, hsv[..., 1:, :, :]), -3))


def grayscale(x: Tensor) -> Tensor:
    """Three-channel grayscale (``RandomGrayscale`` output)."""
    return rgb_to_grayscale(x).expand_as(x)


def solarize(x: Tensor, threshold: float = 0.5) -> Tensor:
    """Invert pixels at or above ``threshold`` (solo-learn ``Solarization`` = PIL threshold 128, on [0, 1])."""
    return torch.where(x >= threshold, 1.0 - x, x)


# --------------------------------------------------------------------------------------------------------------
# Barlow Twins views
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BarlowTwinsAugmentConfig:
    """One view of the solo-learn Barlow Twins recipe (``scripts/pretrain/cifar/barlow.yaml``).

    Attributes:
        crop_size: output side length (``None``: the input size).
        min_scale: smallest crop area fraction.
        max_scale: largest crop area fraction.
        ratio: aspect-ratio range of the crop.
        brightness: ColorJitter brightness strength.
        contrast: ColorJitter contrast strength.
        saturation: ColorJitter saturation strength.
        hue: ColorJitter hue strength (≤ 0.5).
        color_jitter_prob: probability of applying ColorJitter.
        gray_scale_prob: probability of grayscale.
        solarization_prob: probability of solarization (0.0 for view 1, 0.2 for view 2).
        horizontal_flip_prob: probability of a horizontal flip.
    """

    crop_size: int | None = None
    min_scale: float = 0.08
    max_scale: float = 1.0
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    color_jitter_prob: float = 0.8
    gray_scale_prob: float = 0.2
    solarization_prob: float = 0.0
    horizontal_flip_prob: float = 0.5


def _jitter_factors(
    n: int, cfg: BarlowTwinsAugmentConfig, generator: torch.Generator | None, device: torch.device
) -> list[Tensor]:
    """Per-sample ColorJitter factors (brightness, contrast, saturation, hue), drawn as torchvision does."""
    factors = [
        _uniform((n,), max(0.0, 1 - strength), 1 + strength, generator, device)
        for strength in (cfg.brightness, cfg.contrast, cfg.saturation)
    ]
    return factors + [_uniform((n,), -cfg.hue, cfg.hue, generator, device)]


def color_jitter(x: Tensor, factors: list[Tensor], order: list[int]) -> Tensor:
    """Apply brightness (0), contrast (1), saturation (2) and hue (3) adjustments in ``order``.

    Args:
        x: float B×3×H×W batch in [0, 1].
        factors: four per-sample (B,) factor tensors, indexed as above.
        order: permutation of ``[0, 1, 2, 3]``; ops whose index is absent are skipped.
    """
    ops = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
    for index in order:
        x = ops[index](x, factors[index])
    return x


def augment_view(
    x: Tensor, cfg: BarlowTwinsAugmentConfig, generator: torch.Generator | None = None
) -> Tensor:
    """One Barlow Twins view: RandomResizedCrop + HFlip, ColorJitter, Grayscale, Solarization; float in [0, 1].

    The flip is folded into the crop's sampling grid (it commutes with the color ops, so this equals solo-learn's
    flip-last order). ColorJitter applies its four adjustments in one random order per batch (torchvision draws
    one per image); adjustments with strength 0 are skipped. Draw order: boxes, flips, jitter factors, jitter
    order, jitter mask, grayscale mask, solarization mask.
    """
    x = to_float(x)
    n, _, height, width = x.shape
    boxes = random_resized_crop_params(
        n, height, width, (cfg.min_scale, cfg.max_scale), cfg.ratio, generator, x.device
    )
    flip = _bernoulli(cfg.horizontal_flip_prob, n, generator, x.device)
    x = resized_crop(x, boxes, cfg.crop_size or height, flip)
    factors = _jitter_factors(n, cfg, generator, x.device)
    order = torch.randperm(4, generator=generator, device=_source_device(generator, x.device)).tolist()
    strengths = (cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)
    order = [index for index in order if strengths[index] > 0]
    x = _select(_bernoulli(cfg.color_jitter_prob, n, generator, x.device), color_jitter(x, factors, order), x)
    x = _select(_bernoulli(cfg.gray_scale_prob, n, generator, x.device), grayscale(x), x)
    return _select(_bernoulli(cfg.solarization_prob, n, generator, x.device), solarize(x), x)


def barlow_twins_views(
    x: Tensor,
    cfg1: BarlowTwinsAugmentConfig | None = None,
    cfg2: BarlowTwinsAugmentConfig | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Two independently augmented views of a batch for Barlow Twins, float in [0, 1] (normalize afterwards).

    Defaults are solo-learn's asymmetric CIFAR recipe: solarization probability 0.0 for view 1 and 0.2 for view 2.
    """
    cfg1 = cfg1 or BarlowTwinsAugmentConfig(solarization_prob=0.0)
    cfg2 = cfg2 or BarlowTwinsAugmentConfig(solarization_prob=0.2)
    return augment_view(x, cfg1, generator), augment_view(x, cfg2, generator)
