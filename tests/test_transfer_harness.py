import json
import logging
import math

import pytest
import torch
from conftest import data_path
from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage

from hf_ssdd import cli
from hf_ssdd.data import load_image_source, normalization
from hf_ssdd.distill import DistilledSet
from hf_ssdd.models import create_backbone
from hf_ssdd.pretrain import pretrain, resolve_settings, save_encoder
from hf_ssdd.transfer import (
    NO_PRETRAINING,
    EncoderSpec,
    FinetuneSettings,
    TransferResults,
    TransferSettings,
    at_resolution,
    evaluate_transfer,
    load_target,
    validate_results,
)
from hf_ssdd.transfer.encoders import prepare_encoders

ARCH = "convnet_16_16_in"  # a small ConvNet keeps the CPU runs short


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def distilled() -> DistilledSet:
    """50 random real CIFAR-10 images with random 16-d targets."""
    data_path("cifar10")
    source = load_image_source("cifar10", "train", max_examples=1000)
    pick = torch.randperm(len(source), generator=torch.Generator().manual_seed(0))[:50]
    targets = torch.randn(50, 16, generator=torch.Generator().manual_seed(1))
    meta = {"mean": list(source.mean), "std": list(source.std), "method": "random-real"}
    return DistilledSet(source.normalized(pick), targets, meta=meta)


def test_end_to_end_on_real_cifar10(distilled, tmp_path):
    settings = TransferSettings(
        finetune=FinetuneSettings(steps=3, batch_size=64),
        pretrain={"epochs": 2},
        max_train_examples=300,
        max_test_examples=200,
    )
    results = evaluate_transfer(
        {"KRR-ST": distilled},
        ["cifar10"],
        ["linear_probe", "finetune", "knn"],
        [0.1, 1.0],
        seeds=[0, 1],
        architecture=ARCH,
        settings=settings,
        progress_bar=False,
    )
    assert len(results.rows) == 2 * 3 * 2
    assert {row.encoder for row in results.rows} == {NO_PRETRAINING, "KRR-ST"}
    for row in results.rows:
        assert row.seeds == [0, 1] and len(row.accuracies) == 2
        assert all(0 <= a <= 100 for a in row.accuracies)
        assert row.mean == pytest.approx(sum(row.accuracies) / 2)
        assert row.std == pytest.approx(abs(row.accuracies[0] - row.accuracies[1]) / 2)
        assert (row.architecture, row.image_size) == (ARCH, 32)
    probe = [r for r in results.rows if r.protocol == "linear_probe" and r.label_fraction == 1.0]
    assert all(r.mean > 15 for r in probe)  # well above chance (10 %) even untrained
    meta = results.metadata
    assert meta["device"] == "cpu" and meta["settings"]["finetune_steps"] == {"cifar10": 3}
    assert meta["encoders"][1]["pretraining"]["epochs"] == 2
    paths = results.save(tmp_path)
    validate_results(json.loads(paths["json"].read_text()))
    assert "| No pre-training | convnet_16_16_in | 32 |" in paths["markdown"].read_text()


def test_distilled_sets_are_pre_trained_anew_for_every_seed(distilled):
    (enc,) = [e for e in prepare_encoders({"d": distilled}, ARCH, None, {"epochs": 1}) if e.name == "d"]
    device = torch.device("cpu")
    first, again, other = (enc.build(seed, device, False).state_dict() for seed in (0, 0, 1))
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)
    assert not any(k.startswith("head.") for k in first)


def test_saved_folders_and_modules_are_encoders(distilled, tmp_path):
    model = pretrain(distilled, ARCH, resolve_settings(distilled, epochs=1), progress_bar=False)
    folder = save_encoder(model, tmp_path / "encoder")
    distilled.save(tmp_path / "distilled")
    prepared = prepare_encoders(
        {"saved": str(folder), "module": model, "set": tmp_path / "distilled"}, ARCH, None, {"epochs": 1}
    )
    assert [(e.name, e.kind, e.image_size) for e in prepared] == [
        (NO_PRETRAINING, "scratch", 32),
        ("saved", "encoder", 32),
        ("module", "encoder", 32),
        ("set", "distilled_set", 32),
    ]
    saved = prepared[1].build(0, torch.device("cpu"))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in saved.state_dict().items())


def test_encoder_of_another_architecture_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="architecture 'convnet_16_16_in' builds"):
        prepare_encoders({"resnet": create_backbone("resnet10_cifar")}, ARCH)
    with pytest.raises(ValueError, match="reserved"):
        prepare_encoders({NO_PRETRAINING: create_backbone(ARCH)}, ARCH)


def test_smaller_encoder_gets_resized_target_images(caplog):
    data_path("cifar10")
    encoder = create_backbone("convnet_16_in", image_size=16)
    settings = TransferSettings(max_train_examples=100, max_test_examples=50)
    with caplog.at_level(logging.INFO, logger="hf_ssdd.transfer"):
        results = evaluate_transfer(
            {"small": EncoderSpec(encoder, architecture="convnet_16_in")},
            ["cifar10"],
            ["knn"],
            seeds=[0],
            settings=settings,
            progress_bar=False,
        )
    assert (
        "resizing cifar10 images (32 px) to 16 px, the resolution of encoder(s) No pre-training, small"
        in caplog.text
    )
    assert {(row.encoder, row.image_size) for row in results.rows} == {(NO_PRETRAINING, 16), ("small", 16)}
    data = load_target("cifar10", 16, settings, torch.device("cpu"))
    assert data.train.images.shape[1:] == (3, 16, 16) and data.test.images.shape[1:] == (3, 16, 16)


def test_image_size_override_keeps_the_trunk_weights():
    model = create_backbone(ARCH, image_size=32)
    rebuilt = at_resolution(model, 64)
    assert rebuilt.config.image_size == 64 and rebuilt.num_features == 4 * model.num_features
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in rebuilt.state_dict().items())
    assert at_resolution(model, 32) is model


def test_target_without_label_column_names_its_columns(tmp_path):
    folder = tmp_path / "unlabelled"
    features = Features({"image": Image(), "note": Value("string")})
    for split in ("train", "test"):
        images = [PILImage.new("RGB", (8, 8))] * 2
        dataset = Dataset.from_dict({"image": images, "note": ["a", "b"]}, features=features)
        dataset.to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
    with pytest.raises(
        ValueError, match=r"unlabelled.*has no label column; its columns are \['image', 'note'\]"
    ):
        load_target(str(folder), 8, TransferSettings(), torch.device("cpu"))


def test_bad_requests_fail_before_any_work():
    with pytest.raises(ValueError, match="unknown or no protocol"):
        evaluate_transfer({}, ["cifar10"], ["linear-probe"])
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        evaluate_transfer({}, ["cifar10"], ["knn"], [0.0])
    with pytest.raises(ValueError, match=r"given for protocols \['knn'\] but \['finetune', 'knn'\]"):
        evaluate_transfer({}, ["cifar10"], ["knn", "finetune"], {"knn": [0.1]})
    with pytest.raises(
        ValueError, match="'fidelity' protocol compares each encoder with a teacher.*teacher="
    ):
        evaluate_transfer({}, ["cifar10"], ["knn", "fidelity"])
    with pytest.raises(ValueError, match=r"\['fidelity'\] take none"):
        evaluate_transfer({}, ["cifar10"], ["fidelity"], {"fidelity": [1.0]}, teacher="unused")


def test_each_protocol_can_have_its_own_label_fractions(distilled, tmp_path):
    """The papers' pairing: a few-label linear probe next to fine-tuning on all labels, in one call."""
    settings = TransferSettings(
        finetune=FinetuneSettings(steps=2, batch_size=32),
        pretrain={"epochs": 1},
        max_train_examples=200,
        max_test_examples=50,
    )
    fractions = {"linear_probe": [0.1, 0.5], "finetune": [1.0]}
    results = evaluate_transfer(
        {"d": distilled}, ["cifar10"], list(fractions), fractions, [0], ARCH, settings, progress_bar=False
    )
    assert sorted({(r.protocol, r.label_fraction) for r in results.rows}) == [
        ("finetune", 1.0),
        ("linear_probe", 0.1),
        ("linear_probe", 0.5),
    ]
    assert len(results.rows) == 2 * 3
    assert results.metadata["label_fractions"] == [0.1, 0.5, 1.0]
    assert results.metadata["label_fractions_by_protocol"] == fractions
    validate_results(json.loads(results.save(tmp_path)["json"].read_text()))


def test_cli_runs_a_distilled_set_folder(distilled, tmp_path):
    distilled.save(tmp_path / "krr")
    out = tmp_path / "run"
    argv = ["transfer", "--distilled_sets", f"[KRR-ST={tmp_path / 'krr'}]", "--architecture", ARCH]
    argv += ["--protocols", "[knn, finetune]", "--label_fractions", "[0.5]", "--seeds", "[3]"]
    argv += ["--finetune_label_fractions", "[1.0]", "--finetune_steps", "1", "--pretrain_epochs", "1"]
    argv += ["--max_train_examples", "100", "--max_test_examples", "50", "--output_dir", str(out)]
    assert cli.main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "config.yaml",
        "results.json",
        "results.md",
        "results.png",
    ]
    results = TransferResults.load(out / "results.json")
    assert [(r.encoder, r.protocol, r.label_fraction, r.seeds) for r in results.rows] == [
        (NO_PRETRAINING, "knn", 0.5, [3]),
        (NO_PRETRAINING, "finetune", 1.0, [3]),
        ("KRR-ST", "knn", 0.5, [3]),
        ("KRR-ST", "finetune", 1.0, [3]),
    ]


def test_targets_resolve_offline_by_catalog_name_and_hub_id(caplog):
    data_path("flowers102")
    settings = TransferSettings(max_train_examples=40, max_test_examples=20)
    with caplog.at_level(logging.INFO, logger="hf_ssdd.transfer"):
        data = load_target("Donghyun99/Oxford-Flower-102", 32, settings, torch.device("cpu"), ["enc"])
    assert "resizing Donghyun99/Oxford-Flower-102 images (not square) to 32 px" in caplog.text
    assert (data.train.split, data.test.split) == ("train", "test") and data.num_classes == 102
    assert data.train.images.shape == (40, 3, 32, 32) and data.test.images.shape == (20, 3, 32, 32)
    same = load_target("flowers102", 32, settings, torch.device("cpu"))
    assert torch.equal(same.train.images, data.train.images)
    assert same.train.mean == data.train.mean == (0.4344, 0.3030, 0.2955)  # KRR-ST Flowers constants at 32 px


def test_teacher_fidelity_from_the_cli(tmp_path):
    """An encoder identical to the teacher reproduces it (R² = CKA = 100 %); the untrained baseline does not."""
    data_path("cifar10")
    mean, std = normalization("cifar10", 32)
    arch = "convnet_8_8_8_in"  # 128 features, fewer than the 200 fit rows
    folder = save_encoder(create_backbone(arch, mean=list(mean), std=list(std)), tmp_path / "teacher")
    out = tmp_path / "run"
    argv = ["transfer", "--encoders", f"[same={folder}]", "--teacher", str(folder), "--architecture", arch]
    argv += ["--protocols", "[knn]", "--label_fractions", "[0.5]", "--knn_k", "5", "--seeds", "[0, 1]"]
    argv += ["--max_train_examples", "20", "--max_test_examples", "400", "--output_dir", str(out)]
    assert cli.main(argv) == 0
    results = TransferResults.load(out / "results.json")
    cells = {(r.encoder, r.protocol, r.label_fraction): r for r in results.rows}
    assert sorted(cells, key=str) == sorted(
        [
            (e, p, f)
            for e in (NO_PRETRAINING, "same")
            for p, f in [("knn", 0.5), ("fidelity", None), ("fidelity_cka", None)]
        ],
        key=str,
    )
    assert all(math.isfinite(a) for r in results.rows for a in r.accuracies)
    assert cells[("same", "fidelity", None)].accuracies == pytest.approx([100.0, 100.0], abs=1e-3)
    assert cells[("same", "fidelity_cka", None)].accuracies == pytest.approx([100.0, 100.0], abs=1e-3)
    assert cells[(NO_PRETRAINING, "fidelity", None)].mean < 99
    assert 0 < cells[(NO_PRETRAINING, "fidelity_cka", None)].mean < 99
    assert results.metadata["protocols"] == ["knn", "fidelity"]
    assert results.metadata["teacher"]["id"] == str(folder)
    table = (out / "results.md").read_text()
    assert "cifar10 · teacher fidelity (R²) |" in table and "Teacher fidelity: R²" in table


def test_a_run_evaluated_part_by_part_equals_the_whole(distilled):
    """Encoder-by-encoder parts (baseline once) concatenate to the cells of one run; per-set overrides apply."""
    settings = TransferSettings(pretrain={"epochs": 2}, max_train_examples=300, max_test_examples=200)
    common = dict(targets=["cifar10"], protocols=["knn"], label_fractions=[1.0], seeds=[0], architecture=ARCH)
    whole = evaluate_transfer(
        {"A": distilled, "B": EncoderSpec(distilled, pretrain={"epochs": 1})},
        settings=settings,
        progress_bar=False,
        **common,
    )
    parts = [
        evaluate_transfer({"A": distilled}, settings=settings, progress_bar=False, **common),
        evaluate_transfer(
            {"B": EncoderSpec(distilled, pretrain={"epochs": 1})},
            settings=settings,
            progress_bar=False,
            baseline=False,
            **common,
        ),
    ]
    joined = TransferResults.concat(parts)
    assert [(r.encoder, r.accuracies) for r in joined.rows] == [(r.encoder, r.accuracies) for r in whole.rows]
    assert [
        e["pretraining"]["epochs"] for e in joined.metadata["encoders"] if e["name"] != NO_PRETRAINING
    ] == [
        2,
        1,
    ]
    with pytest.raises(ValueError, match="two parts"):
        TransferResults.concat([parts[0], parts[0]])
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluate_transfer({}, settings=settings, progress_bar=False, baseline=False, **common)
