"""Deviation metrics, the universality verdict and Holm's correction (analysis/deviation.py;
docs/model.md §6, §6.1).

eg_deviation: d = (1/n) Σ_i |ln ε_sim(t_i) − ℓ_ref(t_i)|, ℓ_ref = ln ε_ref interpolated linearly
in ln t, over the simulation's record times with t_min ≤ t_i ≤ t_max inside the reference's range;
t ≤ 0 and non-finite points on either curve dropped; both curves floored at eg_min; NaN if n < 2.
op_deviation: the mean relative Frobenius distance over the same window, points with
‖X_ref‖_F < 1e-12 skipped. aggregate: n_valid, mean and s.e.m. over finite d_s.
universality_verdict: one-sided 2-combined-s.e.m. rule, plus the paired difference, the unpaired
z = (d̄_cell − d̄_floor)/√(sem_cell² + sem_floor²) and its one-sided p = ½ erfc(z/√2) (§6.1).
holm: Holm's step-down procedure at family-wise level 0.05, NaN p-values never rejected.

All inputs are synthetic and small: no simulation or ODE is run here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from analysis.deviation import (
    Aggregate,
    Verdict,
    aggregate,
    eg_deviation,
    holm,
    op_deviation,
    universality_verdict,
)

TOL = 1e-12


# --------------------------------------------------------------------------------------------
# helpers: reference curves whose log-time interpolant is known in closed form
# --------------------------------------------------------------------------------------------

def power_law(t, a=0.7, b=0.8):
    """ε(t) = a t^(−b): ln ε is linear in ln t, so log-time interpolation of ln ε is exact."""
    return a * np.asarray(t, dtype=np.float64) ** (-b)


def broken_power_law(t, a=0.7, b1=0.3, b2=1.4, t0=10.0):
    """ln ε piecewise linear in ln t with one knot at t0 (t0 must lie on the reference grid)."""
    x = np.log(np.asarray(t, dtype=np.float64))
    x0 = math.log(t0)
    return np.exp(math.log(a) - b1 * np.minimum(x, x0) - b2 * np.maximum(x - x0, 0.0))


def deltas(n, seed=0):
    """Distinct per-point log-deviations of both signs, none zero."""
    rng = np.random.default_rng(seed)
    mag = rng.uniform(0.05, 1.5, size=n)
    sign = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    return mag * sign


# --------------------------------------------------------------------------------------------
# eg_deviation
# --------------------------------------------------------------------------------------------

def test_eg_identical_curves_give_zero():
    rng = np.random.default_rng(1)
    t = np.geomspace(0.1, 1000.0, 41)
    eg = np.exp(rng.normal(-2.0, 1.0, size=t.size))          # arbitrary positive curve
    d = eg_deviation(t, eg, t, eg)
    assert isinstance(d, float)
    assert d == 0.0
    # different grids, same (power-law) curve
    t_ref = np.geomspace(0.1, 1000.0, 5)
    t_sim = np.geomspace(0.13, 870.0, 29)
    assert eg_deviation(t_sim, power_law(t_sim), t_ref, power_law(t_ref)) == pytest.approx(0.0, abs=TOL)


GRIDS = {
    "same": (np.geomspace(0.1, 1000.0, 31), np.geomspace(0.1, 1000.0, 31)),
    "sim_finer": (np.geomspace(0.11, 900.0, 57), np.array([0.1, 1.0, 10.0, 100.0, 1000.0])),
    "sim_coarser": (np.array([0.2, 3.0, 47.0, 700.0]), np.geomspace(0.1, 1000.0, 13)),
    "interleaved_irregular": (np.array([0.15, 0.4, 2.2, 9.0, 11.0, 30.0, 333.0]),
                              np.array([0.1, 0.5, 10.0, 12.0, 250.0, 1000.0])),
}


@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize("c", [0.37, -1.2, 1e-3])
def test_eg_constant_log_ratio_gives_abs_c_on_any_grid(grid, c):
    t_sim, t_ref = GRIDS[grid]
    assert 10.0 in t_ref                                    # the knot of the broken power law
    eg_ref = broken_power_law(t_ref)
    eg_sim = broken_power_law(t_sim) * math.exp(c)
    assert eg_deviation(t_sim, eg_sim, t_ref, eg_ref) == pytest.approx(abs(c), abs=TOL)


@pytest.mark.parametrize("c", [0.25, -0.8])
def test_eg_constant_ratio_arbitrary_curve_same_grid(c):
    rng = np.random.default_rng(2)
    t = np.geomspace(0.1, 500.0, 23)
    eg_ref = np.exp(rng.normal(-3.0, 2.0, size=t.size))
    assert eg_deviation(t, eg_ref * math.exp(c), t, eg_ref) == pytest.approx(abs(c), abs=TOL)


def test_eg_reference_interpolated_linearly_in_log_time_of_log_eg():
    # coarse decade grid; the sim times are all off-grid
    t_ref = np.array([0.1, 1.0, 10.0, 100.0, 1000.0])
    eg_ref = power_law(t_ref)
    t_sim = np.geomspace(0.13, 870.0, 37)
    assert not np.isin(t_sim, t_ref).any()
    delta = deltas(t_sim.size, seed=3)
    eg_sim = power_law(t_sim) * np.exp(delta)
    expected = np.mean(np.abs(delta))
    assert eg_deviation(t_sim, eg_sim, t_ref, eg_ref) == pytest.approx(expected, abs=TOL)

    # the test discriminates: interpolating in t, or interpolating ε instead of ln ε, differs
    lin_t = np.log(np.interp(t_sim, t_ref, eg_ref))
    lin_eps = np.log(np.interp(np.log(t_sim), np.log(t_ref), eg_ref))
    for wrong in (lin_t, lin_eps):
        alt = np.mean(np.abs(np.log(eg_sim) - wrong))
        assert abs(alt - expected) > 1e-3


def test_eg_hand_computed_example():
    # ln t_ref = 0, 2 ln 2, 4 ln 2; ℓ_ref at t = 2 and 8 are midpoints in ln ε:
    # ε_ref interpolated at t = 1, 2, 4, 8 -> 1, 0.5, 0.25, 0.05.
    t_ref = np.array([1.0, 4.0, 16.0])
    eg_ref = np.array([1.0, 0.25, 0.01])
    t_sim = np.array([1.0, 2.0, 4.0, 8.0, 32.0])           # 32 lies outside the reference
    eg_sim = np.array([2.0, 0.5, 0.125, 0.5, 123.0])
    # |ln 2| + 0 + |ln 0.5| + |ln 10|, over 4 points
    expected = (2.0 * math.log(2.0) + math.log(10.0)) / 4.0
    assert eg_deviation(t_sim, eg_sim, t_ref, eg_ref) == pytest.approx(expected, abs=TOL)


def _window_case():
    t_ref = np.geomspace(0.1, 100.0, 7)
    t_sim = np.geomspace(0.02, 500.0, 30)
    delta = deltas(t_sim.size, seed=4)
    return t_sim, power_law(t_sim) * np.exp(delta), t_ref, power_law(t_ref), delta


def test_eg_window_t_min_t_max_inclusive():
    t_sim, eg_sim, t_ref, eg_ref, delta = _window_case()
    lo, hi = t_sim[8], t_sim[20]                            # exactly on record times
    mask = (t_sim >= lo) & (t_sim <= hi)
    assert mask.sum() == 13
    d = eg_deviation(t_sim, eg_sim, t_ref, eg_ref, t_min=lo, t_max=hi)
    assert d == pytest.approx(np.mean(np.abs(delta[mask])), abs=TOL)


def test_eg_default_t_min_is_0_1_and_default_t_max_is_last_covered_time():
    t_sim, eg_sim, t_ref, eg_ref, delta = _window_case()
    mask = (t_sim >= 0.1) & (t_sim <= 100.0)                # default window ∩ reference range
    expected = np.mean(np.abs(delta[mask]))
    assert eg_deviation(t_sim, eg_sim, t_ref, eg_ref) == pytest.approx(expected, abs=TOL)
    assert eg_deviation(t_sim, eg_sim, t_ref, eg_ref, t_max=100.0) == pytest.approx(expected, abs=TOL)
    # default t_max when the simulation stops before the reference
    short = t_sim <= 20.0
    mask2 = (t_sim >= 0.1) & short
    d2 = eg_deviation(t_sim[short], eg_sim[short], t_ref, eg_ref)
    assert d2 == pytest.approx(np.mean(np.abs(delta[mask2])), abs=TOL)


def test_eg_t_min_exactly_0_1_is_included():
    t_ref = np.array([0.05, 1.0, 10.0])
    t_sim = np.array([0.05, 0.09, 0.1, 1.0, 10.0])
    delta = np.array([5.0, 4.0, 0.3, -0.2, 0.1])
    eg_sim = power_law(t_sim) * np.exp(delta)
    d = eg_deviation(t_sim, eg_sim, t_ref, power_law(t_ref))
    assert d == pytest.approx((0.3 + 0.2 + 0.1) / 3.0, abs=TOL)


def test_eg_no_extrapolation_outside_reference_range():
    t_ref = np.array([1.0, 10.0, 100.0])
    t_sim = np.array([0.5, 0.99, 1.0, 5.0, 100.0, 101.0, 300.0])
    delta = np.array([9.0, 9.0, 0.2, -0.4, 0.6, 9.0, 9.0])
    eg_sim = power_law(t_sim) * np.exp(delta)
    expected = (0.2 + 0.4 + 0.6) / 3.0
    assert eg_deviation(t_sim, eg_sim, t_ref, power_law(t_ref)) == pytest.approx(expected, abs=TOL)
    # an explicit wide window does not bring the outside points back
    d = eg_deviation(t_sim, eg_sim, t_ref, power_law(t_ref), t_min=0.0, t_max=1e6)
    assert d == pytest.approx(expected, abs=TOL)


def test_eg_drops_nonpositive_times_on_both_curves():
    # simulation: t = 0 and t < 0 with t_min allowing them
    t_ref = np.array([1.0, 10.0, 100.0])
    t_sim = np.array([-1.0, 0.0, 1.0, 10.0, 50.0])
    eg_sim = np.array([1.0, 1.0, 0.0, 0.0, 0.0]) + power_law(t_sim.clip(1.0))
    eg_sim[2:] *= np.exp([0.1, -0.3, 0.5])
    d = eg_deviation(t_sim, eg_sim, t_ref, power_law(t_ref), t_min=-10.0)
    assert np.isfinite(d)
    assert d == pytest.approx(0.3, abs=TOL)
    # reference: a point at t = 0 is dropped, so its range starts at t = 1 (0.5 is outside)
    t_ref0 = np.array([0.0, 1.0, 10.0, 100.0])
    eg_ref0 = np.concatenate([[5.0], power_law(t_ref0[1:])])
    t_sim2 = np.array([0.5, 1.0, 10.0, 50.0])
    eg_sim2 = power_law(t_sim2) * np.exp([3.0, 0.1, -0.3, 0.5])
    d2 = eg_deviation(t_sim2, eg_sim2, t_ref0, eg_ref0, t_min=0.0)
    assert d2 == pytest.approx(0.3, abs=TOL)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_eg_drops_nonfinite_simulation_points(bad):
    t = np.geomspace(0.1, 100.0, 6)
    delta = np.array([0.1, -0.2, 0.3, -0.4, 0.5, -0.6])
    eg_sim = power_law(t) * np.exp(delta)
    eg_sim[2] = bad
    expected = np.mean(np.abs(np.delete(delta, 2)))
    assert eg_deviation(t, eg_sim, t, power_law(t)) == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_eg_drops_nonfinite_reference_points(bad):
    t_ref = np.array([0.1, 1.0, 10.0, 100.0, 1000.0])
    t_sim = np.array([0.3, 3.0, 30.0, 300.0])
    delta = np.array([0.1, -0.2, 0.3, -0.4])
    eg_sim = power_law(t_sim) * np.exp(delta)
    # interior point: interpolation spans the gap (still exact for a power law)
    eg_ref = power_law(t_ref)
    eg_ref[2] = bad
    d = eg_deviation(t_sim, eg_sim, t_ref, eg_ref)
    assert d == pytest.approx(np.mean(np.abs(delta)), abs=TOL)
    # last point: the reference's range shrinks to [0.1, 100], so t = 300 is dropped
    eg_ref = power_law(t_ref)
    eg_ref[-1] = bad
    d = eg_deviation(t_sim, eg_sim, t_ref, eg_ref)
    assert d == pytest.approx(np.mean(np.abs(delta[:3])), abs=TOL)


def test_eg_floors_both_curves_at_eg_min_before_logs():
    t = np.array([1.0, 10.0, 100.0])
    eg_ref = np.full(3, 1e-3)
    # a sim value 0 (and a negative one) counts as eg_min
    eg_sim = np.array([0.0, 1e-3, -5.0])
    expected = 2.0 * abs(math.log(1e-12) - math.log(1e-3)) / 3.0
    assert eg_deviation(t, eg_sim, t, eg_ref) == pytest.approx(expected, abs=TOL)
    expected6 = 2.0 * abs(math.log(1e-6) - math.log(1e-3)) / 3.0
    assert eg_deviation(t, eg_sim, t, eg_ref, eg_min=1e-6) == pytest.approx(expected6, abs=TOL)
    # a tiny positive value below the floor also counts as eg_min
    eg_sim_tiny = np.array([1e-30, 1e-3, 1e-3])
    assert eg_deviation(t, eg_sim_tiny, t, eg_ref, eg_min=1e-6) == pytest.approx(
        abs(math.log(1e-6) - math.log(1e-3)) / 3.0, abs=TOL)
    # the reference is floored at its own grid points before ln and interpolation:
    # ℓ_ref(√10) = (ln 1 + ln 1e-4)/2
    t_ref = np.array([1.0, 10.0, 100.0])
    eg_ref0 = np.array([1.0, 0.0, 1.0])
    t_sim = np.array([1.0, math.sqrt(10.0)])
    eg_sim2 = np.array([1.0, 1.0])
    d = eg_deviation(t_sim, eg_sim2, t_ref, eg_ref0, eg_min=1e-4)
    assert d == pytest.approx(0.5 * abs(0.5 * math.log(1e-4)), abs=TOL)


def test_eg_nan_with_fewer_than_two_points():
    t_ref = np.array([1.0, 10.0, 100.0])
    eg_ref = power_law(t_ref)
    t_sim = np.array([0.5, 5.0, 200.0])                     # one point inside the reference
    assert math.isnan(eg_deviation(t_sim, power_law(t_sim), t_ref, eg_ref))
    t_sim0 = np.array([0.5, 200.0])                         # none
    assert math.isnan(eg_deviation(t_sim0, power_law(t_sim0), t_ref, eg_ref))
    # two points: finite
    t_sim2 = np.array([5.0, 50.0])
    d2 = eg_deviation(t_sim2, power_law(t_sim2) * np.exp([0.2, -0.4]), t_ref, eg_ref)
    assert d2 == pytest.approx(0.3, abs=TOL)
    # two records of which one is NaN: NaN
    assert math.isnan(eg_deviation(t_sim2, np.array([0.1, math.nan]), t_ref, eg_ref))
    # reference entirely non-finite: NaN
    assert math.isnan(eg_deviation(t_sim2, power_law(t_sim2), t_ref, np.full(3, math.nan)))


def _seeds_case(S=4):
    t_ref = np.geomspace(0.1, 300.0, 9)
    t_sim = np.geomspace(0.05, 1000.0, 25)
    rng = np.random.default_rng(5)
    eg_sim = power_law(t_sim)[None, :] * np.exp(rng.normal(0.0, 0.5, size=(S, t_sim.size)))
    eg_sim[1, 3] = math.nan
    eg_sim[2, :] = math.nan                                 # a diverged seed
    eg_sim[2, 5] = 0.1                                      # ... with a single finite point
    eg_sim[3, 10] = 0.0
    return t_sim, eg_sim, t_ref


def test_eg_two_dimensional_shared_reference_rowwise():
    t_sim, eg_sim, t_ref = _seeds_case()
    eg_ref = power_law(t_ref)
    d = eg_deviation(t_sim, eg_sim, t_ref, eg_ref, t_min=0.2, t_max=200.0)
    assert isinstance(d, np.ndarray) and d.shape == (eg_sim.shape[0],)
    rows = [eg_deviation(t_sim, eg_sim[s], t_ref, eg_ref, t_min=0.2, t_max=200.0)
            for s in range(eg_sim.shape[0])]
    np.testing.assert_allclose(d, rows, rtol=0, atol=TOL)
    assert math.isnan(d[2]) and np.isfinite(d[[0, 1, 3]]).all()


def test_eg_two_dimensional_reference_per_seed_rowwise():
    t_sim, eg_sim, t_ref = _seeds_case()
    S = eg_sim.shape[0]
    scale = np.array([1.0, 0.5, 2.0, 3.0])
    eg_ref = power_law(t_ref)[None, :] * scale[:, None]
    eg_ref[0, 4] = math.nan
    d = eg_deviation(t_sim, eg_sim, t_ref, eg_ref)
    assert d.shape == (S,)
    rows = [eg_deviation(t_sim, eg_sim[s], t_ref, eg_ref[s]) for s in range(S)]
    np.testing.assert_allclose(d, rows, rtol=0, atol=TOL)
    # each seed is really compared against its own reference row
    shared = eg_deviation(t_sim, eg_sim, t_ref, eg_ref[1])
    assert abs(d[3] - shared[3]) > 0.1
    # constant ratio per seed: seed s's sim equals its reference times e^{c_s}
    c = np.array([0.1, -0.2, 0.3, -0.4])
    t_same = t_ref
    eg_ref2 = power_law(t_same)[None, :] * scale[:, None]
    eg_sim2 = eg_ref2 * np.exp(c)[:, None]
    np.testing.assert_allclose(eg_deviation(t_same, eg_sim2, t_same, eg_ref2), np.abs(c),
                               rtol=0, atol=TOL)


# --------------------------------------------------------------------------------------------
# op_deviation
# --------------------------------------------------------------------------------------------

def log_linear_matrices(t, shape, seed=0):
    """X(t) = A + B ln t entrywise: exactly reproduced by log-time interpolation."""
    rng = np.random.default_rng(seed)
    A = rng.normal(size=shape) + 3.0
    B = 0.3 * rng.normal(size=shape)
    x = np.log(np.asarray(t, dtype=np.float64))
    return A[None, ...] + B[None, ...] * x.reshape((-1,) + (1,) * len(shape))


SHAPES = {"Q": (3, 3), "R": (2, 3), "v": (3,), "scalar": ()}


@pytest.mark.parametrize("kind", list(SHAPES))
def test_op_identical_gives_zero(kind):
    t = np.geomspace(0.1, 100.0, 11)
    X = log_linear_matrices(t, SHAPES[kind], seed=6)
    d = op_deviation(t, X, t, X)
    assert isinstance(d, float) and d == 0.0


@pytest.mark.parametrize("kind", list(SHAPES))
@pytest.mark.parametrize("c", [0.2, -0.35])
def test_op_scaled_reference_gives_abs_c(kind, c):
    t_ref = np.array([0.1, 1.0, 10.0, 100.0, 1000.0])
    t_sim = np.geomspace(0.13, 870.0, 19)
    shape = SHAPES[kind]
    X_ref = log_linear_matrices(t_ref, shape, seed=7)
    X_sim = (1.0 + c) * log_linear_matrices(t_sim, shape, seed=7)
    assert op_deviation(t_sim, X_sim, t_ref, X_ref) == pytest.approx(abs(c), abs=TOL)


def test_op_hand_computed_example():
    t_ref = np.array([1.0, 100.0])
    X_ref = np.array([[[2.0, 0.0], [0.0, 2.0]],
                      [[4.0, 0.0], [0.0, 6.0]]])
    # at t = 10 (midpoint in ln t) the reference is [[3, 0], [0, 4]], norm 5
    t_sim = np.array([1.0, 10.0, 100.0])
    X_sim = np.array([[[2.0, 0.3], [0.4, 2.0]],             # ‖Δ‖ = 0.5, ‖ref‖ = 2√2
                      [[3.0, 1.0], [0.0, 4.0]],             # ‖Δ‖ = 1,   ‖ref‖ = 5
                      [[6.0, 0.0], [0.0, 9.0]]])            # X = 1.5 ref: 0.5
    expected = (0.5 / (2.0 * math.sqrt(2.0)) + 1.0 / 5.0 + 0.5) / 3.0
    assert op_deviation(t_sim, X_sim, t_ref, X_ref) == pytest.approx(expected, abs=TOL)


def test_op_hand_computed_scalar_and_vector():
    t = np.array([1.0, 2.0, 4.0])
    x_ref = np.array([2.0, -4.0, 5.0])
    x_sim = np.array([3.0, -3.0, 5.0])
    assert op_deviation(t, x_sim, t, x_ref) == pytest.approx((0.5 + 0.25 + 0.0) / 3.0, abs=TOL)
    v_ref = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
    v_sim = np.array([[3.0, 5.0], [1.0, 1.0], [0.0, 2.0]])
    assert op_deviation(t, v_sim, t, v_ref) == pytest.approx((0.2 + 1.0 + 0.0) / 3.0, abs=TOL)


def test_op_skips_points_with_zero_reference_norm():
    t = np.geomspace(0.1, 100.0, 6)
    X_ref = log_linear_matrices(t, (2, 2), seed=8)
    c = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    X_sim = X_ref * (1.0 + c)[:, None, None]
    X_ref[2] = 0.0
    X_sim[2] = 7.0                                          # would be infinite relative error
    X_ref[4] = 1e-14                                        # ‖·‖_F = 2e-14 < 1e-12
    X_sim[4] = 1.0
    expected = np.mean(c[[0, 1, 3, 5]])
    assert op_deviation(t, X_sim, t, X_ref) == pytest.approx(expected, abs=TOL)


def test_op_window_matches_eg_window():
    t_ref = np.array([1.0, 10.0, 100.0])
    t_sim = np.array([0.05, 0.5, 1.0, 3.0, 30.0, 100.0, 200.0])
    c = np.array([9.0, 9.0, 0.1, 0.2, 0.3, 0.4, 9.0])
    X_ref = log_linear_matrices(t_ref, (2, 2), seed=9)
    X_sim = log_linear_matrices(t_sim, (2, 2), seed=9) * (1.0 + c)[:, None, None]
    d = op_deviation(t_sim, X_sim, t_ref, X_ref)
    assert d == pytest.approx(np.mean(c[2:6]), abs=TOL)
    d = op_deviation(t_sim, X_sim, t_ref, X_ref, t_min=3.0, t_max=30.0)
    assert d == pytest.approx(0.25, abs=TOL)
    # default t_min = 0.1 with a reference that starts earlier
    t_ref2 = np.array([0.01, 1.0, 100.0])
    X_ref2 = log_linear_matrices(t_ref2, (2, 2), seed=9)
    d = op_deviation(t_sim, X_sim, t_ref2, X_ref2)
    assert d == pytest.approx(np.mean(np.abs(c[1:6])), abs=TOL)
    # fewer than two points: NaN
    assert math.isnan(op_deviation(t_sim, X_sim, t_ref, X_ref, t_min=3.0, t_max=10.0))


def test_op_drops_nonfinite_points_on_either_curve():
    t = np.geomspace(0.1, 100.0, 6)
    X_ref = log_linear_matrices(t, (2, 2), seed=10)
    c = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    X_sim = X_ref * (1.0 + c)[:, None, None]
    X_sim[1, 0, 1] = math.nan                               # one bad entry drops the point
    X_ref = X_ref.copy()
    X_ref[5, 1, 1] = math.inf                               # shrinks the reference's range
    d = op_deviation(t, X_sim, t, X_ref)
    assert d == pytest.approx(np.mean(c[[0, 2, 3, 4]]), abs=TOL)


def _op_seeds_case(shape, S=3):
    t_ref = np.geomspace(0.1, 100.0, 5)
    t_sim = np.geomspace(0.12, 150.0, 14)
    rng = np.random.default_rng(11)
    base = log_linear_matrices(t_sim, shape, seed=12)
    X_sim = base[None] * (1.0 + rng.normal(0.0, 0.2, size=(S, t_sim.size) + (1,) * len(shape)))
    X_sim[1, 2] = math.nan
    X_ref_shared = log_linear_matrices(t_ref, shape, seed=12)
    X_ref_seed = np.stack([log_linear_matrices(t_ref, shape, seed=12 + s) for s in range(S)])
    return t_sim, X_sim, t_ref, X_ref_shared, X_ref_seed


@pytest.mark.parametrize("kind", ["Q", "v", "scalar"])
def test_op_per_seed_shared_and_per_seed_reference(kind):
    shape = SHAPES[kind]
    t_sim, X_sim, t_ref, X_shared, X_seed = _op_seeds_case(shape)
    S = X_sim.shape[0]
    d_shared = op_deviation(t_sim, X_sim, t_ref, X_shared, per_seed=True)
    assert isinstance(d_shared, np.ndarray) and d_shared.shape == (S,)
    rows = [op_deviation(t_sim, X_sim[s], t_ref, X_shared) for s in range(S)]
    np.testing.assert_allclose(d_shared, rows, rtol=0, atol=TOL)
    assert np.isfinite(d_shared).all()

    d_seed = op_deviation(t_sim, X_sim, t_ref, X_seed, per_seed=True)
    assert d_seed.shape == (S,)
    rows = [op_deviation(t_sim, X_sim[s], t_ref, X_seed[s]) for s in range(S)]
    np.testing.assert_allclose(d_seed, rows, rtol=0, atol=TOL)
    # seed 0's reference equals the shared one, the others differ
    assert d_seed[0] == pytest.approx(d_shared[0], abs=TOL)
    assert np.all(np.abs(d_seed[1:] - d_shared[1:]) > 1e-3)


def test_op_per_seed_scaled_reference_per_seed():
    t = np.geomspace(0.1, 100.0, 8)
    S, K = 3, 2
    c = np.array([0.1, -0.25, 0.4])
    X_ref = np.stack([log_linear_matrices(t, (K, K), seed=20 + s) for s in range(S)])
    X_sim = X_ref * (1.0 + c)[:, None, None, None]
    np.testing.assert_allclose(op_deviation(t, X_sim, t, X_ref, per_seed=True), np.abs(c),
                               rtol=0, atol=TOL)


# --------------------------------------------------------------------------------------------
# aggregate
# --------------------------------------------------------------------------------------------

def test_aggregate_hand_computed():
    a = aggregate([1.0, 2.0, 3.0, 4.0])
    assert isinstance(a, Aggregate)
    assert a.n_valid == 4
    assert a.mean == pytest.approx(2.5, abs=TOL)
    # std(ddof=1) = √(5/3), s.e.m. = √(5/3)/2
    assert a.sem == pytest.approx(math.sqrt(5.0 / 3.0) / 2.0, abs=TOL)


def test_aggregate_uses_finite_values_only():
    d = np.array([0.3, math.nan, 0.5, math.inf, 0.9, -math.inf, 0.4])
    a = aggregate(d)
    fin = np.array([0.3, 0.5, 0.9, 0.4])
    assert a.n_valid == 4
    assert a.mean == pytest.approx(fin.mean(), abs=TOL)
    assert a.sem == pytest.approx(fin.std(ddof=1) / 2.0, abs=TOL)
    # ddof=1, not 0
    assert abs(a.sem - fin.std(ddof=0) / 2.0) > 1e-3


def test_aggregate_sem_nan_below_two_valid():
    one = aggregate([math.nan, 0.7, math.nan])
    assert one.n_valid == 1
    assert one.mean == pytest.approx(0.7, abs=TOL)
    assert math.isnan(one.sem)
    none = aggregate([math.nan, math.inf])
    assert none.n_valid == 0
    assert math.isnan(none.sem)
    two = aggregate([1.0, 3.0])
    assert two.n_valid == 2 and two.sem == pytest.approx(1.0, abs=TOL)


# --------------------------------------------------------------------------------------------
# universality_verdict
# --------------------------------------------------------------------------------------------

# c + k·[3, −1, −1, −1] has mean c and s.e.m. exactly k (std(ddof=1) = 2k, n = 4); with k = 3
# and 4 the combined s.e.m. is exactly 5 and the threshold exactly 10.
PATTERN = np.array([3.0, -1.0, -1.0, -1.0])


def cell_floor(shift):
    cell = 110.0 + shift + 3.0 * PATTERN
    floor = 100.0 + 4.0 * PATTERN
    return cell, floor


@pytest.mark.parametrize("shift, verdict", [
    (0.0, "matches"),                     # exactly on the threshold: ≤ matches
    (-2.0 ** -30, "matches"),
    (2.0 ** -30, "deviates"),
    (2.0, "deviates"),                    # 12 ≤ 2·(3 + 4) = 14: a sum of s.e.m.s would match
    (-9.0, "matches"),
])
def test_verdict_threshold_both_sides(shift, verdict):
    cell, floor = cell_floor(shift)
    v = universality_verdict(cell, floor)
    assert isinstance(v, Verdict)
    assert v.cell.sem == 3.0 and v.floor.sem == 4.0          # construction is exact
    assert v.cell.mean - v.floor.mean == 10.0 + shift
    assert v.verdict == verdict


def test_verdict_cell_below_floor_matches():
    # one-sided: a cell far below its floor with tiny s.e.m.s still matches
    cell = np.array([0.010, 0.011, 0.012, 0.010, 0.011])
    floor = np.array([0.50, 0.51, 0.52, 0.50, 0.51])
    assert universality_verdict(cell, floor).verdict == "matches"


def test_verdict_clear_deviation_and_clear_match():
    floor = np.array([0.10, 0.12, 0.11, 0.09, 0.13])
    assert universality_verdict(floor + 1.0, floor).verdict == "deviates"
    assert universality_verdict(floor + 0.001, floor[::-1]).verdict == "matches"


def test_verdict_uses_unpaired_combined_sem_not_paired_z():
    # the cell sits a constant 0.05 above the floor seed by seed (paired z huge), but the
    # seed-to-seed spread is large: the unpaired rule says "matches"
    floor = np.array([0.1, 0.5, 0.9, 1.3, 1.7])
    cell = floor + 0.05 + np.array([0.0, 1e-3, -1e-3, 2e-3, -2e-3])
    v = universality_verdict(cell, floor)
    assert v.verdict == "matches"
    assert v.paired_z > 20.0


@pytest.mark.parametrize("cell, floor", [
    ([0.5, math.nan, math.nan, math.nan], [0.1, 0.2, 0.3, 0.4]),
    ([0.1, 0.2, 0.3, 0.4], [math.nan, 0.2, math.inf, math.nan]),
    ([0.5], [0.1, 0.2]),
    ([math.nan, math.nan], [math.nan, math.nan]),
    ([5.0, 5.1, math.nan], [math.nan, math.nan, 0.1]),       # would "deviate" if determined
])
def test_verdict_undetermined_below_two_valid_seeds(cell, floor):
    assert universality_verdict(cell, floor).verdict == "undetermined"


def test_verdict_ignores_nonfinite_seeds_in_aggregates():
    cell = np.array([0.3, math.nan, 0.5, 0.4])
    floor = np.array([0.2, 0.25, math.nan, math.inf])
    v = universality_verdict(cell, floor)
    assert v.cell.n_valid == 3 and v.floor.n_valid == 2
    assert v.cell.mean == pytest.approx(0.4, abs=TOL)
    assert v.floor.mean == pytest.approx(0.225, abs=TOL)
    thr = 2.0 * math.hypot(v.cell.sem, v.floor.sem)
    expected = "matches" if v.cell.mean - v.floor.mean <= thr else "deviates"
    assert v.verdict == expected == "deviates"


def test_paired_difference_over_seeds_valid_in_both():
    cell = np.array([0.3, 0.5, math.nan, 0.9, 0.4, 0.7])
    floor = np.array([0.1, math.nan, 0.2, 0.4, 0.35, 0.3])
    diff = np.array([0.2, 0.5, 0.05, 0.4])                  # seeds 0, 3, 4, 5
    v = universality_verdict(cell, floor)
    mean = diff.mean()
    sem = diff.std(ddof=1) / 2.0
    assert v.paired_mean == pytest.approx(mean, abs=TOL)
    assert v.paired_sem == pytest.approx(sem, abs=TOL)
    assert v.paired_z == pytest.approx(mean / sem, rel=1e-12)
    # not the difference of the separate means (those use seeds 1 and 2 too)
    assert abs(v.paired_mean - (v.cell.mean - v.floor.mean)) > 1e-3


def test_paired_difference_nan_with_fewer_than_two_common_seeds():
    cell = np.array([0.3, math.nan, 0.5, 0.4])
    floor = np.array([math.nan, 0.2, 0.1, math.nan])        # only seed 2 valid in both
    v = universality_verdict(cell, floor)
    assert v.paired_mean == pytest.approx(0.4, abs=TOL)
    assert math.isnan(v.paired_sem)
    assert math.isnan(v.paired_z)


def test_unsorted_times_are_refused():
    with pytest.raises(ValueError, match="sorted"):
        eg_deviation([3.0, 30.0], [1.0, 1.0], [100.0, 10.0, 1.0], [1.0, 2.0, 4.0])


# --------------------------------------------------------------------------------------------
# z, one-sided p (§6.1)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shift", [-12.0, 0.0, 1.0, 9.0])
def test_verdict_z_and_one_sided_p(shift):
    # cell s.e.m. 3, floor s.e.m. 4: combined exactly 5; d̄_cell − d̄_floor = 10 + shift
    cell, floor = cell_floor(shift)
    v = universality_verdict(cell, floor)
    assert v.combined_sem == 5.0
    assert v.z == pytest.approx((10.0 + shift) / 5.0, rel=1e-15)
    assert v.p_one_sided == pytest.approx(norm.sf(v.z), rel=1e-12)
    assert v.p_one_sided == pytest.approx(0.5 * math.erfc(v.z / math.sqrt(2.0)), rel=1e-15)
    assert (v.verdict == "matches") == (v.z <= 2.0)


def test_z_and_p_are_nan_without_a_combined_sem():
    v = universality_verdict([0.25, 0.25, 0.25], [0.125, 0.125])  # both s.e.m. exactly 0
    assert v.combined_sem == 0.0 and math.isnan(v.z) and math.isnan(v.p_one_sided)
    u = universality_verdict([0.2], [0.1, 0.3])                   # undetermined: s.e.m. NaN
    assert u.verdict == "undetermined" and math.isnan(u.z) and math.isnan(u.p_one_sided)


# --------------------------------------------------------------------------------------------
# Holm's correction (§6.1)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("p, rejected", [
    # sorted 0.005 ≤ .05/4, 0.01 ≤ .05/3, then 0.03 > .05/2: stop
    ([0.01, 0.04, 0.03, 0.005], [True, False, False, True]),
    # step-down stop: 0.04 ≤ 0.05 would pass its own threshold, but 0.03 > 0.025 came first
    ([0.03, 0.04, 0.001], [False, False, True]),
    # every threshold met: all rejected, in input order
    ([0.02, 0.001, 0.011], [True, True, True]),
    # ties
    ([0.01, 0.01, 0.01], [True, True, True]),
    # thresholds are inclusive: 0.025 = 0.05/2, then 0.05 = 0.05/1
    ([0.05, 0.025], [True, True]),
    ([0.05000001, 0.025], [False, True]),
    # nothing to reject
    ([0.5, 0.2], [False, False]),
    ([], []),
])
def test_holm_known_examples(p, rejected):
    assert holm(p) == rejected


def test_holm_nan_p_values_sort_last_and_are_never_rejected():
    # NaN last: 0.01 ≤ .05/3 and 0.02 ≤ .05/2 are rejected; were NaN sorted first, the first
    # rank would fail and nothing would be rejected
    assert holm([math.nan, 0.01, 0.02]) == [False, True, True]
    assert holm([0.001, math.nan, 0.2]) == [True, False, False]
    assert holm([math.nan]) == [False]
    assert holm([math.nan, math.nan, 1e-9]) == [False, False, True]


def test_holm_level_and_the_single_cell_case():
    assert holm([0.04], level=0.01) == [False]
    assert holm([0.004, 0.004], level=0.01) == [True, True]
    # §6.1: for one cell Holm rejects at 1.645 < z ≤ 2, where the plain verdict matches
    cell, floor = cell_floor(-1.0)                     # z = 9/5 = 1.8
    v = universality_verdict(cell, floor)
    assert v.verdict == "matches" and v.z == pytest.approx(1.8)
    assert holm([v.p_one_sided]) == [True]
    assert holm(np.array([v.p_one_sided, 0.5])) == [False, False]   # 0.036 > 0.05/2


@pytest.mark.parametrize("v1, v2, expected", [
    ("matches", "matches", "gaussian"),
    ("deviates", "matches", "second_order"),
    ("deviates", "deviates", "higher_order"),
    ("matches", "deviates", "inconsistent"),
    ("undetermined", "matches", "undetermined"),
    ("deviates", "undetermined", "undetermined"),
    ("failed", "deviates", "undetermined"),
    ("", "", "undetermined"),
])
def test_the_three_way_class_of_docs_model_10_4(v1, v2, expected):
    from analysis.deviation import universality_class
    assert universality_class(v1, v2) == expected
