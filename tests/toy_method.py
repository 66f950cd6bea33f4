"""A toy distillation method in one file: what ``docs/architecture.md`` ("Adding a method") walks through.

It starts from the first ``num_images`` source images and moves them, step by step, a fraction ``rate`` of the
way towards the source's mean image; the targets are the teacher's features of the current images. Registering it
takes one decorator; ``import toy_method`` makes ``--method toy`` and the ``toy:`` config section available.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from hf_ssdd.artifacts import DistilledSet, recommended_pretraining
from hf_ssdd.config import config_to_dict, require_at_least
from hf_ssdd.distill import Distiller, register_distiller


@dataclass
class ToyConfig:
    """Settings of the toy method.

    Attributes:
        num_images: size of the synthetic set.
        steps: how many steps to run.
        rate: the fraction of the way to the mean image that each step moves the images.
    """

    num_images: int = 8
    steps: int = 3
    rate: float = 0.5

    def __post_init__(self) -> None:
        require_at_least(self, 1, "num_images")
        require_at_least(self, 0, "steps")


@register_distiller(
    "toy",
    config=ToyConfig,
    display_name="Toy mean-shift (tests)",
    pretraining_recipe="krr_st",
    resumable_keys=("steps",),
)
class ToyDistiller(Distiller):
    """x ← x + rate · (mean image − x) each step, from the first ``num_images`` source images (in [0, 1])."""

    @classmethod
    def planned_steps(cls, config: ToyConfig) -> int:
        return config.steps

    def init(self) -> None:
        self.init_indices = torch.arange(self.config.num_images)
        self.images = self.source.images[: self.config.num_images].float().div(255)
        self.mean_image = self.source.images.float().div(255).mean(0, keepdim=True)

    def step(self) -> dict[str, float]:
        self.images = self.images + self.config.rate * (self.mean_image - self.images)
        self.step_count += 1
        return {"loss": float((self.images - self.mean_image).square().mean())}

    def state_dict(self) -> dict[str, Any]:
        return {"images": self.images, "mean_image": self.mean_image, "step": self.step_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.images, self.mean_image = state["images"], state["mean_image"]
        self.step_count = int(state["step"])
        self.init_indices = torch.arange(self.config.num_images)

    def export(self) -> DistilledSet:
        mean = torch.tensor(self.source.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.source.std).view(1, 3, 1, 1)
        meta = self.base_meta()
        meta.update(
            mean=list(self.source.mean),
            std=list(self.source.std),
            input_space="normalized",
            steps=self.step_count,
            config=config_to_dict(self.config),
            pretraining=recommended_pretraining(self.spec.pretraining_recipe),
        )
        return DistilledSet((self.images - mean) / std, self.teacher.encode(self.images), meta)
