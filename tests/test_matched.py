"""The matched Gaussian latent (fastsgd/matched.py; docs/model.md §10.2).

1. Every case of §10.2 (none, population, whiten; sample exact, by quadrature and by Monte
   Carlo) against Monte Carlo moments of the real standardized latent drawn by the simulator's
   sampler: every entry of the mean and the covariance within 5 estimated s.e. (the Monte Carlo
   law's own error added where it has one).
2. Exact identities: tr S_c + ‖m_c‖² = D and S_c·1 = 0 for `sample`; whiten is c = z; the
   structured factor is the symmetric square root (L = Lᵀ, L² = S_c).
3. The quadrature of a_J, b_J against an independent two-dimensional quadrature and the closed
   form at ‖ν‖ = 0.
4. Runs: a matched run shares F, the teacher, w(0), v(0) with its mixture run; the whiten matched
   run is bitwise the Gaussian latent's run; a stop during Monte Carlo moments is honoured.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

import fastsgd
from fastsgd.config import gaussian_latent
from fastsgd.matched import (Stopped, matched_law, matched_method,
                             sample_standardized_moments)
from fastsgd.sampling import draw_mixture, latent_law, mixture_moments, sample_latent
from fastsgd.streams import LABELS, LATENT, MIXTURE, TRAIN, stream
from test_sampling import assert_within_se, moments

D = 16
SEED = 4242
N_SAMPLES = 400_000
LAW_SAMPLES = 1_000_000

CASES = [  # (standardize, means, m, alpha, B, expected method)
    ("none", "vector", 3, 1.5, D, "exact"),
    ("none", "scalar", 2, 2.0, 4, "exact"),
    ("population", "vector", 5, 2.0, 4, "exact"),
    ("population", "scalar", 3, 1.0, D, "exact"),
    ("whiten", "vector", 3, 2.0, D, "exact"),
    ("sample", "scalar", 3, 2.0, D, "exact"),
    ("sample", "scalar", 2, 3.0, 1, "exact"),
    ("sample", "vector", 1, 2.0, D, "quadrature"),
    ("sample", "vector", 2, 2.0, D, "quadrature"),
    ("sample", "vector", 8, 3.0, D, "quadrature"),
    ("sample", "vector", 3, 1.0, 1, "monte_carlo"),
    ("sample", "scalar", 3, 2.0, 4, "monte_carlo"),
]


def case_law(standardize, means, m, alpha, B, samples=LAW_SAMPLES):
    mixture = mixture_moments(*draw_mixture(stream(SEED, 0, MIXTURE), m, alpha, D, "uniform",
                                            means), B)
    method = matched_method(m, alpha, means, B, D, standardize)
    law = matched_law(mixture, standardize, method, rng=stream(SEED, 0, 6, 0), samples=samples)
    return mixture, method, law


def real_latents(mixture, standardize, n=N_SAMPLES):
    out = np.empty((n, D))
    sample_latent(stream(SEED + 1, 0, TRAIN, LATENT), stream(SEED + 1, 0, TRAIN, LABELS), out,
                  latent_law(mixture, standardize))
    return out


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c[:5])))
def test_matched_law_has_the_moments_of_the_standardized_latent(case):
    *spec, expected = case
    mixture, method, law = case_law(*spec)
    assert method == expected == law.method
    mean, se_mean, cov, se_cov = moments(real_latents(mixture, spec[0]))
    # a Monte Carlo law carries its own error, of the same kind, from LAW_SAMPLES samples
    inflate = math.sqrt(1 + N_SAMPLES / LAW_SAMPLES) if method == "monte_carlo" else 1.0
    exact_mean = np.abs(se_mean) < 1e-14   # e.g. sample: coordinates of an exchangeable law
    assert_within_se(mean, law.mean, np.where(exact_mean, 1e-300, se_mean) * inflate, "mean")
    S = law.covariance()
    assert_within_se(cov, S, np.maximum(se_cov, 1e-15) * inflate, "covariance")


@pytest.mark.parametrize("case", [c for c in CASES if c[0] == "sample"],
                         ids=lambda c: "-".join(map(str, c[:5])))
def test_sample_laws_are_singular_along_ones_and_keep_the_norm(case):
    *spec, _ = case
    _, _, law = case_law(*spec, samples=20_000)
    S = law.covariance()
    assert abs(np.trace(S) + law.mean @ law.mean - D) < 1e-12 * D
    np.testing.assert_allclose(S @ np.ones(D), 0.0, atol=1e-12)
    assert abs(law.mean.sum()) < 1e-12


@pytest.mark.parametrize("case", CASES[:10], ids=lambda c: "-".join(map(str, c[:5])))
def test_the_factor_is_the_symmetric_square_root(case):
    """L (for population D_s·L, since §10.2 gives L = D_s⁻¹Σ_c^{1/2}) is symmetric and positive
    semi-definite, so it is the square root of L Lᵀ, never a Cholesky factor; for none and
    population its square is the mixture's own Σ_c."""
    *spec, _ = case
    mixture, _, law = case_law(*spec)
    L = law.factor()
    if spec[0] == "population":
        L = L * mixture.std[:, None]
    if spec[0] in ("none", "population"):
        np.testing.assert_allclose(L @ L, mixture.covariance(), atol=1e-12)
    np.testing.assert_allclose(L, L.T, atol=1e-13)
    assert np.linalg.eigvalsh((L + L.T) / 2).min() > -1e-12


def test_whiten_and_gaussian_laws_are_the_standard_normal():
    _, _, law = case_law("whiten", "vector", 4, 2.0, 4)
    assert law.is_standard
    _, _, gaussian = case_law("none", "vector", 1, 0.0, D)
    assert gaussian.is_standard
    _, _, population = case_law("population", "vector", 4, 2.0, 1)
    assert not population.is_standard   # N(0, I) up to rounding only: the sweep maps it
    np.testing.assert_allclose(population.covariance(), np.eye(D), atol=1e-14)


def _two_dimensional(norm, D):
    """a and b by scipy's dblquad over (x∥, χ²_{D−2}): an independent check of the reduction."""
    from scipy import integrate, stats

    chi2 = stats.chi2(D - 2)
    lo, hi = chi2.ppf(1e-15), chi2.ppf(1 - 1e-15)

    def expect(fn):
        return integrate.dblquad(
            lambda y, x: fn(x, y) * chi2.pdf(y) * stats.norm.pdf(x - norm),
            norm - 12, norm + 12, lo, hi, epsabs=1e-13, epsrel=1e-11)[0]

    return expect(lambda x, y: x / math.sqrt(x * x + y)), expect(lambda x, y: x * x / (x * x + y))


@pytest.mark.parametrize("norm, D", [(0.7, 20), (3.0, 20), (5.0, 100)])
def test_quadrature_of_a_and_b_against_two_dimensional_quadrature(norm, D):
    a, b = sample_standardized_moments(norm, D)
    a2, b2 = _two_dimensional(norm, D)
    assert a == pytest.approx(a2, rel=1e-8, abs=1e-12)
    assert b == pytest.approx(b2, rel=1e-8, abs=1e-12)


def test_quadrature_at_zero_mean_gives_the_isotropic_values():
    a, b = sample_standardized_moments(0.0, 50)
    assert a == 0.0
    assert b == pytest.approx(1 / 49, rel=1e-12)


SMALL = dict(N=48, D=16, K=2, M=2, steps=600, records=5, test_size=200, seeds=2, seed=3)


def test_a_matched_run_shares_features_teacher_and_student_with_its_mixture_run(tmp_path):
    cell = fastsgd.SimConfig(**SMALL, m=3, alpha=2.0, standardize="population")
    twin = cell.replace(latent="matched_gaussian")
    for s in cell.seed_indices:
        a, b = fastsgd.initial_state(cell, s), fastsgd.initial_state(twin, s)
        for name in ("rhos", "r", "sigma", "W", "T", "T_tilde", "v"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    run = fastsgd.simulate(twin, out=tmp_path / "twin.h5")
    np.testing.assert_array_equal(run.mixture_means,
                                  fastsgd.simulate(cell, out=tmp_path / "cell.h5").mixture_means)


def test_the_whiten_matched_run_is_bitwise_the_gaussian_run(tmp_path):
    cell = fastsgd.SimConfig(**SMALL, m=3, alpha=2.0, standardize="whiten",
                             latent="matched_gaussian")
    a = fastsgd.simulate(cell, out=tmp_path / "a.h5")
    b = fastsgd.simulate(gaussian_latent(cell), out=tmp_path / "b.h5")
    for name in ("Q", "R", "v", "eg", "eg_mc", "final_w", "final_v"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for name in ("Q", "R", "T", "lambda_kurtosis", "nu_kurtosis"):
        np.testing.assert_array_equal(a.empirical[name], b.empirical[name])


def test_a_stop_during_monte_carlo_moments_is_honoured():
    mixture = mixture_moments(*draw_mixture(stream(SEED, 0, MIXTURE), 3, 1.0, D, "uniform"), 1)
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped):
        matched_law(mixture, "sample", "monte_carlo", rng=stream(SEED, 0, 6, 0),
                    samples=10 ** 9, stop=stop)


@pytest.mark.parametrize("norm, D", [(1000.0, 20), (3000.0, 8), (300.0, 500)])
def test_quadrature_holds_where_the_mean_dominates(norm, D):
    """Large ‖ν‖: x∥ = n + N(0, 1) and ‖x‖² = x∥² + χ²_k (k = D − 2), so a = 1 − k/(2n²) and
    b = 1 − k/n² up to O(k²/n⁴); a quadrature that missed the integrands' peak would return 0."""
    a, b = sample_standardized_moments(norm, D)
    k, n2 = D - 2, norm * norm
    tolerance = 10 * (k * k + 3 * k + 1) / n2 ** 2 + 1e-8
    assert a == pytest.approx(1 - k / (2 * n2), abs=tolerance)
    assert b == pytest.approx(1 - k / n2, abs=tolerance)


def test_the_simulator_samples_the_matched_law_not_its_transpose():
    """U = z·generator: the operand must be Lᵀ·[F/√D | W̃ᵀ/√D], so that the latents' covariance is
    L Lᵀ = S_c even where L is not symmetric (population with vector means)."""
    from fastsgd.problem import build_problem
    from fastsgd.streams import SeedStreams
    cfg = fastsgd.SimConfig(N=40, D=D, M=2, m=3, alpha=2.0, block_size=4,
                            standardize="population", latent="matched_gaussian", test_size=10)
    problem = build_problem(cfg, SeedStreams.for_seed(cfg.seed, cfg.sample_entropy, 0))
    base = np.concatenate([problem.features.T, problem.teacher.T], axis=1) / math.sqrt(D)
    covariance = problem.generator.T @ problem.generator          # Cov(U) for z ~ N(0, I)
    np.testing.assert_allclose(covariance, base.T @ problem.matched.covariance() @ base,
                               rtol=1e-12, atol=1e-12)
    assert not np.allclose(problem.matched.factor(), problem.matched.factor().T)
