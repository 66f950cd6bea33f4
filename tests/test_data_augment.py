import math

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from hf_ssdd.data import (
    BarlowTwinsAugmentConfig,
    augment_view,
    barlow_twins_views,
    crop_flip,
    random_crop_flip,
    random_resized_crop_params,
    resized_crop,
)
from hf_ssdd.data.augment import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    grayscale,
    hsv_to_rgb,
    rgb_to_grayscale,
    rgb_to_hsv,
    solarize,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(n: int = 16, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=_gen(seed))


# ---------------------------------------------------------------------------------------------------------------
# pad-crop + flip
# ---------------------------------------------------------------------------------------------------------------


def test_crop_with_known_offsets_equals_slicing():
    x = _batch(4)
    top, left = torch.tensor([0, 8, 3, 4]), torch.tensor([8, 0, 5, 4])
    flip = torch.tensor([False, True, False, True])
    out = crop_flip(x, top, left, flip, padding=4)
    padded = F.pad(x, (4, 4, 4, 4))
    for i in range(4):
        window = padded[i, :, top[i] : top[i] + 32, left[i] : left[i] + 32]
        assert torch.equal(out[i], window.flip(-1) if flip[i] else window)
    assert out.dtype == torch.uint8


def _window_positions(out: torch.Tensor, x: torch.Tensor, padding: int) -> list[tuple[int, int, bool]]:
    """(top, left, flipped) of every padded-image window of x that equals out (one image each)."""
    padded = F.pad(x, (padding,) * 4)
    size = x.shape[-1]
    windows = [
        (top, left, flipped, padded[:, top : top + size, left : left + size])
        for top in range(2 * padding + 1)
        for left in range(2 * padding + 1)
        for flipped in (False, True)
    ]
    return [(t, c, f) for t, c, f, w in windows if torch.equal(out, w.flip(-1) if f else w)]


@pytest.mark.parametrize("device", DEVICES)
def test_random_crop_flip_outputs_are_padded_windows(device):
    x = _batch(64).to(device)
    out = random_crop_flip(x, generator=_gen(1))
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    found = []
    for i in range(len(x)):
        matches = _window_positions(out[i], x[i], 4)
        assert matches, f"sample {i} is not a window of its padded image"
        found.append(matches[0])
    assert len({(t, c) for t, c, _ in found}) > 20  # offsets differ across samples
    assert 10 < sum(f for _, _, f in found) < 54  # about half are flipped


def test_random_crop_flip_float_and_no_flip():
    x = _batch(8).float() / 255
    out = random_crop_flip(x, padding=2, flip=False, generator=_gen(2))
    assert out.dtype == torch.float32
    for i in range(8):
        assert any(not flipped for _, _, flipped in _window_positions(out[i], x[i], 2))


def test_random_crop_flip_reproducible():
    x = _batch(16)
    assert torch.equal(random_crop_flip(x, generator=_gen(5)), random_crop_flip(x, generator=_gen(5)))
    assert not torch.equal(random_crop_flip(x, generator=_gen(5)), random_crop_flip(x, generator=_gen(6)))


# ---------------------------------------------------------------------------------------------------------------
# color ops against torchvision
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ours", "reference", "factors"),
    [
        (adjust_brightness, TF.adjust_brightness, torch.linspace(0.6, 1.4, 8)),
        (adjust_contrast, TF.adjust_contrast, torch.linspace(0.6, 1.4, 8)),
        (adjust_saturation, TF.adjust_saturation, torch.linspace(0.0, 1.8, 8)),
        (adjust_hue, TF.adjust_hue, torch.linspace(-0.5, 0.5, 8)),
    ],
)
def test_color_adjustments_match_torchvision(ours, reference, factors):
    x = _batch(8).float() / 255
    out = ours(x, factors)
    expected = torch.stack([reference(x[i], float(factors[i])) for i in range(8)])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours(x, 0.3), torch.stack([reference(im, 0.3) for im in x]), atol=1e-5, rtol=0)


def test_hsv_round_trip():
    x = _batch(8).float() / 255
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-5, rtol=0)


def test_grayscale_matches_torchvision():
    x = _batch(4).float() / 255
    torch.testing.assert_close(rgb_to_grayscale(x), TF.rgb_to_grayscale(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(grayscale(x), TF.rgb_to_grayscale(x, num_output_channels=3), atol=1e-6, rtol=0)


def test_solarize_matches_torchvision():
    x = _batch(4).float() / 255
    torch.testing.assert_close(solarize(x), TF.solarize(x, 0.5))


# ---------------------------------------------------------------------------------------------------------------
# random resized crop
# ---------------------------------------------------------------------------------------------------------------


def _consistent_with_rounding(boxes, size, scale, ratio):
    """Some unrounded box within ±0.5 px of each integer box has an area and aspect ratio in range."""
    h, w = boxes[:, 2].double(), boxes[:, 3].double()
    area_ok = ((h + 0.5) * (w + 0.5) >= scale[0] * size**2) & ((h - 0.5) * (w - 0.5) <= scale[1] * size**2)
    ratio_ok = ((w + 0.5) / (h - 0.5) >= ratio[0]) & ((w - 0.5) / (h + 0.5) <= ratio[1])
    return bool((area_ok & ratio_ok).all())


def test_crop_boxes_respect_scale_and_ratio():
    boxes = random_resized_crop_params(4000, 32, 32, (0.08, 1.0), (3 / 4, 4 / 3), generator=_gen(3))
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 32).all() and (left + w <= 32).all()
    assert _consistent_with_rounding(boxes, 32, (0.08, 1.0), (3 / 4, 4 / 3))
    area = (h * w).double() / 32**2
    assert area.min() < 0.1 and area.max() > 0.9 and 0.45 < area.mean() < 0.6  # spans the range (E ≈ 0.54)
    assert len(set(top.tolist())) > 20 and len(set(left.tolist())) > 20
    narrow = random_resized_crop_params(2000, 64, 64, (0.5, 0.6), (1.0, 1.0), generator=_gen(4))
    assert _consistent_with_rounding(narrow, 64, (0.5, 0.6), (1.0, 1.0))
    assert (narrow[:, 2] == narrow[:, 3]).all()


def test_crop_fallback_is_central():
    boxes = random_resized_crop_params(5, 10, 40, (0.9, 1.0), (1.0, 1.0), generator=_gen(0))
    assert (
        boxes.tolist() == [[0, 15, 10, 10]] * 5
    )  # torchvision: no square ≥ 90% fits, use the central square


def test_resized_crop_geometry():
    x = _batch(3, 16).float() / 255
    boxes = torch.tensor([[0, 0, 16, 16]] * 3)
    up = resized_crop(x, boxes, 40)
    torch.testing.assert_close(
        up, F.interpolate(x, size=40, mode="bilinear", align_corners=False), atol=1e-5, rtol=0
    )
    window = torch.tensor([[2, 5, 8, 8], [0, 0, 8, 8], [8, 8, 8, 8]])
    out = resized_crop(x, window, 8, flip=torch.tensor([False, True, False]))
    for i, (t, c, h, w) in enumerate(window.tolist()):
        expected = x[i, :, t : t + h, c : c + w]
        torch.testing.assert_close(out[i], expected.flip(-1) if i == 1 else expected, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# Barlow Twins views
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_views_shape_range_and_reproducibility(device):
    x = _batch(32).to(device)
    v1, v2 = barlow_twins_views(x, generator=_gen(7))
    assert v1.shape == v2.shape == (32, 3, 32, 32) and v1.dtype == torch.float32 and v1.device == x.device
    assert v1.min() >= 0 and v1.max() <= 1 and not torch.allclose(v1, v2)
    w1, w2 = barlow_twins_views(x, generator=_gen(7))
    assert torch.equal(v1, w1) and torch.equal(v2, w2)
    same_image = x[:1].expand(8, -1, -1, -1)
    views, _ = barlow_twins_views(same_image, generator=_gen(8))
    distinct = {tuple(v.flatten()[:64].tolist()) for v in views}
    assert len(distinct) == 8  # per-sample randomness


def test_uint8_and_float_inputs_agree():
    x = _batch(8)
    cfg = BarlowTwinsAugmentConfig(crop_size=24)
    a = augment_view(x, cfg, _gen(9))
    b = augment_view(x.float() / 255, cfg, _gen(9))
    assert a.shape == (8, 3, 24, 24)
    torch.testing.assert_close(a, b)


def test_cpu_generator_gives_same_views_on_gpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x = _batch(16)
    cpu = augment_view(x, BarlowTwinsAugmentConfig(), _gen(10))
    gpu = augment_view(x.cuda(), BarlowTwinsAugmentConfig(), _gen(10))
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=0)


def test_identity_config_only_crops():
    x = _batch(4).float() / 255
    cfg = BarlowTwinsAugmentConfig(
        min_scale=1.0,
        ratio=(1.0, 1.0),
        brightness=0,
        contrast=0,
        saturation=0,
        hue=0,
        gray_scale_prob=0,
        horizontal_flip_prob=0,
    )
    torch.testing.assert_close(augment_view(x, cfg, _gen(0)), x, atol=1e-5, rtol=0)


def test_probabilities_are_applied_per_sample():
    x = _batch(400, 8)
    always_gray = BarlowTwinsAugmentConfig(color_jitter_prob=0, gray_scale_prob=1.0, horizontal_flip_prob=0)
    gray = augment_view(x, always_gray, _gen(11))
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])
    sometimes = BarlowTwinsAugmentConfig(color_jitter_prob=0, gray_scale_prob=0.2, horizontal_flip_prob=0)
    out = augment_view(x, sometimes, _gen(12))
    is_gray = (out[:, 0] == out[:, 1]).flatten(1).all(1) & (out[:, 1] == out[:, 2]).flatten(1).all(1)
    assert abs(is_gray.float().mean().item() - 0.2) < 0.06
    solarized = BarlowTwinsAugmentConfig(
        min_scale=1.0, ratio=(1.0, 1.0), color_jitter_prob=0, gray_scale_prob=0, solarization_prob=1.0
    )
    flat = torch.full((2, 3, 8, 8), 200, dtype=torch.uint8)
    torch.testing.assert_close(augment_view(flat, solarized, _gen(0)), 1 - flat.float() / 255)


def test_default_views_are_asymmetric():
    # a flat light-gray image: jitter keeps it above 0.5 (brightness ≥ 0.6 · 0.9), so only solarization darkens it
    x = torch.full((400, 3, 8, 8), 230, dtype=torch.uint8)
    v1, v2 = barlow_twins_views(x, generator=_gen(1))
    assert (v1 > 0.5).all()
    assert math.isclose((v2[:, 0, 0, 0] < 0.5).float().mean().item(), 0.2, abs_tol=0.06)
