"""KRR-ST: kernel ridge regression on self-supervised targets.

Lee, Lee, Ko, Kawaguchi, Lee, Hwang, "Self-Supervised Dataset Distillation for Transfer Learning", ICLR 2024
(arXiv 2310.06511); reference code github.com/db-Lee/selfsup_dd @ 4beb4b1. Spec: ``docs/reference/krr_st.md``.

Learned: synthetic images ``x_syn`` (n×3×H×W) and targets ``y_syn`` (n×D), one Adam optimizer, linear decay.
Each outer step samples a feature extractor f from a pool of models at staggered training ages, solves the linear
head in closed form by kernel ridge regression on f's features (plus a constant column),

    ŷ_r = K_rs (K_ss + λI)⁻¹ y_syn,   K_ss = Φ_s Φ_sᵀ,  K_rs = Φ_r Φ_sᵀ,  λ = 1e-6 · tr(K_ss) (detached),

and minimizes mean((ŷ_r − teacher(x_r))²) over an augmented real batch x_r. The sampled pool model then takes one
full-batch SGD step on MSE(model(x_syn), y_syn), or is re-initialized when it reaches the age limit.

Real batches: in memory, consecutive slices of a seeded per-epoch permutation of the source, each process keeping
its slice of the global batch; streamed (a :class:`~hf_ssdd.data.StreamedSource`, ``source.streaming``), each
process reads ``real_batch_size / world_size`` images per step from its own parquet shards
(:class:`~hf_ssdd.data.RealBatchReader`), and every process's stream position is part of the checkpoint.

Reference quirks behind flags (fixed behaviour by default):
- ``pool_reset_counter=False``: a re-initialized model keeps its age, so it is re-initialized on every later use
  and never trained again (spec §1.5).
- ``syn_input_space="raw"``: synthetic images live in raw [0, 1] pixel space while real images are normalized
  (spec §1.7). The default keeps both in the normalized space.
- ``solver="lu"``: ``torch.linalg.solve`` as in the reference; the default is a Cholesky solve.
- ``real_augment=False``: the first upload's un-augmented real batch.

One registered method per module: config, model pool, kernel solve and distiller together (~400 lines).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from hf_ssdd.artifacts.distilled_set import DistilledSet, recommended_pretraining
from hf_ssdd.config import config_to_dict
from hf_ssdd.data import RealBatchReader, StreamedSource, normalize, random_crop_flip
from hf_ssdd.distill.base import Distiller, register_distiller
from hf_ssdd.models import Backbone, create_backbone
from hf_ssdd.utils import derived_generator, derived_seed, progress

if TYPE_CHECKING:
    from collections.abc import Iterator

    from accelerate import Accelerator

    from hf_ssdd.data import ImageBatch, ImageSource
    from hf_ssdd.teachers import Teacher


@dataclass
class KRRSTConfig:
    """KRR-ST hyperparameters (defaults: the reference's CIFAR-100 setting, spec §1.9).

    Attributes:
        num_images: size of the synthetic set.
        model: backbone of the pool models (``hf-ssdd backbones``).
        num_models: number of models in the pool.
        pool_age_limit: a pool model is re-initialized after this many training steps (its age).
        pool_lr: SGD learning rate of the pool models.
        pool_momentum: SGD momentum of the pool models.
        pool_weight_decay: SGD weight decay of the pool models.
        pool_reset_counter: reset a re-initialized model's age to 0 (the reference never does: ``false``).
        outer_steps: outer optimization steps of the synthetic images and targets.
        outer_lr: Adam learning rate of the synthetic images and targets.
        outer_end_factor: the outer learning rate decays linearly to ``outer_lr × outer_end_factor``.
        real_batch_size: real images per outer step (global, over all processes).
        real_augment: augment the real batch (random crop and flip); ``false``: the reference's first upload.
        syn_input_space: the space the synthetic images live in: ``normalized`` or the reference's ``raw`` [0, 1].
        ridge: kernel ridge regularization λ = ridge · tr(K_ss).
        solver: linear solve of the ridge system: ``cholesky`` or the reference's ``lu``.
        grad_clip: clip the outer gradient's norm to this value; 0: no clipping.
        precision: pool model precision: ``bf16`` autocast, ``fp32``, or ``auto`` (bf16 on CUDA).
    """

    num_images: int = 1000
    model: str = "convnet_128_256_512_bn"
    num_models: int = 10
    pool_age_limit: int = 1000
    pool_lr: float = 0.1
    pool_momentum: float = 0.9
    pool_weight_decay: float = 1e-3
    pool_reset_counter: bool = True
    outer_steps: int = 160_000
    outer_lr: float = 1e-4
    outer_end_factor: float = 1e-3
    real_batch_size: int = 1024
    real_augment: bool = True
    syn_input_space: Literal["normalized", "raw"] = "normalized"
    ridge: float = 1e-6
    solver: Literal["cholesky", "lu"] = "cholesky"
    grad_clip: float = 0.0
    precision: Literal["auto", "fp32", "bf16"] = "auto"

    def __post_init__(self) -> None:
        if self.num_images < 1 or self.num_models < 1 or self.pool_age_limit < 2 or self.real_batch_size < 1:
            raise ValueError("num_images, num_models, real_batch_size must be ≥ 1 and pool_age_limit ≥ 2")
        if self.outer_steps < 0 or self.outer_lr <= 0 or self.ridge <= 0:
            raise ValueError("outer_steps must be ≥ 0, outer_lr and ridge > 0")


def with_bias_column(features: torch.Tensor) -> torch.Tensor:
    """Append the constant-1 column the reference concatenates to the features (it is penalized by λ too)."""
    return torch.cat([features, features.new_ones(features.shape[0], 1)], dim=1)


def krr_predict(
    feat_syn: torch.Tensor,
    feat_real: torch.Tensor,
    targets: torch.Tensor,
    ridge: float = 1e-6,
    solver: Literal["cholesky", "lu"] = "cholesky",
) -> torch.Tensor:
    """Kernel ridge regression prediction on real features, computed in float32 (autocast off).

    Args:
        feat_syn: n×d features of the synthetic images (bias column already appended).
        feat_real: b×d features of the real batch.
        targets: n×D synthetic targets.
        ridge: λ = ridge · tr(K_ss), detached.
        solver: Cholesky solve, or LU (``torch.linalg.solve``) as in the reference.

    Returns:
        b×D predictions K_rs (K_ss + λI)⁻¹ targets.
    """
    with torch.autocast(device_type=feat_syn.device.type, enabled=False):
        fs, fr, y = feat_syn.float(), feat_real.float(), targets.float()
        k_ss = fs @ fs.T
        k_rs = fr @ fs.T
        lam = ridge * torch.trace(k_ss).detach()
        a = k_ss + lam * torch.eye(k_ss.shape[0], device=k_ss.device, dtype=k_ss.dtype)
        if solver == "cholesky":
            chol, info = torch.linalg.cholesky_ex(a)
            alpha = torch.cholesky_solve(y, chol) if int(info) == 0 else torch.linalg.solve(a, y)
        else:
            alpha = torch.linalg.solve(a, y)
        return k_rs @ alpha


class _Timer:
    """Accumulate wall time of a block into ``timings[name]``, synchronizing CUDA around it."""

    def __init__(self, timings: dict[str, float], name: str, device: torch.device):
        self.timings, self.name, self.cuda = timings, name, device.type == "cuda"

    def __enter__(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self.timings[self.name] = self.timings.get(self.name, 0.0) + time.perf_counter() - self.start


@register_distiller(
    "krr_st",
    config=KRRSTConfig,
    display_name="KRR-ST (Lee et al., ICLR 2024)",
    pretraining_recipe="krr_st",
    resumable_keys=("outer_steps",),
    streams_source=True,
)
class KRRSTDistiller(Distiller):
    """KRR-ST (Lee et al., ICLR 2024). See the module docstring."""

    def __init__(
        self,
        config: KRRSTConfig,
        source: ImageSource | StreamedSource,
        teacher: Teacher,
        accelerator: Accelerator | None = None,
        seed: int = 0,
    ):
        super().__init__(config, source, teacher, accelerator, seed)
        if config.real_batch_size > len(source):
            raise ValueError(
                f"real_batch_size {config.real_batch_size} exceeds the {len(source)} source images"
            )
        if config.num_images > len(source):
            raise ValueError(f"num_images {config.num_images} exceeds the {len(source)} source images")
        if config.real_batch_size % self.world_size:
            raise ValueError(
                f"real_batch_size {config.real_batch_size} must divide evenly over {self.world_size} processes"
            )
        cuda = self.device.type == "cuda"
        self.use_bf16 = config.precision == "bf16" or (config.precision == "auto" and cuda)
        # NHWC pool models and inputs: faster convolutions in cuDNN and in CPU oneDNN (CPU, ConvNet-BN: ~1.2× in
        # fp32, ~1.6× under bf16 autocast); fp32 values equal the NCHW ones up to float rounding
        self.channels_last = self.device.type in ("cuda", "cpu")
        self.x_syn: nn.Parameter | None = None
        self.y_syn: nn.Parameter | None = None
        self.pool: list[nn.Module] = []
        self.pool_optimizers: list[torch.optim.Optimizer] = []
        self.counters: list[int] = []
        self.generations: list[int] = []
        self._perm: tuple[int, torch.Tensor] | None = None
        # streamed sources: this process's reader, its batches, and every process's position after the last step
        self._reader: RealBatchReader | None = None
        self._stream: Iterator[ImageBatch] | None = None
        self.stream_positions: list[dict[str, int]] | None = None
        self.timings: dict[str, float] | None = None  # set to {} to time the parts of each step (benchmarks)

    @classmethod
    def planned_steps(cls, config: KRRSTConfig) -> int:
        return config.outer_steps

    # ------------------------------------------------------------------ setup
    def _mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.source.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.source.std, device=self.device).view(1, 3, 1, 1)
        return mean, std

    def _build_parameters(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        cfg = self.config
        self.x_syn = nn.Parameter(images.to(self.device, torch.float32).contiguous())
        self.y_syn = nn.Parameter(targets.to(self.device, torch.float32).contiguous())
        self.optimizer = torch.optim.Adam([self.x_syn, self.y_syn], lr=cfg.outer_lr, weight_decay=0.0)
        self.scheduler = torch.optim.lr_scheduler.LinearLR(
            self.optimizer,
            start_factor=1.0,
            end_factor=cfg.outer_end_factor,
            total_iters=max(cfg.outer_steps, 1),
        )

    def _new_pool_model(self, index: int, generation: int) -> tuple[nn.Module, torch.optim.Optimizer]:
        """A freshly initialized pool model, seeded by (seed, index, generation) so resume rebuilds it exactly."""
        cfg = self.config
        assert self.x_syn is not None and self.y_syn is not None  # built by init() / load_state_dict()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derived_seed(self.seed, "pool-init", index, generation))
            model = create_backbone(cfg.model, head_dim=self.y_syn.shape[1], image_size=self.x_syn.shape[-1])
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(
            model.parameters(), lr=cfg.pool_lr, momentum=cfg.pool_momentum, weight_decay=cfg.pool_weight_decay
        )
        return model, opt

    def _build_pool(self) -> None:
        self.pool, self.pool_optimizers = [], []
        for i in range(self.config.num_models):
            model, opt = self._new_pool_model(i, self.generations[i])
            self.pool.append(model)
            self.pool_optimizers.append(opt)

    def init_subset(self) -> torch.Tensor:
        """Indices of the initial real images: the seeded random subset (CPU int64) the random baseline also picks."""
        return self.random_real_subset(self.config.num_images)

    def init(self) -> None:
        """Random real images as initial synthetic images, teacher features as targets, staggered pool ages."""
        cfg = self.config
        self.init_indices = self.init_subset()
        real = self.source.take(self.init_indices)
        targets = torch.cat([self.teacher.encode(chunk) for chunk in real.split(1024)]).to(self.device)
        if cfg.syn_input_space == "raw":
            images = real.float() / 255.0
        else:
            images = normalize(real, self.source.mean, self.source.std)
        self._build_parameters(images, targets)
        self.generations = [0] * cfg.num_models
        self._build_pool()
        ages = torch.randint(
            1, cfg.pool_age_limit, (cfg.num_models,), generator=derived_generator(self.seed, "pool-ages")
        )
        self.counters = [int(a) for a in ages]
        with progress(total=sum(self.counters), desc="KRR-ST pool warm-up", disable=self.rank != 0) as bar:
            for i, age in enumerate(self.counters):
                for _ in range(age):
                    self._pool_train_step(i)
                    bar.update(1)
        self.step_count = 0

    # ------------------------------------------------------------------ one outer step
    def _autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16)

    def _as_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _pool_train_step(self, i: int) -> float:
        """One full-batch SGD step of pool model ``i`` on MSE(model(x_syn), y_syn), in train mode."""
        model, opt = self.pool[i], self.pool_optimizers[i]
        assert self.x_syn is not None and self.y_syn is not None  # built by init() / load_state_dict()
        model.train()
        with self._autocast():
            out = model(self._as_input(self.x_syn.detach())).logits
        loss = F.mse_loss(out.float(), self.y_syn.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    def _update_pool(self, i: int) -> None:
        """After model ``i`` was used: re-initialize it at the age limit, else train it one step (spec §1.5)."""
        if self.counters[i] >= self.config.pool_age_limit:
            self.generations[i] += 1
            self.pool[i], self.pool_optimizers[i] = self._new_pool_model(i, self.generations[i])
            if self.config.pool_reset_counter:
                self.counters[i] = 0
        else:
            self.counters[i] += 1
            self._pool_train_step(i)

    def real_batch_indices(self, step: int) -> torch.Tensor:
        """Global real-batch indices of ``step``: consecutive slices of a per-epoch permutation (last partial dropped)."""
        b = self.config.real_batch_size
        per_epoch = len(self.source) // b
        epoch, pos = divmod(step, per_epoch)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (
                epoch,
                torch.randperm(len(self.source), generator=derived_generator(self.seed, "order", epoch)),
            )
        return self._perm[1][pos * b : (pos + 1) * b].to(self.device)

    def _streamed_batch(self) -> torch.Tensor:
        """This process's next ``real_batch_size / world_size`` streamed images; records every process's position."""
        assert isinstance(self.source, StreamedSource)
        if self._stream is None:
            reader = self.source.reader(
                self.config.real_batch_size // self.world_size,
                self.rank,
                self.world_size,
                derived_seed(self.seed, "real-stream"),
            )
            if self.stream_positions is not None:
                reader.load_state_dict(self.stream_positions[self.rank])
            self._reader, self._stream = reader, iter(reader)
        assert self._reader is not None
        x = next(self._stream).images.to(self.device)
        position = self._reader.state_dict()
        own = torch.zeros(self.world_size, 2, dtype=torch.int64, device=self.device)
        own[self.rank] = torch.tensor([position["epoch"], position["batch"]])
        every = self.reduce_sum(own).tolist()  # every process's position, known to the one that checkpoints
        self.stream_positions = [{"epoch": epoch, "batch": batch} for epoch, batch in every]
        return x

    def real_batch(self, step: int) -> torch.Tensor:
        """This process's uint8 real images of ``step``, augmented when ``real_augment``."""
        cfg = self.config
        if isinstance(self.source, StreamedSource):
            x = self._streamed_batch()
            if cfg.real_augment:
                gen = derived_generator(self.seed, "aug", step, self.rank, device=self.device)
                x = random_crop_flip(x, padding=4, generator=gen)
            return x
        x = self.source.images[self.real_batch_indices(step)]
        if cfg.real_augment:  # augment the whole global batch so every process sees the same views
            x = random_crop_flip(
                x, padding=4, generator=derived_generator(self.seed, "aug", step, device=self.device)
            )
        shard = cfg.real_batch_size // self.world_size
        return x[self.rank * shard : (self.rank + 1) * shard]

    def _section(self, name: str):
        """Time a part of the step into ``self.timings`` (seconds, CUDA-synchronized) when timing is enabled."""
        if self.timings is None:
            return contextlib.nullcontext()
        return _Timer(self.timings, name, self.device)

    def step(self) -> dict[str, float]:
        cfg, s = self.config, self.step_count
        assert self.x_syn is not None and self.y_syn is not None  # built by init() / load_state_dict()
        i = int(torch.randint(len(self.pool), (1,), generator=derived_generator(self.seed, "model", s)))
        model = self.pool[i].eval()

        with self._section("teacher"):
            x = self.real_batch(s)
            y_real = self.teacher.encode(x).to(self.device)
        mean, std = self._mean_std()
        x_real = self._as_input((x.float() / 255.0 - mean) / std)

        with self._section("pool_forward"), self._autocast():
            feat_syn = cast(Backbone, model).forward_features(self._as_input(self.x_syn))
            with torch.no_grad():
                feat_real = cast(Backbone, model).forward_features(x_real)
        with self._section("kernel_solve"):
            pred = krr_predict(
                with_bias_column(feat_syn.float()),
                with_bias_column(feat_real.float()),
                self.y_syn,
                cfg.ridge,
                cfg.solver,
            )
            # sum over this shard / global count: summing the processes' gradients gives the full-batch mean's gradient
            loss = (pred - y_real).pow(2).sum() / (cfg.real_batch_size * y_real.shape[1])
        with self._section("synthetic_backward"):
            grad_x, grad_y = torch.autograd.grad(loss, [self.x_syn, self.y_syn])
        loss = loss.detach()
        with self._section("outer_update"):
            grad_x, grad_y, loss = (self.reduce_sum(t) for t in (grad_x, grad_y, loss))
            self.x_syn.grad, self.y_syn.grad = grad_x, grad_y
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_([self.x_syn, self.y_syn], cfg.grad_clip)
            lr = self.optimizer.param_groups[0]["lr"]
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
        with self._section("pool_update"):
            self._update_pool(i)
        self.step_count += 1
        return {"loss": float(loss), "lr": lr, "model": i, "age": self.counters[i]}

    # ------------------------------------------------------------------ state and export
    def state_dict(self) -> dict[str, Any]:
        assert self.x_syn is not None and self.y_syn is not None  # built by init() / load_state_dict()
        return {
            "step": self.step_count,
            "x_syn": self.x_syn.detach().clone(),
            "y_syn": self.y_syn.detach().clone(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "counters": list(self.counters),
            "generations": list(self.generations),
            "pool": [m.state_dict() for m in self.pool],
            "pool_optimizers": [o.state_dict() for o in self.pool_optimizers],
            "stream_positions": self.stream_positions,  # None in memory: the step alone gives the position
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.init_indices = self.init_subset()  # a function of the seed: no need to checkpoint it
        self._build_parameters(state["x_syn"], state["y_syn"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.counters = [int(c) for c in state["counters"]]
        self.generations = [int(g) for g in state["generations"]]
        self._build_pool()
        for model, opt, m_state, o_state in zip(
            self.pool, self.pool_optimizers, state["pool"], state["pool_optimizers"]
        ):
            model.load_state_dict(m_state)
            opt.load_state_dict(o_state)
        self.step_count = int(state["step"])
        self.stream_positions = state.get("stream_positions")
        if self.stream_positions is not None and len(self.stream_positions) != self.world_size:
            raise ValueError(
                f"the checkpoint was written by a streamed run of {len(self.stream_positions)} processes, each with "
                f"its own shards; resume it with {len(self.stream_positions)} processes, not {self.world_size}"
            )
        self._reader = self._stream = None

    def export(self) -> DistilledSet:
        cfg = self.config
        assert self.x_syn is not None and self.y_syn is not None  # built by init() / load_state_dict()
        raw = cfg.syn_input_space == "raw"
        meta = self.base_meta()
        meta.update(
            mean=[0.0, 0.0, 0.0] if raw else list(self.source.mean),
            std=[1.0, 1.0, 1.0] if raw else list(self.source.std),
            input_space=cfg.syn_input_space,
            source_normalization={"mean": list(self.source.mean), "std": list(self.source.std)},
            steps=self.step_count,
            config=config_to_dict(cfg),
            pretraining=recommended_pretraining(self.spec.pretraining_recipe, backbone=cfg.model),
        )
        return DistilledSet(self.x_syn.detach(), self.y_syn.detach(), meta)
