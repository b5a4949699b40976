"""A seed index's fixed problem (fastsgd/problem.py): docs/model.md §2.1–2.3, §3.2, §3.3, §4.4.

1. build_problem draws, in the stream order of §3.3: F from (s,0), W̃ from (s,1), the mixture
   from (s,2) (means, then Dirichlet weights), w(0) then v(0) from (s,3), A = 1 without a draw;
   the GEMM operand [F/√D | W̃ᵀ/√D]; and the test set from (s,5,·) with the data entropy, equal
   to plain NumPy (tests/naive.py) with int8 inputs exactly for sign-folded HMM inputs.
2. fastsgd.initial_state(cfg, s) equals, bitwise, the /initial_state that a run of cfg stores
   for seed index s, for every seed of a 3-seed run with first_seed_index ≠ 0 and a mixture
   latent, and ignores the latent law (§4.4).
3. A stop request during the test set's construction raises Stopped.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

import fastsgd
import naive
from fastsgd.config import gaussian_latent
from fastsgd.problem import Stopped, build_problem, exact_int8_test_inputs
from fastsgd.streams import SeedStreams, stream

STATE_FIELDS = ("rhos", "r", "sigma", "omega", "W", "T", "T_tilde", "v", "A")

CASES = [
    dict(N=40, D=20, K=3, M=2, seed=5, test_size=60),
    dict(N=40, D=20, K=2, M=3, seed=5, sample_seed=9, m=3, alpha=1.0, weights="dirichlet",
         block_size=4, standardize="whiten", f="erf", g="relu", train_second_layer=False,
         input_model="equivalent_gaussian", test_size=60),
    dict(N=36, D=12, K=2, M=1, seed=2, m=2, alpha=2.0, standardize="sample", f="tanh",
         g="linear", test_size=1500),       # two chunks of the test set (TEST_CHUNK = 1024)
]


@pytest.mark.parametrize("values", CASES, ids=["gauss-sign", "mixture-eqgauss", "sample-tanh"])
@pytest.mark.parametrize("s", [0, 3])
def test_build_problem_draws_in_the_documented_stream_order(values, s):
    cfg = fastsgd.SimConfig(**values)
    N, D, K, M, P = cfg.N, cfg.D, cfg.K, cfg.M, cfg.test_size
    problem = build_problem(cfg, SeedStreams.for_seed(cfg.seed, cfg.sample_entropy, s))

    F = stream(cfg.seed, s, 0).standard_normal((N, D))
    teacher = stream(cfg.seed, s, 1).standard_normal((M, D))
    mix = stream(cfg.seed, s, 2)
    means = mix.uniform(-cfg.alpha, cfg.alpha, (cfg.m, D))
    weights = mix.dirichlet(np.ones(cfg.m)) if cfg.weights == "dirichlet" else np.full(
        cfg.m, 1.0 / cfg.m)
    student = stream(cfg.seed, s, 3)
    w = student.standard_normal((K, N))
    v = student.standard_normal(K) if cfg.train_second_layer else np.ones(K)
    np.testing.assert_array_equal(problem.features, F)
    np.testing.assert_array_equal(problem.teacher, teacher)
    np.testing.assert_array_equal(problem.mixture.means, means)
    np.testing.assert_array_equal(problem.mixture.weights, weights)
    np.testing.assert_array_equal(problem.w, w)
    np.testing.assert_array_equal(problem.v, v)
    np.testing.assert_array_equal(problem.A, np.ones(M))
    np.testing.assert_array_equal(problem.generator,
                                  np.concatenate([F.T, teacher.T], axis=1) / math.sqrt(D))

    # the test set: P latents from (s,5,0) and (s,5,1), ξ from (s,5,2), with the data entropy
    ent = cfg.sample_entropy
    latents = naive.Latents(cfg, means, weights)
    r_latent, r_labels = stream(ent, s, 5, 0), stream(ent, s, 5, 1)
    C = np.stack([latents.draw(r_latent, r_labels, stream(ent, s, 5, 3)) for _ in range(P)])
    U = C @ F.T / math.sqrt(D)
    nu = C @ teacher.T / math.sqrt(D)
    np.testing.assert_allclose(problem.test_nu, nu, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(problem.test_y, naive.g_act(problem.test_nu, cfg.g) @ np.ones(M),
                               rtol=1e-15, atol=1e-15)                # noiseless labels
    if cfg.input_model == "equivalent_gaussian":
        a, b, c_f = naive.fold_coeffs(cfg.f)
        xi = stream(ent, s, 5, 2).standard_normal((P, N))
        expected = a + b * U + math.sqrt(c_f - a * a - b * b) * xi
    else:
        expected = naive.fold(U, cfg.f)
    if exact_int8_test_inputs(cfg):
        assert problem.test_inputs.dtype == np.int8
        np.testing.assert_array_equal(problem.test_inputs, expected)
    else:
        assert problem.test_inputs.dtype == np.float64
        np.testing.assert_allclose(problem.test_inputs, expected, rtol=1e-12, atol=1e-12)
    centred = nu - nu.mean(axis=0)
    np.testing.assert_allclose(problem.test_T, centred.T @ centred / P, rtol=1e-12, atol=1e-14)


def test_int8_inputs_only_for_sign_folded_hmm_inputs():
    """§3.4: f = sign with HMM inputs is stored as int8; every other fold and the equivalent
    Gaussian inputs as float64."""
    for f in ("sign", "erf", "linear", "relu", "tanh"):
        for model in ("hmm", "equivalent_gaussian"):
            cfg = fastsgd.SimConfig(f=f, input_model=model)
            assert exact_int8_test_inputs(cfg) == (f == "sign" and model == "hmm")


@pytest.fixture(scope="module")
def mixture_run(tmp_path_factory):
    cfg = fastsgd.SimConfig(N=48, D=24, K=3, M=2, m=3, alpha=1.0, block_size=8,
                            standardize="population", seeds=3, first_seed_index=4, seed=13,
                            steps=10, records=2, test_size=20)
    return cfg, fastsgd.simulate(cfg, out=tmp_path_factory.mktemp("problem") / "run.h5")


def test_initial_state_equals_the_runs_bitwise_for_every_seed(mixture_run):
    cfg, run = mixture_run
    assert run.seed_index.tolist() == [4, 5, 6]
    for i, s in enumerate(run.seed_index):
        state = fastsgd.initial_state(cfg, int(s))
        stored = run.initial_state(i)
        for name in STATE_FIELDS:
            a, b = getattr(state, name), getattr(stored, name)
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), (int(s), name)
    # the default seed index is first_seed_index, and seeds differ
    default = fastsgd.initial_state(cfg)
    assert default.rhos.tobytes() == fastsgd.initial_state(cfg, 4).rhos.tobytes()
    assert not np.array_equal(default.rhos, fastsgd.initial_state(cfg, 5).rhos)


def test_initial_state_ignores_the_latent_law(mixture_run):
    """§4.4: a mixture run and its Gaussian twin share their initial state (one ODE)."""
    cfg, _ = mixture_run
    twin = gaussian_latent(cfg)
    for s in (4, 6):
        a, b = fastsgd.initial_state(cfg, s), fastsgd.initial_state(twin, s)
        for name in STATE_FIELDS:
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_initial_state_of_a_first_layer_only_config_has_v_one():
    cfg = fastsgd.SimConfig(N=30, D=10, K=2, train_second_layer=False)
    np.testing.assert_array_equal(fastsgd.initial_state(cfg, 1).v, np.ones(2))
    trained = fastsgd.initial_state(cfg.replace(train_second_layer=True), 1)
    np.testing.assert_array_equal(trained.v, stream(cfg.seed, 1, 3).standard_normal(
        (2 * 30 + 2))[-2:])
    # w(0), hence W, is the same either way: v is drawn after w
    np.testing.assert_array_equal(trained.W, fastsgd.initial_state(cfg, 1).W)


def test_a_stop_request_interrupts_the_test_set():
    cfg = fastsgd.SimConfig(N=20, D=10, test_size=3000)
    streams = SeedStreams.for_seed(cfg.seed, cfg.sample_entropy, 0)
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped):
        build_problem(cfg, streams, stop)
    # without a request it completes
    problem = build_problem(cfg, SeedStreams.for_seed(cfg.seed, cfg.sample_entropy, 0),
                            threading.Event())
    assert problem.test_inputs.shape == (3000, 20)


@pytest.mark.parametrize("means", ["vector", "scalar"])
def test_an_aligned_teacher_replaces_row_0_only(means):
    """§10.3: W̃ is drawn from (s,1) as always, then row 0 becomes √D·u."""
    from fastsgd.sampling import aligned_direction
    cfg = fastsgd.SimConfig(N=40, D=20, M=3, m=3, alpha=2.0, means=means, block_size=4,
                            teacher="aligned", test_size=50)
    problem = build_problem(cfg, SeedStreams.for_seed(cfg.seed, cfg.sample_entropy, 1))
    drawn = stream(cfg.seed, 1, 1).standard_normal((cfg.M, cfg.D))
    np.testing.assert_array_equal(problem.teacher[1:], drawn[1:])
    np.testing.assert_array_equal(problem.teacher[0],
                                  math.sqrt(cfg.D) * aligned_direction(problem.mixture))
    random = build_problem(cfg.replace(teacher="random"),
                           SeedStreams.for_seed(cfg.seed, cfg.sample_entropy, 1))
    np.testing.assert_array_equal(random.teacher, drawn)
    np.testing.assert_array_equal(random.features, problem.features)
