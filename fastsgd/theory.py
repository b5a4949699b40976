"""A run against its theory: the one API behind ``fastsgd ode``, ``fastsgd compare`` and the
sweep (docs/model.md §6, §8.1, §10.5).

A theory is one of three (:class:`TheoryCurves`, chosen by :func:`theory_for`): the ODE of every
seed integrated on the fly, an ODE file written by ``fastsgd ode``, or a reference run paired by
seed index. The ODE is the HMM ODE on the N(0, I) spectral state (theory "hmm", §5.2) or the
Gaussian-equivalent ODE on the run's own input moments (theory "moments", §10.5, with
:func:`moments_odes`). :func:`compare_run` gives a run's per-seed deviations from its theory and, with a
floor run, the floor's deviations from the same kind of theory and the universality verdict
(:class:`Comparison`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from analysis.activations import folding_coefficients
from analysis.deviation import (DEFAULT_T_MIN, Aggregate, Verdict, aggregate, eg_deviation,
                                op_deviation, universality_verdict)
from analysis.ode import (DEFAULT_METHOD, GaussianEquivalentState, Trajectory,
                          integrate_gaussian_equivalent, integrate_hmm)
from fastsgd.config import (ConfigError, input_mean_method, input_mean_vanishes,
                            latent_mean_vanishes)
from fastsgd.io import Output, OutputExistsError, Run, RunFileError

#: The input models the HMM ODE describes (docs/model.md §5.2, §7.5).
ODE_INPUT_MODELS = ("hmm", "equivalent_gaussian")
#: The quantities whose deviation is reported, in the order of the table, and the one the
#: verdict uses (the real error under the run's own latent law, docs/model.md §6).
QUANTITIES = ("eg_mc", "eg", "Q", "R", "v", "empirical/Q", "empirical/R")
VERDICT_QUANTITY = "eg_mc"
#: The theories an ODE can come from (docs/model.md §10.5), and the quantities compared with
#: each: the moments theory predicts the real fields, so /eg, /Q and /R (the N(0, I)
#: Gaussian-equivalent values) are not compared with it.
THEORIES = ("hmm", "moments")
THEORY_QUANTITIES = {"hmm": QUANTITIES,
                     "moments": ("eg_mc", "v", "empirical/Q", "empirical/R")}
#: ‖E x‖² below this counts as E x = 0 for an uncentred run (docs/model.md §10.5).
INPUT_MEAN_TOLERANCE = 1e-12


class TheoryUnavailable(ValueError):
    """The run's configuration has no Gaussian ODE (f with a ≠ 0, other inputs); the caller
    may compare with a Gaussian-latent reference run instead."""


def check_ode_applies(config) -> None:
    """Refuse, naming the option, what the HMM ODE cannot honour (docs/model.md §8.1)."""
    a = folding_coefficients(config.f)[0]
    if a != 0.0:
        raise TheoryUnavailable(
            f"f = {config.f} has a = E f(u) = {a:.4f} ≠ 0: no Gaussian ODE applies; compare "
            "with a Gaussian-latent reference run instead")
    if config.input_model not in ODE_INPUT_MODELS:
        raise TheoryUnavailable(f"input_model = {config.input_model}: no ODE applies")


@dataclass
class TheoryCurves:
    """Reference curves for each seed of a run: an ODE file or a reference run.

    Arrays have a leading seed axis matching the run's seed positions; ``valid`` marks seeds
    whose reference is usable (ODE status ok / reference seed not diverged).
    """

    kind: str               # "ode" or "reference"
    t: np.ndarray
    eg: np.ndarray          # (S, n): ODE ε_g, or the reference run's eg_mc
    eg_closed: np.ndarray   # (S, n): ODE ε_g, or the reference run's closed-form eg
    Q: np.ndarray
    R: np.ndarray
    v: np.ndarray
    valid: np.ndarray
    source: str
    dt: float | None = None        # the ODE's step and method, when it is an ODE
    method: str | None = None
    reference: Run | None = None   # the reference run, when it is one
    theory: str = "hmm"            # the ODE's theory (THEORIES); "hmm" for a reference run
    moments_error: np.ndarray | None = None   # (S,) Monte Carlo error on ε_g (moments)
    step_control: bool = False     # RK4 steps ≤ dt, chosen by error (moments: by stiffness)


def integrate_run(run, seed_positions=None, *, dt: float | None = None,
                  method: str = DEFAULT_METHOD, theory: str = "hmm") -> list[Trajectory]:
    """The ODE of each seed on the run's /t grid, with every dynamics option of the run's config
    (lr, δ = D/N, f, g, train_second_layer, sigma): the HMM ODE from its /initial_state, or the
    moments theory (:func:`moments_odes`); dt None is the method's own default (Euler
    DEFAULT_DT, RK4 error-controlled steps)."""
    if theory == "moments":
        return moments_odes(run, seed_positions, dt=dt, method=method).trajectories
    _check_theory(theory)
    cfg = run.config
    check_ode_applies(cfg)
    positions = range(len(run.status)) if seed_positions is None else seed_positions
    return [integrate_hmm(run.initial_state(i), lr=cfg.lr, delta=cfg.D / cfg.N, f=cfg.f,
                          g=cfg.g, train_second_layer=cfg.train_second_layer,
                          dt=dt, t_eval=run.t, method=method,
                          sigma=cfg.sigma)
            for i in positions]


def _check_theory(theory: str) -> None:
    if theory not in THEORIES:
        raise ValueError(f"theory must be one of {', '.join(THEORIES)}, got {theory!r}")


# ---------------------------------------------------------------------- the moments theory
@dataclass
class MomentsOdes:
    """The moments theory's ODE for some seeds of a run (docs/model.md §10.5).

    ``error[i]``: for Monte Carlo moments, max_t |ε_g(half 1) − ε_g(half 2)|/2, the estimated
    error of ε_g from the moments' sampling (NaN for exact moments); ``mean_fields[i]`` (n_t, K):
    the run's w_k·E x/√N per record (0 where E x = 0)."""

    trajectories: list[Trajectory]
    moments_method: str
    samples: int
    error: np.ndarray
    mean_fields: np.ndarray


#: Monte Carlo input moments need at least this many samples per input dimension (Ω is N × N).
MIN_MOMENT_SAMPLES_PER_N = 10


def check_moments_theory_applies(cfg) -> None:
    """Refuse, naming the option, what the moments theory cannot hold (docs/model.md §10.5)."""
    if cfg.input_model != "hmm":
        raise TheoryUnavailable(f"input_model = {cfg.input_model}: the moments theory is for "
                                "input_model = hmm")
    if not latent_mean_vanishes(cfg):
        remedy = ("population or whiten" if cfg.latent_data is not None
                  else "population, whiten, or sample with scalar means")
        raise TheoryUnavailable(
            f"the latent has {_latent_mean_text(cfg)} ≠ 0 (standardize = {cfg.standardize}), "
            f"which the moments theory cannot hold: use {remedy}")
    least = MIN_MOMENT_SAMPLES_PER_N * cfg.N
    if input_mean_method(cfg) == "monte_carlo" and cfg.moment_samples < least:
        raise TheoryUnavailable(f"moment_samples = {cfg.moment_samples}: Monte Carlo input "
                                f"moments need at least {least} (10·N)")


def _latent_mean_text(cfg) -> str:
    """‖E c‖ of the first seed where it is cheap to know exactly, else "E c"."""
    from fastsgd.matched import matched_law
    from fastsgd.config import config_data_law
    from fastsgd.problem import seed_draws
    if cfg.latent_data is not None:
        return f"‖E c‖ = {float(np.linalg.norm(config_data_law(cfg).mean)):.3g}"
    if cfg.standardize == "sample" and cfg.matched_method == "monte_carlo":
        return "E c"
    mixture = seed_draws(cfg, cfg.first_seed_index).mixture
    mean = matched_law(mixture, cfg.standardize, cfg.matched_method).mean
    return f"‖E c‖ = {float(np.linalg.norm(mean)):.3g}"


def _check_initial_weights(run, position, draws) -> None:
    cfg = run.config
    if not (np.allclose(draws.w @ draws.w.T / cfg.N, run.initial["W"][position], rtol=1e-12,
                        atol=1e-14) and np.allclose(draws.v, run.initial["v"][position],
                                                    rtol=1e-12, atol=1e-14)):
        raise RunFileError(f"{run.path}: its config does not reproduce its initial weights")


def _moments_state(draws, moments) -> GaussianEquivalentState:
    return GaussianEquivalentState.from_moments(moments.omega, moments.phi, draws.w,
                                                draws.teacher, moments.latent_covariance,
                                                draws.v, draws.A)


def _checked_mean_fields(run, position, moments) -> np.ndarray:
    """The run's mean fields per record; refuses an uncentred run whose E x is not 0."""
    cfg = run.config
    if cfg.center_inputs:
        return run.mean_fields[position]
    norm2 = float(moments.mean @ moments.mean)
    if moments.method == "exact" and norm2 > INPUT_MEAN_TOLERANCE or (
            moments.method != "exact" and not input_mean_vanishes(cfg)):
        raise TheoryUnavailable(
            f"the inputs have ‖E x‖² = {norm2:.3g} ≠ 0 ({moments.method}), a rank-one mode "
            "outside the moments theory: rerun with --center-inputs")
    return np.zeros((run.t.shape[0], cfg.K))


def moments_odes(run, seed_positions=None, *, dt: float | None = None,
                 method: str = DEFAULT_METHOD, stop=None) -> MomentsOdes:
    """The Gaussian-equivalent ODE on each seed's own input moments (docs/model.md §10.5), on
    the run's /t grid: exact moments where the latent is Gaussian per label, else Monte Carlo
    from (s,6,1) with ``moment_samples`` samples, each half integrated too for the error."""
    from fastsgd.problem import seed_moments

    cfg = run.config
    check_moments_theory_applies(cfg)
    positions = list(range(len(run.status)) if seed_positions is None else seed_positions)
    options = dict(lr=cfg.lr, g=cfg.g, train_second_layer=cfg.train_second_layer, dt=dt,
                   t_eval=run.t, method=method, sigma=cfg.sigma)
    trajectories, errors, fields, kind, samples = [], [], [], "exact", 0
    for i in positions:
        draws, moments = seed_moments(cfg, int(run.seed_index[i]), stop)
        _check_initial_weights(run, i, draws)
        fields.append(_checked_mean_fields(run, i, moments))
        trajectories.append(integrate_gaussian_equivalent(_moments_state(draws, moments),
                                                          **options))
        kind, samples = moments.method, moments.samples
        errors.append(math.nan if moments.halves is None else _half_error(
            draws, moments.halves, options))
    return MomentsOdes(trajectories, kind, samples, np.array(errors), np.stack(fields))


def _half_error(draws, halves, options) -> float:
    """max_t |ε_g(half 1) − ε_g(half 2)|/2: the Monte Carlo error of ε_g from the moments."""
    first, second = (integrate_gaussian_equivalent(_moments_state(draws, h), **options)
                     for h in halves)
    if first.status != "ok" or second.status != "ok":
        return math.inf   # a half's ODE failed: the error is not bounded (NaN means exact)
    return float(np.max(np.abs(first.eg - second.eg))) / 2


def write_ode_file(path, run, seed_positions, trajectories, *, dt: float, method: str,
                   overwrite: bool = False, theory: str = "hmm",
                   moments: MomentsOdes | None = None) -> Path:
    """ODE.h5: the run's root attributes plus ``ode`` (JSON: dt, method, source, theory,
    equations), /seed_index, /t, /Q, /R, /v, /eg, /T, /A, /t_failed, /status; the HMM ODE adds
    /W and /Sigma, the moments theory /mean_fields and /moments_error (docs/model.md §8.1,
    §10.5)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"out: the folder {str(path.parent)!r} does not exist")
    stack = lambda name: np.stack([getattr(tr, name) for tr in trajectories])  # noqa: E731
    settings = {"dt": dt, "method": method, "source": str(run.path), "theory": theory,
                "equations": "docs/model.md §5.2 (hmm)" if theory == "hmm" else
                "docs/model.md §10.5 (moments)",
                "step_control": bool(trajectories[0].step_control)}
    data = {"seed_index": run.seed_index[list(seed_positions)], "t": run.t,
            "Q": stack("Q"), "R": stack("R"), "v": stack("v"), "eg": stack("eg"),
            "T": stack("T"), "A": stack("A"),
            "t_failed": np.array([tr.t_failed for tr in trajectories]),
            "status": np.array([tr.status.encode("ascii") for tr in trajectories], dtype="S12")}
    _check_theory(theory)
    if theory == "hmm":
        data.update(W=stack("W"), Sigma=stack("Sigma"))
    elif moments is None:
        raise ValueError("write_ode_file: theory 'moments' needs the MomentsOdes (moments=)")
    else:
        settings.update(moments_method=moments.moments_method, moment_samples=moments.samples)
        data.update(mean_fields=moments.mean_fields, moments_error=moments.error)
    output = Output(path, overwrite=overwrite)     # docs/model.md §10.6
    fh = output.create()
    try:
        with fh:
            fh.attrs.update(run.attrs)
            fh.attrs["ode"] = json.dumps(settings)
            for name, value in data.items():
                fh.create_dataset(name, data=value, track_times=False)
    except BaseException:
        output.discard()
        raise
    return output.commit()


def load_ode_file(path, run) -> TheoryCurves:
    """Read an ODE.h5 made for ``run``: one row per seed of the run (matched by seed index)."""
    path = Path(path)
    try:
        fh = h5py.File(path, "r")
    except OSError as exc:
        raise RunFileError(f"{path}: not a readable HDF5 file ({exc})") from None
    with fh:
        if "ode" not in fh.attrs:
            raise RunFileError(f"{path}: not a fastsgd ODE file (no 'ode' attribute)")
        if fh.attrs.get("config") != run.attrs.get("config"):
            raise RunFileError(f"{path}: made for another run (its config differs from the one "
                               f"of {run.path})")
        settings = json.loads(fh.attrs["ode"])
        theory = settings.get("theory", "hmm")
        try:
            seed_index = fh["seed_index"][...]
            t = fh["t"][...]
            data = {name: fh[name][...] for name in ("Q", "R", "v", "eg")}
            status = [s.decode("ascii") for s in fh["status"][...]]
            error = fh["moments_error"][...] if theory == "moments" else None
        except KeyError as exc:
            raise RunFileError(f"{path}: damaged ODE file ({exc})") from None
    if t.shape != run.t.shape or not np.allclose(t, run.t):
        raise RunFileError(f"{path}: its time grid is not the one of {run.path}")
    rows = {int(s): i for i, s in enumerate(seed_index)}
    missing = [int(s) for s in run.seed_index if int(s) not in rows]
    if missing:
        raise RunFileError(f"{path}: no ODE for seed index(es) {missing} of {run.path}")
    order = [rows[int(s)] for s in run.seed_index]
    return TheoryCurves(kind="ode", t=t, eg=data["eg"][order], eg_closed=data["eg"][order],
                        Q=data["Q"][order], R=data["R"][order], v=data["v"][order],
                        valid=np.array([status[i] == "ok" for i in order]), source=str(path),
                        dt=float(settings["dt"]), method=str(settings["method"]), theory=theory,
                        moments_error=None if error is None else error[order],
                        step_control=bool(settings.get("step_control", False)))


def ode_curves(run, trajectories, *, theory: str = "hmm", moments_error=None) -> TheoryCurves:
    """Reference curves from trajectories integrated in memory (one per seed of the run)."""
    stack = lambda name: np.stack([getattr(tr, name) for tr in trajectories])  # noqa: E731
    first = trajectories[0]
    step_control = first.step_control
    step = "controlled steps ≤ " if step_control else ""
    return TheoryCurves(kind="ode", t=run.t, eg=stack("eg"), eg_closed=stack("eg"),
                        Q=stack("Q"), R=stack("R"), v=stack("v"),
                        valid=np.array([tr.status == "ok" for tr in trajectories]),
                        source=f"the {theory} ODE ({first.method}, dt = {step}{first.dt:g})",
                        dt=first.dt, method=first.method, theory=theory,
                        moments_error=moments_error, step_control=step_control)


def run_ode_curves(run, *, dt: float | None = None, method: str = DEFAULT_METHOD,
                   theory: str = "hmm") -> TheoryCurves:
    """Every seed's ODE of ``theory`` integrated now, as curves."""
    _check_theory(theory)
    if theory == "moments":
        odes = moments_odes(run, dt=dt, method=method)
        return ode_curves(run, odes.trajectories, theory=theory, moments_error=odes.error)
    return ode_curves(run, integrate_run(run, dt=dt, method=method))


def _check_same_data(run, other) -> None:
    """Refuse to compare runs made from two contents of data latents (docs/model.md §11.1)."""
    a, b = run.config.latent_data_sha256, other.config.latent_data_sha256
    if a is not None and b is not None and a != b:
        raise ValueError(f"{other.path} was made from other latent data than {run.path} "
                         f"(content hash {b[:12]}… against {a[:12]}…): refusing to compare "
                         "runs of two data sets")


def reference_curves(run, reference) -> TheoryCurves:
    """A reference run (e.g. the Gaussian-latent run, sample_seed = seed + 1), paired by seed
    index with ``run``."""
    _check_same_data(run, reference)
    rows = {int(s): i for i, s in enumerate(reference.seed_index)}
    missing = [int(s) for s in run.seed_index if int(s) not in rows]
    if missing:
        raise ValueError(f"reference {reference.path} lacks seed index(es) {missing}")
    if (reference.config.N, reference.config.D, reference.config.K, reference.config.M) != (
            run.config.N, run.config.D, run.config.K, run.config.M):
        raise ValueError(f"reference {reference.path} has other sizes (N, D, K, M) than "
                         f"{run.path}")
    order = [rows[int(s)] for s in run.seed_index]
    return TheoryCurves(kind="reference", t=reference.t, eg=reference.eg_mc[order],
                        eg_closed=reference.eg[order], Q=reference.Q[order],
                        R=reference.R[order], v=reference.v[order],
                        valid=np.array([reference.status[i] == "ok" for i in order]),
                        source=str(reference.path), reference=reference)


def theory_for(run, *, ode_file=None, reference: Run | None = None, dt: float | None = None,
               method: str = DEFAULT_METHOD, theory: str | None = None) -> TheoryCurves:
    """The theory a run is compared with: ``reference`` (a run paired by seed index), else
    ``ode_file`` (written by ``fastsgd ode`` for this run; its theory must be ``theory`` when
    given), else every seed's ODE of ``theory`` (default "hmm") integrated now with ``dt`` and
    ``method``. Raises TheoryUnavailable, RunFileError or ValueError."""
    if theory is not None:
        _check_theory(theory)
    if reference is not None:
        return reference_curves(run, reference)
    if ode_file is not None:
        curves = load_ode_file(ode_file, run)
        if theory is not None and curves.theory != theory:
            raise RunFileError(f"{ode_file}: made by the {curves.theory} theory, not {theory}")
        return curves
    return run_ode_curves(run, dt=dt, method=method, theory=theory or "hmm")


def same_theory_for(other, theory: TheoryCurves) -> TheoryCurves:
    """The same kind of theory for another run (a floor): the same reference run, or the
    other run's own ODE of the same theory with the same step and method."""
    if theory.kind == "reference":
        return reference_curves(other, theory.reference)
    return run_ode_curves(other, dt=None if theory.step_control else theory.dt,
                          method=theory.method, theory=theory.theory)


def deviations(run, theory: TheoryCurves, *, t_min: float = DEFAULT_T_MIN,
               t_max: float | None = None) -> dict[str, np.ndarray]:
    """Per-seed deviations d_s of every quantity (docs/model.md §6); NaN for a seed that diverged
    or whose reference is unusable."""
    usable = np.array([s != "diverged" for s in run.status]) & theory.valid
    window = dict(t_min=t_min, t_max=t_max)
    measured = {"eg": run.eg, "Q": run.Q, "R": run.R, "v": run.v,
                "empirical/Q": run.empirical["Q"], "empirical/R": run.empirical["R"]}
    predicted = {"eg": theory.eg_closed, "Q": theory.Q, "R": theory.R, "v": theory.v,
                 "empirical/Q": theory.Q, "empirical/R": theory.R}
    d = {}
    for name in THEORY_QUANTITIES[theory.theory]:
        if name == "eg_mc":
            d[name] = eg_deviation(run.t, run.eg_mc, theory.t, theory.eg, **window)
        elif name == "eg":
            d[name] = eg_deviation(run.t, run.eg, theory.t, theory.eg_closed, **window)
        else:
            d[name] = op_deviation(run.t, measured[name], theory.t, predicted[name],
                                   per_seed=True, **window)
    return {name: np.where(usable, value, np.nan) for name, value in d.items()}


def deviation_table(run, theory: TheoryCurves, **window) -> dict[str, Aggregate]:
    """Mean ± s.e.m. over seeds of every quantity's deviation."""
    return table_of(deviations(run, theory, **window))


def table_of(per_seed: dict[str, np.ndarray]) -> dict[str, Aggregate]:
    """Mean ± s.e.m. over seeds of each quantity's per-seed deviations."""
    return {name: aggregate(d) for name, d in per_seed.items()}


@dataclass(frozen=True)
class Comparison:
    """A run against its theory and, optionally, its floor against the same kind of theory.

    ``cell_deviations`` and ``floor_deviations`` hold per-seed deviations d_s of every quantity
    (NaN where a seed diverged or its theory failed); ``table`` and ``floor_table`` their
    mean ± s.e.m.;
    ``verdict`` the universality verdict of the ε_g deviation (eg_mc) against the floor
    (docs/model.md §6), None without a floor.
    """

    cell_deviations: dict[str, np.ndarray]
    floor_deviations: dict[str, np.ndarray] | None = None

    @property
    def table(self) -> dict[str, Aggregate]:
        return table_of(self.cell_deviations)

    @property
    def floor_table(self) -> dict[str, Aggregate] | None:
        return None if self.floor_deviations is None else table_of(self.floor_deviations)

    @property
    def verdict(self) -> Verdict | None:
        if self.floor_deviations is None:
            return None
        return universality_verdict(self.cell_deviations[VERDICT_QUANTITY],
                                    self.floor_deviations[VERDICT_QUANTITY])


def compare_run(run, theory: TheoryCurves, *, floor=None, floor_theory=None,
                t_min: float = DEFAULT_T_MIN, t_max: float | None = None) -> Comparison:
    """A run's deviations from ``theory`` and, with a ``floor`` run, the floor's deviations
    from ``floor_theory`` (default: the same kind of theory, :func:`same_theory_for`) and the
    verdict."""
    window = dict(t_min=t_min, t_max=t_max)
    d_floor = None
    if floor is not None:
        _check_same_data(run, floor)
        if (floor.config.N, floor.config.D) != (run.config.N, run.config.D):
            raise ConfigError("floor", f"a run with the (N, D) of {run.path}", str(floor.path),
                              message=f"floor {floor.path}: its (N, D) differ from those of "
                                      f"{run.path}")
        floor_theory = floor_theory or same_theory_for(floor, theory)
        d_floor = deviations(floor, floor_theory, **window)
    return Comparison(cell_deviations=deviations(run, theory, **window), floor_deviations=d_floor)


def format_table(table: dict[str, Aggregate], title: str) -> str:
    lines = [title, f"{'quantity':14s} {'mean':>10s} {'s.e.m.':>10s} {'n_valid':>8s}"]
    for name, agg in table.items():
        sem = "nan" if math.isnan(agg.sem) else f"{agg.sem:10.3g}"
        lines.append(f"{name:14s} {agg.mean:10.4g} {sem:>10s} {agg.n_valid:8d}")
    return "\n".join(lines)
