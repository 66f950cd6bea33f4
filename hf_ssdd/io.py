"""Atomic file writes: write to a temporary file in the same folder, then rename over the target.

A reader never sees a half-written file, and a crash leaves at most a stray ``*.tmp*`` file that is ignored.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed to ``path``, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the file ordinary permissions
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_safetensors(
    path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Save tensors (made contiguous, on CPU) with safetensors, atomically."""
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(cpu, str(tmp), metadata=metadata)


@contextlib.contextmanager
def atomic_directory(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary name and move it into place when the block succeeds.

    Nothing appears at ``path`` if the block raises. With ``overwrite`` an existing folder is replaced.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


REPLACED = ".replaced"  # where --overwrite keeps the old run until the new one has started


def prepare_run_dir(
    path: str | Path,
    resume: bool = False,
    overwrite: bool = False,
    keep: tuple[str, ...] = (),
    outputs: tuple[str, ...] | None = None,
) -> Path:
    """Create a run's output folder; a non-empty one is refused unless the run resumes or overwrites it.

    With ``overwrite`` the old content is moved into ``<path>/.replaced`` rather than deleted, so that a new run
    that fails before it has started can put it back (:func:`restore_replaced`); once it has started it deletes it
    (:func:`discard_replaced`). Entries named in ``keep`` (e.g. the run's lock file) neither count as content nor
    move. ``outputs``: a command that writes only these entries into a folder it may share (``pretrain`` writes
    ``encoder/`` into a distillation run) counts and moves only them, and cannot resume.
    """
    path = Path(path)
    skip = {*keep, REPLACED}
    content = [p for p in path.iterdir() if p.name not in skip] if path.is_dir() else []
    if outputs is not None:
        content = [p for p in content if p.name in outputs]
    if content and not (resume or overwrite):
        if outputs is not None:
            names = ", ".join(sorted(p.name for p in content))
            raise FileExistsError(
                f"{path} already holds {names} of an earlier run; pass --overwrite to replace them"
            )
        raise FileExistsError(
            f"{path} is not empty; pass --resume to continue that run or --overwrite to start over"
        )
    path.mkdir(parents=True, exist_ok=True)
    if overwrite and not resume and content:
        aside = path / REPLACED
        shutil.rmtree(
            aside, ignore_errors=True
        )  # left by an overwrite that was killed: that run was replaced
        aside.mkdir()
        for entry in content:
            os.replace(entry, aside / entry.name)
    return path


def restore_replaced(
    path: str | Path, keep: tuple[str, ...] = (), outputs: tuple[str, ...] | None = None
) -> bool:
    """Put back the run that ``--overwrite`` moved aside (the new run failed before starting); ``True`` if any.

    Everything the failed run wrote is deleted first (only its ``outputs``, when given), except ``keep``.
    """
    path = Path(path)
    aside = path / REPLACED
    if not aside.is_dir():
        return False
    for entry in path.iterdir():
        if entry.name not in (REPLACED, *keep) and (outputs is None or entry.name in outputs):
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    for entry in aside.iterdir():
        os.replace(entry, path / entry.name)
    aside.rmdir()
    return True


def discard_replaced(path: str | Path) -> None:
    """Delete the run that ``--overwrite`` moved aside, once the new run has started."""
    shutil.rmtree(Path(path) / REPLACED, ignore_errors=True)


@contextlib.contextmanager
def replaced_run_kept_until_started(
    path: str | Path, keep: tuple[str, ...] = (), enabled: bool = True, outputs: tuple[str, ...] | None = None
) -> Iterator[None]:
    """Wrap a run's start (loading and checking its inputs): a failure in the block puts back the run that
    ``--overwrite`` moved aside, success deletes it. ``enabled``: only the main process acts; ``outputs``: see
    :func:`prepare_run_dir`."""
    try:
        yield
    except BaseException:
        if enabled and restore_replaced(path, keep, outputs):
            print(f"the new run failed before it started; the run it was to replace is back in {path}")
        raise
    if enabled:
        discard_replaced(path)
