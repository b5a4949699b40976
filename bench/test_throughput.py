"""pytest-benchmark: `pytest bench/` (never part of the test suite; no timed assertions).

Each benchmark stores steps/s in extra_info; `python bench/report.py` prints the same figures
as one table with ratios to the NumPy loop and to the machine's limit.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import throughput as tp  # noqa: E402

STEPS = 100_000
NAIVE_STEPS = 10_000


@pytest.mark.parametrize("latent", list(tp.LATENTS))
@pytest.mark.parametrize("size", list(tp.SIZES))
@pytest.mark.parametrize("seeds", [1, 2])
def test_fastsgd(benchmark, size, latent, seeds):
    cfg = tp.config(size, latent, steps=STEPS, records=2, test_size=1000)
    rate = benchmark.pedantic(tp.fastsgd_steps_per_second, args=(cfg, seeds), rounds=1)
    benchmark.extra_info["steps_per_second"] = rate


@pytest.mark.parametrize("latent", list(tp.LATENTS))
@pytest.mark.parametrize("size", list(tp.SIZES))
@pytest.mark.parametrize("blas_threads", [1, 2])
def test_numpy_loop(benchmark, size, latent, blas_threads):
    cfg = tp.config(size, latent, steps=NAIVE_STEPS)
    rate = benchmark.pedantic(tp.numpy_loop_steps_per_second,
                              args=(cfg, NAIVE_STEPS, blas_threads), rounds=1)
    benchmark.extra_info["steps_per_second"] = rate


@pytest.mark.parametrize("size", list(tp.SIZES))
@pytest.mark.parametrize("concurrent", [1, 2])
def test_limit(benchmark, size, concurrent):
    N, D, K, M = tp.SIZES[size]
    limit = benchmark.pedantic(tp.measure_limit, args=(N, D, M, concurrent), rounds=1)
    benchmark.extra_info["steps_per_second"] = limit.steps_per_second
    benchmark.extra_info["gflops_per_core"] = 2 * D * (N + M) / limit.gemm_seconds_per_step \
        / concurrent / 1e9


def test_mixed_precision(benchmark):
    cfg = tp.config("N1000_D500_K2_M2", "gaussian", steps=STEPS, records=2, test_size=1000,
                    precision="mixed")
    benchmark.extra_info["steps_per_second"] = benchmark.pedantic(
        tp.fastsgd_steps_per_second, args=(cfg, 1), rounds=1)


def test_hmm_ode(benchmark):
    benchmark.extra_info["seconds"] = benchmark.pedantic(tp.hmm_ode_seconds, rounds=3)


def test_scm_ode(benchmark):
    benchmark.extra_info["seconds"] = benchmark.pedantic(tp.scm_ode_seconds, rounds=3)


@pytest.mark.parametrize("g", ["erf", "relu"])
@pytest.mark.parametrize("model", ["hmm", "scm"])
def test_ode_relu_against_erf(benchmark, model, g):
    """ReLU ODE (numerical I4) beside erf: Euler dt = 0.01 and RK4 (HMM dt = 1.5, SCM 0.5)."""
    if model == "hmm":
        run = lambda method, dt: tp.hmm_ode_seconds(method, dt, g=g)  # noqa: E731
        rk4_dt = 1.5
    else:
        run = lambda method, dt: tp.scm_ode_seconds(g, method, dt)  # noqa: E731
        rk4_dt = 0.5
    benchmark.extra_info["rk4_seconds"] = run("rk4", rk4_dt)
    benchmark.extra_info["seconds"] = benchmark.pedantic(run, args=("euler", 0.01), rounds=1)


@pytest.mark.parametrize("method, dt", [("euler", 0.01), ("rk4", 0.01), ("rk4", None)],
                         ids=["euler", "rk4-fixed", "rk4-default"])
def test_moments_ode_beside_hmm_ode(benchmark, method, dt):
    """The moments ODE against the HMM ODE at N = 1000, D = 500, t = 100 (one seed), and the
    cost of its state (docs/model.md §10.5)."""
    result = benchmark.pedantic(tp.moments_ode_seconds, kwargs=dict(method=method, dt=dt),
                                rounds=1)
    benchmark.extra_info.update(result)
