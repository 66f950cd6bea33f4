"""`hf-ssdd quickstart` end to end at toy scale on real CIFAR-10, and the recipe YAMLs that mirror it."""

import json
from pathlib import Path

import pytest
import yaml
from conftest import data_path

from hf_ssdd.artifacts.cards import evaluation_markdown
from hf_ssdd.assets import DEFAULT_TEACHER
from hf_ssdd.cli import main
from hf_ssdd.config import parse_config
from hf_ssdd.distill.run import DistillRunConfig
from hf_ssdd.hub import build_model_repo, run_card_rows
from hf_ssdd.quickstart import QuickstartConfig, krr_st_config, teacher_config
from hf_ssdd.ssl.train import TeacherTrainConfig


def test_quickstart_runs_every_stage_skips_finished_ones_and_publishes_its_rows(tmp_path, capsys):
    data_path("cifar10")
    argv = [
        "quickstart", "--output_dir", str(tmp_path / "qs"), "--max_examples", "600", "--num_images", "12",
        "--train_teacher", "true", "--teacher_steps", "2", "--krr_st_steps", "3", "--mkdt_iterations", "2",
        "--mkdt_experts", "1", "--pretrain_epochs", "2", "--seeds", "[0]", "--label_fractions", "[0.05]",
    ]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for row in ("No pre-training", "Random subset", "KRR-ST", "MKDT"):
        assert row in printed
    assert "teacher fidelity (R²)" in printed and "Margin over the random subset" in printed
    assert "skipped" not in printed
    run = tmp_path / "qs" / "krr_st"
    results = json.loads((run / "transfer" / "results.json").read_text())
    assert {r["encoder"] for r in results["rows"]} == {"No pre-training", "Random subset", "KRR-ST", "MKDT"}
    assert (run / "distilled" / "README.md").is_file() and (run / "encoder" / "config.json").is_file()
    sources = {e["name"]: e["source"] for e in results["metadata"]["encoders"]}
    assert Path(sources["KRR-ST"]).resolve() == (run / "distilled").resolve()  # rows name their set

    # what `hf-ssdd push` publishes: the run's own rows in both cards, the model card's model-index included
    set_rows, model_rows = run_card_rows(run)
    assert {r["encoder"] for r in set_rows if r["role"] == "subject"} == {"KRR-ST"}
    assert "**KRR-ST**" in evaluation_markdown(set_rows, "this set")
    folder = build_model_repo(run / "encoder", tmp_path / "model_repo", "org/qs-convnet", rows=model_rows)
    card = yaml.safe_load((folder / "README.md").read_text().split("---")[1])
    metrics = [m for r in card["model-index"][0]["results"] for m in r["metrics"]]
    assert {m["args"]["protocol"] for m in metrics} == {"linear_probe", "fidelity", "fidelity_cka"}

    # a second call re-computes nothing: every stage says it was skipped
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for stage in ("teacher", "krr_st", "random", "mkdt", "transfer"):
        assert f"skipped {stage}: finished earlier with the same settings" in printed, stage
    # a changed KRR-ST setting re-runs KRR-ST and the transfer stage, and nothing else
    assert main([*argv, "--krr_st_steps", "4"]) == 0
    printed = capsys.readouterr().out
    assert "krr_st: settings changed" in printed and "skipped krr_st" not in printed
    assert "skipped transfer" not in printed
    for stage in ("teacher", "random", "mkdt"):
        assert f"skipped {stage}:" in printed, stage
    rebuilt = yaml.safe_load((run / "config.yaml").read_text())
    assert rebuilt["krr_st"]["outer_steps"] == 4 and (run / "transfer" / "results.json").is_file()

    # the top folder is a run folder like every command's: its config, a line per stage and call, one writer
    top = tmp_path / "qs"
    assert yaml.safe_load((top / "config.yaml").read_text())["krr_st_steps"] == 4
    stages = [json.loads(line)["stage"] for line in (top / "metrics.jsonl").read_text().splitlines()]
    assert stages == ["teacher", "krr_st", "random", "mkdt", "transfer"] * 3
    (top / ".lock").write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    assert main(argv) == 1
    assert "is in use by process 1 on elsewhere" in capsys.readouterr().err
    (top / ".lock").unlink()
    # --fresh starts over, and puts the old run back when it cannot start (here: a teacher that does not exist)
    assert (
        main(
            [
                "quickstart",
                "--output_dir",
                str(top),
                "--teacher",
                str(tmp_path / "missing"),
                "--fresh",
                "true",
            ]
        )
        == 1
    )
    assert (run / "transfer" / "results.json").is_file() and not (top / ".replaced").exists()


@pytest.mark.parametrize(
    "yaml_name, cls, build",
    [
        ("quickstart.yaml", DistillRunConfig, krr_st_config),
        ("quickstart_teacher.yaml", TeacherTrainConfig, teacher_config),
    ],
)
def test_recipe_yamls_mirror_the_quickstart(yaml_name, cls, build):
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "hf_ssdd" / "configs" / yaml_name
    from_yaml = parse_config(cls, ["--config", str(path)])
    built = (
        build(QuickstartConfig(), DEFAULT_TEACHER) if cls is DistillRunConfig else build(QuickstartConfig())
    )
    if cls is DistillRunConfig:
        assert from_yaml.krr_st == built.krr_st and from_yaml.source == built.source
        assert from_yaml.teacher == built.teacher == DEFAULT_TEACHER  # no --teacher needed
    else:
        for key in (
            "backbone",
            "backbone_kwargs",
            "projector_hidden_dim",
            "batch_size",
            "epochs",
            "warmup_epochs",
        ):
            assert getattr(from_yaml, key) == getattr(built, key), key
