"""Teacher fidelity against independent float64 formulas (numpy), and its limiting cases."""

import numpy as np
import pytest
import torch

from hf_ssdd.transfer.fidelity import fidelity_halves, fit_linear_map, linear_cka, linear_fidelity


def _reference(x_fit, y_fit, x_eval, y_eval):
    """R² of a least-squares affine map (numpy lstsq, no ridge) and linear CKA, in float64."""
    x_fit, y_fit, x_eval, y_eval = (np.asarray(a, dtype=np.float64) for a in (x_fit, y_fit, x_eval, y_eval))
    coef, *_ = np.linalg.lstsq(np.c_[x_fit, np.ones(len(x_fit))], y_fit, rcond=None)
    prediction = np.c_[x_eval, np.ones(len(x_eval))] @ coef
    r2 = 1 - ((y_eval - prediction) ** 2).sum() / ((y_eval - y_eval.mean(0)) ** 2).sum()
    x, y = x_eval - x_eval.mean(0), y_eval - y_eval.mean(0)
    cka = np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))
    return r2, cka


def _data(n=400, d=16, big_d=24, noise=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * torch.linspace(0.5, 3, d)  # anisotropic
    y = x @ torch.randn(d, big_d, generator=g) + 2.0 + noise * torch.randn(n, big_d, generator=g)
    return x, y


def test_matches_the_float64_formula():
    x, y = _data(noise=5.0)
    fit, held_out = fidelity_halves(len(x))
    result = linear_fidelity(x[fit], y[fit], x[held_out], y[held_out])
    r2, cka = _reference(x[fit], y[fit], x[held_out], y[held_out])
    assert 0.5 < r2 < 0.99  # a noisy map: neither trivial nor exact
    assert result["r2"] == pytest.approx(r2, abs=1e-6) and result["cka"] == pytest.approx(cka, abs=1e-9)


def test_exact_linear_map_has_r2_one_and_independent_noise_r2_zero():
    x, y = _data(noise=0.0)
    assert linear_fidelity(x[:200], y[:200], x[200:], y[200:])["r2"] == pytest.approx(1.0, abs=1e-6)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(20000, 8, generator=g), torch.randn(20000, 8, generator=g)
    result = linear_fidelity(x[:10000], y[:10000], x[10000:], y[10000:])
    assert abs(result["r2"]) < 5e-3 and result["cka"] < 5e-3


def test_weight_and_bias_recover_an_affine_map():
    x, _ = _data()
    g = torch.Generator().manual_seed(3)
    true_w, true_b = (
        torch.randn(16, 5, dtype=torch.float64, generator=g),
        torch.arange(5.0, dtype=torch.float64),
    )
    y = x.double() @ true_w + true_b
    weight, bias = fit_linear_map(x, y, ridge=0.0)
    assert weight.dtype == bias.dtype == torch.float64
    torch.testing.assert_close(weight, true_w, atol=1e-9, rtol=0)
    torch.testing.assert_close(bias, true_b, atol=1e-9, rtol=0)
    shrunk, _ = fit_linear_map(x, y)  # the default ridge only nudges the solution
    torch.testing.assert_close(shrunk, true_w, atol=1e-4, rtol=0)


def test_cka_invariances_and_both_computation_paths():
    x, y = _data(n=50, d=80, big_d=60)  # n < d: Gram-matrix path
    q, _ = torch.linalg.qr(
        torch.randn(80, 80, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    )
    assert linear_cka(x, x.double() @ q) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, 7.0 * x + 3.0) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(3.0 * x.double(), y) == pytest.approx(linear_cka(x, y), abs=1e-12)
    assert linear_cka(x, y) == pytest.approx(_reference(x, y, x, y)[1], abs=1e-9)
    tall_x, tall_y = _data(n=300, d=8, big_d=6)  # n > d: feature-space path
    assert linear_cka(tall_x, tall_y) == pytest.approx(
        _reference(tall_x, tall_y, tall_x, tall_y)[1], abs=1e-9
    )
    assert linear_cka(torch.ones(10, 3), y[:10]) == 0.0


def test_halves_are_a_fixed_disjoint_partition():
    fit, held_out = fidelity_halves(11)
    assert len(fit) == 5 and len(held_out) == 6
    assert sorted(torch.cat([fit, held_out]).tolist()) == list(range(11))
    assert torch.equal(fit, fidelity_halves(11)[0]) and not torch.equal(fit, fidelity_halves(11, seed=1)[0])


def test_bad_input_names_the_shapes():
    x, y = _data()
    with pytest.raises(ValueError, match=r"teacher_fit \[399, 24\].*same images, in the same order"):
        linear_fidelity(x, y[:-1], x, y)
    with pytest.raises(ValueError, match=r"student_eval \[400, 15\]"):
        linear_fidelity(x, y, x[:, :15], y)
    with pytest.raises(ValueError, match=r"\['teacher_eval'\] contain NaN"):
        linear_fidelity(x, y, x, torch.full_like(y, float("nan")))
    with pytest.raises(ValueError, match="constant on the eval rows"):
        linear_fidelity(x, y, x, torch.ones_like(y))
    with pytest.warns(UserWarning, match="16 encoder features but only 10 fit rows"):
        linear_fidelity(x[:10], y[:10], x, y)
