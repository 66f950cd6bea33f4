"""Loading reference checkpoints into hf_ssdd backbones."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from hf_ssdd.models.hub.modeling_ssdd import SSDDResNetModel


def load_torchvision_resnet_state_dict(
    model: SSDDResNetModel, state_dict: Mapping[str, torch.Tensor]
) -> SSDDResNetModel:
    """Load a torchvision ``resnet18``/``resnet10``-style state dict into an :class:`SSDDResNetModel`.

    This is the format of the released KRR-ST Barlow Twins teachers (Lee et al., ICLR 2024, ``train.py``; reused by
    MKDT): torchvision ``resnet18()`` with ``conv1 = Conv2d(3, 64, 3, 1, 2, bias=False)``, ``maxpool = Identity``
    and ``fc = Identity``. Module names are identical (``conv1``, ``bn1``, ``layer1..4`` with
    ``conv1/bn1/conv2/bn2/downsample.{0,1}``), so the only mapping is that ``fc.*`` keys (a classifier) are
    dropped; the model's own ``head`` is left as is. Build the model with the matching ``stem_padding`` (2 for the
    KRR-ST checkpoints): padding has no weights, so it cannot be checked here.

    Args:
        model: Target ResNet; its trunk must match the checkpoint's architecture.
        state_dict: torchvision-style state dict (tensors), with or without ``fc.*``.

    Returns:
        ``model``, with its trunk weights and BatchNorm statistics replaced.

    Raises:
        ValueError: If trunk keys are missing or unexpected, or shapes differ.
    """
    trunk = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    own_trunk = {k for k in model.state_dict() if not k.startswith("head.")}
    missing, unexpected = sorted(own_trunk - trunk.keys()), sorted(trunk.keys() - own_trunk)
    if missing or unexpected:
        raise ValueError(
            "state dict does not match the ResNet trunk "
            f"(layers={model.config.layers}): missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    try:
        model.load_state_dict(trunk, strict=False)
    except RuntimeError as error:
        raise ValueError(f"state dict does not match the ResNet trunk: {error}") from error
    return model
