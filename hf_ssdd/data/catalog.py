"""Catalog of the image datasets used by KRR-ST and MKDT: Hub ids, columns, splits, resolution, statistics.

Normalization constants are copied verbatim from the reference implementations:

- ``"krr_st"``: KRR-ST (Lee et al., "Self-Supervised Dataset Distillation for Transfer Learning", ICLR 2024),
  ``data/augmentation.py``, one (mean, std) pair per resolution 32 / 64 / 224. The Flowers-102 32-px green mean
  ``.3030`` (``.3830`` at 64 and 224) is a typo in the reference, kept for exactness.
- ``"mkdt"``: MKDT (Joshi et al., "Dataset Distillation via Knowledge Distillation: Towards Efficient
  Self-Supervised Pre-Training of Deep Networks", ICLR 2025), DC/MTT-style constants at the native resolution;
  Tiny ImageNet uses the ImageNet statistics.

The Hub ids of the fine-grained sets and of ImageNet 64x64 are candidates that the papers did not use; their
column and split names are unverified (column detection in :mod:`hf_ssdd.data.resolve` does not rely on them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

RGB = tuple[float, float, float]
Stats = tuple[RGB, RGB]
CONVENTIONS = ("krr_st", "mkdt")

_IMAGENET: Stats = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass(frozen=True)
class DatasetSpec:
    """What hf_ssdd knows about one dataset.

    Attributes:
        name: short catalog name (``cifar10``).
        hub_id: Hugging Face dataset id, or ``None`` for a local-only sample.
        local_name: folder name under ``$HF_SSDD_DATA_DIR`` holding a local parquet copy.
        image_column: name of the image column on the Hub.
        label_column: name of the class-label column on the Hub.
        train_split: split used for training (a ``datasets`` split expression, e.g. ``"train+val"``).
        test_split: split used for evaluation.
        resolution: side length at which the papers use the dataset.
        num_classes: number of classes.
        krr_st_stats: KRR-ST ``(mean, std)`` per resolution.
        mkdt_stats: MKDT ``(mean, std)`` at the native resolution, if MKDT gives them.
    """

    name: str
    hub_id: str | None
    local_name: str
    image_column: str
    label_column: str
    train_split: str
    test_split: str
    resolution: int
    num_classes: int
    krr_st_stats: Mapping[int, Stats] = field(default_factory=dict, hash=False)
    mkdt_stats: Stats | None = None

    def stats(self, resolution: int, convention: str = "krr_st") -> Stats | None:
        """The ``(mean, std)`` for ``resolution`` under ``convention``, or ``None`` when not given."""
        if convention not in CONVENTIONS:
            raise ValueError(f"unknown normalization convention {convention!r}; choose from {CONVENTIONS}")
        if convention == "mkdt":
            return self.mkdt_stats if resolution == self.resolution else None
        return self.krr_st_stats.get(resolution)


def _per_res(s32: Stats, s64: Stats | None = None, s224: Stats | None = None) -> dict[int, Stats]:
    """KRR-ST statistics keyed by resolution; 64 px defaults to the 32-px pair (as in the reference)."""
    table = {32: s32, 64: s64 if s64 is not None else s32}
    if s224 is not None:
        table[224] = s224
    return table


_CIFAR10 = _per_res(
    ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    ((0.4914, 0.4821, 0.4465), (0.2469, 0.2433, 0.2614)),
)
_CIFAR100 = _per_res(
    ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
    ((0.5070, 0.4865, 0.4409), (0.2671, 0.2562, 0.2760)),
)
_AIRCRAFT = _per_res(
    ((0.4804, 0.5116, 0.5349), (0.2021, 0.1953, 0.2297)),
    ((0.4797, 0.5108, 0.5341), (0.2117, 0.2049, 0.2380)),
    ((0.4797, 0.5109, 0.5342), (0.2204, 0.2135, 0.2451)),
)
_CARS = _per_res(
    ((0.4706, 0.4600, 0.4548), (0.2746, 0.2740, 0.2831)),
    ((0.4707, 0.4601, 0.4549), (0.2836, 0.2826, 0.2914)),
    ((0.4707, 0.4601, 0.4549), (0.2927, 0.2917, 0.3001)),
)
_CUB = _per_res(
    ((0.4857, 0.4995, 0.4324), (0.2145, 0.2098, 0.2496)),
    ((0.4856, 0.4995, 0.4324), (0.2218, 0.2170, 0.2564)),
    ((0.4856, 0.4994, 0.4324), (0.2295, 0.2250, 0.2635)),
)
_DOGS = _per_res(
    ((0.4765, 0.4516, 0.3911), (0.2490, 0.2435, 0.2479)),
    ((0.4765, 0.4517, 0.3911), (0.2551, 0.2495, 0.2539)),
    ((0.4765, 0.4517, 0.3912), (0.2617, 0.2564, 0.2607)),
)
_FLOWERS = _per_res(
    ((0.4344, 0.3030, 0.2955), (0.2811, 0.2318, 0.2607)),  # .3030: reference typo, kept
    ((0.4344, 0.3830, 0.2955), (0.2878, 0.2390, 0.2674)),
    ((0.4344, 0.3830, 0.2955), (0.2928, 0.2449, 0.2726)),
)
_TINY = _per_res(((0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)))
_IMAGENET64 = _per_res(((0.4810, 0.4574, 0.4078), (0.2633, 0.2560, 0.2708)))

_MKDT_CIFAR10: Stats = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
_MKDT_CIFAR100: Stats = ((0.5071, 0.4865, 0.4409), (0.2009, 0.1984, 0.2023))


def _fine_grained(
    name: str, hub_id: str, classes: int, stats: dict[int, Stats], train: str = "train"
) -> DatasetSpec:
    """A transfer target; the papers resize these to 32 px (MKDT: PIL LANCZOS)."""
    return DatasetSpec(name, hub_id, name, "image", "label", train, "test", 32, classes, stats)


_SPECS: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        "cifar10",
        "uoft-cs/cifar10",
        "cifar10",
        "img",
        "label",
        "train",
        "test",
        32,
        10,
        _CIFAR10,
        _MKDT_CIFAR10,
    ),
    DatasetSpec(
        "cifar100",
        "uoft-cs/cifar100",
        "cifar100",
        "img",
        "fine_label",
        "train",
        "test",
        32,
        100,
        _CIFAR100,
        _MKDT_CIFAR100,
    ),
    DatasetSpec(
        "cifar100-head",
        None,
        "cifar100-head",
        "img",
        "fine_label",
        "train",
        "test",
        32,
        100,
        _CIFAR100,
        _MKDT_CIFAR100,
    ),
    DatasetSpec(
        "tiny-imagenet",
        "zh-plus/tiny-imagenet",
        "tiny-imagenet",
        "image",
        "label",
        "train",
        "valid",
        64,
        200,
        _TINY,
        _IMAGENET,
    ),
    DatasetSpec(
        "imagenet-64",
        "benjamin-paine/imagenet-1k-64x64",
        "imagenet-64",
        "image",
        "label",
        "train",
        "validation",
        64,
        1000,
        _IMAGENET64,
    ),
    _fine_grained("aircraft", "Donghyun99/FGVC-Aircraft", 100, _AIRCRAFT, train="train+val"),
    _fine_grained("cars", "Donghyun99/Stanford-Cars", 196, _CARS),
    _fine_grained("cub2011", "Donghyun99/CUB-200-2011", 200, _CUB),
    _fine_grained("dogs", "Donghyun99/Stanford-Dogs", 120, _DOGS),
    _fine_grained("flowers102", "Donghyun99/Oxford-Flower-102", 102, _FLOWERS),
)
_BY_KEY: dict[str, DatasetSpec] = {
    key.lower(): spec for spec in _SPECS for key in (spec.name, spec.hub_id, spec.local_name) if key
}


def list_datasets() -> list[str]:
    """Short names of all catalog datasets."""
    return [spec.name for spec in _SPECS]


def get_spec(name_or_hub_id: str) -> DatasetSpec | None:
    """Look up a dataset by short name, Hub id or local folder name (case-insensitive); ``None`` if unknown."""
    return _BY_KEY.get(name_or_hub_id.strip().lower())


def normalization(name: str, resolution: int, convention: str = "krr_st") -> Stats:
    """Per-channel ``(mean, std)`` on the [0, 1] scale for a catalog dataset.

    Args:
        name: short name or Hub id.
        resolution: image side length (KRR-ST has separate constants for 32, 64 and 224).
        convention: ``"krr_st"`` or ``"mkdt"``.

    Raises:
        KeyError: the dataset is not in the catalog or has no constants for this resolution and convention.
    """
    spec = get_spec(name)
    if spec is None:
        raise KeyError(f"{name!r} is not in the catalog ({', '.join(list_datasets())})")
    stats = spec.stats(resolution, convention)
    if stats is None:
        raise KeyError(
            f"no {convention} normalization constants for {spec.name} at {resolution} px; "
            "compute them with hf_ssdd.data.compute_normalization_stats"
        )
    return stats
