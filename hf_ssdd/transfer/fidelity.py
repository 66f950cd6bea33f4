"""Teacher fidelity: how well an encoder's features reproduce the teacher's on held-out real images.

KRR-ST (Lee et al., ICLR 2024) and MKDT (Joshi et al., ICLR 2025) both pre-train the encoder to regress the
teacher's representations of the distilled images; fidelity measures that quantity on real images the encoder
never saw. With the encoder's features X ∈ ℝ^{n×d} and the teacher's Y ∈ ℝ^{n×D} of the same images, split into a
fit half (f) and an eval half (e):

    affine map, ridge least squares on the fit half (centred):
        X̃ = X_f − μ_X,   Ỹ = Y_f − μ_Y,   G = X̃ᵀX̃
        W = (G + λ · tr(G)/d · I)⁻¹ X̃ᵀỸ,   b = μ_Y − μ_X W
    variance-weighted R² on the eval half (scikit-learn's ``multioutput="variance_weighted"``):
        R² = 1 − Σ ‖Y_e − (X_e W + b)‖² / Σ ‖Y_e − Ȳ_e‖²
    linear CKA on the eval half, X and Y centred (Kornblith, Norouzi, Lee, Hinton, "Similarity of Neural Network
    Representations Revisited", ICML 2019):
        CKA = ‖YᵀX‖²_F / (‖XᵀX‖_F · ‖YᵀY‖_F)

R² is 1 when the teacher is an affine function of the encoder's features, about 0 for features unrelated to it,
and negative when the map fitted on one half fails on the other. λ (relative to the mean eigenvalue tr(G)/d) only
keeps the solve stable; the map generalizes only with d well below the fit rows, so fewer fit rows than features
is warned about. CKA needs no fit and is invariant to orthogonal maps and isotropic scaling of either side. All of
it is computed in float64; both values are fractions (the harness reports them × 100, like accuracies).
"""

from __future__ import annotations

import warnings

import torch

from hf_ssdd.utils import derived_generator

DEFAULT_RIDGE = 1e-6


def fidelity_halves(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit and eval row indices (int64): the two halves of a seeded random permutation of ``range(n)``."""
    order = torch.randperm(n, generator=derived_generator(seed, "fidelity-halves"))
    return order[: n // 2], order[n // 2 :]


def fit_linear_map(
    x: torch.Tensor, y: torch.Tensor, ridge: float = DEFAULT_RIDGE
) -> tuple[torch.Tensor, torch.Tensor]:
    """``W`` [d, D] and ``b`` [D] of the ridge least-squares map ``x W + b ≈ y`` (float64, see module docstring)."""
    x, y = _float64(x), _float64(y, x.device)
    mean_x, mean_y = x.mean(0), y.mean(0)
    xc, yc = x - mean_x, y - mean_y
    gram = xc.T @ xc
    scale = gram.trace() / gram.shape[0]
    lam = ridge * (scale if scale > 0 else 1.0)
    weight = torch.linalg.solve(
        gram + lam * torch.eye(len(gram), dtype=gram.dtype, device=gram.device), xc.T @ yc
    )
    return weight, mean_y - mean_x @ weight


def r_squared(y: torch.Tensor, prediction: torch.Tensor) -> float:
    """Variance-weighted R² = 1 − Σ‖y − ŷ‖² / Σ‖y − ȳ‖², pooled over all columns of ``y``."""
    y, prediction = _float64(y), _float64(prediction, y.device)
    total = (y - y.mean(0)).pow(2).sum()
    if total == 0:
        raise ValueError(
            "R² is undefined: the teacher's features are constant on the eval rows; check the teacher"
        )
    return float(1 - (y - prediction).pow(2).sum() / total)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) of column-centred ``x`` [n, d] and ``y`` [n, D]; 0 if either is constant.

    Computed with the n×n Gram matrices (⟨XXᵀ, YYᵀ⟩ = ‖YᵀX‖²_F) when n is below the feature sizes.
    """
    x, y = _float64(x), _float64(y, x.device)
    x, y = x - x.mean(0), y - y.mean(0)
    if x.shape[0] < max(x.shape[1], y.shape[1]):
        kx, ky = x @ x.T, y @ y.T
        cross, norm_x, norm_y = (kx * ky).sum(), kx.norm(), ky.norm()
    else:
        cross, norm_x, norm_y = (y.T @ x).pow(2).sum(), (x.T @ x).norm(), (y.T @ y).norm()
    return float(cross / (norm_x * norm_y)) if norm_x > 0 and norm_y > 0 else 0.0


def linear_fidelity(
    student_fit: torch.Tensor,
    teacher_fit: torch.Tensor,
    student_eval: torch.Tensor,
    teacher_eval: torch.Tensor,
    ridge: float = DEFAULT_RIDGE,
) -> dict[str, float]:
    """R² of the teacher's eval features predicted by a linear map fitted on the fit split, and their linear CKA.

    Args:
        student_fit: encoder features [n_f, d] of the fit images.
        teacher_fit: teacher features [n_f, D] of the same images, in the same order.
        student_eval: encoder features [n_e, d] of the eval images.
        teacher_eval: teacher features [n_e, D] of the same images.
        ridge: λ, relative to the mean eigenvalue of the fit features' scatter matrix.

    Returns:
        ``{"r2": R², "cka": CKA}`` as fractions (R² ≤ 1, CKA in [0, 1]), both on the eval split.

    Raises:
        ValueError: features that are not 2-D, rows that do not pair up, differing feature sizes between the
            splits, fewer than 2 rows, or non-finite values.
    """
    _check_features(student_fit, teacher_fit, student_eval, teacher_eval)
    if student_fit.shape[1] >= student_fit.shape[0]:
        warnings.warn(
            f"teacher fidelity: {student_fit.shape[1]} encoder features but only {student_fit.shape[0]} fit rows; "
            "the linear map interpolates the fit rows and R² on the eval rows is pessimistic. Use more "
            "held-out images (max_test_examples) or a larger ridge (TransferSettings.fidelity_ridge)",
            UserWarning,
            stacklevel=2,
        )
    weight, bias = fit_linear_map(student_fit, teacher_fit, ridge)
    x_eval = _float64(student_eval, weight.device)
    prediction = x_eval @ weight + bias
    return {
        "r2": r_squared(_float64(teacher_eval, weight.device), prediction),
        "cka": linear_cka(x_eval, teacher_eval),
    }


def _float64(x: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    """``x`` in float64 on ``device`` (default: its own; CPU for devices without float64, such as MPS)."""
    device = device or x.device
    return x.to(device if device.type in ("cpu", "cuda") else "cpu", torch.float64)


def _check_features(
    student_fit: torch.Tensor,
    teacher_fit: torch.Tensor,
    student_eval: torch.Tensor,
    teacher_eval: torch.Tensor,
) -> None:
    named = {
        "student_fit": student_fit,
        "teacher_fit": teacher_fit,
        "student_eval": student_eval,
        "teacher_eval": teacher_eval,
    }
    shapes = ", ".join(f"{name} {list(t.shape)}" for name, t in named.items())
    ok = all(t.ndim == 2 for t in named.values()) and all(t.shape[0] >= 2 for t in named.values())
    ok = (
        ok and student_fit.shape[0] == teacher_fit.shape[0] and student_eval.shape[0] == teacher_eval.shape[0]
    )
    ok = (
        ok and student_fit.shape[1] == student_eval.shape[1] and teacher_fit.shape[1] == teacher_eval.shape[1]
    )
    if not ok:
        raise ValueError(
            f"teacher fidelity needs 2-D features [rows, dims] with at least 2 rows, the same rows for encoder and "
            f"teacher in each split and the same dims in both splits; got {shapes}. Pass the encoder's and the "
            "teacher's features of the same images, in the same order"
        )
    bad = [name for name, t in named.items() if not torch.isfinite(t).all()]
    if bad:
        raise ValueError(
            f"teacher fidelity: {bad} contain NaN or infinite values; check the encoder and teacher"
        )
