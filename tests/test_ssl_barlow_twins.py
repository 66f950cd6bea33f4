import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from hf_ssdd.ssl import BarlowTwinsLoss, BarlowTwinsModel, BarlowTwinsProjector, barlow_twins_loss

# (rows on rank 0, rows on rank 1) of the 8-sample batch used by the two-process test
SPLITS = ((4, 4), (5, 3))


def _reference_loss(z1, z2, lambd, scale_loss, eps=1e-5):
    """The Barlow Twins loss written plainly from the formula, in float64 numpy."""
    a, b = np.asarray(z1, dtype=np.float64), np.asarray(z2, dtype=np.float64)
    n, d = a.shape
    a = (a - a.mean(0)) / np.sqrt(a.var(0) + eps)  # biased variance, as BatchNorm1d
    b = (b - b.mean(0)) / np.sqrt(b.var(0) + eps)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c_ij = sum(a[k, i] * b[k, j] for k in range(n)) / n
            loss += (1.0 - c_ij) ** 2 if i == j else lambd * c_ij**2
    return scale_loss * loss


def _views(n=8, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, d, generator=g, dtype=torch.float64)
    z2 = 0.7 * z1 + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64) + 2.0
    return z1, z2


class _LinearTwins(nn.Module):
    """Tiny two-view model without BatchNorm, so that DDP shards must reproduce the full batch exactly."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3, 4, dtype=torch.float64)

    def forward(self, x1, x2):
        return barlow_twins_loss(self.fc(x1), self.fc(x2), lambd=0.2)


def _twin_inputs(n=8):
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return x1, x1 + 0.3 * torch.randn(n, 3, generator=g, dtype=torch.float64)


@pytest.mark.parametrize(("lambd", "scale_loss"), [(0.0051, 0.1), (0.3, 1.0)])
def test_loss_matches_plain_float64_formula(lambd, scale_loss):
    z1, z2 = _views(n=7, d=6)
    got = barlow_twins_loss(z1, z2, lambd=lambd, scale_loss=scale_loss)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(_reference_loss(z1, z2, lambd, scale_loss), rel=1e-12)


def test_loss_matches_batchnorm_standardization_of_the_official_code():
    z1, z2 = _views(n=9, d=4)
    bn = nn.BatchNorm1d(4, affine=False, dtype=torch.float64)
    c = bn(z1).T @ bn(z2) / 9
    on = (torch.diagonal(c) - 1).pow(2).sum()
    off = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    expected = 0.1 * (on + 0.0051 * off)
    torch.testing.assert_close(barlow_twins_loss(z1, z2), expected, rtol=1e-12, atol=0)


def test_loss_is_zero_for_identical_decorrelated_views():
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    assert barlow_twins_loss(z, z, eps=0.0).item() == pytest.approx(0.0, abs=1e-15)


def test_gradcheck():
    z1, z2 = (z.requires_grad_() for z in _views(n=5, d=3))
    assert torch.autograd.gradcheck(lambda a, b: barlow_twins_loss(a, b, lambd=0.3), (z1, z2))


def test_module_matches_function_and_ignores_autocast():
    z1, z2 = (z.float() for z in _views(n=16, d=8))
    loss = BarlowTwinsLoss(lambd=0.01, scale_loss=0.5)
    expected = barlow_twins_loss(z1, z2, lambd=0.01, scale_loss=0.5)
    torch.testing.assert_close(loss(z1, z2), expected, rtol=0, atol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = loss(z1, z2)
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, expected, rtol=0, atol=0)


def test_loss_rejects_bad_shapes():
    with pytest.raises(ValueError, match="same shape"):
        barlow_twins_loss(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match="at least 2 samples"):
        barlow_twins_loss(torch.randn(1, 3), torch.randn(1, 3))


def test_projector_layout_follows_official_code():
    projector = BarlowTwinsProjector(in_dim=8, hidden_dim=16, out_dim=12)
    kinds = [type(m) for m in projector]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2 + [nn.Linear]
    assert all(m.bias is None for m in projector if isinstance(m, nn.Linear))
    assert projector(torch.randn(5, 8)).shape == (5, 12)


class _TinyBackbone(nn.Module):
    """Smallest module satisfying the backbone contract used by BarlowTwinsModel."""

    num_features = 6

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, self.num_features, 3, bias=False)

    def forward_features(self, x):
        return self.conv(x).mean(dim=(2, 3))


def test_model_trains_backbone_and_projector():
    torch.manual_seed(0)
    model = BarlowTwinsModel(_TinyBackbone(), hidden_dim=16, out_dim=8)
    x = torch.randn(10, 3, 8, 8)
    loss = model(x, x.flip(3))
    assert loss.ndim == 0
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def _ddp_worker(rank, world_size, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        z1, z2 = _views()
        x1, x2 = _twin_inputs()
        result = {}
        for split in SPLITS:
            rows = slice(sum(split[:rank]), sum(split[: rank + 1]))
            a, b = z1[rows].clone().requires_grad_(), z2[rows].clone().requires_grad_()
            loss = barlow_twins_loss(a, b, lambd=0.2)
            loss.backward()
            result[f"{split}/loss"] = loss.detach()
            result[f"{split}/grad1"], result[f"{split}/grad2"] = a.grad, b.grad

            model = DistributedDataParallel(_LinearTwins())
            model(x1[rows], x2[rows]).backward()
            result[f"{split}/ddp_grad"] = model.module.fc.weight.grad
        torch.save(result, f"{out_dir}/rank{rank}.pt")
        dist.barrier()  # no rank leaves while gloo still holds its peer (else: "terminate called without ...")
    finally:
        dist.destroy_process_group()


def test_two_processes_give_the_whole_batch_loss_and_gradients(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    z1, z2 = (z.requires_grad_() for z in _views())
    loss = barlow_twins_loss(z1, z2, lambd=0.2)
    loss.backward()
    model = _LinearTwins()
    model(*_twin_inputs()).backward()

    for split in SPLITS:
        for rank, result in enumerate(ranks):
            rows = slice(sum(split[:rank]), sum(split[: rank + 1]))
            torch.testing.assert_close(result[f"{split}/loss"], loss.detach(), rtol=1e-12, atol=0)
            # each rank's gradient is that of the sum of the 2 identical per-rank losses
            torch.testing.assert_close(result[f"{split}/grad1"] / 2, z1.grad[rows], rtol=1e-10, atol=1e-14)
            torch.testing.assert_close(result[f"{split}/grad2"] / 2, z2.grad[rows], rtol=1e-10, atol=1e-14)
            # so DDP's gradient averaging gives exactly the whole-batch parameter gradient
            torch.testing.assert_close(
                result[f"{split}/ddp_grad"], model.fc.weight.grad, rtol=1e-10, atol=1e-14
            )
