"""Streamed real batches for distillation: this process's parquet shards, shuffled, exactly resumable.

:class:`RealBatchReader` replaces indexing an in-memory :class:`~hf_ssdd.data.ImageSource` when the source does not
fit in memory. It reads a split through ``datasets`` streaming, one parquet shard at a time, and yields uint8
batches (:class:`~hf_ssdd.data.streaming.ImageBatch`) forever, epoch after epoch:

- epoch ``e`` permutes the shards with a generator seeded from ``(seed, e)``, the same on every process; process
  ``rank`` reads positions ``rank, rank + world_size, ...`` of that order, so every row of an epoch is read by
  exactly one process (the shard count must be a multiple of the process count);
- rows pass through a shuffle buffer seeded from ``(seed, e, rank)``; images are decoded only when their batch is
  yielded, optionally in ``DataLoader`` worker processes (``num_workers``; worker ``w`` decodes batches
  ``w, w + num_workers, ...``, which the ``DataLoader`` returns in order);
- the position is ``(epoch, batches yielded in the epoch)`` (:meth:`~RealBatchReader.state_dict`); a resumed
  reader re-reads that epoch's rows up to the position without decoding them, so it yields exactly the batches an
  uninterrupted one would (``datasets``' own ``IterableDataset.state_dict`` refills a shuffle buffer on resume, so
  it does not).

Like :mod:`hf_ssdd.data.streaming`, batches stay on the CPU; do not pass the reader through
``accelerate.Accelerator.prepare`` (that shards a second time).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from datasets import Image

from hf_ssdd.data.decode import decode_images, native_size
from hf_ssdd.data.resolve import detect_columns, load_hf_dataset, resolve_dataset
from hf_ssdd.data.streaming import ImageBatch
from hf_ssdd.utils import derived_generator

_READ_ROWS = 256  # rows per arrow read of a shard


class _Row(NamedTuple):
    """One undecoded row and where it comes from (for error messages)."""

    image: Any
    label: int | None
    shard: str
    row: int


class RealBatchReader:
    """Shuffled uint8 batches of one split, this process's shards only, resumable to the batch.

    Args:
        ref: catalog name, Hub id or local parquet folder (:func:`~hf_ssdd.data.resolve_dataset`).
        split: split name (not an expression: slicing would break the shard-to-process assignment).
        batch_size: images per batch (per process).
        image_size: output side length; default: the catalog resolution, else the native size of the first image.
        rank: index of this process.
        world_size: number of processes.
        seed: seeds the shard order and the shuffle buffer (the same on every process).
        shuffle_buffer: rows held (undecoded) for shuffling; 1 reads the shards' rows in order.
        num_workers: ``DataLoader`` worker processes that decode; 0 decodes in this process (a thread pool).
        drop_last: drop each epoch's last incomplete batch of this process.
        image_column: image column override.
        label_column: label column override.
        revision: Hub revision.

    Raises:
        ValueError: the shard count is not a multiple of ``world_size``, ``rank`` is out of range, or a setting is
            not positive.
    """

    def __init__(
        self,
        ref: str | os.PathLike,
        split: str = "train",
        batch_size: int = 256,
        image_size: int | None = None,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle_buffer: int = 4096,
        num_workers: int = 0,
        drop_last: bool = True,
        image_column: str | None = None,
        label_column: str | None = None,
        revision: str | None = None,
    ):
        if min(batch_size, shuffle_buffer, world_size) < 1 or num_workers < 0:
            raise ValueError("batch_size, shuffle_buffer and world_size must be ≥ 1, num_workers ≥ 0")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        resolved = resolve_dataset(ref)
        stream = load_hf_dataset(resolved, split, streaming=True, revision=revision)
        assert isinstance(stream, datasets.IterableDataset)
        self.image_column, self.label_column = detect_columns(
            stream.features, image_column, label_column, resolved.spec
        )
        self.shard_names = _shard_files(stream)
        columns = [c for c in (self.image_column, self.label_column) if c]
        stream = stream.select_columns(columns).cast_column(self.image_column, Image(decode=False))
        if stream.num_shards % world_size:
            raise ValueError(
                f"split {split!r} of {resolved.ref!r} has {stream.num_shards} parquet shards, not a multiple of "
                f"the {world_size} processes: rewrite it as a multiple of {world_size} files or use a process "
                f"count that divides {stream.num_shards}"
            )
        self.shards = [stream.shard(num_shards=stream.num_shards, index=i) for i in range(stream.num_shards)]
        self.where = f"{resolved.ref!r} split {split!r}"
        self.batch_size, self.rank, self.world_size, self.seed = batch_size, rank, world_size, seed
        self.shuffle_buffer, self.num_workers, self.drop_last = shuffle_buffer, num_workers, drop_last
        self.resize = bool(image_size or (resolved.spec and resolved.spec.resolution))
        self.image_size = image_size or (resolved.spec.resolution if resolved.spec else None)
        if self.image_size is None:
            self.image_size = native_size(next(iter(self.shards[0]))[self.image_column])
        self.epoch, self.batch = 0, 0
        self._offsets: dict[str, int] | None = None

    # ---------------------------------------------------------------------------------------------- position
    def state_dict(self) -> dict[str, int]:
        """The stream position: the epoch and how many batches of it this reader has yielded."""
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a position given by :meth:`state_dict` (the next iteration starts there)."""
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])

    # ----------------------------------------------------------------------------------------------- reading
    def epoch_shards(self, epoch: int) -> list[int]:
        """Indices of the shards this process reads in ``epoch``, in reading order."""
        order = torch.randperm(len(self.shards), generator=derived_generator(self.seed, "real-shards", epoch))
        return order[self.rank :: self.world_size].tolist()

    def _shard_rows(self, index: int) -> Iterator[_Row]:
        """The rows of shard ``index`` in file order; an unreadable shard raises naming its file and row."""
        shard, name = self.shards[index], self.shard_names[index]
        row = 0
        try:
            for table in shard.with_format("arrow").iter(batch_size=_READ_ROWS):
                images = table.column(self.image_column).to_pylist()
                labels = table.column(self.label_column).to_pylist() if self.label_column else None
                for i, image in enumerate(images):
                    yield _Row(image, None if labels is None else labels[i], name, row)
                    row += 1
        except (pa.ArrowException, OSError, ValueError) as err:
            raise ValueError(
                f"cannot read {name} ({self.where}) at row {row}: {err}; replace the file, e.g. with "
                "`hf-ssdd download`"
            ) from err

    def shard_offsets(self) -> dict[str, int]:
        """Each shard's first row as a global index (row order of a non-streamed load: shard files in order),
        keyed by shard name; from the parquet footers of local files, else by reading the shards once (no decode)."""
        if self._offsets is None:
            counts = [
                pq.ParquetFile(name).metadata.num_rows
                if Path(name).is_file()
                else sum(1 for _ in self._shard_rows(index))
                for index, name in enumerate(self.shard_names)
            ]
            starts = itertools.accumulate(counts[:-1], initial=0)
            self._offsets = dict(zip(self.shard_names, starts, strict=True))
        return self._offsets

    def epoch_batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, ImageBatch]]:
        """One epoch of this process's rows, shuffled as the endless iteration shuffles them, each batch with the
        global indices of its rows (:meth:`shard_offsets`); decoded in this process, the position is untouched."""
        offsets = self.shard_offsets()
        for rows in self._raw_batches(epoch):
            indices = torch.tensor([offsets[r.shard] + r.row for r in rows], dtype=torch.int64)
            yield indices, self.decode(rows)

    def ordered_batches(self, start: int, stop: int, batch_size: int) -> Iterator[torch.Tensor]:
        """uint8 images of rows ``start .. stop−1`` in order, ``batch_size`` per batch except possibly the last;
        shards before ``start`` are skipped unread, rows before it within a shard read but not decoded."""
        offsets = self.shard_offsets()
        batch: list[_Row] = []
        for index, name in enumerate(self.shard_names):
            following = self.shard_names[index + 1] if index + 1 < len(self.shard_names) else None
            if following is not None and offsets[following] <= start:
                continue
            if offsets[name] >= stop:
                break
            for row in self._shard_rows(index):
                position = offsets[name] + row.row
                if position >= stop:
                    break
                if position >= start:
                    batch.append(row)
                if len(batch) == batch_size:
                    yield self.decode(batch).images
                    batch = []
        if batch:
            yield self.decode(batch).images

    def rows_at(self, indices: torch.Tensor) -> ImageBatch:
        """The rows at global ``indices`` of the split (row order of the shard files, as a non-streamed load
        numbers them), decoded in the order given; one pass over the shards in file order, decoding only them."""
        wanted = indices.to(torch.int64).reshape(-1).tolist()
        if wanted and min(wanted) < 0:
            raise ValueError(f"row indices must be ≥ 0, got {min(wanted)}")
        wanted_rows = set(wanted)
        found: dict[int, _Row] = {}
        offset = 0
        for index in range(len(self.shards)):
            if len(found) == len(wanted_rows):
                break
            for row in self._shard_rows(index):
                if offset in wanted_rows:
                    found[offset] = row
                offset += 1
        missing = [row for row in wanted if row not in found]
        if missing:
            raise ValueError(f"{self.where} has {offset} rows; row {missing[0]} does not exist")
        return self.decode([found[row] for row in wanted])

    def _shuffled_rows(self, epoch: int) -> Iterator[_Row]:
        """This process's rows of ``epoch`` through the shuffle buffer (seeded from seed, epoch, rank)."""
        gen = derived_generator(self.seed, "real-buffer", epoch, self.rank)
        buffer: list[_Row] = []
        for index in self.epoch_shards(epoch):
            for row in self._shard_rows(index):
                if len(buffer) < self.shuffle_buffer:
                    buffer.append(row)
                    continue
                pick = int(torch.randint(len(buffer), (1,), generator=gen))
                yield buffer[pick]
                buffer[pick] = row
        for pick in torch.randperm(len(buffer), generator=gen).tolist():
            yield buffer[pick]

    def _raw_batches(self, epoch: int) -> Iterator[list[_Row]]:
        """The undecoded batches of ``epoch``."""
        batch: list[_Row] = []
        for row in self._shuffled_rows(epoch):
            batch.append(row)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def raw_batches_from(self, epoch: int, batch: int) -> Iterator[tuple[int, int, list[_Row]]]:
        """``(epoch, batch index, rows)`` from a position on, forever; earlier batches are read, not decoded."""
        while True:
            empty = True
            for index, rows in enumerate(self._raw_batches(epoch)):
                empty = False
                if index >= batch:
                    yield epoch, index, rows
            if empty:
                raise ValueError(
                    f"{self.where}: process {self.rank} has no complete batch of {self.batch_size}"
                )
            epoch, batch = epoch + 1, 0

    def decode(self, rows: list[_Row]) -> ImageBatch:
        """Decode a batch; an undecodable image raises naming its shard file and row."""
        assert self.image_size is not None
        items = [r.image for r in rows]
        try:
            images = decode_images(items, self.image_size, self.resize, where=self.where)
        except ValueError:
            for r in rows:  # find the culprit and name its file and row
                decode_images([r.image], self.image_size, self.resize, where=r.shard, first_row=r.row)
            raise
        labels = (
            None if self.label_column is None else torch.tensor([r.label for r in rows], dtype=torch.int64)
        )
        return ImageBatch(torch.from_numpy(images), labels)

    def __iter__(self) -> Iterator[ImageBatch]:
        """Batches from the current position on, forever; the position advances with every batch yielded."""
        if self.num_workers == 0:
            decoded: Iterator[tuple[int, int, ImageBatch]] = (
                (epoch, index, self.decode(rows))
                for epoch, index, rows in self.raw_batches_from(self.epoch, self.batch)
            )
        else:
            decoded = iter(
                torch.utils.data.DataLoader(
                    _DecodingWorkers(self, self.epoch, self.batch),
                    batch_size=None,
                    num_workers=self.num_workers,
                    multiprocessing_context="spawn",  # forking a process with live thread pools can deadlock
                )
            )
        for epoch, index, batch in decoded:
            self.epoch, self.batch = epoch, index + 1
            yield batch


def _shard_files(stream: datasets.IterableDataset) -> list[str]:
    """The file of each shard of a freshly loaded parquet stream (its examples iterable lists them; a private
    attribute of ``datasets``, hence the fallback to "shard <index>")."""
    files = getattr(getattr(stream, "_ex_iterable", None), "kwargs", {}).get("files")
    if isinstance(files, list) and len(files) == stream.num_shards:
        return [str(f) for f in files]
    return [f"shard {i}" for i in range(stream.num_shards)]


class _DecodingWorkers(torch.utils.data.IterableDataset):
    """Every worker reads the same undecoded stream and decodes every ``num_workers``-th batch, its own."""

    def __init__(self, reader: RealBatchReader, epoch: int, batch: int):
        self.reader, self.epoch, self.batch = reader, epoch, batch

    def __iter__(self) -> Iterator[tuple[int, int, ImageBatch]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for count, (epoch, index, rows) in enumerate(self.reader.raw_batches_from(self.epoch, self.batch)):
            if count % workers == worker:
                yield epoch, index, self.reader.decode(rows)
