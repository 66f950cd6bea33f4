"""Frozen-feature protocols: the L-BFGS linear probe of MKDT and weighted kNN.

Linear probe (Joshi et al., ICLR 2025, ``docs/reference/mkdt.md`` §3; R1 ``evaluation/linear_evaluation.py``): trunk
features of the target images (eval mode, the target's own normalization, no augmentation), an ``nn.Linear(d, C)``
trained full-batch with ``torch.optim.LBFGS`` at torch's defaults (lr 1, ``max_iter`` 20) for 20 outer steps on
cross-entropy + 1e-3 · ‖W‖² (the bias is not regularized), top-1 on the full test split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import nn

from hf_ssdd.data import normalize
from hf_ssdd.knn import knn_predict
from hf_ssdd.transfer.metric import top1_accuracy
from hf_ssdd.utils import derived_seed

if TYPE_CHECKING:
    from hf_ssdd.models import Backbone


@dataclass(frozen=True)
class ProbeSettings:
    """L-BFGS linear probe (MKDT defaults).

    Attributes:
        steps: outer ``LBFGS.step`` calls.
        max_iter: L-BFGS iterations per step (torch default 20).
        lr: L-BFGS learning rate (torch default 1).
        l2: coefficient of ‖W‖² (weights only).
    """

    steps: int = 20
    max_iter: int = 20
    lr: float = 1.0
    l2: float = 1e-3


@torch.no_grad()
def map_batches(
    fn: Callable[[torch.Tensor], torch.Tensor],
    model: nn.Module,
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``fn(normalized batch)`` over uint8 ``images`` in batches with ``model`` in eval mode, concatenated.

    Runs on ``device`` (default: the model's), channels-last with bf16 autocast on CUDA.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval().to(device)
    cuda = device.type == "cuda"
    out = []
    for chunk in images.split(batch_size):
        x = normalize(chunk.to(device), mean, std)
        x = x.contiguous(memory_format=torch.channels_last) if cuda else x
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cuda):
            out.append(fn(x))
    return torch.cat(out)


def extract_features(
    model: nn.Module,
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``model.forward_features`` of uint8 ``images`` normalized with ``mean``/``std``, as float32 ``[N, D]``."""
    return map_batches(
        lambda x: cast("Backbone", model).forward_features(x).float(),
        model,
        images,
        mean,
        std,
        batch_size,
        device,
    )


def probe_objective(
    classifier: nn.Linear, features: torch.Tensor, labels: torch.Tensor, l2: float
) -> torch.Tensor:
    """Cross-entropy + ``l2`` · ‖W‖² (squared Frobenius norm of the weight; the bias is not regularized)."""
    return F.cross_entropy(classifier(features), labels) + l2 * classifier.weight.pow(2).sum()


def train_linear_probe(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    settings: ProbeSettings = ProbeSettings(),
    seed: int = 0,
) -> nn.Linear:
    """Fit ``nn.Linear(d, num_classes)`` to frozen ``features`` with full-batch L-BFGS (MKDT protocol).

    The classifier is initialized as ``nn.Linear`` does, from a generator derived from ``seed``, and trained in
    float32 on the features' device. On a CPU, L-BFGS makes thousands of tiny BLAS calls; on a small or busy
    machine multithreaded MKL can make each ~1 ms, and ``torch.set_num_threads(1)`` is then much faster.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived_seed(seed, "probe-init"))
        classifier = nn.Linear(features.shape[1], num_classes)
    classifier = classifier.to(features.device)
    x, y = features.float(), labels.to(features.device, torch.int64)
    optimizer = torch.optim.LBFGS(classifier.parameters(), lr=settings.lr, max_iter=settings.max_iter)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = probe_objective(classifier, x, y, settings.l2)
        loss.backward()
        return loss

    for _ in range(settings.steps):
        optimizer.step(closure)
    return classifier


def linear_probe_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    settings: ProbeSettings = ProbeSettings(),
    seed: int = 0,
) -> float:
    """Top-1 accuracy (in [0, 1]) on the test features of a probe trained on the train features."""
    classifier = train_linear_probe(train_features, train_labels, num_classes, settings, seed)
    with torch.no_grad():
        predictions = classifier(test_features.float()).argmax(1)
    return top1_accuracy(predictions, test_labels)


def knn_protocol_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
) -> float:
    """Top-1 accuracy (in [0, 1]) of the weighted cosine kNN classifier of :mod:`hf_ssdd.knn` (Wu et al., 2018)."""
    predictions = knn_predict(
        train_features, train_labels.to(train_features.device), test_features, num_classes, k, temperature
    )
    return top1_accuracy(predictions, test_labels)
