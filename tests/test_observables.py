"""Observables: Gaussian equivalence at finite size, the spectral initial state, divergence.

docs/model.md §4, §7.9: for a Gaussian latent the Gaussian-equivalent Q, R, T equal the field
covariances that the test set measures, and the closed-form ε_g the Monte Carlo one, within their
sampling error; the spectral state's identities hold to 1e-12.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastsgd
from analysis.activations import ACTIVATION_CODES, folding_coefficients
from fastsgd.observables import network_output, student_fields
from fastsgd.problem import build_problem
from fastsgd.runner import take_record
from fastsgd.streams import SeedStreams, stream

Z_MAX = 5.0


def covariance_z(a, b, measured, predicted):
    """(measured − predicted)/s.e., s.e. of the centred covariance of a and b."""
    products = (a - a.mean()) * (b - b.mean())
    return (measured - predicted) / (products.std() / math.sqrt(a.shape[0]))


@pytest.mark.parametrize("f, g", [("sign", "erf"), ("erf", "erf"), ("tanh", "relu"),
                                  ("linear", "linear")])
def test_gaussian_equivalence_within_sampling_error(f, g, tmp_path):
    cfg = fastsgd.SimConfig(f=f, g=g, seed=3, test_size=20_000, steps=5000, records=2)
    problem = build_problem(cfg, SeedStreams.for_seed(cfg.seed, cfg.seed, 0))
    run = fastsgd.simulate(cfg, out=tmp_path / "run.h5", threads=1)
    trained = (run.final_w[0], run.final_v[0])
    for w, v in [(problem.w, problem.v), trained]:
        record = take_record(cfg, problem, w, v)
        lam = student_fields(problem.test_inputs, w)
        nu = problem.test_nu
        for k in range(cfg.K):
            for l in range(cfg.K):
                z = covariance_z(lam[:, k], lam[:, l], record["emp_Q"][k, l], record["Q"][k, l])
                assert abs(z) < Z_MAX, f"Q[{k},{l}] off by {z:.1f} s.e."
            for n in range(cfg.M):
                z = covariance_z(lam[:, k], nu[:, n], record["emp_R"][k, n], record["R"][k, n])
                assert abs(z) < Z_MAX, f"R[{k},{n}] off by {z:.1f} s.e."
        T = run.T[0]
        for n in range(cfg.M):
            for m in range(cfg.M):
                z = covariance_z(nu[:, n], nu[:, m], record["emp_T"][n, m], T[n, m])
                assert abs(z) < Z_MAX, f"T[{n},{m}] off by {z:.1f} s.e."
        yhat = network_output(lam, v, ACTIVATION_CODES[g], np.empty(lam.shape[0]))
        errors = 0.5 * (yhat - problem.test_y) ** 2
        z = (record["eg_mc"] - record["eg"]) / (errors.std() / math.sqrt(errors.shape[0]))
        assert abs(z) < Z_MAX, f"eg_mc − eg = {z:.1f} s.e."
    assert np.abs(trained[0] - problem.w).max() > 0.01  # the second check saw other weights


def test_eg_closed_form_matches_monte_carlo_at_default_sizes(tmp_path):
    """§7.9: Gaussian latent, default sizes: eg(0) and eg_mc(0) within 4 Monte Carlo s.e."""
    cfg = fastsgd.SimConfig(steps=10, records=2, seeds=2)
    run = fastsgd.simulate(cfg, out=tmp_path / "run.h5")
    for i in range(cfg.seeds):
        problem = build_problem(cfg, SeedStreams.for_seed(cfg.seed, cfg.seed, i))
        lam = student_fields(problem.test_inputs, problem.w)
        yhat = network_output(lam, problem.v, ACTIVATION_CODES[cfg.g], np.empty(lam.shape[0]))
        errors = 0.5 * (yhat - problem.test_y) ** 2
        se = errors.std() / math.sqrt(errors.shape[0])
        assert run.eg_mc[i, 0] == pytest.approx(errors.mean(), rel=1e-12)
        assert abs(run.eg[i, 0] - run.eg_mc[i, 0]) < 4 * se


@pytest.mark.parametrize("f", ["sign", "erf", "tanh"])
def test_spectral_initial_state_identities(f, tmp_path):
    """§7.9: (1/D)Σσ = Σ(0), b(1/D)Σr = R(0), T̃ = W̃ΩW̃ᵀ/D, Σρ = tr Ω, to 1e-12 relative."""
    cfg = fastsgd.SimConfig(N=120, D=60, K=3, M=2, f=f, steps=50, records=2, seeds=2,
                            test_size=50)
    run = fastsgd.simulate(cfg, out=tmp_path / "run.h5")
    _, b, _, _ = folding_coefficients(f)
    for i in range(cfg.seeds):
        state = run.initial_state(i)
        F = stream(cfg.seed, i, 0).standard_normal((cfg.N, cfg.D))
        teacher = stream(cfg.seed, i, 1).standard_normal((cfg.M, cfg.D))
        omega = F.T @ F / cfg.N
        np.testing.assert_allclose(state.sigma.mean(axis=2), run.Sigma[i, 0], rtol=1e-12,
                                   atol=1e-14)
        np.testing.assert_allclose(b * state.r.mean(axis=2), run.R[i, 0], rtol=1e-12,
                                   atol=1e-14)
        np.testing.assert_allclose(state.T_tilde, teacher @ omega @ teacher.T / cfg.D,
                                   rtol=1e-12)
        assert state.rhos.sum() == pytest.approx(np.trace(omega), rel=1e-12)
        assert np.all(np.diff(state.rhos) >= 0)
        np.testing.assert_allclose(state.W, run.W[i, 0], rtol=1e-12)
        np.testing.assert_array_equal(state.v, run.v[i, 0])
        np.testing.assert_array_equal(state.T, run.T[i])


def test_record_grid_and_time(tmp_path):
    cfg = fastsgd.SimConfig(N=50, D=20, steps=1_000, records=30, test_size=20)
    run = fastsgd.simulate(cfg, out=tmp_path / "run.h5")
    expected = np.unique(np.concatenate(
        [[0], np.rint(np.geomspace(1, 1_000, 29)).astype(np.int64)]))
    np.testing.assert_array_equal(run.step, expected)
    assert run.step.dtype == np.int64
    np.testing.assert_array_equal(run.t, run.step / cfg.N)
    assert run.n_records.tolist() == [len(expected)]


def test_defaults_give_175_records():
    from fastsgd.io import record_steps
    assert record_steps(1_000_000, 200).shape == (175,)


def test_divergence_stops_the_seed_and_keeps_earlier_records(tmp_path):
    cfg = fastsgd.SimConfig(N=64, D=32, g="linear", f="linear", lr=50.0, steps=20_000,
                            records=40, test_size=50)
    run = fastsgd.simulate(cfg, out=tmp_path / "run.h5")
    assert run.status == ["diverged"]
    step = int(run.diverged_step[0])
    assert 0 <= step < cfg.steps
    n = int(run.n_records[0])
    assert run.step[n - 1] <= step < (run.step[n] if n < len(run.step) else np.inf)
    assert np.all(np.isfinite(run.eg_mc[0, :n]))
    assert np.all(np.isnan(run.eg_mc[0, n:])) and np.all(np.isnan(run.Q[0, n:]))


@pytest.mark.parametrize("steps, records", [(1000, 2), (7, 3), (1, 2), (10 ** 6, 200)])
def test_record_grid_always_holds_zero_and_the_last_step(steps, records):
    from fastsgd.io import record_steps
    grid = record_steps(steps, records)
    assert grid[0] == 0 and grid[-1] == steps and len(grid) <= records
    assert np.all(np.diff(grid) > 0)
