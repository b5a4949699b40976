"""Observables (fastsgd/observables.py): Gaussian equivalence at finite size and the spectral
initial state (docs/model.md §4, check §7.9).

For a Gaussian latent the Gaussian-equivalent Q, R, T equal the field covariances that the test
set measures, and the closed-form ε_g the Monte Carlo one, within their sampling error; the
spectral state's identities hold to 1e-12. The building blocks (student fields from int8 or
float64 inputs, network output, centred covariances, order parameters) against plain NumPy.
The record schedule is in tests/test_io.py, a record's assembly and divergence in
tests/test_runner.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastsgd
from analysis.activations import ACTIVATION_CODES, folding_coefficients
from fastsgd.observables import (centred_covariance, network_output, order_parameters,
                                 student_fields, teacher_overlap)
from fastsgd.problem import build_problem
from fastsgd.runner import take_record
from fastsgd.streams import SeedStreams, stream
from naive import g_act

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


# ------------------------------------------------------------------ building blocks
def test_building_blocks_against_numpy():
    """§3.4, §4.1, §4.2: λ = X wᵀ/√N exactly from int8 sign inputs (compiled loop) and from
    float64 inputs (BLAS); ŷ = Σ_k v_k g(λ_k); the centred covariance with 1/P; W, Σ, Q, R, T."""
    rng = np.random.default_rng(8)
    P, N, D, K, M = 300, 40, 20, 3, 2
    X8 = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=(P, N))
    w = rng.normal(size=(K, N))
    lam8 = student_fields(X8, w)
    np.testing.assert_allclose(lam8, X8.astype(np.float64) @ w.T / math.sqrt(N), rtol=1e-13,
                               atol=1e-13)
    X = rng.normal(size=(P, N))
    np.testing.assert_allclose(student_fields(X, w), X @ w.T / math.sqrt(N), rtol=1e-13,
                               atol=1e-13)
    v = rng.normal(size=K)
    for g in ("erf", "relu", "linear"):
        out = network_output(lam8, v, ACTIVATION_CODES[g], np.empty(P))
        np.testing.assert_allclose(out, g_act(lam8, g) @ v, rtol=1e-13, atol=1e-13)
    a, b = X[:, :3], X[:, 3:5] + 1.0
    expected = np.array([[np.mean((a[:, i] - a[:, i].mean()) * (b[:, j] - b[:, j].mean()))
                          for j in range(2)] for i in range(3)])
    np.testing.assert_allclose(centred_covariance(a, b), expected, rtol=1e-12, atol=1e-14)
    F, teacher = rng.normal(size=(N, D)), rng.normal(size=(M, D))
    bb, zeta = 0.7, 0.2
    ops = order_parameters(w, F, teacher, bb, zeta)
    S = w @ F / math.sqrt(N)
    np.testing.assert_allclose(ops["W"], w @ w.T / N, rtol=1e-13)
    np.testing.assert_allclose(ops["Sigma"], S @ S.T / D, rtol=1e-13)
    np.testing.assert_allclose(ops["Q"], zeta * w @ w.T / N + bb ** 2 * S @ S.T / D, rtol=1e-13)
    np.testing.assert_allclose(ops["R"], bb / D * S @ teacher.T, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(teacher_overlap(teacher), teacher @ teacher.T / D, rtol=1e-13)
