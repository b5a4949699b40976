"""The fast path against the NumPy reference (tests/naive.py), docs/model.md §7.1.

Fed identical streams, the kernel and the reference agree in float64 after every one of the first
steps (w, v, λ, ŷ) and at every record (every recorded observable), within
1e-12·max(1, |value|), for a pairwise covering set of (f, g, standardize, layers, m, B) plus
output noise, Dirichlet weights and the equivalent Gaussian input model.
"""

from __future__ import annotations

import numpy as np
import pytest

import naive
from cases import case_id, pairwise_cases
from fastsgd import SimConfig, simulate
from fastsgd.problem import build_problem, latent_kernel_args
from fastsgd.runner import GEN_BLOCK
from fastsgd.sampling import fill_standard_normal, sample_mixture_latent
from fastsgd.sgd import sgd_buffers, sgd_parameters, sgd_steps
from fastsgd.streams import SeedStreams

SMALL = dict(N=64, D=32, K=3, M=2, lr=0.2, seed=11, test_size=300)
EXTRA_CASES = [
    dict(f="sign", g="erf", input_model="equivalent_gaussian"),
    dict(f="erf", g="relu", m=3, weights="dirichlet", sigma=0.5, block_size=4),
    dict(f="tanh", g="linear", m=3, standardize="whiten", input_model="equivalent_gaussian",
         sigma=0.2, train_second_layer=False),
]


def make_config(case: dict, **extra) -> SimConfig:
    values = dict(SMALL)
    values.update(case)
    if values.get("m", 1) > 1:
        values.setdefault("alpha", 1.5)
    values.update(extra)
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
    ref = naive.simulate(cfg, trace=True)
    streams = SeedStreams.for_seed(cfg.seed, cfg.sample_entropy, 0)
    problem = build_problem(cfg, streams)
    w, v = problem.w.copy(), problem.v.copy()
    latent = np.empty((GEN_BLOCK, cfg.D))
    equivalent = cfg.input_model == "equivalent_gaussian"
    params = sgd_parameters(problem.A, f=cfg.f, g=cfg.g, lr=cfg.lr,
                            train_second_layer=cfg.train_second_layer,
                            input_model=cfg.input_model)
    buffers = sgd_buffers(GEN_BLOCK, cfg.N, cfg.K, equivalent)
    for block_start in range(0, steps, GEN_BLOCK):
        sample_mixture_latent(streams.train_latent, streams.train_labels, latent,
                              *latent_kernel_args(problem.mixture, cfg.standardize))
        U = latent @ problem.generator
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
            "empirical/T", "empirical/lambda_mean"]


@pytest.mark.parametrize("case", ALL_CASES)
def test_records_match_reference(case, tmp_path):
    """Every recorded observable of a 10⁴-step run, and the final weights."""
    cfg = make_config(case, steps=10_000, records=25)
    run = simulate(cfg, out=tmp_path / "run.h5", threads=1)
    ref = naive.simulate(cfg)
    assert run.status == ["ok"]
    np.testing.assert_array_equal(run.step, ref["step"])
    for name in RECORDED:
        actual = run.empirical[name.split("/")[1]] if "/" in name else getattr(run, name)
        assert_close(actual[0], ref[name], name)
    assert_close(run.final_w[0], ref["final/w"], "final w")
    assert_close(run.final_v[0], ref["final/v"], "final v")
    assert_close(run.T[0], ref["T"], "T")
    assert_close(run.mixture_means[0], ref["means"], "mixture means")
    assert_close(run.mixture_weights[0], ref["weights"], "mixture weights")
