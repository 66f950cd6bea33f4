"""DistilledSet folder format: bit-exact round trip, plain `datasets.load_dataset`, bad input leaves nothing behind."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from hf_ssdd.distill import DistilledSet, DistilledSetError


def _set(n=12, d=7, labels=False):
    g = torch.Generator().manual_seed(0)
    meta = {
        "method": "krr_st",
        "mean": (0.49, 0.48, 0.45),
        "std": [0.25, 0.24, 0.26],
        "source": {"id": "uoft-cs/cifar10", "split": "train", "revision": "abc"},
        "teacher": {"id": "org/teacher", "revision": "sha256:1234"},
        "config": {"num_images": n, "betas": (0.9, 0.99)},
        "pretraining": {"recipe": "krr_st", "lr": 0.1, "epochs": 1000},
    }
    if labels:
        meta["class_names"] = ["cat", "dog", "ship"]
    return DistilledSet(
        torch.randn(n, 3, 8, 8, generator=g) * 3,
        torch.randn(n, d, generator=g),
        meta,
        labels=torch.arange(n) % 3 if labels else None,
    )


@pytest.mark.parametrize("labels", [False, True])
def test_round_trip_is_bit_exact(tmp_path, labels):
    dset = _set(labels=labels)
    dset.save(tmp_path / "set")
    again = DistilledSet.load(tmp_path / "set")
    assert torch.equal(again.images, dset.images) and torch.equal(again.targets, dset.targets)
    assert again.meta == dset.meta  # tuples become lists on construction, so both sides agree
    assert again.meta["config"]["betas"] == [0.9, 0.99]
    if labels:
        assert torch.equal(again.labels, dset.labels) and again.meta["class_names"] == ["cat", "dog", "ship"]
    assert (tmp_path / "set" / "preview.png").is_file()


def test_plain_load_dataset_needs_no_hf_ssdd(tmp_path):
    dset = _set()
    dset.save(tmp_path / "set")
    code = (
        "import sys, numpy as np; sys.modules['hf_ssdd'] = None\n"
        "from datasets import load_dataset\n"
        f"ds = load_dataset({str(tmp_path / 'set')!r}, split='train').with_format('numpy')\n"
        "b = ds[:]; np.save(sys.argv[1], b['pixel_values']); np.save(sys.argv[2], b['target'])\n"
        "print(ds.features['image'], b['image'].shape)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        capture_output=True, text=True, cwd=tmp_path, check=True,
    )  # fmt: skip
    assert "Image" in out.stdout and "(12, 8, 8, 3)" in out.stdout
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), dset.images.numpy())
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), dset.targets.numpy())


def test_preview_is_the_denormalized_image(tmp_path):
    dset = _set()
    dset.save(tmp_path / "set")
    from datasets import load_dataset

    preview = np.asarray(load_dataset(str(tmp_path / "set"), split="train")[0]["image"])
    expected = (dset.pixels()[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(preview, expected)


def test_bad_input_and_no_half_written_folder(tmp_path, monkeypatch):
    with pytest.raises(DistilledSetError, match="NaN"):
        DistilledSet(torch.zeros(2, 3, 4, 4), torch.tensor([[0.0], [float("nan")]]))
    with pytest.raises(DistilledSetError, match="targets must be n×D"):
        DistilledSet(torch.zeros(2, 3, 4, 4), torch.zeros(3, 5))
    with pytest.raises(DistilledSetError, match="n×3×H×W"):
        DistilledSet(torch.zeros(2, 1, 4, 4), torch.zeros(2, 5))
    dset = _set()
    dset.save(tmp_path / "set")
    with pytest.raises(FileExistsError):
        dset.save(tmp_path / "set")
    with pytest.raises(DistilledSetError, match="no data"):
        DistilledSet.load(tmp_path)
    with pytest.raises(DistilledSetError, match="not a local folder"):
        DistilledSet.from_pretrained("org/does-not-exist")
    # a failure while writing (here: the preview) leaves nothing at the target path
    import hf_ssdd.artifacts.distilled_set as module

    monkeypatch.setattr(
        module, "save_image_grid", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full"))
    )
    with pytest.raises(OSError, match="disk full"):
        dset.save(tmp_path / "broken")
    assert not (tmp_path / "broken").exists()


def test_unrecorded_normalization_is_refused_not_defaulted(tmp_path):
    dset = _set()
    dset.save(tmp_path / "set")
    (tmp_path / "set" / "README.md").unlink()
    with pytest.raises(
        DistilledSetError, match="has no README.md card, so the normalization of its images is unknown"
    ):
        DistilledSet.load(tmp_path / "set")
    with pytest.raises(DistilledSetError, match="together"):
        DistilledSet.load(tmp_path / "set", assume_mean=[0.5] * 3)
    assumed = DistilledSet.load(tmp_path / "set", assume_mean=[0.5, 0.4, 0.3], assume_std=[0.2, 0.2, 0.2])
    assert assumed.mean == (0.5, 0.4, 0.3) and assumed.meta["normalization_assumed"] is True
    assert torch.equal(assumed.images, dset.images)
