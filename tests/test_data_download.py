"""``hf-ssdd download``: a Hub dataset mirrored into the HF_SSDD_DATA_DIR layout, then loaded offline; the offline
error line names that command."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage

import hf_ssdd.data.download as download
from hf_ssdd.cli import main
from hf_ssdd.data import load_image_source
from hf_ssdd.data.download import DownloadConfig, download_dataset, write_parquet_shards

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _split(n: int, seed: int, tmp_path, file_backed: bool = False) -> Dataset:
    """Random 32 px RGB images with CIFAR-10's columns; ``file_backed``: images referenced by path, not bytes."""
    rng = np.random.default_rng(seed)
    arrays = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    images = []
    for i, a in enumerate(arrays):
        if file_backed:
            path = tmp_path / f"img-{seed}-{i}.png"
            PILImage.fromarray(a).save(path)
            images.append(str(path))
        else:
            images.append(PILImage.fromarray(a))
    features = Features({"img": Image(), "label": ClassLabel(names=NAMES), "id": Value("int32")})
    labels = rng.integers(0, 10, n).tolist()
    return Dataset.from_dict({"img": images, "label": labels, "id": list(range(n))}, features=features)


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """``datasets.load_dataset`` answering for uoft-cs/cifar10 with a small generated DatasetDict."""
    (tmp_path / "files").mkdir()
    splits = DatasetDict(
        train=_split(12, 0, tmp_path / "files", file_backed=True), test=_split(7, 1, tmp_path / "files")
    )
    calls = []

    def load_dataset(path, revision=None, **kwargs):
        calls.append((path, revision))
        if path != "uoft-cs/cifar10":
            raise FileNotFoundError(f"no dataset {path}")
        return splits

    monkeypatch.setattr(download.datasets, "load_dataset", load_dataset)
    return splits, calls


def test_mirror_loads_offline_with_the_same_pixels_labels_and_class_names(tmp_path, fake_hub, monkeypatch):
    splits, calls = fake_hub
    folder = download_dataset(DownloadConfig(dataset="cifar10", to=str(tmp_path / "data")))
    assert folder == tmp_path / "data" / "cifar10" and calls == [("uoft-cs/cifar10", None)]
    assert sorted(p.name for p in folder.iterdir()) == [
        "test-00000-of-00001.parquet",
        "train-00000-of-00001.parquet",
    ]
    # images are embedded bytes even where the source referenced files; the schema keeps the class names
    table = pq.read_table(folder / "train-00000-of-00001.parquet")
    assert all(row["bytes"] for row in table.column("img").to_pylist())
    assert Features.from_arrow_schema(table.schema)["label"].names == NAMES

    monkeypatch.setenv("HF_SSDD_DATA_DIR", str(tmp_path / "data"))
    for split in ("train", "test"):
        source = load_image_source("cifar10", split, cache_dir=tmp_path / "cache")
        expected = np.stack([np.asarray(im) for im in splits[split]["img"]])
        assert torch.equal(source.images, torch.from_numpy(expected).permute(0, 3, 1, 2))
        assert source.labels.tolist() == splits[split]["label"]


def test_shards_split_a_large_split_in_order(tmp_path, fake_hub):
    splits, _ = fake_hub
    paths = write_parquet_shards(
        splits["test"], tmp_path, "test", max_shard_bytes=splits["test"].data.nbytes // 3
    )
    assert [p.name for p in paths] == [f"test-{i:05d}-of-00004.parquet" for i in range(4)]
    ids = [i for p in paths for i in pq.read_table(p).column("id").to_pylist()]
    assert ids == list(range(7))


def test_nothing_is_written_or_replaced_on_failure(tmp_path, fake_hub):
    cfg = DownloadConfig(dataset="cifar10", to=str(tmp_path / "data"), splits=["train", "validation"])
    with pytest.raises(ValueError, match="no split 'validation'.*available splits: \\['test', 'train'\\]"):
        download_dataset(cfg)
    assert not (tmp_path / "data" / "cifar10").exists()
    download_dataset(DownloadConfig(dataset="cifar10", to=str(tmp_path / "data"), splits=["test"]))
    with pytest.raises(FileExistsError, match="--overwrite"):
        download_dataset(DownloadConfig(dataset="cifar10", to=str(tmp_path / "data")))
    with pytest.raises(FileNotFoundError):
        download_dataset(DownloadConfig(dataset="someone/else", to=str(tmp_path / "data")))
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["cifar10"]  # no temporary left behind
    assert [p.name for p in (tmp_path / "data" / "cifar10").iterdir()] == ["test-00000-of-00001.parquet"]


def test_cli_download_errors_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_SSDD_DATA_DIR", raising=False)
    assert main(["download", "cifar10"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        "hf-ssdd download: error: say where to write the mirror: --to DIR (or set HF_SSDD_DATA_DIR)"
    )
    assert "\n" not in err and "Traceback" not in err
    assert main(["download", "cifar100-head", "--to", str(tmp_path)]) == 1
    assert "local-only sample" in capsys.readouterr().err


def test_offline_without_data_says_the_download_command(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_SSDD_DATA_DIR", raising=False)
    args = ["distill", "--config", "quickstart", "--output_dir", str(tmp_path / "run")]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert "hf-ssdd download cifar10 --to DIR" in err and "HF_SSDD_DATA_DIR=DIR" in err
    with pytest.raises(ConnectionError):  # --debug: the traceback instead of the line
        main([*args, "--debug", "--resume"])
