"""A seed's input moments (fastsgd/input_law.py; docs/model.md §10.5): the exact per-label forms
against Monte Carlo of the simulator's own inputs (5 s.e.), the Monte Carlo path and its halves,
and the choice between them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastsgd.config import SimConfig, input_mean_method
from fastsgd.input_law import input_moments, monte_carlo_moments, _latent_sampler
from fastsgd.problem import _draw, _operand, latents_to_fields, make_inputs, seed_latent_law
from fastsgd.sampling import sample_latent
from fastsgd.streams import SeedStreams, stream

SAMPLES = 400_000
EXACT_CASES = [
    dict(f="sign", m=3, alpha=1.5, standardize="population"),
    dict(f="erf", m=3, alpha=1.5, standardize="whiten"),
    dict(f="linear", m=2, alpha=1.0, standardize="none"),
    dict(f="sign", m=3, alpha=1.5, standardize="population", latent="matched_gaussian"),
    dict(f="erf", m=3, alpha=1.5, standardize="sample", latent="matched_gaussian"),
    dict(f="sign", m=4, alpha=1.0, standardize="whiten", teacher="aligned"),
    dict(f="sign"),
]


def seed_parts(case):
    cfg = SimConfig(N=8, D=4, K=2, M=2, **case)
    streams = SeedStreams.for_seed(cfg.seed, cfg.sample_entropy, 0)
    draws = _draw(cfg, streams)
    generator, offset, matched = _operand(cfg, draws, streams, None)
    return cfg, streams, draws, generator, offset, matched


def simulator_inputs(cfg, streams, draws, generator, offset, matched, n):
    """n inputs and latents exactly as the simulator makes them (matched: c = m_c + Lz)."""
    latent = np.empty((n, cfg.D))
    sample_latent(streams.train_latent, streams.train_labels, latent,
                  seed_latent_law(cfg, draws.mixture))
    U = latents_to_fields(latent, generator, offset)
    c = latent if matched is None else matched.mean + matched.apply(latent.T).T
    return make_inputs(cfg, U, None), c


def assert_within_five_se(samples, exact, what):
    mean = samples.mean(axis=0)
    se = samples.std(axis=0) / math.sqrt(samples.shape[0])
    z = np.abs(mean - exact) / (se + 1e-15)
    assert np.all(z <= 5), f"{what}: worst {z.max():.1f} s.e."


@pytest.mark.parametrize("case", EXACT_CASES, ids=lambda c: "-".join(map(str, c.values())))
def test_exact_moments_match_the_simulators_inputs(case):
    cfg, streams, draws, generator, offset, matched = seed_parts(case)
    assert input_mean_method(cfg) == "exact"
    moments = input_moments(draws.mixture, cfg.standardize, matched, draws.features, cfg.f,
                            None, 0)
    assert moments.method == "exact"
    x, c = simulator_inputs(cfg, streams, draws, generator, offset, matched, SAMPLES)
    assert_within_five_se(x, moments.mean, "E x")
    assert_within_five_se(c, moments.latent_mean, "E c")
    xc, cc = x - moments.mean, c - moments.latent_mean
    assert_within_five_se((xc[:, :, None] * xc[:, None, :]).reshape(SAMPLES, -1),
                          moments.omega.ravel(), "Omega")
    assert_within_five_se((xc[:, :, None] * cc[:, None, :]).reshape(SAMPLES, -1),
                          moments.phi.ravel(), "Phi")
    assert_within_five_se((cc[:, :, None] * cc[:, None, :]).reshape(SAMPLES, -1),
                          moments.latent_covariance.ravel(), "S_c")
    mean_only = input_moments(draws.mixture, cfg.standardize, matched, draws.features, cfg.f,
                              None, 0, mean_only=True)
    np.testing.assert_allclose(mean_only, moments.mean, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("case", [dict(f="sign", m=3, alpha=1.5, standardize="population",
                                       block_size=2),
                                  dict(f="tanh", m=3, alpha=1.5, standardize="whiten"),
                                  dict(f="sign", m=3, alpha=1.5, standardize="sample",
                                       means="scalar", block_size=2)],
                         ids=["blocks", "tanh", "sample"])
def test_monte_carlo_moments_and_their_halves(case):
    """Where no exact form applies, Monte Carlo from (s,6,1): reproducible, the halves sum to
    the whole, and within 5 s.e. of an independent Monte Carlo of the simulator's inputs."""
    cfg, streams, draws, generator, offset, matched = seed_parts(case)
    assert input_mean_method(cfg) == "monte_carlo"
    args = (draws.mixture, cfg.standardize, matched, draws.features, cfg.f)
    moments = input_moments(*args, stream(0, 0, 6, 1), SAMPLES)
    again = input_moments(*args, stream(0, 0, 6, 1), SAMPLES)
    np.testing.assert_array_equal(moments.omega, again.omega)
    first, second = moments.halves
    assert first.samples + second.samples == SAMPLES == moments.samples
    np.testing.assert_allclose((first.mean + second.mean) / 2, moments.mean, atol=1e-14)
    mean_only = input_moments(*args, stream(0, 0, 6, 1), SAMPLES, mean_only=True)
    np.testing.assert_allclose(mean_only, moments.mean, rtol=1e-12, atol=1e-15)
    x, c = simulator_inputs(cfg, streams, draws, generator, offset, matched, SAMPLES)
    # the difference of two independent means has twice the variance of one
    z = np.abs(x.mean(axis=0) - moments.mean) / (math.sqrt(2) * x.std(axis=0) / math.sqrt(SAMPLES))
    assert np.all(z <= 5)


def test_monte_carlo_sampler_of_a_matched_law():
    cfg, streams, draws, generator, offset, matched = seed_parts(
        dict(f="sign", m=3, alpha=1.5, standardize="population", latent="matched_gaussian"))
    exact = input_moments(draws.mixture, cfg.standardize, matched, draws.features, cfg.f, None, 0)
    mc = monte_carlo_moments(_latent_sampler(draws.mixture, cfg.standardize, matched),
                             draws.features, cfg.f, stream(1, 2), SAMPLES)
    half_gap = np.abs(mc.halves[0].omega - mc.halves[1].omega).max()
    assert np.abs(mc.omega - exact.omega).max() < 5 * half_gap
    assert np.abs(mc.latent_covariance - exact.latent_covariance).max() < 0.02


def test_the_halves_estimate_the_monte_carlo_error_of_the_theory():
    """Where both exist, the Monte Carlo moments' ODE differs from the exact moments' ODE by no
    more than a few times the halves' estimate max_t |ε_g(half 1) − ε_g(half 2)|/2, over seeds
    (the estimate is what `fastsgd ode --theory moments` reports, docs/model.md §10.5)."""
    from analysis.ode import GaussianEquivalentState, integrate_gaussian_equivalent
    ratios = []
    for seed in range(4):
        cfg, streams, draws, generator, offset, matched = seed_parts(
            dict(f="sign", m=3, alpha=1.5, standardize="population", seed=seed))
        exact = input_moments(draws.mixture, cfg.standardize, matched, draws.features, cfg.f,
                              None, 0)
        mc = monte_carlo_moments(_latent_sampler(draws.mixture, cfg.standardize, matched),
                                 draws.features, cfg.f, stream(seed, 6, 1), 20_000)

        def eg(moments):
            state = GaussianEquivalentState.from_moments(
                moments.omega, moments.phi, draws.w, draws.teacher, moments.latent_covariance,
                draws.v, draws.A)
            return integrate_gaussian_equivalent(state, lr=0.2, train_second_layer=True,
                                                 t_eval=np.linspace(0, 20, 21)).eg

        estimate = np.abs(eg(mc.halves[0]) - eg(mc.halves[1])).max() / 2
        actual = np.abs(eg(mc) - eg(exact)).max()
        assert estimate > 0
        ratios.append(actual / estimate)
    assert 0.15 < np.median(ratios) < 3 and max(ratios) < 8, ratios   # measured 0.07–0.97
