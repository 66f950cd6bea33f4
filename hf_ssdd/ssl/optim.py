"""The teacher's optimizer and schedule, from timm and transformers: LARS and linear-warmup cosine decay.

LARS: You, Gitman, Ginsburg. "Large Batch Training of Convolutional Networks", arXiv:1708.03888, 2017, in the form
solo-learn uses for Barlow Twins (``solo/utils/lars.py`` with ``clip_lr`` and ``exclude_bias_n_norm``), which is
``timm.optim.Lars`` with ``trust_clip`` and per-group adaptation. For a parameter ``w`` with gradient ``g`` in an
adapted group::

    trust = η · ‖w‖ / (‖g‖ + weight_decay · ‖w‖ + eps)          (1 where ‖w‖ or ‖g‖ is 0)
    trust = min(trust / lr, 1)                                    (clip_lr: the local rate never exceeds lr)
    d     = trust · (g + weight_decay · w)

biases and norm parameters (``ndim ≤ 1``) take ``d = g`` (no adaptation, no weight decay); then
``v ← momentum · v + d`` and ``w ← w − lr · v``. (timm applies the "1 where a norm is 0" before the clip, so a
zero-norm parameter steps with ``min(1/lr, 1)``: the same for every ``lr ≤ 1``.)

Schedule: linear warmup from 0 to the base rate, then a half cosine to 0 (Loshchilov & Hutter, ICLR 2017), which
is ``transformers.get_cosine_schedule_with_warmup``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from timm.optim import Lars
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from transformers import get_cosine_schedule_with_warmup

__all__ = ["build_optimizer", "lars_param_groups", "warmup_cosine_scheduler"]


def lars_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split trainable parameters into a LARS-adapted group and an excluded one (solo-learn's exclude_bias_n_norm).

    Biases and normalization parameters (``ndim <= 1``) get no weight decay and no adaptation (``always_adapt``
    False with weight decay 0 is timm's "excluded"); every other tensor gets ``weight_decay`` and is adapted even
    when that is 0. (timm's ``param_groups_weight_decay`` makes the same split but puts every parameter in the
    no-decay group when ``weight_decay`` is 0, which would turn LARS off for the weights.) Empty groups are left
    out; plain ``torch.optim`` optimizers ignore ``always_adapt``.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if p.ndim > 1], "weight_decay": weight_decay, "always_adapt": True},
        {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0, "always_adapt": False},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(
    name: Literal["lars", "sgd"],
    model: nn.Module,
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    eta: float = 0.02,
    clip_lr: bool = True,
    exclude_bias_n_norm: bool = True,
) -> torch.optim.Optimizer:
    """LARS (``timm.optim.Lars``) or momentum SGD over a model's trainable parameters.

    Args:
        name: ``"lars"`` or ``"sgd"``.
        model: The model to optimize (frozen parameters are left out).
        lr: Global learning rate.
        weight_decay: Weight decay.
        momentum: Momentum factor.
        eta: LARS trust coefficient η (LARS only).
        clip_lr: Clip the LARS local learning rate at ``lr`` (LARS only).
        exclude_bias_n_norm: Give biases and norm parameters no weight decay and, with LARS, no adaptation.

    Returns:
        The optimizer.
    """
    if name not in ("lars", "sgd"):
        raise ValueError(f"unknown optimizer {name!r}: choose 'lars' or 'sgd'")
    if lr < 0 or momentum < 0 or weight_decay < 0 or eta <= 0:
        raise ValueError(
            f"the optimizer needs lr >= 0, momentum >= 0, weight_decay >= 0 and eta > 0, got lr={lr}, "
            f"momentum={momentum}, weight_decay={weight_decay}, eta={eta}"
        )
    if exclude_bias_n_norm:
        groups = lars_param_groups(model, weight_decay)
    else:
        trainable = [p for p in model.parameters() if p.requires_grad]
        groups = [{"params": trainable, "weight_decay": weight_decay, "always_adapt": True}]
    if name == "lars":
        return Lars(groups, lr=lr, momentum=momentum, trust_coeff=eta, trust_clip=clip_lr)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum)


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, last_step: int = -1
) -> LambdaLR:
    """Linear warmup over ``warmup_steps`` then cosine decay to 0 at ``total_steps``; ``step()`` it per update.

    ``last_step`` re-plans a schedule mid-run (the optimizer must have been scheduled before); the learning rate is
    then the one of step ``last_step + 1``.
    """
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"need 0 <= warmup_steps < total_steps, got {warmup_steps} and {total_steps}")
    return get_cosine_schedule_with_warmup(optimizer, warmup_steps, total_steps, last_epoch=last_step)
