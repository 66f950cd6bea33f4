"""``source.streaming`` and ``source.memory_budget_gb``: parsing, validation, the ``auto`` decision."""

import dataclasses

import pyarrow.parquet as pq
import pytest
from conftest import data_path

from hf_ssdd.config import ConfigError, field_help, parse_config
from hf_ssdd.data.footprint import decoded_bytes, default_memory_budget_gb, source_bytes
from hf_ssdd.distill import base
from hf_ssdd.distill.run import DistillRunConfig, SourceConfig, source_streams


@pytest.fixture
def shards(tmp_path):
    """Two parquet shards of 60 real CIFAR-10 images (32 px), as a local dataset folder."""
    table = pq.read_table(data_path("cifar10") / "test-00000-of-00001.parquet").slice(0, 60)
    for i in range(2):
        pq.write_table(table.slice(30 * i, 30), tmp_path / f"train-{i:05d}-of-00002.parquet")
    return tmp_path


def _config(folder, method="random", **source):
    return DistillRunConfig(method=method, source=SourceConfig(dataset=str(folder), **source))


def test_source_bytes_from_parquet_footers(shards):
    assert source_bytes(shards) == decoded_bytes(60, 32) == 60 * 3 * 32 * 32  # native size of the first image
    assert source_bytes(shards, image_size=16, max_examples=10) == 10 * 3 * 16 * 16
    # no such split: unknown (loading the source will say what is wrong)
    assert source_bytes(shards, split="test") is None
    assert default_memory_budget_gb() > 0


def test_auto_loads_into_memory_for_a_method_that_cannot_stream(shards, capsys):
    assert not source_streams(_config(shards, memory_budget_gb=1.0))
    assert capsys.readouterr().out == ""
    assert not source_streams(_config(shards, memory_budget_gb=1e-6))
    out = capsys.readouterr().out
    assert "over source.memory_budget_gb" in out and "method 'random' cannot stream yet" in out
    assert not source_streams(_config(shards, streaming=False, memory_budget_gb=1e-6))


def test_auto_streams_for_a_method_that_can(shards, monkeypatch):
    spec = dataclasses.replace(base.method_spec("random"), streams_source=True)
    monkeypatch.setitem(base._REGISTRY, "random", spec)
    assert source_streams(_config(shards, memory_budget_gb=1e-6))
    assert not source_streams(_config(shards, memory_budget_gb=1.0))
    assert source_streams(_config(shards, streaming=True))


def test_streaming_true_is_refused_for_a_method_that_cannot_stream():
    refused = r"source.streaming=true: method 'kmeans' cannot stream its source"
    with pytest.raises(ConfigError, match=refused):
        parse_config(DistillRunConfig, ["--method", "kmeans", "--source.streaming", "true"])
    assert parse_config(
        DistillRunConfig, ["--method", "krr_st", "--source.streaming", "true"]
    ).source.streaming
    cfg = parse_config(DistillRunConfig, ["--source.streaming", "false", "--source.memory_budget_gb", "8"])
    assert cfg.source.streaming is False and cfg.source.memory_budget_gb == 8.0
    assert parse_config(DistillRunConfig, []).source.streaming == "auto"
    with pytest.raises(ConfigError, match="streaming"):
        parse_config(DistillRunConfig, ["--source.streaming", "sometimes"])
    with pytest.raises(ConfigError, match="memory_budget_gb must be > 0"):
        SourceConfig(memory_budget_gb=0)


def test_keys_have_help():
    help_text = field_help(SourceConfig)
    assert "auto" in help_text["streaming"] and "GB" in help_text["memory_budget_gb"]


def test_source_keys_added_for_streaming_keep_earlier_runs_resumable(shards):
    """A run recorded before the streaming keys existed resumes: none of them is in the identity (a streamed
    source's settings that change its batches are in its fingerprint instead)."""
    from hf_ssdd.data import load_image_source
    from hf_ssdd.distill.run import distill_identity
    from hf_ssdd.teachers import Teacher

    cfg = _config(shards, method="krr_st")
    identity = distill_identity(
        cfg, load_image_source(shards), Teacher.from_pretrained("embedded:teacher-cpu-c10")
    )
    streaming_keys = {"streaming", "memory_budget_gb", "shuffle_buffer", "stream_workers"}
    assert streaming_keys <= {f.name for f in dataclasses.fields(SourceConfig)}
    assert not {k for k in identity if k.split(".")[-1] in streaming_keys}
