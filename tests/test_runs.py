"""Runs that cannot lie: identity checked on --resume, one writer per folder, no NaN checkpoint, fallback from a
corrupt checkpoint, temporaries of a killed writer removed — unit level, then through a real distillation."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from conftest import data_path

from hf_ssdd.checkpoint import (
    NonFiniteStateError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint_state,
    load_latest_checkpoint,
    remove_temporaries,
    save_checkpoint,
)
from hf_ssdd.cli import main
from hf_ssdd.config import parse_config
from hf_ssdd.distill import DistilledSet
from hf_ssdd.distill.run import DistillRunConfig, run_distillation
from hf_ssdd.io import prepare_run_dir
from hf_ssdd.models import create_backbone
from hf_ssdd.runs import LOCK_FILE, RunIdentityError, RunLockedError, check_identity, run_identity, run_lock


@dataclass
class _Inner:
    lr: float = 0.1
    steps: int = 10
    sizes: tuple[int, int] = (1, 2)


@dataclass
class _Cfg:
    seed: int = 0
    output_dir: str = "a"
    inner: _Inner = field(default_factory=_Inner)
    other: _Inner = field(default_factory=_Inner)


def test_identity_leaves_out_resumable_keys_and_sections_and_adds_inputs():
    ident = run_identity(_Cfg(), ["output_dir", "inner.steps", "other."], {"teacher.revision": "abc"})
    assert ident == {"seed": 0, "inner.lr": 0.1, "inner.sizes": [1, 2], "teacher.revision": "abc"}
    # JSON-normalized: equal to itself read back from a checkpoint
    assert json.loads(json.dumps(ident)) == ident


def test_check_identity_names_every_differing_key(tmp_path, capsys):
    saved = run_identity(_Cfg(), [], {"teacher.revision": "abc"})
    now = run_identity(_Cfg(seed=3, inner=_Inner(lr=0.2)), [], {"teacher.revision": "xyz"})
    with pytest.raises(RunIdentityError) as info:
        check_identity(saved, now, tmp_path / "checkpoint-5")
    message = str(info.value)
    for part in (
        "inner.lr: checkpoint 0.1, now 0.2",
        "seed: checkpoint 0, now 3",
        "teacher.revision: checkpoint",
    ):
        assert part in message
    assert "--output_dir" in message and "--overwrite" in message and "other." not in message
    check_identity(saved, dict(saved), tmp_path)  # the same run: no error
    check_identity(None, now, tmp_path / "old")  # a checkpoint from before identities: a warning
    assert "predates run identities" in capsys.readouterr().out


def test_lock_refuses_a_second_writer_and_takes_over_a_stale_lock(tmp_path):
    with run_lock(tmp_path / "run") as lock:
        holder = json.loads(lock.read_text())
        assert holder["pid"] == os.getpid()
        code = f"from hf_ssdd.runs import run_lock\nwith run_lock({str(tmp_path / 'run')!r}): pass"
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert (
            other.returncode != 0
            and "is in use by process" in other.stderr
            and str(os.getpid()) in other.stderr
        )
    assert not (tmp_path / "run" / LOCK_FILE).exists()  # released
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "run" / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename}))
    with run_lock(tmp_path / "run"):  # its holder is gone: stale, taken over
        pass
    (tmp_path / "run" / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(RunLockedError, match="process 1 on elsewhere"), run_lock(tmp_path / "run"):
        pass


def test_prepare_run_dir_keeps_the_lock_and_counts_only_content(tmp_path):
    run = tmp_path / "run"
    with run_lock(run):
        prepare_run_dir(run, keep=(LOCK_FILE,))  # the lock alone is not content
        (run / "old.txt").write_text("x")
        with pytest.raises(FileExistsError, match="--resume"):
            prepare_run_dir(run, keep=(LOCK_FILE,))
        prepare_run_dir(run, overwrite=True, keep=(LOCK_FILE,))  # the old content waits aside
        assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE, ".replaced"]
        assert (run / ".replaced" / "old.txt").read_text() == "x"


def test_nonfinite_state_is_never_saved(tmp_path):
    good = save_checkpoint(tmp_path, 5, {"w": torch.ones(3)})
    with pytest.raises(
        NonFiniteStateError, match=r"step 10: non-finite values in opt\.0\.m.*checkpoint-00000005"
    ):
        save_checkpoint(tmp_path, 10, {"w": torch.ones(3), "opt": [{"m": torch.tensor([1.0, float("nan")])}]})
    assert (
        latest_checkpoint(tmp_path) == good
        and (tmp_path / "checkpoints" / "latest").read_text().strip() == good.name
    )
    save_checkpoint(tmp_path, 11, {"steps": torch.tensor([1, 2])})  # integer tensors are never "non-finite"


@pytest.mark.parametrize("damage", ["truncated tensors", "broken json"])
def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys, damage):
    save_checkpoint(tmp_path, 1, {"w": torch.full((64,), 1.0)}, keep=None)
    newest = save_checkpoint(tmp_path, 2, {"w": torch.full((64,), 2.0)}, keep=None)
    if damage == "truncated tensors":
        path = newest / "state.safetensors"
        path.write_bytes(path.read_bytes()[:40])
    else:
        (newest / "state.json").write_text('{"w": {"__tensor__"')
    folder, state = load_latest_checkpoint(tmp_path)
    assert folder.name == "checkpoint-00000001" and torch.equal(state["w"], torch.full((64,), 1.0))
    assert f"checkpoint {newest} is unreadable" in capsys.readouterr().out
    (folder / "state.json").write_text("not json")
    with pytest.raises(ValueError, match="none of the 2 checkpoints"):
        load_latest_checkpoint(tmp_path)
    assert load_latest_checkpoint(tmp_path / "empty") is None


def test_temporaries_of_a_killed_writer_are_removed(tmp_path):
    kept = save_checkpoint(tmp_path, 1, {"w": torch.ones(2)})
    root = tmp_path / "checkpoints"
    (root / ".checkpoint-00000002.abc.tmp").mkdir()
    (root / ".checkpoint-00000002.abc.tmp" / "state.json").write_text("{")
    (root / ".latest.x1.tmp").write_text("checkpoint-00000002")
    (tmp_path / ".metrics.jsonl.y2.tmp").write_text("{")
    (root / ".checkpoint-00000001.old").mkdir()
    removed = remove_temporaries(tmp_path)
    assert len(removed) == 4 and not any(p.exists() for p in removed)
    assert sorted(p.name for p in root.iterdir()) == ["checkpoint-00000001", "latest"] and kept.is_dir()


# ----------------------------------------------------------------------------------------------- through a real run


def _teacher(folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    create_backbone(
        "convnet_8_16_none", image_size=32, mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26]
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    root = tmp_path_factory.mktemp("teachers")
    return _teacher(root / "a", 0), _teacher(
        root / "b", 1
    )  # same architecture and feature size, other weights


def _args(teacher, out, steps=10, *extra):
    return [
        "--teacher", str(teacher), "--output_dir", str(out), "--seed", "1",
        "--source.dataset", "cifar10", "--source.max_examples", "256",
        "--krr_st.num_images", "8", "--krr_st.model", "convnet_8_16_bn", "--krr_st.num_models", "2",
        "--krr_st.pool_age_limit", "4", "--krr_st.outer_steps", str(steps), "--krr_st.real_batch_size", "32",
        "--krr_st.outer_lr", "0.01", "--checkpoint_every", "5", "--log_every", "5", *extra,
    ]  # fmt: skip


def _run(*args):
    return run_distillation(parse_config(DistillRunConfig, list(args)))


def test_resume_refuses_another_teacher_or_hyperparameter_and_loses_nothing(tmp_path, teachers, capsys):
    data_path("cifar10")
    a, b = teachers
    out = tmp_path / "run"
    _run(*_args(a, out, 5))
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    for argv, key in (
        ([*_args(b, out, 5), "--resume"], "teacher.revision: checkpoint"),
        (
            [*_args(a, out, 5, "--krr_st.outer_lr", "0.02"), "--resume"],
            "krr_st.outer_lr: checkpoint 0.01, now 0.02",
        ),
        ([*_args(a, out, 5, "--seed", "2"), "--resume"], "seed: checkpoint 1, now 2"),
    ):
        assert main(["distill", *argv]) == 1
        err = (
            capsys.readouterr().err.strip().splitlines()[-1]
        )  # above it: the datasets library's progress bars
        assert key in err and "--resume refused" in err and err.startswith("hf-ssdd distill: error: ")
    after = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == before  # nothing rewritten, not even config.yaml
    # the keys that may change on resume do not count: cadence, logging, another name for the same teacher
    shutil.copytree(a, tmp_path / "same-teacher")
    again = _run(*_args(tmp_path / "same-teacher", out, 5, "--log_every", "1"), "--resume")
    assert "nothing to do" in capsys.readouterr().out and again.meta["steps"] == 5


def test_finished_run_asked_for_more_steps_continues_and_equals_a_longer_run(tmp_path, teachers, capsys):
    # with a constant outer learning rate; a decaying one continues at its final rate (the checkpoint's schedule)
    data_path("cifar10")
    a, _ = teachers
    constant = ("--krr_st.outer_end_factor", "1.0")
    longer = _run(*_args(a, tmp_path / "long", 10, *constant))
    _run(*_args(a, tmp_path / "grown", 5, *constant))
    grown = _run(*_args(a, tmp_path / "grown", 10, *constant), "--resume")
    assert "resumed from" in capsys.readouterr().out and grown.meta["steps"] == 10
    assert torch.equal(grown.images, longer.images) and torch.equal(grown.targets, longer.targets)
    assert DistilledSet.load(tmp_path / "grown" / "distilled").meta["steps"] == 10
    records = [json.loads(line) for line in (tmp_path / "grown" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10]  # every record once


def test_kill_during_checkpoint_writing_then_resume(tmp_path, teachers, capsys):
    # the state a SIGKILL inside save_checkpoint leaves: a half-written newest checkpoint and stray temporaries
    data_path("cifar10")
    a, _ = teachers
    full = _run(*_args(a, tmp_path / "full", 10))
    out = tmp_path / "killed"
    shutil.copytree(tmp_path / "full", out)
    shutil.rmtree(out / "distilled")
    partial = out / "checkpoints" / "checkpoint-00000010"  # the newest: cut short
    (partial / "state.safetensors").write_bytes((partial / "state.safetensors").read_bytes()[:100])
    (out / "checkpoints" / ".checkpoint-00000010.k1.tmp").mkdir()
    (out / "checkpoints" / ".latest.k2.tmp").write_text("checkpoint-00000010")
    resumed = _run(*_args(a, out, 10), "--resume")
    printed = capsys.readouterr().out
    assert "unreadable" in printed and "resumed from" in printed and "checkpoint-00000005" in printed
    assert torch.equal(resumed.images, full.images) and torch.equal(resumed.targets, full.targets)
    assert not list((out / "checkpoints").glob(".*")) and not (out / LOCK_FILE).exists()


def test_second_writer_on_a_live_run_is_refused(tmp_path, teachers, capsys):
    data_path("cifar10")
    a, _ = teachers
    out = tmp_path / "run"
    with run_lock(out):  # as if another process were running it
        assert main(["distill", *_args(a, out, 5)]) == 1
    assert "is in use by process" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == []  # nothing written by the refused run


def test_failed_input_loading_leaves_no_config_blocking_the_rerun(tmp_path, teachers, capsys):
    a, _ = teachers
    out = tmp_path / "run"
    assert main(["distill", *_args(a, out, 5, "--source.dataset", str(tmp_path / "missing"))]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_diverging_run_stops_with_the_last_good_checkpoint_named(tmp_path, teachers, capsys):
    data_path("cifar10")
    a, _ = teachers
    out = tmp_path / "run"
    assert main(["distill", *_args(a, out, 10, "--krr_st.outer_lr", "1e30")]) == 1
    err = capsys.readouterr().err
    assert "diverged" in err and "non-finite" in err
    for ckpt in list_checkpoints(out):  # whatever was saved before the divergence is finite
        state = load_checkpoint_state(ckpt)["distiller"]
        assert all(torch.isfinite(state[k]).all() for k in ("x_syn", "y_syn")), ckpt
    assert not (out / "distilled").exists()


def test_teacher_training_resume_refuses_a_changed_hyperparameter(tmp_path, capsys):
    data_path("cifar10")
    args = [
        "--dataset", "cifar10", "--max_examples", "128", "--batch_size", "64", "--output_dir", str(tmp_path / "t"),
        "--backbone_kwargs", "{layers: [1, 1, 1, 1], widths: [4, 8, 16, 32]}", "--projector_hidden_dim", "16",
        "--projector_out_dim", "16", "--epochs", "1", "--warmup_epochs", "0", "--checkpoint_every", "1",
        "--monitor_split", "", "--seed", "0",
    ]  # fmt: skip
    assert main(["pretrain-teacher", *args]) == 0
    capsys.readouterr()
    assert main(["pretrain-teacher", *args, "--lr", "0.5", "--resume"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--resume refused" in err and "lr: checkpoint 0.3, now 0.5" in err
    assert main(["pretrain-teacher", *args, "--epochs", "2", "--resume"]) == 0  # a longer run may resume


def test_overwrite_keeps_the_old_run_until_the_new_one_has_started(tmp_path, teachers, capsys):
    data_path("cifar10")
    a, _ = teachers
    out = tmp_path / "run"
    _run(*_args(a, out, 5))
    before = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    broken = [*_args(a, out, 5, "--source.dataset", str(tmp_path / "missing")), "--overwrite"]
    assert main(["distill", *broken]) == 1
    assert "is back in" in capsys.readouterr().out
    after = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == before  # the failed overwrite lost nothing
    replaced = _run(*_args(a, out, 5, "--seed", "2"), "--overwrite")
    assert replaced.meta["seed"] == 2 and not (out / ".replaced").exists()
    assert DistilledSet.load(out / "distilled").meta["seed"] == 2


@pytest.mark.parametrize(
    ("command", "option", "value", "message"),
    [
        ("distill", "--keep_checkpoints", "0", "keep_checkpoints must be at least 1"),
        ("distill", "--keep_checkpoints", "-5", "keep_checkpoints must be at least 1"),
        ("distill", "--checkpoint_every", "0", "checkpoint_every must be at least 1"),
        ("pretrain-teacher", "--lr", "-0.1", "lr must be at least 0"),
        ("pretrain-teacher", "--batch_size", "0", "batch_size must be at least 1"),
        ("pretrain-teacher", "--knn_temperature", "0", "knn_temperature must be positive"),
        ("pretrain", "--epochs", "0", "epochs must be at least 1"),
        (
            "transfer",
            "--label_fractions",
            "[0.01, 1.5]",
            "label_fractions needs fractions in (0, 1]",
        ),
        ("transfer", "--seeds", "[]", "seeds needs at least one value"),
        ("transfer", "--knn_k", "0", "knn_k must be at least 1"),
        ("quickstart", "--num_images", "0", "num_images must be at least 1"),
        ("quickstart", "--label_fractions", "[0]", "label_fractions needs fractions in (0, 1]"),
        ("quickstart", "--label_fractions", "[]", "label_fractions needs at least one value"),
    ],
)
def test_out_of_range_options_are_refused_before_any_work(tmp_path, capsys, command, option, value, message):
    # e.g. a non-positive keep_checkpoints used to delete every checkpoint, the newest included
    assert main([command, "--output_dir", str(tmp_path / "run"), option, value]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="keep must be at least 1"):
        save_checkpoint(tmp_path, 1, {"w": torch.ones(1)}, keep=0)


def test_corrupt_parquet_shard_and_teacher_weights_are_named(tmp_path, teachers, capsys):
    shard = tmp_path / "ds" / "train-00000-of-00001.parquet"
    shard.parent.mkdir()
    shard.write_bytes(b"PAR1" + bytes(500))  # a truncated file: no footer
    assert main(["distill", "--source.dataset", str(shard.parent), "--output_dir", str(tmp_path / "r1")]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "cannot read split 'train'" in err and str(shard) in err and "Traceback" not in err
    a, _ = teachers
    broken = tmp_path / "teacher"
    shutil.copytree(a, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])
    from hf_ssdd.teachers import Teacher, TeacherError

    with pytest.raises(TeacherError, match=f"cannot load the teacher in {broken}.*SafetensorError"):
        Teacher.from_pretrained(broken)


def test_finished_subset_run_resumed_with_other_settings_is_refused(tmp_path, teachers, capsys):
    # a subset baseline never checkpoints: its identity.json is what --resume checks
    data_path("cifar10")
    a, _ = teachers
    base = ["--teacher", str(a), "--output_dir", str(tmp_path / "run"), "--method", "random"]
    base += ["--source.dataset", "cifar10", "--source.max_examples", "256", "--random.num_images", "8"]
    _run(*base)
    assert json.loads((tmp_path / "run" / "identity.json").read_text())["random.num_images"] == 8
    assert main(["distill", *base, "--random.num_images", "16", "--resume"]) == 1
    assert "random.num_images: checkpoint 8, now 16" in capsys.readouterr().err
    assert len(_run(*base, "--resume")) == 8  # the same settings: the finished set


@pytest.mark.parametrize(("command", "earlier"), [("pretrain", "encoder"), ("transfer", "results.json")])
def test_one_shot_commands_refuse_earlier_outputs_and_restore_them_when_an_overwrite_fails(
    tmp_path, capsys, command, earlier
):
    out = (
        tmp_path / command
    )  # e.g. a distillation run's folder, which pretrain shares (push looks for <run>/encoder)
    out.mkdir()
    (out / earlier).write_text("earlier output")
    (out / "other.txt").write_text("not this command's")
    given = ["--distilled_set", str(tmp_path / "missing")] if command == "pretrain" else []
    given += ["--distilled_sets", f"[{tmp_path / 'missing'}]"] if command == "transfer" else []
    assert main([command, *given, "--output_dir", str(out)]) == 1
    assert f"already holds {earlier} of an earlier run; pass --overwrite" in capsys.readouterr().err
    assert main([command, *given, "--output_dir", str(out), "--overwrite"]) == 1  # the set cannot be loaded
    assert sorted(p.name for p in out.iterdir()) == sorted([earlier, "other.txt"])  # back, nothing else
    assert (out / earlier).read_text() == "earlier output"
    (out / earlier).unlink()
    assert main([command, *given, "--output_dir", str(out)]) == 1  # other files do not block it
    assert "already holds" not in capsys.readouterr().err


def test_recorder_releases_the_lock_when_the_folder_is_refused(tmp_path):
    from hf_ssdd.runs import RunRecorder

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "x").write_text("content")
    with pytest.raises(FileExistsError) as refused:  # the traceback is kept alive here
        with RunRecorder(tmp_path / "run", resume=False, overwrite=False):
            pass
    assert refused.value is not None and not (tmp_path / "run" / LOCK_FILE).exists()


def test_recorder_refuses_another_run_that_never_checkpointed(tmp_path):
    from hf_ssdd.runs import RunRecorder

    with RunRecorder(tmp_path / "run", resume=False, overwrite=False) as run:
        assert run.resume_from({"lr": 0.1}) is None
        assert not (tmp_path / "run" / "identity.json").exists()  # nothing before the run has started
        run.save_config(_Cfg())  # started: config.yaml and identity.json, before any checkpoint
        run.log({"step": 1, "loss": 2.0})
    with RunRecorder(tmp_path / "run", resume=True, overwrite=False) as run:
        with pytest.raises(RunIdentityError, match="lr"):
            run.resume_from({"lr": 0.2})
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text()) == {"step": 1, "loss": 2.0}
    assert "inner:" in (tmp_path / "run" / "config.yaml").read_text()
    assert not (tmp_path / "run" / LOCK_FILE).exists()  # released


def test_teacher_run_failing_after_its_inputs_loaded_leaves_nothing_blocking_the_rerun(tmp_path, capsys):
    data_path("cifar10")
    out = tmp_path / "teacher"
    args = ["pretrain-teacher", "--max_examples", "64", "--output_dir", str(out), "--epochs", "1"]
    assert main([*args, "--batch_size", "128"]) == 1  # checked once the 64 images have loaded
    assert "exceeds the 64 training images" in capsys.readouterr().err
    assert not out.exists() or not [p for p in out.iterdir() if p.name != LOCK_FILE]
