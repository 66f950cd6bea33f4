"""Any image dataset, through ``datasets``, to a uint8 tensor that is decoded once and cached on disk.

``load_image_source("uoft-cs/cifar10")`` resolves the reference (catalog name, Hub id or local parquet folder),
loads the split with :func:`datasets.load_dataset`, decodes every image with Pillow (RGB, square LANCZOS resize as
in MKDT's transfer targets), and caches the N×3×S×S uint8 array as safetensors under
``$HF_SSDD_CACHE/sources/<fingerprint>.safetensors``. The next call with the same inputs only reads that file.

KRR-ST keeps whole source sets as float tensors in memory (``data/wrapper.py``); the same is done here,
but in uint8 (4× smaller than their float tensors) and on the requested device.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sys
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import torch
from datasets import ClassLabel, Features, Image, Value, load_dataset
from PIL import Image as PILImage
from safetensors import safe_open
from tqdm.auto import tqdm

from hf_ssdd.data.catalog import RGB, DatasetSpec, get_spec
from hf_ssdd.io import atomic_save_safetensors

DATA_DIR_ENV = "HF_SSDD_DATA_DIR"
CACHE_ENV = "HF_SSDD_CACHE"
PROGRESS_ENV = "HF_SSDD_DISABLE_PROGRESS_BARS"
PREPROCESSING = "rgb-square-lanczos-v2"  # v2: wide grayscale scaled, -1 labels left out
IMAGE_COLUMNS = ("img", "image")
LABEL_COLUMNS = ("label", "fine_label", "labels")
_CHUNK_ROWS = 8192
_THREAD_BATCH = 256
_CACHE_META_KEY = "hf_ssdd"


# --------------------------------------------------------------------------------------------------------------
# Resolution of a dataset reference
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedDataset:
    """Where a dataset reference points.

    Attributes:
        ref: the reference as given by the user.
        hub_id: the Hub id of the dataset, if known.
        path_or_id: first argument for :func:`datasets.load_dataset` (``"parquet"`` when ``data_files`` is set).
        spec: the catalog entry, if the dataset is in the catalog.
        data_files: ``{split: [parquet files]}`` for a local folder without a README ``configs`` section.
        local_dir: the local folder, or ``None`` for the Hub.
    """

    ref: str
    hub_id: str | None
    path_or_id: str
    spec: DatasetSpec | None
    data_files: dict[str, list[str]] | None = None
    local_dir: str | None = None


def resolve_dataset(ref: str | os.PathLike) -> ResolvedDataset:
    """Resolve a catalog name, Hub id or local folder to something :func:`datasets.load_dataset` can load.

    An existing folder is used as is. A catalog name or Hub id becomes ``$HF_SSDD_DATA_DIR/<folder>`` when that
    folder exists (``<folder>`` = the catalog ``local_name``, else the last component of the id), else the Hub id.

    Raises:
        FileNotFoundError: a path-like reference does not exist, or a local-only catalog sample is missing.
    """
    text = os.fspath(ref)
    path = Path(text).expanduser()
    if path.is_dir():
        return _resolve_folder(text, path, get_spec(path.name))
    if text.startswith((".", "/", "~")):
        raise FileNotFoundError(f"dataset folder {text} does not exist")
    spec = get_spec(text)
    local = local_data_folder(spec.local_name if spec else text.rstrip("/").split("/")[-1])
    if local.is_dir():
        return _resolve_folder(text, local, spec)
    hub_id = spec.hub_id if spec else text
    if hub_id is None:
        raise FileNotFoundError(
            f"{text!r} exists only as a local sample; expected it at {local} (set {DATA_DIR_ENV})"
        )
    return ResolvedDataset(text, hub_id, hub_id, spec)


def local_data_folder(name: str) -> Path:
    """``$HF_SSDD_DATA_DIR/<name>`` (a path that may not exist; ``<unset HF_SSDD_DATA_DIR>/<name>`` if unset)."""
    root = os.environ.get(DATA_DIR_ENV)
    return Path(root).expanduser() / name if root else Path(f"<unset {DATA_DIR_ENV}>") / name


def _resolve_folder(ref: str, folder: Path, spec: DatasetSpec | None) -> ResolvedDataset:
    """A local folder: a dataset repo with README ``configs``, or ``[data/]<split>-*.parquet`` shards."""
    hub_id = spec.hub_id if spec else None
    if _has_readme_configs(folder):
        return ResolvedDataset(ref, hub_id, str(folder), spec, None, str(folder))
    data_files = _parquet_splits(folder)
    if not data_files:
        raise FileNotFoundError(
            f"no parquet files in {folder}: expected <split>-*.parquet, data/<split>-*.parquet "
            "or a README.md with a `configs` section"
        )
    return ResolvedDataset(ref, hub_id, "parquet", spec, data_files, str(folder))


def _has_readme_configs(folder: Path) -> bool:
    """Whether ``folder/README.md`` has YAML front matter with a ``configs`` key (the Hub repo layout)."""
    readme = folder / "README.md"
    if not readme.is_file():
        return False
    match = re.match(r"---\s*\n(.*?)\n---", readme.read_text(encoding="utf-8"), re.S)
    return bool(match and re.search(r"^configs:", match.group(1), re.M))


def _parquet_splits(folder: Path) -> dict[str, list[str]]:
    """``{split: sorted files}`` from ``<split>-*.parquet`` (or ``<split>.parquet``) in ``folder`` or ``folder/data``."""
    for base in (folder, folder / "data"):
        files = sorted(base.glob("*.parquet"))
        if files:
            splits: dict[str, list[str]] = {}
            for file in files:
                splits.setdefault(file.stem.split("-")[0], []).append(str(file))
            return splits
    return {}


def _split_names(split: str) -> list[str]:
    """Base split names in a ``datasets`` split expression (``"train[:10%]+val"`` → ``["train", "val"]``)."""
    return [part.split("[")[0].strip() for part in split.split("+")]


def _offline() -> bool:
    return bool(datasets.config.HF_HUB_OFFLINE)


def load_hf_dataset(
    ref: str | os.PathLike | ResolvedDataset,
    split: str,
    streaming: bool = False,
    revision: str | None = None,
) -> datasets.Dataset | datasets.IterableDataset:
    """Load one split of a dataset reference with :func:`datasets.load_dataset`.

    Args:
        ref: catalog name, Hub id, local folder, or an already resolved reference.
        split: split name or ``datasets`` split expression.
        streaming: return an ``IterableDataset`` instead of a memory-mapped ``Dataset``.
        revision: Hub revision (ignored, with a warning, for local folders).

    Raises:
        ValueError: the split does not exist (the message lists the available ones) or is empty.
        ConnectionError: offline and the dataset is neither under ``$HF_SSDD_DATA_DIR`` nor in the HF cache.
    """
    resolved = ref if isinstance(ref, ResolvedDataset) else resolve_dataset(ref)
    if resolved.local_dir is not None and revision is not None:
        warnings.warn(
            f"revision={revision!r} is ignored for the local folder {resolved.local_dir}", stacklevel=2
        )
        revision = None
    data_files = _split_data_files(resolved, split)
    try:
        return load_dataset(
            resolved.path_or_id, data_files=data_files, split=split, streaming=streaming, revision=revision
        )
    except pa.ArrowException as err:  # a corrupt or truncated parquet shard
        files = sorted({f for fs in (data_files or {}).values() for f in fs}) or [
            str(resolved.local_dir or resolved.ref)
        ]
        raise ValueError(
            f"cannot read split {split!r} of {resolved.ref!r}: {err} (files: {', '.join(files[:4])}"
            f"{' …' if len(files) > 4 else ''}); replace the damaged file, e.g. with `hf-ssdd download`"
        ) from err
    except ValueError as err:
        if "Unknown split" in str(err):
            raise ValueError(f"{resolved.ref!r} has no split {split!r}: {err}") from err
        if "corresponds to no data" in str(err):
            raise ValueError(f"split {split!r} of {resolved.ref!r} is empty") from err
        raise
    except (ConnectionError, FileNotFoundError) as err:
        if resolved.local_dir is None:
            raise ConnectionError(_unreachable_message(resolved)) from err
        raise


def _split_data_files(resolved: ResolvedDataset, split: str) -> dict[str, list[str]] | None:
    """The data files of the requested splits only (so that other splits are not converted)."""
    if resolved.data_files is None:
        return None
    missing = [name for name in _split_names(split) if name not in resolved.data_files]
    if missing:
        raise ValueError(
            f"{resolved.ref!r} has no split {missing[0]!r}; available splits: {sorted(resolved.data_files)}"
        )
    return {name: resolved.data_files[name] for name in _split_names(split)}


def _unreachable_message(resolved: ResolvedDataset) -> str:
    folder = local_data_folder(resolved.spec.local_name if resolved.spec else resolved.ref.split("/")[-1])
    why = (
        "the Hub is offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)"
        if _offline()
        else "the Hub cannot be reached"
    )
    return (
        f"cannot load {resolved.ref!r}: {why} and no local copy was found at {folder}; while online, run "
        f"`hf-ssdd download {resolved.ref} --to DIR`, then set {DATA_DIR_ENV}=DIR (or pass the path of a local "
        "parquet folder)"
    )


# --------------------------------------------------------------------------------------------------------------
# Column detection
# --------------------------------------------------------------------------------------------------------------


def detect_columns(
    features: Features | None,
    image_column: str | None = None,
    label_column: str | None = None,
    spec: DatasetSpec | None = None,
) -> tuple[str, str | None]:
    """Pick the image and label columns: explicit names, else catalog names, else conventional names or types.

    Image: ``img`` / ``image``, else the only :class:`datasets.Image` column. Label: ``label`` / ``fine_label`` /
    ``labels``, else the only :class:`datasets.ClassLabel` column, else ``None`` (unlabeled data).

    Raises:
        ValueError: no (or an ambiguous) image column, or a named column that is missing or of the wrong type.
    """
    if features is None:
        if image_column is None:
            raise ValueError("the dataset does not declare its features; pass image_column=")
        return image_column, label_column
    return _image_column(features, image_column, spec), _label_column(features, label_column, spec)


def _image_column(features: Features, override: str | None, spec: DatasetSpec | None) -> str:
    columns = list(features)
    if override is not None:
        _require_column(features, override, "image_column")
        if not isinstance(features[override], Image):
            raise ValueError(f"column {override!r} is a {features[override]!r}, not an image column")
        return override
    preferred = ((spec.image_column,) if spec else ()) + IMAGE_COLUMNS
    for name in preferred:
        if isinstance(features.get(name), Image):
            return name
    images = [name for name, feature in features.items() if isinstance(feature, Image)]
    if len(images) == 1:
        return images[0]
    if not images:
        raise ValueError(f"no image column; columns are {columns}; pass image_column=")
    raise ValueError(f"several image columns {images}; pass image_column=")


def _label_column(features: Features, override: str | None, spec: DatasetSpec | None) -> str | None:
    if override is not None:
        _require_column(features, override, "label_column")
        if not _is_integer_feature(features[override]):
            raise ValueError(
                f"label column {override!r} is a {features[override]!r}; labels must be integers"
            )
        return override
    preferred = ((spec.label_column,) if spec else ()) + LABEL_COLUMNS
    for name in preferred:
        if name in features and _is_integer_feature(features[name]):
            return name
    class_labels = [name for name, feature in features.items() if isinstance(feature, ClassLabel)]
    return class_labels[0] if len(class_labels) == 1 else None


def _require_column(features: Features, name: str, argument: str) -> None:
    if name not in features:
        raise ValueError(f"{argument}={name!r} not found; columns are {list(features)}")


def _is_integer_feature(feature: Any) -> bool:
    return isinstance(feature, ClassLabel) or (
        isinstance(feature, Value) and feature.dtype.startswith(("int", "uint"))
    )


# --------------------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------------
# Normalization
# --------------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------------
# ImageSource
# --------------------------------------------------------------------------------------------------------------


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


def _write_cache(path: Path, images: torch.Tensor, labels: torch.Tensor | None, meta: dict[str, Any]) -> None:
    tensors = {"images": images} if labels is None else {"images": images, "labels": labels}
    atomic_save_safetensors(path, tensors, metadata={_CACHE_META_KEY: json.dumps(meta)})


def _read_cache(path: Path) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()[_CACHE_META_KEY])
        labels = handle.get_tensor("labels") if "labels" in handle.keys() else None
        return handle.get_tensor("images"), labels, meta
