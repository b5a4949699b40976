"""Deviation between a simulation and its theory, aggregated over seeds, and the universality
verdict with its statistics: combined s.e.m., z, one-sided p and Holm's correction over cells
(docs/model.md §6)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["DEFAULT_T_MIN", "UNIVERSALITY_CLASSES", "Aggregate", "Verdict", "aggregate",
           "eg_deviation", "holm", "op_deviation", "universality_class", "universality_verdict"]

#: The deviation window's default start (docs/model.md §6).
DEFAULT_T_MIN = 0.1
#: Points whose reference order parameter has a Frobenius norm below this are skipped.
REFERENCE_NORM_MIN = 1e-12
#: A cell matches when d̄_cell − d̄_floor ≤ this many combined s.e.m.
MATCH_SEMS = 2.0
#: Family-wise error rate of Holm's correction.
HOLM_LEVEL = 0.05
#: The three-way class of docs/model.md §10.4, keyed by (v1, v2): the verdict against the
#: N(0, I) reference and the verdict against the matched-Gaussian reference.
UNIVERSALITY_CLASSES = {("matches", "matches"): "gaussian",
                        ("deviates", "matches"): "second_order",
                        ("deviates", "deviates"): "higher_order",
                        ("matches", "deviates"): "inconsistent"}


def _window(t, sim_ok, t_ref, ref_ok, t_min, t_max):
    """Indices of the simulation times used: t_min ≤ t ≤ t_max, t > 0, inside the reference's
    covered range, both curves finite there. t_max = None: the last time covered by both."""
    t = np.asarray(t, dtype=np.float64)
    t_ref = np.asarray(t_ref, dtype=np.float64)
    if np.any(np.diff(t_ref) < 0) or np.any(np.diff(t) < 0):
        raise ValueError("the simulation and reference times must be sorted")
    usable_ref = ref_ok & (t_ref > 0)
    if not usable_ref.any():
        return np.zeros(t.shape, dtype=bool)
    lo, hi = t_ref[usable_ref].min(), t_ref[usable_ref].max()
    covered = sim_ok & (t > 0)
    if t_max is None:
        t_max = min(hi, t[covered].max()) if covered.any() else hi
    return covered & (t >= t_min) & (t <= t_max) & (t >= lo) & (t <= hi)


def _interp_log_time(t_points, t_ref, values_ref):
    """Linear interpolation in ln t of values_ref (n_ref, ...) at t_points."""
    x = np.log(t_ref)
    flat = values_ref.reshape(values_ref.shape[0], -1)
    xi = np.log(t_points)
    out = np.column_stack([np.interp(xi, x, flat[:, j]) for j in range(flat.shape[1])])
    return out.reshape((len(t_points),) + values_ref.shape[1:])


def _eg_deviation_one(t, eg_sim, t_ref, eg_ref, t_min, t_max, eg_min) -> float:
    sim_ok = np.isfinite(eg_sim)
    ref_ok = np.isfinite(eg_ref)
    use = _window(t, sim_ok, t_ref, ref_ok, t_min, t_max)
    if use.sum() < 2:
        return math.nan
    keep = ref_ok & (t_ref > 0)
    log_ref = np.log(np.maximum(eg_ref[keep], eg_min))
    ell = np.interp(np.log(t[use]), np.log(t_ref[keep]), log_ref)
    return float(np.mean(np.abs(np.log(np.maximum(eg_sim[use], eg_min)) - ell)))


def eg_deviation(t, eg_sim, t_ref, eg_ref, *, t_min: float = DEFAULT_T_MIN,
                 t_max: float | None = None, eg_min: float = 1e-12):
    """Mean absolute log-ratio of two ε_g curves over the simulation's record times
    (docs/model.md §6).

    d = (1/n) Σ_i |ln ε_sim(t_i) − ℓ_ref(t_i)|, ℓ_ref = ln ε_ref interpolated linearly in ln t,
    both curves floored at ``eg_min``; points with t_min ≤ t_i ≤ t_max inside the reference's
    range, t_i > 0 and both values finite; NaN with fewer than 2 points.

    eg_sim (n,) gives a float; (S, n) gives an (S,) array, eg_ref then (n_ref,) or (S, n_ref).
    """
    t = np.asarray(t, dtype=np.float64)
    t_ref = np.asarray(t_ref, dtype=np.float64)
    eg_sim = np.asarray(eg_sim, dtype=np.float64)
    eg_ref = np.asarray(eg_ref, dtype=np.float64)
    if eg_sim.ndim == 1:
        return _eg_deviation_one(t, eg_sim, t_ref, eg_ref, t_min, t_max, eg_min)
    refs = eg_ref if eg_ref.ndim == 2 else np.broadcast_to(eg_ref, (eg_sim.shape[0],) + eg_ref.shape)
    return np.array([_eg_deviation_one(t, eg_sim[s], t_ref, refs[s], t_min, t_max, eg_min)
                     for s in range(eg_sim.shape[0])])


def _op_deviation_one(t, X_sim, t_ref, X_ref, t_min, t_max) -> float:
    axes = tuple(range(1, X_sim.ndim))
    sim_ok = np.all(np.isfinite(X_sim), axis=axes)
    ref_ok = np.all(np.isfinite(X_ref), axis=axes)
    use = _window(t, sim_ok, t_ref, ref_ok, t_min, t_max)
    if use.sum() < 2:
        return math.nan
    keep = ref_ok & (t_ref > 0)
    ref_at = _interp_log_time(t[use], t_ref[keep], X_ref[keep])
    sim_at = X_sim[use]
    norm_ref = np.sqrt(np.sum(ref_at ** 2, axis=axes))
    diff = np.sqrt(np.sum((sim_at - ref_at) ** 2, axis=axes))
    valid = norm_ref >= REFERENCE_NORM_MIN
    if valid.sum() < 2:
        return math.nan
    return float(np.mean(diff[valid] / norm_ref[valid]))


def op_deviation(t, X_sim, t_ref, X_ref, *, per_seed: bool = False, t_min: float = DEFAULT_T_MIN,
                 t_max: float | None = None):
    """Mean relative Frobenius distance ‖X_sim − X_ref‖_F/‖X_ref‖_F over the window of
    :func:`eg_deviation`, X_ref interpolated entrywise linearly in ln t; points with
    ‖X_ref‖_F < 1e-12 skipped (docs/model.md §6).

    X_sim is (n, ...) and gives a float, or with ``per_seed`` (S, n, ...) and gives an (S,)
    array; X_ref is (n_ref, ...), or (S, n_ref, ...) for one reference per seed.
    """
    t = np.asarray(t, dtype=np.float64)
    t_ref = np.asarray(t_ref, dtype=np.float64)
    X_sim = np.asarray(X_sim, dtype=np.float64)
    X_ref = np.asarray(X_ref, dtype=np.float64)

    def one(xs, xr):
        if xs.ndim == 1:
            xs, xr = xs[:, None], xr[:, None]
        return _op_deviation_one(t, xs, t_ref, xr, t_min, t_max)

    if not per_seed:
        return one(X_sim, X_ref)
    S = X_sim.shape[0]
    refs = X_ref if X_ref.ndim == X_sim.ndim else np.broadcast_to(X_ref, (S,) + X_ref.shape)
    return np.array([one(X_sim[s], refs[s]) for s in range(S)])


@dataclass(frozen=True)
class Aggregate:
    """Per-seed deviations d_s summarised: n_valid finite values, their mean and s.e.m."""

    values: np.ndarray
    n_valid: int
    mean: float
    sem: float

    def __str__(self) -> str:
        return f"{self.mean:.4g} ± {self.sem:.2g} (n = {self.n_valid})"


def aggregate(d) -> Aggregate:
    """n_valid = #finite d_s, mean, s.e.m. = std(ddof=1)/√n_valid (NaN if n_valid < 2)."""
    d = np.asarray(d, dtype=np.float64).reshape(-1)
    valid = d[np.isfinite(d)]
    n = int(valid.size)
    mean = float(valid.mean()) if n else math.nan
    sem = float(valid.std(ddof=1) / math.sqrt(n)) if n >= 2 else math.nan
    return Aggregate(values=d, n_valid=n, mean=mean, sem=sem)


@dataclass(frozen=True)
class Verdict:
    """The universality verdict of one cell against its Gaussian floor (docs/model.md §6).

    ``combined_sem`` = √(sem_cell² + sem_floor²), ``z`` = (d̄_cell − d̄_floor)/combined_sem and
    ``p_one_sided`` = P(Z > z) for a standard normal Z (the input of :func:`holm`); the paired
    difference d_s,cell − d_s,floor is over the seeds valid in both.
    """

    verdict: str              # "matches" | "deviates" | "undetermined"
    cell: Aggregate
    floor: Aggregate
    paired_mean: float
    paired_sem: float
    paired_z: float
    combined_sem: float
    z: float
    p_one_sided: float


def universality_verdict(d_cell, d_floor) -> Verdict:
    """"matches" if d̄_cell − d̄_floor ≤ 2√(sem_cell² + sem_floor²) (one-sided), "deviates"
    otherwise, "undetermined" with fewer than 2 valid seeds on either side; plus the paired
    difference d_s,cell − d_s,floor over seeds valid in both, z and the one-sided p."""
    cell, floor = aggregate(d_cell), aggregate(d_floor)
    combined = math.hypot(cell.sem, floor.sem)
    if cell.n_valid < 2 or floor.n_valid < 2:
        verdict = "undetermined"
    elif cell.mean - floor.mean <= MATCH_SEMS * combined:
        verdict = "matches"
    else:
        verdict = "deviates"
    a = np.asarray(d_cell, dtype=np.float64).reshape(-1)
    b = np.asarray(d_floor, dtype=np.float64).reshape(-1)
    paired = aggregate(a - b) if a.shape == b.shape else aggregate([])
    paired_z = paired.mean / paired.sem if paired.n_valid >= 2 and paired.sem > 0 else math.nan
    z = (cell.mean - floor.mean) / combined if combined > 0 else math.nan
    p = 0.5 * math.erfc(z / math.sqrt(2)) if math.isfinite(z) else math.nan
    return Verdict(verdict, cell, floor, paired.mean, paired.sem, paired_z, combined, z, p)


def universality_class(v1: str, v2: str) -> str:
    """The three-way class (docs/model.md §10.4) from v1, the verdict against the N(0, I)
    reference, and v2, the verdict against the matched Gaussian: gaussian, second_order,
    higher_order, inconsistent, or undetermined when either is not matches/deviates."""
    return UNIVERSALITY_CLASSES.get((v1, v2), "undetermined")


def holm(p_values, level: float = HOLM_LEVEL) -> list[bool]:
    """Holm's step-down procedure: which of the hypotheses (one p-value each) are rejected at
    family-wise level ``level``. A NaN p-value is never rejected (it sorts last)."""
    p_values = [float(p) for p in p_values]
    order = sorted(range(len(p_values)), key=lambda i: (math.isnan(p_values[i]), p_values[i]))
    rejected = [False] * len(p_values)
    for rank, i in enumerate(order):
        if not p_values[i] <= level / (len(p_values) - rank):
            break
        rejected[i] = True
    return rejected
