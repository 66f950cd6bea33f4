"""Teacher features of a whole split, cached on disk as a memory-mapped array.

:func:`encode_source` computes the features of every image of a source in batches, with a progress bar, sharded over
the processes of ``accelerate`` when there are several, and caches them under :func:`feature_cache_path`, keyed by
teacher id + revision + preprocessing + source fingerprint. The cache is a ``.npy`` file written batch by batch
into a temporary file and renamed into place when complete (:func:`hf_ssdd.io.atomic_path`), so a reader never sees
a half-written file; it is read memory-mapped, so N×D features cost page cache, not process memory, and every
process on a machine shares the same pages (``docs/architecture.md``, "Conventions": nothing big is copied).

A source is read in row order through ``image_batches(start, stop, batch_size)`` (:class:`StreamedImages`): an
in-memory :class:`~hf_ssdd.data.ImageSource` slices its tensor, a :class:`~hf_ssdd.data.StreamedSource` decodes
its parquet shards batch by batch, so the features of a source larger than memory are never held whole either.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from numpy.lib.format import open_memmap

from hf_ssdd.io import atomic_path
from hf_ssdd.teachers.base import TeacherError
from hf_ssdd.teachers.teacher import Teacher
from hf_ssdd.utils import cache_root, progress, stable_hash


@runtime_checkable
class StreamedImages(Protocol):
    """A source read in row order, batch by batch, without being held whole in memory.

    ``image_batches(start, stop, batch_size)`` yields uint8 B×3×H×W tensors of rows ``start .. stop-1`` in order,
    ``batch_size`` rows each except possibly the last.
    """

    name: str
    fingerprint: str

    def __len__(self) -> int: ...

    def image_batches(self, start: int, stop: int, batch_size: int) -> Iterable[torch.Tensor]: ...


def feature_cache_path(teacher: Teacher, source: Any, cache_dir: str | Path | None = None) -> Path:
    """Where :func:`encode_source` keeps the features of ``source`` under ``teacher`` (a ``.npy`` file)."""
    key = stable_hash({"teacher": teacher.cache_id, "source": source.fingerprint, "n": len(source)})
    return Path(cache_dir or cache_root()) / "features" / f"{key}.npy"


def read_feature_cache(path: Path, num_rows: int) -> torch.Tensor | None:
    """The cached N×D float32 features at ``path``, memory-mapped, or ``None`` if absent or unusable.

    Unusable: a header numpy cannot parse, another dtype or row count, or a file shorter or longer than its header
    says (a truncated copy). The mapping is copy-on-write (``mmap_mode="c"``): a caller that writes into the tensor
    changes its own pages, never the file or another process's view.
    """
    if not path.is_file():
        return None
    try:
        array = np.load(path, mmap_mode="c")
    except (ValueError, OSError, EOFError):  # unparsable header, or a file shorter than the header says
        return None
    expected_bytes = array.offset + array.nbytes
    if (
        array.dtype != np.float32
        or array.ndim != 2
        or array.shape[0] != num_rows
        or path.stat().st_size != expected_bytes
    ):
        return None
    return torch.from_numpy(array)


def _rank_batches(reader: Any, n: int, start: int, stop: int, batch_size: int) -> Iterator[torch.Tensor]:
    """Batches of rows ``start .. stop-1``, rows ≥ ``n`` being copies of the last real row.

    Every process gets batches of the same sizes (set by ``stop - start``, equal on every rank), so that a sharded
    (FSDP) teacher sees the same number of forward calls everywhere and the batches can be gathered.
    """
    real = iter(reader.image_batches(start, min(stop, n), batch_size) if start < n else ())
    last_row: torch.Tensor | None = None
    for first in range(start, stop, batch_size):
        size = min(batch_size, stop - first)
        batch = next(real, None)
        if batch is None:  # past the end of the source
            if last_row is None:
                last_row = next(iter(reader.image_batches(n - 1, n, 1)))[-1:]
            batch = last_row.expand(size, *last_row.shape[1:])
        elif len(batch) > size:
            raise ValueError(f"image_batches yielded {len(batch)} rows, asked for batches of {batch_size}")
        elif len(batch) < size:
            batch = torch.cat([batch, batch[-1:].expand(size - len(batch), *batch.shape[1:])])
        last_row = batch[-1:]
        yield batch


def _open_sink(tmp: Path | None, shape: tuple[int, int]) -> np.ndarray:
    """The array the features are written into: a new ``.npy`` memory map at ``tmp``, else memory."""
    return np.empty(shape, np.float32) if tmp is None else open_memmap(tmp, "w+", np.float32, shape)


def _write_gathered(
    sink: np.ndarray, gathered: torch.Tensor, batch_rows: int, per_rank: int, offset: int
) -> None:
    """Put one gathered batch (rank 0's ``batch_rows`` rows, then rank 1's, ...) at its rows of ``sink``.

    Rank r's batch starts at row ``r * per_rank + offset``; padding rows past the end of ``sink`` are dropped.
    """
    n = len(sink)
    for r, part in enumerate(gathered.split(batch_rows)):
        first = r * per_rank + offset
        rows = max(0, min(len(part), n - first))
        sink[first : first + rows] = part[:rows].numpy()


def encode_source(
    teacher: Teacher,
    source: StreamedImages,
    batch_size: int = 512,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    accelerator: Any = None,
    progress_bar: bool = True,
) -> torch.Tensor:
    """Teacher features (float32, N×D, on CPU) of every image of an in-memory or streamed source.

    With ``use_cache`` (the default) the features are the memory-mapped cache file (:func:`read_feature_cache`): a
    second call with the same teacher (id, revision, preprocessing) and source fingerprint maps the file instead of
    running the teacher, and a truncated or otherwise unreadable file is computed again. The returned tensor is
    memory-mapped copy-on-write; treat it as read-only. Without ``use_cache`` the features are computed into memory.

    Under ``accelerate`` with several processes each process encodes a contiguous shard; batch by batch the shards
    are gathered and the main process writes them into the cache file, then every process maps the finished file.

    Raises:
        TeacherError: the teacher produced non-finite features (nothing is cached).
    """
    path = feature_cache_path(teacher, source, cache_dir)
    n = len(source)
    if use_cache:
        cached = read_feature_cache(path, n)
        if cached is not None:
            return cached
    rank, world = (
        (accelerator.process_index, accelerator.num_processes) if accelerator is not None else (0, 1)
    )
    keep = rank == 0 or not use_cache  # without a cache file every process keeps the features itself
    per_rank = -(-n // world)
    bar = progress(
        total=per_rank,
        desc=f"teacher features ({teacher.teacher_id})",
        disable=not progress_bar or rank != 0,
        unit="img",
    )
    target = atomic_path(path) if use_cache and rank == 0 else contextlib.nullcontext(None)
    in_memory: np.ndarray | None = None
    with target as tmp:
        sink: np.ndarray | None = None
        offset = 0  # of this batch within each rank's shard
        for batch in _rank_batches(source, n, rank * per_rank, (rank + 1) * per_rank, batch_size):
            features = teacher.encode(batch).float()
            if world > 1:
                features = accelerator.gather(features.to(accelerator.device))
            features = features.cpu()
            if not torch.isfinite(features).all():
                raise TeacherError(
                    f"teacher {teacher.teacher_id} produced non-finite features on {source.name}"
                )
            if keep:
                if sink is None:
                    sink = _open_sink(tmp, (n, features.shape[1]))
                _write_gathered(sink, features, len(batch), per_rank, offset)
            offset += len(batch)
            bar.update(len(batch))
        bar.close()
        if isinstance(sink, np.memmap):
            sink.flush()
        elif not use_cache:
            in_memory = sink
        del sink  # unmap before the rename
    if accelerator is not None:
        accelerator.wait_for_everyone()
    if in_memory is not None:
        return torch.from_numpy(in_memory)
    cached = read_feature_cache(path, n)
    if cached is None:
        raise TeacherError(f"the feature cache {path} was not written or cannot be read back; check the disk")
    return cached
