"""The teacher-feature cache: memory-mapped, shared by stages, recomputed when damaged, fed by streams too."""

import numpy as np
import pytest
import torch

from hf_ssdd.data import ImageSource
from hf_ssdd.distill.base import RunContext
from hf_ssdd.distill.subsets import KMeansSubset, RandomSubset, SubsetConfig
from hf_ssdd.teachers import Teacher, encode_source, feature_cache_path, read_feature_cache

STATS = ((0.5, 0.45, 0.4), (0.25, 0.25, 0.25))


class Counting(torch.nn.Module):
    """A tiny conv encoder that counts its forward calls."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
        )
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.net(x)


def _teacher() -> tuple[Teacher, Counting]:
    model = Counting()
    return Teacher.from_module(model, 16, *STATS, teacher_id="counting"), model


def _source(n=13, fingerprint="toy-fp") -> ImageSource:
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=g)
    return ImageSource(images, None, None, "toy", None, "train", fingerprint, *STATS, 16)


class Streamed:
    """A streamed source over a tensor: only ``image_batches`` reads images; records the rows asked for."""

    def __init__(self, images: torch.Tensor, fingerprint: str):
        self._images, self.name, self.fingerprint = images, "streamed-toy", fingerprint
        self.requests: list[tuple[int, int]] = []

    def __len__(self):
        return len(self._images)

    def image_batches(self, start, stop, batch_size):
        self.requests.append((start, stop))
        for first in range(start, stop, batch_size):
            yield self._images[first : min(first + batch_size, stop)].clone()


def test_cache_is_memory_mapped_and_read_without_the_teacher(tmp_path):
    teacher, model = _teacher()
    source = _source()
    feats = encode_source(teacher, source, batch_size=4, cache_dir=tmp_path, progress_bar=False)
    calls = model.calls
    assert calls == 4  # ceil(13 / 4) batches
    torch.testing.assert_close(feats, teacher.encode(source.images))
    path = feature_cache_path(teacher, source, tmp_path)
    assert path.suffix == ".npy" and isinstance(np.load(path, mmap_mode="r"), np.memmap)
    assert not list(path.parent.glob("*.tmp"))  # the temporary file was renamed into place
    model.calls = 0
    again = encode_source(teacher, source, batch_size=4, cache_dir=tmp_path, progress_bar=False)
    assert model.calls == 0 and torch.equal(again, feats)
    again[0] = 1e6  # copy-on-write: a caller's write never reaches the file
    assert not torch.equal(read_feature_cache(path, len(source)), again)


def test_two_stages_share_the_cached_features(tmp_path, monkeypatch):
    """k-means after the random baseline (two distillers of one run folder): the teacher runs once."""
    monkeypatch.setenv("HF_SSDD_CACHE", str(tmp_path / "cache"))
    teacher, model = _teacher()
    source = _source(n=40)
    context = RunContext(source, teacher, None, tmp_path / "run", 0)
    config = SubsetConfig(num_images=5, batch_size=16)
    first = RandomSubset.prepare(config, context)
    encoded = model.calls
    assert encoded > 0
    resources = KMeansSubset.prepare(config, context)
    assert model.calls == encoded  # no re-encoding
    assert torch.equal(resources["features"], first["features"])
    kmeans = KMeansSubset(config, source, teacher, seed=0, **resources)
    kmeans.init()
    dset = kmeans.export()
    path = feature_cache_path(teacher, source, tmp_path / "cache")
    assert torch.equal(dset.targets, read_feature_cache(path, len(source))[kmeans.indices])
    assert torch.equal(read_feature_cache(path, len(source)), first["features"])  # the stage wrote nothing


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.write_bytes(path.read_bytes()[:-20]),  # truncated copy
        lambda path: path.write_bytes(b"garbage" + path.read_bytes()[7:]),  # unparsable header
        lambda path: path.write_bytes(path.read_bytes() + b"\0" * 16),  # longer than its header says
    ],
    ids=["truncated", "bad-header", "trailing-bytes"],
)
def test_damaged_cache_is_recomputed(tmp_path, damage):
    teacher, model = _teacher()
    source = _source()
    feats = encode_source(teacher, source, batch_size=4, cache_dir=tmp_path, progress_bar=False).clone()
    path = feature_cache_path(teacher, source, tmp_path)
    # in place, as a broken copy would (the cache itself only ever renames whole files into place)
    damage(path)
    assert read_feature_cache(path, len(source)) is None
    model.calls = 0
    again = encode_source(teacher, source, batch_size=4, cache_dir=tmp_path, progress_bar=False)
    assert model.calls == 4 and torch.equal(again, feats)
    assert torch.equal(read_feature_cache(path, len(source)), feats)


def test_a_cache_of_another_row_count_is_not_used(tmp_path):
    teacher, _ = _teacher()
    path = tmp_path / "f.npy"
    np.save(path, np.zeros((5, 4), np.float32))
    assert read_feature_cache(path, 5) is not None
    assert read_feature_cache(path, 6) is None
    np.save(path, np.zeros((5, 4), np.float64))
    assert read_feature_cache(path, 5) is None


def test_streamed_source_gives_the_in_memory_features(tmp_path):
    teacher, model = _teacher()
    source = _source()
    streamed = Streamed(source.images, fingerprint="streamed-fp")
    feats = encode_source(teacher, streamed, batch_size=4, cache_dir=tmp_path, progress_bar=False)
    torch.testing.assert_close(feats, teacher.encode(source.images))
    assert streamed.requests == [(0, 13)]
    assert feature_cache_path(teacher, streamed, tmp_path).is_file()


def test_without_cache_nothing_is_written(tmp_path):
    teacher, _ = _teacher()
    source = _source()
    feats = encode_source(
        teacher, source, batch_size=5, cache_dir=tmp_path, use_cache=False, progress_bar=False
    )
    torch.testing.assert_close(feats, teacher.encode(source.images))
    assert not (tmp_path / "features").exists() or not any((tmp_path / "features").iterdir())


def test_non_finite_features_are_refused_and_not_cached(tmp_path):
    from hf_ssdd.teachers import TeacherError

    teacher = Teacher.from_module(_NaN(), 16, *STATS, teacher_id="nan")
    with pytest.raises(TeacherError, match="non-finite"):
        encode_source(teacher, _source(), batch_size=4, cache_dir=tmp_path, progress_bar=False)
    assert not any((tmp_path / "features").iterdir())  # no temporary file left either


class _NaN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(float("nan")))

    def forward(self, x):
        return x.mean(dim=(2, 3)) * self.scale


def _two_process_worker(cache_dir, out_path):
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    teacher, model = _teacher()
    source = _source()  # 13 rows over 2 processes: the second shard is padded
    streamed = Streamed(source.images, fingerprint="two-process")
    feats = encode_source(
        teacher, streamed, batch_size=4, cache_dir=cache_dir, accelerator=acc, progress_bar=False
    )
    torch.save(
        {"features": feats.clone(), "calls": model.calls, "requests": streamed.requests},
        f"{out_path}.{acc.process_index}",
    )


def test_two_processes_encode_shards_and_the_main_one_writes(tmp_path):
    from process_launcher import launch

    launch(_two_process_worker, args=(str(tmp_path / "cache"), str(tmp_path / "out")), num_processes=2)
    outs = [torch.load(f"{tmp_path / 'out'}.{r}", weights_only=True) for r in (0, 1)]
    teacher, _ = _teacher()
    expected = teacher.encode(_source().images)
    for out in outs:
        torch.testing.assert_close(out["features"], expected)
    assert [o["calls"] for o in outs] == [2, 2]  # 7 rows each (the last one padded), batches of 4
    assert [o["requests"] for o in outs] == [[(0, 7)], [(7, 13)]]
    assert len(list((tmp_path / "cache" / "features").glob("*.npy"))) == 1
