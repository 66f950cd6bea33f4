"""MKDT experts: KD training, trajectory files (format, atomic concurrent writes), loading and its errors."""

import os
from dataclasses import replace

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from mkdt_toys import TINY, toy_trainer
from safetensors import safe_open
from safetensors.torch import save_file

from hf_ssdd.distill import ExpertError, ExpertTrajectory, load_trajectories
from hf_ssdd.distill.experts import expert_path
from hf_ssdd.utils import derived_generator

pytestmark = pytest.mark.usefixtures("one_thread")


def test_expert_training_is_kd_sgd_with_seeded_init_and_order():
    trainer = toy_trainer(max_epoch=2, lr=0.05, momentum=0.9, weight_decay=1e-3)
    snapshots, losses, _, _ = trainer.train(1)
    assert len(snapshots) == 3 and len(losses) == 2 and all(v > 0 for v in losses)

    model = trainer.build(1)  # the same initialization, rebuilt
    for name, p in model.named_parameters():
        assert torch.equal(snapshots[0][name], p.detach())
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    source, targets = trainer.source, trainer.features
    for epoch in (1, 2):
        order = torch.randperm(len(source), generator=derived_generator(0, "expert-order", 1, epoch))
        for b in order.split(8):
            opt.zero_grad()
            F.mse_loss(model(source.normalized(b)).logits, targets[b]).backward()
            opt.step()
        for name, p in model.named_parameters():
            torch.testing.assert_close(snapshots[epoch][name], p.detach(), rtol=0, atol=0)

    again = trainer.train(1).snapshots
    other = trainer.train(2).snapshots
    assert all(torch.equal(again[2][n], snapshots[2][n]) for n in snapshots[2])
    assert not torch.equal(other[0]["head.weight"], snapshots[0]["head.weight"])


def test_a_diverging_expert_is_stopped_with_advice(tmp_path):
    trainer = toy_trainer(max_epoch=2, lr=1e12, momentum=0.9)
    with pytest.raises(
        ExpertError, match=r"expert 0 diverged in epoch \d .*lower experts.lr \(now 1000000000000.0\)"
    ):
        trainer.write(tmp_path, 0)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_expert_file_holds_every_epoch_and_its_description(tmp_path):
    trainer = toy_trainer(max_epoch=2)
    path = trainer.write(tmp_path, 3)
    assert path == expert_path(tmp_path, 3) and path.name == "expert-00003.safetensors"
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()
        keys = set(f.keys())
    assert (
        header["architecture"] == "convnet" and header["feature_dim"] == "6" and header["image_size"] == "8"
    )
    assert header["max_epoch"] == "2" and header["index"] == "3" and header["seed"] == "0"
    assert header["teacher_id"] == "toy-teacher" and header["source_fingerprint"] == "toy-24-8-0"
    assert '"channels": [4, 4]' in header["architecture_config"]
    assert len(expert_meta_seconds := ExpertTrajectory.from_file(path).meta.epoch_seconds) == 2
    assert all(t >= 0 for t in expert_meta_seconds)
    assert keys == {f"epoch-{e:03d}/{n}" for e in range(3) for n, _ in trainer.build(0).named_parameters()}

    expert = ExpertTrajectory.from_file(path)
    snapshots = trainer.train(3).snapshots
    for epoch in range(3):
        loaded = expert.snapshot(epoch)
        assert all(torch.equal(loaded[n], snapshots[epoch][n]) for n in loaded)
    with pytest.raises(ExpertError, match=r"epoch 3 is beyond the saved trajectory .*epochs 0\.\.2"):
        expert.snapshot(3)


def test_backbones_with_batchnorm_statistics_are_refused():
    trainer = replace(toy_trainer(), model_overrides={**TINY, "norm": "batchnorm"})
    with pytest.raises(ExpertError, match="BatchNorm running statistics"):
        trainer.build(0)


def test_missing_experts_are_trained_and_present_ones_kept(tmp_path):
    trainer = toy_trainer(max_epoch=1)
    trainer.write(tmp_path, 1)
    before = os.stat(expert_path(tmp_path, 1)).st_mtime_ns
    written = trainer.write_missing(tmp_path, num_experts=3)
    assert [p.name for p in written] == ["expert-00000.safetensors", "expert-00002.safetensors"]
    assert os.stat(expert_path(tmp_path, 1)).st_mtime_ns == before
    assert trainer.write_missing(tmp_path, num_experts=3) == []
    assert [e.meta.index for e in load_trajectories(tmp_path, num_experts=3)] == [0, 1, 2]


def test_loading_refuses_experts_that_do_not_fit(tmp_path):
    toy_trainer(max_epoch=2).write_missing(tmp_path, num_experts=2)
    experts = load_trajectories(
        tmp_path, expect_architecture="convnet", expect_feature_dim=6, required_epoch=2
    )
    assert len(experts) == 2 and experts[1].meta.max_epoch == 2

    with pytest.raises(
        ExpertError, match="architecture 'convnet', but this run uses architecture 'convnet_d4'"
    ):
        load_trajectories(tmp_path, expect_architecture="convnet_d4")
    with pytest.raises(ExpertError, match="feature dim 6, but this run uses feature dim 512"):
        load_trajectories(tmp_path, expect_feature_dim=512)
    with pytest.raises(
        ExpertError, match=r"matching reads epoch 3 .*beyond the saved trajectory .*epochs 0\.\.2"
    ):
        load_trajectories(tmp_path, required_epoch=3)
    with pytest.raises(
        ExpertError, match="teacher revision 'rev0', but this run uses teacher revision 'rev1'"
    ):
        load_trajectories(tmp_path, teacher_revision="rev1")
    with pytest.raises(ExpertError, match="lacks 1 of 3 expert files"):
        load_trajectories(tmp_path, num_experts=3)
    with pytest.raises(ExpertError, match="no expert-"):
        load_trajectories(tmp_path / "empty")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "expert-00005.safetensors"))
    with pytest.raises(ExpertError, match="not an hf_ssdd expert trajectory"):
        load_trajectories(tmp_path)


def _concurrent_writer(rank: int, split_dir: str, shared_dir: str) -> None:
    torch.set_num_threads(1)
    trainer = toy_trainer(max_epoch=2)
    trainer.write_missing(split_dir, num_experts=4, rank=rank, world_size=2)  # expert j on rank j % 2
    for j in range(4):  # both processes write every expert into the same folder at once
        trainer.write(shared_dir, j)


def test_expert_files_written_concurrently_by_two_processes_are_intact(tmp_path):
    split_dir, shared_dir = tmp_path / "split", tmp_path / "shared"
    mp.spawn(_concurrent_writer, args=(str(split_dir), str(shared_dir)), nprocs=2, join=True)
    trainer = toy_trainer(max_epoch=2)
    for folder in (split_dir, shared_dir):
        assert sorted(p.name for p in folder.iterdir()) == [f"expert-{j:05d}.safetensors" for j in range(4)]
        for expert in load_trajectories(folder, num_experts=4, required_epoch=2):
            snapshots = trainer.train(expert.meta.index).snapshots
            for epoch in range(3):
                loaded = expert.snapshot(epoch)
                assert all(torch.equal(loaded[n], snapshots[epoch][n]) for n in loaded)
