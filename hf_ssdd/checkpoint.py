"""Checkpoints as safetensors + JSON, written atomically, for exact resume.

A state is any nest of dicts, lists, tuples, numbers, strings, tensors and numpy arrays (model and optimizer state
dicts, RNG states, counters). :func:`save_checkpoint` stores every tensor in ``state.safetensors`` and the structure
in ``state.json``; :func:`load_checkpoint` rebuilds the identical nest. Nothing is pickled.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from safetensors.torch import load_file

from hf_ssdd.io import atomic_directory, atomic_save_safetensors, atomic_write_json, atomic_write_text

STATE_JSON = "state.json"
STATE_TENSORS = "state.safetensors"
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")


def flatten_state(obj: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested state into a JSON-able tree and a flat ``{key: tensor}`` dict."""
    tensors: dict[str, torch.Tensor] = {}

    def enc(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            key = f"t{len(tensors)}"
            tensors[key] = v.detach().cpu().contiguous()
            return {"__tensor__": key}
        if isinstance(v, np.ndarray):
            key = f"t{len(tensors)}"
            wide = v.astype(np.int64) if v.dtype.kind in "iub" else v.astype(np.float64)
            tensors[key] = torch.from_numpy(np.ascontiguousarray(wide))
            return {"__ndarray__": key, "dtype": str(v.dtype), "shape": list(v.shape)}
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, tuple):
            return {"__tuple__": [enc(x) for x in v]}
        if isinstance(v, list):
            return [enc(x) for x in v]
        if isinstance(v, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in v):
                return {k: enc(x) for k, x in v.items()}
            return {"__dict__": [[enc(k), enc(x)] for k, x in v.items()]}
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        raise TypeError(f"cannot store a {type(v).__name__} in a checkpoint")

    return enc(obj), tensors


def unflatten_state(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""

    def dec(v: Any) -> Any:
        if isinstance(v, list):
            return [dec(x) for x in v]
        if isinstance(v, dict):
            if "__tensor__" in v:
                return tensors[v["__tensor__"]]
            if "__ndarray__" in v:
                return tensors[v["__ndarray__"]].numpy().astype(v["dtype"]).reshape(v["shape"])
            if "__tuple__" in v:
                return tuple(dec(x) for x in v["__tuple__"])
            if "__dict__" in v:
                return {_hashable(dec(k)): dec(x) for k, x in v["__dict__"]}
            return {k: dec(x) for k, x in v.items()}
        return v

    return dec(tree)


def _hashable(k: Any) -> Any:
    return tuple(_hashable(x) for x in k) if isinstance(k, list) else k


def save_checkpoint_state(directory: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` into an existing folder as ``state.json`` + ``state.safetensors``."""
    directory = Path(directory)
    tree, tensors = flatten_state(state)
    atomic_save_safetensors(directory / STATE_TENSORS, tensors)
    atomic_write_json(directory / STATE_JSON, tree)


def load_checkpoint_state(directory: str | Path) -> dict[str, Any]:
    """Read a state written by :func:`save_checkpoint_state`."""

    directory = Path(directory)
    if not (directory / STATE_JSON).is_file():
        raise FileNotFoundError(f"{directory} holds no {STATE_JSON}; is it a checkpoint folder?")
    tree = json.loads((directory / STATE_JSON).read_text())
    tensors = load_file(str(directory / STATE_TENSORS)) if (directory / STATE_TENSORS).exists() else {}
    return unflatten_state(tree, tensors)


class NonFiniteStateError(RuntimeError):
    """A state holds NaN or infinite values: the run diverged; it is never saved as a checkpoint."""


def nonfinite_tensors(state: Any) -> list[str]:
    """Paths (``a.b.0``) of the floating-point tensors in a nested state that hold NaN or infinite values."""
    found: list[str] = []

    def walk(v: Any, path: str) -> None:
        if isinstance(v, torch.Tensor):
            if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                found.append(path)
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(x, f"{path}.{k}" if path else str(k))
        elif isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                walk(x, f"{path}.{i}" if path else str(i))

    walk(state, "")
    return found


def save_checkpoint(run_dir: str | Path, step: int, state: dict[str, Any], keep: int | None = 2) -> Path:
    """Save ``state`` as ``run_dir/checkpoints/checkpoint-<step>`` atomically and prune old ones.

    Args:
        run_dir: the run's output folder.
        step: the step counter the state belongs to (names the folder).
        state: the nested state (see :func:`flatten_state`).
        keep: how many of the newest checkpoints to keep (``None`` keeps all).

    Raises:
        NonFiniteStateError: the state holds NaN / inf (nothing is written; the newest good checkpoint is named).
    """
    if keep is not None and keep < 1:
        raise ValueError(f"keep must be at least 1 (the newest checkpoint is always kept), got {keep}")
    bad = nonfinite_tensors(state)
    if bad:
        last = latest_checkpoint(run_dir)
        raise NonFiniteStateError(
            f"the run diverged at step {step}: non-finite values in {', '.join(bad[:5])}"
            f"{' …' if len(bad) > 5 else ''}; nothing was saved, the last good checkpoint is "
            f"{last if last is not None else 'none'}; lower the learning rates and start again (or --resume from it)"
        )
    root = Path(run_dir) / "checkpoints"
    target = root / f"checkpoint-{step:08d}"
    with atomic_directory(target, overwrite=True) as tmp:
        save_checkpoint_state(tmp, state)
    atomic_write_text(root / "latest", target.name + "\n")
    if keep is not None:
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return target


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints under ``run_dir/checkpoints``, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _CKPT_RE.match(p.name) and (p / STATE_JSON).is_file()]
    # every name in ``found`` matched _CKPT_RE
    return sorted(found, key=lambda p: int(cast("re.Match[str]", _CKPT_RE.match(p.name)).group(1)))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or ``None``."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_latest_checkpoint(run_dir: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads, with its state; a corrupt newer one is skipped with a warning.

    Returns:
        ``(folder, state)``, or ``None`` when the run has no checkpoint.

    Raises:
        ValueError: checkpoints exist but none of them loads.
    """
    found = list_checkpoints(run_dir)
    for folder in reversed(found):
        try:
            return folder, load_checkpoint_state(folder)
        except Exception as error:  # safetensors, JSON and OS errors alike: try the previous one
            print(
                f"warning: checkpoint {folder} is unreadable ({type(error).__name__}: {error}); trying an older one"
            )
    if found:
        raise ValueError(
            f"none of the {len(found)} checkpoints in {Path(run_dir) / 'checkpoints'} can be read; start a new run "
            "with --overwrite"
        )
    return None


def remove_temporaries(run_dir: str | Path) -> list[Path]:
    """Delete what a killed atomic writer left in the run folder and its checkpoints (``.<name>.*.tmp``, ``.old``).

    Call it only while holding the run's lock, so that no live writer's temporaries are removed.
    """
    stale = [
        path
        for root in (Path(run_dir), Path(run_dir) / "checkpoints")
        if root.is_dir()
        for pattern in (".*.tmp", ".*.old")
        for path in sorted(root.glob(pattern))
    ]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    return stale
