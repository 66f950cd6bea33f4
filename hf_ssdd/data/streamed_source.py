"""A split read as a stream of parquet shards, never decoded whole: the streamed counterpart of ``ImageSource``.

:func:`open_streamed_source` describes a split from its metadata (row count from the parquet footers or the dataset
card, side length, normalization) without decoding it. A distiller that streams (``source.streaming``) reads its
real batches from :meth:`StreamedSource.reader` (a :class:`~hf_ssdd.data.RealBatchReader`: this process's shards,
shuffled, resumable) and fetches the few rows it needs by index, e.g. its initial images, with
:meth:`StreamedSource.take`, which numbers rows as a non-streamed load does (shard files in order), so the same
indices pick the same images whether the split is streamed or in memory.

Normalization: the catalog constants, else statistics of the first :data:`STATS_ROWS` rows (an in-memory source
computes them over every row).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hf_ssdd.data.catalog import RGB
from hf_ssdd.data.channel_norm import compute_normalization_stats
from hf_ssdd.data.footprint import split_num_rows
from hf_ssdd.data.real_batches import RealBatchReader
from hf_ssdd.data.resolve import resolve_dataset
from hf_ssdd.utils import stable_hash

STATS_ROWS = 10_000


@dataclass
class StreamedSource:
    """A split that is streamed: its description and how to read it.

    Attributes:
        name: the dataset reference given by the user.
        hub_id: Hub id of the dataset, if known.
        split: the split name.
        fingerprint: hash of the shard files (names and sizes, or the Hub id and revision), the side length and
            the reading settings; a streamed and an in-memory source of the same split have different ones.
        mean: per-channel mean on the [0, 1] scale.
        std: per-channel std on the [0, 1] scale.
        image_size: side length S of the decoded images.
        num_rows: rows in the split.
        device: where :meth:`take` puts images (batches of :meth:`reader` stay on the CPU).
        shuffle_buffer: rows of the reader's shuffle buffer.
        num_workers: ``DataLoader`` workers that decode the reader's batches (0: this process).
        image_column: image column override.
        label_column: label column override.
        revision: Hub revision.
    """

    name: str
    hub_id: str | None
    split: str
    fingerprint: str
    mean: RGB
    std: RGB
    image_size: int
    num_rows: int
    device: torch.device
    shuffle_buffer: int = 4096
    num_workers: int = 0
    image_column: str | None = None
    label_column: str | None = None
    revision: str | None = None
    _taken: tuple[bytes, torch.Tensor] | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return self.num_rows

    def reader(
        self, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0, drop_last: bool = True
    ) -> RealBatchReader:
        """Shuffled uint8 batches of ``batch_size`` from this process's shards, forever (see RealBatchReader)."""
        return RealBatchReader(
            self.name,
            self.split,
            batch_size,
            self.image_size,
            rank=rank,
            world_size=world_size,
            seed=seed,
            shuffle_buffer=self.shuffle_buffer,
            num_workers=self.num_workers,
            drop_last=drop_last,
            image_column=self.image_column,
            label_column=self.label_column,
            revision=self.revision,
        )

    def image_batches(self, start: int, stop: int, batch_size: int) -> Iterator[torch.Tensor]:
        """uint8 images (CPU) of rows ``start .. stop−1`` in row order, ``batch_size`` per batch except the last."""
        return self.reader(1).ordered_batches(start, stop, batch_size)

    def take(self, indices: torch.Tensor) -> torch.Tensor:
        """uint8 images of the rows at ``indices`` (one pass over the shards, decoding only those rows); the last
        answer is kept, so asking again for the same rows (a distiller's initial images) reads nothing."""
        key = indices.to("cpu", torch.int64).numpy().tobytes()
        if self._taken is None or self._taken[0] != key:
            self._taken = (key, self.reader(1).rows_at(indices).images)
        return self._taken[1].to(self.device)


def is_split_name(split: str) -> bool:
    """``split`` names a whole split, not a ``datasets`` split expression (``train[:1000]``, ``train+test``)."""
    return not any(c in split for c in "[+")


def open_streamed_source(
    ref: str | os.PathLike,
    split: str = "train",
    image_size: int | None = None,
    device: str | torch.device = "cpu",
    *,
    shuffle_buffer: int = 4096,
    num_workers: int = 0,
    image_column: str | None = None,
    label_column: str | None = None,
    revision: str | None = None,
    convention: str = "krr_st",
) -> StreamedSource:
    """Describe ``split`` of ``ref`` for streaming; reads metadata, and images only for non-catalog statistics.

    Raises:
        ValueError: ``split`` is a split expression (slices would break the shard-to-process assignment), the
            row count is recorded nowhere, or the split cannot be read.
    """
    if not is_split_name(split):
        raise ValueError(
            f"split {split!r}: a streamed source reads whole splits; use a split name, or source.streaming false"
        )
    resolved = resolve_dataset(ref)
    rows = split_num_rows(resolved, split)
    if not rows:
        raise ValueError(
            f"{resolved.ref!r} split {split!r}: the row count is in neither the parquet footers nor the dataset card"
        )
    probe = RealBatchReader(
        ref, split, 1, image_size, image_column=image_column, label_column=label_column, revision=revision
    )
    assert probe.image_size is not None
    size = probe.image_size
    catalog = resolved.spec.stats(size, convention) if resolved.spec else None
    if catalog is None:
        sample = probe.rows_at(torch.arange(min(rows, STATS_ROWS))).images
        catalog = compute_normalization_stats(sample)
    mean, std = catalog
    fingerprint = stable_hash(
        [
            "stream",
            _files(resolved.data_files.get(split) if resolved.data_files else None)
            or [resolved.hub_id, revision],
            split,
            size,
            probe.image_column,
            probe.label_column,
            shuffle_buffer,
        ],
        length=16,
    )
    return StreamedSource(
        name=resolved.ref,
        hub_id=resolved.hub_id,
        split=split,
        fingerprint=fingerprint,
        mean=mean,
        std=std,
        image_size=size,
        num_rows=rows,
        device=torch.device(device),
        shuffle_buffer=shuffle_buffer,
        num_workers=num_workers,
        image_column=probe.image_column,
        label_column=probe.label_column,
        revision=revision,
    )


def _files(paths: list[str] | None) -> list[Any] | None:
    """(name, size) of each shard file: renaming a folder keeps the fingerprint, replacing a file changes it."""
    return None if not paths else [(Path(p).name, Path(p).stat().st_size) for p in paths]
