"""RealBatchReader: per-rank shards, seeded shuffling, exact resume, errors that name the shard."""

import io
import itertools

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import data_path
from PIL import Image

from hf_ssdd.data.real_batches import RealBatchReader

ROWS, SHARDS = 200, 4


def _shards(tmp_path, count: int = SHARDS, table: pa.Table | None = None):
    """``count`` parquet shards holding the first ROWS rows of the real CIFAR-10 test split."""
    if table is None:
        table = pq.read_table(data_path("cifar10") / "test-00000-of-00001.parquet").slice(0, ROWS)
    folder = tmp_path / f"cifar10-{count}-shards"
    folder.mkdir()
    per_shard = len(table) // count
    for i in range(count):
        pq.write_table(
            table.slice(i * per_shard, per_shard), folder / f"train-{i:05d}-of-{count:05d}.parquet"
        )
    return folder


def _reader(folder, **kw):
    settings = dict(batch_size=32, image_size=32, seed=3, shuffle_buffer=16) | kw
    return RealBatchReader(folder, "train", **settings)


def _take(reader, count):
    return list(itertools.islice(reader, count))


def _epoch(reader, epoch=0):
    """The batches of one epoch (the reader stops being read at the first batch of the next one)."""
    batches = []
    for batch in reader:
        if reader.epoch != epoch:
            break
        batches.append(batch)
    return batches


def _keys(batches) -> list[bytes]:
    return [image.numpy().tobytes() for b in batches for image in b.images]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x.images, y.images) and torch.equal(x.labels, y.labels) for x, y in zip(a, b)
    )


def test_two_ranks_read_every_example_of_an_epoch_exactly_once(tmp_path):
    folder = _shards(tmp_path)
    everything = _keys(_epoch(_reader(folder, shuffle_buffer=1, drop_last=False)))
    assert len(everything) == ROWS == len(set(everything))
    parts = [_keys(_epoch(_reader(folder, rank=r, world_size=2, drop_last=False))) for r in (0, 1)]
    assert [len(p) for p in parts] == [ROWS // 2, ROWS // 2]
    assert sorted(parts[0] + parts[1]) == sorted(everything)


def test_shards_are_reshuffled_every_epoch_and_rows_shuffled(tmp_path):
    reader = _reader(_shards(tmp_path), rank=1, world_size=2)
    orders = [reader.epoch_shards(epoch) for epoch in range(6)]
    assert all(len(o) == SHARDS // 2 for o in orders) and len({tuple(o) for o in orders}) > 1
    in_order = _keys(_epoch(_reader(_shards(tmp_path, 2), shuffle_buffer=1, drop_last=False)))
    shuffled = _keys(_epoch(_reader(tmp_path / "cifar10-2-shards", drop_last=False)))
    assert shuffled != in_order and sorted(shuffled) == sorted(in_order)


def test_same_seed_same_batches(tmp_path):
    folder = _shards(tmp_path)
    first = _take(_reader(folder), 8)  # 6 full batches per epoch: this crosses into epoch 1
    assert [len(b.images) for b in first] == [32] * 8 and first[0].images.dtype == torch.uint8
    assert _same(first, _take(_reader(folder), 8))
    assert not _same(first, _take(_reader(folder, seed=4), 8))


@pytest.mark.parametrize("stop_after", [4, 6])  # mid-epoch, and at the end of epoch 0
def test_resume_continues_with_the_same_batches(tmp_path, stop_after):
    folder = _shards(tmp_path)
    uninterrupted = _take(_reader(folder), stop_after + 5)
    reader = _reader(folder)
    _take(reader, stop_after)
    state = reader.state_dict()
    resumed = _reader(folder)
    resumed.load_state_dict(state)
    assert _same(_take(resumed, 5), uninterrupted[stop_after:])
    assert resumed.state_dict()["epoch"] == 1


def test_shard_count_must_divide_by_world_size(tmp_path):
    with pytest.raises(ValueError, match=r"4 parquet shards, not a multiple of the 3 processes"):
        _reader(_shards(tmp_path), rank=0, world_size=3)


def test_unreadable_shard_names_its_file(tmp_path):
    folder = _shards(tmp_path)
    bad = folder / "train-00002-of-00004.parquet"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated
    reader = _reader(folder, shuffle_buffer=1)
    with pytest.raises(ValueError, match="train-00002-of-00004.parquet"):
        _take(reader, ROWS // 32)


def test_undecodable_image_names_its_file_and_row(tmp_path):
    table = pq.read_table(data_path("cifar10") / "test-00000-of-00001.parquet").slice(0, 40)
    images = table.column("img").to_pylist()
    images[27] = {"bytes": b"not an image", "path": None}  # shard 1, row 7
    table = table.set_column(0, "img", pa.array(images, type=table.schema.field("img").type))
    folder = _shards(tmp_path, 2, table)
    with pytest.raises(ValueError, match=r"train-00001-of-00002.parquet.*row 7"):
        _take(_reader(folder, batch_size=8), 10)


def test_native_size_without_catalog(tmp_path):
    table = pq.read_table(data_path("cifar10") / "test-00000-of-00001.parquet").slice(0, 8)
    folder = _shards(tmp_path, 1, table)
    reader = RealBatchReader(folder, "train", batch_size=4, shuffle_buffer=2)
    assert reader.image_size == 32 and next(iter(reader)).images.shape == (4, 3, 32, 32)
    image = Image.open(io.BytesIO(table.column("img")[0].as_py()["bytes"]))
    assert image.size == (32, 32)


def test_decoding_workers_give_the_same_batches(tmp_path):
    folder = _shards(tmp_path)
    plain = _take(_reader(folder), 7)
    reader = _reader(folder, num_workers=2)
    assert _same(_take(reader, 7), plain)
    assert reader.state_dict() == {"epoch": 1, "batch": 1}
