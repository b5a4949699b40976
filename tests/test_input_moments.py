"""Input moments of folded Gaussians and their mixtures (analysis/input_moments.py; docs/model.md
§10.5): every closed form against Monte Carlo (5 s.e.) and the bivariate normal CDF against
scipy's quadrature."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import erf
from scipy.stats import multivariate_normal

from analysis.input_moments import (bivariate_normal_cdf, fold_mean, fold_second_moment,
                                    fold_slope, folded_mixture_moments)

FOLD_FUNCTIONS = {"sign": np.sign, "erf": lambda u: erf(u / math.sqrt(2.0)),
                  "linear": lambda u: u}
SAMPLES = 2_000_000


def test_bivariate_normal_cdf_against_scipy_including_zero_arguments():
    rng = np.random.default_rng(0)
    h, k = rng.standard_normal(30), rng.standard_normal(30)
    rho = rng.uniform(-0.97, 0.97, 30)
    h[0], k[1], h[2], k[2], h[3], k[4] = 0.0, 0.0, 0.0, 0.0, -0.0, -0.0
    ours = bivariate_normal_cdf(h, k, rho)
    theirs = [multivariate_normal([0, 0], [[1, r], [r, 1]]).cdf([a, b])
              for a, b, r in zip(h, k, rho)]
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)


def random_gaussian(rng, N):
    A = rng.standard_normal((N, N))
    C = A @ A.T / N + 0.3 * np.eye(N)
    return C, np.linalg.cholesky(C)


def within_five_se(samples_product, exact):
    mean = samples_product.mean(axis=0)
    se = samples_product.std(axis=0) / math.sqrt(samples_product.shape[0])
    return np.abs(mean - exact) <= 5 * se + 1e-12


@pytest.mark.parametrize("f", sorted(FOLD_FUNCTIONS))
@pytest.mark.parametrize("centred", [True, False])
def test_fold_moments_against_monte_carlo(f, centred):
    rng = np.random.default_rng(1 if centred else 2)
    N = 4
    C, L = random_gaussian(rng, N)
    m = np.zeros(N) if centred else 0.8 * rng.standard_normal(N)
    u = m + rng.standard_normal((SAMPLES, N)) @ L.T
    x = FOLD_FUNCTIONS[f](u)
    assert within_five_se(x, fold_mean(m, np.diag(C), f)).all()
    pairs = (x[:, :, None] * x[:, None, :]).reshape(SAMPLES, -1)
    assert within_five_se(pairs, fold_second_moment(m, C, f).ravel()).all()
    # Stein: E[f(u_i)(u_j - m_j)] = E f'(u_i) C_ij
    cross = (x[:, :, None] * (u - m)[:, None, :]).reshape(SAMPLES, -1)
    stein = (fold_slope(m, np.diag(C), f)[:, None] * C).ravel()
    assert within_five_se(cross, stein).all()


def test_mixture_moments_against_monte_carlo():
    """Three labels with their own means sharing one covariance: E x, Ω and Φ."""
    rng = np.random.default_rng(3)
    N, D = 4, 3
    G = rng.standard_normal((N, D)) / math.sqrt(D)         # u = G c
    latent_means = rng.uniform(-1, 1, (3, D))
    p = np.array([0.5, 0.3, 0.2])
    S = np.diag(rng.uniform(0.5, 1.5, D))                   # Cov(c | J)
    labels = rng.choice(3, SAMPLES, p=p)
    c = latent_means[labels] + rng.standard_normal((SAMPLES, D)) * np.sqrt(np.diag(S))
    u = c @ G.T
    for f in ("sign", "erf"):
        x = FOLD_FUNCTIONS[f](u)
        input_mean, omega, phi = folded_mixture_moments(latent_means @ G.T, G @ S @ G.T, G @ S,
                                                        latent_means, p, f)
        assert within_five_se(x, input_mean).all()
        xc, cc = x - input_mean, c - p @ latent_means
        assert within_five_se((xc[:, :, None] * xc[:, None, :]).reshape(SAMPLES, -1),
                              omega.ravel()).all()
        assert within_five_se((xc[:, :, None] * cc[:, None, :]).reshape(SAMPLES, -1),
                              phi.ravel()).all()


def test_the_monte_carlo_check_can_fail():
    """A wrong formula (erf's without the + 1 in the variance) is caught at these sizes."""
    rng = np.random.default_rng(1)
    C, L = random_gaussian(rng, 4)
    x = FOLD_FUNCTIONS["erf"](rng.standard_normal((SAMPLES, 4)) @ L.T)
    pairs = (x[:, :, None] * x[:, None, :]).reshape(SAMPLES, -1)
    assert not within_five_se(pairs, fold_second_moment(np.zeros(4), C, "sign").ravel()).all()


def test_folds_without_closed_forms_are_refused():
    for f in ("tanh", "relu"):
        with pytest.raises(ValueError, match="closed-form"):
            fold_second_moment(np.zeros(2), np.eye(2), f)


def test_bivariate_normal_cdf_with_tiny_and_extreme_arguments():
    """β is decided from the signs (h·k underflows to 0 below ~1e-162), and ρ up to 1 − 1e-15."""
    for h in (-1e-300, -1e-170, 1e-300):
        for rho in (0.5, -0.3):
            exact = 0.25 + math.asin(rho) / (2 * math.pi)   # the limit h = k → 0
            assert abs(float(bivariate_normal_cdf(h, h, rho)) - exact) < 1e-12
    values = fold_second_moment(np.array([-1e-170, -1e-170]), np.array([[1.0, 0.5], [0.5, 1.0]]),
                                "sign")
    assert abs(values[0, 1] - 2 / math.pi * math.asin(0.5)) < 1e-12
    near = bivariate_normal_cdf(0.3, 0.3, 1 - 1e-15)
    assert abs(float(near) - 0.6179114221889527) < 1e-7   # Φ(0.3) for ρ → 1
