"""Class-stratified, seeded label fractions of a target's train split.

MKDT (Joshi et al., ICLR 2025, ``docs/reference/mkdt.md`` §3) probes with 1 / 5 / 10 / 50 % of the target labels;
KRR-ST (Lee et al., ICLR 2024) fine-tunes with all of them. MKDT draws a uniformly random subset; here the draw is
stratified by class, so that every class keeps round(fraction · n_c) examples (at least one).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch

from hf_ssdd.utils import derived_generator

DEFAULT_FRACTIONS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.5, 1.0)


def label_fraction_indices(labels: torch.Tensor | Sequence[int], fraction: float, seed: int) -> torch.Tensor:
    """Indices (sorted, int64) of a class-stratified random ``fraction`` of a train split's labels.

    Each class ``c`` with ``n_c`` examples keeps ``floor(fraction · n_c + 0.5)`` of them, drawn at random; a class
    that would keep none keeps one, with a warning. Only the indices into ``labels`` are returned, so a draw from
    the train split cannot touch the test split. The class permutation depends on ``seed`` alone, so for one seed
    smaller fractions are subsets of larger ones.

    Args:
        labels: class ids of the train split.
        fraction: share of each class to keep, in (0, 1].
        seed: seed of the draw (the same seed gives the same indices).

    Raises:
        ValueError: ``fraction`` outside (0, 1] or no labels.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must lie in (0, 1], got {fraction}")
    labels = torch.as_tensor(labels).reshape(-1).to("cpu", torch.int64)
    if labels.numel() == 0:
        raise ValueError("cannot draw a label fraction from an empty split")
    order = torch.randperm(labels.numel(), generator=derived_generator(seed, "label-fraction"))
    chosen, starved = [], []
    for c in labels.unique().tolist():
        members = order[labels[order] == c]
        keep = math.floor(fraction * len(members) + 0.5)
        if keep == 0:
            starved.append(c)
            keep = 1
        chosen.append(members[:keep])
    if starved:
        warnings.warn(
            f"label fraction {fraction:g} rounds to zero examples for {len(starved)} class(es) "
            f"(e.g. class {starved[0]}); using one example for each of them",
            UserWarning,
            stacklevel=2,
        )
    return torch.cat(chosen).sort().values
