"""Self-supervised learning building blocks: Barlow Twins, LARS and the warmup-cosine schedule (timm / transformers)."""

from hf_ssdd.ssl.barlow_twins import (
    BarlowTwinsLoss,
    BarlowTwinsModel,
    BarlowTwinsProjector,
    barlow_twins_loss,
)
from hf_ssdd.ssl.optim import (
    build_optimizer,
    lars_param_groups,
    warmup_cosine_scheduler,
)

__all__ = [
    "BarlowTwinsLoss",
    "BarlowTwinsModel",
    "BarlowTwinsProjector",
    "barlow_twins_loss",
    "build_optimizer",
    "lars_param_groups",
    "warmup_cosine_scheduler",
]
