"""Gaussian integrals I2, I3, I4, J2 and the closed-form generalisation error
(docs/model.md §4.3, §5).

For z ~ N(0, C), with the arguments naming fields in order (repeated indices repeat rows and
columns of C):

- I2(α, β)        = E[g(z_α) g(z_β)]
- I3(α, β, γ)     = E[g'(z_α) z_β g(z_γ)]
- I4(α, β, γ, κ)  = E[g'(z_α) g'(z_β) g(z_γ) g(z_κ)]
- J2(α, β)        = E[g'(z_α) g'(z_β)]

Each formula exists once, as a numba kernel on the covariance entries (``i2_entries`` …), used by
the ODE right-hand sides, the simulator's ε_g and the public functions :func:`I2` … :func:`J2`,
which take the sub-covariance of their arguments (2×2, 3×3 or 4×4) and g ∈ {erf, linear, relu}.
The ReLU I4 has no elementary closed form; :func:`relu_i4_fields` reduces it to orthant
probabilities (:mod:`analysis.orthant`), exactly except for one one-dimensional quadrature.
"""

from __future__ import annotations

import math

import numpy as np
from numba import types
from numba.extending import overload

from analysis.activations import ACTIVATION_CODES, ACTIVATIONS, G_ERF, G_LINEAR, G_RELU
from analysis.arcsine import arcsine
from analysis.jit import THEORY_OPTIONS, theory_kernel
from analysis.orthant import (NODES, WEIGHTS, clip_unit, gauss_legendre_unit, one_minus_square,
                              orthant_2, orthant_2_from_arcsine, orthant_3_from_arcsines,
                              orthant_4, partial_correlation_1, partial_correlation_2)

__all__ = [
    # the Python API (docs/model.md §5.3–5.4, §4.3)
    "I2", "I3", "I4", "J2", "I2_matrix", "generalisation_error", "MERGE_CORRELATION",
    # kernels the ODEs and the bench compile against
    "i2_at", "i3_at", "i4_at", "j2_at", "erf_i3_lambda3", "erf_i3_value", "erf_i4_lambda4",
    "erf_i4_lambda_side", "erf_i4_lambda0", "erf_i4_value", "generalisation_error_kernel",
    "relu_field_correlations", "relu_i4_table", "relu_i4_sums", "relu_workspace",
    "TWO_OVER_PI", "FOUR_OVER_PI2",
]

_TWO_PI = 2.0 * math.pi
TWO_OVER_PI = 2.0 / math.pi
FOUR_OVER_PI2 = 4.0 / math.pi ** 2
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
# Fields whose correlation is ±1 to within the rounding of ρ = C_fh/√(C_ff C_hh) (a few ulps)
# are one field, or an empty orthant (docs/model.md §5.4: a coarser threshold such as the
# external specification's 1 − 1e-12 costs up to 1.4e-6, above the 1e-8 target).
MERGE_CORRELATION = 1.0 - 4.5e-16




@theory_kernel()
def i2_entries(c00, c01, c11, g):
    """I2 = E[g(z₀) g(z₁)].

    erf:    (2/π) arcsin(C₀₁ / √((1+C₀₀)(1+C₁₁)))
    linear: C₀₁
    relu:   (√(C₀₀C₁₁)/2π) [sin θ + (π − θ) cos θ], θ = arccos(C₀₁/√(C₀₀C₁₁))
    """
    if g == G_ERF:
        return TWO_OVER_PI * math.asin(c01 / math.sqrt((1.0 + c00) * (1.0 + c11)))
    if g == G_LINEAR:
        return c01
    norm = math.sqrt(c00 * c11)
    if not norm > 0.0:
        return 0.0 if norm == 0.0 else math.nan
    rho = c01 / norm
    if not math.isfinite(rho):
        return math.nan
    theta = math.acos(clip_unit(rho))
    return norm / _TWO_PI * (math.sin(theta) + (math.pi - theta) * math.cos(theta))


@theory_kernel(inline=True)
def erf_i3_lambda3(c00, c02, c22):
    """Λ₃ = (1+C₀₀)(1+C₂₂) − C₀₂² of the erf I3."""
    return (1.0 + c00) * (1.0 + c22) - c02 * c02


@theory_kernel(inline=True)
def erf_i3_value(c00, c01, c02, c12, inv_sqrt_lambda3):
    """erf I3 = (2/π) [C₁₂(1+C₀₀) − C₀₁C₀₂] / [(1+C₀₀) √Λ₃], given 1/√Λ₃, evaluated as
    (2/π)/√Λ₃ · (C₁₂ − C₀₁/(1+C₀₀) · C₀₂) (the ODEs' I3 table uses the same arrangement)."""
    return TWO_OVER_PI * inv_sqrt_lambda3 * (c12 - c01 * (1.0 / (1.0 + c00)) * c02)


@theory_kernel()
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
    if not (math.isfinite(c02 / norm) and math.isfinite(c01) and math.isfinite(c12)):
        return math.nan
    return c01 * math.sqrt(det02) / (_TWO_PI * c00) + c12 * orthant_2(c02 / norm)


@theory_kernel(inline=True)
def erf_i4_lambda4(c00, c01, c11):
    """Λ₄ = (1+C₀₀)(1+C₁₁) − C₀₁² of the erf I4."""
    return (1.0 + c00) * (1.0 + c11) - c01 * c01


@theory_kernel(inline=True)
def erf_i4_lambda_side(lambda4, c00, c01, c11, c0x, c1x, cxx):
    """Λ₁ (x = 2) or Λ₂ (x = 3): Λ₄(1+C_xx) − C_1x²(1+C₀₀) − C_0x²(1+C₁₁) + 2C₀₁C_0xC_1x."""
    return (lambda4 * (1.0 + cxx) - c1x * c1x * (1.0 + c00) - c0x * c0x * (1.0 + c11)
            + 2.0 * c01 * c0x * c1x)


@theory_kernel(inline=True)
def erf_i4_lambda0(lambda4, c00, c01, c11, c02, c03, c12, c13, c23):
    """Λ₀ = Λ₄C₂₃ − C₁₂C₁₃(1+C₀₀) − C₀₂C₀₃(1+C₁₁) + C₀₁C₀₂C₁₃ + C₀₁C₀₃C₁₂."""
    return (lambda4 * c23 - c12 * c13 * (1.0 + c00) - c02 * c03 * (1.0 + c11)
            + c01 * c02 * c13 + c01 * c03 * c12)


@theory_kernel(inline=True)
def erf_i4_value(inv_sqrt_lambda4, lambda0, inv_sqrt_lambda1, inv_sqrt_lambda2):
    """erf I4 = (4/π²) Λ₄^{−1/2} arcsin(Λ₀/√(Λ₁Λ₂)), given the inverse square roots."""
    return (FOUR_OVER_PI2 * inv_sqrt_lambda4
            * arcsine(lambda0 * inv_sqrt_lambda1 * inv_sqrt_lambda2))


@theory_kernel()
def i4_entries(c00, c01, c02, c03, c11, c12, c13, c22, c23, c33, g):
    """I4 = E[g'(z₀) g'(z₁) g(z₂) g(z₃)].

    erf: (4/π²) Λ₄^{−1/2} arcsin(Λ₀/√(Λ₁Λ₂)) with Λ₄, Λ₀, Λ₁, Λ₂ of docs/model.md §5.3.
    linear: C₂₃. relu: :func:`relu_i4_fields` (reduction to orthant probabilities).
    """
    if g == G_LINEAR:
        return c23
    if g == G_RELU:
        C = np.empty((4, 4))
        C[0, 0], C[1, 1], C[2, 2], C[3, 3] = c00, c11, c22, c33
        C[0, 1] = C[1, 0] = c01
        C[0, 2] = C[2, 0] = c02
        C[0, 3] = C[3, 0] = c03
        C[1, 2] = C[2, 1] = c12
        C[1, 3] = C[3, 1] = c13
        C[2, 3] = C[3, 2] = c23
        return relu_i4_fields(C, 0, 1, 2, 3, NODES, WEIGHTS)
    lam4 = erf_i4_lambda4(c00, c01, c11)
    lam1 = erf_i4_lambda_side(lam4, c00, c01, c11, c02, c12, c22)
    lam2 = erf_i4_lambda_side(lam4, c00, c01, c11, c03, c13, c33)
    lam0 = erf_i4_lambda0(lam4, c00, c01, c11, c02, c03, c12, c13, c23)
    return erf_i4_value(1.0 / math.sqrt(lam4), lam0, 1.0 / math.sqrt(lam1),
                        1.0 / math.sqrt(lam2))


# ---------------------------------------------------------------- ReLU I4
@theory_kernel()
def relu_field_correlations(C, sd, P, asin_P, rep):
    """The parts of every ReLU I4 on the fields of C that depend on one or two fields, computed
    once per evaluation: sd_f = √C_ff, the correlations P (clipped to [−1, 1]; NaN where C_fh
    is not finite), arcsin P, and rep[f], the first field whose correlation with f is 1 to
    within rounding (≥ MERGE_CORRELATION; f itself if none; −1 for a field of zero variance, −2 for a negative, infinite or NaN
    variance)."""
    n = C.shape[0]
    for f in range(n):
        sd[f] = math.sqrt(C[f, f]) if C[f, f] > 0.0 else 0.0
    for f in range(n):
        P[f, f] = 1.0
        asin_P[f, f] = 0.5 * math.pi
        for h in range(f + 1, n):
            if not math.isfinite(C[f, h]):
                rho = math.nan
            elif sd[f] * sd[h] > 0.0:
                rho = clip_unit(C[f, h] / (sd[f] * sd[h]))
            else:
                rho = 0.0
            P[f, h] = P[h, f] = rho
            asin_P[f, h] = asin_P[h, f] = math.asin(rho)
    for f in range(n):
        if not (C[f, f] >= 0.0 and math.isfinite(C[f, f])):
            rep[f] = -2
            continue
        if C[f, f] == 0.0:
            rep[f] = -1
            continue
        rep[f] = f
        for h in range(f):
            if rep[h] == h and P[h, f] >= MERGE_CORRELATION:
                rep[f] = h
                break


@theory_kernel(inline=True)
def _orthant_given_pair(P, n, i, j):
    """P(z_m > 0 for the fields m ∉ {i, j} | z_i = z_j = 0), P the correlations of n fields."""
    if n == 2:
        return 1.0
    if n == 3:
        return 0.5
    k = -1
    for m in range(4):
        if m != i and m != j:
            if k < 0:
                k = m
            else:
                return orthant_2(partial_correlation_2(P, k, m, i, j))
    return math.nan


@theory_kernel(inline=True)
def _conditional_first_moment(P, n, i, b):
    """E[z_b 1{z_m > 0 for all m ≠ i} | z_i = 0] (i ≠ b), by Stein's lemma in the conditional
    law (covariance P' = P − P_·i P_i·):
    Σ_{j≠i} P'_bj φ'_j P(others > 0 | z_i = z_j = 0) = √(P'_bb)/√(2π) Σ_{j≠i} ρ_bj·i P(…),
    with φ'_j = 1/√(2π P'_jj) and ρ_bj·i the partial correlation (1 for j = b)."""
    acc = 0.0
    for j in range(n):
        if j == i:
            continue
        r = 1.0 if j == b else partial_correlation_1(P, b, j, i)
        acc += r * _orthant_given_pair(P, n, i, j)
    return math.sqrt(one_minus_square(P[b][i])) * _INV_SQRT_2PI * acc


@theory_kernel(inline=True)
def relu_standard_moment(P, n, a, b, prob):
    """E[z_a z_b 1_O] for n ≤ 4 distinct standardized fields with correlations P (a nested
    4-tuple, rows and columns beyond n unused), O = {z_m > 0 for all m}, P(O) = ``prob``,
    a = b allowed. Stein's lemma (docs/model.md §5.4):
    E[z_a z_b 1_O] = P_ab P(O) + Σ_{i≠b} P_ai φ E[z_b 1_{O∖i} | z_i = 0], φ = 1/√(2π)."""
    total = P[a][b] * prob
    for i in range(n):
        if i != b and P[a][i] != 0.0:
            total += P[a][i] * _INV_SQRT_2PI * _conditional_first_moment(P, n, i, b)
    return total


@theory_kernel(inline=True)
def _add_field(P, rep, f, o0, o1, o2, o3, n):
    """Place field f's representative among the distinct fields (o0..o3, n of them). Returns
    the updated fields and count, and f's position; position −1: I4 = 0 (a field of zero
    variance, or one anti-parallel to a field already there), −2: NaN (a NaN variance or
    correlation)."""
    r = rep[f]
    if r < 0:
        return o0, o1, o2, o3, n, (-1 if r == -1 else -2)
    if r == o0:
        return o0, o1, o2, o3, n, 0
    if r == o1:
        return o0, o1, o2, o3, n, 1
    if r == o2:
        return o0, o1, o2, o3, n, 2
    if r == o3:
        return o0, o1, o2, o3, n, 3
    for p in range(n):
        rho = P[o0 if p == 0 else o1 if p == 1 else o2, r]
        if rho != rho:
            return o0, o1, o2, o3, n, -2
        if rho <= -MERGE_CORRELATION:
            return o0, o1, o2, o3, n, -1
    if n == 0:
        return r, o1, o2, o3, 1, 0
    if n == 1:
        return o0, r, o2, o3, 2, 1
    if n == 2:
        return o0, o1, r, o3, 3, 2
    return o0, o1, o2, r, 4, 3


@theory_kernel()
def relu_i4_table(sd, P, asin_P, rep, quads, out, P4, x, w):
    """out[q] = ReLU I4 = E[Θ(z_f0) Θ(z_f1) relu(z_f2) relu(z_f3)] for each row (f0, f1, f2, f3)
    of ``quads``, from the per-evaluation parts of :func:`relu_field_correlations`.

    The integrand is z_f2 z_f3 1_O with O = {z_m > 0 for the distinct fields m}. Fields that
    coincide (same index, or a correlation of 1 to within rounding) are merged; a correlation
    of −1 to within rounding between two of them makes O empty (I4 = 0), and so does a field of
    zero variance (Θ(0) = relu(0) = 0). A NaN or infinite entry gives NaN. Then I4 = √(C_f2f2 C_f3f3) ·
    E[u_a u_b 1_O] on the standardized fields (:func:`relu_standard_moment`), with P(O) in
    closed form up to three distinct fields and by :func:`analysis.orthant.orthant_4` (rule
    (x, w), workspace ``P4`` (4, 4)) for four.

    One loop over the quadruples rather than one call each: a call that takes these arrays
    costs more in reference counting than the closed forms themselves.
    """
    for q in range(quads.shape[0]):
        f0, f1, f2, f3 = quads[q, 0], quads[q, 1], quads[q, 2], quads[q, 3]
        o0, o1, o2, o3, n, p0 = _add_field(P, rep, f0, -1, -1, -1, -1, 0)
        o0, o1, o2, o3, n, p1 = _add_field(P, rep, f1, o0, o1, o2, o3, n)
        o0, o1, o2, o3, n, a = _add_field(P, rep, f2, o0, o1, o2, o3, n)
        o0, o1, o2, o3, n, b = _add_field(P, rep, f3, o0, o1, o2, o3, n)
        if p0 < 0 or p1 < 0 or a < 0 or b < 0:
            out[q] = math.nan if min(p0, p1, a, b) == -2 else 0.0
            continue
        # the correlations of the distinct fields as a nested tuple (rows beyond n unused)
        o1 = max(o1, 0)
        o2 = max(o2, 0)
        o3 = max(o3, 0)
        p01, p02, p03 = P[o0, o1], P[o0, o2], P[o0, o3]
        p12, p13, p23 = P[o1, o2], P[o1, o3], P[o2, o3]
        Pt = ((1.0, p01, p02, p03), (p01, 1.0, p12, p13), (p02, p12, 1.0, p23),
              (p03, p13, p23, 1.0))
        if n == 1:
            prob = 0.5
        elif n == 2:
            prob = orthant_2_from_arcsine(asin_P[o0, o1])
        elif n == 3:
            prob = orthant_3_from_arcsines(asin_P[o0, o1], asin_P[o0, o2], asin_P[o1, o2])
        else:
            for p in range(4):
                for r in range(4):
                    P4[p, r] = Pt[p][r]
            prob = orthant_4(P4, x, w)
        value = sd[f2] * sd[f3] * relu_standard_moment(Pt, n, a, b, prob)
        out[q] = 0.0 if value < 0.0 else value   # I4 ≥ 0: a rounding-level negative is 0


@theory_kernel()
def relu_workspace(n, rows):
    """Workspaces for :func:`relu_field_correlations` and :func:`relu_i4_table` on n fields and
    ``rows`` index quadruples: (sd, P, arcsin P, rep, P4, quads, values)."""
    return (np.empty(n), np.empty((n, n)), np.empty((n, n)), np.empty(n, dtype=np.int64),
            np.empty((4, 4)), np.empty((rows, 4), dtype=np.int64), np.empty(rows))


@theory_kernel()
def relu_i4_fields(C, f0, f1, f2, f3, x, w):
    """ReLU I4 on fields f0..f3 of the covariance C (:func:`relu_i4_table`), with its own
    workspaces; Gauss–Legendre rule (x, w) for the four-field orthant."""
    sd, P, asin_P, rep, P4, quads, values = relu_workspace(C.shape[0], 1)
    relu_field_correlations(C, sd, P, asin_P, rep)
    quads[0, 0], quads[0, 1], quads[0, 2], quads[0, 3] = f0, f1, f2, f3
    relu_i4_table(sd, P, asin_P, rep, quads, values, P4, x, w)
    return values[0]


@theory_kernel()
def relu_i4_sums_workspace(K, n):
    """:func:`relu_workspace` for :func:`relu_i4_sums` on K students among n fields, its
    quadruples (k, l, a, b), k ≤ l < K, a ≤ b < n, filled in once."""
    work = relu_workspace(n, K * (K + 1) // 2 * n * (n + 1) // 2)
    quads = work[5]
    count = 0
    for k in range(K):
        for l in range(k, K):
            for a in range(n):
                for b in range(a, n):
                    quads[count, 0], quads[count, 1] = k, l
                    quads[count, 2], quads[count, 3] = a, b
                    count += 1
    return work


@theory_kernel()
def relu_i4_sums(C, K, u, out, x, w):
    """out[k, l] = 𝓘4(k, l) = Σ_{a,b} u_a u_b I4(k, l, a, b) for g = relu, for the K students
    k ≤ l of C and all fields a, b, in one pass: the one- and two-field parts are computed once
    (:func:`relu_field_correlations`), I4(k, l, a, b) = I4(k, l, b, a) is evaluated for a ≤ b
    only, and all of them in one :func:`relu_i4_table`.

    The workspaces are allocated here, on every call: handing them in from the integrator
    (a tuple of seven arrays through three calls) measured slower, for erf as well, than the
    allocations (SCM ODE 0.145 → 0.183 s for erf)."""
    sd, P, asin_P, rep, P4, quads, values = relu_i4_sums_workspace(K, C.shape[0])
    relu_field_correlations(C, sd, P, asin_P, rep)
    relu_i4_table(sd, P, asin_P, rep, quads, values, P4, x, w)
    out[:, :] = 0.0
    for q in range(quads.shape[0]):
        k, l, a, b = quads[q, 0], quads[q, 1], quads[q, 2], quads[q, 3]
        out[k, l] += u[a] * u[b] * (1.0 if a == b else 2.0) * values[q]
    for k in range(K):
        for l in range(k + 1, K):
            out[l, k] = out[k, l]


@theory_kernel()
def j2_entries(c00, c01, c11, g):
    """J2 = E[g'(z₀) g'(z₁)].

    erf:    (2/π) / √(1 + C₀₀ + C₁₁ + C₀₀C₁₁ − C₀₁²)
    linear: 1
    relu:   1/4 + arcsin(C₀₁/√(C₀₀C₁₁))/2π
    """
    if g == G_ERF:
        return TWO_OVER_PI / math.sqrt(1.0 + c00 + c11 + c00 * c11 - c01 * c01)
    if g == G_LINEAR:
        return 1.0
    if c00 == 0.0 or c11 == 0.0:
        return 0.0  # a field ≡ 0 has Θ = 0
    rho = c01 / math.sqrt(c00 * c11)
    return orthant_2(rho) if math.isfinite(rho) else math.nan


# ---------------------------------------------------------------- index forms on a full C
@theory_kernel(inline=True)
def i2_at(C, a, b, g):
    """I2(a, b) on the full covariance C."""
    return i2_entries(C[a, a], C[a, b], C[b, b], g)


@theory_kernel(inline=True)
def i3_at(C, a, b, c, g):
    """I3(a, b, c) on the full covariance C."""
    return i3_entries(C[a, a], C[a, b], C[a, c], C[b, c], C[c, c], g)


@theory_kernel(inline=True)
def i4_at(C, a, b, c, d, g):
    """I4(a, b, c, d) on the full covariance C."""
    return i4_entries(C[a, a], C[a, b], C[a, c], C[a, d], C[b, b], C[b, c], C[b, d],
                      C[c, c], C[c, d], C[d, d], g)


@theory_kernel(inline=True)
def j2_at(C, a, b, g):
    """J2(a, b) on the full covariance C."""
    return j2_entries(C[a, a], C[a, b], C[b, b], g)


@theory_kernel()
def i2_matrix_kernel(C, g, out):
    n = C.shape[0]
    for a in range(n):
        for b in range(n):
            out[a, b] = i2_at(C, a, b, g)
    return out


@theory_kernel()
def generalisation_error_kernel(Q, R, T, v, A, g):
    """ε_g = ½ Σ_{a,b} u_a u_b I2(a, b) on C = [[Q, R], [Rᵀ, T]] with u = (v, −A) (§4.3)."""
    K = Q.shape[0]
    M = T.shape[0]
    C = np.empty((K + M, K + M))
    u = np.empty(K + M)
    for i in range(K):     # element loops: an array assigned to a slice compiles numba's
        u[i] = v[i]        # formatted shape-mismatch error, seconds of a cold start
        for j in range(K):
            C[i, j] = Q[i, j]
        for m in range(M):
            C[i, K + m] = R[i, m]
            C[K + m, i] = R[i, m]
    for m in range(M):
        u[K + m] = -A[m]
        for n in range(M):
            C[K + m, K + n] = T[m, n]
    total = 0.0
    for a in range(K + M):
        for b in range(K + M):
            total += u[a] * u[b] * i2_at(C, a, b, g)
    return 0.5 * total


def relu_i4_sums_if(quadrature, C, K, u, out):
    """:func:`relu_i4_sums` with the quadrature ``(x, w)``, or nothing when ``quadrature`` is
    None. Decided by the argument's type when a kernel is compiled: a kernel that passes None
    (every activation but relu) never compiles the ReLU quadrature, which is about half of the
    ODE kernel's compile time. Callable from compiled code only."""
    raise NotImplementedError("relu_i4_sums_if is called from compiled code only")


@overload(relu_i4_sums_if, jit_options=THEORY_OPTIONS)
def _relu_i4_sums_if(quadrature, C, K, u, out):
    if isinstance(quadrature, types.NoneType):
        return lambda quadrature, C, K, u, out: None

    def impl(quadrature, C, K, u, out):
        relu_i4_sums(C, K, u, out, quadrature[0], quadrature[1])
    return impl


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


def I4(cov, *, g: str = "erf", nodes: int | None = None) -> float:
    """I4 = E[g'(z₀) g'(z₁) g(z₂) g(z₃)] for z ~ N(0, cov), cov 4×4 (:func:`i4_entries`).

    For g = relu the value comes from :func:`relu_i4_fields`: Stein's lemma reduces
    E[z₂ z₃ 1{all z > 0}] to orthant probabilities of at most four fields, exact in closed form
    up to three and, for four distinct fields, Plackett's one-dimensional integrals by
    Gauss–Legendre with ``nodes`` nodes per pair (default
    :data:`analysis.orthant.DEFAULT_NODES`). ``nodes`` applies to relu only.

    Accuracy (tests/test_integrals.py and bench/relu_i4.py, against 30- to 40-digit
    quadrature): relative 1e-8 or better (absolute 1e-12 below 1e-4) on well-conditioned
    covariances (~1e-15), on nearly equal fields down to 1 − ρ = 1e-14 (~1e-10; fields equal to
    within the rounding of ρ are merged), on nearly anti-parallel fields down to 1 + ρ = 1e-10,
    with students close to teachers, and with one small eigenvalue down to ~1e-8. Limits:
    below 1 + ρ ≈ 1e-11 the rounding of ρ itself (1e-16) sets the absolute error, 1e-12 to
    1e-11; and when two eigenvalues of the correlation matrix are below ~1e-7 without a pair of
    nearly equal fields (four fields nearly in a plane), the Stein terms cancel and their
    conditional correlations are set by those eigenvalues: measured errors 1.6e-12 absolute at
    1e-7 and 3e-9 (relative 3e-7) at 1e-10 (bench/relu_i4.py).
    """
    c, code = _check(cov, 4, g)
    if nodes is None:
        return float(i4_at(c, 0, 1, 2, 3, code))
    if g != "relu":
        raise ValueError(f"nodes applies to g = relu only, got g = {g!r}")
    x, w = gauss_legendre_unit(nodes)
    return float(relu_i4_fields(c, 0, 1, 2, 3, x, w))


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
    """Closed-form ε_g from the order parameters (docs/model.md §4.3).

    ε_g = ½ [Σ_{k,l} v_k v_l I2(k,l) + Σ_{n,m} A_n A_m I2(n,m) − 2 Σ_{k,n} v_k A_n I2(k,n)]
    with I2 evaluated on C = [[Q, R], [Rᵀ, T]].
    """
    if g not in ACTIVATIONS:
        raise ValueError(f"g must be one of {', '.join(ACTIVATIONS)}, got {g!r}")
    as_array = lambda x: np.ascontiguousarray(x, dtype=np.float64)  # noqa: E731
    return float(generalisation_error_kernel(as_array(Q), as_array(R), as_array(T), as_array(v),
                                             as_array(A), ACTIVATION_CODES[g]))
