"""Figures: image grids in [0, 1], the before/after grid's layout, curves written atomically."""

import numpy as np
import pytest
import torch
from PIL import Image

from hf_ssdd.plots import image_grid, save_before_after_grid, save_curves

MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


def _solid(values: list[int], size: int = 8) -> torch.Tensor:
    """One solid-grey uint8 image per value."""
    return torch.tensor(values, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, size, size).contiguous()


def test_image_grid_undoes_the_normalization():
    x = _solid([51, 204])
    normalized = (x.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    a = np.asarray(image_grid(x, nrow=2, padding=0))
    b = np.asarray(image_grid(normalized, mean=MEAN, std=STD, nrow=2, padding=0))
    np.testing.assert_array_equal(a, b)
    assert a[0, 0].tolist() == [51] * 3 and a[0, 8].tolist() == [204] * 3


def test_before_after_grid_alternates_rows_of_the_same_images(tmp_path):
    before = _solid(list(range(10, 130, 10)))  # 12 images
    after = _solid(list(range(15, 135, 10)))
    normalized_after = (after.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(
        1, 3, 1, 1
    )
    path = save_before_after_grid(
        tmp_path / "g.png", before, normalized_after, mean=MEAN, std=STD, per_row=5, tile_px=32
    )
    img = np.asarray(Image.open(path).convert("RGB"))
    scale, margin, pad = 4, 56, 2  # 8 px tiles → ×4; the left margin holds the row labels
    tile = 8 + pad  # grid pitch before scaling
    assert img.shape == (
        (4 * tile + pad) * scale,
        margin + (5 * tile + pad) * scale,
        3,
    )  # 2 row pairs, 10 pairs

    def pixel(row: int, col: int) -> int:
        y = (pad + row * tile + 4) * scale
        x = margin + (pad + col * tile + 4) * scale
        return int(img[y, x, 0])

    assert [pixel(0, c) for c in range(5)] == [10, 20, 30, 40, 50]  # before, first five
    assert [pixel(1, c) for c in range(5)] == [15, 25, 35, 45, 55]  # after, the same five
    assert [pixel(2, c) for c in range(5)] == [60, 70, 80, 90, 100]
    assert [pixel(3, c) for c in range(5)] == [65, 75, 85, 95, 105]
    with pytest.raises(ValueError, match="differ in shape"):
        save_before_after_grid(tmp_path / "bad.png", before, after[:3])


def test_save_curves_writes_a_png(tmp_path):
    path = save_curves(tmp_path / "c.png", {"a": [3.0, 2.0, 1.0]}, markers=True, references={"chance": 1.5})
    assert Image.open(path).format == "PNG" and not list(tmp_path.glob(".*"))
