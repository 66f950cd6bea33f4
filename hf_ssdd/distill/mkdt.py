"""MKDT: dataset distillation by matching knowledge-distillation trajectories.

Joshi, Ni, Mirzasoleiman, "Dataset Distillation via Knowledge Distillation: Towards Efficient Self-Supervised
Pre-Training of Deep Networks", ICLR 2025 (arXiv 2410.02116); reference code github.com/jiayini1119/MKDT.
Spec: ``docs/reference/mkdt.md``.

Pipeline: teacher features of the source (:func:`~hf_ssdd.teachers.encode_source`) → K experts trained with MSE
to those features (:mod:`hf_ssdd.distill.experts`) → initial synthetic set = the real images the experts find
hardest (high KD loss, §1.4) or a random subset → trajectory matching (MTT, Cazenavette et al., CVPR 2022) that
learns the images, their target representations and the inner learning rate (§1.5-1.6). Stages 1-2 run in
:meth:`MKDTDistiller.prepare` (called by the run driver); the distiller itself never touches files. The source may
be streamed (``source.streaming``): features, experts and KD scores then read it shard by shard, the features
memory-mapped, and only the initial images are fetched by index.

Fixed reference defects: every expert is used (per-pass shuffled cycle instead of one expert forever, B1); all
randomness is derived from (seed, step), never the wall clock (B8); the learned learning rate cannot turn
non-positive (B11): it is clamped to ``lr_floor`` after each update, or, with ``lr_floor: 0``, the run stops with
an error when it reaches ≤ 0 (a non-positive step size reverses the inner SGD and is no pre-training recipe).

Longer than most modules on purpose: one registered method per module (its config, KD scores, initialization,
matching step and export), so that the spec's sections map onto one file; the expert trajectories and the
functional student are separate modules (:mod:`~hf_ssdd.distill.experts`, :mod:`~hf_ssdd.distill.matching`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from hf_ssdd.artifacts.distilled_set import DistilledSet, recommended_pretraining
from hf_ssdd.config import config_to_dict
from hf_ssdd.data import ImageSource, StreamedSource, normalize
from hf_ssdd.distill.base import Distiller, RunContext, register_distiller
from hf_ssdd.distill.experts import (
    ExpertConfig,
    ExpertTrainer,
    ExpertTrajectory,
    build_student,
    check_expert,
    load_trajectories,
)
from hf_ssdd.distill.matching import (
    Backward,
    FunctionalStudent,
    MatchingGradients,
    matching_gradients,
    minibatch_schedule,
)
from hf_ssdd.utils import derived_generator

if TYPE_CHECKING:
    from accelerate import Accelerator

    from hf_ssdd.teachers import Teacher


class NonPositiveLearningRateError(RuntimeError):
    """The learned inner learning rate reached ≤ 0 with ``lr_floor: 0``."""


@dataclass
class MKDTConfig:
    """MKDT hyperparameters (defaults: the reference's CIFAR-10/100 2% setting, spec §1.5).

    Attributes:
        num_images: size of the synthetic set.
        model: student / expert backbone (no BatchNorm): ``convnet`` (32 px) or ``convnet_d4`` (64 px).
        model_overrides: extra ``create_backbone`` config fields.
        init: ``"high_loss"`` (§1.4) or ``"random"`` initial subset.
        init_score_epoch: expert snapshot that scores the real images for ``high_loss``.
        iterations: outer iterations.
        syn_steps: inner SGD steps N per iteration.
        expert_epochs: expert epochs M to match.
        max_start_epoch: start epochs are drawn from {0, …, max_start_epoch − 1}.
        batch_syn: inner minibatch size.
        lr_img: outer SGD learning rate of the images.
        lr_labels: outer SGD learning rate of the targets.
        lr_lr: outer SGD learning rate of the inner learning rate.
        lr_init: initial inner learning rate (the experts' learning rate).
        outer_momentum: momentum of the three outer SGD optimizers.
        lr_floor: lower bound the learned learning rate is clamped to after each update; 0: no clamp, and the
            run stops with :class:`NonPositiveLearningRateError` when it reaches ≤ 0.
        backward: ``"autograd"`` (store the whole unrolled graph) or ``"checkpoint"`` (recompute one inner step
            at a time; same gradients, memory independent of ``syn_steps``).
        score_batch_size: batch size of the high-loss scoring pass.
        experts: expert training settings; ``experts.max_epoch`` defaults to :meth:`expert_max_epoch`.
    """

    num_images: int = 1000
    model: str = "convnet"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    init: Literal["high_loss", "random"] = "high_loss"
    init_score_epoch: int = 1
    iterations: int = 5000
    syn_steps: int = 40
    expert_epochs: int = 2
    max_start_epoch: int = 2
    batch_syn: int = 256
    lr_img: float = 1000.0
    lr_labels: float = 1.0
    lr_lr: float = 1e-4
    lr_init: float = 0.1
    outer_momentum: float = 0.5
    lr_floor: float = 1e-4
    backward: Backward = "checkpoint"
    score_batch_size: int = 1024
    experts: ExpertConfig = field(default_factory=ExpertConfig)

    def __post_init__(self) -> None:
        positive = (
            "num_images",
            "syn_steps",
            "expert_epochs",
            "max_start_epoch",
            "batch_syn",
            "score_batch_size",
        )
        bad = [k for k in positive if getattr(self, k) < 1]
        if bad:
            raise ValueError(f"{bad} must be ≥ 1")
        if self.iterations < 0 or self.init_score_epoch < 0:
            raise ValueError("iterations and init_score_epoch must be ≥ 0")
        if min(self.lr_img, self.lr_labels, self.lr_lr, self.lr_init) <= 0:
            raise ValueError("lr_img, lr_labels, lr_lr and lr_init must be > 0")
        if self.lr_floor < 0 or self.lr_floor >= self.lr_init:
            raise ValueError(f"lr_floor must be in [0, lr_init = {self.lr_init}), got {self.lr_floor}")
        if not 0 <= self.outer_momentum < 1:
            raise ValueError(f"outer_momentum must be in [0, 1), got {self.outer_momentum}")
        saved = self.experts.max_epoch
        if saved is not None and saved < self.needed_epoch:
            raise ValueError(
                f"experts.max_epoch = {saved} saves too few epochs: matching reads epoch up to "
                f"max_start_epoch − 1 + expert_epochs = {self.needed_epoch}"
            )

    @property
    def last_matched_epoch(self) -> int:
        """The latest expert epoch matching reads: max_start_epoch − 1 + expert_epochs."""
        return self.max_start_epoch - 1 + self.expert_epochs

    @property
    def needed_epoch(self) -> int:
        """The latest expert epoch the run reads (matching, and high-loss scoring)."""
        score = self.init_score_epoch if self.init == "high_loss" else 0
        return max(self.last_matched_epoch, score)

    def expert_max_epoch(self) -> int:
        """Epochs to train and save per expert: ``experts.max_epoch`` or just the ones the run reads."""
        return self.experts.max_epoch if self.experts.max_epoch is not None else self.needed_epoch


@torch.no_grad()
def kd_losses(
    student: FunctionalStudent,
    theta: torch.Tensor,
    source: ImageSource | StreamedSource,
    features: torch.Tensor,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Per-example KD loss mean_D((f(x_i; θ) − y_i)²) of every source image (float32 vector on the device)."""
    device, losses, first = source.device, [], 0
    for images in source.image_batches(0, len(source), batch_size):
        pred = student(theta, normalize(images.to(device), source.mean, source.std))
        target = features[first : first + len(images)].to(device)
        losses.append((pred - target).pow(2).mean(dim=1))
        first += len(images)
    return torch.cat(losses)


def top_k_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest scores, largest first (ties: lower index first)."""
    return torch.argsort(scores, descending=True, stable=True)[:k]


@register_distiller(
    "mkdt",
    config=MKDTConfig,
    display_name="MKDT (Joshi et al., ICLR 2025)",
    pretraining_recipe="mkdt",
    resumable_keys=("iterations",),
    streams_source=True,
)
class MKDTDistiller(Distiller):
    """MKDT (Joshi et al., ICLR 2025). See the module docstring.

    Args:
        config: the method's settings.
        source: the real images.
        teacher: the teacher (metadata only; its features come in ``features``).
        accelerator: several processes match different trajectories and average their gradients.
        seed: the run's seed.
        features: N×D teacher features of ``source`` (:meth:`prepare` computes them).
        experts: the expert trajectories (:meth:`prepare` trains or loads them).
    """

    def __init__(
        self,
        config: MKDTConfig,
        source: ImageSource | StreamedSource,
        teacher: Teacher,
        accelerator: Accelerator | None = None,
        seed: int = 0,
        features: torch.Tensor | None = None,
        experts: list[ExpertTrajectory] | None = None,
    ):
        super().__init__(config, source, teacher, accelerator, seed)
        if features is None:
            raise ValueError(
                "MKDT needs the teacher features of the source (features=encode_source(teacher, source)); "
                "MKDTDistiller.prepare computes them"
            )
        if features.ndim != 2 or features.shape[0] != len(source):
            raise ValueError(
                f"teacher features must be N×D with N = {len(source)} source images, got {tuple(features.shape)}"
            )
        if not experts:
            raise ValueError(
                "MKDT needs expert trajectories (experts=...); MKDTDistiller.prepare trains them"
            )
        if config.num_images > len(source):
            raise ValueError(f"num_images {config.num_images} exceeds the {len(source)} source images")
        for expert in experts:
            check_expert(
                expert,
                required_epoch=config.needed_epoch,
                architecture=config.model,
                feature_dim=int(features.shape[1]),
                image_size=int(source.image_size),
                model_overrides=config.model_overrides,
            )
        model = build_student(
            config.model, int(features.shape[1]), int(source.image_size), config.model_overrides
        )
        self.student = FunctionalStudent(model.to(self.device))
        for expert in experts:
            if tuple(expert.meta.param_names) != self.student.spec.names:
                raise ValueError(
                    f"{expert.name} has parameters {list(expert.meta.param_names)[:4]}..., the student "
                    f"{config.model!r} has {list(self.student.spec.names)[:4]}..."
                )
        self.features = features.detach().to("cpu", torch.float32)
        self.experts = list(experts)
        self.x_syn: nn.Parameter | None = None
        self.y_syn: nn.Parameter | None = None
        self.syn_lr: nn.Parameter | None = None

    @classmethod
    def prepare(cls, config: MKDTConfig, context: RunContext) -> dict[str, Any]:
        """Teacher features of the whole source, and the experts (trained into the expert folder if absent).

        The expert folder is ``config.experts.directory``, else ``<run folder>/experts``. Under ``accelerate``
        each process trains the missing experts j with j % world = rank.
        """
        from hf_ssdd.teachers import encode_source

        cfg, source, teacher, accelerator = config, context.source, context.teacher, context.accelerator
        features = encode_source(teacher, source, accelerator=accelerator)
        folder = Path(cfg.experts.directory or Path(context.output_dir) / "experts")
        trainer = ExpertTrainer(
            architecture=cfg.model,
            source=source,
            features=features,
            config=cfg.experts,
            max_epoch=cfg.expert_max_epoch(),
            seed=context.seed,
            model_overrides=dict(cfg.model_overrides),
            teacher_id=teacher.teacher_id,
            teacher_revision=teacher.revision,
        )
        rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
        trainer.write_missing(folder, cfg.experts.num_experts, rank, world)
        if accelerator is not None:
            accelerator.wait_for_everyone()
        experts = load_trajectories(
            folder,
            expect_architecture=cfg.model,
            expect_feature_dim=int(features.shape[1]),
            required_epoch=cfg.needed_epoch,
            num_experts=cfg.experts.num_experts,
            image_size=int(source.image_size),
            model_overrides=dict(cfg.model_overrides),
            teacher_revision=teacher.revision,
            source_fingerprint=str(source.fingerprint),
        )
        return {"features": features, "experts": experts}

    @classmethod
    def planned_steps(cls, config: MKDTConfig) -> int:
        return config.iterations

    # ------------------------------------------------------------------ setup
    def _build_parameters(
        self, images: torch.Tensor, targets: torch.Tensor, lr: torch.Tensor, indices: torch.Tensor
    ) -> None:
        cfg = self.config
        self.x_syn = nn.Parameter(images.to(self.device, torch.float32).contiguous())
        self.y_syn = nn.Parameter(targets.to(self.device, torch.float32).contiguous())
        self.syn_lr = nn.Parameter(lr.to(self.device, torch.float32).reshape(()).clone())
        self.init_indices = indices.detach().to("cpu", torch.int64)
        self.optimizers = [
            torch.optim.SGD([p], lr=lr_, momentum=cfg.outer_momentum)
            for p, lr_ in ((self.x_syn, cfg.lr_img), (self.y_syn, cfg.lr_labels), (self.syn_lr, cfg.lr_lr))
        ]

    def _theta(self, expert: ExpertTrajectory, epoch: int) -> torch.Tensor:
        return self.student.spec.flatten(expert.snapshot(epoch)).to(self.device, torch.float32)

    def kd_scores(self) -> torch.Tensor:
        """Per-image KD loss at ``init_score_epoch`` averaged over all experts (§1.4); processes share experts."""
        cfg = self.config
        total = torch.zeros(len(self.source), device=self.device)
        for expert in self.experts[self.rank :: self.world_size]:
            theta = self._theta(expert, cfg.init_score_epoch)
            total += kd_losses(self.student, theta, self.source, self.features, cfg.score_batch_size)
        return self.reduce_sum(total) / len(self.experts)

    def init_subset(self) -> torch.Tensor:
        """Indices of the initial real images: highest mean KD loss, or a seeded random subset."""
        n = self.config.num_images
        if self.config.init == "high_loss":
            return top_k_indices(self.kd_scores(), n).cpu()
        return self.random_real_subset(n)

    def init(self) -> None:
        """Initial images (normalized), their teacher features as targets, and the inner lr ``lr_init``."""
        idx = self.init_subset()
        images = normalize(self.source.take(idx), self.source.mean, self.source.std)
        self._build_parameters(images, self.features[idx], torch.tensor(self.config.lr_init), idx)
        self.step_count = 0

    # ------------------------------------------------------------------ one outer iteration
    def schedule(self, step: int, rank: int = 0) -> tuple[int, int]:
        """(expert index, start epoch) of ``step`` on process ``rank``.

        The experts are visited in passes; each pass is a fresh permutation of all K experts (seeded by the pass
        number), and the processes take consecutive positions. Start epochs are uniform in {0, …,
        max_start_epoch − 1}. Both are functions of (seed, step, rank), so resume needs no generator state.
        """
        k = len(self.experts)
        cycle, offset = divmod(step * self.world_size + rank, k)
        order = torch.randperm(k, generator=derived_generator(self.seed, "expert-order", cycle))
        start = torch.randint(
            self.config.max_start_epoch,
            (1,),
            generator=derived_generator(self.seed, "start-epoch", step, rank),
        )
        return int(order[offset]), int(start)

    def _enforce_lr_floor(self) -> bool:
        """Clamp the learned lr to ``lr_floor``; returns whether it clamped. Raises if ≤ 0 without a floor."""
        assert self.syn_lr is not None  # built by init() / load_state_dict()
        with torch.no_grad():
            if self.config.lr_floor > 0:
                clamped = bool(self.syn_lr < self.config.lr_floor)
                self.syn_lr.clamp_(min=self.config.lr_floor)
                return clamped
            if self.syn_lr <= 0:
                raise NonPositiveLearningRateError(
                    f"the learned inner learning rate reached {float(self.syn_lr.detach()):.4g} ≤ 0 at iteration "
                    f"{self.step_count}; set mkdt.lr_floor > 0 to clamp it, or lower mkdt.lr_lr"
                )
        return False

    def trajectory_gradients(self, step: int, rank: int = 0) -> tuple[MatchingGradients, int, int]:
        """Matching loss and gradients of iteration ``step`` on process ``rank``, with its expert and start epoch."""
        cfg = self.config
        # built by init() / load_state_dict()
        assert self.x_syn is not None and self.y_syn is not None and self.syn_lr is not None
        expert_index, start = self.schedule(step, rank)
        expert = self.experts[expert_index]
        batches = minibatch_schedule(
            cfg.num_images,
            cfg.batch_syn,
            cfg.syn_steps,
            derived_generator(self.seed, "minibatches", step, rank),
        )
        out = matching_gradients(
            self.student,
            self._theta(expert, start),
            self._theta(expert, start + cfg.expert_epochs),
            self.x_syn,
            self.y_syn,
            self.syn_lr,
            batches,
            backward=cfg.backward,
        )
        return out, expert_index, start

    def apply_gradients(self, grads: MatchingGradients) -> bool:
        """One step of the three outer optimizers, then the lr floor; returns whether the lr was clamped."""
        # built by init() / load_state_dict()
        assert self.x_syn is not None and self.y_syn is not None and self.syn_lr is not None
        for param, grad, opt in zip(
            (self.x_syn, self.y_syn, self.syn_lr), (grads.images, grads.targets, grads.lr), self.optimizers
        ):
            param.grad = grad
            opt.step()
            opt.zero_grad(set_to_none=True)
        self.step_count += 1
        return self._enforce_lr_floor()

    def step(self) -> dict[str, float]:
        assert self.syn_lr is not None  # built by init() / load_state_dict()
        lr_used = float(self.syn_lr.detach())
        out, expert_index, start = self.trajectory_gradients(self.step_count, self.rank)
        if self.world_size > 1:  # each process matched its own trajectory: average
            parts = (out.loss, out.images, out.targets, out.lr)
            out = MatchingGradients(*(self.reduce_sum(t) / self.world_size for t in parts))
        clamped = self.apply_gradients(out)
        return {
            "loss": float(out.loss),
            "syn_lr": lr_used,
            "expert": expert_index,
            "start_epoch": start,
            "lr_clamped": float(clamped),
        }

    # ------------------------------------------------------------------ state and export
    def state_dict(self) -> dict[str, Any]:
        """Synthetic tensors, the three optimizers, the step (which fixes the expert-cycle position)."""
        # built by init() / load_state_dict()
        assert self.x_syn is not None and self.y_syn is not None and self.syn_lr is not None
        assert self.init_indices is not None  # built by init() / load_state_dict()
        return {
            "step": self.step_count,
            "x_syn": self.x_syn.detach().clone(),
            "y_syn": self.y_syn.detach().clone(),
            "syn_lr": self.syn_lr.detach().clone(),
            "init_indices": self.init_indices.clone(),
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "num_experts": len(self.experts),
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, now in (("num_experts", len(self.experts)), ("world_size", self.world_size)):
            if int(state[key]) != now:
                raise ValueError(
                    f"the checkpoint was made with {key} = {state[key]}, this run has {now}; the expert cycle "
                    "would differ, so it cannot be resumed exactly"
                )
        self._build_parameters(state["x_syn"], state["y_syn"], state["syn_lr"], state["init_indices"])
        for opt, opt_state in zip(self.optimizers, state["optimizers"]):
            opt.load_state_dict(opt_state)
        self.step_count = int(state["step"])

    def export(self) -> DistilledSet:
        cfg = self.config
        # built by init() / load_state_dict()
        assert self.x_syn is not None and self.y_syn is not None and self.syn_lr is not None
        learned_lr = float(self.syn_lr.detach())
        meta = self.base_meta()
        meta.update(
            mean=list(self.source.mean),
            std=list(self.source.std),
            input_space="normalized",
            steps=self.step_count,
            config=config_to_dict(cfg),
            learned_lr=learned_lr,
            experts={
                "num_experts": len(self.experts),
                "architecture": cfg.model,
                "max_epoch": min(e.meta.max_epoch for e in self.experts),
            },
            pretraining=recommended_pretraining(
                self.spec.pretraining_recipe,
                backbone=cfg.model,
                backbone_overrides=dict(cfg.model_overrides),
                lr=learned_lr,
            ),
        )
        return DistilledSet(self.x_syn.detach(), self.y_syn.detach(), meta)


@register_distiller(
    "high_loss",
    config=MKDTConfig,
    display_name="high-KD-loss real subset (MKDT initialization)",
    pretraining_recipe="mkdt",
    config_defaults={"iterations": 0},
    streams_source=True,
)
class HighLossSubset(MKDTDistiller):
    """MKDT's high-loss subset baseline (``docs/reference/mkdt.md`` §2): the real images the experts find hardest
    (§1.4) with their teacher features as targets — MKDT's initialization without trajectory matching."""

    def __init__(self, config: MKDTConfig, *args: Any, **kwargs: Any):
        if config.init != "high_loss":
            raise ValueError(
                "the high_loss baseline needs init: high_loss (use method 'random' for a random subset)"
            )
        super().__init__(config, *args, **kwargs)

    @classmethod
    def planned_steps(cls, config: MKDTConfig) -> int:
        return 0
