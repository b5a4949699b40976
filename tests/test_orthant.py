"""Orthant probabilities P(z_i > 0 for every i) of a centred Gaussian vector in 1 to 4
dimensions (docs/model.md §5.4 step 3), the building block of the ReLU I4.

analysis/orthant.py: the closed forms for n ≤ 3 against their formulas and Genz's algorithm
(scipy), Plackett's reduction for n = 4 against Genz, against exact values (the equicorrelated
orthant, independent blocks) and by node doubling, on well-conditioned and nearly singular
correlation matrices (both quadrature rules of §5.4 step 4), and the argument checks. The ReLU
I4 that uses them is in tests/test_integrals.py.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from analysis.orthant import DEFAULT_NODES, SINGULAR_DETERMINANT, orthant_probability


def random_cov(rng, rank=6, n=4):
    X = rng.normal(size=(n, rank)) * rng.uniform(0.3, 3.0, size=(n, 1))
    return X @ X.T / rank



def test_equicorrelated_half_orthant_is_one_fifth():
    P = np.full((4, 4), 0.5)
    np.fill_diagonal(P, 1.0)
    assert orthant_probability(P) == pytest.approx(0.2, abs=1e-14)


def test_orthant_probability_matches_genz_and_closed_forms():
    rng = np.random.default_rng(11)
    for _ in range(5):
        C = random_cov(rng)
        d = np.sqrt(np.diag(C))
        P = C / np.outer(d, d)
        genz = multivariate_normal.cdf(np.zeros(4), mean=np.zeros(4), cov=P, abseps=1e-10,
                                       releps=1e-10, maxpts=4_000_000)
        assert orthant_probability(P) == pytest.approx(genz, abs=1e-7)
        for n in (1, 2, 3):
            genz = (multivariate_normal.cdf(np.zeros(n), mean=np.zeros(n), cov=P[:n, :n],
                                            abseps=1e-10, releps=1e-10, maxpts=4_000_000)
                    if n > 1 else 0.5)
            assert orthant_probability(P[:n, :n]) == pytest.approx(genz, abs=1e-7)
    with pytest.raises(ValueError, match="corr"):
        orthant_probability(np.eye(5))
    with pytest.raises(ValueError, match="unit diagonal"):
        orthant_probability(2 * np.eye(3))


def genz(P):
    """P(z > 0) by Genz's algorithm (scipy), to about 1e-8."""
    n = P.shape[0]
    return multivariate_normal.cdf(np.zeros(n), mean=np.zeros(n), cov=P, abseps=1e-10,
                                   releps=1e-10, maxpts=4_000_000)


def correlation(C):
    d = np.sqrt(np.diag(C))
    return C / np.outer(d, d)


def test_closed_forms_below_four_fields_are_exact():
    """n = 1: 1/2; n = 2: 1/4 + arcsin ρ/2π; n = 3: 1/8 + Σ arcsin ρ_ij/4π, to rounding."""
    rng = np.random.default_rng(31)
    assert orthant_probability(np.eye(1)) == 0.5
    for _ in range(5):
        P = correlation(random_cov(rng, n=3))
        r01, r02, r12 = P[0, 1], P[0, 2], P[1, 2]
        assert orthant_probability(P[:2, :2]) == pytest.approx(
            0.25 + math.asin(r01) / (2 * math.pi), rel=1e-15, abs=1e-16)
        assert orthant_probability(P) == pytest.approx(
            0.125 + (math.asin(r01) + math.asin(r02) + math.asin(r12)) / (4 * math.pi),
            rel=1e-15, abs=1e-16)
    # limits: independent fields, equal fields, opposite fields
    assert orthant_probability(np.eye(4)) == pytest.approx(1 / 16, abs=1e-16)
    assert orthant_probability(np.ones((2, 2))) == pytest.approx(0.5, abs=1e-16)
    assert orthant_probability(np.array([[1.0, -1.0], [-1.0, 1.0]])) == pytest.approx(0.0,
                                                                                     abs=1e-16)


def test_four_fields_are_symmetric_under_permutations():
    rng = np.random.default_rng(32)
    P = correlation(random_cov(rng))
    ref = orthant_probability(P)
    for perm in itertools.permutations(range(4)):
        assert orthant_probability(P[np.ix_(perm, perm)]) == pytest.approx(ref, abs=1e-14), perm


def test_nearly_singular_four_fields_use_the_panelled_rule_accurately():
    """det P < 0.05 (a student close to its teacher): the panelled rule of §5.4 step 4 agrees
    with twice the nodes, and with Genz."""
    rng = np.random.default_rng(33)
    for delta in (1e-2, 1e-4, 1e-6):
        X = rng.normal(size=(4, 6))
        X[1] = (1 - delta) * X[0] + math.sqrt(1 - (1 - delta) ** 2) * X[1]  # ρ₀₁ ≈ 1 − δ
        P = correlation(X @ X.T)
        assert np.linalg.det(P) < SINGULAR_DETERMINANT, delta
        value = orthant_probability(P)
        if delta == 1e-4:  # Genz is slow here (1.3 s): one of the three
            assert value == pytest.approx(genz(P), abs=1e-7), delta
        assert value == pytest.approx(orthant_probability(P, nodes=2 * DEFAULT_NODES),
                                      abs=1e-12), delta


def test_node_doubling_changes_nothing_on_well_conditioned_matrices():
    rng = np.random.default_rng(34)
    for _ in range(5):
        P = correlation(random_cov(rng))
        assert np.linalg.det(P) >= SINGULAR_DETERMINANT
        assert orthant_probability(P) == pytest.approx(orthant_probability(P, nodes=40),
                                                       abs=1e-14)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="corr"):
        orthant_probability(np.ones((2, 3)))
    with pytest.raises(ValueError, match="symmetric"):
        orthant_probability(np.array([[1.0, 0.2], [0.3, 1.0]]))
    with pytest.raises(ValueError, match="n must be"):
        orthant_probability(np.eye(4), nodes=0)
