"""hf_ssdd.models.registry: names, overrides, the KRR-ST ConvNet pattern and the timm adapter."""

import pytest
import timm
import torch
from torch import nn

from hf_ssdd.models import (
    Backbone,
    SSDDModelOutput,
    TimmBackbone,
    create_backbone,
    list_backbones,
    register_backbone,
)
from hf_ssdd.models.registry import _REGISTRY

# name -> (default image size, num_features); the feature sizes documented in krr_st.md §3 and mkdt.md §5
EXPECTED = {
    "convnet": (32, 2048),
    "convnet_d4": (64, 2048),
    "convnet_128_256_512_bn": (32, 8192),
    "convnet_64_128_256_512_bn": (64, 8192),
    "resnet18_cifar": (32, 512),
    "resnet10_cifar": (32, 512),
    "resnet18_krrst": (32, 512),
    "resnet10_krrst": (64, 512),
    "resnet18_bt_teacher": (32, 512),
    "resnet10_bt_teacher_narrow": (32, 128),
    "vgg11_krrst": (64, 2048),
    "alexnet_krrst": (64, 12288),
    "mobilenetv2_krrst": (64, 1280),
}


def _num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _check_contract(model: nn.Module, size: int, num_features: int, head_dim: int) -> None:
    assert isinstance(model, Backbone)
    assert model.num_features == num_features
    x = torch.randn(2, 3, size, size)
    out = model.eval()(x)
    assert isinstance(out, SSDDModelOutput)
    assert out.pooler_output.shape == (2, num_features)
    assert out.last_hidden_state.shape[0] == 2
    assert out.logits.shape == (2, head_dim)
    assert torch.equal(model.forward_features(x), out.pooler_output)
    assert torch.equal(model.head(out.pooler_output), out.logits)


def test_builtin_names_are_listed_and_documented():
    assert list_backbones() == sorted(EXPECTED)
    assert list_backbones("resnet18_*") == ["resnet18_bt_teacher", "resnet18_cifar", "resnet18_krrst"]
    assert list_backbones("nothing*") == []


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_backbone_contract(name):
    size, num_features = EXPECTED[name]
    torch.manual_seed(0)
    model = create_backbone(name, head_dim=5)
    assert model.config.image_size == size and model.config.head_dim == 5
    _check_contract(model, size, num_features, 5)
    old_head = model.head
    model.reset_head(7)
    assert model.head is not old_head and model.config.head_dim == 7
    assert model(torch.randn(1, 3, size, size)).logits.shape == (1, 7)
    model.reset_head(0)
    assert isinstance(model.head, nn.Identity) and model(torch.randn(1, 3, size, size)).logits is None


@pytest.mark.parametrize(
    "name, head_dim, expected",
    [
        ("convnet", 512, 1_348_608),  # MKDT ConvNet (mkdt.md §5.1)
        ("convnet_d4", 512, 1_496_448),  # MKDT ConvNetD4
        ("convnet_128_256_512_bn", 0, 1_480_704),  # KRR-ST ConvNet-BN trunk, ≈1.48M (krr_st.md §3.1)
        ("convnet_64_128_256_512_bn", 0, 1_552_896),  # ≈1.55M
        ("resnet18_krrst", 0, 11_168_832),  # torchvision resnet18 with a 3x3 stem and no fc
    ],
)
def test_parameter_counts_match_the_specs(name, head_dim, expected):
    assert _num_params(create_backbone(name, head_dim=head_dim)) == expected


def test_overrides_change_the_config_and_feature_size():
    mean, std = [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]
    model = create_backbone("convnet", head_dim=512, image_size=64, mean=mean, std=std)
    assert model.num_features == 8192  # mkdt.md §5.1: ConvNet-3 fed 64x64
    assert (model.config.mean, model.config.std, model.head.in_features) == (mean, std, 8192)
    assert model(torch.randn(1, 3, 64, 64)).logits.shape == (1, 512)
    assert create_backbone("vgg11_krrst", image_size=32).num_features == 512
    assert create_backbone("alexnet_krrst", image_size=32).num_features == 192 * 4 * 4
    model = create_backbone("convnet", channels=[16, 32], norm="batchnorm", pooling="maxpool")
    assert model.num_features == 32 * 8 * 8 and isinstance(model.blocks[0].norm, nn.BatchNorm2d)


def test_builtin_configs_follow_the_references():
    mkdt = create_backbone("convnet").config
    assert (mkdt.channels, mkdt.norm, mkdt.pooling) == ([128] * 3, "instancenorm", "avgpool")
    krrst = create_backbone("resnet10_krrst").config
    assert (krrst.layers, krrst.stem_padding, krrst.zero_init_residual) == ([1] * 4, 2, True)
    teacher = create_backbone("resnet18_bt_teacher").config
    assert (teacher.stem_padding, teacher.zero_init_residual, teacher.init_scheme) == (
        2,
        False,
        "torchvision_default_stem",
    )
    assert create_backbone("resnet18_cifar").config.stem_padding == 1
    assert [b[0] for b in create_backbone("mobilenetv2_krrst").config.blocks] == [1, 2, 2, 2, 2, 2, 2]


@pytest.mark.parametrize(
    "name, channels, norm, num_features",
    [
        ("convnet_32_64_bn", [32, 64], "batchnorm", 64 * 8 * 8),
        ("convnet_16_in", [16], "instancenorm", 16 * 16 * 16),
        ("convnet_8_8_8_none", [8, 8, 8], "none", 8 * 4 * 4),
    ],
)
def test_dynamic_convnet_names(name, channels, norm, num_features):
    model = create_backbone(name, head_dim=2)
    assert (model.config.channels, model.config.norm, model.num_features) == (channels, norm, num_features)
    _check_contract(model, 32, num_features, 2)


def test_unknown_names_and_options_raise():
    with pytest.raises(ValueError, match=r"unknown backbone 'convnett'; did you mean \['convnet'"):
        create_backbone("convnett")
    with pytest.raises(ValueError, match="list_backbones"):
        create_backbone("transformer_xl")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['widht'\]"):
        create_backbone("convnet", widht=64)
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("convnet")
    with pytest.raises(ValueError, match="reserved"):
        register_backbone("timm:mine")


def test_register_backbone_adds_a_factory():
    @register_backbone("tiny_convnet_test")
    def tiny(**overrides):
        return create_backbone("convnet_8_bn", **overrides)

    try:
        assert "tiny_convnet_test" in list_backbones()
        model = create_backbone("tiny_convnet_test", head_dim=3, image_size=16)
        _check_contract(model, 16, 8 * 8 * 8, 3)
    finally:
        del _REGISTRY["tiny_convnet_test"]


def test_timm_backbone_offline():
    torch.manual_seed(0)
    model = create_backbone("timm:resnet18", head_dim=8)
    assert isinstance(model, TimmBackbone)
    _check_contract(model, 32, 512, 8)
    assert model(torch.randn(1, 3, 32, 32)).last_hidden_state.shape == (1, 512, 1, 1)
    model.reset_head(0)
    assert model(torch.randn(1, 3, 32, 32)).logits is None
    with pytest.raises(ValueError, match=r"shape \[batch, 3, height, width\]"):
        model(torch.randn(1, 4, 32, 32))


def test_timm_image_size_and_normalization():
    vit = create_backbone("timm:vit_tiny_patch16_224", image_size=32, mean=[0.5] * 3, std=[0.25] * 3)
    assert vit.model.patch_embed.img_size == (32, 32)
    assert vit.model.pretrained_cfg["mean"] == (0.5,) * 3 and vit.model.pretrained_cfg["std"] == (0.25,) * 3
    assert vit.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, vit.num_features)
    assert create_backbone("timm:resnet18", image_size=64).num_features == 512  # img_size not passed to CNNs


def test_timm_local_dir_loads_pretrained_weights(tmp_path):
    source = timm.create_model("resnet18", pretrained=False, num_classes=0)
    timm.models.save_for_hf(source, tmp_path, safe_serialization=True)
    model = create_backbone(f"timm:local-dir:{tmp_path}")
    assert torch.equal(model.model.conv1.weight, source.conv1.weight)
    assert not torch.equal(create_backbone("timm:resnet18").model.conv1.weight, source.conv1.weight)


def test_list_timm_models():
    assert "timm:resnet18" in list_backbones("timm:resnet1*")
