"""Moments of folded Gaussian inputs x = f(u), u ~ N(m, C), and of their mixtures (docs/model.md
§10.5): the input mean E x, the second moment E[x xᵀ], the input covariance Ω and the input–latent
cross-covariance Φ the Gaussian-equivalent ODE is fed with.

Closed forms for f ∈ {sign, erf, linear} (:data:`CLOSED_FORM_FOLDS`):

- centred u (m = 0): E[x_i x_j] = (2/π) arcsin(C_ij/√(C_ii C_jj)) (sign),
  (2/π) arcsin(C_ij/√((1+C_ii)(1+C_jj))) (erf(·/√2)), C_ij (linear);
- any m: erf(u/√2) = E_z sign(u + z) with z ~ N(0, 1) independent, so erf is sign on C + I
  (diagonal included, with independent z for x_i²); E[sign(u_i) sign(u_j)] =
  4Φ₂(a_i, a_j; ρ_ij) − 2Φ(a_i) − 2Φ(a_j) + 1, a = m/√C_ii, with the bivariate normal CDF Φ₂
  from Owen's T function (scipy.special.owens_t; Owen 1956);
- Cov(x_i, c | u Gaussian) = E f'(u_i) Cov(u_i, c) (Stein's lemma).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erf, ndtr, owens_t

__all__ = ["CLOSED_FORM_FOLDS", "fold_mean", "fold_slope", "fold_second_moment",
           "bivariate_normal_cdf", "folded_mixture_moments"]

CLOSED_FORM_FOLDS = ("sign", "erf", "linear")
#: Rows of the N×N second moment computed at once (bounds the temporaries' memory).
ROW_BLOCK = 512


def _check_fold(f: str) -> None:
    if f not in CLOSED_FORM_FOLDS:
        raise ValueError(f"closed-form input moments exist for f in {', '.join(CLOSED_FORM_FOLDS)}"
                         f", not f = {f!r}")


def _sign_variance(var, f: str):
    """The variance s² of the sign argument: f(u) = E_z sign(u + z) with z ~ N(0, 1) for erf
    (s² = 1 + σ²), sign(u) itself (s² = σ²)."""
    return var if f == "sign" else 1.0 + var


def fold_mean(mean, var, f: str) -> np.ndarray:
    """E f(u) for u ~ N(mean, var), elementwise: erf(m/√(2σ²)) (sign), erf(m/√(2(1+σ²))) (erf),
    m (linear)."""
    _check_fold(f)
    mean, var = np.asarray(mean, dtype=np.float64), np.asarray(var, dtype=np.float64)
    if f == "linear":
        return mean.copy()
    return erf(mean / np.sqrt(2.0 * _sign_variance(var, f)))


def fold_slope(mean, var, f: str) -> np.ndarray:
    """E f'(u) for u ~ N(mean, var), elementwise: √(2/π)/s · exp(−m²/(2s²)) with s² = σ² (sign)
    or 1 + σ² (erf); 1 (linear)."""
    _check_fold(f)
    mean, var = np.asarray(mean, dtype=np.float64), np.asarray(var, dtype=np.float64)
    if f == "linear":
        return np.ones(np.broadcast(mean, var).shape)
    scale = _sign_variance(var, f)
    return math.sqrt(2.0 / math.pi) / np.sqrt(scale) * np.exp(-0.5 * mean * mean / scale)


def bivariate_normal_cdf(h, k, rho) -> np.ndarray:
    """Φ₂(h, k; ρ) = P(X ≤ h, Y ≤ k) for standard normals with correlation |ρ| < 1, elementwise,
    by Owen's formula ½Φ(h) + ½Φ(k) − T(h, a_h) − T(k, a_k) − β (h = k = 0: ¼ + arcsin ρ/(2π))."""
    h, k, rho = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (h, k, rho)))
    root = np.sqrt((1.0 - rho) * (1.0 + rho))
    with np.errstate(divide="ignore", invalid="ignore"):
        a_h = np.where(h == 0.0, np.copysign(np.inf, k - rho * h), (k - rho * h) / (h * root))
        a_k = np.where(k == 0.0, np.copysign(np.inf, h - rho * k), (h - rho * k) / (k * root))
    # β from the signs, not from h·k, which underflows to 0 for tiny arguments
    same_sign = np.sign(h) * np.sign(k) > 0.0
    beta = np.where(same_sign | (((h == 0.0) | (k == 0.0)) & (h + k >= 0.0)), 0.0, 0.5)
    value = 0.5 * ndtr(h) + 0.5 * ndtr(k) - owens_t(h, a_h) - owens_t(k, a_k) - beta
    both_zero = (h == 0.0) & (k == 0.0)
    return np.where(both_zero, 0.25 + np.arcsin(rho) / (2.0 * math.pi), value)


def _sign_second_moment(mean, C, variances) -> np.ndarray:
    """E[sign(u_i + z_i) sign(u_j + z_j)] for u ~ N(mean, C), where the terms have variances
    ``variances`` (diag C for sign; 1 + diag C for erf, z_i independent N(0, 1) even for i = j)
    and covariance C_ij: correlation ρ_ij = C_ij/√(variances_i variances_j)."""
    N = C.shape[0]
    scale = np.sqrt(variances)
    a = mean / scale
    phi = ndtr(a)
    centred = not np.any(a)
    out = np.empty((N, N))
    for start in range(0, N, ROW_BLOCK):
        rows = slice(start, min(start + ROW_BLOCK, N))
        rho = np.clip(C[rows] / np.outer(scale[rows], scale), -1.0, 1.0)
        if centred:
            out[rows] = 2.0 / math.pi * np.arcsin(rho)
            continue
        inner = np.clip(rho, -1.0 + 1e-15, 1.0 - 1e-15)
        cdf = bivariate_normal_cdf(a[rows, None], a[None, :], inner)
        out[rows] = 4.0 * cdf - 2.0 * phi[rows, None] - 2.0 * phi[None, :] + 1.0
    return out


def fold_second_moment(mean, C, f: str) -> np.ndarray:
    """E[f(u) f(u)ᵀ] (N, N) for u ~ N(mean, C) (docs/model.md §10.5)."""
    _check_fold(f)
    mean = np.asarray(mean, dtype=np.float64)
    C = np.asarray(C, dtype=np.float64)
    if f == "linear":
        return C + np.outer(mean, mean)
    out = _sign_second_moment(mean, C, _sign_variance(np.diag(C), f))
    if f == "erf":
        return out
    np.fill_diagonal(out, 1.0)
    return out


def folded_mixture_moments(means, C, cross, latent_means, weights, f: str):
    """Input moments of x = f(u) when, given the label J (probability ``weights[J]``),
    u ~ N(means[J], C) and Cov(u, c | J) = ``cross`` (N, D), E[c | J] = latent_means[J]
    (docs/model.md §10.5; one label with zero means for a Gaussian latent).

    Returns
    -------
    input_mean : (N,) E x.
    omega : (N, N) Ω = Cov(x).
    phi : (N, D) Φ = E[(x − Ex)(c − Ec)ᵀ].
    """
    means = np.atleast_2d(np.asarray(means, dtype=np.float64))
    latent_means = np.atleast_2d(np.asarray(latent_means, dtype=np.float64))
    weights = np.asarray(weights, dtype=np.float64)
    variances = np.diag(C)
    latent_mean = weights @ latent_means
    input_mean = np.zeros(C.shape[0])
    second = np.zeros_like(C)
    phi = np.zeros(cross.shape)
    for p, m, mc in zip(weights, means, latent_means):
        label_mean = fold_mean(m, variances, f)
        input_mean += p * label_mean
        second += p * fold_second_moment(m, C, f)
        phi += p * (np.outer(label_mean, mc - latent_mean)
                    + fold_slope(m, variances, f)[:, None] * cross)
    omega = second - np.outer(input_mean, input_mean)
    return input_mean, (omega + omega.T) / 2, phi
