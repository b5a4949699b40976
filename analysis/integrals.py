"""Gaussian integrals I2, I3, I4, J2 and the closed-form generalisation error (MODEL.md §4.3, §5).

For z ~ N(0, C), with the arguments naming fields in order (repeated indices repeat rows and
columns of C):

- I2(α, β)        = E[g(z_α) g(z_β)]
- I3(α, β, γ)     = E[g'(z_α) z_β g(z_γ)]
- I4(α, β, γ, κ)  = E[g'(z_α) g'(z_β) g(z_γ) g(z_κ)]
- J2(α, β)        = E[g'(z_α) g'(z_β)]

Each formula exists once, as a numba kernel on the covariance entries (``i2_entries`` …), used by
the ODE right-hand sides, the simulator's ε_g and the public functions :func:`I2` … :func:`J2`,
which take the sub-covariance of their arguments (2×2, 3×3 or 4×4) and g ∈ {erf, linear, relu}.
The ReLU I4 has no elementary closed form and is not available yet: :func:`I4` raises
NotImplementedError for it rather than returning an approximation.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from analysis.activations import ACTIVATION_CODES, ACTIVATIONS, G_ERF, G_LINEAR, G_RELU

_TWO_PI = 2.0 * math.pi
_TWO_OVER_PI = 2.0 / math.pi
_FOUR_OVER_PI2 = 4.0 / math.pi ** 2


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _clip_unit(x):
    return min(1.0, max(-1.0, x))


@njit(cache=True, nogil=True, error_model="numpy")
def i2_entries(c00, c01, c11, g):
    """I2 = E[g(z₀) g(z₁)].

    erf:    (2/π) arcsin(C₀₁ / √((1+C₀₀)(1+C₁₁)))
    linear: C₀₁
    relu:   (√(C₀₀C₁₁)/2π) [sin θ + (π − θ) cos θ], θ = arccos(C₀₁/√(C₀₀C₁₁))
    """
    if g == G_ERF:
        return _TWO_OVER_PI * math.asin(c01 / math.sqrt((1.0 + c00) * (1.0 + c11)))
    if g == G_LINEAR:
        return c01
    norm = math.sqrt(c00 * c11)
    if not norm > 0.0:
        return 0.0 if norm == 0.0 else math.nan
    theta = math.acos(_clip_unit(c01 / norm))
    return norm / _TWO_PI * (math.sin(theta) + (math.pi - theta) * math.cos(theta))


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def erf_i3_lambda3(c00, c02, c22):
    """Λ₃ = (1+C₀₀)(1+C₂₂) − C₀₂² of the erf I3."""
    return (1.0 + c00) * (1.0 + c22) - c02 * c02


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def erf_i3_value(c00, c01, c02, c12, inv_sqrt_lambda3):
    """erf I3 = (2/π) [C₁₂(1+C₀₀) − C₀₁C₀₂] / [(1+C₀₀) √Λ₃], given 1/√Λ₃."""
    return _TWO_OVER_PI * (c12 * (1.0 + c00) - c01 * c02) / (1.0 + c00) * inv_sqrt_lambda3


@njit(cache=True, nogil=True, error_model="numpy")
def i3_entries(c00, c01, c02, c12, c22, g):
    """I3 = E[g'(z₀) z₁ g(z₂)] (C₁₁ does not enter).

    erf:    (2/π) [C₁₂(1+C₀₀) − C₀₁C₀₂] / [(1+C₀₀) √Λ₃], Λ₃ = (1+C₀₀)(1+C₂₂) − C₀₂²
    linear: C₁₂
    relu:   C₀₁ √(C₀₀C₂₂ − C₀₂²)/(2π C₀₀) + C₁₂ [1/4 + arcsin(C₀₂/√(C₀₀C₂₂))/2π]
    """
    if g == G_ERF:
        return erf_i3_value(c00, c01, c02, c12, 1.0 / math.sqrt(erf_i3_lambda3(c00, c02, c22)))
    if g == G_LINEAR:
        return c12
    if c00 == 0.0 or c22 == 0.0:
        return 0.0  # z₀ ≡ 0 gives Θ(z₀) = 0; z₂ ≡ 0 gives relu(z₂) = 0
    det02 = max(c00 * c22 - c02 * c02, 0.0)
    norm = math.sqrt(c00 * c22)
    return (c01 * math.sqrt(det02) / (_TWO_PI * c00)
            + c12 * (0.25 + math.asin(_clip_unit(c02 / norm)) / _TWO_PI))


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def erf_i4_lambda4(c00, c01, c11):
    """Λ₄ = (1+C₀₀)(1+C₁₁) − C₀₁² of the erf I4."""
    return (1.0 + c00) * (1.0 + c11) - c01 * c01


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def erf_i4_lambda_side(lambda4, c00, c01, c11, c0x, c1x, cxx):
    """Λ₁ (x = 2) or Λ₂ (x = 3): Λ₄(1+C_xx) − C_1x²(1+C₀₀) − C_0x²(1+C₁₁) + 2C₀₁C_0xC_1x."""
    return (lambda4 * (1.0 + cxx) - c1x * c1x * (1.0 + c00) - c0x * c0x * (1.0 + c11)
            + 2.0 * c01 * c0x * c1x)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def erf_i4_lambda0(lambda4, c00, c01, c11, c02, c03, c12, c13, c23):
    """Λ₀ = Λ₄C₂₃ − C₁₂C₁₃(1+C₀₀) − C₀₂C₀₃(1+C₁₁) + C₀₁C₀₂C₁₃ + C₀₁C₀₃C₁₂."""
    return (lambda4 * c23 - c12 * c13 * (1.0 + c00) - c02 * c03 * (1.0 + c11)
            + c01 * c02 * c13 + c01 * c03 * c12)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def erf_i4_value(inv_sqrt_lambda4, lambda0, inv_sqrt_lambda1, inv_sqrt_lambda2):
    """erf I4 = (4/π²) Λ₄^{−1/2} arcsin(Λ₀/√(Λ₁Λ₂)), given the inverse square roots."""
    return (_FOUR_OVER_PI2 * inv_sqrt_lambda4
            * math.asin(lambda0 * inv_sqrt_lambda1 * inv_sqrt_lambda2))


@njit(cache=True, nogil=True, error_model="numpy")
def i4_entries(c00, c01, c02, c03, c11, c12, c13, c22, c23, c33, g):
    """I4 = E[g'(z₀) g'(z₁) g(z₂) g(z₃)].

    erf: (4/π²) Λ₄^{−1/2} arcsin(Λ₀/√(Λ₁Λ₂)) with Λ₄, Λ₀, Λ₁, Λ₂ of MODEL.md §5.3.
    linear: C₂₃. relu: NaN here (no closed form; :func:`I4` refuses it).
    """
    if g == G_LINEAR:
        return c23
    if g == G_RELU:
        return math.nan
    lam4 = erf_i4_lambda4(c00, c01, c11)
    lam1 = erf_i4_lambda_side(lam4, c00, c01, c11, c02, c12, c22)
    lam2 = erf_i4_lambda_side(lam4, c00, c01, c11, c03, c13, c33)
    lam0 = erf_i4_lambda0(lam4, c00, c01, c11, c02, c03, c12, c13, c23)
    return erf_i4_value(1.0 / math.sqrt(lam4), lam0, 1.0 / math.sqrt(lam1),
                        1.0 / math.sqrt(lam2))


@njit(cache=True, nogil=True, error_model="numpy")
def j2_entries(c00, c01, c11, g):
    """J2 = E[g'(z₀) g'(z₁)].

    erf:    (2/π) / √(1 + C₀₀ + C₁₁ + C₀₀C₁₁ − C₀₁²)
    linear: 1
    relu:   1/4 + arcsin(C₀₁/√(C₀₀C₁₁))/2π
    """
    if g == G_ERF:
        return _TWO_OVER_PI / math.sqrt(1.0 + c00 + c11 + c00 * c11 - c01 * c01)
    if g == G_LINEAR:
        return 1.0
    if c00 == 0.0 or c11 == 0.0:
        return 0.0  # a field ≡ 0 has Θ = 0
    return 0.25 + math.asin(_clip_unit(c01 / math.sqrt(c00 * c11))) / _TWO_PI


# ---------------------------------------------------------------- index forms on a full C
@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def i2_at(C, a, b, g):
    """I2(a, b) on the full covariance C."""
    return i2_entries(C[a, a], C[a, b], C[b, b], g)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def i3_at(C, a, b, c, g):
    """I3(a, b, c) on the full covariance C."""
    return i3_entries(C[a, a], C[a, b], C[a, c], C[b, c], C[c, c], g)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def i4_at(C, a, b, c, d, g):
    """I4(a, b, c, d) on the full covariance C."""
    return i4_entries(C[a, a], C[a, b], C[a, c], C[a, d], C[b, b], C[b, c], C[b, d],
                      C[c, c], C[c, d], C[d, d], g)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def j2_at(C, a, b, g):
    """J2(a, b) on the full covariance C."""
    return j2_entries(C[a, a], C[a, b], C[b, b], g)


@njit(cache=True, nogil=True, error_model="numpy")
def i2_matrix_kernel(C, g, out):
    n = C.shape[0]
    for a in range(n):
        for b in range(n):
            out[a, b] = i2_at(C, a, b, g)
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def generalisation_error_kernel(Q, R, T, v, A, g):
    """ε_g = ½ Σ_{a,b} u_a u_b I2(a, b) on C = [[Q, R], [Rᵀ, T]] with u = (v, −A) (§4.3)."""
    K = Q.shape[0]
    M = T.shape[0]
    C = np.empty((K + M, K + M))
    C[:K, :K] = Q
    C[:K, K:] = R
    C[K:, :K] = R.T
    C[K:, K:] = T
    u = np.empty(K + M)
    u[:K] = v
    u[K:] = -A
    total = 0.0
    for a in range(K + M):
        for b in range(K + M):
            total += u[a] * u[b] * i2_at(C, a, b, g)
    return 0.5 * total


# ---------------------------------------------------------------- public functions
def _check(cov, size: int, g: str) -> tuple[np.ndarray, int]:
    if g not in ACTIVATIONS:
        raise ValueError(f"g must be one of {', '.join(ACTIVATIONS)}, got {g!r}")
    c = np.asarray(cov, dtype=np.float64)
    if c.shape != (size, size):
        raise ValueError(f"cov must have shape ({size}, {size}), got {c.shape}")
    return c, ACTIVATION_CODES[g]


def I2(cov, *, g: str = "erf") -> float:
    """I2 = E[g(z₀) g(z₁)] for z ~ N(0, cov), cov 2×2 (formulas: :func:`i2_entries`)."""
    c, code = _check(cov, 2, g)
    return float(i2_entries(c[0, 0], c[0, 1], c[1, 1], code))


def I3(cov, *, g: str = "erf") -> float:
    """I3 = E[g'(z₀) z₁ g(z₂)] for z ~ N(0, cov), cov 3×3 (formulas: :func:`i3_entries`)."""
    c, code = _check(cov, 3, g)
    return float(i3_entries(c[0, 0], c[0, 1], c[0, 2], c[1, 2], c[2, 2], code))


def I4(cov, *, g: str = "erf") -> float:
    """I4 = E[g'(z₀) g'(z₁) g(z₂) g(z₃)] for z ~ N(0, cov), cov 4×4 (:func:`i4_entries`).

    Not available for g = relu (no elementary closed form, MODEL.md §5.4).
    """
    c, code = _check(cov, 4, g)
    if g == "relu":
        raise NotImplementedError(
            "I4 for g = relu has no closed form and is not implemented yet; "
            "the ReLU ODE is not available")
    return float(i4_at(c, 0, 1, 2, 3, code))


def J2(cov, *, g: str = "erf") -> float:
    """J2 = E[g'(z₀) g'(z₁)] for z ~ N(0, cov), cov 2×2 (formulas: :func:`j2_entries`)."""
    c, code = _check(cov, 2, g)
    return float(j2_entries(c[0, 0], c[0, 1], c[1, 1], code))


def I2_matrix(cov, *, g: str = "erf") -> np.ndarray:
    """All pairwise I2(α, β) for the fields of an (n, n) covariance, as an (n, n) array."""
    if g not in ACTIVATIONS:
        raise ValueError(f"g must be one of {', '.join(ACTIVATIONS)}, got {g!r}")
    c = np.ascontiguousarray(cov, dtype=np.float64)
    return i2_matrix_kernel(c, ACTIVATION_CODES[g], np.empty_like(c))


def generalisation_error(Q, R, T, v, A, *, g: str = "erf") -> float:
    """Closed-form ε_g from the order parameters (MODEL.md §4.3).

    ε_g = ½ [Σ_{k,l} v_k v_l I2(k,l) + Σ_{n,m} A_n A_m I2(n,m) − 2 Σ_{k,n} v_k A_n I2(k,n)]
    with I2 evaluated on C = [[Q, R], [Rᵀ, T]].
    """
    if g not in ACTIVATIONS:
        raise ValueError(f"g must be one of {', '.join(ACTIVATIONS)}, got {g!r}")
    as_array = lambda x: np.ascontiguousarray(x, dtype=np.float64)  # noqa: E731
    return float(generalisation_error_kernel(as_array(Q), as_array(R), as_array(T), as_array(v),
                                             as_array(A), ACTIVATION_CODES[g]))
