"""Configurations of the hf_ssdd backbones.

Self-contained: this file is copied into every Hub model repo next to ``modeling_ssdd.py`` (``auto_map``), so it
imports only ``transformers``. Each config subclasses ``PretrainedConfig`` with an explicit ``__init__`` so that
transformers v4 and v5 both load it.

Architectures: Lee et al., "Self-Supervised Dataset Distillation for Transfer Learning", ICLR 2024 (KRR-ST,
``models/*.py``); Joshi et al., "Dataset Distillation via Knowledge Distillation: Towards Efficient Self-Supervised
Pre-Training of Deep Networks", ICLR 2025 (MKDT, ``networks.py``).
"""

from transformers import PretrainedConfig

CONV_NORMS = ("instancenorm", "batchnorm", "none")
CONV_POOLINGS = ("avgpool", "maxpool", "none")
RESNET_NORMS = ("batchnorm", "instancenorm")
RESNET_INIT_SCHEMES = ("torchvision", "torchvision_default_stem", "pytorch")
VGG11_CFG = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
MOBILENETV2_KRRST_BLOCKS = [
    [1, 16, 1, 1],
    [2, 24, 2, 1],
    [2, 32, 3, 2],
    [2, 64, 4, 2],
    [2, 96, 3, 1],
    [2, 160, 3, 2],
    [2, 320, 1, 1],
]


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {list(choices)}")


def _check_positive_ints(name, values):
    if not values or any(int(v) != v or v <= 0 for v in values):
        raise ValueError(f"{name} must be a non-empty list of positive integers, got {values!r}")
    return [int(v) for v in values]


def _check_stats(name, values, in_chans):
    if values is None:
        return None
    values = [float(v) for v in values]
    if len(values) != in_chans:
        raise ValueError(f"{name} must have one value per input channel ({in_chans}), got {values}")
    return values


class SSDDConfig(PretrainedConfig):
    """Fields shared by every hf_ssdd backbone.

    Args:
        image_size: Square input resolution the encoder is built and trained for.
        in_chans: Number of input channels.
        head_dim: Output size of the linear head on the trunk features; 0 means no head.
        mean: Per-channel mean of the input normalization (``(x - mean) / std`` on [0, 1] pixels), or None.
        std: Per-channel standard deviation of the input normalization, or None.
        **kwargs: Passed to ``PretrainedConfig``.
    """

    def __init__(self, image_size=32, in_chans=3, head_dim=0, mean=None, std=None, **kwargs):
        if int(image_size) <= 0 or int(in_chans) <= 0 or int(head_dim) < 0:
            raise ValueError(
                f"need image_size > 0, in_chans > 0 and head_dim >= 0, got {image_size}, {in_chans}, {head_dim}"
            )
        self.image_size = int(image_size)
        self.in_chans = int(in_chans)
        self.head_dim = int(head_dim)
        self.mean = _check_stats("mean", mean, self.in_chans)
        self.std = _check_stats("std", std, self.in_chans)
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")
        super().__init__(**kwargs)


class SSDDConvNetConfig(SSDDConfig):
    """Dataset-distillation ConvNet: blocks of conv3x3 (bias) -> norm -> ReLU -> 2x2 pool, features flattened.

    Defaults give MKDT's ConvNet-3 (3 x 128 channels, instance norm, average pooling, 32 px).

    Args:
        channels: Output channels of each block (one entry per block).
        norm: ``"instancenorm"`` (``GroupNorm(C, C)``, MKDT), ``"batchnorm"`` (KRR-ST ConvNet-BN) or ``"none"``.
        pooling: ``"avgpool"``, ``"maxpool"`` or ``"none"`` (2x2, stride 2).
        **kwargs: Shared fields of :class:`SSDDConfig`.
    """

    model_type = "ssdd_convnet"

    def __init__(self, channels=None, norm="instancenorm", pooling="avgpool", **kwargs):
        self.channels = _check_positive_ints(
            "channels", [128, 128, 128] if channels is None else list(channels)
        )
        _check_choice("norm", norm, CONV_NORMS)
        _check_choice("pooling", pooling, CONV_POOLINGS)
        self.norm = norm
        self.pooling = pooling
        super().__init__(**kwargs)


class SSDDResNetConfig(SSDDConfig):
    """CIFAR-style BasicBlock ResNet: 3x3 stride-1 stem, no max-pool, widths 64-128-256-512, global average pool.

    Args:
        layers: BasicBlocks per stage: ``[2, 2, 2, 2]`` ResNet-18, ``[1, 1, 1, 1]`` ResNet-10.
        widths: Channels per stage (the stem has ``widths[0]``); 64-128-256-512 in every reference. Narrower
            networks (e.g. 16-32-64-128) make small teachers for CPU quick-starts.
        stem_padding: Padding of the 3x3 stem conv: 2 in KRR-ST (teacher and students), 1 in MKDT.
        norm: ``"batchnorm"`` or ``"instancenorm"`` (``GroupNorm(C, C)``).
        zero_init_residual: Zero the last norm gamma of each residual branch (KRR-ST ResNets).
        init_scheme: ``"torchvision"`` (Kaiming-normal fan-out convs), ``"torchvision_default_stem"`` (the same,
            but the stem conv keeps PyTorch's default init, as in KRR-ST, which swaps the stem in after
            torchvision's init) or ``"pytorch"`` (PyTorch default init everywhere, MKDT).
        **kwargs: Shared fields of :class:`SSDDConfig`.
    """

    model_type = "ssdd_resnet"

    def __init__(
        self,
        layers=None,
        widths=None,
        stem_padding=1,
        norm="batchnorm",
        zero_init_residual=False,
        init_scheme="torchvision",
        **kwargs,
    ):
        self.layers = _check_positive_ints("layers", [2, 2, 2, 2] if layers is None else list(layers))
        if len(self.layers) != 4:
            raise ValueError(f"layers must have 4 entries (one per stage), got {self.layers}")
        self.widths = _check_positive_ints("widths", [64, 128, 256, 512] if widths is None else list(widths))
        if len(self.widths) != 4:
            raise ValueError(f"widths must have 4 entries (one per stage), got {self.widths}")
        if int(stem_padding) < 0:
            raise ValueError(f"stem_padding must be >= 0, got {stem_padding}")
        _check_choice("norm", norm, RESNET_NORMS)
        _check_choice("init_scheme", init_scheme, RESNET_INIT_SCHEMES)
        self.stem_padding = int(stem_padding)
        self.norm = norm
        self.zero_init_residual = bool(zero_init_residual)
        self.init_scheme = init_scheme
        super().__init__(**kwargs)


class SSDDVGGConfig(SSDDConfig):
    """VGG with norm after every conv (KRR-ST ``models/vgg.py``), features flattened.

    Args:
        cfg: Layer list: an int is conv3x3 (bias) -> norm -> ReLU with that many channels, ``"M"`` a 2x2 max-pool.
            Defaults to VGG-11.
        norm: ``"batchnorm"`` or ``"instancenorm"`` (``GroupNorm(C, C)``).
        **kwargs: Shared fields of :class:`SSDDConfig`.
    """

    model_type = "ssdd_vgg"

    def __init__(self, cfg=None, norm="batchnorm", **kwargs):
        cfg = list(VGG11_CFG if cfg is None else cfg)
        _check_positive_ints("cfg channels", [v for v in cfg if v != "M"])
        _check_choice("norm", norm, RESNET_NORMS)
        self.cfg = [v if v == "M" else int(v) for v in cfg]
        self.norm = norm
        super().__init__(**kwargs)


class SSDDAlexNetConfig(SSDDConfig):
    """KRR-ST AlexNet (5 convs with BatchNorm, 3 max-pools), features flattened.

    Args:
        **kwargs: Shared fields of :class:`SSDDConfig`.
    """

    model_type = "ssdd_alexnet"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)


class SSDDMobileNetV2Config(SSDDConfig):
    """KRR-ST CIFAR MobileNetV2 (stride-1 stem, expansion factor 2), globally average-pooled.

    Args:
        blocks: Inverted-residual stages as ``[expansion, out_channels, num_blocks, stride]``.
        stem_channels: Output channels of the 3x3 stem conv.
        last_channels: Output channels of the final 1x1 conv (the feature size).
        **kwargs: Shared fields of :class:`SSDDConfig`.
    """

    model_type = "ssdd_mobilenetv2"

    def __init__(self, blocks=None, stem_channels=32, last_channels=1280, **kwargs):
        blocks = MOBILENETV2_KRRST_BLOCKS if blocks is None else blocks
        self.blocks = [_check_positive_ints("blocks entry", list(b)) for b in blocks]
        if any(len(b) != 4 for b in self.blocks):
            raise ValueError(
                f"each blocks entry is [expansion, out_channels, num_blocks, stride], got {blocks}"
            )
        self.stem_channels, self.last_channels = _check_positive_ints(
            "channels", [stem_channels, last_channels]
        )
        super().__init__(**kwargs)


__all__ = [
    "SSDDAlexNetConfig",
    "SSDDConfig",
    "SSDDConvNetConfig",
    "SSDDMobileNetV2Config",
    "SSDDResNetConfig",
    "SSDDVGGConfig",
]
