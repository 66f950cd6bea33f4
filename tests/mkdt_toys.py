"""Tiny MKDT fixtures shared by the MKDT tests (and their spawned worker processes)."""

import torch

from hf_ssdd.data import ImageSource
from hf_ssdd.distill.experts import ExpertConfig, ExpertTrainer

TINY = {"channels": [4, 4]}  # ConvNet with two 4-channel blocks: 8 px → 2×2×4 = 16 features


def toy_source(n: int = 24, size: int = 8, seed: int = 0) -> ImageSource:
    """Random uint8 images as an ImageSource."""
    gen = torch.Generator().manual_seed(seed)
    return ImageSource(
        images=torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen),
        labels=None,
        class_names=None,
        name="toy",
        hub_id=None,
        split="train",
        fingerprint=f"toy-{n}-{size}-{seed}",
        mean=(0.5, 0.4, 0.3),
        std=(0.25, 0.2, 0.3),
        image_size=size,
    )


def toy_features(n: int = 24, dim: int = 6) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(1))


def toy_trainer(source=None, features=None, max_epoch: int = 3, seed: int = 0, **config) -> ExpertTrainer:
    source = source if source is not None else toy_source()
    return ExpertTrainer(
        architecture="convnet",
        source=source,
        features=features if features is not None else toy_features(len(source)),
        config=ExpertConfig(**{"batch_size": 8, **config}),
        max_epoch=max_epoch,
        seed=seed,
        model_overrides=TINY,
        teacher_id="toy-teacher",
        teacher_revision="rev0",
    )
