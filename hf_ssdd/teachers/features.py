"""Teacher features of a whole split, cached on disk.

:func:`encode_source` computes the features of every image of an :class:`~hf_ssdd.data.ImageSource` in batches,
with a progress bar, sharded over the processes of ``accelerate`` when there are several, and caches them under
:func:`feature_cache_path`, keyed by teacher id + revision + preprocessing + source fingerprint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from hf_ssdd.io import atomic_save_safetensors
from hf_ssdd.teachers.base import TeacherError
from hf_ssdd.teachers.teacher import Teacher
from hf_ssdd.utils import cache_root, progress, stable_hash


def feature_cache_path(teacher: Teacher, source: Any, cache_dir: str | Path | None = None) -> Path:
    """Where :func:`encode_source` keeps the features of ``source`` under ``teacher``."""
    key = stable_hash({"teacher": teacher.cache_id, "source": source.fingerprint, "n": len(source)})
    return Path(cache_dir or cache_root()) / "features" / f"{key}.safetensors"


def encode_source(
    teacher: Teacher,
    source: Any,
    batch_size: int = 512,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    accelerator: Any = None,
    progress_bar: bool = True,
) -> torch.Tensor:
    """Teacher features (float32, N×D, on CPU) of every image of an :class:`~hf_ssdd.data.ImageSource`.

    The result is cached on disk; a second call with the same teacher (id, revision, preprocessing) and source
    fingerprint reads the file instead of running the teacher. Under ``accelerate`` with several processes each
    process encodes a contiguous shard, the shards are gathered, and the main process writes the cache.
    """
    path = feature_cache_path(teacher, source, cache_dir)
    if use_cache and path.is_file():
        return load_file(str(path))["features"]
    n = len(source)
    rank, world = (
        (accelerator.process_index, accelerator.num_processes) if accelerator is not None else (0, 1)
    )
    # every process encodes the same number of images (the last shard repeats its final index), so that a
    # sharded (FSDP) teacher sees the same number of forward calls everywhere; gathered rows beyond n are dropped
    per_rank = -(-n // world)
    index = torch.arange(rank * per_rank, (rank + 1) * per_rank).clamp(max=n - 1).to(source.images.device)
    bar = progress(
        total=per_rank,
        desc=f"teacher features ({teacher.teacher_id})",
        disable=not progress_bar or rank != 0,
        unit="img",
    )
    chunks = []
    for batch in index.split(batch_size):
        chunks.append(teacher.encode(source.images[batch]).cpu())
        bar.update(len(batch))
    bar.close()
    features = torch.cat(chunks)
    if world > 1:
        features = accelerator.gather(features.to(accelerator.device)).cpu()[:n]
    if not torch.isfinite(features).all():
        raise TeacherError(f"teacher {teacher.teacher_id} produced non-finite features on {source.name}")
    if use_cache and rank == 0:
        meta = {
            "teacher_id": teacher.teacher_id,
            "revision": teacher.revision,
            "source": str(source.name),
            "n": str(n),
        }
        atomic_save_safetensors(path, {"features": features}, metadata=meta)
    if accelerator is not None:
        accelerator.wait_for_everyone()
    return features
