"""KRR-ST on a streamed source (``source.streaming``): same rows as in memory, reproducible, exact resume after a kill."""

import shutil
from pathlib import Path

import pytest
import torch
from conftest import kill_at_first_checkpoint
from process_launcher import launch
from test_distill_krr_st import toy_config, toy_teacher

from hf_ssdd.checkpoint import latest_checkpoint, load_checkpoint_state, save_checkpoint
from hf_ssdd.config import ConfigError, parse_config
from hf_ssdd.data import StreamedSource, load_image_source, open_streamed_source
from hf_ssdd.distill import DistilledSet, create_distiller
from hf_ssdd.distill.run import DistillRunConfig, run_distillation

ROOT = Path(__file__).resolve().parents[1]
ROWS, SHARDS = 256, 4  # the cifar10_shards fixture (conftest)


@pytest.fixture(scope="module")
def shards(cifar10_shards) -> Path:
    return cifar10_shards


def _make(source, **kw):
    cfg = toy_config(real_batch_size=32, **kw)
    return create_distiller("krr_st", cfg, source, toy_teacher(32), seed=3)


def _run(d, steps):
    for _ in range(steps):
        d.step()
    return d.export()


def test_streamed_source_describes_the_split_and_takes_the_rows_a_load_would(shards):
    streamed = open_streamed_source(shards, shuffle_buffer=32)
    memory = load_image_source(shards)
    assert isinstance(streamed, StreamedSource) and len(streamed) == len(memory) == ROWS
    assert streamed.image_size == memory.image_size == 32
    # not in the catalog: statistics of the first STATS_ROWS rows, here all of them, as a load computes them
    assert streamed.mean == pytest.approx(memory.mean) and streamed.std == pytest.approx(memory.std)
    rows = torch.tensor([200, 3, 64, 255, 0])
    assert torch.equal(streamed.take(rows), memory.take(rows))
    assert streamed.fingerprint != memory.fingerprint  # a streamed run never resumes an in-memory one
    with pytest.raises(ValueError, match="row 999 does not exist"):
        streamed.take(torch.tensor([1, 999]))
    with pytest.raises(ValueError, match="whole splits"):
        open_streamed_source(shards, split="train[:100]")


def test_streamed_krr_st_starts_from_the_in_memory_draw_and_is_reproducible(shards):
    streamed = _make(open_streamed_source(shards, shuffle_buffer=32))
    streamed.init()
    memory = _make(load_image_source(shards))
    memory.init()
    assert torch.equal(streamed.init_indices, memory.init_indices)
    assert torch.equal(streamed.x_syn, memory.x_syn) and torch.equal(streamed.y_syn, memory.y_syn)
    a = _run(streamed, 5)
    again = _make(open_streamed_source(shards, shuffle_buffer=32))
    again.init()
    b = _run(again, 5)
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)
    assert streamed.stream_positions == [{"epoch": 0, "batch": 5}]
    # 8 batches of 32 per epoch: step 10 reads the first batch of epoch 1
    _run(streamed, 5)
    assert streamed.stream_positions == [{"epoch": 1, "batch": 2}]


def test_streamed_resume_continues_the_stream(shards, tmp_path):
    full = _make(open_streamed_source(shards, shuffle_buffer=32))
    full.init()
    expected = _run(full, 10)  # across an epoch boundary (8 batches per epoch)

    first = _make(open_streamed_source(shards, shuffle_buffer=32))
    first.init()
    _run(first, 6)
    path = save_checkpoint(tmp_path, first.step_count, {"distiller": first.state_dict()})
    resumed = _make(open_streamed_source(shards, shuffle_buffer=32))
    resumed.load_state_dict(load_checkpoint_state(path)["distiller"])
    got = _run(resumed, 4)
    assert torch.equal(expected.images, got.images) and torch.equal(expected.targets, got.targets)


def _two_process_worker(folder, out_path):
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    d = create_distiller(
        "krr_st",
        toy_config(real_batch_size=32),
        open_streamed_source(folder, shuffle_buffer=32),
        toy_teacher(32),
        accelerator=acc,
        seed=3,
    )
    d.init()
    _run(d, 3)
    state = {"positions": d.stream_positions, "shards": d._reader.epoch_shards(0)}
    torch.save(state, f"{out_path}.{acc.process_index}")


def test_two_processes_read_their_own_shards_and_checkpoint_both_positions(shards, tmp_path):
    out = tmp_path / "two"
    launch(_two_process_worker, args=(str(shards), str(out)), num_processes=2)
    ranks = [torch.load(f"{out}.{rank}", weights_only=True) for rank in range(2)]
    for state in ranks:  # every process knows both positions (16 rows each per step, from its own 2 shards)
        assert state["positions"] == [{"epoch": 0, "batch": 3}, {"epoch": 0, "batch": 3}]
    assert sorted(ranks[0]["shards"] + ranks[1]["shards"]) == list(range(SHARDS))


def _args(shards, teacher, out):
    return [
        "--teacher", str(teacher), "--output_dir", str(out), "--seed", "1",
        "--source.dataset", str(shards), "--source.streaming", "true", "--source.shuffle_buffer", "64",
        "--krr_st.num_images", "16", "--krr_st.model", "convnet_8_16_bn", "--krr_st.num_models", "2",
        "--krr_st.pool_age_limit", "10", "--krr_st.outer_steps", "40", "--krr_st.real_batch_size", "32",
        "--krr_st.outer_lr", "0.01", "--checkpoint_every", "5", "--log_every", "5",
    ]  # fmt: skip


def test_streamed_run_resumes_exactly_after_sigkill(shards, teacher_dir, tmp_path):
    full = run_distillation(parse_config(DistillRunConfig, _args(shards, teacher_dir, tmp_path / "full")))

    out = tmp_path / "killed"
    kill_at_first_checkpoint("distill.py", _args(shards, teacher_dir, out), out)
    assert not (out / "distilled").exists(), "the run finished before it could be killed"

    args = [*_args(shards, teacher_dir, out), "--resume"]
    resumed = run_distillation(parse_config(DistillRunConfig, args))
    assert torch.equal(full.images, resumed.images) and torch.equal(full.targets, resumed.targets)
    assert DistilledSet.load(out / "distilled").meta["steps"] == 40
    # the same run in memory is a different run: its source has another fingerprint
    in_memory = [a if a != "true" else "false" for a in args]
    with pytest.raises(Exception, match="fingerprint"):
        run_distillation(parse_config(DistillRunConfig, in_memory))


def test_a_shard_that_goes_bad_mid_run_is_named_and_the_last_checkpoint_survives(
    shards, teacher_dir, tmp_path, monkeypatch
):
    folder = tmp_path / "data"
    shutil.copytree(shards, folder)
    # normalization statistics from shard 0 alone, so that only the stream reaches the damage below (in epoch 1)
    monkeypatch.setattr("hf_ssdd.data.streamed_source.STATS_ROWS", 64)

    def ten_steps_then_forty(out):
        first = [a if a != "40" else "10" for a in _args(folder, teacher_dir, out)]  # outer_steps 10
        run_distillation(parse_config(DistillRunConfig, first))
        return [*_args(folder, teacher_dir, out), "--resume"]  # then continued to 40

    unbroken = run_distillation(parse_config(DistillRunConfig, ten_steps_then_forty(tmp_path / "unbroken")))
    out = tmp_path / "run"
    args = ten_steps_then_forty(out)
    # shard 3 goes bad: its footer intact, its data pages not; the same size, so the same run resumes
    bad = folder / "train-00003-of-00004.parquet"
    good = bad.read_bytes()
    bad.write_bytes(good[:300] + bytes(2000) + good[2300:])
    with pytest.raises(ValueError, match=r"cannot read .*train-00003-of-00004\.parquet .* at row \d+"):
        run_distillation(parse_config(DistillRunConfig, args))
    last = latest_checkpoint(out)
    assert last is not None and 10 <= load_checkpoint_state(last)["distiller"]["step"] < 40
    # the set of the finished 10-step run is still there, not overwritten
    assert DistilledSet.load(out / "distilled").meta["steps"] == 10

    # repaired: the run resumes from that checkpoint and ends where the unbroken one does
    bad.write_bytes(good)
    resumed = run_distillation(parse_config(DistillRunConfig, args))
    assert torch.equal(unbroken.images, resumed.images) and torch.equal(unbroken.targets, resumed.targets)


def test_streaming_settings_are_validated():
    with pytest.raises(ConfigError, match="whole splits"):
        parse_config(DistillRunConfig, ["--source.streaming", "true", "--source.max_examples", "10"])
    with pytest.raises(ConfigError, match="whole splits"):
        parse_config(DistillRunConfig, ["--source.streaming", "true", "--source.split", "train[:10]"])
    with pytest.raises(ConfigError, match="cannot stream"):
        parse_config(DistillRunConfig, ["--method", "kmeans", "--source.streaming", "true"])
    with pytest.raises(ConfigError, match="shuffle_buffer"):
        parse_config(DistillRunConfig, ["--source.shuffle_buffer", "0"])
