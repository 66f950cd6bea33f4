"""Pre-train an encoder on a distilled set: regress the targets with MSE.

Two reference recipes (selectable, defaults read from the set's metadata):

- ``krr_st`` (Lee et al., ICLR 2024, ``docs/reference/krr_st.md`` §4.1): SGD lr 0.1, momentum 0.9, weight decay 1e-3,
  constant LR, 1000 epochs, batch 256 (last partial batch kept), no augmentation;
- ``mkdt`` (Joshi et al., ICLR 2025, ``docs/reference/mkdt.md`` §2): SGD with the set's learned learning rate,
  momentum 0.9, weight decay 1e-4, 20 epochs, batch 256, no augmentation.

The result is the backbone with a ``target_dim`` regression head; :func:`save_encoder` stores the trunk (no head)
with ``save_pretrained`` so that it loads as an ``image-feature-extraction`` encoder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from hf_ssdd.artifacts.distilled_set import PRETRAINING_RECIPES as RECIPES
from hf_ssdd.artifacts.distilled_set import DistilledSet
from hf_ssdd.config import require_at_least
from hf_ssdd.data import random_crop_flip
from hf_ssdd.io import atomic_directory, atomic_write_json
from hf_ssdd.models import Backbone, SSDDPreTrainedModel, TimmBackbone, create_backbone
from hf_ssdd.runs import RunRecorder
from hf_ssdd.utils import default_device, derived_generator, derived_seed, progress


@dataclass(frozen=True)
class PretrainSettings:
    """The resolved pre-training recipe."""

    recipe: str
    lr: float
    momentum: float
    weight_decay: float
    epochs: int
    batch_size: int
    augment: bool = False


def resolve_settings(
    dset: DistilledSet,
    recipe: Literal["auto", "krr_st", "mkdt"] = "auto",
    **overrides: Any,
) -> PretrainSettings:
    """The recipe for ``dset``: the named recipe (``auto``: the one the set's metadata recommends, else KRR-ST's),
    with the set's learned learning rate for MKDT, then explicit ``overrides`` (``None`` values ignored)."""
    recommended = dict(dset.meta.get("pretraining") or {})
    name = recommended.get("recipe", "krr_st") if recipe == "auto" else recipe
    if name not in RECIPES:
        raise ValueError(f"unknown pre-training recipe {name!r}; choose one of {sorted(RECIPES)}")
    values = dict(RECIPES[name])
    if recommended.get("recipe") == name:
        values.update({k: recommended[k] for k in values if k in recommended})
    values.update({k: v for k, v in overrides.items() if v is not None and k in {*values, "augment"}})
    return PretrainSettings(recipe=name, **values)


def pretrain(
    dset: DistilledSet,
    backbone: str | nn.Module,
    settings: PretrainSettings,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress_bar: bool = True,
) -> nn.Module:
    """Train ``backbone`` (a registered name or a module with the backbone contract) to regress ``dset.targets``.

    Returns the model in eval mode, with a ``target_dim`` head. Batches are consecutive slices of a per-epoch
    permutation (the last partial batch is kept, as in the reference), all randomness derived from ``seed``.
    """
    device = torch.device(device) if device is not None else default_device()
    size = int(dset.images.shape[-1])
    if isinstance(backbone, str):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derived_seed(seed, "pretrain-init"))
            model = create_backbone(
                backbone, head_dim=dset.target_dim, image_size=size, mean=list(dset.mean), std=list(dset.std)
            )
    else:
        model = backbone
        if getattr(model.head, "out_features", None) != dset.target_dim:
            cast(Backbone, model).reset_head(dset.target_dim)
    model = model.to(device).train()
    x, y = dset.images.to(device), dset.targets.to(device)
    opt = torch.optim.SGD(
        model.parameters(), lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    use_bf16 = device.type == "cuda"
    n, bs = len(dset), settings.batch_size
    bar = progress(
        total=settings.epochs, desc=f"pretrain ({settings.recipe})", disable=not progress_bar, unit="epoch"
    )
    for epoch in range(settings.epochs):
        perm = torch.randperm(n, generator=derived_generator(seed, "pretrain-order", epoch)).to(device)
        total = 0.0
        for start in range(0, n, bs):
            idx = perm[start : start + bs]
            xb = x[idx]
            if settings.augment:
                xb = random_crop_flip(
                    xb,
                    padding=4,
                    generator=derived_generator(seed, "pretrain-aug", epoch, start, device=device),
                )
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                out = model(xb).logits
            loss = F.mse_loss(out.float(), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        bar.update(1)
        bar.set_postfix(loss=f"{total / n:.4g}")
    bar.close()
    return model.eval()


def save_encoder(model: nn.Module, folder: str | Path, overwrite: bool = True) -> Path:
    """Save the trunk (head removed) with ``save_pretrained``, atomically."""
    if hasattr(model, "reset_head"):
        cast(Backbone, model).reset_head(0)
    with atomic_directory(folder, overwrite=overwrite) as tmp:
        cast("SSDDPreTrainedModel | TimmBackbone", model).save_pretrained(tmp)
    return Path(folder)


@dataclass
class PretrainConfig:
    """``hf-ssdd pretrain``: pre-train an encoder on a distilled set and save it.

    Unset (``None``) optimization settings come from the recipe, with the set's own recommendation (e.g. MKDT's
    learned learning rate) first.

    Attributes:
        distilled_set: folder or Hub id of the distilled set.
        backbone: encoder architecture (``hf-ssdd backbones``); ``None``: the one the set recommends, else ``convnet``.
        recipe: pre-training recipe: ``krr_st``, ``mkdt``, or ``auto`` (the set's recommendation, else KRR-ST's).
        epochs: training epochs; ``None``: the recipe's.
        lr: SGD learning rate; ``None``: the recipe's (MKDT: the set's learned one).
        momentum: SGD momentum; ``None``: the recipe's.
        weight_decay: SGD weight decay; ``None``: the recipe's.
        batch_size: minibatch size; ``None``: the recipe's.
        augment: augment the synthetic images (random crop and flip); both papers do not.
        seed: seed of the initialization and the batch order.
        output_dir: where ``encoder/`` and ``pretrain.json`` (the resolved settings) go; may be a distillation run's
            folder (``hf-ssdd push`` looks for ``<run>/encoder``).
        overwrite: replace an earlier ``encoder/`` and ``pretrain.json`` there (kept until the new ones are saved).
        assume_mean: the images' normalization mean, for a set whose card does not record it (else refused).
        assume_std: the images' normalization std, with ``assume_mean``.
    """

    distilled_set: str = ""
    backbone: str | None = None
    recipe: Literal["auto", "krr_st", "mkdt"] = "auto"
    epochs: int | None = None
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    batch_size: int | None = None
    augment: bool = False
    seed: int = 0
    output_dir: str = "runs/pretrain"
    overwrite: bool = False
    assume_mean: list[float] | None = None
    assume_std: list[float] | None = None

    def __post_init__(self) -> None:
        require_at_least(self, 1, "epochs", "batch_size")
        require_at_least(self, 0, "lr", "momentum", "weight_decay", "seed")


def run_pretrain(cfg: PretrainConfig) -> Path:
    """Load the set, pre-train, save ``output_dir/encoder`` and ``output_dir/pretrain.json``; returns the encoder folder.

    An earlier encoder in ``output_dir`` is refused unless ``overwrite``; it comes back if this run fails.
    """
    if not cfg.distilled_set:
        raise ValueError("pass --distilled_set <folder or Hub id>")
    outputs = (
        "encoder",
        "pretrain.json",
    )  # the folder may be a distillation run's (``hf-ssdd push`` looks there)
    with (
        RunRecorder(cfg.output_dir, resume=False, overwrite=cfg.overwrite, outputs=outputs) as run,
        run.loading_inputs(),
    ):
        return _pretrain_run(cfg, run)


def _pretrain_run(cfg: PretrainConfig, run: RunRecorder) -> Path:
    dset = DistilledSet.from_pretrained(
        cfg.distilled_set, assume_mean=cfg.assume_mean, assume_std=cfg.assume_std
    )
    settings = resolve_settings(
        dset,
        cfg.recipe,
        epochs=cfg.epochs,
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        batch_size=cfg.batch_size,
        augment=cfg.augment,
    )
    backbone = cfg.backbone or (dset.meta.get("pretraining") or {}).get("backbone") or "convnet"
    model = pretrain(dset, backbone, settings, seed=cfg.seed)
    out = run.folder
    encoder = save_encoder(model, out / "encoder")
    record = {
        "distilled_set": cfg.distilled_set,
        "backbone": backbone,
        "seed": cfg.seed,
        "settings": asdict(settings),
    }
    atomic_write_json(out / "pretrain.json", record)
    return encoder
