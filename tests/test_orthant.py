"""The ReLU I4 (docs/model.md §5.4): orthant probabilities, the Stein reduction and the Plackett
quadrature, against arbitrary-precision quadrature (tests/naive.py, mpmath), exact special
cases and node doubling. Monte Carlo checks of every pattern of repeated indices are in
tests/test_integrals.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from analysis.integrals import I2, I4, J2, MERGE_CORRELATION
from analysis.orthant import orthant_probability
from naive import relu_i4_mp

REL, ABS_SMALL = 1e-8, 1e-12  # docs/model.md §5.4: relative 1e-8, absolute 1e-12 below 1e-4


def assert_accurate(value, ref, what=""):
    tol = ABS_SMALL if abs(ref) < 1e-4 else REL * abs(ref)
    assert abs(value - ref) <= tol, f"{what}: {value!r} vs {ref!r} (error {value - ref:.3g})"


def random_cov(rng, rank=6, n=4):
    X = rng.normal(size=(n, rank)) * rng.uniform(0.3, 3.0, size=(n, 1))
    return X @ X.T / rank


def near_pair(rng, i, j, sign, delta, k=6):
    """Covariance whose fields i, j have correlation sign·(1 − delta) exactly in construction."""
    X = rng.normal(size=(4, k))
    u = X[j] - X[j] @ X[i] / (X[i] @ X[i]) * X[i]
    u *= np.linalg.norm(X[i]) / np.linalg.norm(u)
    c = 1.0 - delta
    X[j] = (sign * c * X[i] + math.sqrt(1.0 - c * c) * u) * rng.uniform(0.5, 2.0)
    return X @ X.T / k


def two_pairs(rng, delta, k=6):
    """Students 0, 1 close to teachers 2, 3: the late state of a specialised network."""
    X = rng.normal(size=(4, k))
    for i, j in ((0, 2), (1, 3)):
        u = X[j] - X[j] @ X[i] / (X[i] @ X[i]) * X[i]
        u *= np.linalg.norm(X[i]) / np.linalg.norm(u)
        c = 1.0 - delta
        X[j] = (c * X[i] + math.sqrt(1.0 - c * c) * u) * rng.uniform(0.5, 2.0)
    return X @ X.T / k


def fixed_cases():
    rng = np.random.default_rng(2026)
    cases = [(f"random{i}", random_cov(rng)) for i in range(4)]
    cases += [(f"wide{i}", random_cov(rng, rank=40)) for i in range(2)]
    for delta in (1e-3, 1e-6, 1e-9, 1e-11):
        cases.append((f"pair+{delta:g}", near_pair(rng, 0, 2, 1, delta)))
        cases.append((f"pair01+{delta:g}", near_pair(rng, 0, 1, 1, delta)))
        cases.append((f"pair23+{delta:g}", near_pair(rng, 2, 3, 1, delta)))
        cases.append((f"twopairs{delta:g}", two_pairs(rng, delta)))
    for delta in (1e-3, 1e-6, 1e-9):
        cases.append((f"pair-{delta:g}", near_pair(rng, 1, 3, -1, delta)))
        cases.append((f"pair01-{delta:g}", near_pair(rng, 0, 1, -1, delta)))
    X = rng.normal(size=(4, 3))
    for eps in (1e-2, 1e-4):
        cases.append((f"rank3+{eps:g}", X @ X.T + eps * np.diag(np.diag(X @ X.T))))
    return cases


CASES = fixed_cases()


@pytest.mark.parametrize("name,C", CASES, ids=[c[0] for c in CASES])
def test_relu_I4_matches_arbitrary_precision_quadrature(name, C):
    ref = relu_i4_mp(C, dps=30)
    assert_accurate(I4(C, g="relu"), ref, name)


@pytest.mark.parametrize("name,C", CASES[::3], ids=[c[0] for c in CASES[::3]])
def test_relu_I4_node_doubling(name, C):
    """Doubling the Gauss–Legendre nodes changes nothing at the stated accuracy."""
    assert_accurate(I4(C, g="relu"), I4(C, g="relu", nodes=40), name)


def test_node_count_matters_where_a_quadrature_is_used():
    """The test above can fail: too few nodes are visibly wrong on a four-field case."""
    C = near_pair(np.random.default_rng(5), 0, 2, 1, 1e-9)
    ref = relu_i4_mp(C)
    assert abs(I4(C, g="relu", nodes=4) - ref) > 1e3 * REL * abs(ref)


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


def test_independent_blocks_factorise():
    """(z0, z1) ⟂ (z2, z3): I4 = P(z0 > 0, z1 > 0) · E[relu(z2) relu(z3)], four distinct fields."""
    rng = np.random.default_rng(3)
    for _ in range(5):
        A, B = random_cov(rng, n=2), random_cov(rng, n=2)
        C = np.zeros((4, 4))
        C[:2, :2], C[2:, 2:] = A, B
        rho = A[0, 1] / math.sqrt(A[0, 0] * A[1, 1])
        expected = (0.25 + math.asin(rho) / (2 * math.pi)) * I2(B, g="relu")
        assert I4(C, g="relu") == pytest.approx(expected, rel=1e-12)


def test_zero_variance_fields_give_zero_and_the_limit_is_continuous():
    C = random_cov(np.random.default_rng(8))
    for f in range(4):
        Z = C.copy()
        Z[f, :] = Z[:, f] = 0.0
        assert I4(Z, g="relu") == 0.0   # Θ(0) = relu(0) = 0
    # a relu field's scale multiplies I4; a Θ field's scale does not enter at all
    for eps in (1e-4, 1e-8, 1e-12):
        S = np.diag([1.0, 1.0, eps, 1.0])
        assert I4(S @ C @ S, g="relu") == pytest.approx(eps * I4(C, g="relu"), rel=1e-12)
        S = np.diag([eps, 1.0, 1.0, 1.0])
        assert I4(S @ C @ S, g="relu") == pytest.approx(I4(C, g="relu"), rel=1e-12)
    bad = C.copy()
    bad[1, 1] = np.nan
    assert math.isnan(I4(bad, g="relu"))


def test_merging_identical_fields_is_continuous():
    """Identical fields are merged; fields only nearly identical are not, down to the last
    digits of ρ: a merged field would stand in for one whose correlations with the others differ
    by √(2(1 − ρ)) (1.4e-6 at the external specification's threshold 1 − 1e-12, docs/model.md §5.4)."""
    rng = np.random.default_rng(21)
    C = random_cov(rng)
    same = C.copy()
    same[2, :] = same[:, 2] = C[:, 0]
    same[2, 2] = C[0, 0]                       # z2 ≡ z0: three distinct fields
    pattern = I4(C[np.ix_([0, 1, 0, 3], [0, 1, 0, 3])], g="relu")
    assert I4(same, g="relu") == pytest.approx(pattern, rel=1e-14)
    for pair in ((0, 2), (0, 1), (2, 3)):
        for delta in (1e-11, 1e-12, 1e-13, 1e-14):
            near = near_pair(rng, *pair, 1, delta)
            assert_accurate(I4(near, g="relu"), relu_i4_mp(near, dps=40), f"{pair} {delta:g}")
    assert 1.0 - MERGE_CORRELATION < 1e-15


def test_anti_parallel_fields_empty_the_orthant():
    C = random_cov(np.random.default_rng(9))
    anti = C.copy()
    anti[1, :] = anti[:, 1] = -C[:, 0]
    anti[1, 1] = C[0, 0]
    assert I4(anti, g="relu") == 0.0
    rng = np.random.default_rng(10)
    for pair in ((0, 1), (1, 3), (0, 2)):   # nearly anti-parallel: small, not zero
        near = near_pair(rng, *pair, -1, 1e-10)
        ref = relu_i4_mp(near, dps=40)
        assert_accurate(I4(near, g="relu"), ref, f"{pair} anti 1e-10")
        assert I4(near, g="relu") >= 0.0


def test_non_finite_entries_give_nan():
    """A NaN or infinite covariance entry never becomes a number (erf gives NaN too)."""
    C = np.eye(4) + 0.3 * (np.ones((4, 4)) - np.eye(4))
    for bad in (np.nan, np.inf, -np.inf):
        for i, j in ((0, 1), (2, 3), (0, 2), (1, 3), (2, 2)):
            D = C.copy()
            D[i, j] = D[j, i] = bad
            assert math.isnan(I4(D, g="relu")), (bad, i, j)
        D = C[:2, :2].copy()
        D[0, 1] = D[1, 0] = bad
        assert math.isnan(I2(D, g="relu")) and math.isnan(J2(D, g="relu")), bad


def test_pattern_arguments_of_the_public_function():
    with pytest.raises(ValueError, match="nodes"):
        I4(np.eye(4), g="erf", nodes=20)
    with pytest.raises(ValueError, match="n must be"):
        I4(np.eye(4), g="relu", nodes=0)
