"""Backbone registry: ``create_backbone(name, **kw)``, ``list_backbones()`` and the timm adapter.

Built-in names (defaults; any config field can be overridden through ``create_backbone`` keyword arguments):

| name | architecture | px | features |
| --- | --- | --- | --- |
| ``convnet`` | MKDT ConvNet-3: 3 x 128, instance norm, avg-pool | 32 | 2048 |
| ``convnet_d4`` | MKDT ConvNetD4: 4 x 128, instance norm, avg-pool | 64 | 2048 |
| ``convnet_128_256_512_bn`` | KRR-ST ConvNet-BN (CIFAR-100) | 32 | 8192 |
| ``convnet_64_128_256_512_bn`` | KRR-ST ConvNet-BN (TinyImageNet, ImageNet-64) | 64 | 8192 |
| ``convnet_<c1>_..._<bn,in,none>`` | KRR-ST name pattern, parsed on the fly, avg-pool | 32 | c_last x (32 / 2^depth)^2 |
| ``resnet18_cifar`` / ``resnet10_cifar`` | MKDT transfer ResNets: stem padding 1, PyTorch default init | 32 | 512 |
| ``resnet18_krrst`` / ``resnet10_krrst`` | KRR-ST ResNets: stem padding 2, torchvision init, zero-init residual | 32 / 64 | 512 |
| ``resnet18_bt_teacher`` | KRR-ST / MKDT Barlow Twins teacher: stem padding 2, torchvision init | 32 | 512 |
| ``resnet10_bt_teacher_narrow`` | its CPU-sized cousin (ResNet-10, widths 16-32-64-128): the embedded teacher | 32 | 128 |
| ``vgg11_krrst`` | KRR-ST VGG-11 with BatchNorm | 64 | 2048 |
| ``alexnet_krrst`` | KRR-ST AlexNet with BatchNorm | 64 | 12288 |
| ``mobilenetv2_krrst`` | KRR-ST CIFAR MobileNetV2, expansion 2 | 64 | 1280 |
| ``timm:<name>`` | any timm model through :class:`TimmBackbone` | — | timm's pooled features |

KRR-ST: Lee et al., "Self-Supervised Dataset Distillation for Transfer Learning", ICLR 2024. MKDT: Joshi et al.,
"Dataset Distillation via Knowledge Distillation: Towards Efficient Self-Supervised Pre-Training of Deep Networks",
ICLR 2025. The KRR-ST ResNets and the teacher keep PyTorch's default init on the stem conv, because the reference
swaps the 3x3 stem into a torchvision ResNet after torchvision's init loop (``init_scheme``).
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast, runtime_checkable

import torch
from torch import nn

from hf_ssdd.models.hub.configuration_ssdd import (
    SSDDAlexNetConfig,
    SSDDConfig,
    SSDDConvNetConfig,
    SSDDMobileNetV2Config,
    SSDDResNetConfig,
    SSDDVGGConfig,
)
from hf_ssdd.models.hub.modeling_ssdd import (
    SSDDAlexNetModel,
    SSDDConvNetModel,
    SSDDMobileNetV2Model,
    SSDDModelOutput,
    SSDDPreTrainedModel,
    SSDDResNetModel,
    SSDDVGGModel,
)

TIMM_PREFIX = "timm:"
TIMM_EXPORT_TAG = "hf_ssdd"
# registry metadata that timm's exporter copies into pretrained_cfg but that does not describe our weights
_TIMM_REGISTRY_KEYS = ("license", "origin_url", "paper_ids", "paper_name", "notes", "pool_size")
_CONVNET_NAME = re.compile(r"^convnet((?:_\d+)+)_(bn|in|none)$")
_CONVNET_NORMS = {"bn": "batchnorm", "in": "instancenorm", "none": "none"}

BackboneFactory = Callable[..., nn.Module]
_Factory = TypeVar("_Factory", bound=BackboneFactory)
_REGISTRY: dict[str, BackboneFactory] = {}
MODEL_CLASSES: dict[type[SSDDConfig], type[SSDDPreTrainedModel]] = {
    SSDDConvNetConfig: SSDDConvNetModel,
    SSDDResNetConfig: SSDDResNetModel,
    SSDDVGGConfig: SSDDVGGModel,
    SSDDAlexNetConfig: SSDDAlexNetModel,
    SSDDMobileNetV2Config: SSDDMobileNetV2Model,
}


@runtime_checkable
class Backbone(Protocol):
    """The backbone contract (``docs/architecture.md``) that every ``create_backbone`` result satisfies."""

    num_features: int
    head: nn.Module

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Trunk features ``[B, num_features]``."""
        ...

    def reset_head(self, head_dim: int) -> None:
        """Replace the head by a fresh ``Linear(num_features, head_dim)`` (Identity if 0)."""
        ...

    def __call__(self, pixel_values: torch.Tensor) -> SSDDModelOutput:
        """Feature map, trunk features and head output."""
        ...


def register_backbone(name: str) -> Callable[[_Factory], _Factory]:
    """Decorator registering ``factory(**overrides) -> Backbone`` under ``name``.

    The factory receives ``head_dim``, ``image_size`` (when given) and any extra ``create_backbone`` keywords.

    Raises:
        ValueError: If ``name`` is taken or uses the reserved ``timm:`` prefix.
    """
    if name in _REGISTRY or name.startswith(TIMM_PREFIX):
        raise ValueError(f"backbone name {name!r} is already registered or reserved")

    def decorator(factory: _Factory) -> _Factory:
        _REGISTRY[name] = factory
        return factory

    return decorator


def create_backbone(name: str, head_dim: int = 0, image_size: int | None = None, **kwargs: Any) -> nn.Module:
    """Build a backbone by registry name, KRR-ST ConvNet pattern or ``timm:<model>``.

    Args:
        name: A name from :func:`list_backbones`, ``convnet_<c1>_..._<bn|in|none>`` or ``timm:<timm model name>``
            (also ``timm:local-dir:/path`` and ``timm:hf-hub:org/x``, loaded with ``pretrained=True``).
        head_dim: Output size of the linear head on the trunk features; 0 means no head.
        image_size: Input resolution; None keeps the backbone's default.
        **kwargs: Config field overrides (e.g. ``channels``, ``norm``, ``mean``, ``std``); for timm, arguments of
            :class:`TimmBackbone` and ``timm.create_model``.

    Returns:
        A module satisfying :class:`Backbone`.

    Raises:
        ValueError: For an unknown name (close matches are listed) or an unknown override.
    """
    overrides = dict(kwargs, head_dim=head_dim)
    if image_size is not None:
        overrides["image_size"] = image_size
    if name.startswith(TIMM_PREFIX):
        return TimmBackbone(name[len(TIMM_PREFIX) :], **overrides)
    return _resolve(name)(**overrides)


def list_backbones(pattern: str | None = None) -> list[str]:
    """Registered backbone names, optionally filtered by a shell-style ``pattern``.

    A pattern starting with ``timm:`` lists timm models instead (e.g. ``"timm:resnet*"``). Names of the dynamic
    ``convnet_<c1>_..._<norm>`` pattern are accepted by :func:`create_backbone` but not listed.
    """
    if pattern is not None and pattern.startswith(TIMM_PREFIX):
        import timm

        return [TIMM_PREFIX + name for name in timm.list_models(pattern[len(TIMM_PREFIX) :] or "*")]
    names = sorted(_REGISTRY)
    return names if pattern is None else fnmatch.filter(names, pattern)


def _resolve(name: str) -> BackboneFactory:
    if name in _REGISTRY:
        return _REGISTRY[name]
    match = _CONVNET_NAME.match(name)
    if match:
        channels = [int(c) for c in match.group(1).strip("_").split("_")]
        return _hf_factory(SSDDConvNetConfig, channels=channels, norm=_CONVNET_NORMS[match.group(2)])
    close = difflib.get_close_matches(name, list(_REGISTRY), n=5)
    hint = f"did you mean {close}? " if close else ""
    raise ValueError(
        f"unknown backbone {name!r}; {hint}see hf_ssdd.models.list_backbones(), use "
        "'convnet_<c1>_..._<bn|in|none>' or 'timm:<model>' (list with list_backbones('timm:*'))"
    )


def _config_fields(config_class: type[SSDDConfig]) -> set[str]:
    return {
        param
        for klass in config_class.__mro__
        if issubclass(klass, SSDDConfig)
        for param in inspect.signature(klass.__init__).parameters
        if param not in ("self", "kwargs")
    }


def _hf_factory(config_class: type[SSDDConfig], **defaults: Any) -> BackboneFactory:
    """Factory building ``MODEL(config_class(**{**defaults, **overrides}))``, rejecting unknown fields."""
    model_class = MODEL_CLASSES[config_class]

    def factory(**overrides: Any) -> SSDDPreTrainedModel:
        unknown = sorted(set(overrides) - _config_fields(config_class))
        if unknown:
            raise ValueError(
                f"unknown option(s) {unknown} for {config_class.__name__}; "
                f"valid: {sorted(_config_fields(config_class))}"
            )
        return model_class(config_class(**{**defaults, **overrides}))

    return factory


_KRRST_RESNET = dict(stem_padding=2, zero_init_residual=True, init_scheme="torchvision_default_stem")
_BUILTINS: dict[str, tuple[type[SSDDConfig], dict[str, Any]]] = {
    "convnet": (SSDDConvNetConfig, dict(channels=[128] * 3, norm="instancenorm", image_size=32)),
    "convnet_d4": (SSDDConvNetConfig, dict(channels=[128] * 4, norm="instancenorm", image_size=64)),
    "convnet_128_256_512_bn": (
        SSDDConvNetConfig,
        dict(channels=[128, 256, 512], norm="batchnorm", image_size=32),
    ),
    "convnet_64_128_256_512_bn": (
        SSDDConvNetConfig,
        dict(channels=[64, 128, 256, 512], norm="batchnorm", image_size=64),
    ),
    "resnet18_cifar": (SSDDResNetConfig, dict(layers=[2, 2, 2, 2], stem_padding=1, init_scheme="pytorch")),
    "resnet10_cifar": (SSDDResNetConfig, dict(layers=[1, 1, 1, 1], stem_padding=1, init_scheme="pytorch")),
    "resnet18_krrst": (SSDDResNetConfig, dict(layers=[2, 2, 2, 2], image_size=32, **_KRRST_RESNET)),
    "resnet10_krrst": (SSDDResNetConfig, dict(layers=[1, 1, 1, 1], image_size=64, **_KRRST_RESNET)),
    "resnet18_bt_teacher": (
        SSDDResNetConfig,
        dict(layers=[2, 2, 2, 2], stem_padding=2, init_scheme="torchvision_default_stem"),
    ),
    "resnet10_bt_teacher_narrow": (
        SSDDResNetConfig,
        dict(
            layers=[1, 1, 1, 1],
            widths=[16, 32, 64, 128],
            stem_padding=2,
            init_scheme="torchvision_default_stem",
        ),
    ),
    "vgg11_krrst": (SSDDVGGConfig, dict(norm="batchnorm", image_size=64)),
    "alexnet_krrst": (SSDDAlexNetConfig, dict(image_size=64)),
    "mobilenetv2_krrst": (SSDDMobileNetV2Config, dict(image_size=64)),
}
for _name, (_config_class, _defaults) in _BUILTINS.items():
    register_backbone(_name)(_hf_factory(_config_class, **_defaults))


class TimmBackbone(nn.Module):
    """Any timm model behind the hf_ssdd backbone contract.

    Trunk features are timm's ``forward_head(forward_features(x), pre_logits=True)`` flattened (for most models the
    globally pooled features); ``last_hidden_state`` is timm's ``forward_features`` output (``[B, C, h, w]`` for
    CNNs, ``[B, tokens, C]`` for ViTs). Normalization statistics and the input resolution travel in
    ``model.pretrained_cfg``; :meth:`save_pretrained` writes the trunk in timm format.

    Args:
        model_name: timm model name, or ``local-dir:/path`` / ``hf-hub:org/x``.
        head_dim: Output size of the linear head; 0 means no head.
        image_size: Recorded as ``input_size`` in ``pretrained_cfg``, and passed as ``img_size`` to models
            that accept it (ViTs).
        pretrained: Load pretrained weights; None means True for ``local-dir:`` / ``hf-hub:`` sources only.
        mean: Input normalization mean recorded in ``pretrained_cfg``, or None to keep timm's.
        std: Input normalization std recorded in ``pretrained_cfg``, or None to keep timm's.
        **timm_kwargs: Passed to ``timm.create_model`` (e.g. ``in_chans``, ``drop_path_rate``).
    """

    def __init__(
        self,
        model_name: str,
        head_dim: int = 0,
        image_size: int | None = None,
        pretrained: bool | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        **timm_kwargs: Any,
    ):
        super().__init__()
        if pretrained is None:
            pretrained = model_name.startswith(("local-dir:", "hf-hub:"))
        self.in_chans = int(timm_kwargs.get("in_chans", 3))
        overlay = {key: tuple(value) for key, value in (("mean", mean), ("std", std)) if value is not None}
        if image_size is not None:
            overlay["input_size"] = (self.in_chans, image_size, image_size)
        if overlay:
            timm_kwargs["pretrained_cfg_overlay"] = {
                **timm_kwargs.get("pretrained_cfg_overlay", {}),
                **overlay,
            }
        # A timm model: forward_features / forward_head / num_features / pretrained_cfg are not on nn.Module.
        self.model = cast(Any, _create_timm_model(model_name, pretrained, image_size, timm_kwargs))
        self.num_features = int(getattr(self.model, "head_hidden_size", None) or self.model.num_features)
        self.head = _make_head(self.num_features, head_dim)

    def _check_input(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.in_chans:
            raise ValueError(
                f"TimmBackbone expects pixel_values of shape [batch, {self.in_chans}, height, width], "
                f"got {tuple(pixel_values.shape)}"
            )
        return pixel_values

    def pool(self, feature_map: torch.Tensor) -> torch.Tensor:
        """Trunk features ``[B, num_features]`` from timm's ``forward_features`` output."""
        return self.model.forward_head(feature_map, pre_logits=True).flatten(1)

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Trunk features ``[B, num_features]``."""
        return self.pool(self.model.forward_features(self._check_input(pixel_values)))

    def reset_head(self, head_dim: int) -> None:
        """Replace the head by a freshly initialized ``Linear(num_features, head_dim)`` (Identity if 0)."""
        reference = next(self.model.parameters())
        self.head = _make_head(self.num_features, head_dim).to(reference.device, reference.dtype)

    def forward(self, pixel_values: torch.Tensor, return_dict: bool | None = None) -> SSDDModelOutput | tuple:
        """Feature map, trunk features and head output (None without a head)."""
        feature_map = self.model.forward_features(self._check_input(pixel_values))
        features = self.pool(feature_map)
        logits = None if isinstance(self.head, nn.Identity) else self.head(features)
        output = SSDDModelOutput(last_hidden_state=feature_map, pooler_output=features, logits=logits)
        return output.to_tuple() if return_dict is False else output

    def save_pretrained(self, save_directory: str | Path) -> None:
        """Save the trunk in timm format: ``config.json`` + ``model.safetensors``.

        The folder loads with ``timm.create_model("local-dir:<folder>", pretrained=True)`` (``hf-hub:<repo>``
        once published), ``transformers.AutoModel.from_pretrained`` (``TimmWrapperModel``) and
        ``TimmBackbone("local-dir:<folder>")``. Preprocessing: the recorded ``input_size`` and normalization,
        no crop. Two fixes to timm's exporter: ``model_args.num_classes`` is dropped (``TimmWrapperModel``
        passes ``num_classes=0`` itself and fails on the duplicate), and the registry metadata of the source
        weights (license, origin, papers, tag, test-time and pooling sizes) is removed so that the export
        claims no provenance.

        Raises:
            ValueError: The backbone has a head; the timm format holds the trunk only (call
                ``reset_head(0)``).
        """
        from timm.models import save_for_hf

        if not isinstance(self.head, nn.Identity):
            raise ValueError("timm format stores the trunk only; call reset_head(0) before save_pretrained")
        folder = Path(save_directory)
        save_for_hf(
            self.model,
            folder,  # type: ignore[arg-type]  # timm stub: save_directory is typed str, but goes to Path()
            safe_serialization=True,
            model_config={"pretrained_cfg": {"tag": TIMM_EXPORT_TAG}},
            data_config={"input_size": self.model.pretrained_cfg["input_size"], "crop_pct": 1.0},
        )
        config_path = folder / "config.json"
        config = json.loads(config_path.read_text())
        config.get("model_args", {}).pop("num_classes", None)
        for key in _TIMM_REGISTRY_KEYS:
            config["pretrained_cfg"].pop(key, None)
        config_path.write_text(json.dumps(config, indent=2) + "\n")


def _make_head(num_features: int, head_dim: int) -> nn.Module:
    return nn.Linear(num_features, head_dim) if head_dim else nn.Identity()


def _create_timm_model(
    name: str, pretrained: bool, image_size: int | None, kwargs: dict[str, Any]
) -> nn.Module:
    """``timm.create_model`` without classifier, passing ``img_size`` only to models that accept it."""
    import timm

    if image_size is not None:
        try:
            return timm.create_model(
                name, pretrained=pretrained, num_classes=0, img_size=image_size, **kwargs
            )
        except TypeError as error:
            if "img_size" not in str(error):
                raise
    return timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
