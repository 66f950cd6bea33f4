"""Mirror a dataset into the ``$HF_SSDD_DATA_DIR`` layout, so that every later run works offline.

``hf-ssdd download cifar10 --to DIR`` (online) loads every split of the dataset with :func:`datasets.load_dataset`
and writes ``DIR/<folder>/<split>-NNNNN-of-MMMMM.parquet`` with the images embedded as bytes and the ``datasets``
features (class names included) in the parquet schema, the layout :func:`hf_ssdd.data.resolve_dataset` looks for.
``<folder>`` is the catalog's ``local_name`` (``cifar10``, ``tiny-imagenet``, …) or the last part of a Hub id.
Then ``export HF_SSDD_DATA_DIR=DIR`` and run anything with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import datasets
from datasets.table import embed_table_storage

from hf_ssdd.data.catalog import get_spec
from hf_ssdd.data.resolve import DATA_DIR_ENV
from hf_ssdd.io import atomic_directory
from hf_ssdd.utils import progress

__all__ = ["DownloadConfig", "download_dataset", "mirror_folder_name"]


@dataclass
class DownloadConfig:
    """Options of ``hf-ssdd download``.

    Attributes:
        dataset: catalog name (``hf-ssdd datasets``) or Hub dataset id to mirror.
        to: data folder to write into (the folder ``HF_SSDD_DATA_DIR`` will name); defaults to ``$HF_SSDD_DATA_DIR``.
        splits: splits to mirror (default: every split of the dataset).
        revision: Hub revision (branch, tag or commit) to download.
        max_shard_mb: largest parquet shard to write, in MB of in-memory Arrow data.
        overwrite: replace an existing mirror of the dataset.
    """

    dataset: str = ""
    to: str | None = None
    splits: list[str] | None = None
    revision: str | None = None
    max_shard_mb: int = 500
    overwrite: bool = False


def mirror_folder_name(dataset: str) -> str:
    """The folder under the data folder that holds a dataset: the catalog ``local_name``, else the id's last part."""
    spec = get_spec(dataset)
    return spec.local_name if spec else dataset.rstrip("/").split("/")[-1]


def download_dataset(cfg: DownloadConfig) -> Path:
    """Write the parquet mirror of ``cfg.dataset`` under ``cfg.to`` (atomically: all splits or nothing).

    Returns:
        The dataset's folder, ``<to>/<folder>``.

    Raises:
        ValueError: no dataset or target folder given, an unknown split, or a catalog entry with no Hub id.
        FileExistsError: the mirror exists and ``overwrite`` is not set.
    """
    if not cfg.dataset:
        raise ValueError("name the dataset to download: hf-ssdd download cifar10 --to DIR")
    root = cfg.to or os.environ.get(DATA_DIR_ENV)
    if not root:
        raise ValueError(f"say where to write the mirror: --to DIR (or set {DATA_DIR_ENV})")
    if cfg.max_shard_mb <= 0:
        raise ValueError(f"max_shard_mb must be positive, got {cfg.max_shard_mb}")
    spec = get_spec(cfg.dataset)
    hub_id = spec.hub_id if spec else cfg.dataset
    if hub_id is None:
        raise ValueError(
            f"{cfg.dataset!r} is a local-only sample with no Hub id: there is nothing to download"
        )
    target = Path(root).expanduser() / mirror_folder_name(cfg.dataset)
    if target.exists() and not cfg.overwrite:
        raise FileExistsError(f"{target} already exists; pass --overwrite to download it again")
    splits = load_splits(hub_id, cfg.splits, cfg.revision)
    with atomic_directory(target, overwrite=cfg.overwrite) as tmp:
        for split, ds in splits.items():
            write_parquet_shards(ds, tmp, split, cfg.max_shard_mb * 2**20)
    print(f"{hub_id} → {target} ({', '.join(f'{s}: {len(d)} rows' for s, d in splits.items())})")
    print(f"use it offline: export {DATA_DIR_ENV}={Path(root).expanduser().resolve()} HF_HUB_OFFLINE=1")
    return target


def load_splits(hub_id: str, splits: list[str] | None, revision: str | None) -> dict[str, datasets.Dataset]:
    """The requested splits (default: all) of a Hub dataset, loaded with :func:`datasets.load_dataset`."""
    loaded = datasets.load_dataset(hub_id, revision=revision)
    missing = sorted(set(splits or []) - set(loaded))
    if missing:
        raise ValueError(f"{hub_id} has no split {missing[0]!r}; available splits: {sorted(loaded)}")
    return {name: loaded[name] for name in (splits or list(loaded))}


def write_parquet_shards(ds: datasets.Dataset, folder: Path, split: str, max_shard_bytes: int) -> list[Path]:
    """``<split>-NNNNN-of-MMMMM.parquet`` shards of at most about ``max_shard_bytes``, images embedded as bytes."""
    num_shards = max(1, math.ceil(ds.data.nbytes / max_shard_bytes))
    paths = []
    for index in progress(range(num_shards), desc=f"writing {split}"):
        shard = ds.shard(num_shards, index, contiguous=True).with_format("arrow")
        shard = shard.map(
            embed_table_storage, batched=True
        )  # file-backed images become bytes (as push_to_hub)
        path = folder / f"{split}-{index:05d}-of-{num_shards:05d}.parquet"
        shard.with_format(None).to_parquet(str(path))
        paths.append(path)
    return paths
