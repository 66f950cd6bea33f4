"""MKDT experts: student networks trained by knowledge distillation, saved as parameter trajectories.

Joshi, Ni, Mirzasoleiman, ICLR 2025, §1.3 of the spec: K students regress the teacher's representations of the
source images with MSE (SGD lr 0.1, momentum 0.9, weight decay 1e-4, batch 256, no augmentation); the parameters at
initialization and after every epoch form the expert's trajectory, the target of trajectory matching (MTT,
Cazenavette et al., CVPR 2022).

One safetensors file per expert, ``expert-<index:05d>.safetensors``, holding tensors ``epoch-<e:03d>/<param name>``
for e = 0 … max_epoch and a string header that describes the expert (architecture and its config, feature
dimension, image size, epochs, seed, teacher id and revision, source fingerprint, optimizer, per-epoch losses).
Names are deterministic and every file is written to a unique temporary name and renamed into place, so any number
of processes can write into one folder at once (reference defect B7). Each expert's initialization and minibatch
order come from generators derived from (seed, expert index, epoch), never from the wall clock (B8). A streamed
source (:class:`~hf_ssdd.data.StreamedSource`) is read epoch by epoch through its shards and shuffle buffer (seeded
from (seed, expert index), the shard order reshuffled each epoch), each row's features looked up by its index.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from hf_ssdd.data import ImageSource, StreamedSource, normalize
from hf_ssdd.io import atomic_save_safetensors
from hf_ssdd.utils import derived_generator, derived_seed, progress

FORMAT = "hf_ssdd.mkdt_expert/1"
FILE_GLOB = "expert-*.safetensors"


class ExpertError(ValueError):
    """Expert trajectories are missing or do not fit the run."""


@dataclass
class ExpertConfig:
    """How the experts are trained (spec §1.3).

    Attributes:
        num_experts: number of experts K (the reference uses 100).
        max_epoch: last epoch trained and saved; ``None``: the last one matching can use (set by the method).
        lr: SGD learning rate.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        batch_size: minibatch size (shuffled each epoch, last batch kept).
        directory: folder of the expert files; empty: ``<output_dir>/experts`` of the run.
    """

    num_experts: int = 100
    max_epoch: int | None = None
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 256
    directory: str = ""

    def __post_init__(self) -> None:
        if self.num_experts < 1 or self.batch_size < 1:
            raise ValueError("num_experts and batch_size must be ≥ 1")
        if self.max_epoch is not None and self.max_epoch < 1:
            raise ValueError(f"max_epoch must be ≥ 1, got {self.max_epoch}")
        if self.lr <= 0 or self.momentum < 0 or self.weight_decay < 0:
            raise ValueError("lr must be > 0, momentum and weight_decay ≥ 0")


@dataclass(frozen=True)
class ExpertMeta:
    """What an expert file says about itself (its safetensors header, decoded)."""

    architecture: str
    feature_dim: int
    image_size: int
    max_epoch: int
    param_names: tuple[str, ...]
    index: int = 0
    seed: int = 0
    model_overrides: dict[str, Any] = field(default_factory=dict)
    architecture_config: dict[str, Any] = field(default_factory=dict)
    teacher_id: str = ""
    teacher_revision: str = ""
    source: str = ""
    source_fingerprint: str = ""
    num_examples: int = 0
    optimizer: dict[str, float] = field(default_factory=dict)
    epoch_losses: tuple[float, ...] = ()
    epoch_seconds: tuple[float, ...] = ()

    def to_header(self) -> dict[str, str]:
        """The safetensors header: every field as a string (JSON for the structured ones)."""
        return {"format": FORMAT, **{k: _encode(v) for k, v in asdict(self).items()}}

    @classmethod
    def from_header(cls, header: Mapping[str, str], where: str = "") -> ExpertMeta:
        if header.get("format") != FORMAT:
            raise ExpertError(f"{where or 'file'} is not an hf_ssdd expert trajectory (format {FORMAT!r})")
        try:
            return cls(
                architecture=header["architecture"],
                feature_dim=int(header["feature_dim"]),
                image_size=int(header["image_size"]),
                max_epoch=int(header["max_epoch"]),
                param_names=tuple(json.loads(header["param_names"])),
                index=int(header["index"]),
                seed=int(header["seed"]),
                model_overrides=json.loads(header["model_overrides"]),
                architecture_config=json.loads(header["architecture_config"]),
                teacher_id=header["teacher_id"],
                teacher_revision=header["teacher_revision"],
                source=header["source"],
                source_fingerprint=header["source_fingerprint"],
                num_examples=int(header["num_examples"]),
                optimizer=json.loads(header["optimizer"]),
                epoch_losses=tuple(json.loads(header["epoch_losses"])),
                epoch_seconds=tuple(
                    json.loads(header.get("epoch_seconds", "[]"))
                ),  # absent before 2026-12-02
            )
        except (KeyError, ValueError) as e:
            raise ExpertError(
                f"{where or 'file'} has a malformed expert header ({type(e).__name__}: {e})"
            ) from e


def _encode(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


class ExpertTrajectory:
    """The parameter snapshots of one expert, epochs 0 … ``meta.max_epoch``.

    Read lazily from the expert's file (:meth:`from_file`) or held in memory (``snapshots``).
    """

    def __init__(
        self,
        meta: ExpertMeta,
        path: Path | None = None,
        snapshots: list[dict[str, torch.Tensor]] | None = None,
    ):
        if (path is None) == (snapshots is None):
            raise ValueError("give exactly one of path and snapshots")
        if snapshots is not None and len(snapshots) != meta.max_epoch + 1:
            raise ValueError(f"{len(snapshots)} snapshots for epochs 0..{meta.max_epoch}")
        self.meta = meta
        self.path = path
        self._snapshots = snapshots

    @classmethod
    def from_file(cls, path: str | Path) -> ExpertTrajectory:
        """Read the header of an expert file (snapshots are read by :meth:`snapshot`)."""
        path = Path(path)
        with safe_open(str(path), framework="pt") as f:
            meta = ExpertMeta.from_header(f.metadata() or {}, where=str(path))
        return cls(meta, path=path)

    @property
    def name(self) -> str:
        """The file name (or an in-memory label), for messages."""
        return self.path.name if self.path is not None else f"expert {self.meta.index} (in memory)"

    def snapshot(self, epoch: int) -> dict[str, torch.Tensor]:
        """Parameters after ``epoch`` epochs (0: the initialization), as a name → tensor dict on CPU."""
        if not 0 <= epoch <= self.meta.max_epoch:
            raise ExpertError(
                f"epoch {epoch} is beyond the saved trajectory of {self.name} (epochs 0..{self.meta.max_epoch})"
            )
        if self._snapshots is not None:
            return dict(self._snapshots[epoch])
        with safe_open(str(self.path), framework="pt") as f:
            return {n: f.get_tensor(f"epoch-{epoch:03d}/{n}") for n in self.meta.param_names}


def expert_path(folder: str | Path, index: int) -> Path:
    """The deterministic file name of expert ``index``."""
    return Path(folder) / f"expert-{index:05d}.safetensors"


def build_student(
    architecture: str, feature_dim: int, image_size: int, overrides: Mapping[str, Any] | None = None
) -> nn.Module:
    """A registered backbone with a ``feature_dim`` head, refused if it has buffers (BatchNorm statistics)."""
    from hf_ssdd.models import create_backbone

    model = create_backbone(
        architecture, head_dim=feature_dim, image_size=image_size, **dict(overrides or {})
    )
    buffers = [name for name, _ in model.named_buffers()]
    if buffers:
        raise ExpertError(
            f"backbone {architecture!r} has buffers such as {buffers[:3]} (BatchNorm running statistics); MKDT "
            "experts must be pure functions of their parameters: use 'convnet', 'convnet_d4' or another backbone "
            "with instance/group norm"
        )
    return model


class TrainedExpert(NamedTuple):
    """What :meth:`ExpertTrainer.train` returns: snapshots of epochs 0..max_epoch (CPU), each epoch's mean loss and
    wall seconds, and the trained model."""

    snapshots: list[dict[str, torch.Tensor]]
    epoch_losses: list[float]
    epoch_seconds: list[float]
    model: nn.Module


@dataclass
class ExpertTrainer:
    """Trains KD experts on (source images, teacher features) and writes their trajectory files.

    Args:
        architecture: registered backbone name (``convnet`` for 32 px, ``convnet_d4`` for 64 px).
        source: the real images, in memory or streamed.
        features: N×D teacher features of ``source`` (row i ↔ image i).
        config: optimizer and count settings.
        max_epoch: last epoch to train and save.
        seed: the run seed; expert j's randomness is derived from (seed, j).
        model_overrides: extra ``create_backbone`` config fields (e.g. ``channels``).
        teacher_id: teacher id recorded in the files.
        teacher_revision: teacher revision recorded in the files.
    """

    architecture: str
    source: ImageSource | StreamedSource
    features: torch.Tensor
    config: ExpertConfig
    max_epoch: int
    seed: int = 0
    model_overrides: dict[str, Any] = field(default_factory=dict)
    teacher_id: str = ""
    teacher_revision: str = ""

    def __post_init__(self) -> None:
        if self.features.ndim != 2 or self.features.shape[0] != len(self.source):
            raise ExpertError(
                f"teacher features must be N×D with N = {len(self.source)} source images, "
                f"got {tuple(self.features.shape)}"
            )
        if self.max_epoch < 1:
            raise ExpertError(f"max_epoch must be ≥ 1, got {self.max_epoch}")

    def build(self, index: int) -> nn.Module:
        """Expert ``index``'s freshly initialized student (init seeded by (seed, index))."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derived_seed(self.seed, "expert-init", index))
            model = build_student(
                self.architecture, self.features.shape[1], self.source.image_size, self.model_overrides
            )
        return model.to(self.source.device)

    def train(self, index: int) -> TrainedExpert:
        """Train expert ``index``: its snapshots (epochs 0..max_epoch, CPU), mean loss and seconds of each epoch."""
        cfg, device = self.config, self.source.device
        model = self.build(index).train()
        targets = self.features.to(device, torch.float32)
        opt = torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
        snapshots, losses, seconds = [_snapshot(model)], [], []
        for epoch in range(1, self.max_epoch + 1):
            start = time.perf_counter()
            total = torch.zeros((), device=device)
            for b, x in self.epoch_batches(index, epoch):
                loss = F.mse_loss(model(x).logits, targets[b])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.detach() * len(b)
            losses.append(float(total) / len(self.source))
            snapshots.append(_snapshot(model))
            seconds.append(time.perf_counter() - start)
            if not all(torch.isfinite(v).all() for v in snapshots[-1].values()):
                raise ExpertError(
                    f"expert {index} diverged in epoch {epoch} (mean loss {losses[-1]:.4g}, non-finite "
                    f"parameters); the teacher features have RMS {float(targets.pow(2).mean().sqrt()):.4g}: "
                    f"lower experts.lr (now {cfg.lr}) or use a better-conditioned teacher"
                )
        return TrainedExpert(snapshots, losses, seconds, model)

    def epoch_batches(self, index: int, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(row indices, normalized images) on the device for one epoch of expert ``index``: in memory, a
        permutation seeded by (seed, index, epoch); streamed, the reader's shard order and shuffle buffer."""
        src, device, size = self.source, self.source.device, self.config.batch_size
        if isinstance(src, ImageSource):
            order = torch.randperm(
                len(src), generator=derived_generator(self.seed, "expert-order", index, epoch)
            )
            for b in order.to(device).split(size):
                yield b, src.normalized(b)
            return
        reader = src.reader(size, seed=derived_seed(self.seed, "expert-order", index), drop_last=False)
        for b, batch in reader.epoch_batches(epoch):
            yield b.to(device), normalize(batch.images.to(device), src.mean, src.std)

    def meta(self, index: int, trained: TrainedExpert) -> ExpertMeta:
        """The description stored in expert ``index``'s file."""
        model = trained.model
        config = getattr(model, "config", None)
        return ExpertMeta(
            architecture=self.architecture,
            feature_dim=int(self.features.shape[1]),
            image_size=int(self.source.image_size),
            max_epoch=self.max_epoch,
            param_names=tuple(n for n, _ in model.named_parameters()),
            index=index,
            seed=self.seed,
            model_overrides=dict(self.model_overrides),
            architecture_config=config.to_diff_dict() if config is not None else {},
            teacher_id=self.teacher_id,
            teacher_revision=self.teacher_revision,
            source=str(self.source.name),
            source_fingerprint=str(self.source.fingerprint),
            num_examples=len(self.source),
            optimizer={
                "lr": self.config.lr,
                "momentum": self.config.momentum,
                "weight_decay": self.config.weight_decay,
                "batch_size": self.config.batch_size,
            },
            epoch_losses=tuple(trained.epoch_losses),
            epoch_seconds=tuple(round(t, 3) for t in trained.epoch_seconds),
        )

    def write(self, folder: str | Path, index: int) -> Path:
        """Train expert ``index`` and write its file atomically; returns the path."""
        trained = self.train(index)
        tensors = {
            f"epoch-{e:03d}/{n}": t for e, snap in enumerate(trained.snapshots) for n, t in snap.items()
        }
        path = expert_path(folder, index)
        atomic_save_safetensors(path, tensors, metadata=self.meta(index, trained).to_header())
        return path

    def write_missing(
        self, folder: str | Path, num_experts: int, rank: int = 0, world_size: int = 1
    ) -> list[Path]:
        """Train the experts 0..num_experts−1 whose files are absent; expert j is this process's if j % world = rank."""
        todo = [
            j for j in range(num_experts) if j % world_size == rank and not expert_path(folder, j).is_file()
        ]
        bar = progress(todo, desc=f"experts ({self.architecture})", disable=rank != 0, unit="expert")
        return [self.write(folder, j) for j in bar]


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters()}


def load_trajectories(
    folder: str | Path,
    expect_architecture: str | None = None,
    expect_feature_dim: int | None = None,
    required_epoch: int | None = None,
    num_experts: int | None = None,
    **expect: Any,
) -> list[ExpertTrajectory]:
    """The expert trajectories of ``folder`` (headers only; snapshots are read on demand), sorted by index.

    Args:
        folder: a folder of ``expert-*.safetensors`` files.
        expect_architecture: backbone name the run uses.
        expect_feature_dim: teacher feature dimension of the run.
        required_epoch: the last epoch matching will read (max_start_epoch − 1 + expert_epochs).
        num_experts: use experts 0..num_experts−1, all of which must exist (``None``: every file).
        **expect: further :class:`ExpertMeta` fields the experts must match (``image_size``, ``model_overrides``,
            ``teacher_revision``, ``source_fingerprint``, ...); ``None`` values are not checked.

    Raises:
        ExpertError: missing files, or an expert that does not fit the expectations (naming both sides).
    """
    folder = Path(folder)
    if num_experts is None:
        paths = sorted(folder.glob(FILE_GLOB))
    else:
        paths = [expert_path(folder, j) for j in range(num_experts)]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise ExpertError(
                f"{folder} lacks {len(missing)} of {num_experts} expert files ({missing[:3]}...); train them "
                "with `hf-ssdd train-experts` or let `hf-ssdd distill` train them"
            )
    if not paths:
        raise ExpertError(f"no {FILE_GLOB} files in {folder}; train experts with `hf-ssdd train-experts`")
    experts = [ExpertTrajectory.from_file(p) for p in paths]
    expected = {"architecture": expect_architecture, "feature_dim": expect_feature_dim, **expect}
    for expert in experts:
        check_expert(expert, required_epoch=required_epoch, **expected)
    return experts


def check_expert(expert: ExpertTrajectory, required_epoch: int | None = None, **expected: Any) -> None:
    """Raise :class:`ExpertError`, naming both sides, if ``expert`` does not fit the run.

    Args:
        expert: the trajectory to check.
        required_epoch: the last epoch the run reads.
        **expected: :class:`ExpertMeta` field → the run's value (``None``: not checked).
    """
    meta, name = expert.meta, expert.name
    for key, value in expected.items():
        if value is None:
            continue
        saved = getattr(meta, key)
        if saved != (dict(value) if isinstance(value, Mapping) else value):
            what = key.replace("_", " ")
            raise ExpertError(
                f"{name} was trained with {what} {saved!r}, but this run uses {what} {value!r}; "
                "point experts.directory at matching experts or train new ones"
            )
    if required_epoch is not None and required_epoch > meta.max_epoch:
        raise ExpertError(
            f"matching reads epoch {required_epoch} (max_start_epoch − 1 + expert_epochs), beyond the saved "
            f"trajectory of {name} (epochs 0..{meta.max_epoch}); retrain the experts with "
            f"experts.max_epoch ≥ {required_epoch} or lower max_start_epoch / expert_epochs"
        )
