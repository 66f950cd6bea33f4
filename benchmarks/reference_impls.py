"""Thin adapters that run the papers' reference code at a given setting, for side-by-side timings.

The reference repositories are never part of this project: the benchmarks import them at run time from a local,
git-ignored copy (default ``.reference/selfsup_dd`` and ``.reference/MKDT``; export them with
``git archive`` from a clone of github.com/db-Lee/selfsup_dd and github.com/jiayini1119/MKDT).

- KRR-ST (db-Lee/selfsup_dd @ 4beb4b1): one outer step is the reference's own ``algorithms/distill.run`` with its
  ``ModelPool``, ``InfIterator`` and kornia ``get_aug``. ``train.py`` builds the rest inline, so the adapter restates
  those few lines: the DataLoader over float [0, 1] images on the host (``data/wrapper.py``), the torchvision
  ResNet-18 teacher with the 3×3 stride-1 stem (``train.py``), the raw-pixel synthetic images with ``aug_te``
  targets, AdamW + LinearLR. The pool models start at age 1 instead of ``ModelPool.init``'s random warm-up (a
  model's age does not change the cost of a step). Without kornia, the same crop + flip + normalize is done with
  :func:`hf_ssdd.data.random_crop_flip` and recorded in ``augment``.
- MKDT (jiayini1119/MKDT @ eaf200e): ``distill.py`` has no step function; the iteration body (new student through
  ``ReparamModule``, ``syn_steps`` unrolled SGD steps with ``create_graph=True``, normalized parameter distance,
  ``backward``) is restated around the reference's ``networks.ConvNet`` and ``reparam_module.ReparamModule``.
  The ConvNet is built with ``utils.get_default_convnet_setting``'s values (width 128, depth 3, ReLU, instance
  norm, average pooling) rather than through ``utils.get_network``, whose module imports pandas and the extra
  datasets and reseeds torch from the wall clock.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

KRR_MEAN, KRR_STD = (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)  # the reference's CIFAR-100 constants


class ReferenceNotFoundError(FileNotFoundError):
    """The reference copy is missing."""


def import_reference(root: str | Path, *names: str) -> list[ModuleType]:
    """Import top-level modules of a reference checkout at ``root`` (put first on ``sys.path`` meanwhile)."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise ReferenceNotFoundError(f"reference not found at {root}")
    sys.path.insert(0, str(root))
    try:
        return [importlib.import_module(name) for name in names]
    finally:
        sys.path.remove(str(root))


class ReferenceKRRST:
    """db-Lee/selfsup_dd's KRR-ST outer step at a given setting (fp32, as the reference runs).

    Args:
        root: the reference checkout.
        images: uint8 N×3×S×S source images (the reference keeps them as float [0, 1] on the host).
        num_images: synthetic set size.
        real_batch: real images per outer step.
        model: pool model name (``convnet_128_256_512_bn``).
        num_models: pool size.
        device: where the step runs.
        seed: seeds torch and numpy (the reference draws the pool model with ``np.random``).
    """

    def __init__(
        self,
        root: str | Path,
        images: torch.Tensor,
        num_images: int,
        real_batch: int,
        model: str,
        num_models: int,
        device: torch.device,
        seed: int = 0,
    ):
        from torch.utils.data import DataLoader, TensorDataset
        from torchvision.models import resnet18

        distill, model_pool, utils = import_reference(root, "algorithms.distill", "model_pool", "utils")
        self.distill = distill
        torch.manual_seed(seed)
        np.random.seed(seed)
        size = images.shape[-1]
        x_tr = images.float() / 255
        loader = DataLoader(
            TensorDataset(x_tr, torch.zeros(len(x_tr), dtype=torch.long)),
            batch_size=real_batch,
            num_workers=0,
            shuffle=True,
            pin_memory=device.type == "cuda",
        )
        self.iter_tr = utils.InfIterator(loader)
        self.aug, aug_te, self.augment = _krr_augment(root, size)

        teacher = resnet18()
        teacher.fc = nn.Identity()
        teacher.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
        teacher.maxpool = nn.Identity()
        self.teacher = teacher.to(device).eval()
        with torch.no_grad():
            x_syn = x_tr[:num_images].to(device)
            y_syn = torch.cat([self.teacher(aug_te(chunk)) for chunk in x_syn.split(1024)])
        self.x_syn = x_syn.requires_grad_(True)
        self.y_syn = y_syn.requires_grad_(True)
        self.args = SimpleNamespace(
            num_models=num_models,
            online_iteration=10**9,
            train_model=model,
            img_shape=(3, size, size),
            num_pretrain_classes=y_syn.shape[1],
            online_opt="sgd",
            online_lr=0.1,
            online_wd=1e-3,
            outer_grad_norm=0.0,
        )
        self.pool = model_pool.ModelPool(self.args, device)
        self.pool.iterations = [1] * num_models
        self.outer_opt = torch.optim.AdamW([self.x_syn, self.y_syn], lr=1e-3, weight_decay=0.0)
        self.outer_sch = torch.optim.lr_scheduler.LinearLR(
            self.outer_opt, start_factor=1.0, end_factor=1e-3, total_iters=160_000
        )
        self.device = device

    def step(self) -> float:
        """One outer step (``distill.run`` + the scheduler step of ``train.py``'s loop); returns the loss."""
        loss = self.distill.run(
            self.args,
            self.device,
            self.teacher,
            self.pool,
            self.outer_opt,
            self.iter_tr,
            self.aug,
            self.x_syn,
            self.y_syn,
        )
        self.outer_sch.step()
        return float(loss.detach())


def _krr_augment(root: str | Path, size: int) -> tuple[nn.Module, nn.Module, str]:
    """The reference's ``get_aug('cifar100', size, True)``, or the same ops in plain torch without kornia."""
    try:
        (augmentation,) = import_reference(root, "data.augmentation")
    except ModuleNotFoundError as e:
        if e.name != "kornia":
            raise
        from hf_ssdd.data import normalize, random_crop_flip

        class CropFlipNormalize(nn.Module):
            def __init__(self, augment: bool):
                super().__init__()
                self.augment = augment

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return normalize(random_crop_flip(x) if self.augment else x, KRR_MEAN, KRR_STD)

        return CropFlipNormalize(True), CropFlipNormalize(False), "hf_ssdd crop+flip (kornia not installed)"
    aug_tr, aug_te = augmentation.get_aug("cifar100", size, True)
    return aug_tr, aug_te, "kornia (reference get_aug)"


class ReferenceMKDT:
    """jiayini1119/MKDT's trajectory-matching iteration at a given setting.

    Args:
        root: the reference checkout.
        images: n×3×S×S synthetic images.
        targets: n×D synthetic target representations.
        batch_syn: inner minibatch size.
        syn_steps: inner SGD steps.
        lr: initial inner learning rate.
        seed: seeds the student initialization and the start/target parameters.
    """

    def __init__(
        self,
        root: str | Path,
        images: torch.Tensor,
        targets: torch.Tensor,
        batch_syn: int,
        syn_steps: int,
        lr: float = 0.1,
        seed: int = 0,
    ):
        self.networks, reparam = import_reference(root, "networks", "reparam_module")
        self.ReparamModule = reparam.ReparamModule
        self.device = images.device
        self.image_syn = images.detach().clone().requires_grad_(True)
        self.label_syn = targets.detach().clone().requires_grad_(True)
        self.syn_lr = torch.tensor(lr, device=self.device).requires_grad_(True)
        self.batch_syn, self.syn_steps = batch_syn, syn_steps
        torch.manual_seed(seed)
        start = self._student().flat_param.detach()
        self.starting_params = start
        self.target_params = start + 0.01 * torch.randn_like(start)
        self.num_params = start.numel()

    def _student(self) -> nn.Module:
        size = tuple(self.image_syn.shape[-2:])
        net = self.networks.ConvNet(
            channel=3,
            num_classes=self.label_syn.shape[1],
            net_width=128,
            net_depth=3,
            net_act="relu",
            net_norm="instancenorm",
            net_pooling="avgpooling",
            im_size=size,
        )
        return self.ReparamModule(net).to(self.device)

    def iteration(self) -> float:
        """One iteration of ``distill.py``'s loop (without its logging, saving and optimizer steps)."""
        student_net = self._student()
        student_net.train()
        student_params = [self.starting_params.clone().requires_grad_(True)]
        indices_chunks: list[torch.Tensor] = []
        for _ in range(self.syn_steps):
            if not indices_chunks:
                indices_chunks = list(torch.split(torch.randperm(len(self.image_syn)), self.batch_syn))
            these_indices = indices_chunks.pop()
            x = student_net(self.image_syn[these_indices], flat_param=student_params[-1])
            mse_loss = F.mse_loss(x, self.label_syn[these_indices])
            grad = torch.autograd.grad(mse_loss, student_params[-1], create_graph=True)[0]
            student_params.append(student_params[-1] - self.syn_lr * grad)
        param_loss = F.mse_loss(student_params[-1], self.target_params, reduction="sum") / self.num_params
        param_dist = F.mse_loss(self.starting_params, self.target_params, reduction="sum") / self.num_params
        grand_loss = param_loss / param_dist
        for t in (self.image_syn, self.label_syn, self.syn_lr):
            t.grad = None
        grand_loss.backward()
        return float(grand_loss)
