"""Gaussian integrals and the closed-form ε_g (docs/model.md §4.3, §5.0, §5.3–5.4; check §7.2).

analysis/integrals.py: I2, I3, I4, J2, I2_matrix and generalisation_error.

1. Every closed form (erf, linear, relu) against Monte Carlo (2·10⁶ samples per covariance,
   fixed seeds, tolerance 5 standard errors estimated from the same samples) on random
   covariances with repeated indices and singular 4 × 4 covariances built from 2 or 3 fields.
2. The erf forms against deterministic Gauss–Hermite quadrature to 1e-10.
3. I2_matrix and the closed-form ε_g against explicit double sums and Monte Carlo.
4. ReLU special cases of I2, J2 and I3.
5. The ReLU I4 (§5.4): against 30- to 40-digit mpmath quadrature (tests/naive.py), node
   doubling, exact special cases (independent blocks, zero variances, merged and anti-parallel
   fields) and non-finite entries.

The references use only numpy/scipy/mpmath, the formulas of docs/model.md and the plain f, g,
g′ of tests/naive.py, never the code under test. The orthant probabilities themselves are in
tests/test_orthant.py, the folds and activations in tests/test_activations.py.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermegauss
from scipy import integrate

from analysis.activations import ACTIVATIONS
from analysis.integrals import I2, I2_matrix, I3, I4, J2, MERGE_CORRELATION, generalisation_error
from naive import g_act, g_prime, relu_i4_mp

N_MC = 2_000_000
N_SE = 5.0
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

def sqrt_factor(C: np.ndarray) -> np.ndarray:
    """A factor L with L Lᵀ = C for any symmetric PSD C (singular allowed)."""
    w, V = np.linalg.eigh(C)
    return V * np.sqrt(np.clip(w, 0.0, None))


def sub(C: np.ndarray, idx) -> np.ndarray:
    """Sub-covariance of the named fields in argument order (repeated indices repeat rows)."""
    idx = list(idx)
    return C[np.ix_(idx, idx)]


# ---------------------------------------------------------------------------------------------
# 1. Closed forms vs Monte Carlo
# ---------------------------------------------------------------------------------------------

def _random_cov(n: int, seed: int, scale: float, ridge: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    L = rng.normal(size=(n, n))
    return scale * (L @ L.T) / n + ridge * np.eye(n)


def _strong_2x2() -> np.ndarray:
    # Strongly correlated fields with unequal variances (correlation 0.95).
    s0, s1, rho = 0.7, 1.9, 0.95
    return np.array([[s0 * s0, rho * s0 * s1], [rho * s0 * s1, s1 * s1]])


# name -> (base covariance of the underlying fields, field map, seed). The covariance passed to the
# integrals is base[map][:, map]; several maps repeat an underlying field, so the 4×4 covariances
# built from 2 or 3 fields are singular.
MC_CASES = {
    "2x2": (_random_cov(2, 11, 1.0, 0.05), [0, 1], 101),
    "2x2-strong": (_strong_2x2(), [0, 1], 102),
    "3x3": (_random_cov(3, 12, 1.5, 0.05), [0, 1, 2], 103),
    "3x3-small": (_random_cov(3, 13, 0.1, 0.01), [0, 1, 2], 104),
    "4x4": (_random_cov(4, 14, 1.0, 0.05), [0, 1, 2, 3], 105),
    "4x4-from-2": (_random_cov(2, 15, 1.0, 0.05), [0, 1, 0, 1], 106),
    "4x4-from-3": (_random_cov(3, 16, 1.2, 0.05), [0, 0, 1, 2], 107),
}

# Index patterns for I3 / I4 on 4×4 covariances (letters = distinct indices).
I3_PATTERNS = ["abc", "aab", "aba", "abb", "aaa", "bca", "cab", "abd", "dcb", "dda"]
I4_PATTERNS = ["abcd", "aabb", "abab", "abba", "aaaa", "aaab", "abaa", "abcc", "aabc", "abca",
               "bacd", "cdab", "dcba", "ddcc", "cddc"]


def _expand(pattern: str) -> tuple[int, ...]:
    return tuple("abcd".index(ch) for ch in pattern)


def _index_tuples(n: int):
    pairs = list(itertools.product(range(n), repeat=2))
    if n <= 3:
        triples = list(itertools.product(range(n), repeat=3))
        quads = list(itertools.product(range(n), repeat=4))
    else:
        triples = [_expand(p) for p in I3_PATTERNS]
        quads = [_expand(p) for p in I4_PATTERNS]
    if n == 3:
        # keep the 81 quadruples of a 3×3 affordable: every distinct multiset pattern, in orders
        quads = [q for q in quads if q[0] <= q[1]]
    return pairs, triples, quads


@functools.lru_cache(maxsize=1)
def _mc_fields(case: str) -> tuple[np.ndarray, np.ndarray]:
    """(C, z) with z of shape (n_fields, N_MC), rows contiguous."""
    base, fmap, seed = MC_CASES[case]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((base.shape[0], N_MC))
    zb = np.linalg.cholesky(base) @ x
    return sub(base, fmap), np.ascontiguousarray(zb[fmap])


def _mc_mean(samples: np.ndarray) -> tuple[float, float]:
    mean = float(samples.mean())
    se = float(samples.std(ddof=1)) / math.sqrt(samples.size)
    return mean, se


MC_PARAMS = [(case, g) for case in MC_CASES for g in ("erf", "linear", "relu")]


@pytest.mark.parametrize("case,g", MC_PARAMS, ids=[f"{c}-{g}" for c, g in MC_PARAMS])
def test_closed_forms_match_monte_carlo(case, g):
    C, z = _mc_fields(case)
    n = C.shape[0]
    G = g_act(z, g)
    Gp = g_prime(z, g)
    pairs, triples, quads = _index_tuples(n)

    checks = []  # (name, closed form, MC mean, MC s.e.)
    for i, j in pairs:
        checks.append((f"I2{(i, j)}", I2(sub(C, (i, j)), g=g), *_mc_mean(G[i] * G[j])))
        checks.append((f"J2{(i, j)}", J2(sub(C, (i, j)), g=g), *_mc_mean(Gp[i] * Gp[j])))
    for i, j, k in triples:
        checks.append((f"I3{(i, j, k)}", I3(sub(C, (i, j, k)), g=g),
                       *_mc_mean(Gp[i] * z[j] * G[k])))
    for i, j, k, l in quads:
        checks.append((f"I4{(i, j, k, l)}", I4(sub(C, (i, j, k, l)), g=g),
                       *_mc_mean((Gp[i] * Gp[j]) * (G[k] * G[l]))))

    assert len(checks) >= 10
    failures = [
        f"{name}: closed form {cf:.10g}, MC {mc:.10g} ± {se:.3g} ({(cf - mc) / se if se else np.inf:.1f} s.e.)"
        for name, cf, mc, se in checks
        if not (np.isfinite(cf) and abs(cf - mc) <= N_SE * se + 1e-12)
    ]
    assert not failures, f"g={g}, C=\n{C}\n" + "\n".join(failures)


# ---------------------------------------------------------------------------------------------
# 2. erf forms vs deterministic Gauss–Hermite quadrature
# ---------------------------------------------------------------------------------------------

@functools.cache
def _gh_grid(dim: int, nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Tensor Gauss–Hermite (probabilists') nodes X (P, dim) and weights W (P,) for N(0, I)."""
    x, w = hermegauss(nodes)
    w = w / math.sqrt(2.0 * math.pi)
    X = np.stack([a.ravel() for a in np.meshgrid(*([x] * dim), indexing="ij")], axis=1)
    W = functools.reduce(np.multiply.outer, [w] * dim).ravel()
    return X, W


def gh_expect(C: np.ndarray, fn, nodes: int) -> float:
    """E[fn(z)] for z ~ N(0, C) by tensor Gauss–Hermite quadrature (fn takes (P, dim))."""
    X, W = _gh_grid(C.shape[0], nodes)
    return float(W @ fn(X @ sqrt_factor(C).T))


def _reweighted(C: np.ndarray, m: int) -> tuple[float, np.ndarray]:
    """E[exp(-½ Σ_{i<m} z_i²) h(z)] = factor · E'[h(z)], z ~ N(0, C) and z ~ N(0, C') under E'.

    Exact Gaussian identity (Woodbury form, valid for singular C): with E selecting the first m
    fields, C' = C − C E (I + EᵀCE)⁻¹ EᵀC and factor = det(I + EᵀCE)^{-1/2}.
    """
    CE = C[:, :m]
    Mm = np.eye(m) + C[:m, :m]
    Cp = C - CE @ np.linalg.solve(Mm, CE.T)
    return 1.0 / math.sqrt(np.linalg.det(Mm)), 0.5 * (Cp + Cp.T)


def quad_erf(kind: str, C: np.ndarray) -> float:
    """Deterministic quadrature reference of the erf integrals."""
    g = lambda t: g_act(t, "erf")  # noqa: E731
    gp = lambda t: g_prime(t, "erf")  # noqa: E731
    if kind == "I2":
        return gh_expect(C, lambda Z: g(Z[:, 0]) * g(Z[:, 1]), 200)
    if kind == "J2":
        return gh_expect(C, lambda Z: gp(Z[:, 0]) * gp(Z[:, 1]), 200)
    if kind == "I3":
        return gh_expect(C, lambda Z: gp(Z[:, 0]) * Z[:, 1] * g(Z[:, 2]), 90)
    if kind == "I3-reweighted":
        # g'(z0) = √(2/π) exp(−z0²/2) absorbed into the Gaussian; then a 2-d quadrature.
        factor, Cp = _reweighted(C, 1)
        return SQRT_2_OVER_PI * factor * gh_expect(
            Cp[1:, 1:], lambda Z: Z[:, 0] * g(Z[:, 1]), 200)
    if kind == "I4":
        factor, Cp = _reweighted(C, 2)
        return (2.0 / math.pi) * factor * gh_expect(
            Cp[2:, 2:], lambda Z: g(Z[:, 0]) * g(Z[:, 1]), 200)
    raise ValueError(kind)


def _quad_covs():
    base2 = [
        np.array([[1.0, 0.3], [0.3, 0.5]]),
        np.array([[2.5, -1.4], [-1.4, 1.2]]),
        np.array([[0.8, 0.8], [0.8, 0.8]]),  # coinciding fields (singular)
    ]
    base3 = _random_cov(3, 21, 1.0, 0.05)
    base4 = _random_cov(4, 22, 1.5, 0.05)
    return base2, base3, base4


def test_quadrature_reference_is_converged():
    # the Gauss–Hermite reference itself: more nodes change nothing at the 1e-12 level
    C = np.array([[2.5, -1.4], [-1.4, 1.2]])
    f = lambda Z: g_act(Z[:, 0], "erf") * g_act(Z[:, 1], "erf")  # noqa: E731
    assert abs(gh_expect(C, f, 200) - gh_expect(C, f, 120)) < 1e-12
    # and the reweighting identity agrees with the direct 3-d quadrature for I3
    C3 = _random_cov(3, 21, 1.0, 0.05)
    assert abs(quad_erf("I3", C3) - quad_erf("I3-reweighted", C3)) < 1e-11
    # and with scipy's adaptive dblquad on one case
    a = C[0, 0] ** 0.5
    bcoef = C[0, 1] / a
    c = (C[1, 1] - bcoef ** 2) ** 0.5
    phi = lambda t: math.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)  # noqa: E731
    val = integrate.dblquad(
        lambda y, x: (phi(x) * phi(y) * float(g_act(a * x, "erf"))
                      * float(g_act(bcoef * x + c * y, "erf"))),
        -12, 12, -12, 12, epsabs=1e-13, epsrel=1e-13)[0]
    assert abs(val - gh_expect(C, f, 200)) < 1e-10


def test_erf_I2_J2_match_quadrature():
    base2, _, _ = _quad_covs()
    for C in base2:
        for kind, fn in (("I2", I2), ("J2", J2)):
            ref = quad_erf(kind, C)
            assert abs(fn(C, g="erf") - ref) < 1e-10, (kind, C, fn(C, g="erf"), ref)


def test_erf_I3_matches_quadrature():
    _, base3, base4 = _quad_covs()
    for idx in [(0, 1, 2), (0, 0, 1), (0, 1, 1), (1, 1, 1), (2, 0, 1)]:
        C = sub(base3, idx)
        ref = quad_erf("I3-reweighted", C)
        assert abs(I3(C, g="erf") - ref) < 1e-10, (idx, I3(C, g="erf"), ref)
    C = sub(base3, (2, 0, 1))
    assert abs(I3(C, g="erf") - quad_erf("I3", C)) < 1e-10
    C = sub(base4, (3, 1, 2))
    assert abs(I3(C, g="erf") - quad_erf("I3-reweighted", C)) < 1e-10


def test_erf_I4_matches_quadrature():
    _, base3, base4 = _quad_covs()
    for idx in [(0, 1, 2, 3), (0, 0, 1, 1), (0, 1, 0, 1), (0, 0, 0, 0), (3, 2, 1, 1),
                (0, 1, 2, 0), (2, 3, 0, 1)]:
        C = sub(base4, idx)
        ref = quad_erf("I4", C)
        assert abs(I4(C, g="erf") - ref) < 1e-10, (idx, I4(C, g="erf"), ref)
    C = sub(base3, (0, 1, 2, 2))
    assert abs(I4(C, g="erf") - quad_erf("I4", C)) < 1e-10


# ---------------------------------------------------------------------------------------------
# 3. I2_matrix and the closed-form generalisation error
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("g", ACTIVATIONS)
def test_I2_matrix_equals_elementwise_I2(g):
    base = _random_cov(4, 31, 1.0, 0.05)
    fmap = [0, 1, 2, 3, 1]  # field 4 repeats field 1: coinciding fields on and off the diagonal
    C = sub(base, fmap)
    n = C.shape[0]
    M = I2_matrix(C, g=g)
    assert M.shape == (n, n)
    expected = np.array([[I2(sub(C, (a, b)), g=g) for b in range(n)] for a in range(n)])
    np.testing.assert_allclose(M, expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(M, M.T, rtol=1e-12, atol=1e-15)


def _order_parameters(K: int, M: int, seed: int):
    rng = np.random.default_rng(seed)
    C = _random_cov(K + M, seed, 1.0, 0.05)
    Q, R, T = C[:K, :K], C[:K, K:], C[K:, K:]
    v = rng.normal(size=K)
    A = rng.normal(size=M)
    return C, Q, R, T, v, A


def eg_explicit(Q, R, T, v, A, g):
    """ε_g of docs/model.md §4.3 as explicit double sums."""
    K, M = len(v), len(A)
    if g == "linear":
        return 0.5 * (v @ Q @ v + A @ T @ A - 2.0 * v @ R @ A)
    if g == "erf":
        s = 0.0
        for k in range(K):
            for l in range(K):
                s += v[k] * v[l] * math.asin(Q[k, l] / math.sqrt((1 + Q[k, k]) * (1 + Q[l, l])))
        for n in range(M):
            for m in range(M):
                s += A[n] * A[m] * math.asin(T[n, m] / math.sqrt((1 + T[n, n]) * (1 + T[m, m])))
        for k in range(K):
            for n in range(M):
                s -= 2 * v[k] * A[n] * math.asin(R[k, n] / math.sqrt((1 + Q[k, k]) * (1 + T[n, n])))
        return s / math.pi

    def i2(caa, cbb, cab):
        return I2(np.array([[caa, cab], [cab, cbb]]), g=g)

    s = sum(v[k] * v[l] * i2(Q[k, k], Q[l, l], Q[k, l]) for k in range(K) for l in range(K))
    s += sum(A[n] * A[m] * i2(T[n, n], T[m, m], T[n, m]) for n in range(M) for m in range(M))
    s -= 2 * sum(v[k] * A[n] * i2(Q[k, k], T[n, n], R[k, n]) for k in range(K) for n in range(M))
    return 0.5 * s


def i2_relu_arctan(C: np.ndarray) -> float:
    """Second ReLU I2 expression of docs/model.md §5.4 (arctan form), for non-degenerate C."""
    det = C[0, 0] * C[1, 1] - C[0, 1] ** 2
    return (math.sqrt(det) + C[0, 1] * (math.pi / 2 + math.atan(C[0, 1] / math.sqrt(det)))) / (2 * math.pi)


@pytest.mark.parametrize("g", ACTIVATIONS)
def test_generalisation_error_equals_double_sums(g):
    for K, M, seed in ((3, 2, 41), (1, 1, 42), (2, 4, 43)):
        _, Q, R, T, v, A = _order_parameters(K, M, seed)
        got = generalisation_error(Q, R, T, v, A, g=g)
        ref = eg_explicit(Q, R, T, v, A, g)
        assert got == pytest.approx(ref, rel=1e-12, abs=1e-14), (K, M, got, ref)
        if g == "relu":
            # the same sums with the independent arctan form of I2_relu (C/2 on the diagonal)
            C = np.block([[Q, R], [R.T, T]])
            w = np.concatenate([v, -A])
            I2_ref = np.array([[i2_relu_arctan(sub(C, (a, b))) if a != b else C[a, a] / 2
                                for b in range(K + M)] for a in range(K + M)])
            assert got == pytest.approx(0.5 * w @ I2_ref @ w, rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("g", ACTIVATIONS)
def test_generalisation_error_matches_monte_carlo(g):
    K, M = 3, 2
    C, Q, R, T, v, A = _order_parameters(K, M, 51)
    rng = np.random.default_rng(52)
    z = np.linalg.cholesky(C) @ rng.standard_normal((K + M, N_MC))
    Gz = g_act(z, g)
    diff = v @ Gz[:K] - A @ Gz[K:]
    mc, se = _mc_mean(0.5 * diff * diff)
    cf = generalisation_error(Q, R, T, v, A, g=g)
    assert abs(cf - mc) <= N_SE * se, (g, cf, mc, se)


# ---------------------------------------------------------------------------------------------
# 4. ReLU special cases
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("c", [1e-6, 0.3, 1.0, 7.5])
def test_relu_I2_coinciding_fields_is_half_covariance(c):
    # identical fields: E[relu(z)²] = C/2
    assert I2(np.array([[c, c], [c, c]]), g="relu") == pytest.approx(c / 2, rel=1e-12)
    # proportional fields z1 = α z0 (α > 0): correlation 1 up to rounding, I2 = C₀₁/2
    for alpha in (0.1, 3.0, 1.0 / 3.0):
        C = np.array([[c, alpha * c], [alpha * c, alpha * alpha * c]])
        assert I2(C, g="relu") == pytest.approx(C[0, 1] / 2, rel=1e-12)
    # opposite fields never both positive
    assert abs(I2(np.array([[c, -c], [-c, c]]), g="relu")) <= 1e-15 * max(c, 1.0)


def test_relu_I2_matches_arctan_form():
    for seed in range(5):
        C = _random_cov(2, 60 + seed, 1.0, 0.05)
        assert I2(C, g="relu") == pytest.approx(i2_relu_arctan(C), rel=1e-12, abs=1e-15)


def test_relu_derivative_integrals_vanish_for_a_zero_variance_field():
    """Θ(0) = 0: a field that is identically 0 contributes nothing to J2 or I3."""
    assert J2(np.array([[0.0, 0.0], [0.0, 1.0]]), g="relu") == 0.0
    assert I3(np.array([[0.0, 0, 0], [0, 1, 0.5], [0, 0.5, 1]]), g="relu") == 0.0
    assert I3(np.array([[1.0, 0.5, 0], [0.5, 1, 0], [0, 0, 0]]), g="relu") == 0.0


# ---------------------------------------------------------------------------------------------
# 5. ReLU I4 (§5.4): the Stein reduction and the Plackett quadrature against arbitrary precision
# ---------------------------------------------------------------------------------------------

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
