"""Parameter sweeps on Dask: GRID.toml → one run file per cell, its ODE, its floor and
reference runs, the deviations and the universality verdict in DIR/summary.csv (MODEL.md §6,
§8.1 `fastsgd sweep`).

Every task is a pure function of its configuration that writes its own files (under a temporary
name, renamed when complete), so a rerun skips finished work and a dead worker loses one task.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastsgd.config import ConfigError, SimConfig

GAUSSIAN_LATENT = {"m": 1, "alpha": 0.0, "weights": "uniform", "block_size": None,
                   "standardize": "none"}
ODE_DEFAULTS = {"dt": 0.01, "method": "euler"}
QUANTITIES = ("eg_mc", "eg", "Q", "R", "v")


class GridError(ConfigError):
    """An invalid GRID.toml; the message names the file, the table and the key."""


@dataclass(frozen=True)
class Job:
    """One simulation of the sweep: a cell, a floor or a reference run."""

    kind: str                 # "cell" | "floor" | "reference"
    config: SimConfig
    name: str

    def path(self, out: Path) -> Path:
        return out / "runs" / f"{self.name}.h5"


@dataclass(frozen=True)
class Cell:
    params: dict              # the grid values of this cell
    job: Job
    floor: Job
    reference: Job


def _config_name(kind: str, cfg: SimConfig) -> str:
    digest = hashlib.sha256(cfg.to_json().encode()).hexdigest()[:12]
    return f"{kind}-{digest}"


def _resolve(values: dict, where: str) -> SimConfig:
    """A cell's SimConfig from its GRID values, with the derived keys t_max (steps =
    rint(t_max·N)), delta (D = rint(δ·N)) and test_size_per_N (test_size = that·N)."""
    values = dict(values)
    N = values.get("N", 1000)
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
        values["steps"] = max(1, int(round(t_max * values.get("N", 1000))))
    if values.get("block_size") == "D":
        values["block_size"] = None
    try:
        return SimConfig.from_dict(values)
    except ConfigError as exc:
        raise GridError(f"{where}: {exc}") from None


def read_grid(path) -> tuple[list[Cell], dict]:
    """Parse and validate GRID.toml: [base] SimConfig fields, [grid] lists whose Cartesian
    product gives the cells, [ode] dt and method. Every cell is validated before anything runs."""
    path = Path(path)
    if not path.is_file():
        raise GridError(f"GRID: {path}: no such file")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise GridError(f"GRID: {path}: not valid TOML ({exc})") from None
    unknown = sorted(set(data) - {"base", "grid", "ode"})
    if unknown:
        raise GridError(f"GRID: {path}: unknown table(s) {unknown}; allowed: base, grid, ode")
    base = data.get("base", {})
    grid = data.get("grid", {})
    ode = {**ODE_DEFAULTS, **data.get("ode", {})}
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
        raise GridError(f"GRID: {path}: [ode] unknown key(s) {bad_ode}; allowed: dt, method")
    if not (isinstance(ode["dt"], (int, float)) and math.isfinite(ode["dt"]) and ode["dt"] > 0):
        raise GridError(f"GRID: {path}: [ode] dt must be a finite number > 0, got {ode['dt']!r}")
    if ode["method"] not in ("euler", "rk4"):
        raise GridError(f"GRID: {path}: [ode] method must be euler or rk4, "
                        f"got {ode['method']!r}")
    keys = list(grid)
    cells = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        params = dict(zip(keys, combo))
        where = f"GRID: {path}: cell {params}"
        cfg = _resolve({**base, **params}, where)
        floor_values = {**cfg.to_dict(), **GAUSSIAN_LATENT}
        floor = SimConfig.from_dict(floor_values)
        reference = floor.replace(sample_seed=cfg.sample_entropy + 1)
        cells.append(Cell(params=params, job=Job("cell", cfg, _config_name("cell", cfg)),
                          floor=Job("floor", floor, _config_name("floor", floor)),
                          reference=Job("reference", reference,
                                        _config_name("reference", reference))))
    return cells, ode


def _finished(path: Path, cfg: SimConfig) -> bool:
    """A run is finished when its file exists with every status in {ok, diverged}, an
    identical config, and its deviation sidecar."""
    import fastsgd
    if not path.exists() or not path.with_suffix(".json").exists():
        return False
    try:
        run = fastsgd.load(path)
    except fastsgd.RunFileError:
        return False
    return run.config == cfg and set(run.status) <= {"ok", "diverged"}


def run_job(config_json: str, path: str, ode: dict) -> dict:
    """Simulate one configuration into ``path`` (written as path.tmp, renamed when complete)
    and store, in path.json, each seed's deviations from its own ODE (where one applies).
    A pure function of its arguments; returns the sidecar's content."""
    import fastsgd
    from analysis.compare import TheoryUnavailable, deviations, integrate_run, ode_curves

    cfg = SimConfig.from_json(config_json)
    path = Path(path)
    sidecar = path.with_suffix(".json")
    if _finished(path, cfg):
        return json.loads(sidecar.read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    run = fastsgd.simulate(cfg, out=tmp, overwrite=True, threads=1)
    result = {"config": cfg.to_json(), "status": run.status, "ode": None}
    try:
        d = deviations(run, ode_curves(run, integrate_run(run, dt=ode["dt"],
                                                          method=ode["method"])))
        result["ode"] = {q: [None if not np.isfinite(x) else float(x) for x in d[q]]
                         for q in QUANTITIES}
    except (TheoryUnavailable, NotImplementedError):
        pass
    os.replace(tmp, path)
    sidecar.write_text(json.dumps(result))
    return result


def reference_deviations(run_path: Path, reference_path: Path) -> dict:
    """Per-seed deviations of a run from its Gaussian reference run (reference mode)."""
    import fastsgd
    from analysis.compare import deviations, reference_curves
    run = fastsgd.load(run_path)
    d = deviations(run, reference_curves(run, fastsgd.load(reference_path)))
    return {q: d[q] for q in QUANTITIES}


def _aggregate_row(prefix: str, values) -> dict:
    from analysis.deviation import aggregate
    agg = aggregate(np.array([np.nan if x is None else x for x in values], dtype=float))
    return {f"{prefix}_mean": agg.mean, f"{prefix}_sem": agg.sem}


def _holm(p_values: list[float], alpha: float = 0.05) -> list[bool]:
    """Holm's step-down procedure: which hypotheses are rejected at family level alpha."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    rejected = [False] * len(p_values)
    for rank, i in enumerate(order):
        if not p_values[i] <= alpha / (len(p_values) - rank):
            break
        rejected[i] = True
    return rejected


def summarise(cells: list[Cell], out: Path, results: dict, failures: dict) -> list[dict]:
    """One row per cell (MODEL.md §8.1 summary.csv): deviations from the ODE and from the
    Gaussian reference run, the floor's, the verdict (ODE mode where an ODE applies, else
    reference mode), the order-parameter deviations, the paired difference and Holm's verdict."""
    from analysis.deviation import universality_verdict
    rows = []
    for cell in cells:
        row = dict(cell.params)
        cfg = cell.job.config
        row.update({"N": cfg.N, "D": cfg.D, "seeds": cfg.seeds})
        failed = [failures[j.name] for j in (cell.job, cell.floor, cell.reference)
                  if j.name in failures]
        if failed:
            row.update({"verdict": "failed", "error": " ".join(failed[0].split())})
            rows.append(row)
            continue
        own, floor = results[cell.job.name], results[cell.floor.name]
        ref_cell = reference_deviations(cell.job.path(out), cell.reference.path(out))
        ref_floor = reference_deviations(cell.floor.path(out), cell.reference.path(out))
        mode = "ode" if own["ode"] is not None and floor["ode"] is not None else "reference"
        row.update(_aggregate_row("eg_dev_ode", own["ode"]["eg_mc"] if own["ode"] else []))
        row.update(_aggregate_row("eg_dev_ref", ref_cell["eg_mc"]))
        row.update(_aggregate_row("floor_ode", floor["ode"]["eg_mc"] if floor["ode"] else []))
        row.update(_aggregate_row("floor_ref", ref_floor["eg_mc"]))
        d_cell = np.array(own["ode"]["eg_mc"] if mode == "ode" else ref_cell["eg_mc"],
                          dtype=float)
        d_floor = np.array(floor["ode"]["eg_mc"] if mode == "ode" else ref_floor["eg_mc"],
                           dtype=float)
        verdict = universality_verdict(d_cell, d_floor)
        row.update({"n_valid": verdict.cell.n_valid, "verdict_mode": mode,
                    "verdict": verdict.verdict})
        source = own["ode"] if mode == "ode" else ref_cell
        for q in ("Q", "R", "v"):
            row.update(_aggregate_row(f"op_dev_{q}", source[q]))
        row.update(_aggregate_row("eg_closed_dev_ode", own["ode"]["eg"] if own["ode"] else []))
        combined = math.hypot(verdict.cell.sem, verdict.floor.sem)
        z = (verdict.cell.mean - verdict.floor.mean) / combined if combined > 0 else math.nan
        row.update({"paired_mean": verdict.paired_mean, "paired_sem": verdict.paired_sem,
                    "paired_z": verdict.paired_z, "z": z,
                    "p_one_sided": 0.5 * math.erfc(z / math.sqrt(2)) if math.isfinite(z)
                    else math.nan, "error": ""})
        rows.append(row)
    testable = [i for i, r in enumerate(rows) if r["verdict"] in ("matches", "deviates")]
    rejected = _holm([rows[i]["p_one_sided"] for i in testable])
    for i, rej in zip(testable, rejected):
        rows[i]["verdict_holm"] = "deviates" if rej else "matches"
    return rows


def write_summary(rows: list[dict], path: Path) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v)
                             for k, v in row.items()})


def sweep(grid_path, out, *, scheduler: str | None = None, workers: int | None = None,
          echo=print, task=run_job) -> list[dict]:
    """Run every cell of GRID.toml (and its floor and reference runs) on Dask and write
    DIR/summary.csv; returns its rows. Finished runs (identical config, every status ok or
    diverged) are skipped; a task whose worker dies is retried once, then marked failed.
    ``task`` is the function run per simulation (default :func:`run_job`)."""
    import dask
    from dask.distributed import Client, LocalCluster, as_completed

    from fastsgd.simulation import usable_cores

    cells, ode = read_grid(grid_path)
    out = Path(out)
    if not out.parent.is_dir():
        raise GridError(f"out: the folder {str(out.parent)!r} does not exist")
    out.mkdir(exist_ok=True)
    jobs = {}
    for cell in cells:
        for job in (cell.job, cell.floor, cell.reference):
            jobs.setdefault(job.name, job)
    todo = [job for job in jobs.values() if not _finished(job.path(out), job.config)]
    results, failures = {}, {}
    for job in jobs.values():
        if job not in todo:
            results[job.name] = json.loads(job.path(out).with_suffix(".json").read_text())
    echo(f"{len(cells)} cell(s), {len(jobs)} run(s): {len(jobs) - len(todo)} finished, "
         f"{len(todo)} to do")
    if todo:
        single_thread = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
                         "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        # allowed-failures = 1: a task whose worker dies twice is failed, not retried forever.
        # worker-saturation = 1: a one-thread worker holds only the task it runs, so a worker's
        # death counts against that task alone, never against one queued behind it.
        with dask.config.set({"distributed.scheduler.allowed-failures": 1,
                              "distributed.scheduler.worker-saturation": 1.0}):
            if scheduler:
                client, cluster = Client(scheduler), None
            else:
                n = workers or usable_cores()
                cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                       dashboard_address=None, env=single_thread)
                client = Client(cluster)
            try:
                futures = {client.submit(task, job.config.to_json(), str(job.path(out)),
                                         ode, key=f"fastsgd-{job.name}", pure=False): job
                           for job in todo}
                for done, future in enumerate(as_completed(futures), start=1):
                    job = futures[future]
                    try:
                        results[job.name] = future.result()
                        state = ",".join(sorted(set(results[job.name]["status"])))
                    except Exception as exc:  # a killed worker, or an error in the task
                        failures[job.name] = f"{type(exc).__name__}: {exc}"
                        state = "FAILED"
                    echo(f"[{done}/{len(todo)}] {job.kind} {job.name}: {state}")
            finally:
                client.close()
                if cluster is not None:
                    cluster.close()
    rows = summarise(cells, out, results, failures)
    write_summary(rows, out / "summary.csv")
    echo(f"wrote {out / 'summary.csv'}")
    return rows
