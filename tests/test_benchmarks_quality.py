"""The quality benchmarks end to end at smoke size: `quality_cifar10.py` (every stage, resumable parts, margins in
RESULTS) and `mkdt_validation.py` (training-split data only, paired baseline, nothing evaluated twice)."""

import json
from pathlib import Path

import pytest
import torch
from conftest import data_path, load_benchmark

from hf_ssdd.distill import run as distill_run
from hf_ssdd.models import create_backbone

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quality_benchmark_smoke_run_resumes_part_by_part(tmp_path, monkeypatch, capsys):
    data_path("cifar10")
    bench = load_benchmark("quality_cifar10")
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
        teacher_targets=["krr_st"],
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
            "krr-st-teacher-targets-6",
            "krr-st-teacher-targets-10",
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
    assert "| KRR-ST (teacher targets) · 10 |" in text
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


@pytest.mark.slow
def test_mkdt_validation_smoke_run_never_reads_the_test_split(tmp_path, monkeypatch, capsys):
    data_path("cifar10")
    monkeypatch.syspath_prepend(
        str(ROOT / "benchmarks")
    )  # as when run as a script: it imports quality_cifar10
    bench = load_benchmark("mkdt_validation")
    torch.manual_seed(0)
    teacher = tmp_path / "teacher"
    create_backbone("convnet_8_8_in", mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26]).save_pretrained(
        teacher
    )
    tiny = {"model_overrides": {"channels": [8, 8, 8]}, "experts": {"num_experts": 1, "max_epoch": 2}}
    mkdt = {**tiny, "init": "random", "iterations": 3, "syn_steps": 2, "batch_syn": 5, "max_start_epoch": 1}
    monkeypatch.setattr(bench, "TEACHER", str(teacher))
    monkeypatch.setattr(bench, "STUDENT", "convnet_8_8_in")
    monkeypatch.setattr(bench, "SOURCE_SPLIT", "train[:300]")
    monkeypatch.setattr(bench, "HELD_OUT_SPLIT", "train[300:500]")
    monkeypatch.setattr(
        bench,
        "CANDIDATES",
        {
            "random subset": ("random", {}),
            "MKDT tiny": ("mkdt", mkdt),
            "MKDT tiny, 0 iterations": ("mkdt", {**mkdt, "iterations": 0}),
        },
    )
    monkeypatch.setattr(bench, "RELABELLED", {"MKDT tiny, teacher targets": "MKDT tiny"})
    loaded = []  # every split any stage loads: the benchmark's held-out images and the distillation sources

    def recording(load):
        return lambda ref, split="train", **kw: loaded.append(split) or load(ref, split, **kw)

    monkeypatch.setattr(bench, "load_image_source", recording(bench.load_image_source))
    monkeypatch.setattr(distill_run, "load_image_source", recording(distill_run.load_image_source))
    argv = ["--output_dir", str(tmp_path / "run"), "--budget", "10", "--seeds", "0", "1", "--epochs", "1"]
    bench.main(argv)
    table = capsys.readouterr().out
    record = json.loads((tmp_path / "run" / "validation-10.json").read_text())
    assert set(record) == {
        "random subset",
        "MKDT tiny",
        "MKDT tiny, 0 iterations",
        "MKDT tiny, teacher targets",
    }
    assert set(loaded) == {"train[300:500]", "train[:300]"} and all(
        len(e["seeds"]) == 2 for e in record.values()
    )
    # the random baseline and MKDT's random initialization are the same images: identical results
    assert record["random subset"]["seeds"] == record["MKDT tiny, 0 iterations"]["seeds"]
    assert "| MKDT tiny | e0: " in table and "| random subset | — |" in table
    # a second call evaluates nothing again
    evaluate = bench.evaluate
    monkeypatch.setattr(bench, "evaluate", lambda *a, **k: pytest.fail("evaluated again"))
    bench.main(argv)
    # another initial draw: its own runs and record, other images
    monkeypatch.setattr(bench, "evaluate", evaluate)
    bench.main([*argv, "--draw", "1", "--candidates", "random subset"])
    from hf_ssdd.distill import DistilledSet

    run = tmp_path / "run"
    assert set(json.loads((run / "validation-10-draw1.json").read_text())) == {"random subset"}
    first, other = (DistilledSet.load(run / f"random-subset-{t}" / "distilled") for t in ("10", "10-draw1"))
    assert not torch.equal(first.images, other.images)


def test_set_drift_of_a_set_against_itself_and_a_moved_copy(teacher_dir):
    module = load_benchmark("set_drift")
    from hf_ssdd.distill import DistilledSet
    from hf_ssdd.teachers import Teacher

    teacher = Teacher.from_pretrained(str(teacher_dir))
    images = torch.rand(20, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    pixels = (images * 255).round().to(torch.uint8)
    meta = {"mean": [0.0] * 3, "std": [1.0] * 3}
    init = DistilledSet(pixels.float() / 255, teacher.encode(pixels), dict(meta))
    same = module.drift(init, init, teacher)
    assert same["images"] == same["targets"] == same["outside"] == 0.0
    assert same["rank_before"] == same["rank_after"] and same["teacher_r2"] > 0.999
    moved = DistilledSet(init.images * 1.5, init.targets * 0.5, dict(meta))
    drift = module.drift(init, moved, teacher)
    assert drift["images"] == pytest.approx(0.5) and drift["targets"] == pytest.approx(0.5)
    assert drift["outside"] > 0 and drift["teacher_r2"] < 0.9
