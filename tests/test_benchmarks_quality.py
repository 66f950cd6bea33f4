"""`benchmarks/quality_cifar10.py` end to end at smoke size: every stage, resumable parts, margins in RESULTS."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from conftest import data_path

from hf_ssdd.models import create_backbone

ROOT = Path(__file__).resolve().parents[1]


def _load_benchmark():
    spec = importlib.util.spec_from_file_location(
        "quality_cifar10", ROOT / "benchmarks" / "quality_cifar10.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_quality_benchmark_smoke_run_resumes_part_by_part(tmp_path, monkeypatch, capsys):
    data_path("cifar10")
    bench = _load_benchmark()
    torch.manual_seed(0)
    teacher = tmp_path / "teacher"
    create_backbone("convnet_8_8_in", mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26]).save_pretrained(
        teacher
    )
    smoke = bench.Preset(
        teacher=str(teacher),
        budgets=[6, 10],
        student="convnet_8_8_in",
        methods={
            "random": {},
            "krr_st": {
                "model": "convnet_8_8_in",
                "num_models": 2,
                "pool_age_limit": 4,
                "outer_steps": 2,
                "real_batch_size": 32,
            },
        },
        seeds=[0, 1],
        finetune_steps=2,
        fractions=[0.1],
        pretrain={"recipe": "krr_st", "epochs": 2},
        full_source={"epochs": 1},
        fidelity=True,
        targets=["cifar10"],
        max_examples=200,
        transfer_examples=200,
    )
    monkeypatch.setitem(bench.PRESETS, "smoke", smoke)
    results_md = tmp_path / "RESULTS.md"
    argv = ["--preset", "smoke", "--output_dir", str(tmp_path / "run"), "--results", str(results_md)]
    bench.main([*argv, "--stage", "transfer"])
    parts = sorted(p.name for p in (tmp_path / "run" / "transfer" / "parts").iterdir())
    assert parts == sorted(
        [
            "no-pre-training",
            "random-subset-6",
            "random-subset-10",
            "krr-st-6",
            "krr-st-10",
            "full-source-teacher-targets",
        ]
    )
    assert not results_md.exists()  # the transfer stage alone appends nothing
    (tmp_path / "run" / "transfer" / "parts" / "krr-st-10" / "results.json").unlink()  # an unfinished part
    capsys.readouterr()
    bench.main(argv)
    printed = capsys.readouterr().out
    assert printed.count("transfer part") == 1 and "'KRR-ST · 10'" in printed  # only the missing part ran
    text = results_md.read_text()
    assert "Margin over the random subset · 6" in text and "Margin over the random subset · 10" in text
    assert "cifar10 · teacher fidelity (R²)" in text and "Full source (teacher targets)" in text
    # one budget per call: its rows only (the parts exist: nothing is evaluated again), under their full names
    capsys.readouterr()
    bench.main([*argv, "--budgets", "6"])
    printed = capsys.readouterr().out
    assert "transfer part" not in printed and "KRR-ST · 6" in printed and "KRR-ST · 10" not in printed
    assert "Budgets [6] images per method (preset: [6, 10])" in results_md.read_text()
    with pytest.raises(SystemExit):
        bench.main([*argv, "--budgets", "7"])
    # one method again (the random baseline always comes with it), without the full-source row
    capsys.readouterr()
    bench.main([*argv, "--budgets", "10", "--methods", "krr_st", "--no_full_source"])
    printed = capsys.readouterr().out
    assert "transfer part" not in printed and "KRR-ST · 10" in printed and "Random subset · 10" in printed
    assert "Full source" not in printed
    with pytest.raises(SystemExit):
        bench.main([*argv, "--methods", "mkdt"])  # not a method of this preset
