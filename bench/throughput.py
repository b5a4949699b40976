"""Throughput measurements: the simulator, the plain NumPy loop, and the machine's limit.

One step costs 2·D·(N + M) flops of input generation (the GEMM that makes x and the teacher
field) plus D normals; the limit is the time of exactly that work at the generation block shape,
measured here in the same process: one one-thread GEMM (one seed) or two concurrent one-thread
GEMMs (two seeds), plus D normals from a PCG64 Generator inside numba.
"""

from __future__ import annotations

import math
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

import fastsgd
from fastsgd import io
from fastsgd.problem import build_problem
from fastsgd.runner import GEN_BLOCK, SeedRunner
from fastsgd.sampling import fill_standard_normal

SIZES = {"N500_D250_K2_M2": (500, 250, 2, 2), "N1000_D500_K2_M2": (1000, 500, 2, 2),
         "N1000_D500_K8_M4": (1000, 500, 8, 4)}
LATENTS = {"gaussian": {}, "mixture_m8_a2_whiten": dict(m=8, alpha=2.0, standardize="whiten")}


def config(size: str, latent: str, **extra) -> fastsgd.SimConfig:
    N, D, K, M = SIZES[size]
    return fastsgd.SimConfig(N=N, D=D, K=K, M=M, **LATENTS[latent], **extra)


# ----------------------------------------------------------------------------- fastsgd
def _prepared_runner(cfg, i, writer):
    runner = SeedRunner(cfg, i, writer, io.record_steps(cfg.steps, cfg.records),
                        threading.Event())
    streams = runner.streams()
    return runner, build_problem(cfg, streams), streams


def fastsgd_steps_per_second(cfg: fastsgd.SimConfig, seeds: int = 1) -> float:
    """Steps per second of the training loop (generation, SGD, divergence checks and the
    records of ``cfg``), summed over ``seeds`` seeds running concurrently, one BLAS thread
    each. Setup (F, the test set, the spectral state) is excluded: it does not grow with
    steps."""
    cfg = cfg.replace(seeds=seeds)
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(1, "blas"):
        writer = io.RunWriter(Path(tmp) / "bench.h5", cfg,
                              io.record_steps(cfg.steps, cfg.records), GEN_BLOCK, "bench",
                              False)
        prepared = [_prepared_runner(cfg, i, writer) for i in range(seeds)]
        threads = [threading.Thread(target=runner.train, args=(problem, streams))
                   for runner, problem, streams in prepared]
        start = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        elapsed = time.perf_counter() - start
        writer.close()
    return seeds * cfg.steps / elapsed


# ----------------------------------------------------------------------------- NumPy loop
def numpy_loop_steps_per_second(cfg: fastsgd.SimConfig, steps: int, blas_threads: int) -> float:
    """A plain per-sample NumPy loop of the same model (the tests' reference, without
    records): one latent, one matrix–vector product for x and one for ν, one SGD step."""
    rng = np.random.default_rng(0)
    N, D, K, M = cfg.N, cfg.D, cfg.K, cfg.M
    F = rng.standard_normal((N, D))
    teacher = rng.standard_normal((M, D))
    w, v, A = rng.standard_normal((K, N)), rng.standard_normal(K), np.ones(M)
    means = rng.uniform(-cfg.alpha, cfg.alpha, (cfg.m, D))
    p = np.full(cfg.m, 1 / cfg.m)
    mu_bar = p @ means
    cov = np.eye(D) + ((means - mu_bar).T * p) @ (means - mu_bar)
    vals, vecs = np.linalg.eigh(cov)
    whitening = vecs @ np.diag(vals ** -0.5) @ vecs.T
    from scipy.special import erf
    sqrt_n, sqrt_d, lr = math.sqrt(N), math.sqrt(D), cfg.lr
    with threadpool_limits(blas_threads, "blas"):
        start = time.perf_counter()
        for _ in range(steps):
            c = rng.standard_normal(D)
            if cfg.m > 1:
                c = whitening @ (c + means[rng.integers(cfg.m)] - mu_bar)
            x = np.sign(F @ c / sqrt_d)
            y = A @ erf(teacher @ c / sqrt_d / math.sqrt(2))
            lam = w @ x / sqrt_n
            g = erf(lam / math.sqrt(2))
            delta = y - v @ g
            gp = math.sqrt(2 / math.pi) * np.exp(-lam * lam / 2)
            w += lr / sqrt_n * np.outer(v * delta * gp, x)
            v += lr / N * delta * g
        return steps / (time.perf_counter() - start)


# ----------------------------------------------------------------------------- the limit
@dataclass
class Limit:
    gemm_seconds_per_step: float     # one-thread GEMM at the block shape, per step
    normal_seconds: float            # one normal from a Generator inside numba
    D: int
    concurrent: int

    @property
    def steps_per_second(self) -> float:
        return self.concurrent / (self.gemm_seconds_per_step + self.D * self.normal_seconds)


def measure_limit(N: int, D: int, M: int, concurrent: int = 1, seconds: float = 0.4,
                  dtype=np.float64, trials: int = 3) -> Limit:
    """The limit for ``concurrent`` seeds: each runs one-thread GEMMs (GEN_BLOCK × D) ·
    (D × (N + M)) in its own thread, all started together, for about ``seconds``; the per-step
    time is wall time / (repeats · GEN_BLOCK), the best of ``trials`` (the limit is what the
    machine can do). Plus the time of one normal inside numba."""
    rng = np.random.default_rng(1)
    operands = [(rng.standard_normal((GEN_BLOCK, D)).astype(dtype),
                 rng.standard_normal((D, N + M)).astype(dtype),
                 np.empty((GEN_BLOCK, N + M), dtype=dtype)) for _ in range(concurrent)]
    with threadpool_limits(1, "blas"):
        C, G, U = operands[0]
        np.dot(C, G, out=U)
        start = time.perf_counter()
        for _ in range(5):
            np.dot(C, G, out=U)
        repeats = max(20, int(seconds / ((time.perf_counter() - start) / 5)))
        barrier = threading.Barrier(concurrent + 1)

        def work(C, G, U):
            barrier.wait()
            for _ in range(repeats):
                np.dot(C, G, out=U)

        gemm = np.inf
        for _ in range(trials):
            threads = [threading.Thread(target=work, args=ops) for ops in operands]
            for th in threads:
                th.start()
            barrier.wait()
            start = time.perf_counter()
            for th in threads:
                th.join()
            gemm = min(gemm, (time.perf_counter() - start) / (repeats * GEN_BLOCK))
    gen = np.random.Generator(np.random.PCG64(0))
    buf = np.empty((GEN_BLOCK, D))
    fill_standard_normal(gen, buf)
    start = time.perf_counter()
    for _ in range(50):
        fill_standard_normal(gen, buf)
    normal = (time.perf_counter() - start) / (50 * buf.size)
    return Limit(gemm, normal, D, concurrent)


# ----------------------------------------------------------------------------- the ODEs
def hmm_ode_seconds(method: str = "euler", dt: float | None = 0.01, g: str = "erf",
                    clock=time.perf_counter) -> float:
    """HMM ODE, D = 250 (N = 500), K = M = 2, sign/g, both layers, t = 1000; dt None is the
    method's default."""
    from analysis.ode import integrate_hmm
    state = fastsgd.initial_state(fastsgd.SimConfig(N=500, D=250))
    kw = dict(lr=0.2, delta=0.5, train_second_layer=True, t_max=1000.0, method=method, dt=dt,
              g=g)
    integrate_hmm(state, **{**kw, "t_max": 1.0})  # load the compiled kernel
    start = clock()
    integrate_hmm(state, **kw)
    return clock() - start


def scm_start(K: int = 2):
    """(Q0, R0, T, v0, A) of the Saad–Solla benchmarks: the shipped fixture's initial state for
    K = M = 2 (the published case), else students and teachers of K i.i.d. Gaussian rows of
    length 500 (Q = 0.1 WWᵀ/500, v = 1/2, A = 1; seed 1)."""
    if K == 2:
        ref = Path(__file__).resolve().parent.parent / "tests" / "data" / "ref" / \
            "scm_erf_K2M2_lr0.2_Tidentity_ode_only"
        ic = {name: np.loadtxt(ref / f"ic_{name}0.csv", delimiter=",") for name in "QRTvA"}
        return ic["Q"], ic["R"], ic["T"], ic["v"], ic["A"]
    rng = np.random.default_rng(1)
    W, Wt = rng.standard_normal((K, 500)), rng.standard_normal((K, 500))
    return (W @ W.T / 500 * 0.1, W @ Wt.T / 500 * np.sqrt(0.1), Wt @ Wt.T / 500,
            np.full(K, 0.5), np.ones(K))


def scm_ode_seconds(g: str = "erf", method: str = "euler", dt: float | None = 0.01,
                    K: int = 2, clock=time.perf_counter) -> float:
    """Saad–Solla ODE, K = M, t = 2000, from :func:`scm_start` (erf is the published case;
    relu starts from the same state); dt None is the method's default."""
    from analysis.ode import integrate_scm
    start_state = scm_start(K)
    kw = dict(lr=0.2, g=g, method=method, dt=dt)
    integrate_scm(*start_state, t_max=1.0, **kw)
    start = clock()
    integrate_scm(*start_state, t_max=2000.0, **kw)
    return clock() - start


def moments_ode_seconds(N: int = 1000, D: int = 500, t_max: float = 100.0,
                        method: str = "euler", dt: float | None = 0.01) -> dict[str, float]:
    """The moments ODE (docs/model.md §10.5) beside the HMM ODE at equal N, D and t: a centred
    population mixture (m = 8, α = 2, B = D, sign/erf, K = M = 2, both layers), one seed.

    Returns wall seconds: "moments" (its ODE), "hmm" (the HMM ODE of the same seed, same method
    and dt; RK4 with dt = None uses dt = 0.1 for the HMM ODE), "input_moments" (the seed's exact
    Ω, Φ), "state" (the N × N eigendecomposition and densities), and "per_bin_step" = the
    moments ODE's cost per density bin and step over the HMM ODE's (equal step counts)."""
    from analysis.ode import GaussianEquivalentState, integrate_gaussian_equivalent, integrate_hmm
    from fastsgd.problem import seed_moments
    cfg = fastsgd.SimConfig(N=N, D=D, m=8, alpha=2.0, standardize="population",
                            center_inputs=True)
    start = time.perf_counter()
    draws, moments = seed_moments(cfg, 0)
    input_seconds = time.perf_counter() - start
    start = time.perf_counter()
    state = GaussianEquivalentState.from_moments(moments.omega, moments.phi, draws.w,
                                                 draws.teacher, moments.latent_covariance,
                                                 draws.v, draws.A)
    state_seconds = time.perf_counter() - start
    hmm_state = fastsgd.initial_state(cfg)
    kw = dict(lr=0.2, train_second_layer=True, method=method)
    integrate_gaussian_equivalent(state, t_max=0.1, dt=dt, **kw)      # load the kernels
    integrate_hmm(hmm_state, delta=D / N, t_max=0.1, dt=dt or 0.1, **kw)
    start = time.perf_counter()
    integrate_gaussian_equivalent(state, t_max=t_max, dt=dt, **kw)
    moments_seconds = time.perf_counter() - start
    start = time.perf_counter()
    integrate_hmm(hmm_state, delta=D / N, t_max=t_max, dt=dt or 0.1, **kw)
    hmm_seconds = time.perf_counter() - start
    return {"moments": moments_seconds, "hmm": hmm_seconds, "input_moments": input_seconds,
            "state": state_seconds,
            "per_bin_step": (moments_seconds / N) / (hmm_seconds / D) if dt else math.nan}
