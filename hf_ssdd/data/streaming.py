"""Streaming path for source sets too large for memory (e.g. ImageNet 64x64 for KRR-ST).

Each process streams only its own parquet shards through :func:`datasets.distributed.split_dataset_by_node` and
moves batches to its device itself. Do not pass the stream (or a DataLoader over it) through
``accelerate.Accelerator.prepare``: with ``dispatch_batches=False`` that shards a second time and silently drops
half of the data, and with the default ``dispatch_batches=True`` rank 0 reads and broadcasts everything.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from typing import NamedTuple

import datasets
import torch
from datasets import Image
from datasets.distributed import split_dataset_by_node

from hf_ssdd.data.decode import decode_images, native_size
from hf_ssdd.data.resolve import detect_columns, load_hf_dataset, resolve_dataset


class ImageBatch(NamedTuple):
    """One streamed batch: uint8 B×3×S×S images (CPU) and int64 labels (``None`` for unlabeled data)."""

    images: torch.Tensor
    labels: torch.Tensor | None


def shard_for_rank(stream: datasets.IterableDataset, rank: int, world_size: int) -> datasets.IterableDataset:
    """This rank's part of ``stream``; warns when shards cannot be split evenly (then every rank reads everything).

    Raises:
        ValueError: ``rank`` is not in ``[0, world_size)``.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    if world_size == 1:
        return stream
    if stream.num_shards % world_size:
        warnings.warn(
            f"the stream has {stream.num_shards} shards, not a multiple of world_size={world_size}: every rank reads "
            f"all the data and keeps one example in {world_size}; reshard to a multiple of {world_size} parquet files",
            stacklevel=2,
        )
    return split_dataset_by_node(stream, rank=rank, world_size=world_size)


def stream_image_batches(
    ref: str | os.PathLike,
    split: str,
    batch_size: int,
    image_size: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    shuffle_buffer: int | None = None,
    seed: int = 0,
    image_column: str | None = None,
    label_column: str | None = None,
    revision: str | None = None,
) -> Iterator[ImageBatch]:
    """Stream decoded, resized uint8 batches of one split, sharded across processes.

    Args:
        ref: catalog name, Hub id or local parquet folder (resolved as in :func:`resolve_dataset`).
        split: split name.
        batch_size: images per batch (the last batch may be smaller).
        image_size: output side length; default: the catalog resolution, else the native size of the first image.
        rank: index of this process.
        world_size: number of processes; each one gets disjoint examples.
        shuffle_buffer: if set, shuffle shard order and examples with a buffer of this size.
        seed: shuffling seed; use the same one on every rank (``datasets`` shuffles the shard order before it
            assigns shards to ranks, so different seeds make ranks overlap).
        image_column: image column override.
        label_column: label column override.
        revision: Hub revision.

    Yields:
        :class:`ImageBatch` on the CPU; move it with ``.to(device)``.
    """
    resolved = resolve_dataset(ref)
    stream = load_hf_dataset(resolved, split, streaming=True, revision=revision)
    image_col, label_col = detect_columns(stream.features, image_column, label_column, resolved.spec)
    stream = stream.select_columns([c for c in (image_col, label_col) if c])
    stream = shard_for_rank(stream.cast_column(image_col, Image(decode=False)), rank, world_size)
    if shuffle_buffer:
        stream = stream.shuffle(seed=seed, buffer_size=shuffle_buffer)
    size = image_size or (resolved.spec.resolution if resolved.spec else None)
    resize = size is not None
    for batch in stream.iter(batch_size=batch_size):
        items = batch[image_col]
        size = size or native_size(items[0])
        images = torch.from_numpy(decode_images(items, size, resize))
        labels = torch.as_tensor(batch[label_col], dtype=torch.int64) if label_col else None
        yield ImageBatch(images, labels)
