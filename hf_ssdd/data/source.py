"""Any image dataset, through ``datasets``, to a uint8 tensor that is decoded once and cached on disk.

``load_image_source("uoft-cs/cifar10")`` resolves the reference (catalog name, Hub id or local parquet folder),
loads the split with :func:`datasets.load_dataset`, decodes every image with Pillow (RGB, square LANCZOS resize as
in MKDT's transfer targets), and caches the N×3×S×S uint8 array as safetensors under
``$HF_SSDD_CACHE/sources/<fingerprint>.safetensors``. The next call with the same inputs only reads that file.

KRR-ST keeps whole source sets as float tensors in memory (``data/wrapper.py``); the same is done here,
but in uint8 (4× smaller than their float tensors) and on the requested device.

The steps live in their own modules, whose names are re-exported here: :mod:`hf_ssdd.data.resolve` (dataset
reference and columns), :mod:`hf_ssdd.data.decode` (images to uint8, label checks) and
:mod:`hf_ssdd.data.channel_norm` (normalization).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from datasets import ClassLabel
from safetensors import safe_open

from hf_ssdd.data.catalog import RGB
from hf_ssdd.data.channel_norm import _channel_tensor as _channel_tensor
from hf_ssdd.data.channel_norm import compute_normalization_stats as compute_normalization_stats
from hf_ssdd.data.channel_norm import denormalize as denormalize
from hf_ssdd.data.channel_norm import normalize as normalize
from hf_ssdd.data.decode import _THREAD_BATCH as _THREAD_BATCH
from hf_ssdd.data.decode import _WIDE_GRAY as _WIDE_GRAY
from hf_ssdd.data.decode import PROGRESS_ENV as PROGRESS_ENV
from hf_ssdd.data.decode import _decode_one as _decode_one
from hf_ssdd.data.decode import check_labels as check_labels
from hf_ssdd.data.decode import decode_images as decode_images
from hf_ssdd.data.decode import image_bytes as image_bytes
from hf_ssdd.data.decode import native_size as native_size
from hf_ssdd.data.decode import progress_bar as progress_bar
from hf_ssdd.data.decode import to_rgb as to_rgb
from hf_ssdd.data.resolve import DATA_DIR_ENV as DATA_DIR_ENV
from hf_ssdd.data.resolve import IMAGE_COLUMNS as IMAGE_COLUMNS
from hf_ssdd.data.resolve import LABEL_COLUMNS as LABEL_COLUMNS
from hf_ssdd.data.resolve import ResolvedDataset as ResolvedDataset
from hf_ssdd.data.resolve import _has_readme_configs as _has_readme_configs
from hf_ssdd.data.resolve import _image_column as _image_column
from hf_ssdd.data.resolve import _is_integer_feature as _is_integer_feature
from hf_ssdd.data.resolve import _label_column as _label_column
from hf_ssdd.data.resolve import _offline as _offline
from hf_ssdd.data.resolve import _parquet_splits as _parquet_splits
from hf_ssdd.data.resolve import _require_column as _require_column
from hf_ssdd.data.resolve import _resolve_folder as _resolve_folder
from hf_ssdd.data.resolve import _split_data_files as _split_data_files
from hf_ssdd.data.resolve import _split_names as _split_names
from hf_ssdd.data.resolve import _unreachable_message as _unreachable_message
from hf_ssdd.data.resolve import detect_columns as detect_columns
from hf_ssdd.data.resolve import load_hf_dataset as load_hf_dataset
from hf_ssdd.data.resolve import local_data_folder as local_data_folder
from hf_ssdd.data.resolve import resolve_dataset as resolve_dataset
from hf_ssdd.io import atomic_save_safetensors

CACHE_ENV = "HF_SSDD_CACHE"
PREPROCESSING = "rgb-square-lanczos-v2"  # v2: wide grayscale scaled, -1 labels left out
_CHUNK_ROWS = 8192
_CACHE_META_KEY = "hf_ssdd"


def _digest(*parts: Any) -> str:
    """16 hex characters of the SHA-256 of the JSON encoding of ``parts``."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class ImageSource:
    """A whole image dataset split as a uint8 tensor, with labels and preprocessing metadata.

    Attributes:
        images: uint8 N×3×S×S tensor.
        labels: int64 tensor of N class ids, or ``None`` for unlabeled data.
        class_names: class names from the ``ClassLabel`` feature, if any.
        name: the dataset reference given by the user.
        hub_id: Hub id of the dataset, if known.
        split: the split (expression) that was loaded.
        fingerprint: hash of the ``datasets`` fingerprint of the split and of the preprocessing; identical inputs
            give identical fingerprints in every process.
        mean: per-channel mean on the [0, 1] scale (catalog constants, else computed from the data).
        std: per-channel std on the [0, 1] scale.
        image_size: side length S.
        revision: Hub revision that was requested, if any.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    class_names: list[str] | None
    name: str
    hub_id: str | None
    split: str
    fingerprint: str
    mean: RGB
    std: RGB
    image_size: int
    revision: str | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def device(self) -> torch.device:
        return self.images.device

    @property
    def num_classes(self) -> int | None:
        """Number of classes: from the class names, else ``max(label) + 1``, else ``None``."""
        if self.class_names is not None:
            return len(self.class_names)
        if self.labels is None or len(self.labels) == 0:
            return None
        return int(self.labels.max()) + 1

    def to(self, device: str | torch.device) -> ImageSource:
        """A copy with images and labels on ``device``."""
        labels = None if self.labels is None else self.labels.to(device)
        return replace(self, images=self.images.to(device), labels=labels)

    def take(self, indices: torch.Tensor) -> torch.Tensor:
        """uint8 images of the rows at ``indices``, on the source's device (as :meth:`StreamedSource.take`)."""
        return self.images[indices.to(self.device)]

    def image_batches(self, start: int, stop: int, batch_size: int) -> Iterator[torch.Tensor]:
        """uint8 images of rows ``start .. stop−1`` in order, ``batch_size`` per batch except possibly the last
        (views, as :meth:`StreamedSource.image_batches` reads them from a stream)."""
        for first in range(start, stop, batch_size):
            yield self.images[first : min(first + batch_size, stop)]

    def subset(self, indices: Sequence[int] | torch.Tensor | np.ndarray) -> ImageSource:
        """The rows at ``indices`` (integer indices or a boolean mask), with a deterministic new fingerprint."""
        index = torch.as_tensor(np.asarray(indices) if not isinstance(indices, torch.Tensor) else indices)
        if index.dtype == torch.bool:
            index = index.nonzero().squeeze(1)
        index = index.to(torch.int64).reshape(-1).cpu()
        fingerprint = _digest("subset", self.fingerprint, hashlib.sha256(index.numpy().tobytes()).hexdigest())
        on_device = index.to(self.device)
        labels = None if self.labels is None else self.labels[on_device]
        return replace(self, images=self.images[on_device], labels=labels, fingerprint=fingerprint)

    def normalized(
        self, indices: Sequence[int] | torch.Tensor | None = None, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """``(images / 255 − mean) / std`` (of the rows at ``indices``, if given) as ``dtype`` on the device."""
        images = self.images if indices is None else self.images[torch.as_tensor(indices, device=self.device)]
        return normalize(images, self.mean, self.std, dtype)


def default_cache_dir() -> Path:
    """``$HF_SSDD_CACHE``, else ``~/.cache/hf_ssdd``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "hf_ssdd").expanduser()


def load_image_source(
    ref: str | os.PathLike,
    split: str = "train",
    image_size: int | None = None,
    device: str | torch.device = "cpu",
    max_examples: int | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    revision: str | None = None,
    convention: str = "krr_st",
) -> ImageSource:
    """Load a split as an :class:`ImageSource`, decoding once and caching the uint8 array on disk.

    Args:
        ref: catalog name (``cifar10``), Hub id (``uoft-cs/cifar10``) or local parquet folder.
        split: split name or ``datasets`` split expression.
        image_size: output side length; default: the catalog resolution, else the (square) native size shared
            by all images. Images of another size are resized to a square with PIL LANCZOS (MKDT §3).
        device: device of the returned tensors.
        max_examples: keep only the first N rows.
        image_column: image column (default: detected, see :func:`detect_columns`).
        label_column: label column (default: detected; ``None`` found means unlabeled).
        cache_dir: cache root (default ``$HF_SSDD_CACHE``, else ``~/.cache/hf_ssdd``).
        revision: Hub revision.
        convention: catalog normalization constants to use, ``"krr_st"`` or ``"mkdt"``; statistics computed
            from the data are used where the catalog has none.

    Raises:
        ValueError: empty split, unknown split, no image column, or differing image sizes without ``image_size``.
    """
    resolved = resolve_dataset(ref)
    dataset = load_hf_dataset(resolved, split, revision=revision)
    image_col, label_col = detect_columns(dataset.features, image_column, label_column, resolved.spec)
    rows = _num_rows(dataset, max_examples, resolved.ref, split)
    size = image_size or (resolved.spec.resolution if resolved.spec else None)
    resize = size is not None
    size = size or native_size(dataset.with_format("arrow")[:1].column(image_col)[0].as_py())
    key = _digest(
        PREPROCESSING, dataset._fingerprint, split, revision, size, resize, image_col, label_col, rows
    )
    path = Path(cache_dir or default_cache_dir()) / "sources" / f"{key}.safetensors"
    if not path.is_file():
        where = f"{resolved.ref!r} split {split!r}"
        _write_cache(path, *_decode_split(dataset, image_col, label_col, rows, size, resize, where))
    images, labels, meta = _read_cache(path)
    catalog = resolved.spec.stats(size, convention) if resolved.spec else None
    mean, std = catalog or (tuple(meta["mean"]), tuple(meta["std"]))
    return ImageSource(
        images=images.to(device),
        labels=None if labels is None else labels.to(device),
        class_names=meta["class_names"],
        name=resolved.ref,
        hub_id=resolved.hub_id,
        split=split,
        fingerprint=key,
        mean=mean,
        std=std,
        image_size=size,
        revision=revision,
    )


def _num_rows(dataset: datasets.Dataset, max_examples: int | None, ref: str, split: str) -> int:
    if max_examples is not None and max_examples < 1:
        raise ValueError(f"max_examples must be positive, got {max_examples}")
    rows = len(dataset) if max_examples is None else min(max_examples, len(dataset))
    if rows == 0:
        raise ValueError(f"split {split!r} of {ref!r} is empty")
    return rows


def _decode_split(
    dataset: datasets.Dataset,
    image_col: str,
    label_col: str | None,
    rows: int,
    size: int,
    resize: bool,
    where: str = "the dataset",
) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    """Decode the first ``rows`` rows: (uint8 images, int64 labels or None, metadata with stats and class names).

    Labels are checked (:func:`check_labels`); rows with the "no label" value -1 are left out, or, when no row has
    a label, the split is returned unlabeled with every image.
    """
    images = np.empty((rows, 3, size, size), dtype=np.uint8)
    labels = np.empty(rows, dtype=np.int64) if label_col else None
    arrow = dataset.select_columns([c for c in (image_col, label_col) if c]).with_format("arrow")
    with progress_bar(rows, "Decoding images") as bar:
        for start in range(0, rows, _CHUNK_ROWS):
            table = arrow[start : min(start + _CHUNK_ROWS, rows)]
            images[start : start + len(table)] = decode_images(
                table.column(image_col).to_pylist(), size, resize, where=where, first_row=start
            )
            if labels is not None:
                labels[start : start + len(table)] = table.column(label_col).fill_null(-1).to_numpy()
            bar.update(len(table))
    label_feature = dataset.features[label_col] if label_col else None
    names = label_feature.names if isinstance(label_feature, ClassLabel) else None
    excluded = 0
    if labels is not None:
        keep = check_labels(labels, len(names) if names else None, f"{where}, column {label_col!r}")
        if not keep.any():
            print(f"{where}: no row has a label (all -1): loaded as unlabeled")
            labels = None
        elif not keep.all():
            excluded = int((~keep).sum())
            print(f"{where}: {excluded} rows with the 'no label' value -1 left out, {int(keep.sum())} kept")
            images, labels = images[keep], labels[keep]
    tensor = torch.from_numpy(images)
    mean, std = compute_normalization_stats(tensor)
    meta = {"class_names": names, "mean": mean, "std": std, "unlabeled_rows_left_out": excluded}
    return tensor, None if labels is None else torch.from_numpy(labels), meta


def _write_cache(path: Path, images: torch.Tensor, labels: torch.Tensor | None, meta: dict[str, Any]) -> None:
    tensors = {"images": images} if labels is None else {"images": images, "labels": labels}
    atomic_save_safetensors(path, tensors, metadata={_CACHE_META_KEY: json.dumps(meta)})


def _read_cache(path: Path) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()[_CACHE_META_KEY])
        labels = handle.get_tensor("labels") if "labels" in handle.keys() else None
        return handle.get_tensor("images"), labels, meta
