"""Resolution of a dataset reference (catalog name, Hub id or local parquet folder) and of its columns.

:func:`resolve_dataset` turns a reference into something :func:`datasets.load_dataset` can load (a local folder
under ``$HF_SSDD_DATA_DIR`` first, else the Hub), :func:`load_hf_dataset` loads one split of it with error
messages that name the split, the damaged file or the ``hf-ssdd download`` command, and :func:`detect_columns`
picks the image and label columns from explicit names, the catalog, conventional names or the feature types.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
from datasets import ClassLabel, Features, Image, Value, load_dataset

from hf_ssdd.data.catalog import DatasetSpec, get_spec

DATA_DIR_ENV = "HF_SSDD_DATA_DIR"
IMAGE_COLUMNS = ("img", "image")
LABEL_COLUMNS = ("label", "fine_label", "labels")


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
