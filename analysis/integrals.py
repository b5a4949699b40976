"""Gaussian integrals I2, I3, I4, J2 and the closed-form generalisation error (MODEL.md §4.3, §5).

For z ~ N(0, C), with the arguments naming fields in order (repeated indices repeat rows and
columns of C):

- I2(α, β)        = E[g(z_α) g(z_β)]
- I3(α, β, γ)     = E[g'(z_α) z_β g(z_γ)]
- I4(α, β, γ, κ)  = E[g'(z_α) g'(z_β) g(z_γ) g(z_κ)]
- J2(α, β)        = E[g'(z_α) g'(z_β)]

Each function takes the sub-covariance of its arguments (2×2, 3×3 or 4×4) and g ∈ {erf, linear,
relu}. The ReLU I4 has no elementary closed form and is not available yet: it raises
NotImplementedError rather than returning an approximation.
"""

from __future__ import annotations

import math

import numpy as np

from analysis.activations import ACTIVATIONS

_TWO_PI = 2.0 * math.pi


def _check(cov, size: int, g: str) -> np.ndarray:
    if g not in ACTIVATIONS:
        raise ValueError(f"g must be one of {', '.join(ACTIVATIONS)}, got {g!r}")
    c = np.asarray(cov, dtype=np.float64)
    if c.shape != (size, size):
        raise ValueError(f"cov must have shape ({size}, {size}), got {c.shape}")
    return c


def _clip_unit(x: float) -> float:
    return min(1.0, max(-1.0, x))


def I2(cov, *, g: str = "erf") -> float:
    """I2 = E[g(z₀) g(z₁)] for z ~ N(0, cov), cov 2×2.

    erf:    (2/π) arcsin(C₀₁ / √((1+C₀₀)(1+C₁₁)))
    linear: C₀₁
    relu:   (√(C₀₀C₁₁)/2π) [sin θ + (π − θ) cos θ], θ = arccos(C₀₁/√(C₀₀C₁₁))
    """
    c = _check(cov, 2, g)
    if g == "erf":
        return 2.0 / math.pi * math.asin(c[0, 1] / math.sqrt((1 + c[0, 0]) * (1 + c[1, 1])))
    if g == "linear":
        return float(c[0, 1])
    norm = math.sqrt(c[0, 0] * c[1, 1])
    if norm == 0.0:
        return 0.0
    theta = math.acos(_clip_unit(c[0, 1] / norm))
    return norm / _TWO_PI * (math.sin(theta) + (math.pi - theta) * math.cos(theta))


def I3(cov, *, g: str = "erf") -> float:
    """I3 = E[g'(z₀) z₁ g(z₂)] for z ~ N(0, cov), cov 3×3.

    erf:    (2/π) [C₁₂(1+C₀₀) − C₀₁C₀₂] / [(1+C₀₀) √Λ₃], Λ₃ = (1+C₀₀)(1+C₂₂) − C₀₂²
    linear: C₁₂
    relu:   C₀₁ √(C₀₀C₂₂ − C₀₂²)/(2π C₀₀) + C₁₂ [1/4 + arcsin(C₀₂/√(C₀₀C₂₂))/2π]
    """
    c = _check(cov, 3, g)
    if g == "erf":
        lam3 = (1 + c[0, 0]) * (1 + c[2, 2]) - c[0, 2] ** 2
        return (2.0 / math.pi * (c[1, 2] * (1 + c[0, 0]) - c[0, 1] * c[0, 2])
                / ((1 + c[0, 0]) * math.sqrt(lam3)))
    if g == "linear":
        return float(c[1, 2])
    if c[0, 0] <= 0.0 or c[2, 2] <= 0.0:
        return 0.0  # z₀ ≡ 0 gives Θ(z₀) = 0; z₂ ≡ 0 gives relu(z₂) = 0
    det02 = max(c[0, 0] * c[2, 2] - c[0, 2] ** 2, 0.0)
    norm = math.sqrt(c[0, 0] * c[2, 2])
    first = c[0, 1] * math.sqrt(det02) / (_TWO_PI * c[0, 0])
    angle = math.asin(_clip_unit(c[0, 2] / norm))
    return first + c[1, 2] * (0.25 + angle / _TWO_PI)


def I4(cov, *, g: str = "erf") -> float:
    """I4 = E[g'(z₀) g'(z₁) g(z₂) g(z₃)] for z ~ N(0, cov), cov 4×4.

    erf: (4/π²) Λ₄^{−1/2} arcsin(Λ₀/√(Λ₁Λ₂)) with Λ₄, Λ₀, Λ₁, Λ₂ of MODEL.md §5.3.
    linear: C₂₃. relu: not available (no elementary closed form; MODEL.md §5.4).
    """
    c = _check(cov, 4, g)
    if g == "linear":
        return float(c[2, 3])
    if g == "relu":
        raise NotImplementedError(
            "I4 for g = relu has no closed form and is not implemented yet; "
            "the ReLU ODE is not available")
    lam4 = (1 + c[0, 0]) * (1 + c[1, 1]) - c[0, 1] ** 2
    lam0 = (lam4 * c[2, 3] - c[1, 2] * c[1, 3] * (1 + c[0, 0]) - c[0, 2] * c[0, 3] * (1 + c[1, 1])
            + c[0, 1] * c[0, 2] * c[1, 3] + c[0, 1] * c[0, 3] * c[1, 2])
    lam1 = (lam4 * (1 + c[2, 2]) - c[1, 2] ** 2 * (1 + c[0, 0]) - c[0, 2] ** 2 * (1 + c[1, 1])
            + 2 * c[0, 1] * c[0, 2] * c[1, 2])
    lam2 = (lam4 * (1 + c[3, 3]) - c[1, 3] ** 2 * (1 + c[0, 0]) - c[0, 3] ** 2 * (1 + c[1, 1])
            + 2 * c[0, 1] * c[0, 3] * c[1, 3])
    return 4.0 / math.pi ** 2 / math.sqrt(lam4) * math.asin(lam0 / math.sqrt(lam1 * lam2))


def J2(cov, *, g: str = "erf") -> float:
    """J2 = E[g'(z₀) g'(z₁)] for z ~ N(0, cov), cov 2×2.

    erf:    (2/π) / √(1 + C₀₀ + C₁₁ + C₀₀C₁₁ − C₀₁²)
    linear: 1
    relu:   1/4 + arcsin(C₀₁/√(C₀₀C₁₁))/2π
    """
    c = _check(cov, 2, g)
    if g == "erf":
        return 2.0 / math.pi / math.sqrt(1 + c[0, 0] + c[1, 1] + c[0, 0] * c[1, 1] - c[0, 1] ** 2)
    if g == "linear":
        return 1.0
    if c[0, 0] <= 0.0 or c[1, 1] <= 0.0:
        return 0.0  # a field ≡ 0 has Θ = 0
    norm = math.sqrt(c[0, 0] * c[1, 1])
    return 0.25 + math.asin(_clip_unit(c[0, 1] / norm)) / _TWO_PI


def I2_matrix(cov, *, g: str = "erf") -> np.ndarray:
    """All pairwise I2(α, β) for the fields of an (n, n) covariance, as an (n, n) array.

    Entry (α, β) equals ``I2(cov[[α, β]][:, [α, β]], g=g)``; vectorised over pairs.
    """
    c = np.asarray(cov, dtype=np.float64)
    if g not in ACTIVATIONS:
        raise ValueError(f"g must be one of {', '.join(ACTIVATIONS)}, got {g!r}")
    d = np.diag(c)
    if g == "erf":
        one_plus = 1.0 + d
        return 2.0 / np.pi * np.arcsin(c / np.sqrt(np.outer(one_plus, one_plus)))
    if g == "linear":
        return c.copy()
    norm = np.sqrt(np.outer(d, d))
    with np.errstate(invalid="ignore", divide="ignore"):
        theta = np.arccos(np.clip(c / norm, -1.0, 1.0))
        out = norm / _TWO_PI * (np.sin(theta) + (np.pi - theta) * np.cos(theta))
    return np.where(norm == 0.0, 0.0, out)


def generalisation_error(Q, R, T, v, A, *, g: str = "erf") -> float:
    """Closed-form ε_g from the order parameters (MODEL.md §4.3).

    ε_g = ½ [Σ_{k,l} v_k v_l I2(k,l) + Σ_{n,m} A_n A_m I2(n,m) − 2 Σ_{k,n} v_k A_n I2(k,n)]
    with I2 evaluated on C = [[Q, R], [Rᵀ, T]].
    """
    Q = np.asarray(Q, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64)
    weights = np.concatenate([np.asarray(v, dtype=np.float64), -np.asarray(A, dtype=np.float64)])
    C = np.block([[Q, R], [R.T, T]])
    return 0.5 * float(weights @ I2_matrix(C, g=g) @ weights)
