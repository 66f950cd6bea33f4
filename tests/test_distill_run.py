"""The distillation recipe end to end on real CIFAR-10: outputs, SIGKILL + --resume equals an uninterrupted run."""

import math
from pathlib import Path

import pytest
import torch
from conftest import data_path, kill_at_first_checkpoint

from hf_ssdd.config import parse_config
from hf_ssdd.distill import DistilledSet
from hf_ssdd.distill.run import DistillRunConfig, RunError, run_distillation

ROOT = Path(__file__).resolve().parents[1]


def _args(teacher, out, steps=60):
    return [
        "--teacher", str(teacher), "--output_dir", str(out), "--seed", "1",
        "--source.dataset", "cifar10", "--source.max_examples", "512",
        "--krr_st.num_images", "16", "--krr_st.model", "convnet_8_16_bn", "--krr_st.num_models", "2",
        "--krr_st.pool_age_limit", "10", "--krr_st.outer_steps", str(steps), "--krr_st.real_batch_size", "64",
        "--krr_st.outer_lr", "0.01", "--checkpoint_every", "5", "--log_every", "5",
    ]  # fmt: skip


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path, teacher_dir):
    data_path("cifar10")
    full = run_distillation(parse_config(DistillRunConfig, _args(teacher_dir, tmp_path / "full")))

    out = tmp_path / "killed"
    kill_at_first_checkpoint("distill.py", _args(teacher_dir, out), out)
    assert not (out / "distilled").exists(), "the run finished before it could be killed"
    assert (out / "checkpoints" / "latest").exists()

    resumed = run_distillation(parse_config(DistillRunConfig, [*_args(teacher_dir, out), "--resume"]))
    assert torch.equal(full.images, resumed.images) and torch.equal(full.targets, resumed.targets)
    again = DistilledSet.load(out / "distilled")
    assert torch.equal(again.images, full.images) and again.meta["steps"] == 60
    for name in (
        "config.yaml",
        "synthetic_grid.png",
        "before_after_grid.png",
        "loss_curve.png",
        "metrics.jsonl",
    ):
        assert (out / name).is_file(), name
    steps = [
        int(line.split('"step": ')[1].split(",")[0])
        for line in (out / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == list(range(5, 61, 5))  # no duplicates after the resume


def test_refuses_to_overwrite_a_run(tmp_path, teacher_dir):
    data_path("cifar10")
    out = tmp_path / "run"
    run_distillation(parse_config(DistillRunConfig, _args(teacher_dir, out, steps=2)))
    with pytest.raises(FileExistsError, match="--resume"):
        run_distillation(parse_config(DistillRunConfig, _args(teacher_dir, out, steps=2)))
    done = run_distillation(
        parse_config(DistillRunConfig, [*_args(teacher_dir, out, steps=2), "--overwrite"])
    )
    assert len(done) == 16


def test_missing_teacher_is_a_clear_error(tmp_path):
    assert DistillRunConfig().teacher == "embedded:teacher-cpu-c10"  # the default is the shipped teacher
    with pytest.raises(RunError, match="no teacher"):
        run_distillation(DistillRunConfig(teacher="", output_dir=str(tmp_path / "x")))


def test_tensorboard_logs_land_in_the_run_folder(tmp_path, teacher_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data_path("cifar10")
    out = tmp_path / "run"
    args = [*_args(teacher_dir, out, steps=4), "--log_every", "2", "--log_with", "tensorboard"]
    run_distillation(parse_config(DistillRunConfig, args))
    events = sorted((out / "logs").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file under <output_dir>/logs"
    losses = []
    for folder in {path.parent for path in events}:
        acc = EventAccumulator(str(folder)).Reload()
        if "loss" in acc.Tags()["scalars"]:
            losses += acc.Scalars("loss")
    assert [event.step for event in losses] == [2, 4]
    assert all(math.isfinite(event.value) and event.value > 0 for event in losses)


def test_teacher_targets_are_the_teachers_features_of_the_final_images(tmp_path, teacher_dir):
    data_path("cifar10")
    from hf_ssdd.teachers import Teacher

    teacher = Teacher.from_pretrained(str(teacher_dir))
    learned = run_distillation(parse_config(DistillRunConfig, _args(teacher_dir, tmp_path / "a", steps=10)))
    args = [*_args(teacher_dir, tmp_path / "b", steps=10), "--targets", "teacher"]
    relabelled = run_distillation(parse_config(DistillRunConfig, args))
    assert torch.equal(relabelled.images, learned.images)  # the same run; only the saved targets differ
    # float64 by hand: images back to [0, 1] pixels, the teacher's own resize-free normalization, its features
    mean, std = (
        torch.tensor(relabelled.meta[k], dtype=torch.float64).view(1, 3, 1, 1) for k in ("mean", "std")
    )
    pixels = relabelled.images.double() * std + mean
    p = teacher.preprocessing
    x = (pixels - torch.tensor(p.mean, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(
        p.std, dtype=torch.float64
    ).view(1, 3, 1, 1)
    expected = teacher.model.double().forward_features(x).float()
    torch.testing.assert_close(relabelled.targets, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(learned.targets, relabelled.targets, atol=1e-3)  # KRR-ST moved its targets
    assert DistilledSet.load(tmp_path / "b" / "distilled").meta["targets"] == "teacher"
    # a random subset's targets already are the teacher's features of its (real) images
    subset = [*_args(teacher_dir, tmp_path / "r"), "--method", "random", "--random.num_images", "8"]
    own = run_distillation(parse_config(DistillRunConfig, subset))
    again = run_distillation(
        parse_config(
            DistillRunConfig,
            [
                *_args(teacher_dir, tmp_path / "r2"),
                "--method",
                "random",
                "--random.num_images",
                "8",
                "--targets",
                "teacher",
            ],
        )  # fmt: skip
    )
    torch.testing.assert_close(again.targets, own.targets, rtol=1e-4, atol=1e-5)
