import hashlib
import warnings

import pytest
import torch
from conftest import data_path

from hf_ssdd.data import load_image_source
from hf_ssdd.transfer import TransferSettings, label_fraction_indices, load_target


def _labels(counts):
    """Class ``c`` repeated ``counts[c]`` times, shuffled."""
    labels = torch.arange(len(counts)).repeat_interleave(torch.tensor(counts))
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]


def test_draw_is_stratified_by_class():
    labels = _labels([100, 50, 20, 7])
    for fraction, expected in [(0.1, [10, 5, 2, 1]), (0.5, [50, 25, 10, 4]), (1.0, [100, 50, 20, 7])]:
        idx = label_fraction_indices(labels, fraction, seed=0)
        assert idx.dtype == torch.int64
        assert torch.equal(idx, idx.unique())  # sorted, no repeats
        assert torch.bincount(labels[idx], minlength=4).tolist() == expected


def test_same_seed_same_indices_other_seed_other_indices():
    labels = _labels([200] * 5)
    first = label_fraction_indices(labels, 0.05, seed=3)
    assert torch.equal(first, label_fraction_indices(labels.tolist(), 0.05, seed=3))
    assert not torch.equal(first, label_fraction_indices(labels, 0.05, seed=4))


def test_smaller_fractions_are_subsets_of_larger_ones_for_one_seed():
    labels = _labels([80, 60, 40])
    small, large = label_fraction_indices(labels, 0.1, 1), label_fraction_indices(labels, 0.5, 1)
    assert set(small.tolist()) <= set(large.tolist())


def test_empty_class_gets_one_example_with_a_warning():
    labels = _labels([100, 3, 4])
    with pytest.warns(UserWarning, match=r"rounds to zero examples for 2 class\(es\).*one example"):
        idx = label_fraction_indices(labels, 0.1, seed=0)
    assert torch.bincount(labels[idx]).tolist() == [10, 1, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        label_fraction_indices(labels, 0.5, seed=0)  # 2 per small class: no warning


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_fraction_outside_unit_interval_is_rejected(fraction):
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        label_fraction_indices(torch.arange(10), fraction, 0)


def test_one_percent_of_real_flowers102_keeps_one_image_per_class():
    data_path("flowers102")
    train = load_image_source("flowers102", "train", image_size=16)
    assert torch.bincount(train.labels).tolist() == [10] * 102
    with pytest.warns(UserWarning, match="102 class"):
        idx = label_fraction_indices(train.labels, 0.01, seed=0)
    assert torch.bincount(train.labels[idx]).tolist() == [1] * 102


def test_draws_come_from_the_train_split_and_never_contain_test_images():
    data_path("cifar10")
    settings = TransferSettings(max_train_examples=300, max_test_examples=200)
    data = load_target("cifar10", 32, settings, torch.device("cpu"))
    assert (data.train.split, data.test.split) == ("train", "test")
    test_hashes = {hashlib.sha256(img.numpy().tobytes()).digest() for img in data.test.images}
    for fraction in (0.1, 1.0):
        idx = label_fraction_indices(data.train.labels, fraction, seed=0)
        assert int(idx.max()) < len(data.train)
        picked = {hashlib.sha256(img.numpy().tobytes()).digest() for img in data.train.images[idx]}
        assert picked.isdisjoint(test_hashes)
