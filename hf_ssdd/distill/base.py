"""The Distiller interface and registry.

A distiller turns an :class:`~hf_ssdd.data.ImageSource` and a :class:`~hf_ssdd.teachers.Teacher` into a
:class:`~hf_ssdd.distill.DistilledSet`: ``init()`` once, ``step()`` ``num_steps`` times, ``export()``.
``state_dict()`` / ``load_state_dict()`` capture everything needed for exact resume. Distillers never touch files
or the command line; recipes do. A method that needs resources built before it (MKDT: teacher features and trained
experts) provides them from the classmethod ``prepare``, which the run driver calls; its result is passed to the
constructor as keyword arguments.
"""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch

from hf_ssdd.artifacts.distilled_set import DistilledSet


class Distiller(ABC):
    """Base class of every distillation method.

    Args:
        config: the method's config dataclass.
        source: the real images (uint8 on the device).
        teacher: the frozen target encoder.
        accelerator: an ``accelerate.Accelerator`` for multi-process runs (``None``: one process).
        seed: the run's seed; all randomness is derived from it and the step counter.

    Attributes:
        init_indices: indices into ``source`` of the real images the synthetic set started from (CPU int64), set
            by :meth:`init` and :meth:`load_state_dict`; ``None`` where a method does not start from real images.
            The run driver draws them next to the distilled images (``before_after_grid.png``).
    """

    name: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, config: Any, source: Any, teacher: Any, accelerator: Any = None, seed: int = 0):
        self.config = config
        self.source = source
        self.teacher = teacher
        self.accelerator = accelerator
        self.seed = seed
        self.step_count = 0
        self.init_indices: torch.Tensor | None = None

    @classmethod
    def prepare(
        cls, run_cfg: Any, source: Any, teacher: Any, accelerator: Any, output_dir: Path
    ) -> dict[str, Any]:
        """Build what the method needs before construction (run driver stage; may write under ``output_dir``).

        Args:
            run_cfg: the whole run configuration (``DistillRunConfig``).
            source: the real images.
            teacher: the frozen teacher.
            accelerator: the run's ``accelerate.Accelerator`` (or ``None``).
            output_dir: the run's output folder.

        Returns:
            Keyword arguments for the constructor (none by default).
        """
        return {}

    @property
    def device(self) -> torch.device:
        return self.source.images.device

    @property
    def rank(self) -> int:
        return self.accelerator.process_index if self.accelerator is not None else 0

    @property
    def world_size(self) -> int:
        return self.accelerator.num_processes if self.accelerator is not None else 1

    @classmethod
    def planned_steps(cls, config: Any) -> int:
        """Total number of ``step()`` calls of a full run with ``config`` (0: a selection with no optimization)."""
        return 0

    @property
    def num_steps(self) -> int:
        """Total number of ``step()`` calls of this run (:meth:`planned_steps` of its config)."""
        return type(self).planned_steps(self.config)

    @abstractmethod
    def init(self) -> None:
        """Build the initial synthetic set (and any auxiliary state)."""

    @abstractmethod
    def step(self) -> dict[str, float]:
        """One optimization step; returns metrics (at least ``loss``)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run exactly."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state captured by :meth:`state_dict` (after :meth:`init` or instead of it)."""

    @abstractmethod
    def export(self) -> DistilledSet:
        """The current synthetic set as a :class:`DistilledSet`."""

    def base_meta(self) -> dict[str, Any]:
        """Metadata common to every method: source and teacher identity, normalization."""
        src = self.source
        return {
            "method": self.name,
            "source": {
                "id": src.name,
                "split": src.split,
                "revision": src.fingerprint,
                "num_examples": len(src),
            },
            "teacher": self.teacher.describe() if self.teacher is not None else None,
            "image_size": int(src.images.shape[-1]),
            "seed": self.seed,
        }


_REGISTRY: dict[str, type[Distiller]] = {}


def register_distiller(name: str) -> Callable[[type[Distiller]], type[Distiller]]:
    """Class decorator: make a distiller available to :func:`create_distiller` under ``name``."""

    def deco(cls: type[Distiller]) -> type[Distiller]:
        if name in _REGISTRY:
            raise ValueError(f"distiller {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def list_distillers() -> list[str]:
    return sorted(_REGISTRY)


def get_distiller_class(name: str) -> type[Distiller]:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f"; did you mean {close}?" if close else ""
        raise ValueError(f"unknown distillation method {name!r}{hint} Known methods: {list_distillers()}")
    return _REGISTRY[name]


def create_distiller(
    name: str,
    config: Any,
    source: Any,
    teacher: Any,
    accelerator: Any = None,
    seed: int = 0,
    **resources: Any,
) -> Distiller:
    """Instantiate the registered distiller ``name`` (``config`` may be a dataclass or a mapping).

    ``resources`` (e.g. the result of the class's :meth:`Distiller.prepare`) go to the constructor as keywords.
    """
    from hf_ssdd.config import config_from_dict

    cls = get_distiller_class(name)
    if isinstance(config, dict):
        config = config_from_dict(cls.config_class, config)
    elif config is None:
        config = cls.config_class()
    return cls(config, source, teacher, accelerator=accelerator, seed=seed, **resources)
