"""The teacher shipped inside the package: found by name, loadable three ways, with a card that tells its story."""

import pytest
import torch
import yaml

from hf_ssdd.assets import DEFAULT_TEACHER, embedded_names, embedded_path
from hf_ssdd.models import create_backbone
from hf_ssdd.teachers import Teacher, TeacherError


def _card(folder):
    text = (folder / "README.md").read_text(encoding="utf-8")
    _, front, body = text.split("---", 2)
    return yaml.safe_load(front), body


def test_the_default_teacher_ships_with_the_package():
    assert DEFAULT_TEACHER.removeprefix("embedded:") in embedded_names()
    folder = embedded_path(DEFAULT_TEACHER)
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size < 5_000_000, f"the embedded teacher should stay a few MB, it is {size} bytes"


def test_embedded_teacher_loads_through_teacher_automodel_and_the_registry():
    from transformers import AutoModel

    teacher = Teacher.from_pretrained(DEFAULT_TEACHER)
    assert teacher.kind == "hf_ssdd" and teacher.feature_dim == 128
    assert teacher.preprocessing.image_size == (32, 32)
    folder = embedded_path(DEFAULT_TEACHER)
    remote = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ours = teacher.model.eval().forward_features(x)
        theirs = remote(x).pooler_output
    assert torch.allclose(ours, theirs, atol=1e-5)
    # the same network as the registry name the card gives (what the "No pre-training" row is built from)
    reference = create_backbone("resnet10_bt_teacher_narrow")
    assert {k: v.shape for k, v in reference.state_dict().items()} == {
        k: v.shape for k, v in teacher.model.state_dict().items()
    }


def test_embedded_teacher_card_states_command_data_and_knn():
    meta, body = _card(embedded_path(DEFAULT_TEACHER))
    assert meta["datasets"] == ["uoft-cs/cifar10"] and "teacher" in meta["tags"]
    (entry,) = meta["model-index"]
    knn = [m for r in entry["results"] for m in r["metrics"] if m["args"]["protocol"] == "knn"]
    assert knn and 0 < knn[0]["value"] <= 100
    assert "hf-ssdd pretrain-teacher --config teacher_cpu" in body
    assert "CIFAR-10 train split" in body and "kNN top-1" in body


def test_unknown_embedded_name_is_one_clear_error():
    with pytest.raises(TeacherError, match="no embedded model 'nope'.*shipped: teacher-cpu-c10"):
        Teacher.from_pretrained("embedded:nope")
