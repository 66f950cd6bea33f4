"""Barlow Twins: loss, projector and a two-view model.

Zbontar, Jing, Misra, LeCun, Deny. "Barlow Twins: Self-Supervised Learning via Redundancy Reduction", ICML 2021.

Each embedding dimension is standardized over the batch exactly as ``nn.BatchNorm1d(affine=False)`` in training
mode does (biased variance, ``eps`` inside the square root), which is what the official code
(facebookresearch/barlowtwins ``main.py``) and solo-learn (``solo/losses/barlow.py``) both use. Under
``torch.distributed`` the batch statistics and the cross-correlation are reduced over all ranks, so that R ranks
holding parts of a batch compute the loss of the whole batch (the official code gets the same effect from
``SyncBatchNorm``; solo-learn standardizes per rank).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch
import torch.distributed as dist
from torch import Tensor, nn

if TYPE_CHECKING:
    from hf_ssdd.models import Backbone

__all__ = ["BarlowTwinsLoss", "BarlowTwinsModel", "BarlowTwinsProjector", "barlow_twins_loss"]


class _AllReduceSum(torch.autograd.Function):
    """Sum a tensor over ranks; the backward sums the incoming gradients over ranks as well.

    Same semantics as ``torch.distributed.nn.functional.all_reduce``, which recent torch deprecates with a
    FutureWarning at every call, while the functional-collective replacement has no autograd in torch 2.4.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        x = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _sum_over_ranks(x: Tensor) -> Tensor:
    """Differentiable sum over ranks; the identity outside ``torch.distributed``.

    Every rank computes the same loss from the reduced values, and the backward returns the gradient of the sum
    of these R identical losses, so DDP's gradient averaging yields exactly the gradient of the whole-batch loss.
    """
    return _AllReduceSum.apply(x) if _distributed() else x


def _check_views(z1: Tensor, z2: Tensor) -> None:
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"Barlow Twins needs two [batch, dim] embeddings of the same shape, got {tuple(z1.shape)} and "
            f"{tuple(z2.shape)}"
        )
    if z1.shape[0] < 2 and not _distributed():
        raise ValueError(
            f"Barlow Twins standardizes over the batch and needs at least 2 samples, got {z1.shape[0]}"
        )


def _standardize(z: Tensor, n: Tensor, eps: float) -> Tensor:
    """Standardize ``z`` [views, batch, dim] over the (global) batch like ``BatchNorm1d(affine=False)``."""
    mean = _sum_over_ranks(z.sum(dim=1, keepdim=True)) / n
    centered = z - mean
    var = _sum_over_ranks(centered.pow(2).sum(dim=1, keepdim=True)) / n
    return centered * torch.rsqrt(var + eps)


def _redundancy_reduction(c: Tensor, lambd: float) -> Tensor:
    """Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij² of a square cross-correlation matrix."""
    diag = torch.diagonal(c)
    on_diag = (1 - diag).pow(2).sum()
    off_diag = c.pow(2).sum() - diag.pow(2).sum()
    return on_diag + lambd * off_diag


def barlow_twins_loss(
    z1: Tensor, z2: Tensor, lambd: float = 0.0051, scale_loss: float = 0.1, eps: float = 1e-5
) -> Tensor:
    """Barlow Twins loss of two batches of embeddings (Zbontar et al., 2021, Eq. 1).

    Each dimension of each view is standardized over the batch as ``BatchNorm1d(affine=False)`` does:
    ``(z - mean) / sqrt(biased_var + eps)``. With C = z1ᵀ z2 / N the loss is
    ``scale_loss · (Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij²)``. When ``torch.distributed`` is initialized, N, the
    statistics and C are summed over ranks (differentiably), so the loss is that of the concatenated batch.
    The loss is computed in at least float32 with autocast disabled.

    Args:
        z1: Projections of the first view, ``[batch, dim]``.
        z2: Projections of the second view, ``[batch, dim]``.
        lambd: Weight λ of the off-diagonal (redundancy) term.
        scale_loss: Factor applied to the whole loss (solo-learn's ``scale_loss``).
        eps: Added to the variance before the square root (``BatchNorm1d``'s default).

    Returns:
        The scalar loss, identical on every rank.
    """
    _check_views(z1, z2)
    dtype = torch.promote_types(z1.dtype, torch.float32)
    with torch.autocast(device_type=z1.device.type, enabled=False):
        z = torch.stack((z1, z2)).to(dtype)
        n = _sum_over_ranks(torch.tensor(float(z.shape[1]), dtype=dtype, device=z.device))
        z1n, z2n = _standardize(z, n, eps)
        c = _sum_over_ranks(z1n.T @ z2n) / n
        return scale_loss * _redundancy_reduction(c, lambd)


class BarlowTwinsLoss(nn.Module):
    """Module form of :func:`barlow_twins_loss`."""

    def __init__(self, lambd: float = 0.0051, scale_loss: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.lambd = lambd
        self.scale_loss = scale_loss
        self.eps = eps

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return barlow_twins_loss(z1, z2, self.lambd, self.scale_loss, self.eps)

    def extra_repr(self) -> str:
        return f"lambd={self.lambd}, scale_loss={self.scale_loss}, eps={self.eps}"


class BarlowTwinsProjector(nn.Sequential):
    """Three-layer projector: Linear → BatchNorm1d → ReLU → Linear → BatchNorm1d → ReLU → Linear.

    As in the official code (facebookresearch/barlowtwins ``main.py``) no Linear layer has a bias: the hidden
    ones feed a BatchNorm and the output feeds the loss's standardization, both of which cancel a bias
    (solo-learn keeps PyTorch's default biases; they receive zero gradient through the loss).
    """

    def __init__(self, in_dim: int = 512, hidden_dim: int = 2048, out_dim: int = 2048) -> None:
        super().__init__(
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim, bias=False),
        )


class BarlowTwinsModel(nn.Module):
    """A backbone and a projector trained with the Barlow Twins loss on two views.

    Args:
        backbone: Module with ``num_features`` and ``forward_features(x) -> [B, num_features]``.
        hidden_dim: Width of the projector's hidden layers.
        out_dim: Size of the projections.
        lambd: Off-diagonal weight of the loss.
        scale_loss: Factor applied to the loss.
    """

    def __init__(
        self,
        backbone: nn.Module,
        hidden_dim: int = 2048,
        out_dim: int = 2048,
        lambd: float = 0.0051,
        scale_loss: float = 0.1,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = BarlowTwinsProjector(cast("Backbone", backbone).num_features, hidden_dim, out_dim)
        self.criterion = BarlowTwinsLoss(lambd, scale_loss)

    def project(self, x: Tensor) -> Tensor:
        """Projection of one view, ``[B, out_dim]``."""
        return self.projector(cast("Backbone", self.backbone).forward_features(x))

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        """Loss of two views of the same images; each view goes through the network separately (own BN stats)."""
        return self.criterion(self.project(x1), self.project(x2))
