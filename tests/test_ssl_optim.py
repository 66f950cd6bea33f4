import math

import numpy as np
import pytest
import torch
from torch import nn

from hf_ssdd.ssl import (
    LARS,
    build_optimizer,
    lars_param_groups,
    warmup_cosine_lambda,
    warmup_cosine_scheduler,
)


def _lars_direction(w, g, lr, wd, eta, clip, exclude, eps=1e-8):
    """The LARS update direction written plainly in float64 numpy."""
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


def _run_lars(w0, grads, lr, wd, eta, clip, exclude, momentum=0.9):
    w = torch.tensor(w0, dtype=torch.float64, requires_grad=True)
    opt = LARS(
        [{"params": [w], "lars_exclude": exclude}],
        lr=lr,
        momentum=momentum,
        weight_decay=wd,
        eta=eta,
        clip_lr=clip,
    )
    for g in grads:
        w.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    return w.detach().numpy()


def _reference_run(w0, grads, lr, wd, eta, clip, exclude, momentum=0.9):
    w, v = np.asarray(w0, dtype=np.float64), 0.0
    for g in grads:
        v = momentum * v + _lars_direction(w, g, lr, wd, eta, clip, exclude)
        w = w - lr * v
    return w


W0 = [[3.0, 4.0], [0.5, -1.0]]
GRADS = [[[0.6, 0.8], [-0.2, 0.1]], [[0.1, -0.3], [0.4, 0.2]]]


@pytest.mark.parametrize("exclude", [False, True])
@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize(("lr", "eta"), [(0.3, 0.02), (0.05, 1.0)])
def test_lars_two_steps_match_float64_reference(exclude, clip, lr, eta):
    got = _run_lars(W0, GRADS, lr=lr, wd=0.1, eta=eta, clip=clip, exclude=exclude)
    expected = _reference_run(W0, GRADS, lr=lr, wd=0.1, eta=eta, clip=clip, exclude=exclude)
    np.testing.assert_allclose(got, expected, rtol=1e-14, atol=0)


def test_lars_first_step_by_hand():
    # ‖w‖ = 5, ‖g‖ = 1: trust = 0.02·5 / (1 + 0.1·5) = 1/15; clipped: (1/15) / 0.5 = 2/15 < 1.
    w0, g = [[3.0, 4.0]], [[0.6, 0.8]]
    decayed = np.array([[0.6 + 0.3, 0.8 + 0.4]])
    for clip, trust in ((False, 1 / 15), (True, 2 / 15)):
        got = _run_lars(w0, [g], lr=0.5, wd=0.1, eta=0.02, clip=clip, exclude=False)
        np.testing.assert_allclose(got, np.array(w0) - 0.5 * trust * decayed, rtol=1e-7)


def test_clip_caps_the_local_learning_rate_at_the_global_one():
    # trust = 0.02·10 / 0.01 = 20 > lr: the clipped step is a plain SGD step on g + wd·w.
    w0, g = [[6.0, 8.0]], [[0.006, 0.008]]
    got = _run_lars(w0, [g], lr=0.3, wd=0.0, eta=0.02, clip=True, exclude=False)
    np.testing.assert_allclose(got, np.array(w0) - 0.3 * np.array(g), rtol=1e-14)


def test_zero_weight_takes_an_unscaled_step():
    got = _run_lars([[0.0, 0.0]], [[[1.0, -2.0]]], lr=0.1, wd=0.5, eta=0.02, clip=True, exclude=False)
    np.testing.assert_allclose(got, [[-0.1, 0.2]], rtol=1e-15)


def test_zero_learning_rate_of_a_warmup_start_is_safe_with_clip():
    w = torch.tensor([[3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    opt = LARS([w], lr=0.0, weight_decay=0.1, eta=0.02, clip_lr=True)
    w.grad = torch.tensor([[0.6, 0.8]], dtype=torch.float64)
    opt.step()
    assert torch.equal(w.detach(), torch.tensor([[3.0, 4.0]], dtype=torch.float64))
    torch.testing.assert_close(
        opt.state[w]["momentum_buffer"], torch.tensor([[0.9, 1.2]], dtype=torch.float64)
    )


def test_excluded_group_is_momentum_sgd_without_weight_decay():
    torch.manual_seed(0)
    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    lars = LARS([{"params": a.parameters(), "lars_exclude": True}], lr=0.1, weight_decay=0.5)
    sgd = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(8, 4)
    for _ in range(3):
        for model, opt in ((a, lars), (b, sgd)):
            opt.zero_grad()
            model(x).pow(2).sum().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_lars_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="eta > 0"):
        LARS(nn.Linear(2, 2).parameters(), lr=0.1, eta=0.0)


def _model():
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Linear(5, 2, bias=False))
    model[0].weight.requires_grad_(False)
    return model


def test_lars_param_groups_exclude_biases_and_norms():
    model = _model()
    adapted, excluded = lars_param_groups(model, weight_decay=1e-4)
    assert adapted == {"params": [model[2].weight], "weight_decay": 1e-4}
    assert excluded["lars_exclude"] is True and excluded["weight_decay"] == 0.0
    assert {id(p) for p in excluded["params"]} == {id(model[0].bias), id(model[1].weight), id(model[1].bias)}
    assert len(lars_param_groups(nn.Linear(3, 3, bias=False), 0.1)) == 1


def test_build_optimizer():
    model = _model()
    lars = build_optimizer("lars", model, lr=0.3, weight_decay=1e-4, eta=0.02, clip_lr=True)
    assert isinstance(lars, LARS)
    assert [(g["lars_exclude"], g["weight_decay"]) for g in lars.param_groups] == [(False, 1e-4), (True, 0.0)]
    assert all(g["eta"] == 0.02 and g["clip_lr"] and g["momentum"] == 0.9 for g in lars.param_groups)

    sgd = build_optimizer("sgd", model.parameters(), lr=0.1, weight_decay=5e-4, exclude_bias_n_norm=False)
    assert type(sgd) is torch.optim.SGD
    assert len(sgd.param_groups) == 1 and sgd.param_groups[0]["weight_decay"] == 5e-4
    assert len(sgd.param_groups[0]["params"]) == 4  # the frozen weight is left out

    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer("adam", model, lr=0.1, weight_decay=0.0)


def test_warmup_cosine_values_at_the_boundaries():
    f = lambda step: warmup_cosine_lambda(step, 10, 110, warmup_start_factor=0.1, min_factor=0.01)  # noqa: E731
    assert f(0) == pytest.approx(0.1)
    assert f(5) == pytest.approx(0.55)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.505)
    assert f(35) == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert f(110) == pytest.approx(0.01)
    assert f(500) == pytest.approx(0.01)
    assert warmup_cosine_lambda(0, 0, 4) == 1.0
    assert warmup_cosine_lambda(2, 0, 4) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="warmup_steps < total_steps"):
        warmup_cosine_lambda(0, 5, 5)


def test_warmup_cosine_scheduler_steps_per_optimizer_step():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.4)
    sched = warmup_cosine_scheduler(opt, warmup_steps=2, total_steps=4)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_allclose(lrs, [0.0, 0.2, 0.4, 0.2, 0.0], atol=1e-12)
