import datasets
import pyarrow.parquet as pq
import pytest
import torch
from conftest import data_path

from hf_ssdd.data import load_image_source, stream_image_batches

ROWS = 200


def _shards(tmp_path, count: int):
    """``count`` parquet shards holding the first ROWS rows of the real CIFAR-10 test split."""
    table = pq.read_table(data_path("cifar10") / "test-00000-of-00001.parquet").slice(0, ROWS)
    folder = tmp_path / f"cifar10-{count}-shards"
    folder.mkdir()
    per_shard = ROWS // count
    for i in range(count):
        pq.write_table(
            table.slice(i * per_shard, per_shard), folder / f"train-{i:05d}-of-{count:05d}.parquet"
        )
    return folder


def _collect(batches):
    images, labels = zip(*((b.images, b.labels) for b in batches))
    return torch.cat(images), torch.cat(labels)


def _keys(images: torch.Tensor) -> set[bytes]:
    return {image.numpy().tobytes() for image in images}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = _shards(tmp_path_factory.mktemp("reference"), 4)
    return load_image_source(folder, cache_dir=tmp_path_factory.mktemp("cache"))


def test_single_process_stream_matches_image_source(tmp_path, reference):
    batches = list(stream_image_batches(_shards(tmp_path, 4), "train", batch_size=64, image_size=32))
    assert [len(b.images) for b in batches] == [64, 64, 64, 8]
    assert batches[0].images.dtype == torch.uint8 and batches[0].labels.dtype == torch.int64
    images, labels = _collect(batches)
    assert torch.equal(images, reference.images) and torch.equal(labels, reference.labels)


@pytest.mark.parametrize("shuffle_buffer", [None, 32])
def test_two_ranks_see_disjoint_halves(tmp_path, reference, monkeypatch, shuffle_buffer):
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)
    folder = _shards(tmp_path, 4)
    parts = [
        _collect(stream_image_batches(folder, "train", 32, 32, r, 2, shuffle_buffer=shuffle_buffer, seed=7))
        for r in (0, 1)
    ]
    assert [len(images) for images, _ in parts] == [ROWS // 2, ROWS // 2]
    assert not _keys(parts[0][0]) & _keys(parts[1][0])
    assert _keys(parts[0][0]) | _keys(parts[1][0]) == _keys(reference.images)
    assert sorted(torch.cat([labels for _, labels in parts]).tolist()) == sorted(reference.labels.tolist())


def test_uneven_shards_warn_and_still_cover_everything(tmp_path, reference):
    folder = _shards(tmp_path, 4)
    parts = []
    for rank in range(3):
        with pytest.warns(UserWarning, match="every rank reads all the data"):
            parts.append(
                _keys(_collect(stream_image_batches(folder, "train", 50, 32, rank=rank, world_size=3))[0])
            )
    assert sum(len(p) for p in parts) == ROWS and set().union(*parts) == _keys(reference.images)


def test_shuffle_is_seeded_permutation(tmp_path, reference, monkeypatch):
    # datasets sleeps 5 s after every shuffled multi-shard parquet pass (apache/arrow#45214); not needed here
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)
    folder = _shards(tmp_path, 4)
    first, _ = _collect(stream_image_batches(folder, "train", 50, 32, shuffle_buffer=64, seed=3))
    again, _ = _collect(stream_image_batches(folder, "train", 50, 32, shuffle_buffer=64, seed=3))
    other, _ = _collect(stream_image_batches(folder, "train", 50, 32, shuffle_buffer=64, seed=4))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert not torch.equal(first, reference.images) and _keys(first) == _keys(reference.images)


def test_resize_and_default_size(tmp_path):
    folder = _shards(tmp_path, 2)
    batch = next(iter(stream_image_batches(folder, "train", 8, image_size=16)))
    assert batch.images.shape == (8, 3, 16, 16)
    native = next(iter(stream_image_batches(folder, "train", 8)))  # not in the catalog: native 32 px
    assert native.images.shape == (8, 3, 32, 32)


def test_bad_rank(tmp_path):
    with pytest.raises(ValueError, match="rank must be in"):
        next(iter(stream_image_batches(_shards(tmp_path, 2), "train", 8, 32, rank=2, world_size=2)))
