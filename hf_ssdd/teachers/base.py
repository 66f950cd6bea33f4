"""The values every teacher module shares: the error type, the preprocessing record and the kind literals.

:class:`TeacherError` is raised when a teacher cannot be loaded or does not fit the data; :class:`Preprocessing`
is how a teacher turns uint8 images into its input (resize, then normalize); ``TeacherKind`` names the loader
that produced a teacher and ``Pooling`` how a transformers output becomes one vector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TeacherKind = Literal["hf_ssdd", "timm", "transformers", "module"]
Pooling = Literal["auto", "pooler", "cls", "mean"]


class TeacherError(ValueError):
    """A teacher cannot be loaded or does not fit the data."""


@dataclass(frozen=True)
class Preprocessing:
    """How a teacher turns uint8 images into its input: resize to ``image_size``, then normalize."""

    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"
