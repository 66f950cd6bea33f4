"""Self-supervised learning building blocks: Barlow Twins, LARS and the warmup-cosine schedule."""

from hf_ssdd.ssl.barlow_twins import (
    BarlowTwinsLoss,
    BarlowTwinsModel,
    BarlowTwinsProjector,
    barlow_twins_loss,
)

__all__ = [
    "BarlowTwinsLoss",
    "BarlowTwinsModel",
    "BarlowTwinsProjector",
    "barlow_twins_loss",
]
