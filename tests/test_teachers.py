import json
from dataclasses import dataclass

import pytest
import torch

from hf_ssdd.teachers import Teacher, TeacherError, encode_source, feature_cache_path


@dataclass
class _Source:
    images: torch.Tensor
    fingerprint: str
    name: str = "toy"

    def __len__(self):
        return len(self.images)

    def image_batches(self, start, stop, batch_size):
        for first in range(start, stop, batch_size):
            yield self.images[first : min(first + batch_size, stop)]


def _images(n=6, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


def _manual(images, size, mean, std):
    x = images.float() / 255
    if x.shape[-1] != size:
        x = torch.nn.functional.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=x.shape[-1] > size
        )
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def test_transformers_vit_pooled_output(tmp_path):
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    model = ViTModel(
        ViTConfig(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
        )
    )
    model.save_pretrained(tmp_path)
    ViTImageProcessor(
        size={"height": 32, "width": 32}, image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.2, 0.2]
    ).save_pretrained(tmp_path)
    teacher = Teacher.from_pretrained(tmp_path)
    assert teacher.kind == "transformers" and teacher.feature_dim == 32
    assert teacher.preprocessing.image_size == (32, 32) and teacher.preprocessing.mean == (0.5, 0.4, 0.3)
    imgs = _images()
    expected = model.eval()(pixel_values=_manual(imgs, 32, [0.5, 0.4, 0.3], [0.2] * 3)).pooler_output
    torch.testing.assert_close(teacher.encode(imgs), expected)
    assert teacher.revision.startswith("sha256:")
    (tmp_path / "preprocessor_config.json").unlink()  # no recorded normalization: refused, never guessed
    with pytest.raises(TeacherError, match="records no input normalization"):
        Teacher.from_pretrained(tmp_path)


def test_transformers_dinov2_resizes_small_images(tmp_path):
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    model = Dinov2Model(
        Dinov2Config(
            image_size=64,
            patch_size=16,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            mlp_ratio=2,
        )
    )
    model.save_pretrained(tmp_path)
    BitImageProcessor(size={"shortest_edge": 72}, crop_size={"height": 64, "width": 64}).save_pretrained(
        tmp_path
    )
    teacher = Teacher.from_pretrained(tmp_path)
    assert teacher.preprocessing.image_size == (64, 64)
    imgs = _images(size=32)
    x = torch.nn.functional.interpolate(
        imgs.float() / 255, size=(64, 64), mode="bicubic", align_corners=False
    )
    mean, std = teacher.preprocessing.mean, teacher.preprocessing.std
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(teacher.encode(imgs), model.eval()(pixel_values=x).pooler_output)


def test_clip_uses_the_vision_tower(tmp_path):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    cfg = CLIPConfig(
        text_config=dict(
            hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=50
        ),
        vision_config=dict(
            hidden_size=24,
            intermediate_size=48,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=8,
    )
    torch.manual_seed(0)
    model = CLIPModel(cfg)
    model.save_pretrained(tmp_path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        tmp_path
    )
    teacher = Teacher.from_pretrained(tmp_path)
    assert teacher.feature_dim == 24
    imgs = _images()
    prep = teacher.preprocessing
    expected = model.eval().vision_model(pixel_values=_manual(imgs, 32, prep.mean, prep.std)).pooler_output
    torch.testing.assert_close(teacher.encode(imgs), expected)


def test_timm_local_folder(tmp_path):
    timm = pytest.importorskip("timm")
    from timm.models import save_for_hf

    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=0)
    save_for_hf(
        model,
        str(tmp_path),
        safe_serialization=True,
        data_config=dict(input_size=(3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
    )
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["model_args"].pop("num_classes", None)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    teacher = Teacher.from_pretrained(tmp_path)
    assert teacher.kind == "timm" and teacher.feature_dim == 512
    imgs = _images()
    torch.testing.assert_close(teacher.encode(imgs), model.eval()(_manual(imgs, 32, (0.5,) * 3, (0.25,) * 3)))
    for key in ("mean", "std"):  # no recorded normalization: refused, never ImageNet's
        cfg["pretrained_cfg"].pop(key, None)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(TeacherError, match="records no input normalization"):
        Teacher.from_pretrained(tmp_path)


def test_encode_source_is_cached(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    teacher = Teacher.from_module(model, 32, (0.5,) * 3, (0.5,) * 3, teacher_id="toy-conv")
    source = _Source(_images(40), fingerprint="abc")
    feats = encode_source(teacher, source, batch_size=16, cache_dir=tmp_path)
    assert feats.shape == (40, 4) and feats.dtype == torch.float32
    torch.testing.assert_close(feats, teacher.encode(source.images))
    path = feature_cache_path(teacher, source, tmp_path)
    assert path.is_file()
    # second call reads the cache: break the model to prove it is not run
    teacher.model = None
    again = encode_source(teacher, source, cache_dir=tmp_path)
    assert torch.equal(again, feats)


def test_cache_key_depends_on_weights_and_source(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    a = Teacher.from_module(model, 32, (0.5,) * 3, (0.5,) * 3, teacher_id="t")
    src = _Source(_images(4), fingerprint="abc")
    with torch.no_grad():
        model[0].weight.add_(1.0)
    b = Teacher.from_module(model, 32, (0.5,) * 3, (0.5,) * 3, teacher_id="t")
    assert a.revision != b.revision
    assert feature_cache_path(a, src, tmp_path) != feature_cache_path(b, src, tmp_path)
    assert feature_cache_path(a, src, tmp_path) != feature_cache_path(
        a, _Source(src.images, "other"), tmp_path
    )


def test_bad_input():
    with pytest.raises(TeacherError, match="not a local folder"):
        Teacher.from_pretrained("some-org/missing-teacher")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    teacher = Teacher.from_module(model, 32, (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(TeacherError, match="N×3×H×W"):
        teacher.encode(torch.zeros(2, 1, 32, 32, dtype=torch.uint8))


def test_hf_ssdd_teacher_folder(tmp_path):
    from hf_ssdd.models import create_backbone

    torch.manual_seed(0)
    model = create_backbone(
        "resnet18_bt_teacher", image_size=32, mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26]
    )
    model.save_pretrained(tmp_path)
    teacher = Teacher.from_pretrained(tmp_path)
    assert teacher.kind == "hf_ssdd" and teacher.feature_dim == 512
    assert teacher.preprocessing.mean == (0.49, 0.48, 0.45)
    imgs = _images()
    expected = model.eval().forward_features(_manual(imgs, 32, [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]))
    torch.testing.assert_close(teacher.encode(imgs), expected)
    assert (teacher.encode(imgs) >= 0).all()  # post-ReLU pooled features, as in KRR-ST's teacher


def test_bf16_autocast_only_when_asked_and_channels_last_on_cpu():
    """fp32 stays fp32 (channels-last: equal to the NCHW formula up to float rounding); bf16 autocasts on CPU too."""

    class Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3)
            self.seen: list[tuple[bool, bool]] = []

        def forward(self, x):
            self.seen.append(
                (torch.is_autocast_enabled("cpu"), x.is_contiguous(memory_format=torch.channels_last))
            )
            return torch.relu(self.conv(x)).mean(dim=(2, 3))

    torch.manual_seed(0)
    probe = Probe()
    teacher = Teacher.from_module(probe, 16, (0.5, 0.45, 0.4), (0.25, 0.25, 0.25)).to("cpu")
    assert probe.conv.weight.is_contiguous(memory_format=torch.channels_last)
    imgs = _images(n=4, size=16)
    x64 = _manual(imgs, 16, (0.5, 0.45, 0.4), (0.25, 0.25, 0.25)).double()
    with torch.no_grad():
        expected = torch.relu(
            torch.nn.functional.conv2d(x64, probe.conv.weight.double(), probe.conv.bias.double())
        ).mean(dim=(2, 3))
    fp32 = teacher.encode(imgs)
    teacher.precision = "bf16"
    bf16 = teacher.encode(imgs)
    assert probe.seen == [(False, True), (True, True)]
    assert fp32.dtype == bf16.dtype == torch.float32
    torch.testing.assert_close(fp32.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bf16.double(), expected, rtol=2e-2, atol=2e-2)
    assert not torch.equal(bf16, fp32)


def _sharded_worker(out_path):
    import copy

    from accelerate import Accelerator

    from hf_ssdd.data import ImageSource
    from hf_ssdd.models import create_backbone

    acc = Accelerator(cpu=True)
    torch.manual_seed(0)
    stats = dict(mean=[0.5, 0.45, 0.4], std=[0.25, 0.25, 0.25])
    model = create_backbone(
        "resnet18_bt_teacher", image_size=16, layers=[1, 1, 1, 1], widths=[8, 16, 32, 64], **stats
    )
    plain = Teacher.from_module(copy.deepcopy(model), 16, stats["mean"], stats["std"])
    sharded = Teacher.from_module(model, 16, stats["mean"], stats["std"]).shard(min_params=2000)
    local = sum(p.to_local().numel() for p in sharded.model.parameters())
    total = sum(p.numel() for p in plain.model.parameters())
    images = _images(n=13, size=16)  # 13 over 2 processes: the last shard is padded
    source = ImageSource(
        images, None, None, "toy", None, "train", "toy-fp", tuple(stats["mean"]), tuple(stats["std"]), 16
    )
    feats = encode_source(sharded, source, batch_size=4, use_cache=False, accelerator=acc, progress_bar=False)
    if acc.is_main_process:
        torch.save(
            {"sharded": feats, "plain": plain.encode(images), "local": local, "total": total}, out_path
        )


def test_sharded_teacher_matches_the_replicated_one(tmp_path):
    from process_launcher import launch

    launch(_sharded_worker, args=(str(tmp_path / "out.pt"),), num_processes=2)
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    assert out["local"] < 0.6 * out["total"]  # each process holds about half of the weights
    torch.testing.assert_close(out["sharded"], out["plain"], rtol=1e-5, atol=1e-5)


def test_import_reference_teacher(tmp_path):
    """A torchvision resnet18 checkpoint in the KRR-ST layout (p2 stem, no fc) becomes a loadable teacher folder."""
    torchvision = pytest.importorskip("torchvision")
    from hf_ssdd.cli import main

    torch.manual_seed(0)
    ref = torchvision.models.resnet18()
    ref.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 2, bias=False)
    ref.maxpool, ref.fc = torch.nn.Identity(), torch.nn.Identity()
    torch.save(ref.state_dict(), tmp_path / "barlow_twins_resnet18_cifar100.pt")
    argv = [
        "import-teacher",
        "--checkpoint",
        str(tmp_path / "barlow_twins_resnet18_cifar100.pt"),
        "--dataset",
        "cifar100",
        "--output_dir",
        str(tmp_path / "t"),
    ]
    assert main(argv) == 0
    teacher = Teacher.from_pretrained(tmp_path / "t")
    assert teacher.preprocessing.mean == (0.5071, 0.4866, 0.4409) and teacher.preprocessing.std == (
        0.2673,
        0.2564,
        0.2762,
    )
    imgs = _images(size=32)
    expected = ref.eval()(_manual(imgs, 32, teacher.preprocessing.mean, teacher.preprocessing.std))
    torch.testing.assert_close(teacher.encode(imgs), expected, rtol=1e-5, atol=1e-5)
