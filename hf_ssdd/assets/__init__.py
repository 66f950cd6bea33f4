"""Models shipped inside the package, addressed as ``embedded:<name>`` wherever a teacher is expected.

``embedded:teacher-cpu-c10`` (the default teacher of ``hf-ssdd distill`` and ``hf-ssdd quickstart``): a Barlow
Twins narrow ResNet-10 trained on CIFAR-10 on 2 CPU cores by ``hf_ssdd/configs/teacher_cpu.yaml``; its model card
(``teacher-cpu-c10/README.md``) gives the command, the training data and its kNN accuracy.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT_TEACHER", "EMBEDDED_PREFIX", "embedded_names", "embedded_path", "is_embedded"]

EMBEDDED_PREFIX = "embedded:"
DEFAULT_TEACHER = f"{EMBEDDED_PREFIX}teacher-cpu-c10"
_ROOT = Path(__file__).parent


def embedded_names() -> list[str]:
    """Names of the shipped model folders."""
    return sorted(p.name for p in _ROOT.iterdir() if (p / "config.json").is_file())


def is_embedded(ref: str) -> bool:
    return str(ref).startswith(EMBEDDED_PREFIX)


def embedded_path(ref: str) -> Path:
    """The folder of ``embedded:<name>``; a clear error naming the shipped models when there is no such model."""
    name = str(ref).removeprefix(EMBEDDED_PREFIX)
    folder = _ROOT / name
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"no embedded model {name!r} in {_ROOT}; shipped: {', '.join(embedded_names()) or 'none'} "
            "(reinstall hf_ssdd if the folder was removed)"
        )
    return folder
