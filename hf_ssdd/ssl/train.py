"""Barlow Twins teacher training (Zbontar et al., ICML 2021) under ``accelerate``.

Defaults follow solo-learn's CIFAR ``barlow.yaml``, the most likely recipe behind the KRR-ST / MKDT teachers
(``docs/reference/krr_st.md`` §2): ResNet-18 with a 3×3 stride-1 padding-2 stem and no max-pool, projector
512-2048-2048-2048, λ_offdiag 0.0051, scale 0.1, LARS (eta 0.02, clip, bias/norm excluded) lr 0.3, wd 1e-4,
batch 256, 1000 epochs with warmup-cosine. The representation is the 512-d pooled backbone output, saved as an HF
model (``teacher/``) that :class:`hf_ssdd.teachers.Teacher` loads. Labels are used only by the kNN monitor.

Outputs under ``output_dir``: ``config.yaml``, ``checkpoints/`` (exact resume), ``metrics.jsonl`` (loss records,
and kNN records at initialization — the baseline — and every ``knn_every`` epochs; every record carries
``minutes``, the training wall time so far, summed over resumed sessions), ``loss_curve.png``,
``knn_curve.png``, ``views_grid.png``, ``logs/`` (tracker logs, with ``log_with``) and the final ``teacher/``
folder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import nn

from hf_ssdd.config import Tracker, config_to_hparams, require_at_least, require_positive
from hf_ssdd.data import BarlowTwinsAugmentConfig, barlow_twins_views, load_image_source, normalize
from hf_ssdd.io import atomic_directory
from hf_ssdd.knn import knn_accuracy
from hf_ssdd.models import Backbone, SSDDPreTrainedModel, TimmBackbone, create_backbone
from hf_ssdd.plots import save_curves, save_image_grid
from hf_ssdd.runs import RunRecorder, run_identity
from hf_ssdd.ssl.barlow_twins import BarlowTwinsModel
from hf_ssdd.ssl.optim import build_optimizer, warmup_cosine_scheduler
from hf_ssdd.utils import derived_generator, progress


@dataclass
class TeacherTrainConfig:
    """Barlow Twins teacher training (defaults: solo-learn CIFAR recipe).

    Attributes:
        dataset: catalog name (``hf-ssdd datasets``), Hub dataset id or local folder of the training images.
        split: the training split.
        monitor_split: labelled split the kNN monitor evaluates on; ``None``: no monitor.
        image_size: resize the images to this many pixels per side; ``None``: the dataset's resolution.
        max_examples: train on the first N images only; ``None``: all of them.
        backbone: the encoder architecture (``hf-ssdd backbones``).
        backbone_kwargs: extra ``create_backbone`` arguments (e.g. ``{layers: [1, 1, 1, 1]}``).
        projector_hidden_dim: width of the projector's hidden layers.
        projector_out_dim: output width of the projector (the Barlow Twins embedding).
        lambd: weight λ of the off-diagonal terms of the Barlow Twins loss.
        scale_loss: factor the whole loss is scaled by.
        optimizer: ``lars`` or ``sgd`` (bias and norm parameters excluded from LARS adaptation and weight decay).
        lr: peak learning rate, reached after the warmup.
        weight_decay: weight decay.
        momentum: SGD / LARS momentum.
        lars_eta: LARS trust coefficient η.
        batch_size: global batch size (over all processes).
        epochs: training epochs (ignored when ``max_steps`` is set).
        max_steps: total optimizer steps; ``None``: ``epochs`` × steps per epoch.
        warmup_epochs: epochs of linear learning-rate warmup before the cosine decay.
        precision: ``bf16`` autocast, ``fp32``, or ``auto`` (bf16 on CUDA).
        sync_batchnorm: synchronize BatchNorm statistics over processes.
        knn_every: run the kNN monitor every this many epochs.
        knn_k: neighbours of the kNN monitor.
        knn_temperature: temperature of the kNN monitor's similarity weights.
        knn_max_train: training images the kNN monitor indexes (a fixed random subset); ``None``: all.
        checkpoint_every: save a checkpoint every this many steps.
        keep_checkpoints: how many of the newest checkpoints to keep.
        log_every: log the loss every this many steps.
        output_dir: the run folder (config, checkpoints, curves, ``teacher/``).
        seed: seed of the initialization and the augmentations.
        resume: continue from the newest checkpoint in ``output_dir``.
        overwrite: delete an existing ``output_dir`` first.
        log_with: also log to an experiment tracker (logs under ``<output_dir>/logs``); ``None``: no tracker.
    """

    dataset: str = "cifar10"
    split: str = "train"
    monitor_split: str | None = "test"
    image_size: int | None = None
    max_examples: int | None = None
    backbone: str = "resnet18_bt_teacher"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    projector_hidden_dim: int = 2048
    projector_out_dim: int = 2048
    lambd: float = 0.0051
    scale_loss: float = 0.1
    optimizer: Literal["lars", "sgd"] = "lars"
    lr: float = 0.3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    lars_eta: float = 0.02
    batch_size: int = 256
    epochs: int = 1000
    max_steps: int | None = None
    warmup_epochs: float = 10.0
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    sync_batchnorm: bool = True
    knn_every: int = 10
    knn_k: int = 200
    knn_temperature: float = 0.1
    knn_max_train: int | None = 10_000
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    output_dir: str = "runs/teacher"
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    log_with: Tracker | None = None

    def __post_init__(self) -> None:
        require_at_least(self, 0, "lr", "weight_decay", "momentum", "lambd", "warmup_epochs", "seed")
        require_at_least(
            self, 1, "projector_hidden_dim", "projector_out_dim", "batch_size", "epochs", "max_steps"
        )
        require_at_least(
            self, 1, "knn_every", "knn_k", "knn_max_train", "checkpoint_every", "keep_checkpoints"
        )
        require_at_least(self, 1, "log_every", "max_examples", "image_size")
        require_positive(self, "scale_loss", "lars_eta", "knn_temperature")


def _view_config(cfg: TeacherTrainConfig, size: int, solarization_prob: float) -> BarlowTwinsAugmentConfig:
    return BarlowTwinsAugmentConfig(crop_size=size, solarization_prob=solarization_prob)


@torch.no_grad()
def _features(
    backbone: nn.Module, images: torch.Tensor, mean: Any, std: Any, batch_size: int = 512
) -> torch.Tensor:
    backbone.eval()
    out = [
        cast(Backbone, backbone).forward_features(normalize(chunk, mean, std)).float()
        for chunk in images.split(batch_size)
    ]
    return torch.cat(out)


def knn_monitor(backbone: nn.Module, train: Any, test: Any, cfg: TeacherTrainConfig) -> float | None:
    """kNN top-1 accuracy (%) of the backbone features, train → test split (labels used only here)."""
    if train.labels is None or test is None or test.labels is None:
        return None
    n = len(train) if cfg.knn_max_train is None else min(len(train), cfg.knn_max_train)
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:n].to(train.images.device)
    train_feats = _features(backbone, train.images[idx], train.mean, train.std)
    test_feats = _features(backbone, test.images, train.mean, train.std)
    num_classes = int(max(train.labels.max(), test.labels.max())) + 1
    acc = knn_accuracy(
        train_feats,
        train.labels[idx],
        test_feats,
        test.labels,
        num_classes,
        k=cfg.knn_k,
        temperature=cfg.knn_temperature,
    )
    backbone.train()
    return 100.0 * acc


def save_knn_curve(path: Path, records: list[dict[str, Any]], labels: torch.Tensor | None) -> Path:
    """kNN top-1 vs training minutes, every measurement marked, with chance and initialization drawn, on 0-100."""
    xs = [r.get("minutes", r["step"]) for r in records]
    ys = [r["knn_top1"] for r in records]
    references = {"initialization": ys[0]} if records[0]["step"] == 0 else {}
    if labels is not None:
        references["chance"] = 100.0 / (int(labels.max()) + 1)
    return save_curves(
        path,
        {"kNN top-1 (%)": (xs, ys)},
        title="teacher kNN monitor",
        xlabel="training minutes" if "minutes" in records[0] else "step",
        ylabel="kNN top-1 (%)",
        markers=True,
        references=references,
        ylim=(0.0, min(100.0, max(ys) + 10.0)),
    )


def save_teacher(backbone: nn.Module, folder: Path) -> Path:
    """Save the backbone (no head) as an HF model folder, atomically."""
    with atomic_directory(folder, overwrite=True) as tmp:
        cast("SSDDPreTrainedModel | TimmBackbone", backbone).save_pretrained(tmp)
    return folder


# keys a resumed teacher run may change: the length (the schedule then follows the new length), cadences, folder
RESUMABLE_KEYS = (
    "output_dir",
    "resume",
    "overwrite",
    "log_every",
    "checkpoint_every",
    "keep_checkpoints",
    "log_with",
    "epochs",
    "max_steps",
    "knn_every",
)


def train_teacher(cfg: TeacherTrainConfig, accelerator: Any = None) -> Path:
    """Train a Barlow Twins teacher; returns the saved ``output_dir/teacher`` folder."""
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and cuda)
    out = Path(cfg.output_dir)
    acc = accelerator or Accelerator(
        mixed_precision="bf16" if bf16 else "no", log_with=cfg.log_with, project_dir=str(out / "logs")
    )
    with RunRecorder(out, resume=cfg.resume, overwrite=cfg.overwrite, accelerator=acc) as run:
        return _train(cfg, acc, run, cuda)


def _train(cfg: TeacherTrainConfig, acc: Any, run: RunRecorder, cuda: bool) -> Path:
    out = run.folder
    with run.loading_inputs():
        source = load_image_source(
            cfg.dataset,
            split=cfg.split,
            image_size=cfg.image_size,
            device=acc.device,
            max_examples=cfg.max_examples,
        )
        monitor = None
        if cfg.monitor_split and source.labels is not None:
            monitor = load_image_source(
                cfg.dataset, split=cfg.monitor_split, image_size=source.image_size, device=acc.device
            )
        found = run.resume_from(run_identity(cfg, RESUMABLE_KEYS, {"source.fingerprint": source.fingerprint}))
    size = source.image_size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        backbone = create_backbone(
            cfg.backbone, image_size=size, mean=list(source.mean), std=list(source.std), **cfg.backbone_kwargs
        )
        model: nn.Module = BarlowTwinsModel(
            backbone, cfg.projector_hidden_dim, cfg.projector_out_dim, cfg.lambd, cfg.scale_loss
        )
    if acc.num_processes > 1 and cfg.sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(
        cfg.optimizer,
        model,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        momentum=cfg.momentum,
        eta=cfg.lars_eta,
    )
    per_rank = cfg.batch_size // acc.num_processes
    steps_per_epoch = len(source) // cfg.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size {cfg.batch_size} exceeds the {len(source)} training images")
    total = cfg.max_steps if cfg.max_steps is not None else cfg.epochs * steps_per_epoch
    warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total - 1)
    scheduler = warmup_cosine_scheduler(optimizer, warmup, total)
    model, optimizer = acc.prepare(model, optimizer)

    step, history, knn_history, minutes_before = 0, [], [], 0.0
    run.save_config(cfg)  # only now: a run whose inputs failed to load leaves nothing behind
    if cfg.log_with:
        acc.init_trackers("hf_ssdd_teacher", config=config_to_hparams(cfg))
    if found is not None:
        state = found[1]
        acc.unwrap_model(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, history, knn_history = state["step"], state["history"], state["knn"]
        minutes_before = float(state.get("minutes", 0.0))
    session_start = time.perf_counter()

    def minutes() -> float:
        """Wall time of the training so far, over every session of a resumed run."""
        return round(minutes_before + (time.perf_counter() - session_start) / 60, 3)

    if cfg.resume:  # drop records logged after the checkpoint (they will be logged again)
        run.rewrite_metrics(sorted(history + knn_history, key=lambda r: r["step"]))  # stable: loss before kNN

    def checkpoint() -> None:
        if acc.is_main_process:
            state = {
                "model": acc.unwrap_model(model).state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": step,
                "history": history,
                "knn": knn_history,
                "minutes": minutes(),
            }
            run.checkpoint(step, state, keep=cfg.keep_checkpoints)
            curves = {"Barlow Twins loss": ([h["step"] for h in history], [h["loss"] for h in history])}
            save_curves(out / "loss_curve.png", curves, title="teacher training")
        acc.wait_for_everyone()

    def monitor_knn() -> None:
        knn = knn_monitor(acc.unwrap_model(model).backbone, source, monitor, cfg)
        knn_history.append({"step": step, "knn_top1": knn, "minutes": minutes()})
        run.log(knn_history[-1])
        if acc.is_main_process:
            bar.write(f"step {step}{' (initialization)' if step == 0 else ''}: kNN top-1 {knn:.2f}%")
        acc.log({"knn_top1": knn}, step=step)

    view1_cfg, view2_cfg = _view_config(cfg, size, 0.0), _view_config(cfg, size, 0.2)
    model.train()
    bar = progress(total=total, initial=step, desc="Barlow Twins", disable=not acc.is_main_process)
    perm: tuple[int, torch.Tensor] | None = None
    if monitor is not None and step == 0:
        monitor_knn()  # the baseline: the same network at initialization
    while step < total:
        epoch, pos = divmod(step, steps_per_epoch)
        if perm is None or perm[0] != epoch:
            perm = (epoch, torch.randperm(len(source), generator=derived_generator(cfg.seed, "order", epoch)))
        idx = perm[1][pos * cfg.batch_size : (pos + 1) * cfg.batch_size]
        idx = idx[acc.process_index * per_rank : (acc.process_index + 1) * per_rank].to(acc.device)
        gen = derived_generator(cfg.seed, "views", step, acc.process_index, device=acc.device)
        v1, v2 = barlow_twins_views(source.images[idx], view1_cfg, view2_cfg, generator=gen)
        if step == 0 and acc.is_main_process:
            save_image_grid(out / "views_grid.png", torch.cat([v1[:32], v2[:32]]), nrow=16)
        v1, v2 = normalize(v1, source.mean, source.std), normalize(v2, source.mean, source.std)
        if cuda:
            v1, v2 = (
                v1.contiguous(memory_format=torch.channels_last),
                v2.contiguous(memory_format=torch.channels_last),
            )
        loss = model(v1, v2)
        acc.backward(loss)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == total:
            value = float(acc.reduce(loss.detach(), reduction="mean"))
            record = {
                "step": step,
                "epoch": step / steps_per_epoch,
                "loss": value,
                "lr": scheduler.get_last_lr()[0],
                "minutes": minutes(),
            }
            history.append(record)
            bar.set_postfix(loss=f"{value:.3f}")
            run.log(record)
            acc.log(record, step=step)
        epoch_done = step % steps_per_epoch == 0
        if monitor is not None and (
            (epoch_done and (step // steps_per_epoch) % cfg.knn_every == 0) or step == total
        ):
            monitor_knn()
        if step % cfg.checkpoint_every == 0 and step < total:
            checkpoint()
    bar.close()

    teacher_dir = out / "teacher"
    if acc.is_main_process:
        save_teacher(acc.unwrap_model(model).backbone, teacher_dir)
        curves = {"Barlow Twins loss": ([h["step"] for h in history], [h["loss"] for h in history])}
        save_curves(out / "loss_curve.png", curves, title="teacher training")
        if knn_history:
            save_knn_curve(out / "knn_curve.png", knn_history, source.labels)
    acc.wait_for_everyone()
    acc.end_training()
    return teacher_dir
