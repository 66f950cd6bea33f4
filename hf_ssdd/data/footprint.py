"""How much memory a decoded source would take, and how much a run may use: the inputs of ``source.streaming: auto``.

:func:`source_bytes` estimates the uint8 N×3×S×S array :func:`~hf_ssdd.data.load_image_source` would build, from
parquet metadata or the dataset card (no image is decoded); :func:`default_memory_budget_gb` is the default of
``source.memory_budget_gb``.
"""

from __future__ import annotations

import os

import psutil  # a dependency of accelerate
import pyarrow.parquet as pq
from datasets import Image

from hf_ssdd.data.decode import native_size
from hf_ssdd.data.resolve import ResolvedDataset, detect_columns, load_hf_dataset, resolve_dataset

BUDGET_FRACTION = 0.5  # of the memory available when the run starts


def default_memory_budget_gb() -> float:
    """Half of the memory available now (``psutil.virtual_memory().available``), in GB (10⁹ bytes)."""
    return BUDGET_FRACTION * psutil.virtual_memory().available / 1e9


def decoded_bytes(num_rows: int, image_size: int) -> int:
    """Bytes of N decoded uint8 images of S×S pixels: ``N · 3 · S²``."""
    return num_rows * 3 * image_size * image_size


def split_num_rows(resolved: ResolvedDataset, split: str) -> int | None:
    """Rows of a split without reading any image: the parquet footers of a local folder, else the split sizes of
    the dataset card; ``None`` when neither records it."""
    if resolved.data_files is not None and split in resolved.data_files:
        return sum(pq.ParquetFile(f).metadata.num_rows for f in resolved.data_files[split])
    stream = load_hf_dataset(resolved, split, streaming=True)
    info = (stream.info.splits or {}).get(split)
    return info.num_examples if info is not None and info.num_examples else None


def source_bytes(
    ref: str | os.PathLike,
    split: str = "train",
    image_size: int | None = None,
    max_examples: int | None = None,
    image_column: str | None = None,
) -> int | None:
    """Estimated bytes of the decoded split, or ``None`` when the row count is not recorded or cannot be read.

    Rows come from the parquet footers of a local folder, else the split sizes of the dataset card; the side length
    is ``image_size``, else the catalog resolution, else the native size of the first image.
    """
    resolved = resolve_dataset(ref)
    size = image_size or (resolved.spec.resolution if resolved.spec else None)
    try:
        rows = split_num_rows(resolved, split)
        if rows is not None and size is None:
            stream = load_hf_dataset(resolved, split, streaming=True)
            column, _ = detect_columns(stream.features, image_column, None, resolved.spec)
            first = next(iter(stream.cast_column(column, Image(decode=False))))
            size = native_size(first[column])
    except (OSError, ValueError):  # unreachable Hub, damaged file: loading the source will say what is wrong
        return None
    if rows is None or size is None:
        return None
    return decoded_bytes(rows if max_examples is None else min(rows, max_examples), size)
