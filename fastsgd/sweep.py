"""Parameter sweeps on Dask: GRID.toml → one run file per cell, its ODE, its floor and
reference runs (and, on request, its matched-Gaussian floor and reference), the deviations, the
universality verdicts and the three-way class in DIR/summary.csv (docs/model.md §6, §8.1
`fastsgd sweep`, §8.5, §10.4).

Every task is a pure function of its configuration that writes its own files (under a temporary
name, renamed when complete), so a rerun skips finished work and a dead worker loses one task.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import tomllib
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from distributed import WorkerPlugin

from analysis.deviation import Aggregate, aggregate, holm, universality_class
from analysis.ode import METHODS
from fastsgd.config import (DEFAULTS, ConfigError, SimConfig, canonical, matched_twin,
                            standard_normal_twin)
from fastsgd.latent_data import absolute_location
from fastsgd.summary import write_summary
from fastsgd.theory import DEFAULT_METHOD, Comparison

#: dt = None: each theory's default step for the method (docs/model.md §5.5, §10.5).
ODE_DEFAULTS = {"dt": None, "method": DEFAULT_METHOD, "theory": "hmm"}
#: The sidecar key of each theory's per-seed deviations (docs/model.md §10.5).
SIDECAR_KEYS = {"hmm": "ode", "moments": "moments"}

COMPARE_DEFAULTS = {"matched": False}
#: Fields every summary row carries (from [base] when the grid does not vary them).
MAP_FIELDS = ("m", "alpha", "standardize", "block_size", "means", "teacher")
#: Entropy offset of a cell's reference run: sample_seed = the cell's data entropy + 1 (§6).
REFERENCE_SAMPLE_OFFSET = 1


class GridError(ConfigError):
    """An invalid GRID.toml; the message names the file, the table and the key."""

    def __init__(self, message: str, parameter: str = "GRID") -> None:
        super().__init__(parameter, "a valid GRID.toml (docs/model.md §8.5)", message=message)


@dataclass(frozen=True)
class Job:
    """One simulation of the sweep: a cell, a floor or a reference run (N(0, I) or matched).

    A job is its configuration in canonical form (the law it samples, docs/model.md §10.4);
    ``kind`` is the role of the first cell that asked for it, and names its file."""

    kind: str                 # "cell" | "floor" | "reference" | "matched-floor" | ...
    config: SimConfig
    name: str

    @property
    def digest(self) -> str:
        return self.name.rsplit("-", 1)[1]

    def path(self, out: Path) -> Path:
        """DIR/runs/<name>.h5, or a file of the same law under another role's name (made by an
        earlier sweep whose cells claimed the run in another order)."""
        own = out / "runs" / f"{self.name}.h5"
        if own.exists():
            return own
        others = sorted((out / "runs").glob(f"*-{self.digest}.h5"))
        return others[0] if others else own


@dataclass(frozen=True)
class Cell:
    params: dict              # the grid values of this cell
    config: SimConfig         # its configuration as given (the job holds its canonical form)
    job: Job
    floor: Job                # N(0, I) floor and reference (§10.4)
    reference: Job
    matched_floor: Job | None = None        # with [compare] matched = true
    matched_reference: Job | None = None

    @property
    def jobs(self) -> tuple[Job, ...]:
        return tuple(j for j in (self.job, self.floor, self.reference, self.matched_floor,
                                 self.matched_reference) if j is not None)


def _digest(cfg: SimConfig) -> str:
    return hashlib.sha256(cfg.to_json().encode()).hexdigest()[:12]


class _Jobs:
    """Jobs by the law they sample: asking twice for one canonical config gives one job."""

    def __init__(self) -> None:
        self.by_digest: dict[str, Job] = {}

    def get(self, kind: str, cfg: SimConfig) -> Job:
        cfg = canonical(cfg)
        digest = _digest(cfg)
        return self.by_digest.setdefault(digest, Job(kind, cfg, f"{kind}-{digest}"))


def _resolve(values: dict, where: str) -> SimConfig:
    """A cell's SimConfig from its GRID values, with the derived keys t_max (steps =
    rint(t_max·N)), delta (D = rint(δ·N)) and test_size_per_N (test_size = that·N)."""
    values = dict(values)
    N = values.get("N", DEFAULTS["N"])
    for key, target in (("delta", "D"), ("test_size_per_N", "test_size")):
        if key in values:
            factor = values.pop(key)
            if target in values:
                raise GridError(f"{where}: give {target} or {key}, not both")
            if isinstance(factor, bool) or not isinstance(factor, (int, float)) \
                    or not math.isfinite(factor) or factor <= 0 or not isinstance(N, int):
                raise GridError(f"{where}: {key} must be a finite number > 0 (and N an "
                                f"integer), got {factor!r}")
            values[target] = max(1, int(round(factor * N)))
    if "t_max" in values:
        if "steps" in values:
            raise GridError(f"{where}: give steps or t_max, not both")
        t_max = values.pop("t_max")
        if isinstance(t_max, bool) or not isinstance(t_max, (int, float)) \
                or not math.isfinite(t_max) or t_max <= 0:
            raise GridError(f"{where}: t_max must be a finite number > 0, got {t_max!r}")
        values["steps"] = max(1, int(round(t_max * N)))
    if values.get("block_size") == "D":
        values["block_size"] = None
    try:
        return SimConfig.from_dict(values)
    except ConfigError as exc:
        raise GridError(f"{where}: {exc}") from None


def read_grid(path) -> tuple[list[Cell], dict]:
    """Parse and validate GRID.toml: [base] SimConfig fields, [grid] lists whose Cartesian
    product gives the cells, [ode] dt and method, [compare] matched. Every cell is validated
    before anything runs."""
    path = Path(path)
    if not path.is_file():
        raise GridError(f"GRID: {path}: no such file")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise GridError(f"GRID: {path}: not valid TOML ({exc})") from None
    unknown = sorted(set(data) - {"base", "grid", "ode", "compare"})
    if unknown:
        raise GridError(f"GRID: {path}: unknown table(s) {unknown}; allowed: base, grid, ode, "
                        "compare")
    base = data.get("base", {})
    grid = data.get("grid", {})
    ode = {**ODE_DEFAULTS, **data.get("ode", {})}
    compare = _compare_table(data.get("compare", {}), path)
    if not isinstance(grid, dict) or not grid:
        raise GridError(f"GRID: {path}: [grid] must give at least one list of values")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise GridError(f"GRID: {path}: [grid] {key} must be a non-empty list, "
                            f"got {values!r}")
    for key in set(grid) & set(base):
        raise GridError(f"GRID: {path}: {key} is in both [base] and [grid]")
    bad_ode = sorted(set(ode) - set(ODE_DEFAULTS))
    if bad_ode:
        raise GridError(f"GRID: {path}: [ode] unknown key(s) {bad_ode}; allowed: dt, method, "
                        "theory")
    ode["theory"] = _theories(ode["theory"], path)
    if ode["dt"] is not None and not (isinstance(ode["dt"], (int, float))
                                      and math.isfinite(ode["dt"]) and ode["dt"] > 0):
        raise GridError(f"GRID: {path}: [ode] dt must be a finite number > 0, got {ode['dt']!r}")
    if not isinstance(ode["method"], str) or ode["method"] not in METHODS:
        raise GridError(f"GRID: {path}: [ode] method must be one of {', '.join(METHODS)}, "
                        f"got {ode['method']!r}")
    keys = list(grid)
    configs = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        params = dict(zip(keys, combo))
        values = {**base, **params}
        if isinstance(values.get("latent_data"), str):   # relative to the grid's folder
            values["latent_data"] = absolute_location(values["latent_data"], path.parent)
        configs.append((params, _resolve(values, f"GRID: {path}: cell {params}")))
    return _cells(configs, compare["matched"], path), ode


def _theories(value, path) -> list[str]:
    """[ode] theory: "hmm", "moments" or a list of both (docs/model.md §10.5)."""
    from fastsgd.theory import THEORIES
    values = [value] if isinstance(value, str) else value
    if not (isinstance(values, list) and values and len(set(values)) == len(values)
            and all(isinstance(v, str) and v in THEORIES for v in values)):
        raise GridError(f"GRID: {path}: [ode] theory must be one of {', '.join(THEORIES)} or "
                        f"a list of them, got {value!r}")
    return values


def _compare_table(table, path) -> dict:
    """[compare]: matched = true adds each cell's matched floor and reference (§10.4)."""
    if not isinstance(table, dict):
        raise GridError(f"GRID: {path}: [compare] must be a table")
    bad = sorted(set(table) - set(COMPARE_DEFAULTS))
    if bad:
        raise GridError(f"GRID: {path}: [compare] unknown key(s) {bad}; allowed: matched")
    compare = {**COMPARE_DEFAULTS, **table}
    if not isinstance(compare["matched"], bool):
        raise GridError(f"GRID: {path}: [compare] matched must be true or false, got "
                        f"{compare['matched']!r}")
    return compare


def _cells(configs: list, matched: bool, path) -> list[Cell]:
    """Cells with their jobs, claimed in the order cells, floors, references, matched floors,
    matched references, so that a run needed in two roles is one job named by its first."""
    jobs = _Jobs()
    own = [jobs.get("cell", cfg) for _, cfg in configs]
    floors = [jobs.get("floor", standard_normal_twin(cfg)) for _, cfg in configs]
    references = [jobs.get("reference", standard_normal_twin(cfg, sample_seed=_ref_seed(cfg)))
                  for _, cfg in configs]
    matched_floors = matched_references = [None] * len(configs)
    if matched:
        try:
            matched_floors = [jobs.get("matched-floor", matched_twin(cfg)) for _, cfg in configs]
            matched_references = [jobs.get("matched-reference", matched_twin(
                cfg, sample_seed=_ref_seed(cfg))) for _, cfg in configs]
        except ConfigError as exc:
            raise GridError(f"GRID: {path}: a cell's matched twin is invalid: {exc}") from None
    return [Cell(params, cfg, *five) for (params, cfg), *five in zip(
        configs, own, floors, references, matched_floors, matched_references)]


def _ref_seed(cfg: SimConfig) -> int:
    return cfg.sample_entropy + REFERENCE_SAMPLE_OFFSET


def _finished_run(path: Path, cfg: SimConfig):
    """The run file, loaded, if it exists with every status in {ok, diverged} and an identical
    config; else None."""
    import fastsgd
    if not path.exists():
        return None
    try:
        run = fastsgd.load(path)
    except fastsgd.RunFileError:
        return None
    return run if run.config == cfg and set(run.status) <= {"ok", "diverged"} else None


def _sidecar(path: Path) -> dict | None:
    try:
        return json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None


def _finished(path: Path, cfg: SimConfig, theories=("hmm",)) -> bool:
    """A run is finished when its file is (:func:`_finished_run`) and its sidecar holds the
    deviations of every theory asked for."""
    sidecar = _sidecar(path)
    return (sidecar is not None and all(SIDECAR_KEYS[t] in sidecar for t in theories)
            and _finished_run(path, cfg) is not None)


def _theory_deviations(run, theory: str, ode: dict) -> dict:
    """One theory's sidecar entries for a run: per-seed deviations (None where the theory does
    not apply, with the reason) and, for the moments theory, its Monte Carlo error."""
    from fastsgd.theory import TheoryUnavailable, deviations, theory_for
    key = SIDECAR_KEYS[theory]
    try:
        curves = theory_for(run, dt=ode.get("dt"), method=ode["method"], theory=theory)
    except TheoryUnavailable as exc:
        return {key: None, f"{key}_unavailable": str(exc)}
    d = deviations(run, curves)
    entry = {key: {q: [None if not np.isfinite(x) else float(x) for x in d[q]] for q in d}}
    if theory == "moments":
        entry["moments_error"] = [None if np.isnan(x) else float(x)   # inf: a half failed
                                  for x in curves.moments_error]
    return entry


def run_job(config_json: str, path: str, ode: dict) -> dict:
    """Simulate one configuration into ``path`` (written under a temporary name, renamed when
    it ends: docs/model.md §10.6)
    and store, in path.json, each seed's deviations from its own ODE of each theory of
    ``ode["theory"]`` (where one applies). A run already made is not made again; a theory
    missing from its sidecar is added. A pure function of its arguments; returns the sidecar's
    content."""
    import fastsgd

    cfg = SimConfig.from_json(config_json)
    path = Path(path)
    theories = ode.get("theory", ["hmm"])
    if _finished(path, cfg, theories):
        return _sidecar(path)
    result = _sidecar(path) or {}
    run = _finished_run(path, cfg)     # a finished run file is kept even if a theory fails
    if run is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # a temporary name, renamed; the file as loaded back
        run = fastsgd.simulate(cfg, out=path, overwrite=True, threads=1)
        result = {}
    result.update({"config": cfg.to_json(), "status": run.status})
    for theory in theories:
        if SIDECAR_KEYS[theory] not in result:
            result.update(_theory_deviations(run, theory, ode))
    result.setdefault("ode", None)
    sidecar = path.with_suffix(".json")
    tmp_sidecar = sidecar.with_name(sidecar.name + ".tmp")
    tmp_sidecar.write_text(json.dumps(result))
    os.replace(tmp_sidecar, sidecar)
    return result


def _per_seed(values) -> np.ndarray:
    """Per-seed deviations from a sidecar (None for NaN)."""
    return np.array([np.nan if x is None else x for x in values], dtype=float)


def _sidecar_deviations(result: dict, key: str = "ode") -> dict[str, np.ndarray] | None:
    """A run's per-seed deviations from its own ODE of one theory (sidecar key "ode" for the
    HMM ODE, "moments"), from its sidecar (None: no ODE of that theory applies)."""
    if result.get(key) is None:
        return None
    return {q: _per_seed(values) for q, values in result[key].items()}


def _table(deviations: dict | None, quantity: str) -> Aggregate | None:
    return None if deviations is None else aggregate(deviations[quantity])


def _load(job: Job, out: Path):
    import fastsgd
    return fastsgd.load(job.path(out))


def _reference_comparison(run, out: Path, floor: Job, reference: Job) -> Comparison:
    """The cell and a floor against a reference run, paired by seed index (reference mode):
    the N(0, I) or the matched ones (docs/model.md §6, §10.4)."""
    from fastsgd.theory import compare_run, theory_for
    theory = theory_for(run, reference=_load(reference, out))
    return compare_run(run, theory, floor=_load(floor, out))


def _columns(prefix: str, agg: Aggregate | None) -> dict:
    agg = agg or aggregate([])
    return {f"{prefix}_mean": agg.mean, f"{prefix}_sem": agg.sem}


def _field_shape_columns(run) -> dict:
    """Excess kurtosis of the teacher's fields, averaged over seeds: unit 0 (the aligned one,
    §10.3) and the unit farthest from 0, signed (a bimodal field is negative); and of the
    student's fields at the last record, averaged over seeds and units. NaN for files made
    before the field statistics."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        teacher = np.nanmean(run.empirical["nu_kurtosis"], axis=0)
        extreme = teacher[np.nanargmax(np.abs(teacher))] if np.isfinite(teacher).any() \
            else np.nan
        return {"nu0_kurtosis": float(teacher[0]), "nu_kurtosis_extreme": float(extreme),
                "lambda_kurtosis_end": float(np.nanmean(run.empirical["lambda_kurtosis"][:, -1]))}


def _matched_columns(run, cell: Cell, out: Path) -> dict:
    """d against the matched reference, its floor and verdict_matched (docs/model.md §10.4)."""
    matched = _reference_comparison(run, out, cell.matched_floor, cell.matched_reference)
    verdict = matched.verdict
    return {**_columns("eg_dev_matched", matched.table["eg_mc"]),
            **_columns("floor_matched", matched.floor_table["eg_mc"]),
            "verdict_matched": verdict.verdict, "z_matched": verdict.z,
            "p_matched": verdict.p_one_sided}


def _moments_columns(cell: Cell, results: dict) -> dict:
    """The cell and its N(0, I) floor against their own moments theory (docs/model.md §10.5):
    eg_dev_moments, floor_moments, verdict_moments (§6's rule), its z and p, the largest
    Monte Carlo error of the theory's ε_g over the cell's seeds, why it is unavailable, and
    (matched comparison) the matched floor against its own moments theory."""
    own = _sidecar_deviations(results[cell.job.name], "moments")
    floor = _sidecar_deviations(results[cell.floor.name], "moments")
    errors = _per_seed(results[cell.job.name].get("moments_error") or [])
    row = {**_columns("eg_dev_moments", _table(own, "eg_mc")),
           **_columns("floor_moments", _table(floor, "eg_mc")),
           "moments_error": float(np.nanmax(errors)) if (~np.isnan(errors)).any() else math.nan,
           "moments_unavailable": results[cell.job.name].get("moments_unavailable", "")}
    if cell.matched_floor is not None:   # does the theory predict the matched twin itself?
        twin = _sidecar_deviations(results[cell.matched_floor.name], "moments")
        row.update(_columns("matched_dev_moments", _table(twin, "eg_mc")))
    if own is None or floor is None:
        return {**row, "verdict_moments": "unavailable"}
    verdict = Comparison(cell_deviations=own, floor_deviations=floor).verdict
    row.update({"verdict_moments": verdict.verdict, "z_moments": verdict.z,
                "p_moments": verdict.p_one_sided})
    error = row["moments_error"]
    if not math.isnan(error) and not error < row["floor_moments_mean"]:
        # the theory's own Monte Carlo error is not below the floor: no verdict (§10.5)
        row["verdict_moments"] = "undetermined"
        row["moments_unavailable"] = (f"Monte Carlo error {row['moments_error']:.3g} is not "
                                      f"below the floor {row['floor_moments_mean']:.3g}: raise "
                                      "moment_samples")
    return row


def _cell_row(cell: Cell, out: Path, results: dict) -> dict:
    """The summary columns of one finished cell (docs/model.md §8.1 summary.csv, §10.4)."""
    own = _sidecar_deviations(results[cell.job.name])
    floor = _sidecar_deviations(results[cell.floor.name])
    run = _load(cell.job, out)
    by_reference = _reference_comparison(run, out, cell.floor, cell.reference)
    if own is not None and floor is not None:
        mode, chosen = "ode", Comparison(cell_deviations=own, floor_deviations=floor)
    else:
        mode, chosen = "reference", by_reference
    verdict = chosen.verdict
    row = {**_columns("eg_dev_ode", _table(own, "eg_mc")),
           **_columns("eg_dev_ref", by_reference.table["eg_mc"]),
           **_columns("floor_ode", _table(floor, "eg_mc")),
           **_columns("floor_ref", by_reference.floor_table["eg_mc"]),
           "n_valid": verdict.cell.n_valid, "verdict_mode": mode, "verdict": verdict.verdict}
    for q in ("Q", "R", "v"):
        row.update(_columns(f"op_dev_{q}", chosen.table[q]))
    row.update(_columns("eg_closed_dev_ode", _table(own, "eg")))
    row.update({"paired_mean": verdict.paired_mean, "paired_sem": verdict.paired_sem,
                "paired_z": verdict.paired_z, "z": verdict.z,
                "p_one_sided": verdict.p_one_sided,
                "verdict_ref": by_reference.verdict.verdict,
                "p_ref": by_reference.verdict.p_one_sided})
    if cell.matched_floor is not None:
        row.update(_matched_columns(run, cell, out))
        row["universality"] = universality_class(row["verdict_ref"], row["verdict_matched"])
    if "moments" in results[cell.job.name]:
        row.update(_moments_columns(cell, results))
    row.update(_field_shape_columns(run))
    row["error"] = ""
    return row


def _holm_column(rows: list[dict], verdict: str, p: str) -> None:
    """Holm's correction over the cells with a testable ``verdict`` column (§6)."""
    testable = [i for i, r in enumerate(rows) if r.get(verdict) in ("matches", "deviates")]
    rejected = holm([rows[i][p] for i in testable])
    for i, rej in zip(testable, rejected):
        rows[i][f"{verdict}_holm"] = "deviates" if rej else "matches"


def summarise(cells: list[Cell], out: Path, results: dict, failures: dict) -> list[dict]:
    """One row per cell (docs/model.md §8.1 summary.csv, §10.4): deviations from the ODE and
    from the N(0, I) reference run, the floors', the verdict (ODE mode where an ODE applies,
    else reference mode), the order-parameter deviations, the paired difference, the
    reference-mode verdict, with [compare] matched the matched comparison and the three-way
    class, the field statistics, and Holm's correction of each verdict column."""
    rows = []
    for cell in cells:
        cfg = cell.config
        row = {**cell.params, "N": cfg.N, "D": cfg.D, "seeds": cfg.seeds}
        for name in MAP_FIELDS:   # the maps' axes and panels, wherever the grid set them
            row.setdefault(name, "D" if name == "block_size" and cfg.block_size == cfg.D
                           else getattr(cfg, name))
        failed = [failures[j.name] for j in cell.jobs if j.name in failures]
        if failed:
            row.update({"verdict": "failed", "error": " ".join(failed[0].split())})
        else:
            row.update(_cell_row(cell, out, results))
        rows.append(row)
    _holm_column(rows, "verdict", "p_one_sided")
    _holm_column(rows, "verdict_ref", "p_ref")
    _holm_column(rows, "verdict_moments", "p_moments")
    if any(cell.matched_floor is not None for cell in cells):
        _holm_column(rows, "verdict_matched", "p_matched")
        for row in rows:
            if "universality" in row:
                row["universality_holm"] = universality_class(row.get("verdict_ref_holm", ""),
                                                              row.get("verdict_matched_holm", ""))
    return rows


#: Environment of a worker, set by the local cluster's nannies and by :class:`OneThreadPerTask`:
#: one thread for OpenMP and BLAS. Not NUMBA_NUM_THREADS: a nanny sets its ``env`` after the
#: worker process has imported its main module (``fastsgd.cli`` under ``fastsgd sweep``, hence
#: Numba), and Numba refuses, at the next compilation, a NUMBA_NUM_THREADS that differs from the
#: one its threads were launched with: every kernel a worker had to compile failed. Each task
#: limits Numba to one thread itself (:func:`limit_threads`).
WORKER_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
#: allowed-failures = 1: a task whose worker dies twice is failed, not retried forever.
#: worker-saturation = 1: a one-thread worker holds only the task it runs, so a worker's death
#: counts against that task alone, never against one queued behind it. Dask queues only a task
#: group of more than twice as many tasks as worker threads: a sweep's tasks are one group
#: (:func:`_submit_and_collect`), and a sweep of fewer tasks is handed to the workers at once.
DASK_SETTINGS = {"distributed.scheduler.allowed-failures": 1,
                 "distributed.scheduler.worker-saturation": 1.0}
#: A local cluster's nannies spawn their workers (Dask's default), never fork them: the sweep's
#: process has threads (Dask's event loop, the echo of results), and a worker forked while one
#: of them held a lock, e.g. stdout's while a line was printed, hangs at its first write (seen:
#: a forked worker blocked on stdout's buffer lock for good). Forking would start two workers in
#: 0.2 s instead of 1.8 s.
LOCAL_CLUSTER_SETTINGS = {"distributed.worker.multiprocessing-method": "spawn"}


def sweep(grid_path, out, *, scheduler: str | None = None, workers: int | None = None,
          echo=print, task=run_job) -> list[dict]:
    """Run every cell of GRID.toml (and its floor and reference runs) on Dask and write
    DIR/summary.csv; returns its rows. Finished runs (identical config, every status ok or
    diverged) are skipped; a task whose worker dies is retried once, then marked failed.
    ``task`` is the function run per simulation (default :func:`run_job`)."""
    cells, ode = read_grid(grid_path)
    out = Path(out)
    if not out.parent.is_dir():
        raise GridError(f"out: the folder {str(out.parent)!r} does not exist", "out")
    out.mkdir(exist_ok=True)
    jobs = {}
    for cell in cells:
        for job in cell.jobs:
            jobs.setdefault(job.name, job)
    _check_data_files(jobs.values(), out)
    todo = [job for job in jobs.values()
            if not _finished(job.path(out), job.config, ode["theory"])]
    results = {job.name: json.loads(job.path(out).with_suffix(".json").read_text())
               for job in jobs.values() if job not in todo}
    echo(f"{len(cells)} cell(s), {len(jobs)} run(s): {len(jobs) - len(todo)} finished, "
         f"{len(todo)} to do")
    failures: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastsgd-close") as closer:
        closing = None
        if todo:   # the local cluster stops while the summary is made
            closing = _run_on_dask(todo, out, ode, task, results, failures,
                                   scheduler=scheduler, workers=workers, echo=echo,
                                   closer=closer)
            _remove_killed_attempts(todo, out, failures, echo)
        rows = summarise(cells, out, results, failures)
        write_summary(rows, out / "summary.csv")     # and summary_long.csv
        echo(f"wrote {out / 'summary.csv'}")
        if closing is not None:
            closing.result()
    return rows


def _check_data_files(jobs, out: Path) -> None:
    """Refuse to resume a sweep whose finished runs were made from a data file (docs/model.md
    §11.1) whose content has changed since: a run of the folder read the same location with
    another content hash. (New runs would get new names; mixing them with the old ones in one
    folder would compare two data sets.)"""
    hashes = {job.config.latent_data: job.config.latent_data_sha256 for job in jobs
              if job.config.latent_data is not None}
    if not hashes:
        return
    for sidecar in sorted((out / "runs").glob("*.json")):
        try:
            config = json.loads(json.loads(sidecar.read_text())["config"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        location, sha = config.get("latent_data"), config.get("latent_data_sha256")
        if location in hashes and sha != hashes[location]:
            raise GridError(f"GRID: latent_data {location} has changed since the run "
                            f"{sidecar.with_suffix('.h5')} was made from it (content hash "
                            f"{hashes[location][:12]}…, the run's {str(sha)[:12]}…): refusing "
                            "to resume; restore the file or use another --out", "latent_data")


def _remove_killed_attempts(todo: list[Job], out: Path, failures: dict, echo) -> None:
    """Remove the temporary files (NAME.h5.tmp-<pid>-<random>, docs/model.md §10.6) that an
    attempt of one of this sweep's tasks left when its worker was killed, once the task's run
    file is complete: the retry wrote it under a name of its own."""
    stale = [p for job in todo if job.name not in failures
             for p in job.path(out).parent.glob(f"{job.path(out).name}.tmp-*")]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        echo(f"removed {len(stale)} temporary file(s) of attempts whose worker died")


def limit_threads() -> None:
    """One thread for Numba (this thread's parallel regions) and for every BLAS and OpenMP
    library loaded in this process. Not a context manager on purpose: a worker with several
    threads runs several tasks at once, and one task restoring the limits it found would lift
    them under the others (BLAS thread counts are process-wide)."""
    import numba
    from threadpoolctl import threadpool_limits

    numba.set_num_threads(1)      # thread-local; first (it may load an OpenMP runtime)
    threadpool_limits(limits=1)   # BLAS: the process; OpenMP: this thread


def one_thread_per_task(task, *args):
    """Run ``task(*args)`` in a Dask worker's thread under :func:`limit_threads`: a worker of
    an external cluster is started without the local cluster's WORKER_ENV, perhaps with
    ``--nthreads`` > 1 (each task then has its own thread, and one Numba and BLAS thread)."""
    limit_threads()
    return task(*args)


class OneThreadPerTask(WorkerPlugin):
    """Registered by the sweep's client on every worker, present and future (one that joins
    or is restarted later too): WORKER_ENV in the worker's environment, read by a BLAS or
    OpenMP library loaded later and by any child process, and one thread for the BLAS
    libraries loaded now. Each task calls :func:`limit_threads` in its own thread
    (:func:`one_thread_per_task`): Numba's thread count and OpenMP's are per thread, so this
    plugin (run in the worker's main thread) cannot set them for the tasks."""

    name = "fastsgd-one-thread-per-task"   # registering it again replaces it

    def setup(self, worker) -> None:
        from threadpoolctl import threadpool_limits
        os.environ.update(WORKER_ENV)
        threadpool_limits(limits=1, user_api="blas")


def _connect(scheduler: str):
    """A client of the external cluster at ``scheduler``; an unreachable address is a one-line
    usage error (GridError), not a traceback."""
    from dask.distributed import Client
    try:
        return Client(scheduler)
    except (OSError, ValueError) as exc:
        raise GridError(f"--scheduler: cannot connect to the Dask scheduler at {scheduler!r} "
                        f"({type(exc).__name__}: {exc})", "scheduler") from None


def _run_on_dask(todo: list[Job], out: Path, ode: dict, task, results: dict, failures: dict,
                 *, scheduler: str | None, workers: int | None, echo, closer=None):
    """Run ``task`` for every job on a local cluster or the one at ``scheduler``; each job's
    sidecar goes into ``results``, each failure's message into ``failures``.

    Every task runs with one Numba and one BLAS thread (:class:`OneThreadPerTask`,
    :func:`one_thread_per_task`) and is given absolute paths (a worker of an external cluster
    has its own working directory; DIR must be on a filesystem the workers share). The longest
    jobs go first (:func:`job_cost`), so that the last to end are short: every task is in one
    task group (keys ("fastsgd", name)), which the scheduler queues by priority when it has more
    than twice as many tasks as worker threads (worker-saturation); a smaller group is handed
    to the workers at once, each taking its own by priority. On an external
    cluster the retries of a task whose worker died are the scheduler's own setting
    (distributed.scheduler.allowed-failures; DASK_SETTINGS applies to the local cluster).

    With an executor ``closer`` the local cluster is closed in it (its workers take ~0.5 s to
    stop) and the future of that is returned, so that the caller summarises meanwhile; else the
    cluster is closed before the return (None)."""
    import dask
    from dask.distributed import Client

    closing = None
    with dask.config.set({**DASK_SETTINGS, **LOCAL_CLUSTER_SETTINGS}):   # for restarts too
        if scheduler:
            client, cluster = _connect(scheduler), None
        else:
            cluster = _local_cluster(workers)
            client = Client(cluster)
        try:
            client.register_plugin(OneThreadPerTask())
            _submit_and_collect(client, todo, out, ode, task, results, failures, echo)
        finally:
            client.close()
            if cluster is not None and closer is not None:
                closing = closer.submit(cluster.close)
            elif cluster is not None:
                cluster.close()
    return closing


def _submit_and_collect(client, todo: list[Job], out: Path, ode: dict, task, results: dict,
                        failures: dict, echo) -> None:
    """Submit every job, the longest first, and collect each result or failure as it ends."""
    from dask.distributed import as_completed

    ordered = sorted(todo, key=job_cost, reverse=True)   # stable: ties in claim order
    futures = {client.submit(one_thread_per_task, task, job.config.to_json(),
                             str(job.path(out).absolute()), ode, key=("fastsgd", job.name),
                             pure=False, priority=len(ordered) - rank): job
               for rank, job in enumerate(ordered)}
    for done, future in enumerate(as_completed(futures), start=1):
        job = futures[future]
        try:
            results[job.name] = future.result()
            state = ",".join(sorted(set(results[job.name]["status"])))
        except Exception as exc:  # a killed worker, or an error in the task
            failures[job.name] = f"{type(exc).__name__}: {exc}"
            state = "FAILED"
        echo(f"[{done}/{len(todo)}] {job.kind} {job.name}: {state}")


def _local_cluster(workers: int | None):
    """A local cluster of ``workers`` (default: the usable cores) one-thread worker processes,
    spawned (LOCAL_CLUSTER_SETTINGS, in effect while the cluster runs: a nanny reads it
    whenever it starts a worker)."""
    from dask.distributed import LocalCluster

    from fastsgd.resources import usable_cores

    return LocalCluster(n_workers=workers or usable_cores(), threads_per_worker=1,
                        processes=True, dashboard_address=None, env=WORKER_ENV)


def job_cost(job: Job) -> int:
    """A job's work in multiply-adds of its input GEMMs, which dominate a run: every seed maps
    steps + test_size latents (D each) to N inputs and M teacher fields."""
    cfg = job.config
    return cfg.seeds * (cfg.steps + cfg.test_size) * cfg.D * (cfg.N + cfg.M)
