"""MKDT and the high-loss baseline on a streamed source: rows in order and by epoch with their indices, experts
over a stream, KD scores equal to the in-memory ones, features computed once and shared."""

from pathlib import Path

import numpy as np
import pytest
import torch
from mkdt_toys import TINY

from hf_ssdd.config import config_from_dict
from hf_ssdd.data import load_image_source, normalize, open_streamed_source
from hf_ssdd.distill import create_distiller, load_trajectories
from hf_ssdd.distill.experts import ExpertConfig, ExpertTrainer, build_student
from hf_ssdd.distill.matching import FunctionalStudent
from hf_ssdd.distill.mkdt import MKDTConfig, kd_losses
from hf_ssdd.distill.run import DistillRunConfig, run_distillation
from hf_ssdd.teachers import Teacher

ROWS = 256  # the cifar10_shards fixture (conftest): 4 shards of 64 rows


@pytest.fixture(scope="module")
def shards(cifar10_shards) -> Path:
    return cifar10_shards


def test_row_ranges_and_epochs_come_with_the_rows_a_load_numbers(shards):
    streamed, memory = open_streamed_source(shards, shuffle_buffer=16), load_image_source(shards)
    # across shard boundaries (64, 128), the first shard skipped unread, a short last batch
    got = list(streamed.image_batches(70, 200, 48))
    assert [len(b) for b in got] == [48, 48, 34]
    assert torch.equal(torch.cat(got), memory.images[70:200])

    reader = streamed.reader(40, seed=5, drop_last=False)
    assert reader.shard_offsets() == dict(zip(reader.shard_names, [0, 64, 128, 192], strict=True))
    epochs = []
    for epoch in (0, 1):
        rows, images = zip(*((r, b.images) for r, b in reader.epoch_batches(epoch)), strict=True)
        order = torch.cat(rows)
        assert torch.equal(order.sort().values, torch.arange(ROWS))  # every row once
        assert torch.equal(torch.cat(images), memory.take(order))  # each image with its row index
        epochs.append(order)
    assert not torch.equal(epochs[0], epochs[1])  # reshuffled each epoch
    assert reader.state_dict() == {"epoch": 0, "batch": 0}  # an epoch pass leaves the endless position alone


def _trainer(source, features, seed=0):
    return ExpertTrainer(
        architecture="convnet",
        source=source,
        features=features,
        config=ExpertConfig(batch_size=32),
        max_epoch=2,
        seed=seed,
        model_overrides=TINY,
    )


def test_streamed_experts_regress_each_row_on_its_own_features_reproducibly(shards):
    streamed, memory = open_streamed_source(shards, shuffle_buffer=16), load_image_source(shards)
    features = torch.randn(ROWS, 6, generator=torch.Generator().manual_seed(0))
    trainer = _trainer(streamed, features)
    seen = []
    for rows, x in trainer.epoch_batches(0, 1):
        torch.testing.assert_close(
            x, normalize(memory.take(rows), streamed.mean, streamed.std), rtol=0, atol=0
        )
        seen.append(rows)
    assert torch.equal(torch.cat(seen).sort().values, torch.arange(ROWS))

    snapshots, losses, seconds, _ = trainer.train(0)
    again, again_losses, _, _ = _trainer(open_streamed_source(shards, shuffle_buffer=16), features).train(0)
    assert len(seconds) == 2 and min(seconds) > 0
    assert losses == again_losses and len(snapshots) == 3
    assert all(torch.equal(a[k], b[k]) for a, b in zip(snapshots, again, strict=True) for k in a)
    # each expert reads its own order
    other = torch.cat([rows for rows, _ in trainer.epoch_batches(1, 1)])
    assert not torch.equal(other, torch.cat(seen))


def test_kd_scores_of_a_stream_equal_those_in_memory(shards):
    streamed, memory = open_streamed_source(shards), load_image_source(shards)
    features = torch.randn(ROWS, 6, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    student = FunctionalStudent(build_student("convnet", 6, 32, TINY))
    theta = student.flat_parameters()
    torch.testing.assert_close(
        kd_losses(student, theta, streamed, features, batch_size=100),
        kd_losses(student, theta, memory, features, batch_size=100),
        rtol=0,
        atol=0,
    )


def test_streamed_mkdt_and_high_loss_share_experts_and_features(shards, teacher_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_SSDD_CACHE", str(tmp_path / "cache"))
    matching = {
        "num_images": 8,
        "model_overrides": TINY,
        "syn_steps": 2,
        "batch_syn": 4,
        "max_start_epoch": 1,
        "expert_epochs": 1,
        "experts": {"num_experts": 2, "batch_size": 32, "directory": str(tmp_path / "experts")},
    }
    base = {
        "source": {"dataset": str(shards), "streaming": True, "shuffle_buffer": 32},
        "teacher": str(teacher_dir),
    }
    mkdt = run_distillation(
        config_from_dict(
            DistillRunConfig,
            {
                **base,
                "method": "mkdt",
                "output_dir": str(tmp_path / "mkdt"),
                "mkdt": {**matching, "iterations": 2},
            },
        )
    )
    assert (
        len(mkdt) == 8
        and mkdt.meta["steps"] == 2
        and mkdt.meta["source"]["revision"] == open_streamed_source(shards, shuffle_buffer=32).fingerprint
    )
    (cache,) = (tmp_path / "cache" / "features").glob("*.npy")
    experts = load_trajectories(tmp_path / "experts")
    stamps = [cache.stat().st_mtime_ns] + [e.path.stat().st_mtime_ns for e in experts]

    high = run_distillation(
        config_from_dict(
            DistillRunConfig,
            {**base, "method": "high_loss", "output_dir": str(tmp_path / "hl"), "high_loss": matching},
        )
    )
    # the same features file and experts, read again, not recomputed
    assert list((tmp_path / "cache" / "features").glob("*.npy")) == [cache]
    assert [cache.stat().st_mtime_ns] + [e.path.stat().st_mtime_ns for e in experts] == stamps
    # high-loss rows chosen from the stream are those an in-memory distiller with the same experts picks
    memory = load_image_source(shards)
    direct = create_distiller(
        "high_loss",
        config_from_dict(MKDTConfig, {**matching, "iterations": 0}),
        memory,
        Teacher.from_pretrained(str(teacher_dir)),
        features=torch.from_numpy(np.load(cache)),
        experts=experts,
    )
    direct.init()
    torch.testing.assert_close(high.images, direct.export().images)
    torch.testing.assert_close(high.targets, direct.export().targets)
