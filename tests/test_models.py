"""hf_ssdd.models.hub (configs and transformers models), Auto registration, remote code, checkpoint conversion."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel

import hf_ssdd.models.hub as hub_package
from hf_ssdd.models import (
    SSDDConvNetConfig,
    SSDDConvNetModel,
    SSDDResNetConfig,
    SSDDResNetModel,
    SSDDVGGConfig,
    create_backbone,
    load_torchvision_resnet_state_dict,
)

HUB_DIR = Path(hub_package.__file__).parent
HUB_FILES = ("configuration_ssdd.py", "modeling_ssdd.py")
# one small model per family: (registry name, create_backbone overrides, input size)
FAMILIES = {
    "convnet": ("convnet", dict(head_dim=16), 32),
    "resnet": ("resnet10_krrst", dict(head_dim=4, image_size=32), 32),
    "vgg": ("vgg11_krrst", dict(image_size=32), 32),
    "alexnet": ("alexnet_krrst", dict(image_size=16), 16),
    "mobilenetv2": ("mobilenetv2_krrst", dict(head_dim=3, image_size=32), 32),
}


def _randomize(model: nn.Module) -> nn.Module:
    """Give every parameter and buffer a non-initial value (so a re-initialization would show)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                values = torch.rand(tensor.shape, generator=generator) + 0.5
                tensor.copy_(values if name.endswith("running_var") else values - 1.0)
            else:
                tensor.fill_(7)
    return model.eval()


def _default_bound(layer: nn.Module) -> float:
    """PyTorch's default init bound (kaiming_uniform_ with a=sqrt(5)) = 1 / sqrt(fan_in)."""
    return 1.0 / math.sqrt(layer.weight[0].numel())


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each family saved with randomized weights, plus its inputs and expected outputs."""
    root = tmp_path_factory.mktemp("saved")
    torch.manual_seed(0)
    models, io = {}, {}
    for family, (name, overrides, size) in FAMILIES.items():
        model = _randomize(create_backbone(name, **overrides))
        model.save_pretrained(root / family)
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            out = model(x)
        io[f"{family}.x"], io[f"{family}.features"] = x, out.pooler_output
        if out.logits is not None:
            io[f"{family}.logits"] = out.logits
        models[family] = model
    save_file(io, root / "io.safetensors")
    return root, models, io


def test_save_pretrained_writes_auto_map_and_identical_hub_files(saved):
    root, models, _ = saved
    for family, model in models.items():
        folder = root / family
        config = json.loads((folder / "config.json").read_text())
        name = type(model).__name__
        assert config["auto_map"] == {
            "AutoConfig": f"configuration_ssdd.{name.replace('Model', 'Config')}",
            "AutoModel": f"modeling_ssdd.{name}",
        }
        assert config["model_type"] == model.config.model_type
        for file in HUB_FILES:
            assert (folder / file).read_bytes() == (HUB_DIR / file).read_bytes()


def test_from_pretrained_restores_weights_bit_exactly(saved):
    root, models, io = saved
    for family, model in models.items():
        loaded = AutoModel.from_pretrained(root / family).eval()
        assert type(loaded) is type(model)
        assert {**loaded.config.to_dict(), "_name_or_path": ""} == model.config.to_dict()
        expected, actual = model.state_dict(), loaded.state_dict()
        assert expected.keys() == actual.keys()
        for key in expected:
            assert torch.equal(expected[key], actual[key]), (family, key)
        with torch.no_grad():
            out = loaded(io[f"{family}.x"])
        assert torch.equal(out.pooler_output, io[f"{family}.features"])


def test_from_pretrained_initializes_a_new_head_like_pytorch(saved):
    root, models, _ = saved
    model = AutoModel.from_pretrained(root / "convnet", head_dim=5, ignore_mismatched_sizes=True)
    assert model.head.weight.shape == (5, 2048)
    bound = _default_bound(model.head)
    assert 0 < model.head.weight.abs().max() <= bound and model.head.bias.abs().max() <= bound
    assert torch.equal(model.blocks[0].conv.weight, models["convnet"].blocks[0].conv.weight)


_REMOTE_SCRIPT = """
import json, sys
sys.modules["hf_ssdd"] = None  # the remote code must work even where hf_ssdd is installed
import torch
from safetensors.torch import load_file
from transformers import AutoModel
root, families = sys.argv[1], sys.argv[2].split(",")
io, result = load_file(f"{root}/io.safetensors"), {}
try:
    import hf_ssdd
    result["hf_ssdd_importable"] = True
except ImportError:
    result["hf_ssdd_importable"] = False
for family in families:
    model = AutoModel.from_pretrained(f"{root}/{family}", trust_remote_code=True).eval()
    with torch.no_grad():
        out = model(io[f"{family}.x"])
    same = torch.equal(out.pooler_output, io[f"{family}.features"])
    if out.logits is not None:
        same = same and torch.equal(out.logits, io[f"{family}.logits"])
    result[family] = [type(model).__module__, same]
try:
    AutoModel.from_pretrained(f"{root}/{families[0]}")
    result["refused"] = ""
except ValueError as error:
    result["refused"] = str(error)
with open(f"{root}/remote.json", "w") as f:
    json.dump(result, f)
"""


def test_remote_code_loads_without_the_library(saved, tmp_path):
    root, models, _ = saved
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    subprocess.run(
        [sys.executable, "-c", _REMOTE_SCRIPT, str(root), ",".join(models)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=True,
        timeout=120,
    )
    result = json.loads((root / "remote.json").read_text())
    assert result.pop("hf_ssdd_importable") is False
    assert "trust_remote_code" in result.pop("refused")
    for family, (module, same) in result.items():
        assert module.startswith("transformers_modules.") and module.endswith(".modeling_ssdd"), family
        assert same, family


def test_auto_config_knows_every_model_type():
    for model_type in ("ssdd_convnet", "ssdd_resnet", "ssdd_vgg", "ssdd_alexnet", "ssdd_mobilenetv2"):
        config = AutoConfig.for_model(model_type)
        assert AutoModel.from_config(config).config.model_type == model_type


def test_forward_outputs_and_return_tuple():
    model = SSDDConvNetModel(SSDDConvNetConfig(channels=[8, 16], head_dim=3, image_size=16)).eval()
    x = torch.randn(2, 3, 16, 16)
    out = model(x)
    assert out.last_hidden_state.shape == (2, 16, 4, 4)
    assert torch.equal(out.pooler_output, out.last_hidden_state.flatten(1))
    assert torch.equal(out.pooler_output, model.forward_features(x))
    assert out.logits.shape == (2, 3)
    feature_map, features, logits = model(x, return_dict=False)
    assert torch.equal(logits, out.logits)
    model.reset_head(0)
    assert model(x).logits is None and model(x, return_dict=False)[-1].shape == (2, 256)


def test_convnet_norms_and_poolings():
    for norm, layer in (("instancenorm", nn.GroupNorm), ("batchnorm", nn.BatchNorm2d), ("none", nn.Identity)):
        model = SSDDConvNetModel(SSDDConvNetConfig(channels=[4], norm=norm, image_size=8))
        assert type(model.blocks[0].norm) is layer
    norm = SSDDConvNetModel(SSDDConvNetConfig(channels=[4], image_size=8)).blocks[0].norm
    assert norm.num_groups == norm.num_channels == 4 and norm.affine
    model = SSDDConvNetModel(SSDDConvNetConfig(channels=[4, 4], pooling="none", image_size=8))
    assert model.num_features == 4 * 8 * 8
    model = SSDDConvNetModel(SSDDConvNetConfig(channels=[4, 4], pooling="maxpool", image_size=8))
    assert isinstance(model.blocks[1].pool, nn.MaxPool2d) and model.num_features == 4 * 2 * 2


def test_default_init_matches_pytorch_layers():
    """transformers' default _init_weights (normal, std 0.02) must not replace PyTorch's default init."""
    torch.manual_seed(0)
    model = create_backbone("convnet", head_dim=512)
    for layer in (model.head, model.blocks[1].conv):
        bound = _default_bound(layer)
        assert 0.98 * bound < layer.weight.abs().max() <= bound
        assert layer.bias.abs().max() <= bound and layer.bias.abs().max() > 0.5 * bound
        assert math.isclose(layer.weight.std().item(), bound / math.sqrt(3), rel_tol=0.02)
    norm = model.blocks[0].norm
    assert torch.equal(norm.weight, torch.ones(128)) and torch.equal(norm.bias, torch.zeros(128))
    for name in ("vgg11_krrst", "alexnet_krrst", "mobilenetv2_krrst"):
        model = create_backbone(name, head_dim=8, image_size=32)
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)] + [model.head]
        assert all(layer.weight.abs().max() <= _default_bound(layer) for layer in convs), name


def test_resnet_init_schemes():
    torch.manual_seed(0)
    krrst = create_backbone("resnet18_krrst", head_dim=16)
    conv = krrst.layer3[1].conv1
    fan_out = conv.weight.shape[0] * conv.weight[0, 0].numel()
    assert math.isclose(conv.weight.std().item(), math.sqrt(2.0 / fan_out), rel_tol=0.03)
    assert krrst.conv1.weight.abs().max() <= _default_bound(
        krrst.conv1
    )  # stem swapped in after the init loop
    assert krrst.head.weight.abs().max() <= _default_bound(krrst.head)
    blocks = [block for layer in (krrst.layer1, krrst.layer2, krrst.layer3, krrst.layer4) for block in layer]
    assert all(torch.equal(b.bn2.weight, torch.zeros_like(b.bn2.weight)) for b in blocks)
    assert all(torch.equal(b.bn1.weight, torch.ones_like(b.bn1.weight)) for b in blocks)
    assert torch.equal(krrst.layer2[0].downsample[1].weight, torch.ones(128))

    teacher = create_backbone("resnet18_bt_teacher")
    assert torch.equal(teacher.layer1[0].bn2.weight, torch.ones(64))
    full = SSDDResNetModel(SSDDResNetConfig(init_scheme="torchvision"))
    assert math.isclose(full.conv1.weight.std().item(), math.sqrt(2.0 / (64 * 9)), rel_tol=0.1)
    mkdt = create_backbone("resnet18_cifar")
    convs = [m for m in mkdt.modules() if isinstance(m, nn.Conv2d)]
    assert all(0.9 * _default_bound(c) < c.weight.abs().max() <= _default_bound(c) for c in convs)


def test_resnet_adaptive_pool_and_stem_padding():
    model = create_backbone("resnet18_krrst").eval()
    assert model.conv1.padding == (2, 2) and model.conv1.stride == (1, 1)
    assert model(torch.randn(1, 3, 32, 32)).last_hidden_state.shape == (1, 512, 5, 5)
    out = model(torch.randn(1, 3, 64, 64))  # MKDT defect B6: a fixed 4x4 pool breaks at 64 px
    assert out.last_hidden_state.shape == (1, 512, 9, 9) and out.pooler_output.shape == (1, 512)
    assert create_backbone("resnet10_cifar").conv1.padding == (1, 1)
    gn = SSDDResNetModel(SSDDResNetConfig(layers=[1, 1, 1, 1], norm="instancenorm"))
    assert isinstance(gn.layer2[0].downsample[1], nn.GroupNorm)


def _torchvision_teacher(layers: list[int], num_classes: int | None) -> nn.Module:
    """KRR-ST ``train.py`` teacher: torchvision ResNet, 3x3/s1/p2 stem, no max-pool, fc Identity (or a classifier)."""
    model = torchvision.models.resnet.ResNet(
        torchvision.models.resnet.BasicBlock, layers, num_classes=num_classes or 10
    )
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=2, bias=False)
    model.maxpool = nn.Identity()
    if num_classes is None:
        model.fc = nn.Identity()
    return model


@pytest.mark.parametrize(
    "layers, name", [([2, 2, 2, 2], "resnet18_bt_teacher"), ([1, 1, 1, 1], "resnet10_krrst")]
)
def test_torchvision_resnet_state_dict_gives_identical_outputs(layers, name):
    torch.manual_seed(0)
    reference = _torchvision_teacher(layers, None)
    with torch.no_grad():
        reference.train()(torch.randn(8, 3, 32, 32))  # non-trivial BatchNorm statistics
    reference.eval()
    model = create_backbone(name, head_dim=6)
    head = model.head.weight.clone()
    assert load_torchvision_resnet_state_dict(model, reference.state_dict()) is model
    assert sum(p.numel() for p in model.parameters()) - sum(
        p.numel() for p in model.head.parameters()
    ) == sum(p.numel() for p in reference.parameters())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval().forward_features(x), reference(x))
    assert torch.equal(model.head.weight, head)
    with_fc = _torchvision_teacher(layers, 10)  # a classifier checkpoint: fc.* is dropped
    load_torchvision_resnet_state_dict(model, with_fc.state_dict())
    assert torch.equal(model.conv1.weight, with_fc.conv1.weight)


def test_torchvision_resnet_state_dict_mismatch_raises():
    with pytest.raises(ValueError, match="missing"):
        load_torchvision_resnet_state_dict(
            create_backbone("resnet18_krrst"), _torchvision_teacher([1] * 4, None).state_dict()
        )
    state = _torchvision_teacher([2] * 4, None).state_dict()
    state["conv1.weight"] = torch.zeros(64, 3, 7, 7)
    with pytest.raises(ValueError, match="size mismatch"):
        load_torchvision_resnet_state_dict(create_backbone("resnet18_krrst"), state)


def test_bad_input_is_rejected_with_the_fix():
    model = create_backbone("convnet")
    with pytest.raises(ValueError, match=r"shape \[batch, 3, height, width\], got \(2, 1, 32, 32\)"):
        model(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="image_size=64"):
        model.forward_features(torch.randn(2, 3, 64, 64))
    with pytest.raises(ValueError, match=r"shape \[batch, 3"):
        create_backbone("resnet18_cifar")(torch.randn(3, 32, 32))


@pytest.mark.parametrize(
    "config_class, kwargs, message",
    [
        (SSDDConvNetConfig, dict(norm="layernorm"), "norm='layernorm' is not supported"),
        (SSDDConvNetConfig, dict(pooling="avg"), "pooling='avg'"),
        (SSDDConvNetConfig, dict(channels=[]), "non-empty list"),
        (SSDDConvNetConfig, dict(mean=[0.5, 0.5]), "one value per input channel"),
        (SSDDConvNetConfig, dict(std=[0.5, 0.0, 0.5]), "std must be positive"),
        (SSDDConvNetConfig, dict(head_dim=-1), "head_dim >= 0"),
        (SSDDResNetConfig, dict(layers=[2, 2, 2]), "4 entries"),
        (SSDDResNetConfig, dict(init_scheme="xavier"), "init_scheme"),
        (SSDDVGGConfig, dict(norm="none"), "norm='none'"),
    ],
)
def test_invalid_config_values_raise(config_class, kwargs, message):
    with pytest.raises(ValueError, match=message):
        config_class(**kwargs)


def test_too_small_image_size_raises():
    with pytest.raises(ValueError, match="too small"):
        SSDDConvNetModel(SSDDConvNetConfig(channels=[4] * 4, image_size=8))
    with pytest.raises(ValueError, match="too small"):
        create_backbone("vgg11_krrst", image_size=16)
    with pytest.raises(ValueError, match="too small"):
        create_backbone("alexnet_krrst", image_size=4)


def test_saved_config_records_preprocessing(tmp_path):
    mean, std = [0.5071, 0.4865, 0.4409], [0.2673, 0.2564, 0.2762]
    create_backbone("convnet", image_size=64, mean=mean, std=std).save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert (config.image_size, config.mean, config.std) == (64, mean, std)


_PIPELINE_SCRIPT = """
import json, sys
sys.modules["hf_ssdd"] = None  # preprocessing and model must work where hf_ssdd cannot be imported
import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import AutoImageProcessor, pipeline
folder, images = sys.argv[1], np.load(sys.argv[2], allow_pickle=False)
processor = AutoImageProcessor.from_pretrained(folder)  # a built-in class: no remote code
extract = pipeline("image-feature-extraction", model=folder, trust_remote_code=True)
pil = [Image.fromarray(a) for a in images]
features = np.array(extract(pil, pool=True), dtype=np.float32)
pixels = processor(pil, return_tensors="pt")["pixel_values"]
save_file({"features": torch.tensor(features).squeeze(1), "pixels": pixels}, f"{folder}/pipeline.safetensors")
with open(f"{folder}/pipeline.json", "w") as f:
    json.dump({"processor": type(processor).__name__}, f)
"""


@pytest.mark.parametrize(("name", "image_px"), [("convnet_32_64_128_bn", 32), ("resnet10_cifar", 40)])
def test_pipeline_extracts_the_features_of_load_encoder_without_the_library(tmp_path, name, image_px):
    # save_pretrained writes preprocessor_config.json: square LANCZOS resize (as hf_ssdd decodes), scale, normalize
    from PIL import Image

    from hf_ssdd.hub import load_encoder

    mean, std = [0.4914, 0.4822, 0.4465], [0.247, 0.2435, 0.2616]
    model = _randomize(create_backbone(name, image_size=32, mean=mean, std=std))
    model.save_pretrained(tmp_path / "enc")
    assert json.loads((tmp_path / "enc" / "preprocessor_config.json").read_text())["image_mean"] == mean
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, image_px, image_px, 3), generator=generator, dtype=torch.uint8).numpy()
    np.save(tmp_path / "images.npy", images)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    done = subprocess.run(
        [sys.executable, "-c", _PIPELINE_SCRIPT, str(tmp_path / "enc"), str(tmp_path / "images.npy")],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "enc" / "pipeline.json").read_text()) == {"processor": "ViTImageProcessor"}
    got = load_file(str(tmp_path / "enc" / "pipeline.safetensors"))

    # the pipeline's features are the encoder's features of the processor's pixels (it runs one image per batch)
    encoder = load_encoder(tmp_path / "enc")
    with torch.no_grad():
        torch.testing.assert_close(
            got["features"], encoder.forward_features(got["pixels"]), rtol=1e-4, atol=1e-4
        )
    # and those pixels are hf_ssdd's preprocessing: PIL LANCZOS to 32 px, [0, 1], (x - mean) / std — exactly at
    # the native size; after a resize transformers' torchvision LANCZOS may round a few pixels one grey level apart
    resized = [np.asarray(Image.fromarray(a).resize((32, 32), Image.Resampling.LANCZOS)) for a in images]
    x = torch.tensor(np.stack(resized)).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    grey_level = 1 / 255 / min(std)
    if image_px == 32:
        torch.testing.assert_close(got["pixels"], x, rtol=0, atol=1e-6)
    else:
        assert (got["pixels"] - x).abs().max() <= grey_level + 1e-6
        assert ((got["pixels"] - x).abs() > 1e-6).float().mean() < 0.02
