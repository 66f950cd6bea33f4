"""Trajectory matching on a functional student: the unrolled inner loop, the loss and its hyper-gradients.

Matching Training Trajectories (MTT; Cazenavette et al., CVPR 2022) as used by MKDT (Joshi, Ni, Mirzasoleiman,
ICLR 2025, spec §1.5): starting from an expert's parameters θ₀ = θ*_t, take N plain SGD steps

    θ_{i+1} = θ_i − η ∇_θ mean((f(X[b_i]; θ_i) − Y[b_i])²)

on minibatches b_i of the synthetic images X with targets Y and learnable step size η, then compare the end point
with the expert M epochs later:

    ℓ = ‖θ_N − θ*_{t+M}‖² / ‖θ*_t − θ*_{t+M}‖².

The hyper-gradients ∂ℓ/∂X, ∂ℓ/∂Y, ∂ℓ/∂η are second-order (they go through ∇_θ). Two exact ways to get them:

- ``"autograd"``: unroll with ``create_graph=True`` and call ``autograd.grad`` once. Memory grows with N × batch
  (every step's activations and backward intermediates stay alive).
- ``"checkpoint"``: reverse-mode with recomputation. The forward keeps only θ₀ … θ_N and the minibatch indices;
  the backward walks the steps in reverse, rebuilds one step's double-backward graph at a time and propagates the
  adjoint a_i = ∂ℓ/∂θ_i with a vector-Jacobian product (a Hessian-vector product plus the direct terms). Memory is
  N + 1 parameter vectors plus one step's graph, for about one extra forward/backward per step. This is the
  constant-activation-memory idea of TESLA (Cui et al., ICML 2023); unlike TESLA's released code, which treats
  θ_i as independent of the earlier minibatches, the adjoint recursion here gives the same gradient as autograd.

Nothing here may be wrapped in ``torch.compile``: AOTAutograd does not support the double backward of the
``create_graph`` steps (pytorch#91469).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

Backward = Literal["autograd", "checkpoint"]


@dataclass(frozen=True)
class ParamSpec:
    """Names and shapes of a module's parameters, to move between a parameter dict and one flat vector."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]

    @classmethod
    def from_module(cls, model: nn.Module) -> ParamSpec:
        named = list(model.named_parameters())
        return cls(tuple(n for n, _ in named), tuple(p.shape for _, p in named))

    @property
    def numel(self) -> int:
        return sum(s.numel() for s in self.shapes)

    def flatten(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Concatenate ``params`` (in this spec's order) into one vector; raises on a missing or misshapen entry."""
        missing = [n for n in self.names if n not in params]
        if missing:
            raise KeyError(f"parameter(s) {missing} missing; expected {list(self.names)}")
        for name, shape in zip(self.names, self.shapes):
            if params[name].shape != shape:
                raise ValueError(
                    f"parameter {name!r} has shape {tuple(params[name].shape)}, expected {tuple(shape)}"
                )
        return torch.cat([params[n].reshape(-1) for n in self.names])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of ``flat`` shaped like the parameters (differentiable)."""
        chunks = flat.split([s.numel() for s in self.shapes])
        return {n: c.view(s) for n, c, s in zip(self.names, chunks, self.shapes)}


class FunctionalStudent:
    """A module evaluated at an explicit flat parameter vector with :func:`torch.func.functional_call`.

    The module must hold no buffers (e.g. BatchNorm running statistics): its output is then a pure function of the
    parameters and the input. Outputs with a ``logits`` field (hf_ssdd backbones) are reduced to it.
    """

    def __init__(self, model: nn.Module):
        buffers = [name for name, _ in model.named_buffers()]
        if buffers:
            raise ValueError(
                f"{type(model).__name__} has buffers {buffers[:4]} (e.g. BatchNorm running statistics); trajectory "
                "matching needs a model whose output depends only on its parameters (e.g. instance/group norm)"
            )
        self.model = model
        self.spec = ParamSpec.from_module(model)

    def __call__(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out = functional_call(self.model, self.spec.unflatten(theta), (x,))
        return out if isinstance(out, torch.Tensor) else out.logits

    def flat_parameters(self) -> torch.Tensor:
        """The module's own parameters as one detached vector."""
        return self.spec.flatten(dict(self.model.named_parameters())).detach()


def inner_loss(
    student: FunctionalStudent, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """The KD objective of the experts and of the inner loop: mean over batch × D of (f(x; θ) − y)²."""
    return F.mse_loss(student(theta, x), y)


def minibatch_schedule(
    num_images: int, batch_size: int, steps: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """Indices of ``steps`` inner minibatches: consecutive chunks of random permutations of ``num_images``.

    A new permutation is drawn when the current one is used up; the last chunk of a permutation may be smaller.
    """
    batches: list[torch.Tensor] = []
    while len(batches) < steps:
        batches.extend(torch.randperm(num_images, generator=generator).split(batch_size))
    return batches[:steps]


def unroll(
    student: FunctionalStudent,
    theta0: torch.Tensor,
    images: torch.Tensor,
    targets: torch.Tensor,
    lr: torch.Tensor,
    batches: Sequence[torch.Tensor],
) -> torch.Tensor:
    """θ_N after ``len(batches)`` differentiable SGD steps (``create_graph=True``) from ``theta0``."""
    theta = theta0 if theta0.requires_grad else theta0.detach().requires_grad_(True)
    for b in batches:
        b = b.to(images.device)
        loss = inner_loss(student, theta, images[b], targets[b])
        (grad,) = torch.autograd.grad(loss, theta, create_graph=True)
        theta = theta - lr * grad
    return theta


def matching_loss(
    theta_end: torch.Tensor, theta_start: torch.Tensor, theta_target: torch.Tensor
) -> torch.Tensor:
    """‖θ_N − θ*_{t+M}‖² / ‖θ*_t − θ*_{t+M}‖² (MTT's normalized parameter distance)."""
    return (theta_end - theta_target).pow(2).sum() / _expert_distance(theta_start, theta_target)


def _expert_distance(theta_start: torch.Tensor, theta_target: torch.Tensor) -> torch.Tensor:
    dist = (theta_start - theta_target).detach().pow(2).sum()
    if not torch.isfinite(dist):
        raise ValueError("the expert trajectory holds non-finite parameters; retrain the experts")
    if not dist > 0:
        raise ValueError("the expert's start and target parameters coincide; the matching loss is undefined")
    return dist


@dataclass
class MatchingGradients:
    """Loss of one trajectory-matching iteration and its gradients w.r.t. images, targets and learning rate."""

    loss: torch.Tensor
    images: torch.Tensor
    targets: torch.Tensor
    lr: torch.Tensor


def matching_gradients(
    student: FunctionalStudent,
    theta_start: torch.Tensor,
    theta_target: torch.Tensor,
    images: torch.Tensor,
    targets: torch.Tensor,
    lr: torch.Tensor,
    batches: Sequence[torch.Tensor],
    backward: Backward = "autograd",
) -> MatchingGradients:
    """Matching loss and exact hyper-gradients, by plain autograd or by reverse-mode recomputation.

    Args:
        student: the functional student (architecture of the experts).
        theta_start: flat expert parameters at the start epoch t.
        theta_target: flat expert parameters at epoch t + M.
        images: synthetic images (n×C×H×W); only their values are used.
        targets: synthetic targets (n×D).
        lr: the scalar inner learning rate η (0-dim).
        batches: index tensors of the inner minibatches (see :func:`minibatch_schedule`).
        backward: ``"autograd"`` or ``"checkpoint"`` (module docstring).

    Returns:
        The detached loss and the gradients, shaped like ``images``, ``targets`` and ``lr``.
    """
    x = images.detach().requires_grad_(True)
    y = targets.detach().requires_grad_(True)
    eta = lr.detach().requires_grad_(True)
    theta_start, theta_target = theta_start.detach(), theta_target.detach()
    if backward == "autograd":
        loss = matching_loss(unroll(student, theta_start, x, y, eta, batches), theta_start, theta_target)
        gx, gy, geta = torch.autograd.grad(loss, [x, y, eta])
        return MatchingGradients(loss.detach(), gx, gy, geta)
    if backward == "checkpoint":
        return _recompute_gradients(student, theta_start, theta_target, x, y, eta, batches)
    raise ValueError(f"backward must be 'autograd' or 'checkpoint', got {backward!r}")


def _sgd_trajectory(
    student: FunctionalStudent,
    theta0: torch.Tensor,
    images: torch.Tensor,
    targets: torch.Tensor,
    lr: torch.Tensor,
    batches: Sequence[torch.Tensor],
) -> list[torch.Tensor]:
    """θ₀ … θ_N of the inner loop, each detached (first-order gradients only; no graph is kept)."""
    thetas = [theta0]
    eta = lr.detach()
    for b in batches:
        theta = thetas[-1].detach().requires_grad_(True)
        loss = inner_loss(student, theta, images[b].detach(), targets[b].detach())
        (grad,) = torch.autograd.grad(loss, theta)
        thetas.append((theta - eta * grad).detach())
    return thetas


def _recompute_gradients(
    student: FunctionalStudent,
    theta_start: torch.Tensor,
    theta_target: torch.Tensor,
    images: torch.Tensor,
    targets: torch.Tensor,
    lr: torch.Tensor,
    batches: Sequence[torch.Tensor],
) -> MatchingGradients:
    """Reverse-mode through the unrolled loop, recomputing one inner step's graph at a time."""
    batches = [b.to(images.device) for b in batches]
    thetas = _sgd_trajectory(student, theta_start, images, targets, lr, batches)
    dist = _expert_distance(theta_start, theta_target)
    residual = thetas[-1] - theta_target
    loss = residual.pow(2).sum() / dist
    adjoint = 2 * residual / dist  # ∂ℓ/∂θ_N
    grad_x, grad_y, grad_lr = torch.zeros_like(images), torch.zeros_like(targets), torch.zeros_like(lr)
    for i in range(len(batches) - 1, -1, -1):
        b = batches[i]
        theta = thetas[i].requires_grad_(True)
        xb = images[b].detach().requires_grad_(True)
        yb = targets[b].detach().requires_grad_(True)
        eta = lr.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(inner_loss(student, theta, xb, yb), theta, create_graph=True)
        update = -eta * g  # θ_{i+1} = θ_i + update
        inputs = [xb, yb, eta] + ([theta] if i > 0 else [])
        grads = torch.autograd.grad(update, inputs, grad_outputs=adjoint)
        grad_x.index_add_(0, b, grads[0])
        grad_y.index_add_(0, b, grads[1])
        grad_lr += grads[2]
        if i > 0:
            adjoint = adjoint + grads[3]  # ∂ℓ/∂θ_i = a_{i+1} (I − η H_i)
    return MatchingGradients(loss.detach(), grad_x, grad_y, grad_lr)
