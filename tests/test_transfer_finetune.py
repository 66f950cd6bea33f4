import math

import pytest
import torch
from conftest import data_path

from hf_ssdd.data import load_image_source
from hf_ssdd.models import create_backbone
from hf_ssdd.transfer import FinetuneSettings, default_finetune_steps, finetune, make_optimizer, predict
from hf_ssdd.transfer.finetune import batch_indices

pytestmark = pytest.mark.usefixtures("one_thread")


def test_optimizer_is_krr_st_sgd_with_cosine_annealing_to_zero():
    model = create_backbone("convnet_8_in", head_dim=10, image_size=8)
    optimizer, scheduler = make_optimizer(model, FinetuneSettings(), steps=100)
    group = optimizer.param_groups[0]
    assert (group["momentum"], group["weight_decay"]) == (0.9, 5e-4)
    lrs = [optimizer.param_groups[0]["lr"]]
    for _ in range(100):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(0.01)
    assert lrs[25] == pytest.approx(0.005 * (1 + math.cos(math.pi / 4)))
    assert lrs[50] == pytest.approx(0.005)
    assert lrs[100] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


@pytest.mark.parametrize(
    ("target", "steps"),
    [("cifar10", 10_000), ("uoft-cs/cifar100", 10_000), ("tiny-imagenet", 10_000), ("flowers102", 5_000)]
    + [(name, 5_000) for name in ("aircraft", "cars", "cub2011", "Donghyun99/Stanford-Dogs")],
)
def test_default_iterations_per_target(target, steps):
    assert default_finetune_steps(target) == steps


def test_batches_cover_every_example_once_per_epoch():
    batches = list(batch_indices(10, 4, steps=7, seed=0))
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2, 4]
    assert sorted(torch.cat(batches[:3]).tolist()) == list(range(10))
    assert sorted(torch.cat(batches[3:6]).tolist()) == list(range(10))
    assert not torch.equal(torch.cat(batches[:3]), torch.cat(batches[3:6]))


def test_finetuning_lowers_the_loss_on_real_cifar10():
    data_path("cifar10")
    source = load_image_source("cifar10", "train", max_examples=128)
    torch.manual_seed(0)
    model = create_backbone("convnet_16_16_in", image_size=32)
    settings = FinetuneSettings(batch_size=64, lr=0.05)
    losses = finetune(
        model,
        source.images,
        source.labels,
        10,
        source.mean,
        source.std,
        40,
        settings,
        seed=0,
        progress_bar=False,
    )
    assert len(losses) == 40 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    assert model.head.out_features == 10
    predictions = predict(model, source.images[:50], source.mean, source.std, batch_size=16)
    assert predictions.shape == (50,) and predictions.dtype == torch.int64


def test_finetuning_is_reproducible_for_a_seed():
    images = torch.randint(0, 256, (20, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(20) % 3
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = create_backbone("convnet_8_in", image_size=8)
        runs.append(
            finetune(model, images, labels, 3, (0.5,) * 3, (0.25,) * 3, 5, seed=1, progress_bar=False)
        )
    assert runs[0] == runs[1]


def test_zero_steps_are_rejected():
    with pytest.raises(ValueError, match="at least one step"):
        finetune(
            create_backbone("convnet_8_in", image_size=8),
            torch.zeros(2, 3, 8, 8, dtype=torch.uint8),
            torch.zeros(2),
            2,
            (0,) * 3,
            (1,) * 3,
            0,
        )
