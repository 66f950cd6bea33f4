"""Hub publishing, layer 2: round trips over real HTTP against the loopback stand-in in ``fake_hub.py`` (NOT
the Hub; see its docstring for what it does not check). Clients run in fresh subprocesses: one publishes with
hf_ssdd (``hf-ssdd push``, ``push_encoder``) and loads back, one loads with datasets / transformers / timm
only."""

import pytest
import torch
from fake_hub import FakeHub
from hub_testing import IMAGE_SIZE, make_encoder, make_results, make_run, run_client, tree_digest
from safetensors.torch import load_file, save_file

from hf_ssdd.artifacts.distilled_set import DistilledSet
from hf_ssdd.pretrain import save_encoder

REPO, ENCODER_REPO, TIMM_REPO = "org/c10-krrst", "org/c10-krrst-convnet", "org/timm-enc"


@pytest.fixture(scope="module")
def hub():
    with FakeHub() as server:
        yield server


@pytest.fixture(scope="module")
def published(hub, tmp_path_factory):
    """A finished run pushed with ``hf-ssdd push``, a timm encoder pushed with ``push_encoder``, both loaded
    back."""
    work = tmp_path_factory.mktemp("published")
    run = make_run(work / "run", encoder_kind="ssdd", evaluated="distilled")
    timm_encoder = make_encoder("timm")
    save_encoder(timm_encoder, work / "timm_encoder")
    results = make_results({"No pre-training": "scratch", "timm": str(work / "timm_encoder")})
    x = torch.randn(3, 3, IMAGE_SIZE, IMAGE_SIZE)
    save_file({"x": x}, work / "inputs.safetensors")
    digest = tree_digest(run)
    args = {
        "run": str(run),
        "repo": REPO,
        "timm_encoder": str(work / "timm_encoder"),
        "timm_repo": TIMM_REPO,
        "results": results.to_dict(),
    }
    report = run_client("publish", work, args, hub.client_env())
    custom = DistilledSet.load(run / "distilled"), make_encoder("ssdd")
    with torch.no_grad():
        expected = {"custom": custom[1](x).pooler_output, "timm": timm_encoder(x).pooler_output}
    return work, run, digest, custom[0], expected, report


def test_set_round_trips_bit_exactly(published):
    work, run, digest, dset, _, report = published
    loaded = load_file(work / "publish.safetensors")
    assert torch.equal(loaded["images"], dset.images) and torch.equal(loaded["targets"], dset.targets)
    meta = report["meta"]
    assert meta["encoder_repos"] == [ENCODER_REPO] and meta["run_config"] == {"method": "krr_st"}
    assert {key: meta[key] for key in dset.meta} == dset.meta
    assert tree_digest(run) == digest  # publishing never writes into the run


def test_encoders_round_trip_with_identical_outputs(published):
    work, *_, expected, _ = published
    loaded = load_file(work / "publish.safetensors")
    assert torch.equal(loaded["custom"], expected["custom"]) and torch.equal(loaded["timm"], expected["timm"])


def test_each_repo_is_one_commit_with_the_expected_files(published, hub):
    for key in (("dataset", REPO), ("model", ENCODER_REPO), ("model", TIMM_REPO)):
        assert len(hub.repos[key].commits) == 2, key  # the repo's creation + one upload commit
    assert hub.repos[("dataset", REPO)].private and hub.repos[("model", ENCODER_REPO)].private
    assert set(hub.repo_files("dataset", REPO)) == {
        ".gitattributes",
        "README.md",
        "preview.png",
        "data/train-00000-of-00001.parquet",
    }
    assert set(hub.repo_files("model", ENCODER_REPO)) == {
        ".gitattributes",
        "README.md",
        "config.json",
        "model.safetensors",
        "configuration_ssdd.py",
        "modeling_ssdd.py",
        "preprocessor_config.json",
    }
    assert set(hub.repo_files("model", TIMM_REPO)) == {
        ".gitattributes",
        "README.md",
        "config.json",
        "model.safetensors",
    }


@pytest.fixture(scope="module")
def consumed(published, hub):
    """The published repos loaded by a process that cannot import hf_ssdd."""
    work = published[0]
    args = {"dataset": REPO, "custom": ENCODER_REPO, "timm": TIMM_REPO, "timm_prefix": "hf-hub:"}
    return run_client("consume", work, args, hub.client_env(), pythonpath=None), load_file(
        work / "consume.safetensors"
    )


def test_stock_libraries_load_the_published_repos(published, consumed):
    _, _, _, dset, expected, _ = published
    report, tensors = consumed
    assert report["hf_ssdd_importable"] is False
    assert report["columns"] == ["image", "pixel_values", "target"]
    assert torch.equal(tensors["pixel_values"], dset.images) and torch.equal(tensors["target"], dset.targets)
    assert torch.equal(tensors["streamed_pixel_values"], dset.images)
    assert "trust_remote_code" in report["refused"] and report["custom_module"].startswith(
        "transformers_modules."
    )
    assert torch.equal(tensors["custom"], expected["custom"])
    assert torch.equal(tensors["timm"], expected["timm"]) and torch.equal(
        tensors["timm_auto"], expected["timm"]
    )


def test_cards_link_each_other_and_carry_results(consumed):
    report, _ = consumed
    dataset_card, custom_card, timm_card = report["dataset_card"], report["custom_card"], report["timm_card"]
    assert dataset_card["hf_ssdd"]["encoder_repos"] == [ENCODER_REPO]
    assert {row["encoder"] for row in dataset_card["hf_ssdd"]["evaluation"] if row["role"] == "subject"} == {
        "KRR-ST"
    }
    for card, library in ((custom_card, "transformers"), (timm_card, "timm")):
        assert card["datasets"] == [REPO] and card["library_name"] == library and "base_model" not in card
        assert card["pipeline_tag"] == "image-feature-extraction"
        metrics = card["model-index"][0]["results"][0]["metrics"]
        assert [m["args"]["protocol"] for m in metrics] == ["linear_probe", "finetune"]
    # the run's transfer ran on distilled/: the encoder's card reports that recipe's rows (KRR-ST)
    assert [m["value"] for m in custom_card["model-index"][0]["results"][0]["metrics"]] == [45.25, 35.25]


def test_failed_commit_leaves_the_run_untouched_and_a_retry_succeeds(hub, tmp_path):
    run = make_run(tmp_path / "run", evaluated=None)
    digest = tree_digest(run)
    hub.fail_next_commits = 1
    report = run_client("flaky", tmp_path, {"run": str(run), "repo": "org/flaky"}, hub.client_env())
    assert "500" in report["first"] and "retry" in report["first"] and report["second"] == 0
    assert tree_digest(run) == digest
    assert len(hub.repos[("dataset", "org/flaky")].commits) == 2  # creation + the retried upload
    assert "data/train-00000-of-00001.parquet" in hub.repo_files("dataset", "org/flaky")
    assert "Not evaluated" in hub.repo_files("model", "org/flaky-convnet")["README.md"].decode()


def test_schema_mismatch_is_refused_unless_asked(hub, tmp_path):
    report = run_client("schema", tmp_path, {"repo": "org/schema"}, hub.client_env())
    assert "data/train-00001-of-00002.parquet" not in report["files_after_same_schema_push"]
    assert "other columns" in report["refused"] and "length: 4" in report["refused"].replace("'", "")
    assert report["unchanged_after_refusal"]
    assert report["main_target_dim"] == 6 and report["dev_target_dim"] == 5
    assert "declares no columns" in report["refused_foreign"]
    foreign = hub.repo_files("dataset", "org/schema-foreign")
    assert set(foreign) == {".gitattributes", "train.parquet"}  # nothing overwritten
