"""Orthant probabilities P(z_i > 0 for every i) of a centred Gaussian vector in 1 to 4
dimensions (docs/model.md §5.4), the building block of the ReLU integral I4.

For a correlation matrix P:

- n = 1: 1/2
- n = 2: 1/4 + arcsin ρ₀₁ / 2π
- n = 3: 1/8 + (arcsin ρ₀₁ + arcsin ρ₀₂ + arcsin ρ₁₂) / 4π
- n = 4 (Plackett's reduction): moving along P(s) = I + s(P − I) from s = 0, where the
  probability is 1/16, ∂P₄/∂ρ_ij = φ₂(0, 0; ρ_ij) · P(z_k > 0, z_l > 0 | z_i = z_j = 0), so

      P₄ = 1/16 + Σ_{i<j} arcsin ρ_ij / 8π
               + (1/4π²) Σ_{i<j} ∫₀^{arcsin ρ_ij} arcsin ρ_kl·ij(sin θ / ρ_ij) dθ,

  with (k, l) the complementary pair and ρ_kl·ij(s) their partial correlation given (z_i, z_j)
  in P(s).

The six one-dimensional integrals are evaluated with Gauss–Legendre on θ = θ_max x(2 − x),
x ∈ [0, 1]. When P is nearly singular (a student that has learned its teacher, the usual late
state of the ODE), 1 − ρ_kl·ij² vanishes linearly at the end of the path, which gives the
integrand a square-root endpoint singularity in θ; the substitution makes it smooth in x (the
quadratic θ_max − θ ∝ (1 − x)²), and the rule converges geometrically again. The accuracy, by
node doubling and against arbitrary-precision quadrature, is in tests/test_orthant.py and
tests/test_integrals.py.
"""

from __future__ import annotations

import math

import numpy as np

from analysis.jit import theory_kernel

__all__ = [
    "orthant_probability", "DEFAULT_NODES", "NODES", "WEIGHTS", "gauss_legendre_unit",
    # kernels the ReLU integrals compile against
    "clip_unit", "one_minus_square", "orthant_2", "orthant_2_from_arcsine",
    "orthant_3_from_arcsines", "orthant_4", "partial_correlation_1", "partial_correlation_2",
]

_TWO_PI = 2.0 * math.pi
_FOUR_PI = 4.0 * math.pi
_EIGHT_PI = 8.0 * math.pi
_FOUR_PI2 = 4.0 * math.pi ** 2

# The six pairs (i, j) with their complementary pair (k, l).
_PAIRS = ((0, 1, 2, 3), (0, 2, 1, 3), (0, 3, 1, 2), (1, 2, 0, 3), (1, 3, 0, 2), (2, 3, 0, 1))

DEFAULT_NODES = 20


def gauss_legendre_unit(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Legendre nodes and weights on [0, 1] (numpy's ``leggauss`` mapped)."""
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    x, w = np.polynomial.legendre.leggauss(int(n))
    return 0.5 * (x + 1.0), 0.5 * w


NODES, WEIGHTS = gauss_legendre_unit(DEFAULT_NODES)


@theory_kernel(inline=True)
def clip_unit(x):
    """x clipped to [−1, 1] (NaN stays NaN)."""
    return min(1.0, max(-1.0, x)) if x == x else x


@theory_kernel(inline=True)
def orthant_2_from_arcsine(a01):
    """P(z₀ > 0, z₁ > 0) = 1/4 + a₀₁/2π, given a₀₁ = arcsin ρ₀₁."""
    return 0.25 + a01 / _TWO_PI


@theory_kernel(inline=True)
def orthant_3_from_arcsines(a01, a02, a12):
    """P(z₀, z₁, z₂ > 0) = 1/8 + (a₀₁ + a₀₂ + a₁₂)/4π, given the arcsines of the correlations."""
    return 0.125 + (a01 + a02 + a12) / _FOUR_PI


@theory_kernel(inline=True)
def orthant_2(r01):
    """P(z₀ > 0, z₁ > 0) = 1/4 + arcsin ρ₀₁ / 2π."""
    return orthant_2_from_arcsine(math.asin(clip_unit(r01)))


@theory_kernel(inline=True)
def one_minus_square(a):
    """1 − a² as (1 − |a|)(1 + |a|): exact to rounding even for |a| near 1, where 1 − a·a
    would lose the digits that carry the answer."""
    gap = 1.0 - abs(a)
    return gap * (2.0 - gap)


@theory_kernel(inline=True)
def _partial(akl, aki, ali, qki, qli):
    """(a_kl − a_ki a_li)/√(q_ki q_li), q = 1 − a²: the correlation of k and l given i."""
    den = qki * qli
    if not den > 0.0:
        return 0.0 if den == 0.0 else math.nan
    return clip_unit((akl - aki * ali) / math.sqrt(den))


@theory_kernel(inline=True)
def partial_correlation_1(P, k, l, i):
    """Correlation of z_k and z_l given z_i, for the correlations P (indexed P[k][l]: a nested
    tuple, or an array): (ρ_kl − ρ_ki ρ_li) / √((1 − ρ_ki²)(1 − ρ_li²))."""
    return _partial(P[k][l], P[k][i], P[l][i], one_minus_square(P[k][i]),
                    one_minus_square(P[l][i]))


@theory_kernel(inline=True)
def _partial_given_pair(akl, aki, akj, ali, alj, aij, qki, qkj, qli, qlj, qij):
    """Correlation of k and l given (i, j), from correlations a and q = 1 − a², by conditioning
    on one of i, j and then on the other: ρ_kl·ij = (ρ_kl·i − ρ_kj·i ρ_lj·i)/√((1 − ρ_kj·i²)
    (1 − ρ_lj·i²)). Of the two orders, the one whose intermediate correlations are further from
    ±1 is used: a field nearly equal to j given i (a near-degenerate pair (k, j)) makes
    1 − ρ_kj·i² a difference of nearly equal numbers, while conditioning on j first keeps it
    an ordinary correlation."""
    i_first, r_kj_i, r_lj_i, r_ki_j, r_li_j = _conditioning_order(aki, akj, ali, alj, aij, qki,
                                                                  qkj, qli, qlj, qij)
    if i_first:
        return _partial(_partial(akl, aki, ali, qki, qli), r_kj_i, r_lj_i,
                        one_minus_square(r_kj_i), one_minus_square(r_lj_i))
    return _partial(_partial(akl, akj, alj, qkj, qlj), r_ki_j, r_li_j,
                    one_minus_square(r_ki_j), one_minus_square(r_li_j))


@theory_kernel(inline=True)
def _conditioning_order(aki, akj, ali, alj, aij, qki, qkj, qli, qlj, qij):
    """For ρ_kl·ij: whether to condition on i first (see :func:`_partial_given_pair`), and the
    intermediate correlations ρ_kj·i, ρ_lj·i, ρ_ki·j, ρ_li·j that decide it."""
    r_kj_i = _partial(akj, aki, aij, qki, qij)
    r_lj_i = _partial(alj, ali, aij, qli, qij)
    r_ki_j = _partial(aki, akj, aij, qkj, qij)
    r_li_j = _partial(ali, alj, aij, qlj, qij)
    i_first = max(abs(r_kj_i), abs(r_lj_i)) <= max(abs(r_ki_j), abs(r_li_j))
    return i_first, r_kj_i, r_lj_i, r_ki_j, r_li_j


@theory_kernel(inline=True)
def partial_correlation_2(P, k, l, i, j):
    """Correlation of z_k and z_l given (z_i, z_j), for the correlations P (indexed P[k][l])."""
    return _partial_given_pair(P[k][l], P[k][i], P[k][j], P[l][i], P[l][j], P[i][j],
                               one_minus_square(P[k][i]), one_minus_square(P[k][j]),
                               one_minus_square(P[l][i]), one_minus_square(P[l][j]),
                               one_minus_square(P[i][j]))


@theory_kernel(inline=True)
def _partial_correlation_path(rij, rkl, rki, rkj, rli, rlj, s):
    """ρ_kl·ij in I + s(P − I), multiplied through by 1 − s²ρ_ij²:
    cov = s ρ_kl (1 − s²ρ_ij²) − s² (ρ_ki ρ_li + ρ_kj ρ_lj − s ρ_ij (ρ_ki ρ_lj + ρ_kj ρ_li)),
    var_k = 1 − s²(ρ_ij² + ρ_ki² + ρ_kj²) + 2 s³ ρ_ij ρ_ki ρ_kj, and var_l alike. Accurate while
    P is far from singular (see :func:`orthant_4`)."""
    s2 = s * s
    cov = (s * rkl * (1.0 - s2 * rij * rij)
           - s2 * (rki * rli + rkj * rlj - s * rij * (rki * rlj + rkj * rli)))
    var_k = 1.0 - s2 * (rij * rij + rki * rki + rkj * rkj) + 2.0 * s2 * s * rij * rki * rkj
    var_l = 1.0 - s2 * (rij * rij + rli * rli + rlj * rlj) + 2.0 * s2 * s * rij * rli * rlj
    den = var_k * var_l
    if not den > 0.0:
        return 0.0 if den == 0.0 else math.nan
    return clip_unit(cov / math.sqrt(den))


@theory_kernel(inline=True)
def _scaled_one_minus_square(rho, y):
    """1 − (sρ)² for s = 1 − y, with 1 − s|ρ| = (1 − |ρ|) + y|ρ| exact to rounding."""
    gap = (1.0 - abs(rho)) + y * abs(rho)
    return gap * (2.0 - gap)


@theory_kernel()
def determinant_4(P):
    """det P of a 4×4 matrix (cofactor expansion along the first two rows)."""
    s0 = P[0, 0] * P[1, 1] - P[1, 0] * P[0, 1]
    s1 = P[0, 0] * P[1, 2] - P[1, 0] * P[0, 2]
    s2 = P[0, 0] * P[1, 3] - P[1, 0] * P[0, 3]
    s3 = P[0, 1] * P[1, 2] - P[1, 1] * P[0, 2]
    s4 = P[0, 1] * P[1, 3] - P[1, 1] * P[0, 3]
    s5 = P[0, 2] * P[1, 3] - P[1, 2] * P[0, 3]
    c5 = P[2, 2] * P[3, 3] - P[3, 2] * P[2, 3]
    c4 = P[2, 1] * P[3, 3] - P[3, 1] * P[2, 3]
    c3 = P[2, 1] * P[3, 2] - P[3, 1] * P[2, 2]
    c2 = P[2, 0] * P[3, 3] - P[3, 0] * P[2, 3]
    c1 = P[2, 0] * P[3, 2] - P[3, 0] * P[2, 2]
    c0 = P[2, 0] * P[3, 1] - P[3, 0] * P[2, 1]
    return s0 * c5 - s1 * c4 + s2 * c3 + s3 * c2 - s4 * c1 + s5 * c0


# Below this determinant of P, the near-singular rule of :func:`orthant_4` is used.
SINGULAR_DETERMINANT = 5e-2
# The near-singular rule applies the Gauss–Legendre rule on ⌈ln(1 + 1/λ_min)/4⌉ equal panels.
SINGULAR_PANEL_SPAN = 4.0
#: The smallest eigenvalue the singular rule's map uses (P may be singular to rounding).
MIN_EIGENVALUE = 1e-16


@theory_kernel()
def orthant_4(P, x, w):
    """P(z₀, z₁, z₂, z₃ > 0) for the 4×4 correlation matrix P, by Plackett's reduction (module
    docstring) with the Gauss–Legendre rule (x, w) on [0, 1].

    Well-conditioned P (det P ≥ 0.05): the integrals in θ, θ = θ_max x(2 − x).

    Nearly singular P (a student close to its teacher): along M(s) = I + s(P − I) the
    eigenvalues are y + (1 − y)λ_k, y = 1 − s, and those of every principal block are no smaller
    than λ_min(P); so every difficulty of the integrand is a root √(y + c) with c ≳ λ_min,
    anywhere in [λ_min, 1]. The map y + c₀ = c₀ ((1 + c₀)/c₀)^x, c₀ = λ_min, spreads these
    scales evenly over x; the rule is applied on ⌈ln(1 + 1/c₀)/4⌉ equal panels of x, and the partial
    correlations are formed step by step (:func:`_partial_given_pair`) so that their small
    denominators keep their digits.
    """
    if determinant_4(P) >= SINGULAR_DETERMINANT:
        return _orthant_4_regular(P, x, w)
    return _orthant_4_singular(P, x, w)


@theory_kernel()
def _orthant_4_regular(P, x, w):
    """Plackett's reduction for det P ≥ SINGULAR_DETERMINANT: θ = θ_max x(2 − x)."""
    total = 0.0625
    for p in range(6):
        i, j, k, l = _PAIRS[p]
        rij = P[i, j]
        if rij == 0.0:
            continue
        theta_max = math.asin(clip_unit(rij))
        rkl, rki, rkj, rli, rlj = P[k, l], P[k, i], P[k, j], P[l, i], P[l, j]
        acc = 0.0
        for q in range(x.shape[0]):
            xq = x[q]
            s = math.sin(theta_max * xq * (2.0 - xq)) / rij
            acc += w[q] * (1.0 - xq) * math.asin(
                _partial_correlation_path(rij, rkl, rki, rkj, rli, rlj, s))
        total += theta_max / _EIGHT_PI + theta_max * 2.0 * acc / _FOUR_PI2
    return total


@theory_kernel()
def _orthant_4_singular(P, x, w):
    """Plackett's reduction for nearly singular P: the panelled map of :func:`orthant_4`."""
    total = 0.0625
    c0 = max(np.linalg.eigvalsh(P)[0], MIN_EIGENVALUE)
    log_ratio = math.log1p(1.0 / c0)
    panels = max(1, math.ceil(log_ratio / SINGULAR_PANEL_SPAN))
    nodes = x.shape[0]
    shifted = np.empty(panels * nodes)      # y + c₀ at every node, shared by the six pairs
    weight = np.empty(panels * nodes)       # the rule's weight times dy/dx / log_ratio
    for panel in range(panels):
        for q in range(nodes):
            value = c0 * math.exp(log_ratio * (panel + x[q]) / panels)
            shifted[panel * nodes + q] = value
            weight[panel * nodes + q] = w[q] * value
            if value - c0 > 1.0 or value - c0 < 0.0:   # rounding at the ends of [0, 1]
                shifted[panel * nodes + q] = c0 + min(1.0, max(0.0, value - c0))
    for p in range(6):
        i, j, k, l = _PAIRS[p]
        rij = P[i, j]
        if rij == 0.0:
            continue
        rkl, rki, rkj, rli, rlj = P[k, l], P[k, i], P[k, j], P[l, i], P[l, j]
        # the conditioning order that keeps the digits at the singular end serves the path
        if _conditioning_order(rki, rkj, rli, rlj, rij, one_minus_square(rki),
                               one_minus_square(rkj), one_minus_square(rli),
                               one_minus_square(rlj), one_minus_square(rij))[0]:
            i, j, rki, rkj, rli, rlj = j, i, rkj, rki, rlj, rli
        acc = 0.0
        for m in range(panels * nodes):
            y = shifted[m] - c0
            s = 1.0 - y
            qij = _scaled_one_minus_square(rij, y)
            qkj = _scaled_one_minus_square(rkj, y)
            qlj = _scaled_one_minus_square(rlj, y)
            # ρ_kl·ij by conditioning on j, then on i, in one fraction:
            # n_xy = a_xy − a_xj a_yj, ρ = (n_kl q_ij − n_ki n_li)/√((q_kj q_ij − n_ki²)
            # (q_lj q_ij − n_li²)), with a = sρ and q = 1 − a²
            s2 = s * s
            n_kl = s * rkl - s2 * rkj * rlj
            n_ki = s * rki - s2 * rkj * rij
            n_li = s * rli - s2 * rlj * rij
            den = (qkj * qij - n_ki * n_ki) * (qlj * qij - n_li * n_li)
            r = clip_unit((n_kl * qij - n_ki * n_li) / math.sqrt(den)) if den > 0.0 else 0.0
            acc += weight[m] / math.sqrt(qij) * orthant_2(r)
        acc /= panels
        total += rij * log_ratio * acc / _TWO_PI
    return total


@theory_kernel()
def orthant_probability_kernel(P, n, x, w):
    """P(z_0..z_{n−1} > 0) for the leading n×n block of the correlation matrix P (n ≤ 4)."""
    if n == 0:
        return 1.0
    if n == 1:
        return 0.5
    if n == 2:
        return orthant_2(P[0, 1])
    if n == 3:
        return orthant_3_from_arcsines(math.asin(clip_unit(P[0, 1])),
                                       math.asin(clip_unit(P[0, 2])),
                                       math.asin(clip_unit(P[1, 2])))
    return orthant_4(P, x, w)


def orthant_probability(corr, *, nodes: int = DEFAULT_NODES) -> float:
    """P(z_i > 0 for all i) for z ~ N(0, corr), corr an n×n correlation matrix, n ≤ 4.

    Exact closed forms for n ≤ 3; for n = 4 Plackett's reduction with ``nodes`` Gauss–Legendre
    nodes per pair (module docstring). Fields with correlation 1 should be merged by the caller
    (the reduction's end point is singular there); a correlation of −1 gives 0.
    """
    P = np.ascontiguousarray(corr, dtype=np.float64)
    n = P.shape[0]
    if P.ndim != 2 or P.shape != (n, n) or not 1 <= n <= 4:
        raise ValueError(f"corr must be an n×n matrix with 1 <= n <= 4, got shape {P.shape}")
    if not np.allclose(np.diag(P), 1.0, rtol=0, atol=1e-12) or not np.allclose(P, P.T):
        raise ValueError("corr must be a symmetric matrix with unit diagonal")
    x, w = (NODES, WEIGHTS) if nodes == DEFAULT_NODES else gauss_legendre_unit(nodes)
    return float(orthant_probability_kernel(P, n, x, w))
