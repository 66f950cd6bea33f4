import pytest

from hf_ssdd.data import get_spec, list_datasets, normalization


def test_all_paper_datasets_are_listed():
    assert set(list_datasets()) == {
        "cifar10",
        "cifar100",
        "cifar100-head",
        "tiny-imagenet",
        "imagenet-64",
        "aircraft",
        "cars",
        "cub2011",
        "dogs",
        "flowers102",
    }


@pytest.mark.parametrize("key", ["cifar10", "uoft-cs/cifar10", "UOFT-CS/CIFAR10", " cifar10 "])
def test_lookup_by_name_or_hub_id(key):
    spec = get_spec(key)
    assert spec is not None and spec.name == "cifar10" and spec.local_name == "cifar10"
    assert (spec.image_column, spec.label_column, spec.num_classes, spec.resolution) == (
        "img",
        "label",
        10,
        32,
    )


def test_unknown_dataset_is_none():
    assert get_spec("mnist") is None


def test_splits_and_columns():
    tiny = get_spec("zh-plus/tiny-imagenet")
    assert (tiny.name, tiny.local_name, tiny.test_split, tiny.resolution, tiny.num_classes) == (
        "tiny-imagenet",
        "tiny-imagenet",
        "valid",
        64,
        200,
    )
    assert get_spec("cifar100").label_column == "fine_label"
    assert get_spec("cifar100-head").hub_id is None
    assert get_spec("aircraft").train_split == "train+val"  # KRR-ST trains on FGVC-Aircraft trainval
    assert get_spec("flowers102").hub_id == "Donghyun99/Oxford-Flower-102"
    assert get_spec("imagenet-64").hub_id == "benjamin-paine/imagenet-1k-64x64"


def test_krr_st_constants_exact():
    assert normalization("cifar10", 32) == ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    assert normalization("cifar10", 64) == ((0.4914, 0.4821, 0.4465), (0.2469, 0.2433, 0.2614))
    assert normalization("cifar100", 32) == ((0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762))
    assert normalization("tiny-imagenet", 64) == normalization("tiny-imagenet", 32)
    assert normalization("tiny-imagenet", 64) == ((0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821))
    assert normalization("cars", 224) == ((0.4707, 0.4601, 0.4549), (0.2927, 0.2917, 0.3001))
    assert normalization("imagenet-64", 64) == ((0.4810, 0.4574, 0.4078), (0.2633, 0.2560, 0.2708))


def test_flowers_32_typo_is_kept():
    assert normalization("flowers102", 32)[0] == (0.4344, 0.3030, 0.2955)
    assert normalization("flowers102", 64)[0] == (0.4344, 0.3830, 0.2955)
    assert normalization("flowers102", 224)[0] == (0.4344, 0.3830, 0.2955)


def test_mkdt_constants():
    assert normalization("cifar10", 32, "mkdt") == ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
    assert normalization("cifar100", 32, "mkdt") == ((0.5071, 0.4865, 0.4409), (0.2009, 0.1984, 0.2023))
    assert normalization("tiny-imagenet", 64, "mkdt") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_missing_constants_raise():
    with pytest.raises(KeyError, match="no krr_st normalization constants for cifar10 at 224"):
        normalization("cifar10", 224)
    with pytest.raises(KeyError, match="no mkdt"):
        normalization("flowers102", 32, "mkdt")
    with pytest.raises(KeyError, match="not in the catalog"):
        normalization("mnist", 28)
    with pytest.raises(ValueError, match="unknown normalization convention"):
        normalization("cifar10", 32, "dc")
