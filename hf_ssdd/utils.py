"""Small shared helpers: cache location, stable hashing, progress bars, devices."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import torch
from tqdm.auto import tqdm

from hf_ssdd import progress_bars_disabled

T = TypeVar("T")


def cache_root() -> Path:
    """Root of hf_ssdd's on-disk caches: ``$HF_SSDD_CACHE``, else ``~/.cache/hf_ssdd``."""
    return Path(os.environ.get("HF_SSDD_CACHE") or Path.home() / ".cache" / "hf_ssdd")


def stable_hash(obj: Any, length: int = 32) -> str:
    """Hex digest of a JSON-serializable object, identical across processes and runs."""
    payload = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:length]


def state_dict_hash(module: torch.nn.Module, length: int = 16) -> str:
    """Content hash of a module's parameters and buffers (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:length]


def progress(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    disable: bool = False,
    **kw: Any,
) -> tqdm:
    """A tqdm bar that respects ``HF_SSDD_DISABLE_PROGRESS_BARS`` and ``disable`` (e.g. non-main processes)."""
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        disable=disable or progress_bars_disabled(),
        dynamic_ncols=True,
        file=sys.stderr,
        **kw,
    )


def default_device() -> torch.device:
    """CUDA if available, else MPS if available, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def yaml_safe(value: Any) -> Any:
    """Tuples → lists, paths → strings, numpy/torch scalars → Python numbers (recursively)."""
    if isinstance(value, dict):
        return {str(k): yaml_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [yaml_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


def derived_seed(seed: int, *keys: Any) -> int:
    """A 63-bit seed derived from ``seed`` and ``keys`` (e.g. ``"aug", step``): counter-based randomness.

    Drawing every random number from a generator seeded by ``derived_seed(seed, purpose, step)`` makes a run
    reproducible and exactly resumable without storing generator states.
    """
    digest = hashlib.sha256(json.dumps([seed, *keys], default=str).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def derived_generator(seed: int, *keys: Any, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded with :func:`derived_seed`."""
    gen = torch.Generator(device=device)
    gen.manual_seed(derived_seed(seed, *keys))
    return gen
