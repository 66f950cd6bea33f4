"""Full fine-tuning, the transfer protocol of KRR-ST (Lee et al., ICLR 2024, ``docs/reference/krr_st.md`` §5.1).

The pre-trained trunk gets a fresh ``C``-way head and ALL parameters are trained: SGD lr 0.01, momentum 0.9, weight
decay 5e-4, cosine annealing over the run (``CosineAnnealingLR``, stepped every iteration), batch 256,
cross-entropy, pad-4 random crop + horizontal flip on the uint8 batch, then normalization; 10,000 iterations for
CIFAR-10/100 and Tiny ImageNet, 5,000 for Aircraft, Cars, CUB-200-2011, Stanford Dogs and Flowers-102. Top-1 on the
test split once at the end (no early stopping, no model selection).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import nn

from hf_ssdd.data import get_spec, normalize, random_crop_flip
from hf_ssdd.transfer.probe import map_batches
from hf_ssdd.utils import derived_generator, derived_seed, progress

if TYPE_CHECKING:
    from hf_ssdd.models import Backbone

FINE_GRAINED_TARGETS = frozenset({"aircraft", "cars", "cub2011", "dogs", "flowers102"})
DEFAULT_STEPS = 10_000
FINE_GRAINED_STEPS = 5_000


@dataclass(frozen=True)
class FinetuneSettings:
    """KRR-ST fine-tuning recipe.

    Attributes:
        lr: initial SGD learning rate, annealed to 0 with a cosine over the run.
        momentum: SGD momentum.
        weight_decay: SGD weight decay (on all parameters).
        batch_size: examples per step.
        padding: zero padding of the random crop.
        steps: iterations for every target; ``None``: :func:`default_finetune_steps` of each target.
    """

    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    padding: int = 4
    steps: int | None = None


def default_finetune_steps(target: str) -> int:
    """KRR-ST's iterations for ``target`` (``test.py`` L75-78): 5,000 for the fine-grained sets, else 10,000."""
    spec = get_spec(target)
    return FINE_GRAINED_STEPS if spec is not None and spec.name in FINE_GRAINED_TARGETS else DEFAULT_STEPS


def make_optimizer(
    model: nn.Module, settings: FinetuneSettings, steps: int
) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.CosineAnnealingLR]:
    """SGD over all parameters and a cosine annealing of its learning rate to 0 over ``steps`` iterations."""
    optimizer = torch.optim.SGD(
        model.parameters(), lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)


def batch_indices(n: int, batch_size: int, steps: int, seed: int) -> Iterator[torch.Tensor]:
    """``steps`` batches of indices into ``n`` examples: consecutive slices of a fresh random permutation per epoch.

    As a ``DataLoader(shuffle=True, drop_last=False)`` cycled until ``steps`` batches are drawn: the last batch of
    an epoch may be smaller.
    """
    epoch = 0
    while True:
        order = torch.randperm(n, generator=derived_generator(seed, "finetune-order", epoch))
        for batch in order.split(batch_size):
            if steps == 0:
                return
            steps -= 1
            yield batch
        epoch += 1


def finetune(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    steps: int,
    settings: FinetuneSettings | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress_bar: bool = True,
) -> list[float]:
    """Fine-tune ``model`` in place on uint8 ``images`` with a fresh ``num_classes``-way head (KRR-ST protocol).

    Args:
        model: a trunk with the backbone contract; its head is replaced.
        images: uint8 N×3×S×S training images.
        labels: their class ids.
        num_classes: size of the new head.
        mean, std: normalization of the target dataset.
        steps: iterations.
        settings: the recipe (default :class:`FinetuneSettings`).
        seed: seeds the head init, the batch order and the augmentation.
        device: where to train (default: the model's device); bf16 autocast on CUDA.
        progress_bar: show a progress bar.

    Returns:
        The training loss of every step.
    """
    settings = settings or FinetuneSettings()
    if steps < 1:
        raise ValueError(f"fine-tuning needs at least one step, got {steps}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived_seed(seed, "finetune-head"))
        cast("Backbone", model).reset_head(num_classes)
    model.to(device).train()
    x, y = images.to(device), labels.to(device, torch.int64)
    optimizer, scheduler = make_optimizer(model, settings, steps)
    augment = derived_generator(seed, "finetune-aug", device=device)
    losses = []
    bar = progress(total=steps, desc="fine-tune", disable=not progress_bar, unit="step", leave=False)
    for idx in batch_indices(len(x), settings.batch_size, steps, seed):
        idx = idx.to(device)
        batch = normalize(random_crop_flip(x[idx], settings.padding, generator=augment), mean, std)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(batch).logits
        loss = F.cross_entropy(logits.float(), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.detach())
        bar.update(1)
    bar.close()
    return torch.stack(losses).tolist()


def predict(
    model: nn.Module,
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Arg-max class of the head's logits for uint8 ``images`` (eval mode, normalized, no augmentation)."""
    return map_batches(lambda x: model(x).logits.argmax(1), model, images, mean, std, batch_size, device)
