"""What makes a run the same run: its identity, checked on ``--resume``, and a lock against two writers.

A run's identity is its resolved config, flattened to dotted keys, minus the keys that may change between a run and
its resumption (the step budget, logging and checkpoint cadence, the folder), plus fingerprints of its inputs (the
source images' ``datasets`` fingerprint, the teacher's revision or weight hash). Every checkpoint stores it;
``--resume`` refuses a checkpoint whose identity differs and names the differing keys.

The lock is a file ``<run>/.lock`` created exclusively, holding the writer's pid and host. A second writer is
refused with the holder named; a lock whose process is gone (same host) is stale and taken over.

:class:`RunRecorder` is the one way every command (``distill``, ``pretrain-teacher``, ``pretrain``, ``transfer``,
``train-experts``, and ``quickstart`` for its top folder) keeps its run folder — ``--output_dir`` is that folder in
all of them: the lock, the refusal of a non-empty folder without ``--resume``/``--overwrite``, ``config.yaml``,
``identity.json``, ``metrics.jsonl`` and the checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from hf_ssdd.checkpoint import load_latest_checkpoint, remove_temporaries, save_checkpoint
from hf_ssdd.config import config_to_dict, save_config
from hf_ssdd.io import atomic_write_json, atomic_write_text, prepare_run_dir, replaced_run_kept_until_started

__all__ = [
    "RunIdentityError",
    "RunRecorder",
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


class RunRecorder:
    """A command's run folder: lock, layout, config, identity, metrics and checkpoints (main process writes).

    Usage::

        with RunRecorder(cfg.output_dir, resume=cfg.resume, overwrite=cfg.overwrite, accelerator=acc) as run:
            with run.loading_inputs():        # a failure here puts back the run that --overwrite moved aside
                inputs = load(...)
            found = run.resume_from(identity)  # the newest checkpoint (path, state) of the same run, or None
            run.save_config(cfg)               # only once the inputs have loaded: a failed start leaves nothing
            run.log({"step": 1, "loss": ...})  # one line of metrics.jsonl
            run.checkpoint(step, state, keep=2)

    Args:
        folder: the run folder (``--output_dir``).
        resume: continue the run in ``folder`` (its checkpoints must have the same identity).
        overwrite: start over in a non-empty ``folder`` (its content is kept aside until the new run has started).
        accelerator: the run's ``accelerate.Accelerator``; only its main process writes (``None``: one process).
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        resume: bool,
        overwrite: bool,
        accelerator: Any = None,
        outputs: tuple[str, ...] | None = None,
    ):
        self.folder = Path(folder)
        self.resume, self.overwrite, self.outputs = resume, overwrite, outputs
        self.accelerator = accelerator
        self.is_main = accelerator is None or accelerator.is_main_process
        self.identity: dict[str, Any] | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> RunRecorder:
        if self.is_main:
            with contextlib.ExitStack() as stack:  # the lock is released if the folder is refused
                stack.enter_context(run_lock(self.folder))
                prepare_run_dir(self.folder, self.resume, self.overwrite, (LOCK_FILE,), self.outputs)
                if self.outputs is None:  # a shared folder's temporaries may belong to another live run
                    remove_temporaries(self.folder)
                self._stack = stack.pop_all()
        self.wait()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.__exit__(*exc)

    def wait(self) -> None:
        """Barrier across processes (nothing with one process)."""
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

    def loading_inputs(self) -> contextlib.AbstractContextManager[None]:
        """Wrap loading and checking the inputs: failure restores an overwritten run, success discards it."""
        return replaced_run_kept_until_started(self.folder, (LOCK_FILE,), self.is_main, self.outputs)

    def resume_from(self, identity: dict[str, Any]) -> tuple[Path, dict[str, Any]] | None:
        """Record the run's identity; with ``resume``, the newest readable checkpoint of the same run.

        Raises:
            RunIdentityError: the folder holds a different run (a checkpoint's or ``identity.json``'s identity
                differs from ``identity``).
        """
        self.identity = identity
        found = load_latest_checkpoint(self.folder) if self.resume else None
        if found is not None:
            check_identity(found[1].get("identity"), identity, found[0])
        elif self.resume and read_identity(self.folder) is not None:  # a run that never checkpointed
            check_identity(read_identity(self.folder), identity, self.folder / IDENTITY_FILE)
        return found

    def save_config(self, config: Any) -> None:
        """The run has started: write ``config.yaml`` (the resolved config) and ``identity.json`` (if recorded).

        Nothing is written before this, so a run that fails while loading or checking its inputs leaves nothing
        that blocks its corrected rerun.
        """
        if self.is_main:
            save_config(config, self.folder / "config.yaml")
            if self.identity is not None:
                write_identity(self.folder, self.identity)

    def log(self, record: Mapping[str, Any]) -> None:
        """Append one record to ``metrics.jsonl``."""
        if self.is_main:
            with open(self.folder / "metrics.jsonl", "a") as f:
                f.write(json.dumps(dict(record)) + "\n")

    def rewrite_metrics(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Replace ``metrics.jsonl`` (a resumed run drops what was logged after its checkpoint)."""
        if self.is_main:
            atomic_write_text(
                self.folder / "metrics.jsonl", "".join(json.dumps(dict(r)) + "\n" for r in records)
            )

    def checkpoint(self, step: int, state: Mapping[str, Any], keep: int) -> None:
        """Save ``state`` (with the run's identity) as checkpoint ``step``, keeping the newest ``keep``."""
        if self.is_main:
            save_checkpoint(self.folder, step, {**state, "identity": self.identity}, keep=keep)
