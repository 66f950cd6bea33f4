import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import data_path
from datasets import ClassLabel, Dataset, Features, Image, Value
from PIL import Image as PILImage
from safetensors import safe_open

from hf_ssdd.data import (
    ImageSource,
    check_labels,
    compute_normalization_stats,
    decode_images,
    denormalize,
    load_hf_dataset,
    load_image_source,
    normalization,
    normalize,
    resolve_dataset,
)
from hf_ssdd.data.source import progress_bar

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------


def _parquet_rows(path: Path, column: str, rows: list[int]) -> tuple[list[bytes], np.ndarray]:
    """Encoded image bytes at ``rows`` and all labels, read with pyarrow only."""
    table = pq.read_table(path)
    blobs = [table.column(column)[i].as_py()["bytes"] for i in rows]
    return blobs, table.column("label").to_numpy() if "label" in table.column_names else None


def _pil_chw(blob: bytes, size: int | None = None) -> np.ndarray:
    image = PILImage.open(io.BytesIO(blob)).convert("RGB")
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), PILImage.Resampling.LANCZOS)
    return np.asarray(image).transpose(2, 0, 1)


def _encode(image: PILImage.Image, fmt: str = "PNG") -> dict:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return {"bytes": buffer.getvalue(), "path": None}


def _write_split(folder: Path, columns: dict, features: Features, split: str = "train") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Dataset.from_dict(columns, features=features).to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
    return folder


def _labeled(images: list[dict], labels: list[int]) -> tuple[dict, Features]:
    features = Features({"image": Image(), "label": ClassLabel(names=["a", "b", "c"])})
    return {"image": images, "label": labels}, features


def _random_images(n: int, size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> list[PILImage.Image]:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "CMYK": 4, "L": 1, "LA": 2}[mode]
    out = []
    for _ in range(n):
        pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
        out.append(PILImage.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode=mode))
    return out


# ---------------------------------------------------------------------------------------------------------------
# resolution
# ---------------------------------------------------------------------------------------------------------------


def test_hub_id_resolves_to_local_folder():
    folder = data_path("cifar10")
    for ref in ("uoft-cs/cifar10", "cifar10"):
        resolved = resolve_dataset(ref)
        assert Path(resolved.local_dir) == folder
        assert resolved.hub_id == "uoft-cs/cifar10" and resolved.spec.name == "cifar10"
        assert resolved.path_or_id == "parquet"
        assert sorted(resolved.data_files) == ["test", "train"]


def test_tiny_imagenet_keeps_valid_split_name():
    data_path("tiny-imagenet")
    resolved = resolve_dataset("zh-plus/tiny-imagenet")
    assert sorted(resolved.data_files) == ["train", "valid"]
    assert len(resolved.data_files["train"]) == 4


def test_offline_unresolvable_id_names_the_expected_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_SSDD_DATA_DIR", str(tmp_path))
    with pytest.raises(ConnectionError, match="HF_SSDD_DATA_DIR") as err:
        load_hf_dataset("someone/missing-set", "train")
    assert str(tmp_path / "missing-set") in str(err.value)


def test_local_only_sample_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_SSDD_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="cifar100-head"):
        resolve_dataset("cifar100-head")


def test_missing_path_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_dataset(str(tmp_path / "nope"))


def test_unknown_split_lists_available_splits():
    folder = data_path("cifar10")
    with pytest.raises(ValueError, match=r"no split 'validation'; available splits: \['test', 'train'\]"):
        load_hf_dataset(folder, "validation")


def test_data_subfolder_and_readme_configs_layouts(tmp_path):
    columns, features = _labeled([_encode(im) for im in _random_images(4, (8, 8))], [0, 1, 2, 0])
    nested = _write_split(tmp_path / "nested" / "data", columns, features).parent
    assert sorted(resolve_dataset(nested).data_files) == ["train"]
    assert len(load_hf_dataset(nested, "train")) == 4

    repo = tmp_path / "repo"
    _write_split(repo / "data", columns, features, split="holdout")
    (repo / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: eval\n    path: data/holdout-*\n---\n# card\n"
    )
    resolved = resolve_dataset(repo)
    assert resolved.path_or_id == str(repo) and resolved.data_files is None
    source = load_image_source(repo, split="eval", cache_dir=tmp_path / "cache")
    assert source.images.shape == (4, 3, 8, 8) and source.labels.tolist() == [0, 1, 2, 0]
    with pytest.raises(ValueError, match="eval"):
        load_hf_dataset(repo, "train")


# ---------------------------------------------------------------------------------------------------------------
# real data
# ---------------------------------------------------------------------------------------------------------------


def test_cifar10_slice_matches_parquet(tmp_path):
    folder = data_path("cifar10")
    source = load_image_source(folder, "test", max_examples=64, cache_dir=tmp_path)
    assert isinstance(source, ImageSource) and len(source) == 64
    assert source.images.dtype == torch.uint8 and source.images.shape == (64, 3, 32, 32)
    assert source.labels.dtype == torch.int64
    rows = [0, 17, 63]
    blobs, labels = _parquet_rows(folder / "test-00000-of-00001.parquet", "img", rows)
    assert source.labels.tolist() == labels[:64].tolist()
    for row, blob in zip(rows, blobs):
        np.testing.assert_array_equal(source.images[row].numpy(), _pil_chw(blob))
    assert source.class_names[0] == "airplane" and source.num_classes == 10
    assert (source.mean, source.std) == normalization("cifar10", 32)
    assert source.hub_id == "uoft-cs/cifar10" and source.split == "test" and source.image_size == 32


def test_cifar10_train_decoded_once_then_cached(tmp_path):
    data_path("cifar10")
    start = time.perf_counter()
    first = load_image_source("uoft-cs/cifar10", "train", cache_dir=tmp_path)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    second = load_image_source("uoft-cs/cifar10", "train", cache_dir=tmp_path)
    checksum = int(second.images.sum())  # touch every byte of the cached array
    second_s = time.perf_counter() - start
    print(
        f"\nCIFAR-10 train (50k): first load {first_s:.2f} s (decode + cache), second {second_s:.2f} s (cache hit)"
    )
    assert first.images.shape == (50000, 3, 32, 32)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert checksum == int(first.images.sum())
    assert first.fingerprint == second.fingerprint
    assert [p.name for p in (tmp_path / "sources").iterdir()] == [f"{first.fingerprint}.safetensors"]
    assert torch.bincount(first.labels).tolist() == [5000] * 10


def test_fingerprint_stable_across_processes(tmp_path):
    folder = data_path("cifar10")
    here = load_image_source(folder, "test", max_examples=8, cache_dir=tmp_path / "a")
    code = (
        "from hf_ssdd.data import load_image_source; import sys; "
        "print(load_image_source(sys.argv[1], 'test', max_examples=8, cache_dir=sys.argv[2]).fingerprint)"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", code, str(folder), str(tmp_path / "b")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == here.fingerprint
    other = load_image_source(folder, "test", max_examples=9, cache_dir=tmp_path / "a")
    assert other.fingerprint != here.fingerprint


def test_max_examples_is_a_prefix(tmp_path):
    folder = data_path("cifar10")
    small = load_image_source(folder, "test", max_examples=16, cache_dir=tmp_path)
    large = load_image_source(folder, "test", max_examples=40, cache_dir=tmp_path)
    assert torch.equal(small.images, large.images[:16]) and torch.equal(small.labels, large.labels[:16])


def test_tiny_imagenet_valid_64px(tmp_path):
    folder = data_path("tiny-imagenet")
    source = load_image_source("zh-plus/tiny-imagenet", "valid", max_examples=32, cache_dir=tmp_path)
    assert source.images.shape == (32, 3, 64, 64) and source.image_size == 64
    blobs, labels = _parquet_rows(folder / "valid-00000-of-00001.parquet", "image", [0, 31])
    assert source.labels.tolist() == labels[:32].tolist()
    np.testing.assert_array_equal(source.images[31].numpy(), _pil_chw(blobs[1]))
    assert source.num_classes == 200 and source.class_names[0].startswith("n0")
    assert (source.mean, source.std) == normalization("tiny-imagenet", 64)


def test_flowers_non_square_resized_to_32(tmp_path):
    folder = data_path("flowers102")
    source = load_image_source("flowers102", "train", max_examples=12, cache_dir=tmp_path)
    assert source.images.shape == (12, 3, 32, 32)
    blobs, labels = _parquet_rows(folder / "train-00000-of-00001.parquet", "image", [0, 5, 11])
    assert PILImage.open(io.BytesIO(blobs[0])).size[0] != PILImage.open(io.BytesIO(blobs[0])).size[1]
    for row, blob in zip([0, 5, 11], blobs):
        np.testing.assert_array_equal(source.images[row].numpy(), _pil_chw(blob, 32))
    assert source.labels.tolist() == labels[:12].tolist()
    assert source.mean == (0.4344, 0.3030, 0.2955)  # KRR-ST's flowers-32 constants, typo included


def test_flowers_explicit_size_and_mkdt_convention(tmp_path):
    data_path("flowers102")
    source = load_image_source("flowers102", "test", image_size=64, max_examples=4, cache_dir=tmp_path)
    assert source.images.shape == (4, 3, 64, 64) and source.mean == (0.4344, 0.3830, 0.2955)
    mkdt = load_image_source("flowers102", "test", max_examples=4, cache_dir=tmp_path, convention="mkdt")
    assert mkdt.mean == pytest.approx(
        compute_normalization_stats(mkdt.images)[0]
    )  # MKDT gives none: computed


def test_cifar100_head_fine_labels(tmp_path):
    data_path("cifar100-head")
    source = load_image_source("cifar100-head", "test", max_examples=10, cache_dir=tmp_path)
    assert source.labels[0].item() == 49 and source.class_names[49] == "mountain"
    assert source.num_classes == 100
    assert source.mean == normalization("cifar100", 32)[0]
    assert source.hub_id is None


# ---------------------------------------------------------------------------------------------------------------
# synthetic parquet folders
# ---------------------------------------------------------------------------------------------------------------


def test_grayscale_images_and_computed_stats(tmp_path):
    images = _random_images(5, (8, 8), "L")
    folder = _write_split(tmp_path / "gray", *_labeled([_encode(im) for im in images], [0, 1, 2, 1, 0]))
    source = load_image_source(folder, cache_dir=tmp_path / "cache")
    assert source.images.shape == (5, 3, 8, 8) and source.image_size == 8
    gray = np.stack([np.asarray(im) for im in images])
    for channel in range(3):
        np.testing.assert_array_equal(source.images[:, channel].numpy(), gray)
    expected_mean = gray.astype(np.float64).mean() / 255
    expected_std = (gray.astype(np.float64) / 255).std()
    assert source.mean == pytest.approx((expected_mean,) * 3, abs=1e-12)
    assert source.std == pytest.approx((expected_std,) * 3, abs=1e-12)
    (cache_file,) = (tmp_path / "cache" / "sources").iterdir()
    with safe_open(str(cache_file), framework="pt") as handle:
        meta = json.loads(handle.metadata()["hf_ssdd"])
    assert meta["mean"] == pytest.approx(list(source.mean)) and meta["class_names"] == ["a", "b", "c"]


@pytest.mark.parametrize("mode", ["RGBA", "CMYK", "LA", "P"])
def test_color_modes_become_rgb(tmp_path, mode):
    if mode == "P":
        base = _random_images(3, (6, 6), "RGB", seed=1)
        images = [im.convert("P", palette=PILImage.Palette.ADAPTIVE) for im in base]
        for im in images:
            im.info["transparency"] = 0
        encoded = [_encode(im) for im in images]
        expected = [PILImage.open(io.BytesIO(e["bytes"])).convert("RGBA").convert("RGB") for e in encoded]
    else:
        fmt = "JPEG" if mode == "CMYK" else "PNG"
        encoded = [_encode(im, fmt) for im in _random_images(3, (6, 6), mode, seed=2)]
        expected = [PILImage.open(io.BytesIO(e["bytes"])).convert("RGB") for e in encoded]
    assert PILImage.open(io.BytesIO(encoded[0]["bytes"])).mode == mode
    folder = _write_split(tmp_path / f"modes-{mode}", *_labeled(encoded, [0, 1, 2]))
    source = load_image_source(folder, cache_dir=tmp_path / "cache")
    for row, image in enumerate(expected):
        np.testing.assert_array_equal(source.images[row].numpy(), np.asarray(image).transpose(2, 0, 1))


def test_odd_sizes_need_image_size(tmp_path):
    images = [im for size in [(7, 5), (9, 9), (3, 11)] for im in _random_images(1, size, seed=sum(size))]
    folder = _write_split(tmp_path / "odd", *_labeled([_encode(im) for im in images], [0, 1, 2]))
    with pytest.raises(ValueError, match="pass image_size="):
        load_image_source(folder, cache_dir=tmp_path / "cache")
    source = load_image_source(folder, image_size=6, cache_dir=tmp_path / "cache")
    assert source.images.shape == (3, 3, 6, 6)
    for row, image in enumerate(images):
        expected = np.asarray(image.resize((6, 6), PILImage.Resampling.LANCZOS)).transpose(2, 0, 1)
        np.testing.assert_array_equal(source.images[row].numpy(), expected)


def test_square_images_of_different_sizes_need_image_size(tmp_path):
    images = _random_images(1, (8, 8)) + _random_images(1, (9, 9))
    folder = _write_split(tmp_path / "two-sizes", *_labeled([_encode(im) for im in images], [0, 1]))
    with pytest.raises(ValueError, match="different sizes .*pass image_size="):
        load_image_source(folder, cache_dir=tmp_path / "cache")


def test_no_label_column(tmp_path):
    features = Features({"image": Image(), "caption": Value("string")})
    images = [_encode(im) for im in _random_images(3, (4, 4))]
    folder = _write_split(tmp_path / "unlabeled", {"image": images, "caption": ["x", "y", "z"]}, features)
    source = load_image_source(folder, cache_dir=tmp_path / "cache")
    assert source.labels is None and source.class_names is None and source.num_classes is None
    assert len(source.subset([2, 0])) == 2


def test_no_image_column(tmp_path):
    features = Features({"x": Value("int64"), "label": Value("int64")})
    folder = _write_split(tmp_path / "tabular", {"x": [1, 2], "label": [0, 1]}, features)
    with pytest.raises(
        ValueError, match=r"no image column; columns are \['x', 'label'\]; pass image_column="
    ):
        load_image_source(folder, cache_dir=tmp_path / "cache")


def test_empty_dataset(tmp_path):
    folder = _write_split(tmp_path / "empty", *_labeled([], []))
    with pytest.raises(ValueError, match="is empty"):
        load_image_source(folder, cache_dir=tmp_path / "cache")


def test_column_overrides(tmp_path):
    features = Features({"a": Image(), "b": Image(), "target": Value("int32"), "label": Value("string")})
    first, second = _random_images(2, (4, 4), seed=3), _random_images(2, (4, 4), seed=4)
    columns = {
        "a": [_encode(im) for im in first],
        "b": [_encode(im) for im in second],
        "target": [3, 7],
        "label": ["p", "q"],
    }
    folder = _write_split(tmp_path / "two-images", columns, features)
    with pytest.raises(ValueError, match="several image columns"):
        load_image_source(folder, cache_dir=tmp_path / "cache")
    source = load_image_source(folder, image_column="b", label_column="target", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(source.images[1].numpy(), np.asarray(second[1]).transpose(2, 0, 1))
    assert source.labels.tolist() == [3, 7] and source.num_classes == 8
    with pytest.raises(ValueError, match="labels must be integers"):
        load_image_source(folder, image_column="a", label_column="label", cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match=r"image_column='c' not found; columns are"):
        load_image_source(folder, image_column="c", cache_dir=tmp_path / "cache")


# ---------------------------------------------------------------------------------------------------------------
# ImageSource methods and normalization
# ---------------------------------------------------------------------------------------------------------------


def _toy_source() -> ImageSource:
    images = torch.arange(4 * 3 * 2 * 2, dtype=torch.uint8).view(4, 3, 2, 2)
    return ImageSource(
        images,
        torch.tensor([0, 1, 1, 0]),
        None,
        "toy",
        None,
        "train",
        "f0",
        (0.5, 0.4, 0.3),
        (0.2, 0.2, 0.2),
        2,
    )


def test_subset_fingerprint_is_deterministic():
    source = _toy_source()
    picked = source.subset([3, 1])
    assert torch.equal(picked.images, source.images[[3, 1]]) and picked.labels.tolist() == [0, 1]
    assert picked.fingerprint == source.subset(torch.tensor([3, 1])).fingerprint != source.fingerprint
    assert picked.fingerprint != source.subset([1, 3]).fingerprint
    masked = source.subset(torch.tensor([False, True, False, True]))
    assert masked.fingerprint == source.subset([1, 3]).fingerprint


def test_normalized_and_round_trip():
    source = _toy_source()
    mean = torch.tensor(source.mean).view(1, 3, 1, 1)
    std = torch.tensor(source.std).view(1, 3, 1, 1)
    expected = (source.images.float() / 255 - mean) / std
    torch.testing.assert_close(source.normalized(), expected)
    torch.testing.assert_close(source.normalized([2]), expected[[2]])
    assert source.normalized(dtype=torch.float64).dtype == torch.float64
    torch.testing.assert_close(normalize(source.images, source.mean, source.std), expected)
    back = denormalize(expected, source.mean, source.std)
    torch.testing.assert_close(back, source.images.float() / 255)
    assert denormalize(torch.full((1, 3, 1, 1), 10.0), source.mean, source.std).max() == 1
    assert denormalize(torch.full((1, 3, 1, 1), 10.0), source.mean, source.std, clamp=False).min() > 1


def test_to_device_moves_everything():
    source = _toy_source().to("meta")
    assert source.images.device.type == "meta" and source.labels.device.type == "meta"
    if torch.cuda.is_available():
        cuda = _toy_source().to("cuda")
        assert cuda.normalized().device.type == "cuda"


def test_compute_normalization_stats_matches_numpy():
    images = torch.randint(
        0, 256, (10, 3, 5, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    mean, std = compute_normalization_stats(images)
    pixels = images.numpy().astype(np.float64).transpose(1, 0, 2, 3).reshape(3, -1) / 255
    np.testing.assert_allclose(mean, pixels.mean(1), rtol=0, atol=1e-12)
    np.testing.assert_allclose(std, pixels.std(1), rtol=0, atol=1e-12)
    with pytest.raises(TypeError):
        compute_normalization_stats(images.float())


def test_decode_threads_match_serial():
    encoded = [_encode(im, "JPEG") for im in _random_images(600, (10, 10), seed=5)]
    serial = decode_images(encoded, 8, num_threads=1)
    threaded = decode_images(encoded, 8, num_threads=3)
    np.testing.assert_array_equal(serial, threaded)


def test_progress_bar_can_be_disabled(monkeypatch):
    monkeypatch.setenv("HF_SSDD_DISABLE_PROGRESS_BARS", "1")
    with progress_bar(10, "x") as bar:
        assert bar.disable


# ---------------------------------------------------------------------------------------------------------------
# wide grayscale, labels that mean "no label" or are out of range, undecodable rows
# ---------------------------------------------------------------------------------------------------------------


def _reference_gray(values: np.ndarray, scale: float) -> np.ndarray:
    """The reference conversion of wide grayscale: round(x · scale), clipped to 0–255, replicated to 3 channels."""
    gray = np.clip(np.rint(values.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    return np.repeat(gray[None], 3, axis=0)


@pytest.mark.parametrize(
    ("dtype", "fmt", "scale"), [(np.uint16, "PNG", 1 / 257), (np.float32, "TIFF", 255.0)]
)
def test_wide_grayscale_is_scaled_not_clipped(tmp_path, dtype, fmt, scale):
    rng = np.random.default_rng(3)
    if dtype == np.uint16:
        arrays = [rng.integers(0, 65536, (6, 6)).astype(np.uint16) for _ in range(3)]
        arrays[0][0, :3] = [0, 65535, 300]  # both ends, and a value Pillow's own conversion saturates
    else:
        arrays = [rng.random((6, 6), dtype=np.float32) for _ in range(3)]
    encoded = [_encode(PILImage.fromarray(a), fmt) for a in arrays]
    assert PILImage.open(io.BytesIO(encoded[0]["bytes"])).mode in ("I;16", "F")
    folder = _write_split(tmp_path / f"wide-{fmt}", *_labeled(encoded, [0, 1, 2]))
    source = load_image_source(folder, cache_dir=tmp_path / "cache")
    for row, a in enumerate(arrays):
        np.testing.assert_array_equal(source.images[row].numpy(), _reference_gray(a, scale))
    if dtype == np.uint16:
        assert source.images[0, 0, 0, :3].tolist() == [0, 255, 1]  # 300 / 257 → 1, not 255


def test_no_label_rows_are_left_out_with_a_count(tmp_path, capsys):
    images = [_encode(im) for im in _random_images(5, (6, 6), seed=4)]
    folder = _write_split(tmp_path / "some-unlabeled", *_labeled(images, [0, -1, 2, -1, 1]))
    source = load_image_source(folder, cache_dir=tmp_path / "cache")
    assert source.labels.tolist() == [0, 2, 1] and len(source) == 3
    for row, original in zip(range(3), (0, 2, 4)):
        np.testing.assert_array_equal(source.images[row].numpy(), _pil_chw(images[original]["bytes"]))
    assert "2 rows with the 'no label' value -1 left out, 3 kept" in capsys.readouterr().out
    folder = _write_split(tmp_path / "all-unlabeled", *_labeled(images[:2], [-1, -1]))
    unlabeled = load_image_source(folder, cache_dir=tmp_path / "cache")
    assert unlabeled.labels is None and len(unlabeled) == 2  # an unlabeled split keeps its images


def test_out_of_range_labels_are_refused(tmp_path):
    # a parquet file whose ClassLabel has 3 classes but holds the label 3 (datasets itself refuses to write one)
    images = [_encode(im) for im in _random_images(3, (6, 6), seed=5)]
    folder = _write_split(
        tmp_path / "bad-labels",
        {"image": images, "label": [0, 3, 1]},
        Features({"image": Image(), "label": Value("int64")}),
    )
    path = folder / "train-00000-of-00001.parquet"
    labeled = Features({"image": Image(), "label": ClassLabel(names=["a", "b", "c"])})
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata(labeled.arrow_schema.metadata), path)
    with pytest.raises(
        ValueError, match=r"column 'label': label 3 at row 1 is outside \[0, 3\) \(1 such rows\)"
    ):
        load_image_source(folder, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="label -2 at row 0 is outside non-negative"):
        check_labels(np.array([-2, 0]), None, "x")


def test_undecodable_row_is_named(tmp_path):
    images = [_encode(im) for im in _random_images(3, (6, 6), seed=6)]
    images[2] = {"bytes": b"not an image", "path": None}
    folder = _write_split(tmp_path / "broken", *_labeled(images, [0, 1, 2]))
    with pytest.raises(ValueError, match=r"cannot decode the image in '.*broken' split 'train', row 2: "):
        load_image_source(folder, cache_dir=tmp_path / "cache")
