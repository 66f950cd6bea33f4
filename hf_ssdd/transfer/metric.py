"""Top-1 accuracy through ``evaluate``, with the metric module that ships inside ``hf_ssdd`` (works offline)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    import evaluate

METRIC_DIR = Path(__file__).resolve().parents[1] / "metrics" / "top1_accuracy"


@functools.cache
def load_top1_metric() -> evaluate.EvaluationModule:
    """``evaluate.load`` of the packaged ``top1_accuracy`` module by path (no Hub access), kept in memory."""
    import evaluate

    return evaluate.load(str(METRIC_DIR), keep_in_memory=True)


def top1_accuracy(predictions: torch.Tensor | np.ndarray, references: torch.Tensor | np.ndarray) -> float:
    """Fraction (in [0, 1]) of ``predictions`` equal to ``references``, computed by the packaged metric.

    Raises:
        ValueError: the two have different lengths or are empty.
    """
    pred = torch.as_tensor(predictions).reshape(-1).to("cpu", torch.int64).numpy()
    ref = torch.as_tensor(references).reshape(-1).to("cpu", torch.int64).numpy()
    if pred.shape != ref.shape or pred.size == 0:
        raise ValueError(f"need as many predictions as references (> 0), got {pred.size} and {ref.size}")
    return float(load_top1_metric().compute(predictions=pred, references=ref)["accuracy"])
