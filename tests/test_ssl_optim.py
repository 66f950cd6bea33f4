"""LARS (timm) and the warmup-cosine schedule (transformers) against the formulas written plainly in float64."""

import math

import numpy as np
import pytest
import torch
from timm.optim import Lars
from torch import nn

from hf_ssdd.ssl import build_optimizer, lars_param_groups, warmup_cosine_scheduler


def _lars_direction(w, g, lr, wd, eta, clip, exclude, eps=1e-8):
    """The LARS update direction of solo-learn (``exclude_bias_n_norm``, ``clip_lr``) in float64 numpy."""
    w, g = np.asarray(w, dtype=np.float64), np.asarray(g, dtype=np.float64)
    if exclude:
        return g
    w_norm, g_norm = np.sqrt((w**2).sum()), np.sqrt((g**2).sum())
    trust = 1.0
    if w_norm > 0 and g_norm > 0:
        trust = eta * w_norm / (g_norm + wd * w_norm + eps)
        if clip:
            trust = min(trust / lr, 1.0)
    return trust * (g + wd * w)


class _WeightAndBias(nn.Module):
    """One adapted tensor (a 2-d weight) and one excluded tensor (a bias), in float64."""

    def __init__(self, w0, b0):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(w0, dtype=torch.float64))
        self.bias = nn.Parameter(torch.tensor(b0, dtype=torch.float64))


def _run(w0, grads, lr, wd, eta, clip, b0=(0.5, -0.5), momentum=0.9):
    model = _WeightAndBias(w0, b0)
    opt = build_optimizer("lars", model, lr=lr, weight_decay=wd, momentum=momentum, eta=eta, clip_lr=clip)
    for g in grads:
        model.weight.grad = torch.tensor(g, dtype=torch.float64)
        model.bias.grad = torch.tensor(g[0], dtype=torch.float64)
        opt.step()
    return model.weight.detach().numpy(), model.bias.detach().numpy(), opt


def _reference_run(w0, grads, lr, wd, eta, clip, b0=(0.5, -0.5), momentum=0.9):
    (w, vw), (b, vb) = (np.asarray(w0, dtype=np.float64), 0.0), (np.asarray(b0, dtype=np.float64), 0.0)
    for g in grads:
        vw = momentum * vw + _lars_direction(w, g, lr, wd, eta, clip, exclude=False)
        vb = momentum * vb + _lars_direction(b, g[0], lr, wd, eta, clip, exclude=True)
        w, b = w - lr * vw, b - lr * vb
    return w, b


W0 = [[3.0, 4.0], [0.5, -1.0]]
GRADS = [[[0.6, 0.8], [-0.2, 0.1]], [[0.1, -0.3], [0.4, 0.2]], [[-0.5, 0.2], [0.3, -0.1]]]


@pytest.mark.parametrize("wd", [0.1, 0.0])
@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize(("lr", "eta"), [(0.3, 0.02), (0.05, 1.0)])
def test_lars_three_steps_match_float64_reference(wd, clip, lr, eta):
    # weights adapted (also with weight decay 0), biases plain momentum SGD without weight decay
    w, b, _ = _run(W0, GRADS, lr=lr, wd=wd, eta=eta, clip=clip)
    w_ref, b_ref = _reference_run(W0, GRADS, lr=lr, wd=wd, eta=eta, clip=clip)
    np.testing.assert_allclose(w, w_ref, rtol=1e-14, atol=0)
    np.testing.assert_allclose(b, b_ref, rtol=1e-14, atol=0)


def test_lars_first_step_by_hand():
    # ‖w‖ = 5, ‖g‖ = 1: trust = 0.02·5 / (1 + 0.1·5) = 1/15; clipped: (1/15) / 0.5 = 2/15 < 1.
    w0, g = [[3.0, 4.0]], [[0.6, 0.8]]
    decayed = np.array([[0.6 + 0.3, 0.8 + 0.4]])
    for clip, trust in ((False, 1 / 15), (True, 2 / 15)):
        w, _, _ = _run(w0, [g], lr=0.5, wd=0.1, eta=0.02, clip=clip, b0=(0.0, 0.0))
        np.testing.assert_allclose(w, np.array(w0) - 0.5 * trust * decayed, rtol=1e-7)


def test_clip_caps_the_local_learning_rate_at_the_global_one():
    # trust = 0.02·10 / 0.01 = 20 > lr: the clipped step is a plain SGD step on g + wd·w.
    w0, g = [[6.0, 8.0]], [[0.006, 0.008]]
    w, _, _ = _run(w0, [g], lr=0.3, wd=0.0, eta=0.02, clip=True, b0=(0.0, 0.0))
    np.testing.assert_allclose(w, np.array(w0) - 0.3 * np.array(g), rtol=1e-14)


def test_zero_weight_takes_an_unscaled_step():
    w, _, _ = _run([[0.0, 0.0]], [[[1.0, -2.0]]], lr=0.1, wd=0.5, eta=0.02, clip=True, b0=(0.0, 0.0))
    np.testing.assert_allclose(w, [[-0.1, 0.2]], rtol=1e-15)


def test_zero_learning_rate_of_a_warmup_start_is_safe_with_clip():
    w, _, opt = _run([[3.0, 4.0]], [[[0.6, 0.8]]], lr=0.0, wd=0.1, eta=0.02, clip=True, b0=(0.0, 0.0))
    np.testing.assert_array_equal(w, [[3.0, 4.0]])
    weight = opt.param_groups[0]["params"][0]
    torch.testing.assert_close(
        opt.state[weight]["momentum_buffer"], torch.tensor([[0.9, 1.2]], dtype=torch.float64)
    )


def test_excluded_group_is_momentum_sgd_without_weight_decay():
    torch.manual_seed(0)
    a, b = nn.BatchNorm1d(4), nn.BatchNorm1d(4)  # only 1-d parameters: all excluded
    b.load_state_dict(a.state_dict())
    lars = build_optimizer("lars", a, lr=0.1, weight_decay=0.5)
    sgd = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(8, 4)
    for _ in range(3):
        for model, opt in ((a, lars), (b, sgd)):
            opt.zero_grad()
            model(x).pow(3).sum().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_optimizer_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="eta > 0"):
        build_optimizer("lars", nn.Linear(2, 2), lr=0.1, weight_decay=0.0, eta=0.0)
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer("adam", nn.Linear(2, 2), lr=0.1, weight_decay=0.0)  # type: ignore[arg-type]


def _model():
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Linear(5, 2, bias=False))
    model[0].weight.requires_grad_(False)
    return model


def test_lars_param_groups_exclude_biases_and_norms():
    model = _model()
    adapted, excluded = lars_param_groups(model, weight_decay=1e-4)
    assert adapted == {"params": [model[2].weight], "weight_decay": 1e-4, "always_adapt": True}
    assert excluded["always_adapt"] is False and excluded["weight_decay"] == 0.0
    assert {id(p) for p in excluded["params"]} == {id(model[0].bias), id(model[1].weight), id(model[1].bias)}
    assert len(lars_param_groups(nn.Linear(3, 3, bias=False), 0.1)) == 1


def test_build_optimizer():
    model = _model()
    lars = build_optimizer("lars", model, lr=0.3, weight_decay=1e-4, eta=0.02, clip_lr=True)
    assert isinstance(lars, Lars)
    assert [(g["always_adapt"], g["weight_decay"]) for g in lars.param_groups] == [(True, 1e-4), (False, 0.0)]
    assert all(
        g["trust_coeff"] == 0.02 and g["trust_clip"] and g["momentum"] == 0.9 for g in lars.param_groups
    )

    sgd = build_optimizer("sgd", model, lr=0.1, weight_decay=5e-4, exclude_bias_n_norm=False)
    assert type(sgd) is torch.optim.SGD
    assert len(sgd.param_groups) == 1 and sgd.param_groups[0]["weight_decay"] == 5e-4
    assert len(sgd.param_groups[0]["params"]) == 4  # the frozen weight is left out


def _lrs(opt, sched, steps):
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_warmup_cosine_matches_the_formula():
    base, warmup, total = 0.4, 10, 110
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base)
    lrs = _lrs(opt, warmup_cosine_scheduler(opt, warmup, total), total + 1)
    expected = [
        base * (s / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup))))
        for s in range(total + 1)
    ]
    np.testing.assert_allclose(lrs, expected, rtol=1e-12, atol=1e-15)
    assert (
        lrs[0] == 0.0 and lrs[warmup] == pytest.approx(base) and lrs[total] == pytest.approx(0.0, abs=1e-15)
    )
    with pytest.raises(ValueError, match="warmup_steps < total_steps"):
        warmup_cosine_scheduler(opt, 5, 5)


def test_warmup_cosine_replanned_mid_run_continues_from_its_step():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.4)
    _lrs(opt, warmup_cosine_scheduler(opt, 2, 10**9), 3)  # three steps under a provisional plan
    replanned = warmup_cosine_scheduler(opt, 2, 6, last_step=2)
    assert replanned.last_epoch == 3
    np.testing.assert_allclose(
        _lrs(opt, replanned, 4),
        [0.4 * 0.5 * (1 + math.cos(math.pi * s / 4)) for s in (1, 2, 3, 4)],
        atol=1e-12,
    )
