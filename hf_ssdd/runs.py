"""What makes a run the same run: its identity, checked on ``--resume``, and a lock against two writers.

A run's identity is its resolved config, flattened to dotted keys, minus the keys that may change between a run and
its resumption (the step budget, logging and checkpoint cadence, the folder), plus fingerprints of its inputs (the
source images' ``datasets`` fingerprint, the teacher's revision or weight hash). Every checkpoint stores it;
``--resume`` refuses a checkpoint whose identity differs and names the differing keys.

The lock is a file ``<run>/.lock`` created exclusively, holding the writer's pid and host. A second writer is
refused with the holder named; a lock whose process is gone (same host) is stale and taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from hf_ssdd.config import config_to_dict
from hf_ssdd.io import atomic_write_json

__all__ = [
    "RunIdentityError",
    "RunLockedError",
    "check_identity",
    "read_identity",
    "run_identity",
    "run_lock",
    "write_identity",
]

LOCK_FILE = ".lock"
IDENTITY_FILE = "identity.json"  # the run's identity, also for runs that never checkpoint (subset baselines)


class RunIdentityError(ValueError):
    """``--resume`` met a checkpoint of a different run."""


class RunLockedError(RuntimeError):
    """Another live process is writing the run folder."""


def _flatten(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def run_identity(config: Any, ignore: Iterable[str], inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The run's identity: ``{dotted key: value}`` of ``config`` without ``ignore``, plus ``inputs``.

    Args:
        config: the run's config dataclass.
        ignore: keys, or section prefixes ending in ``.``, that may change on resume or do not affect the result.
        inputs: fingerprints of what the config only names (``{"source.fingerprint": ..., "teacher.revision": ...}``).

    Returns:
        A JSON-normalized flat dict (tuples become lists), comparable with one read back from a checkpoint.
    """
    ignore = tuple(ignore)
    flat = _flatten(config_to_dict(config))
    kept = {
        k: v
        for k, v in flat.items()
        if not any(k == i or (i.endswith(".") and k.startswith(i)) for i in ignore)
    }
    return json.loads(json.dumps({**kept, **inputs}, sort_keys=True, default=str))


def check_identity(saved: Mapping[str, Any] | None, current: Mapping[str, Any], checkpoint: Path) -> None:
    """Refuse to resume ``checkpoint`` (identity ``saved``) as a run with identity ``current``.

    Raises:
        RunIdentityError: naming every differing key with both values, and the two ways out.
    """
    if saved is None:
        print(
            f"warning: {checkpoint} predates run identities; resuming without checking that it is the same run"
        )
        return
    differing = sorted(
        k for k in set(saved) | set(current) if saved.get(k, "<absent>") != current.get(k, "<absent>")
    )
    if differing:
        shown = "; ".join(
            f"{k}: checkpoint {saved.get(k, '<absent>')!r}, now {current.get(k, '<absent>')!r}"
            for k in differing
        )
        raise RunIdentityError(
            f"--resume refused: {checkpoint} belongs to a different run ({shown}); resume with the checkpoint's "
            "values, or start a new run with another --output_dir or --overwrite"
        )


def write_identity(run_dir: str | Path, identity: Mapping[str, Any]) -> None:
    """Record the run's identity in ``<run_dir>/identity.json`` (atomically)."""
    atomic_write_json(Path(run_dir) / IDENTITY_FILE, dict(identity))


def read_identity(run_dir: str | Path) -> dict[str, Any] | None:
    """The identity recorded by :func:`write_identity`, or ``None`` for a run from before identities."""
    path = Path(run_dir) / IDENTITY_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _holder(lock: Path) -> dict[str, Any]:
    try:
        return json.loads(lock.read_text())
    except (OSError, ValueError):
        return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold ``<run_dir>/.lock`` for the block; refuse when a live process holds it, take over a stale one.

    Raises:
        RunLockedError: another live process (or one on another host) holds the lock.
    """
    lock = Path(run_dir) / LOCK_FILE
    lock.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(lock)
            pid, host = holder.get("pid"), holder.get("host")
            if isinstance(pid, int) and host == me["host"] and pid != me["pid"] and not _alive(pid):
                lock.unlink(missing_ok=True)  # stale: its process is gone; try again
                continue
            raise RunLockedError(
                f"{run_dir} is in use by process {pid} on {host} ({lock}); wait for it to finish, or delete the "
                "lock file if that process is gone"
            ) from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    try:
        yield lock
    finally:
        if _holder(lock).get("pid") == me["pid"]:
            lock.unlink(missing_ok=True)
