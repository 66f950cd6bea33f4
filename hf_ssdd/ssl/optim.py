"""LARS, parameter groups that exclude biases and norms, and the warmup-cosine learning-rate schedule.

LARS: You, Gitman, Ginsburg. "Large Batch Training of Convolutional Networks", arXiv:1708.03888, 2017, in the form
used by solo-learn (``solo/utils/lars.py``, with ``clip_lr`` and ``exclude_bias_n_norm``) for Barlow Twins.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

__all__ = [
    "LARS",
    "build_optimizer",
    "lars_param_groups",
    "warmup_cosine_lambda",
    "warmup_cosine_scheduler",
]


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al., 2017).

    For each parameter tensor ``w`` with gradient ``g`` of a group with ``lars_exclude=False``::

        trust = eta · ‖w‖ / (‖g‖ + weight_decay · ‖w‖ + eps)      (1 where ‖w‖ or ‖g‖ is 0)
        trust = min(trust / lr, 1)                                  (if clip_lr)
        d     = trust · (g + weight_decay · w)

    so that with ``clip_lr`` the local rate ``lr · trust`` never exceeds the global ``lr``. Groups with
    ``lars_exclude=True`` (biases and norm parameters, see :func:`lars_param_groups`) use ``d = g``: no
    adaptation and no weight decay. Then ``v ← momentum · v + d`` and ``w ← w − lr · v``.

    Args:
        params: Parameters or parameter groups; groups may set ``lars_exclude``.
        lr: Global learning rate.
        momentum: Momentum factor.
        weight_decay: L2 penalty, applied inside the trust-scaled update.
        eta: Trust coefficient.
        clip_lr: Clip the trust ratio so that the local learning rate is at most ``lr``.
        eps: Added to the trust ratio's denominator.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.02,
        clip_lr: bool = True,
        eps: float = 1e-8,
    ) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0 or eta <= 0:
            raise ValueError(
                f"LARS needs lr >= 0, momentum >= 0, weight_decay >= 0 and eta > 0, got lr={lr}, "
                f"momentum={momentum}, weight_decay={weight_decay}, eta={eta}"
            )
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            eta=eta,
            clip_lr=clip_lr,
            eps=eps,
            lars_exclude=False,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Perform one optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.mul_(group["momentum"]).add_(_lars_direction(p, p.grad, group))
                p.add_(buf, alpha=-group["lr"])
        return loss


def _lars_direction(p: Tensor, grad: Tensor, group: dict[str, Any]) -> Tensor:
    """The update direction ``d`` of one parameter (see :class:`LARS`)."""
    if group["lars_exclude"]:
        return grad
    wd = group["weight_decay"]
    p_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(grad)
    trust = group["eta"] * p_norm / (g_norm + wd * p_norm + group["eps"])
    if group["clip_lr"]:
        trust = torch.clamp(trust / group["lr"], max=1.0)
    trust = torch.where((p_norm > 0) & (g_norm > 0), trust, torch.ones_like(trust))
    return grad.add(p, alpha=wd).mul_(trust)


def _trainable(params: nn.Module | Iterable[Tensor]) -> list[Tensor]:
    if isinstance(params, nn.Module):
        params = params.parameters()
    return [p for p in params if p.requires_grad]


def lars_param_groups(params: nn.Module | Iterable[Tensor], weight_decay: float) -> list[dict[str, Any]]:
    """Split trainable parameters into a LARS-adapted group and an excluded group.

    Biases and normalization parameters (``ndim <= 1``) go into a group with ``lars_exclude=True`` and no weight
    decay, as solo-learn's ``exclude_bias_n_norm``; every other tensor gets ``weight_decay``. Empty groups are
    left out.

    Args:
        params: A model or its parameters.
        weight_decay: Weight decay of the adapted group.

    Returns:
        Parameter groups for :class:`LARS` (or any ``torch.optim`` optimizer, which ignores ``lars_exclude``).
    """
    trainable = _trainable(params)
    groups = [
        {"params": [p for p in trainable if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0, "lars_exclude": True},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(
    name: Literal["lars", "sgd"],
    params: nn.Module | Iterable[Tensor],
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    eta: float = 0.02,
    clip_lr: bool = True,
    exclude_bias_n_norm: bool = True,
) -> torch.optim.Optimizer:
    """LARS or momentum SGD over a model's trainable parameters.

    Args:
        name: ``"lars"`` or ``"sgd"``.
        params: A model or its parameters.
        lr: Global learning rate.
        weight_decay: Weight decay.
        momentum: Momentum factor.
        eta: LARS trust coefficient (LARS only).
        clip_lr: Clip the LARS local learning rate at ``lr`` (LARS only).
        exclude_bias_n_norm: Give biases and norm parameters no weight decay and, with LARS, no adaptation.

    Returns:
        The optimizer.
    """
    if name not in ("lars", "sgd"):
        raise ValueError(f"unknown optimizer {name!r}: choose 'lars' or 'sgd'")
    if exclude_bias_n_norm:
        groups = lars_param_groups(params, weight_decay)
    else:
        groups = [{"params": _trainable(params), "weight_decay": weight_decay}]
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum, eta=eta, clip_lr=clip_lr)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum)


def warmup_cosine_lambda(
    step: int,
    warmup_steps: int,
    total_steps: int,
    warmup_start_factor: float = 0.0,
    min_factor: float = 0.0,
) -> float:
    """Learning-rate factor: linear warmup, then cosine annealing (Loshchilov & Hutter, ICLR 2017).

    The factor rises linearly from ``warmup_start_factor`` at step 0 to 1 at ``warmup_steps``, then follows a
    half cosine down to ``min_factor`` at ``total_steps`` and stays there.

    Args:
        step: Optimizer steps taken so far.
        warmup_steps: Length of the warmup (0 for none).
        total_steps: Step at which the factor reaches ``min_factor``.
        warmup_start_factor: Factor at step 0.
        min_factor: Final factor.

    Returns:
        The factor multiplying the base learning rate.
    """
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"need 0 <= warmup_steps < total_steps, got {warmup_steps} and {total_steps}")
    if step < warmup_steps:
        return warmup_start_factor + (1.0 - warmup_start_factor) * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int,
    total_steps: int,
    warmup_start_factor: float = 0.0,
    min_factor: float = 0.0,
) -> LambdaLR:
    """A ``LambdaLR`` applying :func:`warmup_cosine_lambda`; call its ``step()`` after every optimizer step."""
    return LambdaLR(
        optimizer,
        functools.partial(
            warmup_cosine_lambda,
            warmup_steps=warmup_steps,
            total_steps=total_steps,
            warmup_start_factor=warmup_start_factor,
            min_factor=min_factor,
        ),
    )
