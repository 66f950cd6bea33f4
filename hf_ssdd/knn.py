"""Weighted k-nearest-neighbour classification of features, for monitoring and evaluating encoders.

Wu, Xiong, Yu, Lin. "Unsupervised Feature Learning via Non-Parametric Instance Discrimination", CVPR 2018: each of
the k nearest training samples votes for its label with weight exp(cos / T). The Euclidean variant weighs votes
by 1 / (distance + eps) as solo-learn's ``WeightedKNNClassifier`` does.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["knn_accuracy", "knn_predict"]

Distance = Literal["cosine", "euclidean"]


def _check_inputs(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    num_classes: int,
    k: int,
    temperature: float,
    distance: str,
) -> None:
    if distance not in ("cosine", "euclidean"):
        raise ValueError(f"unknown distance {distance!r}: choose 'cosine' or 'euclidean'")
    if k < 1 or temperature <= 0:
        raise ValueError(f"kNN needs k >= 1 and temperature > 0, got k={k}, temperature={temperature}")
    if (
        train_features.ndim != 2
        or test_features.ndim != 2
        or train_features.shape[1] != test_features.shape[1]
    ):
        raise ValueError(
            f"kNN needs [N, D] train and [M, D] test features, got {tuple(train_features.shape)} and "
            f"{tuple(test_features.shape)}"
        )
    if train_labels.shape != (train_features.shape[0],) or train_features.shape[0] == 0:
        raise ValueError(
            f"kNN needs one label per train sample and at least one sample, got {tuple(train_labels.shape)} labels "
            f"for {train_features.shape[0]} samples"
        )
    if train_labels.min() < 0 or train_labels.max() >= num_classes:
        raise ValueError(f"train labels must lie in [0, {num_classes}), got values outside")


def _neighbour_votes(
    queries: Tensor, train: Tensor, k: int, temperature: float, distance: Distance, eps: float
) -> tuple[Tensor, Tensor]:
    """Indices ``[B, k]`` of the k nearest training samples of each query and the weights of their votes."""
    if distance == "cosine":
        sims, indices = (queries @ train.T).topk(k, dim=1)
        # exp(sim / T) divided by the row's largest weight: the same vote, without overflow for small T
        return indices, ((sims - sims[:, :1]) / temperature).exp()
    dists, indices = torch.cdist(queries, train).topk(k, dim=1, largest=False)
    return indices, 1.0 / (dists + eps)


@torch.no_grad()
def knn_predict(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    distance: Distance = "cosine",
    batch_size: int = 1024,
    eps: float = 1e-5,
) -> Tensor:
    """Predict labels of test features by a weighted vote of their k nearest training features.

    With ``distance="cosine"`` features are L2-normalized and neighbour j votes with weight exp(s_j / T), s_j the
    cosine similarity (Wu et al., 2018). With ``"euclidean"`` neighbours are the closest in L2 distance d_j and
    vote with weight 1 / (d_j + eps) (solo-learn); ``temperature`` is then unused. Test features are processed
    ``batch_size`` at a time, so memory stays at ``batch_size × N``; ``k`` is capped at the number of training
    samples. Runs on the features' device, in at least float32.

    Args:
        train_features: ``[N, D]`` training features.
        train_labels: ``[N]`` integer labels in ``[0, num_classes)``.
        test_features: ``[M, D]`` features to classify.
        num_classes: Number of classes.
        k: Number of neighbours.
        temperature: Temperature T of the cosine weights.
        distance: ``"cosine"`` or ``"euclidean"``.
        batch_size: Test features per chunk.
        eps: Added to Euclidean distances before inverting them.

    Returns:
        ``[M]`` predicted labels (int64), on the features' device.
    """
    _check_inputs(train_features, train_labels, test_features, num_classes, k, temperature, distance)
    dtype = torch.promote_types(train_features.dtype, torch.float32)
    train, test = train_features.to(dtype), test_features.to(dtype)
    if distance == "cosine":
        train, test = F.normalize(train, dim=1), F.normalize(test, dim=1)
    labels = train_labels.long()
    k = min(k, train.shape[0])
    predictions = []
    for queries in test.split(batch_size):
        indices, weights = _neighbour_votes(queries, train, k, temperature, distance, eps)
        scores = weights.new_zeros(queries.shape[0], num_classes).scatter_add_(1, labels[indices], weights)
        predictions.append(scores.argmax(dim=1))
    return torch.cat(predictions)


def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    distance: Distance = "cosine",
    batch_size: int = 1024,
) -> float:
    """Fraction (in [0, 1]) of test samples whose :func:`knn_predict` label equals ``test_labels``."""
    if test_labels.shape != (test_features.shape[0],) or test_features.shape[0] == 0:
        raise ValueError(
            f"kNN accuracy needs one label per test sample and at least one sample, got "
            f"{tuple(test_labels.shape)} labels for {test_features.shape[0]} samples"
        )
    predictions = knn_predict(
        train_features, train_labels, test_features, num_classes, k, temperature, distance, batch_size
    )
    return (predictions == test_labels.to(predictions.device)).double().mean().item()
