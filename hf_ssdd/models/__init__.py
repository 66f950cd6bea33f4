"""Backbones: self-contained transformers models, a name registry and a timm adapter.

Importing this package registers the hf_ssdd configs and models with ``AutoConfig`` / ``AutoModel`` and marks them
for ``auto_map`` export, so ``save_pretrained`` writes a folder that loads with ``AutoModel.from_pretrained`` with
the library (any ``trust_remote_code``) or without it (``trust_remote_code=True``).
"""

from transformers import AutoConfig, AutoModel

from hf_ssdd.models.convert import load_torchvision_resnet_state_dict
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
from hf_ssdd.models.registry import (
    MODEL_CLASSES,
    Backbone,
    TimmBackbone,
    create_backbone,
    list_backbones,
    register_backbone,
)


def _register_auto_classes() -> None:
    for config_class, model_class in MODEL_CLASSES.items():
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)
        config_class.register_for_auto_class()
        model_class.register_for_auto_class("AutoModel")


_register_auto_classes()

__all__ = [
    "MODEL_CLASSES",
    "Backbone",
    "SSDDAlexNetConfig",
    "SSDDAlexNetModel",
    "SSDDConfig",
    "SSDDConvNetConfig",
    "SSDDConvNetModel",
    "SSDDMobileNetV2Config",
    "SSDDMobileNetV2Model",
    "SSDDModelOutput",
    "SSDDPreTrainedModel",
    "SSDDResNetConfig",
    "SSDDResNetModel",
    "SSDDVGGConfig",
    "SSDDVGGModel",
    "TimmBackbone",
    "create_backbone",
    "list_backbones",
    "load_torchvision_resnet_state_dict",
    "register_backbone",
]
