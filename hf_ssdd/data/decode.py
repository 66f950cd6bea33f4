"""Decoding of encoded images to uint8 arrays, and the checks of the labels that come with them.

:func:`decode_images` decodes ``datasets.Image`` values (or raw bytes) with Pillow in a thread pool to an
N×3×S×S uint8 array: every Pillow mode becomes 8-bit RGB (:func:`to_rgb`: palettes with transparency, CMYK, and
16-bit / float grayscale scaled rather than clipped), other sizes are resized to a square with LANCZOS, and an
undecodable image is named by dataset, row and file. :func:`check_labels` refuses out-of-range labels and marks the
rows with the "no label" value -1; :func:`progress_bar` is the decoding progress bar.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from tqdm.auto import tqdm

PROGRESS_ENV = "HF_SSDD_DISABLE_PROGRESS_BARS"
_THREAD_BATCH = 256


def image_bytes(item: dict | bytes) -> bytes:
    """Encoded bytes of one undecoded ``datasets.Image`` value (``{"bytes", "path"}``) or of raw bytes."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    if item is None:
        raise ValueError("missing image (None) in the image column")
    if item.get("bytes") is not None:
        return item["bytes"]
    if item.get("path"):
        return Path(item["path"]).read_bytes()
    raise ValueError("image value has neither bytes nor a path")


_WIDE_GRAY = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def to_rgb(image: PILImage.Image) -> PILImage.Image:
    """Convert any Pillow mode to 8-bit RGB.

    8-bit modes (L, LA, RGBA, CMYK, 1, P, ...) go through Pillow's conversion (alpha dropped, transparent palettes
    through RGBA). Wide grayscale is scaled instead of clipped (Pillow's own conversion saturates at 255): 16-bit
    and 32-bit integer (``I;16*``, ``I``) by round(x / 257) from 0–65535, float (``F``) by round(255 · x) from
    [0, 1]; values outside those ranges are clipped.
    """
    if image.mode == "RGB":
        return image
    if image.mode in _WIDE_GRAY:
        x = np.asarray(image, dtype=np.float64)
        x = x * 255.0 if image.mode == "F" else x / 257.0
        gray = np.clip(np.rint(x), 0, 255).astype(np.uint8)
        return PILImage.fromarray(np.repeat(gray[..., None], 3, axis=2))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def native_size(item: dict | bytes) -> int:
    """Side length of a square image, read from its header only.

    Raises:
        ValueError: the image is not square (then an explicit ``image_size`` is needed).
    """
    width, height = PILImage.open(io.BytesIO(image_bytes(item))).size
    if width != height:
        raise ValueError(f"images are not square (first one is {width}x{height}); pass image_size=")
    return width


def _decode_one(item: dict | bytes, size: int, resize: bool) -> np.ndarray:
    """One image as a 3×size×size uint8 array (square LANCZOS resize when ``resize`` and the size differs)."""
    image = to_rgb(PILImage.open(io.BytesIO(image_bytes(item))))
    if image.size != (size, size):
        if not resize:
            raise ValueError(
                f"images have different sizes ({image.size[0]}x{image.size[1]} and {size}x{size}); pass image_size="
            )
        image = image.resize((size, size), PILImage.Resampling.LANCZOS)
    return np.asarray(image).transpose(2, 0, 1)


def decode_images(
    items: Sequence[dict | bytes],
    image_size: int,
    resize: bool = True,
    num_threads: int | None = None,
    where: str = "",
    first_row: int = 0,
) -> np.ndarray:
    """Decode encoded images to an N×3×S×S uint8 array with Pillow in a thread pool.

    Args:
        items: undecoded ``datasets.Image`` values (``{"bytes", "path"}``) or raw encoded bytes.
        image_size: output side length S.
        resize: resize images of another size (square, LANCZOS); if ``False`` such images raise ``ValueError``.
        num_threads: decoding threads (default ``min(8, cpu_count)``).
        where: what the items come from (dataset and split), for error messages.
        first_row: row number of ``items[0]`` in that dataset, for error messages.

    Raises:
        ValueError: an image cannot be decoded; the message names ``where``, the row and, for file-backed images,
            the file.
    """
    out = np.empty((len(items), 3, image_size, image_size), dtype=np.uint8)

    def work(rows: range) -> None:
        for i in rows:
            try:
                out[i] = _decode_one(items[i], image_size, resize)
            except Exception as error:
                item = items[i]
                path = item.get("path") if isinstance(item, dict) else None
                raise ValueError(
                    f"cannot decode the image in {where or 'the dataset'}, row {first_row + i}"
                    f"{f' ({path})' if path else ''}: {type(error).__name__}: {error}; re-encode that image or "
                    "leave the row out"
                ) from error

    batches = [range(s, min(s + _THREAD_BATCH, len(items))) for s in range(0, len(items), _THREAD_BATCH)]
    threads = num_threads or min(8, os.cpu_count() or 1)
    if threads == 1 or len(batches) <= 1:
        for rows in batches:
            work(rows)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, batches))
    return out


def progress_bar(total: int, desc: str) -> tqdm:
    """A tqdm bar, disabled when stderr is not a TTY or ``HF_SSDD_DISABLE_PROGRESS_BARS=1``."""
    disabled = os.environ.get(PROGRESS_ENV, "").lower() in ("1", "true", "yes") or not sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit="img", disable=disabled)


def check_labels(labels: np.ndarray, num_classes: int | None, where: str) -> np.ndarray:
    """The rows to keep: every row but those with the "no label" value -1 (Hugging Face's ``ClassLabel`` convention).

    Raises:
        ValueError: a label below -1, or (with ``num_classes``) at or above ``num_classes``; names the row.
    """
    upper = num_classes if num_classes is not None else np.iinfo(np.int64).max
    bad = np.flatnonzero((labels < -1) | (labels >= upper))
    if bad.size:
        row = int(bad[0])
        allowed = f"[0, {num_classes})" if num_classes is not None else "non-negative"
        raise ValueError(
            f"{where}: label {int(labels[row])} at row {row} is outside {allowed} ({bad.size} such rows); fix the "
            "labels, or mark rows without a label with -1"
        )
    return labels != -1
