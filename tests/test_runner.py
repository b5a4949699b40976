"""The runner (fastsgd/runner.py): one seed index from step 0 to ``steps`` (docs/model.md §3.3,
§3.4, §4).

1. take_record: every observable of a record (§4.1–4.3) against plain NumPy (tests/naive.py),
   with noiseless test labels, and eg = NaN for f = relu.
2. Divergence (§3.4): the seed stops with status "diverged" at the first step whose ŷ leaves the
   bound, without that step's update, keeping its earlier records.
3. A runner fills its own position with its own seed index and reports progress per block; a
   stop request (the stop event) ends the seed at the next generation block as "interrupted",
   also during setup, and a seed stopped before it starts stays "pending".
"""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

import fastsgd
import naive
from fastsgd import io
from fastsgd.config import SimConfig
from fastsgd.problem import build_problem
from fastsgd.runner import GEN_BLOCK, SeedRunner, take_record
from fastsgd.streams import SeedStreams

RECORD_KEYS = {"Q", "R", "W", "Sigma", "v", "eg", "eg_mc", "emp_Q", "emp_R", "emp_T",
               "lambda_mean", "lambda_skewness", "lambda_kurtosis"}


def centred(a, b):
    return (a - a.mean(axis=0)).T @ (b - b.mean(axis=0)) / a.shape[0]


# --------------------------------------------------------------------------------------------
# 1. take_record
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("f, g", [("sign", "erf"), ("tanh", "linear"), ("relu", "relu")])
def test_take_record_against_numpy(f, g):
    cfg = SimConfig(N=48, D=24, K=3, M=2, f=f, g=g, sigma=0.5, test_size=400, steps=10,
                    records=2, seed=4)
    problem = build_problem(cfg, SeedStreams.for_seed(cfg.seed, cfg.sample_entropy, 0))
    rng = np.random.default_rng(2)
    w = problem.w + 0.3 * rng.normal(size=problem.w.shape)
    v = problem.v + 0.1 * rng.normal(size=cfg.K)
    record = take_record(cfg, problem, w, v)
    assert set(record) == RECORD_KEYS

    N, D = cfg.N, cfg.D
    a, b, c_f = naive.fold_coeffs(f)
    zeta = c_f - a * a - b * b
    W = w @ w.T / N
    S = w @ problem.features / math.sqrt(N)
    Sigma = S @ S.T / D
    Q, R = zeta * W + b * b * Sigma, b / D * S @ problem.teacher.T
    T = problem.teacher @ problem.teacher.T / D
    for name, expected in (("W", W), ("Sigma", Sigma), ("Q", Q), ("R", R)):
        np.testing.assert_allclose(record[name], expected, rtol=1e-12, atol=1e-13, err_msg=name)
    np.testing.assert_array_equal(record["v"], v)
    if f == "relu":
        assert math.isnan(record["eg"])        # a ≠ 0: no Gaussian-equivalent closed form
    else:
        C = np.block([[Q, R], [R.T, T]])
        u = np.concatenate([v, -problem.A])
        assert record["eg"] == pytest.approx(0.5 * u @ naive.i2_matrix(C, g) @ u, rel=1e-12)

    lam = problem.test_inputs.astype(np.float64) @ w.T / math.sqrt(N)
    nu = problem.test_nu
    y = naive.g_act(nu, g) @ problem.A         # noiseless, although sigma > 0
    yhat = naive.g_act(lam, g) @ v
    assert record["eg_mc"] == pytest.approx(0.5 * np.mean((yhat - y) ** 2), rel=1e-12)
    np.testing.assert_allclose(record["emp_Q"], centred(lam, lam), rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(record["emp_R"], centred(lam, nu), rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(record["lambda_mean"], lam.mean(axis=0), rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(record["emp_T"], centred(nu, nu), rtol=1e-12, atol=1e-14)
    skew, kurt = naive.shape(lam)
    np.testing.assert_allclose(record["lambda_skewness"], skew, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(record["lambda_kurtosis"], kurt, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------------
# 2. Divergence (§3.4)
# --------------------------------------------------------------------------------------------

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


def test_diverged_step_is_the_first_step_whose_yhat_leaves_the_bound(tmp_path):
    """Replayed in NumPy: every ŷ before /diverged_step is within 10⁸, the one at it is not, and
    /final/w holds the weights before that step's update."""
    cfg = SimConfig(N=64, D=32, g="linear", f="linear", lr=50.0, steps=20_000, records=40,
                    test_size=50)
    run = fastsgd.simulate(cfg, out=tmp_path / "run.h5")
    assert run.status == ["diverged"]
    step = int(run.diverged_step[0])
    assert step >= 1
    with np.errstate(all="ignore"):
        ref = naive.simulate(cfg.replace(steps=step + 1, records=2), trace=True)
    outside = ~(np.abs(ref["trace_yhat"]) <= 1e8)
    assert outside[step] and not outside[:step].any()
    np.testing.assert_allclose(run.final_w[0], ref["trace_w"][step - 1], rtol=1e-8)
    np.testing.assert_allclose(run.final_v[0], ref["trace_v"][step - 1], rtol=1e-8)


# --------------------------------------------------------------------------------------------
# 3. Positions, progress and stop requests
# --------------------------------------------------------------------------------------------

class Progress:
    def __init__(self):
        self.updates = []

    def update(self, n):
        self.updates.append(n)


def new_writer(path, cfg):
    steps = io.record_steps(cfg.steps, cfg.records)
    return io.RunWriter(path, cfg, steps, GEN_BLOCK, "", overwrite=False), steps


def test_a_runner_fills_its_own_position_with_its_seed_index(tmp_path):
    cfg = SimConfig(N=40, D=20, steps=600, records=8, test_size=50, seeds=2, first_seed_index=5)
    writer, steps = new_writer(tmp_path / "run.h5", cfg)
    progress = Progress()
    assert SeedRunner(cfg, 1, writer, steps, threading.Event(), progress).run() == "ok"
    writer.close()
    run = fastsgd.load(tmp_path / "run.h5")
    assert run.status == ["pending", "ok"] and run.n_records.tolist() == [0, len(steps)]
    assert np.all(np.isnan(run.eg_mc[0])) and np.all(np.isnan(run.initial["rhos"][0]))
    assert progress.updates == [GEN_BLOCK, GEN_BLOCK, 600 - 2 * GEN_BLOCK]
    single = fastsgd.simulate(cfg.replace(seeds=1, first_seed_index=6), out=tmp_path / "s6.h5")
    for name in ("Q", "R", "v", "eg", "eg_mc", "final_w", "final_v", "T", "mixture_means"):
        np.testing.assert_array_equal(getattr(run, name)[1], getattr(single, name)[0],
                                      err_msg=name)
    for name in run.initial:
        np.testing.assert_array_equal(run.initial[name][1], single.initial[name][0])


class StopAfterRow(io.RunWriter):
    """A writer that sets the stop event once record ``row`` of the seed is written."""

    def __init__(self, *args, stop, row, **kwargs):
        super().__init__(*args, **kwargs)
        self.stop_event, self.stop_row = stop, row

    def write_record(self, i, row, record):
        super().write_record(i, row, record)
        if row == self.stop_row:
            self.stop_event.set()


def test_a_stop_request_ends_the_seed_at_the_next_block_as_interrupted(tmp_path):
    cfg = SimConfig(N=64, D=32, steps=20_000, records=60, test_size=100)
    steps = io.record_steps(cfg.steps, cfg.records)
    stop = threading.Event()
    writer = StopAfterRow(tmp_path / "stop.h5", cfg, steps, GEN_BLOCK, "", overwrite=False,
                          stop=stop, row=2)
    assert SeedRunner(cfg, 0, writer, steps, stop).run() == "interrupted"
    writer.close()
    run = fastsgd.load(tmp_path / "stop.h5")
    assert run.status == ["interrupted"] and run.diverged_step.tolist() == [-1]
    n = int(run.n_records[0])
    # the flag is checked once per generation block: the rest of block 0 is still recorded
    assert n == np.count_nonzero(steps <= GEN_BLOCK) < len(steps)
    full = fastsgd.simulate(cfg, out=tmp_path / "full.h5")
    for name in ("Q", "R", "v", "eg", "eg_mc"):
        np.testing.assert_array_equal(getattr(run, name)[0, :n], getattr(full, name)[0, :n])
    assert np.all(np.isnan(run.eg_mc[0, n:])) and np.all(np.isfinite(run.final_w[0]))
    for name in run.initial:
        np.testing.assert_array_equal(run.initial[name], full.initial[name])


class StopAfterStart:
    """A stop flag that reads unset once (the runner's check before it starts), then set."""

    def __init__(self):
        self.calls = 0

    def is_set(self):
        self.calls += 1
        return self.calls > 1


def test_a_stop_request_during_setup_interrupts_before_any_record(tmp_path):
    cfg = SimConfig(N=40, D=20, steps=1000, records=10, test_size=3000)
    writer, steps = new_writer(tmp_path / "setup.h5", cfg)
    stop = StopAfterStart()
    assert SeedRunner(cfg, 0, writer, steps, stop).run() == "interrupted"
    writer.close()
    assert stop.calls == 2                       # the test set's first chunk saw the request
    run = fastsgd.load(tmp_path / "setup.h5")
    assert run.status == ["interrupted"] and run.n_records.tolist() == [0]
    assert np.all(np.isnan(run.initial["rhos"])) and np.all(np.isnan(run.final_w))


def test_a_seed_stopped_before_it_starts_stays_pending(tmp_path):
    cfg = SimConfig(N=40, D=20, steps=1000, records=10, test_size=30)
    writer, steps = new_writer(tmp_path / "pending.h5", cfg)
    stop = threading.Event()
    stop.set()
    assert SeedRunner(cfg, 0, writer, steps, stop).run() == "pending"
    assert writer.statuses() == ["pending"]
    writer.close()
    assert fastsgd.load(tmp_path / "pending.h5").n_records.tolist() == [0]
