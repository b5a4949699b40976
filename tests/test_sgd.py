"""The SGD kernel (fastsgd/sgd.py) against the NumPy reference (tests/naive.py): docs/model.md
§3.1, §3.4, check §7.1.

Fed identical streams, the kernel and the reference agree in float64 after every one of the first
steps (w, v, λ, ŷ) and at every record (every recorded observable), within
1e-12·max(1, |value|), for a pairwise covering set of (f, g, standardize, layers, m, B) plus
output noise, Dirichlet weights and the equivalent Gaussian input model. The kernel's own
divergence check (§3.4: ŷ before the update, |ŷ| > 10⁸ or not finite, that row not applied) and
its argument builders are tested directly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import naive
from analysis.activations import ACTIVATION_CODES, FOLD_CODES, folding_coefficients
from cases import case_id, pairwise_cases
from synthetic_data import SYNTHETIC, synthetic_file
from fastsgd import SimConfig, simulate
from fastsgd.problem import build_problem, latents_to_fields
from fastsgd.runner import GEN_BLOCK
from fastsgd.sampling import draw_latents, fill_standard_normal
from fastsgd.sgd import (DIVERGENCE_BOUND, INPUT_MODEL_CODES, INPUT_MODELS, sgd_buffers,
                         sgd_parameters, sgd_steps)
from fastsgd.streams import SeedStreams

SMALL = dict(N=64, D=32, K=3, M=2, lr=0.2, seed=11, test_size=300)
EXTRA_CASES = [
    dict(f="sign", g="erf", input_model="equivalent_gaussian"),
    dict(f="erf", g="relu", m=3, weights="dirichlet", sigma=0.5, block_size=4),
    dict(f="tanh", g="linear", m=3, standardize="whiten", input_model="equivalent_gaussian",
         sigma=0.2, train_second_layer=False),
    # the matched laws the covering set does not reach: sample by quadrature (vector means,
    # B = D) and by Monte Carlo (vector means, B = 1)
    dict(f="erf", g="erf", m=3, standardize="sample", latent="matched_gaussian"),
    dict(f="sign", g="erf", m=3, standardize="sample", latent="matched_gaussian",
         block_size=1, moment_samples=20_000),
    dict(f="sign", g="erf", m=3, standardize="population", latent="matched_gaussian",
         means="scalar", teacher="aligned", precision="f64"),
    # population with vector means: L = D_s⁻¹Σ_c^{1/2} is not symmetric
    dict(f="linear", g="erf", m=3, standardize="population", latent="matched_gaussian",
         block_size=4),
    dict(f="erf", g="linear", m=3, standardize="population", latent="matched_gaussian"),
    # centred inputs (§10.5): E x exact per label, by Monte Carlo (B < D; relu), matched
    dict(f="sign", g="erf", m=3, standardize="population", center_inputs=True),
    dict(f="erf", g="erf", m=3, standardize="whiten", block_size=4, center_inputs=True,
         moment_samples=20_000),
    dict(f="relu", g="erf", center_inputs=True, moment_samples=20_000),
    dict(f="sign", g="relu", m=3, standardize="none", latent="matched_gaussian",
         center_inputs=True, train_second_layer=False),
    # data latents (§11): rows of the synthetic data set under each standardization, its
    # matched twin, centred inputs (E x a sum over the rows)
    dict(f="sign", g="erf", latent="data", latent_data=SYNTHETIC),
    dict(f="erf", g="relu", latent="data", latent_data=SYNTHETIC, standardize="sample"),
    dict(f="tanh", g="erf", latent="data", latent_data=SYNTHETIC, standardize="population",
         center_inputs=True, train_second_layer=False),
    dict(f="sign", g="linear", latent="data", latent_data=SYNTHETIC, standardize="whiten"),
    dict(f="erf", g="erf", latent="matched_gaussian", latent_data=SYNTHETIC,
         standardize="population"),
]


def make_config(case: dict, **extra) -> SimConfig:
    values = dict(SMALL)
    values.update(case)
    if values.get("m", 1) > 1:
        values.setdefault("alpha", 1.5)
    values.update(extra)
    if values.get("latent_data") == SYNTHETIC:
        values["latent_data"] = synthetic_file()
    return SimConfig(**values)


ALL_CASES = [pytest.param(c, id=case_id(c)) for c in pairwise_cases()] + [
    pytest.param(c, id="-".join(f"{k}={v}" for k, v in c.items())) for c in EXTRA_CASES]


def assert_close(actual, expected, what):
    actual = np.asarray(actual, dtype=float)
    expected = np.asarray(expected, dtype=float)
    assert actual.shape == expected.shape, what
    both_nan = np.isnan(actual) & np.isnan(expected)
    err = np.where(both_nan, 0.0, np.abs(actual - expected))
    bound = 1e-12 * np.maximum(1.0, np.where(both_nan, 1.0, np.abs(expected)))
    ratio = np.where(np.isnan(err), np.inf, err / bound)
    worst = np.argmax(ratio) if err.size else 0
    assert np.all(ratio <= 1.0), (
        f"{what}: |diff| {err.flat[worst]:.3e} at {np.unravel_index(worst, err.shape)} "
        f"exceeds {bound.flat[worst]:.3e}")


@pytest.mark.parametrize("case", ALL_CASES)
def test_every_step_matches_reference(case):
    """w, v, λ, ŷ after each of the first 1000 steps, the kernel fed block by block."""
    steps = 1000
    cfg = make_config(case, steps=steps, records=2)
    streams = SeedStreams.for_seed(cfg.seed, cfg.sample_entropy, 0)
    problem = build_problem(cfg, streams)
    ref = naive.simulate(cfg, trace=True, input_mean=problem.input_mean)
    w, v = problem.w.copy(), problem.v.copy()
    latent = np.empty((GEN_BLOCK, cfg.D))
    equivalent = cfg.input_model == "equivalent_gaussian"
    params = sgd_parameters(problem.A, f=cfg.f, g=cfg.g, lr=cfg.lr,
                            train_second_layer=cfg.train_second_layer,
                            input_model=cfg.input_model, input_mean=problem.input_mean)
    buffers = sgd_buffers(GEN_BLOCK, cfg.N, cfg.K, equivalent)
    for block_start in range(0, steps, GEN_BLOCK):
        draw_latents(problem.law, streams.train_latent, streams.train_labels,
                     streams.train_rows, latent)
        U = latents_to_fields(latent, problem.generator, problem.offset)
        if equivalent:
            fill_standard_normal(streams.train_xi, buffers.xi)
        if cfg.sigma > 0:
            fill_standard_normal(streams.train_noise, buffers.label_noise)
            buffers.label_noise[:] *= cfg.sigma
        for row in range(min(GEN_BLOCK, steps - block_start)):
            mu = block_start + row
            bad = sgd_steps(U, row, row + 1, w, v, params, buffers)
            assert bad == -1
            assert_close(buffers.yhat[row], ref["trace_yhat"][mu], f"yhat at step {mu}")
            assert_close(buffers.lam, ref["trace_lam"][mu], f"lambda at step {mu}")
            assert_close(w, ref["trace_w"][mu], f"w after step {mu}")
            assert_close(v, ref["trace_v"][mu], f"v after step {mu}")


RECORDED = ["Q", "R", "W", "Sigma", "v", "eg", "eg_mc", "empirical/Q", "empirical/R",
            "empirical/T", "empirical/lambda_mean", "empirical/lambda_skewness",
            "empirical/lambda_kurtosis"]


@pytest.mark.parametrize("case", ALL_CASES)
def test_records_match_reference(case, tmp_path):
    """Every recorded observable of a 10⁴-step run, and the final weights."""
    cfg = make_config(case, steps=10_000, records=25)
    run = simulate(cfg, out=tmp_path / "run.h5", threads=1)
    ref = naive.simulate(cfg, input_mean=None if run.input_mean is None else run.input_mean[0])
    assert run.status == ["ok"]
    assert (run.input_mean is None) == (not cfg.center_inputs)
    np.testing.assert_array_equal(run.step, ref["step"])
    for name in RECORDED + (["mean_fields"] if cfg.center_inputs else []):
        actual = run.empirical[name.split("/")[1]] if "/" in name else getattr(run, name)
        assert_close(actual[0], ref[name], name)
    assert_close(run.final_w[0], ref["final/w"], "final w")
    assert_close(run.final_v[0], ref["final/v"], "final v")
    assert_close(run.T[0], ref["T"], "T")
    for name in ("nu_skewness", "nu_kurtosis"):
        assert_close(run.empirical[name][0], ref[f"empirical/{name}"], name)
    assert_close(run.mixture_means[0], ref["means"], "mixture means")
    assert_close(run.mixture_weights[0], ref["weights"], "mixture weights")


# ------------------------------------------------------------------ divergence and arguments
def one_unit(w0, lr=0.2):
    """K = 1, N = 1, M = 2, linear f and g, first layer only: λ = w·u, ŷ = λ, y = 0."""
    params = sgd_parameters(np.ones(2), f="linear", g="linear", train_second_layer=False, lr=lr,
                            input_model="hmm")
    return np.array([[float(w0)]]), np.ones(1), params


@pytest.mark.parametrize("u0, bad_row", [(1.0, 1), (1.0 + 2 ** -40, 0)])
def test_yhat_beyond_the_bound_stops_before_its_update(u0, bad_row):
    """docs/model.md §3.4: ŷ is checked at every step before the update; |ŷ| = 10⁸ is allowed,
    anything above stops at that row, whose update is not applied."""
    assert DIVERGENCE_BOUND == 1e8
    U = np.array([[u0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.5, 0.0, 0.0]])
    w, v, params = one_unit(1e8)
    buffers = sgd_buffers(3, 1, 1, False)
    bad = sgd_steps(U, 0, 3, w, v, params, buffers)
    assert bad == bad_row
    # w after the rows before the bad one: each step w ← w + η (0 − w u) u (N = 1, v = 1)
    expected = 1e8
    for row in range(bad_row):
        expected = expected + 0.2 * (0.0 - expected * U[row, 0]) * U[row, 0]
    assert w[0, 0] == expected
    assert buffers.yhat[bad_row] == pytest.approx(1e8 * u0 if bad_row == 0 else 8e7 * 2.0)
    np.testing.assert_array_equal(v, 1.0)


@pytest.mark.parametrize("f", ["sign", "relu", "erf"])
def test_a_nan_input_stops_at_its_row(f):
    """A NaN pre-activation input stays NaN through every fold (§2.3) and stops the block at its
    row, with the weights of the previous row."""
    rng = np.random.default_rng(1)
    N, K, M = 16, 2, 2
    U = rng.normal(size=(6, N + M))
    U[4, 3] = np.nan
    params = sgd_parameters(np.ones(M), f=f, g="erf", train_second_layer=True, lr=0.3,
                            input_model="hmm")
    w0, v0 = rng.normal(size=(K, N)), rng.normal(size=K)
    w_ok, v_ok = w0.copy(), v0.copy()
    assert sgd_steps(U, 0, 4, w_ok, v_ok, params, sgd_buffers(6, N, K, False)) == -1
    w, v = w0.copy(), v0.copy()
    buffers = sgd_buffers(6, N, K, False)
    assert sgd_steps(U, 0, 6, w, v, params, buffers) == 4
    assert np.isnan(buffers.yhat[4])
    np.testing.assert_array_equal(w, w_ok)
    np.testing.assert_array_equal(v, v_ok)
    # row_start is honoured: starting at the bad row stops at once, nothing applied
    assert sgd_steps(U, 4, 6, w, v, params, buffers) == 4
    np.testing.assert_array_equal(w, w_ok)


@pytest.mark.parametrize("f, input_model", [("sign", "hmm"), ("relu", "equivalent_gaussian"),
                                            ("tanh", "hmm")])
def test_argument_builders(f, input_model):
    A = np.array([1.0, 1.0, 1.0])
    params = sgd_parameters(A, f=f, g="relu", train_second_layer=0, lr=1, input_model=input_model)
    a, b, _, zeta = folding_coefficients(f)
    assert params.A is A
    assert (params.f_code, params.g_code) == (FOLD_CODES[f], ACTIVATION_CODES["relu"])
    assert params.train_second_layer is False and type(params.lr) is float
    assert params.input_model == INPUT_MODEL_CODES[input_model] == INPUT_MODELS.index(input_model)
    assert (params.fold_a, params.fold_b) == (a, b)
    assert params.fold_noise == pytest.approx(math.sqrt(zeta), rel=1e-15)
    equivalent = input_model == "equivalent_gaussian"
    buffers = sgd_buffers(7, 5, 3, equivalent)
    assert buffers.xi.shape == ((7, 5) if equivalent else (1, 1))
    assert buffers.label_noise.shape == (7,) and not buffers.label_noise.any()  # σ = 0: zeros
    assert (buffers.x.shape, buffers.lam.shape, buffers.coef.shape, buffers.yhat.shape) == (
        (5,), (3,), (3,), (7,))
