"""The Distiller interface and registry.

A distiller turns an :class:`~hf_ssdd.data.ImageSource` and a :class:`~hf_ssdd.teachers.Teacher` into a
:class:`~hf_ssdd.distill.DistilledSet`: ``init()`` once, ``step()`` ``num_steps`` times, ``export()``.
``state_dict()`` / ``load_state_dict()`` capture everything needed for exact resume. Distillers never touch files
or the command line; recipes do. A method that needs resources built before it (MKDT: teacher features and trained
experts) provides them from the classmethod ``prepare(config, context)``, which the run driver calls with the
method's own config and a :class:`RunContext`; its result is passed to the constructor as keyword arguments.

Everything about a method is given once, in :func:`register_distiller` on its class: its name (the run config's
``method`` and section), its config dataclass, its display name (cards, tables) and the pre-training recipe its
sets recommend. Adding a method is one module with one decorated class, imported once (``docs/architecture.md``);
installed packages make their methods available to ``hf-ssdd`` through the entry-point group ``hf_ssdd.methods``
(each entry names a module to import).
"""

from __future__ import annotations

import difflib
import importlib
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from hf_ssdd.artifacts.distilled_set import PRETRAINING_RECIPES, DistilledSet
from hf_ssdd.utils import derived_generator

if TYPE_CHECKING:
    from accelerate import Accelerator

    from hf_ssdd.data import ImageSource
    from hf_ssdd.data.streamed_source import StreamedSource
    from hf_ssdd.teachers import Teacher


class Distiller(ABC):
    """Base class of every distillation method.

    Args:
        config: the method's config dataclass.
        source: the real images: in memory (uint8 on the device), or, for a method registered with
            ``streams_source``, possibly a :class:`~hf_ssdd.data.StreamedSource` (``source.streaming``). Methods
            that do not stream narrow the attribute's type to ``ImageSource``; the driver never hands them a stream.
        teacher: the frozen target encoder.
        accelerator: an ``accelerate.Accelerator`` for multi-process runs (``None``: one process).
        seed: the run's seed; all randomness is derived from it and the step counter.

    Attributes:
        init_indices: indices into ``source`` of the real images the synthetic set started from (CPU int64), set
            by :meth:`init` and :meth:`load_state_dict`; ``None`` where a method does not start from real images.
            The run driver draws them next to the distilled images (``before_after_grid.png``).
    """

    name: ClassVar[str]
    spec: ClassVar[MethodSpec]  # the method's registration (set by :func:`register_distiller`)

    def __init__(
        self,
        config: Any,
        source: ImageSource | StreamedSource,
        teacher: Teacher,
        accelerator: Accelerator | None = None,
        seed: int = 0,
    ):
        self.config = config
        self.source: ImageSource | StreamedSource = source
        self.teacher = teacher
        self.accelerator = accelerator
        self.seed = seed
        self.step_count = 0
        self.init_indices: torch.Tensor | None = None

    @classmethod
    def prepare(cls, config: Any, context: RunContext) -> dict[str, Any]:
        """Build what the method needs before construction (run driver stage; may write under the run folder).

        Args:
            config: the method's config (an instance of ``spec.config_class``).
            context: the run's inputs and folder.

        Returns:
            Keyword arguments for the constructor (none by default).
        """
        return {}

    @property
    def device(self) -> torch.device:
        return self.source.device

    @property
    def rank(self) -> int:
        return self.accelerator.process_index if self.accelerator is not None else 0

    @property
    def world_size(self) -> int:
        return self.accelerator.num_processes if self.accelerator is not None else 1

    def random_real_subset(self, n: int) -> torch.Tensor:
        """Indices (CPU int64) of ``n`` source images drawn uniformly without replacement from the run's seed.

        One draw for every method: the random-subset baseline, KRR-ST's initialization and MKDT's ``init:
        random`` pick the same images for the same seed and size, so a margin over the baseline measures what
        distillation adds to its initial images (two different draws of 100 CIFAR-10 images differ by about one
        point of teacher-fidelity R²: ``benchmarks/RESULTS.md``, MKDT validation).
        """
        return torch.randperm(len(self.source), generator=derived_generator(self.seed, "init-subset"))[:n]

    def reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """The sum of ``t`` over the processes (``t`` itself with one process)."""
        if self.accelerator is None or self.world_size == 1:
            return t
        return self.accelerator.reduce(t, reduction="sum")

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
            "method_name": self.spec.display_name,
            "source": {
                "id": src.name,
                "split": src.split,
                "revision": src.fingerprint,
                "num_examples": len(src),
            },
            "teacher": self.teacher.describe() if self.teacher is not None else None,
            "image_size": int(src.image_size),
            "seed": self.seed,
        }


@dataclass(frozen=True)
class RunContext:
    """What a method's :meth:`Distiller.prepare` stage may use besides its own config.

    Attributes:
        source: the real images (on the run's device): in memory, or streamed for a method that streams.
        teacher: the frozen teacher.
        accelerator: the run's ``accelerate.Accelerator`` (``None``: one process).
        output_dir: the run folder (e.g. MKDT's default expert folder lies below it).
        seed: the run's seed.
    """

    source: ImageSource | StreamedSource
    teacher: Teacher
    accelerator: Accelerator | None
    output_dir: Path
    seed: int = 0


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: everything the run config, the cards and pre-training need to know about it.

    Attributes:
        name: the method's name (``--method``) and its run-config section.
        distiller: the distiller class.
        config_class: the method's config dataclass.
        display_name: how cards and tables name the method.
        pretraining_recipe: the recipe its sets recommend (a key of ``artifacts.PRETRAINING_RECIPES``).
        config_defaults: config values that differ from ``config_class``'s defaults for this method.
        resumable_keys: keys of the method's config that a resumed run may change (its step budget: a finished
            run asked for more steps continues).
        streams_source: the method reads its real images from a stream (``source.streaming``) instead of an
            in-memory :class:`~hf_ssdd.data.ImageSource`: its distiller accepts a
            :class:`~hf_ssdd.data.StreamedSource` (KRR-ST).
    """

    name: str
    distiller: type[Distiller]
    config_class: type
    display_name: str
    pretraining_recipe: str
    config_defaults: Mapping[str, Any] = field(default_factory=dict)
    resumable_keys: tuple[str, ...] = ()
    streams_source: bool = False

    def default_config(self) -> Any:
        from hf_ssdd.config import config_from_dict

        return config_from_dict(self.config_class, dict(self.config_defaults), prefix=f"{self.name}.")


_REGISTRY: dict[str, MethodSpec] = {}


def register_distiller(
    name: str,
    *,
    config: type,
    display_name: str,
    pretraining_recipe: str,
    config_defaults: Mapping[str, Any] | None = None,
    resumable_keys: tuple[str, ...] = (),
    streams_source: bool = False,
) -> Callable[[type[Distiller]], type[Distiller]]:
    """Class decorator: register a distillation method under ``name`` (see :class:`MethodSpec` for the fields).

    The run config then accepts ``method: <name>`` and a ``<name>:`` section parsed into ``config``; the method's
    sets name it ``display_name`` on their cards and recommend ``pretraining_recipe``.
    """
    if pretraining_recipe not in PRETRAINING_RECIPES:
        raise ValueError(
            f"method {name!r}: unknown pre-training recipe {pretraining_recipe!r}; "
            f"choose one of {sorted(PRETRAINING_RECIPES)}"
        )

    def deco(cls: type[Distiller]) -> type[Distiller]:
        if name in _REGISTRY:
            raise ValueError(f"distiller {name!r} is already registered")
        cls.name = name
        cls.spec = _REGISTRY[name] = MethodSpec(
            name,
            cls,
            config,
            display_name,
            pretraining_recipe,
            dict(config_defaults or {}),
            resumable_keys,
            streams_source,
        )
        return cls

    return deco


ENTRY_POINT_GROUP = "hf_ssdd.methods"
_plugins_loaded = False


def load_method_plugins() -> None:
    """Import the modules that installed packages declare in the entry-point group ``hf_ssdd.methods`` (once)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    from importlib.metadata import entry_points

    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            importlib.import_module(entry.value.split(":")[0])
        except Exception as e:  # a broken plugin must not take the built-in methods down with it
            warnings.warn(
                f"the distillation method plugin {entry.name!r} ({entry.value}, entry-point group "
                f"{ENTRY_POINT_GROUP}) failed to import and is unavailable: {type(e).__name__}: {e}",
                stacklevel=2,
            )
    _plugins_loaded = True


def method_specs() -> dict[str, MethodSpec]:
    """Every registered method by name (plugins of installed packages included)."""
    load_method_plugins()
    return dict(_REGISTRY)


def list_distillers() -> list[str]:
    return sorted(method_specs())


def method_spec(name: str) -> MethodSpec:
    """The registered method ``name``; an unknown name raises ``ValueError`` with the closest known ones."""
    load_method_plugins()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f"; did you mean {close}?" if close else ""
        raise ValueError(f"unknown distillation method {name!r}{hint} Known methods: {list_distillers()}")
    return _REGISTRY[name]


def get_distiller_class(name: str) -> type[Distiller]:
    return method_spec(name).distiller


def create_distiller(
    name: str,
    config: Any,
    source: ImageSource | StreamedSource,
    teacher: Teacher,
    accelerator: Accelerator | None = None,
    seed: int = 0,
    **resources: Any,
) -> Distiller:
    """Instantiate the registered distiller ``name`` (``config`` may be a dataclass, a mapping over the method's
    defaults, or ``None`` for its defaults).

    ``resources`` (e.g. the result of the class's :meth:`Distiller.prepare`) go to the constructor as keywords.
    """
    from hf_ssdd.config import section_config

    spec = method_spec(name)
    if isinstance(config, dict):
        config = section_config(name, config, {name: (spec.config_class, spec.config_defaults)})
    elif config is None:
        config = spec.default_config()
    return spec.distiller(config, source, teacher, accelerator=accelerator, seed=seed, **resources)
