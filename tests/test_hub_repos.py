"""Hub publishing, layer 1 (offline, no server): the repo folders that hf_ssdd.hub builds, loaded by the real
consumers (datasets, transformers with and without remote code, timm, huggingface_hub cards), the card YAML,
bad input, the CLI, and the packaging of the card templates."""

import json
import shutil
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import timm
import tomllib
import torch
from datasets import load_dataset
from hub_testing import (
    IMAGE_SIZE,
    MEAN,
    ROOT,
    STD,
    make_encoder,
    make_results,
    make_run,
    make_set,
    run_client,
    tree_digest,
)
from huggingface_hub import DatasetCard, ModelCard
from safetensors.torch import save_file
from transformers import AutoModel

import hf_ssdd.models.hub as hub_package
from hf_ssdd.cli import _positional_to_options, main
from hf_ssdd.hub import (
    HubError,
    IncompleteRunError,
    build_model_repo,
    check_run,
    default_encoder_repo,
    load_encoder,
    push_encoder,
    transfer_rows,
)
from hf_ssdd.models import TimmBackbone

DATASET_KEYS = {"dataset_info", "configs", "license", "tags", "source_datasets", "task_categories", "hf_ssdd"}
SET_META_KEYS = {"method", "teacher", "source", "mean", "std", "config", "pretraining"}


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    """A dataset folder with evaluation rows, and custom- and timm-format model folders, built by
    hf_ssdd.hub."""
    root = tmp_path_factory.mktemp("repos")
    results = make_results(
        {"No pre-training": "scratch", "KRR-ST": "runs/x/distilled", "timm": "runs/x/timm"}
    )
    dset = make_set()
    dset.meta["evaluation"] = transfer_rows(results, names=["KRR-ST"])
    dset.meta["encoder_repos"] = ["org/c10-krrst-convnet"]
    dset.save(root / "dataset", repo_id="org/c10-krrst")
    models = {kind: make_encoder(kind) for kind in ("ssdd", "timm")}
    for kind, model in models.items():
        rows = transfer_rows(results, names=["KRR-ST" if kind == "ssdd" else "timm"])
        build_model_repo(
            model,
            root / kind,
            f"org/{kind}-enc",
            rows=rows,
            distilled_set_repo="org/c10-krrst",
            set_meta=dset.meta,
        )
    x = torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        outputs = {kind: model(x).pooler_output for kind, model in models.items()}
    save_file({"x": x}, root / "inputs.safetensors")
    return root, dset, models, x, outputs


def test_dataset_folder_loads_with_datasets_exactly(repos):
    root, dset, *_ = repos
    ds = load_dataset(str(root / "dataset"), split="train").with_format("torch")
    assert set(ds.column_names) == {"image", "pixel_values", "target"}
    batch = ds[:]
    assert torch.equal(batch["pixel_values"], dset.images) and torch.equal(batch["target"], dset.targets)
    assert ds.features["target"].length == dset.target_dim


def test_dataset_card_yaml_and_text(repos):
    root, dset, *_ = repos
    card = DatasetCard.load(root / "dataset" / "README.md")
    data = card.data.to_dict()
    assert DATASET_KEYS <= set(data)
    assert data["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}
    ]
    assert [f["name"] for f in data["dataset_info"]["features"]] == ["image", "pixel_values", "target"]
    # the Hub accepts "other" only with a name and a link: here the source dataset's terms
    assert (data["license"], data["license_name"], data["license_link"]) == (
        "other",
        "source-dataset-terms",
        "https://huggingface.co/datasets/uoft-cs/cifar10",
    )
    assert data["source_datasets"] == ["uoft-cs/cifar10"] and data["task_categories"] == [
        "image-feature-extraction"
    ]
    assert {"hf_ssdd", "dataset-distillation", "krr_st"} <= set(data["tags"])
    meta = data["hf_ssdd"]
    assert SET_META_KEYS <= set(meta) and meta["mean"] == MEAN and meta["std"] == STD
    assert {row["role"] for row in meta["evaluation"]} == {"subject", "baseline"}
    text = card.text
    for phrase in (
        'load_dataset("org/c10-krrst"',
        "(x * std + mean).clamp(0, 1)",
        "hf-ssdd pretrain",
        "**KRR-ST**",
    ):
        assert phrase in text
    assert "https://huggingface.co/org/c10-krrst-convnet" in text and "Not evaluated" not in text


def test_custom_model_folder_card_and_files(repos):
    root, *_ = repos
    folder = root / "ssdd"
    assert {p.name for p in folder.iterdir()} == {
        "README.md",
        "config.json",
        "model.safetensors",
        "configuration_ssdd.py",
        "modeling_ssdd.py",
        "preprocessor_config.json",
    }
    for name in ("configuration_ssdd.py", "modeling_ssdd.py"):
        assert (folder / name).read_bytes() == (Path(hub_package.__file__).parent / name).read_bytes()
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_ssdd.SSDDConvNetModel" and config["head_dim"] == 0
    data = ModelCard.load(folder / "README.md").data
    assert data.library_name == "transformers" and data.pipeline_tag == "image-feature-extraction"
    assert data.datasets == ["org/c10-krrst"] and data.base_model is None
    assert {"hf_ssdd", "dataset-distillation", "krr_st"} <= set(data.tags)
    results = data.eval_results
    assert [(r.metric_name, r.dataset_type, r.metric_type) for r in results] == [
        ("top-1 accuracy (%), linear probe, 100% labels", "uoft-cs/cifar10", "accuracy"),
        ("top-1 accuracy (%), fine-tune, 10% labels", "uoft-cs/cifar10", "accuracy"),
    ]
    assert [r.metric_value for r in results] == pytest.approx([45.25, 35.25])
    assert results[1].metric_args == {
        "protocol": "finetune",
        "label_fraction": 0.1,
        "std": 0.2041,
        "num_seeds": 3,
    }
    card_yaml = data.to_dict()
    assert (
        card_yaml["hf_ssdd"]["teacher"] == "org/bt-teacher"
        and card_yaml["hf_ssdd"]["format"] == "transformers"
    )


def test_timm_folder_is_clean_timm_format(repos):
    root, *_ = repos
    config = json.loads((root / "timm" / "config.json").read_text())
    assert config["architecture"] == "test_resnet" and "model_type" not in config
    assert "num_classes" not in config["model_args"] and config["num_classes"] == 0
    pretrained = config["pretrained_cfg"]
    assert not {"license", "origin_url", "paper_ids"} & set(pretrained) and pretrained["tag"] == "hf_ssdd"
    assert pretrained["input_size"] == [3, IMAGE_SIZE, IMAGE_SIZE] and pretrained["mean"] == MEAN
    data = ModelCard.load(root / "timm" / "README.md").data
    assert data.library_name == "timm" and data.eval_results[0].metric_value == pytest.approx(50.25)


def test_encoders_reload_identically_in_process(repos):
    root, _, _, x, outputs = repos
    with torch.no_grad():
        assert torch.equal(load_encoder(root / "ssdd")(x).pooler_output, outputs["ssdd"])
        assert torch.equal(load_encoder(root / "timm")(x).pooler_output, outputs["timm"])
        timm_model = timm.create_model(f"local-dir:{root / 'timm'}", pretrained=True).eval()
        assert torch.equal(timm_model(x), outputs["timm"])
        assert torch.equal(AutoModel.from_pretrained(root / "timm").eval()(x).pooler_output, outputs["timm"])
    assert isinstance(load_encoder(root / "timm"), TimmBackbone)


def test_folders_load_without_hf_ssdd(repos):
    root, dset, _, _, outputs = repos
    args = {
        "dataset": str(root / "dataset"),
        "custom": str(root / "ssdd"),
        "timm": str(root / "timm"),
        "timm_prefix": "local-dir:",
    }
    report = run_client("consume", root, args, pythonpath=None)
    from safetensors.torch import load_file

    tensors = load_file(root / "consume.safetensors")
    assert report["hf_ssdd_importable"] is False
    assert "trust_remote_code" in report["refused"]
    assert report["custom_module"].startswith("transformers_modules.")
    assert torch.equal(tensors["pixel_values"], dset.images) and torch.equal(tensors["target"], dset.targets)
    assert torch.equal(tensors["streamed_pixel_values"], dset.images)
    assert torch.equal(tensors["custom"], outputs["ssdd"])
    assert torch.equal(tensors["timm"], outputs["timm"]) and torch.equal(
        tensors["timm_auto"], outputs["timm"]
    )
    assert report["custom_card"]["pipeline_tag"] == "image-feature-extraction"


def test_cards_without_results_say_not_evaluated(tmp_path):
    make_set().save(tmp_path / "dataset", repo_id="org/x")
    build_model_repo(make_encoder("ssdd"), tmp_path / "model", "org/x-convnet")
    assert "Not evaluated" in DatasetCard.load(tmp_path / "dataset" / "README.md").text
    card = ModelCard.load(tmp_path / "model" / "README.md")
    assert "Not evaluated" in card.text and "model-index" not in card.content
    assert card.data.eval_results is None and card.data.datasets is None


def test_teacher_folder_publishes_as_teacher(tmp_path):
    teacher = make_encoder("ssdd")
    teacher.save_pretrained(tmp_path / "teacher")
    build_model_repo(tmp_path / "teacher", tmp_path / "repo", "org/bt-teacher", role="teacher")
    card = ModelCard.load(tmp_path / "repo" / "README.md")
    assert "teacher" in card.data.tags and "**teacher**" in card.text
    x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        assert torch.equal(load_encoder(tmp_path / "repo")(x).pooler_output, teacher(x).pooler_output)


def test_teacher_fidelity_rows_in_the_model_index(tmp_path):
    results = make_results({"No pre-training": "scratch", "KRR-ST": "runs/x/distilled"})
    for row in list(results.rows):
        results.rows += [
            replace(row, protocol=protocol, label_fraction=None)
            for protocol in ("fidelity", "fidelity_cka")
            if row.protocol == "linear_probe"
        ]
    build_model_repo(
        make_encoder("ssdd"), tmp_path / "repo", "org/x", rows=transfer_rows(results, names=["KRR-ST"])
    )
    card = ModelCard.load(tmp_path / "repo" / "README.md")
    fidelity = [r for r in card.data.eval_results if r.metric_type != "accuracy"]
    assert [(r.task_type, r.metric_type, r.metric_name) for r in fidelity] == [
        ("image-feature-extraction", "r_squared", "teacher fidelity, R² (%)"),
        ("image-feature-extraction", "cka", "teacher fidelity, linear CKA (%)"),
    ]
    assert fidelity[0].metric_args == {"protocol": "fidelity", "std": 0.2041, "num_seeds": 3}
    assert card.data.metrics == ["accuracy", "r_squared", "cka"]
    assert "| top-1 accuracy / fidelity (%) |" in card.text and "| teacher fidelity (CKA) |" in card.text


def test_head_is_dropped_without_touching_the_model(tmp_path):
    model = make_encoder("timm")
    model.reset_head(5)
    with pytest.raises(ValueError, match="reset_head"):
        model.save_pretrained(tmp_path / "direct")
    build_model_repo(model, tmp_path / "repo", "org/x")
    assert model.head.out_features == 5
    assert load_encoder(tmp_path / "repo").num_features == model.num_features


def test_pushing_offline_fails_cleanly(tmp_path):
    """This process runs with HF_HUB_OFFLINE=1 (conftest): every push must fail with HubError, touching
    nothing."""
    dset = make_set()
    with pytest.raises(HubError, match="Nothing local was changed; run the same command again"):
        dset.push_to_hub("org/x")
    run = make_run(tmp_path / "run", evaluated=None)
    before = tree_digest(run)
    with pytest.raises(SystemExit, match="hf-ssdd push: .*OfflineModeIsEnabled"):
        main(["push", str(run), "org/x"])
    assert tree_digest(run) == before


def test_push_encoder_needs_a_row_of_this_encoder(tmp_path):
    results = make_results({"No pre-training": "scratch", "other": "elsewhere"})
    with pytest.raises(ValueError, match="results_encoder"):
        push_encoder(make_encoder("ssdd"), "org/x", results=results)


def test_transfer_rows_pick_the_subject_and_baselines(tmp_path):
    run = make_run(tmp_path / "run")
    results = make_results(
        {"No pre-training": "s", "Random subset": "r", "KRR-ST": str(run / "distilled"), "o": "o"}
    )
    rows = transfer_rows(results, [run / "distilled"])
    assert {(r["encoder"], r["role"]) for r in rows} == {
        ("No pre-training", "baseline"),
        ("Random subset", "baseline"),
        ("KRR-ST", "subject"),
    }
    assert default_encoder_repo("org/c10-krrst", "ssdd_convnet") == "org/c10-krrst-convnet"


def test_unfinished_runs_are_refused(tmp_path):
    run = make_run(tmp_path / "run")
    assert set(check_run(run)) == {"distilled", "encoder", "results"}
    (run / "transfer" / "results.json").write_text('{"schema_version": 1, "rows": []}')
    with pytest.raises(IncompleteRunError, match="not a valid transfer results file.*metadata"):
        check_run(run)
    (run / "transfer" / "results.json").unlink()
    with pytest.raises(IncompleteRunError, match="transfer/results.json|results.json"):
        check_run(run)
    shutil.rmtree(run / "transfer")
    (run / "encoder" / "model.safetensors").unlink()
    with pytest.raises(IncompleteRunError, match=r"encoder is incomplete: it lacks \*.safetensors"):
        check_run(run)
    shutil.rmtree(run / "encoder")
    shutil.rmtree(run / "distilled")
    (run / "checkpoints").mkdir()
    before = tree_digest(run)
    with pytest.raises(SystemExit, match="distilled/ .* is missing .*resume"):
        main(["push", str(run), "org/x"])
    assert tree_digest(run) == before


def test_cli_takes_positional_run_and_repo(capsys):
    argv = ["runs/x", "org/x", "--private", "--encoder_repo", "org/y"]
    assert _positional_to_options(("run_dir", "repo_id"), argv) == [
        "--run_dir",
        "runs/x",
        "--repo_id",
        "org/x",
        "--private",
        "--encoder_repo",
        "org/y",
    ]
    assert main(["push", "--help"]) == 0
    assert "--overwrite_schema" in capsys.readouterr().out


def test_packaging_lists_every_package_and_ships_the_templates(tmp_path, repos):
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assets = ROOT / "hf_ssdd" / "assets"  # shipped model folders hold modeling code as data, not packages
    modules = [
        p.relative_to(ROOT).parent
        for p in (ROOT / "hf_ssdd").rglob("*.py")
        if "__pycache__" not in p.parts and (p.parent == assets or assets not in p.parents)
    ]
    on_disk = {
        ".".join(folder.parts) for module in modules for folder in (module, *module.parents) if folder.parts
    }
    assert set(config["packages"]) == on_disk | {"hf_ssdd.model_cards"}
    source = tmp_path / "src"
    for name in ("hf_ssdd", "model_cards"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "w")],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next((tmp_path / "w").glob("*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        files = archive.namelist()
        metadata = archive.read(next(n for n in files if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata and any(n.endswith("licenses/LICENSE") for n in files)
    teacher = ROOT / "hf_ssdd" / "assets" / "teacher-cpu-c10"
    assert {f"hf_ssdd/assets/teacher-cpu-c10/{p.name}" for p in teacher.iterdir()} <= set(files)
    shipped = {name for name in files if name.startswith("hf_ssdd/configs/")}
    assert {f"hf_ssdd/configs/{p.name}" for p in (ROOT / "hf_ssdd" / "configs").glob("*.yaml")} <= shipped
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", str(tmp_path / "site"), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    report = run_client(
        "installed", tmp_path, {"dataset_folder": str(repos[0] / "dataset")}, pythonpath=tmp_path / "site"
    )
    assert report["package"].startswith(str(tmp_path / "site"))
    assert all(
        path.startswith(str(tmp_path / "site" / "hf_ssdd" / "model_cards")) for path in report["templates"]
    )
    assert "## De-normalize" in report["dataset_card"] and "## Fine-tune it" in report["model_card"]
    assert "normalization not recorded" in report["model_card"]
    # the configs, their help and the default teacher come from the installed package, not a checkout
    assert report["configs_rc"] == 0 and report["help_rc"] == 0
    assert (
        "quickstart " in report["configs"]
        and str(tmp_path / "site" / "hf_ssdd" / "configs") in report["configs"]
    )
    assert "  --krr_st.outer_steps (int) = " in report["help"] and "(no description)" not in report["help"]
    assert report["teacher"][0].startswith(str(tmp_path / "site" / "hf_ssdd" / "assets"))


def test_dataset_card_license_fields():
    from hf_ssdd.artifacts.cards import _derived_license

    assert _derived_license("cc-by-4.0", "uoft-cs/cifar10") == {"license": "cc-by-4.0"}
    assert _derived_license(None, None) == {"license": "unknown"}  # a local source: nothing to point at
