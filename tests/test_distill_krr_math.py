"""KRR-ST math against an independent float64 implementation written from the formulas (spec §1.4)."""

import numpy as np
import pytest
import torch

from hf_ssdd.distill.krr_st import krr_predict, with_bias_column


def _reference_predict(fs, fr, y, ridge):
    """ŷ = K_rs (K_ss + λI)⁻¹ Y with λ = ridge·tr(K_ss), in float64 numpy with an explicit inverse."""
    fs = np.concatenate([fs, np.ones((fs.shape[0], 1))], axis=1)
    fr = np.concatenate([fr, np.ones((fr.shape[0], 1))], axis=1)
    k_ss = fs @ fs.T
    k_rs = fr @ fs.T
    lam = ridge * np.trace(k_ss)
    return k_rs @ np.linalg.inv(k_ss + lam * np.eye(len(fs))) @ y


@pytest.mark.parametrize("solver", ["cholesky", "lu"])
def test_prediction_matches_float64_formula(solver):
    g = torch.Generator().manual_seed(0)
    fs, fr, y = (
        torch.rand(20, 50, generator=g),
        torch.rand(7, 50, generator=g),
        torch.randn(20, 6, generator=g),
    )
    pred = krr_predict(with_bias_column(fs), with_bias_column(fr), y, ridge=1e-6, solver=solver)
    ref = _reference_predict(fs.double().numpy(), fr.double().numpy(), y.double().numpy(), 1e-6)
    np.testing.assert_allclose(pred.numpy(), ref, rtol=2e-3, atol=2e-4)


def test_float64_path_passes_gradcheck():
    g = torch.Generator().manual_seed(1)
    fs = torch.rand(6, 10, generator=g, dtype=torch.float64, requires_grad=True)
    fr = torch.rand(4, 10, generator=g, dtype=torch.float64)
    y = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)

    fs0 = with_bias_column(fs.detach())
    lam = 1e-3 * torch.trace(fs0 @ fs0.T)  # λ is detached in KRR-ST: a constant for the derivative

    def f(fs, y):  # the formula's derivative in float64 (krr_predict itself computes in float32)
        fs1, fr1 = with_bias_column(fs), with_bias_column(fr)
        k_ss, k_rs = fs1 @ fs1.T, fr1 @ fs1.T
        chol = torch.linalg.cholesky(k_ss + lam * torch.eye(6, dtype=torch.float64))
        return k_rs @ torch.cholesky_solve(y, chol)

    assert torch.autograd.gradcheck(f, (fs, y))


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward_features(self, x):
        return torch.relu(self.conv(x)).flatten(1)


def test_outer_loss_gradients_match_float64_formula():
    """Gradients w.r.t. synthetic images and targets through a tiny network, our path vs float64 formula."""
    torch.manual_seed(0)
    net = TinyNet()
    x_syn = torch.randn(8, 3, 6, 6)
    y_syn = torch.randn(8, 5)
    x_real = torch.randn(5, 3, 6, 6)
    y_real = torch.randn(5, 5)

    xs, ys = x_syn.clone().requires_grad_(), y_syn.clone().requires_grad_()
    pred = krr_predict(
        with_bias_column(net.forward_features(xs)),
        with_bias_column(net.forward_features(x_real)),
        ys,
        ridge=1e-6,
    )
    loss = (pred - y_real).pow(2).mean()
    gx, gy = torch.autograd.grad(loss, [xs, ys])

    net64 = TinyNet().double()
    net64.load_state_dict({k: v.double() for k, v in net.state_dict().items()})
    xs64, ys64 = x_syn.double().requires_grad_(), y_syn.double().requires_grad_()
    phi_s = torch.cat([net64.forward_features(xs64), torch.ones(8, 1, dtype=torch.float64)], 1)
    phi_r = torch.cat([net64.forward_features(x_real.double()), torch.ones(5, 1, dtype=torch.float64)], 1)
    k_ss = phi_s @ phi_s.T
    lam = 1e-6 * torch.trace(k_ss).detach()
    pred64 = phi_r @ phi_s.T @ torch.linalg.inv(k_ss + lam * torch.eye(8, dtype=torch.float64)) @ ys64
    loss64 = ((pred64 - y_real.double()) ** 2).sum() / pred64.numel()
    gx64, gy64 = torch.autograd.grad(loss64, [xs64, ys64])

    torch.testing.assert_close(loss.double(), loss64, rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(gx.double(), gx64, rtol=2e-2, atol=2e-4 * gx64.abs().max().item())
    torch.testing.assert_close(gy.double(), gy64, rtol=2e-2, atol=2e-4 * gy64.abs().max().item())
