"""Subset baselines: real images with the teacher's features as targets.

- ``random`` — a uniformly random subset (MKDT's "Random subset" baseline, ``docs/reference/mkdt.md`` §2: real images
  paired with teacher representations, pre-trained with the same MSE recipe).
- ``kmeans`` — k-means in teacher-feature space; for each centroid the real image nearest to it (distinct images),
  the "Kmeans" row of KRR-ST's tables (``docs/reference/krr_st.md`` §6.1) done without labels.

Both select once in :meth:`init`; they have no optimization steps. Images are exported in the normalized space of
the source statistics, targets are the teacher's features, labels (when the source has them) ride along.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from hf_ssdd.artifacts.distilled_set import DistilledSet, recommended_pretraining
from hf_ssdd.config import config_to_dict
from hf_ssdd.data import normalize
from hf_ssdd.distill.base import Distiller, RunContext, register_distiller
from hf_ssdd.utils import derived_generator

if TYPE_CHECKING:
    from accelerate import Accelerator

    from hf_ssdd.data import ImageSource
    from hf_ssdd.teachers import Teacher


@dataclass
class SubsetConfig:
    """Size of the subset (and, for k-means, the clustering budget).

    Attributes:
        num_images: size of the subset.
        kmeans_iterations: k-means: at most this many Lloyd iterations.
        kmeans_tolerance: k-means: stop when the centroids move less than this (relative).
        batch_size: images per teacher forward pass and per distance computation.
    """

    num_images: int = 1000
    kmeans_iterations: int = 50
    kmeans_tolerance: float = 1e-4
    batch_size: int = 4096

    def __post_init__(self) -> None:
        if self.num_images < 1 or self.kmeans_iterations < 1 or self.batch_size < 1:
            raise ValueError("num_images, kmeans_iterations and batch_size must be ≥ 1")


def _pairwise_sq_dist(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return (x.pow(2).sum(1, keepdim=True) - 2 * x @ c.T + c.pow(2).sum(1)).clamp_min_(0)


def _nearest(x: torch.Tensor, c: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of and squared distance to the nearest centroid, for every row of ``x`` (chunked)."""
    dists, idx = [], []
    for chunk in x.split(batch_size):
        d, i = _pairwise_sq_dist(chunk, c).min(dim=1)
        dists.append(d)
        idx.append(i)
    return torch.cat(idx), torch.cat(dists)


def kmeans_plus_plus(
    x: torch.Tensor, k: int, generator: torch.Generator, batch_size: int = 4096
) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii, SODA 2007): each next centre drawn ∝ squared distance."""
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=generator))
    centres = [x[first]]
    closest = _pairwise_sq_dist(x, x[first : first + 1]).squeeze(1)
    for _ in range(1, k):
        probs = closest.double().cpu()
        probs = probs / probs.sum() if probs.sum() > 0 else torch.full_like(probs, 1.0 / n)
        nxt = int(torch.multinomial(probs, 1, generator=generator))
        centres.append(x[nxt])
        closest = torch.minimum(closest, _pairwise_sq_dist(x, x[nxt : nxt + 1]).squeeze(1))
    return torch.stack(centres)


def kmeans(
    x: torch.Tensor,
    k: int,
    iterations: int,
    generator: torch.Generator,
    tol: float = 1e-4,
    batch_size: int = 4096,
) -> torch.Tensor:
    """Lloyd's k-means from k-means++ seeds; empty clusters are re-seeded at the farthest points. Returns k×D."""
    x = x.float()
    centres = kmeans_plus_plus(x, k, generator, batch_size)
    for _ in range(iterations):
        assign, dist = _nearest(x, centres, batch_size)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        new = sums / counts.clamp_min(1).unsqueeze(1)
        empty = (counts == 0).nonzero().squeeze(1)
        if len(empty):
            new[empty] = x[dist.topk(len(empty)).indices]
        shift = (new - centres).norm(dim=1).max() / centres.norm(dim=1).mean().clamp_min(1e-12)
        centres = new
        if shift < tol:
            break
    return centres


def nearest_distinct(x: torch.Tensor, centres: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """For each centre the index of the nearest row of ``x``, all distinct (a centre whose nearest row is taken gets
    its nearest free row; centres are served in order of their best distance).

    Only each centre's k nearest rows are kept (k×k memory instead of k×N): at most k − 1 rows are taken before a
    centre is served, so its nearest free row is among them.
    """
    k, n = centres.shape[0], x.shape[0]
    if k > n:
        raise ValueError(f"cannot pick {k} distinct rows out of {n}")
    best_d = centres.new_zeros(k, 0)
    best_i = torch.zeros(k, 0, dtype=torch.long, device=x.device)
    for start in range(0, n, batch_size):
        chunk = x[start : start + batch_size]
        cand_d = torch.cat([best_d, _pairwise_sq_dist(centres, chunk)], dim=1)
        rows = torch.arange(start, start + len(chunk), device=x.device).expand(k, -1)
        cand_i = torch.cat([best_i, rows], dim=1)
        top = cand_d.topk(min(k, cand_d.shape[1]), dim=1, largest=False, sorted=True)
        best_d, best_i = top.values, cand_i.gather(1, top.indices)
    order = best_d[:, 0].argsort()
    taken = torch.zeros(n, dtype=torch.bool, device=x.device)
    chosen = torch.empty(k, dtype=torch.long, device=x.device)
    for c in order.tolist():  # k picks (not a loop over samples); each scans the centre's k candidates
        candidates = best_i[c]
        j = candidates[(~taken[candidates]).nonzero()[0, 0]]
        chosen[c] = j
        taken[j] = True
    return chosen


class _SubsetDistiller(Distiller):
    """Shared machinery: select indices in :meth:`init`, export real images with teacher features."""

    source: ImageSource  # in memory: the method does not stream (see Distiller)

    def __init__(
        self,
        config: SubsetConfig,
        source: ImageSource,
        teacher: Teacher,
        accelerator: Accelerator | None = None,
        seed: int = 0,
        features: torch.Tensor | None = None,
    ):
        super().__init__(config, source, teacher, accelerator, seed)
        if config.num_images > len(source):
            raise ValueError(f"num_images {config.num_images} exceeds the {len(source)} source images")
        self.features = features
        self.indices: torch.Tensor | None = None

    @classmethod
    def prepare(cls, config: SubsetConfig, context: RunContext) -> dict[str, Any]:
        """The teacher features of the whole source, computed once and cached (:func:`encode_source`)."""
        from hf_ssdd.teachers import encode_source

        return {"features": encode_source(context.teacher, context.source, accelerator=context.accelerator)}

    def step(self) -> dict[str, float]:
        raise RuntimeError(f"the {self.name} baseline has no optimization steps")

    def teacher_features(self) -> torch.Tensor:
        """Features of the whole source: given to the constructor (cached by the run driver) or computed here."""
        if self.features is None:
            self.features = torch.cat(
                [
                    self.teacher.encode(chunk).cpu()
                    for chunk in self.source.images.split(self.config.batch_size)
                ]
            )
        if self.features.shape[0] != len(self.source):
            raise ValueError(
                f"got features for {self.features.shape[0]} images, the source has {len(self.source)}"
            )
        return self.features

    @abstractmethod
    def select(self) -> torch.Tensor:
        """Indices of the chosen source images."""

    def init(self) -> None:
        self.indices = self.select().cpu()

    def state_dict(self) -> dict[str, Any]:
        return {"indices": self.indices}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.indices = state["indices"]

    def export(self) -> DistilledSet:
        assert self.indices is not None  # set by init() / load_state_dict()
        idx = self.indices.to(self.device)
        images = normalize(self.source.images[idx], self.source.mean, self.source.std)
        targets = self.teacher_features()[self.indices]
        labels = self.source.labels[idx] if self.source.labels is not None else None
        meta = self.base_meta()
        meta.update(
            mean=list(self.source.mean),
            std=list(self.source.std),
            input_space="normalized",
            config=config_to_dict(self.config),
            source_indices=self.indices.tolist(),
            class_names=self.source.class_names,
            pretraining=recommended_pretraining(self.spec.pretraining_recipe),
        )
        return DistilledSet(images, targets, meta, labels=labels)


@register_distiller(
    "random", config=SubsetConfig, display_name="random real subset", pretraining_recipe="mkdt"
)
class RandomSubset(_SubsetDistiller):
    """A uniformly random subset of the source, seeded: the images KRR-ST and MKDT (``init: random``) start from
    with the same seed (:meth:`~hf_ssdd.distill.base.Distiller.random_real_subset`)."""

    def select(self) -> torch.Tensor:
        return self.random_real_subset(self.config.num_images)


@register_distiller(
    "kmeans",
    config=SubsetConfig,
    display_name="k-means subset in teacher-feature space",
    pretraining_recipe="mkdt",
)
class KMeansSubset(_SubsetDistiller):
    """The real image nearest to each of ``num_images`` k-means centroids in teacher-feature space."""

    def select(self) -> torch.Tensor:
        cfg = self.config
        feats = self.teacher_features().to(self.device).float()
        centres = kmeans(
            feats,
            cfg.num_images,
            cfg.kmeans_iterations,
            derived_generator(self.seed, "kmeans"),
            cfg.kmeans_tolerance,
            cfg.batch_size,
        )
        return nearest_distinct(feats, centres, cfg.batch_size)
