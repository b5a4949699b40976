"""Observables recorded along a trajectory (docs/model.md §4).

- :func:`order_parameters`: the Gaussian-equivalent W, Σ, Q, R (exact functions of the weights).
- :func:`test_set_statistics`: ε_g by Monte Carlo and the empirical field covariances.
- :func:`spectral_initial_state`: the HMM ODE's initial state from the eigendecomposition of FᵀF/N.
"""

from __future__ import annotations

import math

import numpy as np

from analysis.activations import activation
from analysis.jit import kernel
from analysis.ode import HmmInitialState


def teacher_overlap(teacher: np.ndarray) -> np.ndarray:
    """T = W̃ W̃ᵀ/D."""
    return teacher @ teacher.T / teacher.shape[1]


def order_parameters(w: np.ndarray, features: np.ndarray, teacher: np.ndarray, b: float,
                     zeta: float) -> dict[str, np.ndarray]:
    """Gaussian-equivalent order parameters (docs/model.md §4.1).

    W = w wᵀ/N, S = w F/√N (K × D), Σ = S Sᵀ/D, Q = ζ W + b² Σ, R = (b/D) S W̃ᵀ.
    """
    N, D = features.shape
    W = w @ w.T / N
    S = w @ features / math.sqrt(N)
    Sigma = S @ S.T / D
    return {"W": W, "Sigma": Sigma, "Q": zeta * W + b * b * Sigma,
            "R": (b / D) * (S @ teacher.T)}


@kernel(reassociate=True)
def _sign_input_fields(X, w, out):
    # int8 inputs are exact; reassociation lets LLVM vectorise the sums in one fixed order.
    # Two units per pass over a row (1.5× faster at K = 2 and 8, bitwise the same sums).
    P, N = X.shape
    K = w.shape[0]
    for p in range(P):
        k = 0
        while k + 1 < K:
            a0 = 0.0
            a1 = 0.0
            for i in range(N):
                x = X[p, i]
                a0 += w[k, i] * x
                a1 += w[k + 1, i] * x
            out[p, k] = a0
            out[p, k + 1] = a1
            k += 2
        if k < K:
            acc = 0.0
            for i in range(N):
                acc += w[k, i] * X[p, i]
            out[p, k] = acc
    return out


def student_fields(X: np.ndarray, w: np.ndarray) -> np.ndarray:
    """λ = X wᵀ/√N for test inputs X (P × N): float64 (BLAS), or int8 for exact sign inputs."""
    P, N = X.shape
    if X.dtype == np.int8:
        out = _sign_input_fields(X, w, np.empty((P, w.shape[0])))
    else:
        out = X @ w.T
    return out / math.sqrt(N)


@kernel()
def network_output(fields, weights, g_code, out):
    """Σ_k weights_k g(fields[p, k]) for every row p."""
    P, K = fields.shape
    for p in range(P):
        acc = 0.0
        for k in range(K):
            acc += weights[k] * activation(fields[p, k], g_code)
        out[p] = acc
    return out


def centred_covariance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(1/P) Σ_μ (a^μ − ā)(b^μ − b̄)ᵀ."""
    return (a - a.mean(axis=0)).T @ (b - b.mean(axis=0)) / a.shape[0]


def field_shape(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Skewness m₃/m₂^{3/2} and excess kurtosis m₄/m₂² − 3 of each column of a (P × n), with
    central moments m_j = (1/P) Σ_μ (a^μ − ā)^j (docs/model.md §10.4, field statistics); NaN
    for a constant column."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    skew, kurt = np.empty(a.shape[1]), np.empty(a.shape[1])
    _column_shape(a, skew, kurt)
    return skew, kurt


@kernel()
def _column_shape(a, skew, kurt):
    # Two passes per column: the mean, then m2, m3 and m4 (one pass instead of NumPy's five
    # temporaries: 1.5 → 0.05 ms a record at P = 10⁴).
    P, n = a.shape
    for j in range(n):
        mean = 0.0
        for p in range(P):
            mean += a[p, j]
        mean /= P
        m2 = 0.0
        m3 = 0.0
        m4 = 0.0
        for p in range(P):
            d = a[p, j] - mean
            d2 = d * d
            m2 += d2
            m3 += d2 * d
            m4 += d2 * d2
        m2 /= P
        if m2 > 0.0:
            skew[j] = m3 / P / m2 ** 1.5
            kurt[j] = m4 / P / (m2 * m2) - 3.0
        else:
            skew[j] = math.nan
            kurt[j] = math.nan


@kernel(reassociate=True)
def _student_statistics(lam, nu, yhat, y, Q, R, lam_mean):
    # One pass for the means and ε_g, one for the centred covariances; returns eg_mc. Plain
    # loops only: array expressions (a /= P, a[:] = 0) and np.zeros each compile machinery of
    # their own (a third of this kernel's cold compile).
    P, K = lam.shape
    M = nu.shape[1]
    nu_mean = np.empty(M)   # local: LLVM knows it aliases nothing (10 % faster than passed in)
    for k in range(K):
        lam_mean[k] = 0.0
    for n in range(M):
        nu_mean[n] = 0.0
    sq = 0.0
    for p in range(P):
        for k in range(K):
            lam_mean[k] += lam[p, k]
        for n in range(M):
            nu_mean[n] += nu[p, n]
        diff = yhat[p] - y[p]
        sq += diff * diff
    for k in range(K):
        lam_mean[k] /= P
        for l in range(K):
            Q[k, l] = 0.0
    for n in range(M):
        nu_mean[n] /= P
    for k in range(K):
        for n in range(M):
            R[k, n] = 0.0
    for p in range(P):
        for k in range(K):
            dk = lam[p, k] - lam_mean[k]
            for l in range(K):
                Q[k, l] += dk * (lam[p, l] - lam_mean[l])
            for n in range(M):
                R[k, n] += dk * (nu[p, n] - nu_mean[n])
    for k in range(K):
        for l in range(K):
            Q[k, l] /= P
        for n in range(M):
            R[k, n] /= P
    return 0.5 * sq / P


def test_set_statistics(lam: np.ndarray, nu: np.ndarray, y: np.ndarray, v: np.ndarray,
                        g_code: int) -> dict[str, np.ndarray | float]:
    """ε_g by Monte Carlo and the student's empirical field statistics (docs/model.md §4.2–4.3).

    eg_mc = (1/2P) Σ_μ (ŷ^μ − y^μ)² with the noiseless labels y; Q, R the centred covariances
    of (λ, λ) and (λ, ν); lambda_mean the mean of λ; lambda_skewness and lambda_kurtosis (excess)
    of each λ_k as in :func:`field_shape`. (The teacher is frozen: the statistics of ν are
    computed once.)
    """
    K, M = lam.shape[1], nu.shape[1]
    Q, R, lam_mean = np.empty((K, K)), np.empty((K, M)), np.empty(K)
    yhat = network_output(lam, v, g_code, np.empty(lam.shape[0]))
    eg_mc = _student_statistics(lam, nu, yhat, y, Q, R, lam_mean)
    skewness, kurtosis = field_shape(lam)
    return {"eg_mc": eg_mc, "Q": Q, "R": R, "lambda_mean": lam_mean,
            "lambda_skewness": skewness, "lambda_kurtosis": kurtosis}


def spectral_initial_state(features: np.ndarray, w: np.ndarray, teacher: np.ndarray,
                           v: np.ndarray, A: np.ndarray, with_omega: bool = True
                           ) -> HmmInitialState:
    """The HMM ODE's initial state from the seed's exact weights (docs/model.md §4.4).

    Ω = FᵀF/N = Σ_τ ρ_τ e_τ e_τᵀ (eigh, ascending); Γ_kτ = S_k·e_τ, ω_nτ = W̃_n·e_τ;
    r^{kn}(ρ_τ) = Γ_kτ ω_nτ, σ^{kl}(ρ_τ) = Γ_kτ Γ_lτ, T̃ = W̃ΩW̃ᵀ/D.
    """
    N, D = features.shape
    omega_matrix = features.T @ features / N
    rhos, vectors = np.linalg.eigh(omega_matrix)
    S = w @ features / math.sqrt(N)
    gamma = S @ vectors                       # (K, D)
    omega = teacher @ vectors                 # (M, D)
    return HmmInitialState(
        rhos=rhos,
        r=gamma[:, None, :] * omega[None, :, :],
        sigma=gamma[:, None, :] * gamma[None, :, :],
        W=w @ w.T / N,
        T=teacher_overlap(teacher),
        T_tilde=teacher @ omega_matrix @ teacher.T / D,
        v=v.copy(),
        A=A.copy(),
        omega=omega if with_omega else None,
    )
