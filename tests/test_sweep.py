"""Sweeps (fastsgd/sweep.py; docs/model.md §6, §6.1, §8.1 `fastsgd sweep` and `fastsgd plot DIR`,
§8.5): `fastsgd sweep` on a local Dask cluster with 2 worker processes: a 2 × 2 grid of tiny runs
with shared floor and reference runs, resume after an interrupted sweep, a cell whose worker is
killed, bad GRID files (one line, exit 2), the derived keys, the example grids, ReLU cells in ODE
mode, and the heat maps of a sweep folder."""

from __future__ import annotations

import math
import os
import sys

import cloudpickle
import pytest

from analysis.deviation import universality_class
from fastsgd.cli import main
from fastsgd.config import SimConfig
from fastsgd.summary import read_summary
from fastsgd.sweep import GridError, read_grid, sweep

GRID = """
[base]
N = 48
D = 24
seeds = 3
t_max = 40
records = 15
test_size = 200

[grid]
m = [1, 3]
standardize = ["none", "whiten"]
alpha = [1.5]

[ode]
dt = 0.02
"""


def dying_task(config_json, path, ode):
    """Kills its worker process for the cells with m = 3 and standardize = whiten."""
    import json
    from fastsgd.sweep import run_job
    cfg = json.loads(config_json)
    if cfg["m"] == 3 and cfg["standardize"] == "whiten":
        os._exit(1)
    return run_job(config_json, path, ode)


def attempt_left_behind_task(config_json, path, ode):
    """Leaves the temporary file of an attempt killed earlier (a SIGKILLed worker's), then runs
    the task; an unrelated file with a like name is left too."""
    from pathlib import Path

    from fastsgd.sweep import run_job
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path + ".tmp-12345-deadbeef").write_bytes(b"a killed attempt's partial file")
    Path(path + ".notes").write_text("the user's")
    return run_job(config_json, path, ode)


cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def grid_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("grid") / "grid.toml"
    path.write_text(GRID)
    return path


def test_sweep_runs_every_cell_and_resumes(grid_file, tmp_path):
    out = tmp_path / "sweep"
    lines = []
    rows = sweep(grid_file, out, workers=2, echo=lines.append)
    assert len(rows) == 4
    assert "4 cell(s), 6 run(s): 0 finished, 6 to do" in lines[0]
    summary = read_summary(out / "summary.csv")
    assert [(r["m"], r["standardize"]) for r in summary] == [
        ("1", "none"), ("1", "whiten"), ("3", "none"), ("3", "whiten")]
    for r in summary:
        assert r["verdict_mode"] == "ode" and r["verdict"] in ("matches", "deviates")
        assert r["N"] == "48" and r["seeds"] == "3" and int(r["n_valid"]) == 3
        for column in ("eg_dev_ode_mean", "eg_dev_ref_mean", "floor_ode_mean", "floor_ref_mean",
                       "op_dev_Q_mean", "op_dev_R_mean", "op_dev_v_mean"):
            assert float(r[column]) > 0
    # the cells share one floor and one reference run: t_max gave steps = 40·N
    runs = sorted(p.name for p in (out / "runs").glob("*.h5"))
    assert len(runs) == 6 and not list((out / "runs").glob("*.tmp*"))
    import fastsgd
    assert fastsgd.load(out / "runs" / runs[0]).config.steps == 40 * 48

    # an interrupted sweep: one run lost its file, another left a temporary file behind
    cell = next(p for p in (out / "runs").glob("cell-*.h5"))
    cell.rename(cell.with_name(cell.name + ".tmp"))
    before = {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.h5")}
    lines.clear()
    sweep(grid_file, out, workers=2, echo=lines.append)
    assert "6 run(s): 5 finished, 1 to do" in lines[0]
    after = {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.h5")}
    assert all(after[name] == stamp for name, stamp in before.items())
    assert read_summary(out / "summary.csv") == summary

    # a run of the same law under another role's name (another grid's claim order) is reused
    floor = next(p for p in (out / "runs").glob("floor-*.h5"))
    digest = floor.stem.split("-", 1)[1]
    for suffix in (".h5", ".json"):
        floor.with_suffix(suffix).rename(out / "runs" / f"cell-{digest}{suffix}")
    lines.clear()
    sweep(grid_file, out, workers=2, echo=lines.append)
    assert "6 run(s): 6 finished, 0 to do" in lines[0]
    assert read_summary(out / "summary.csv") == summary


def test_a_killed_worker_fails_only_its_cell(grid_file, tmp_path):
    out = tmp_path / "dying"
    rows = sweep(grid_file, out, workers=2, echo=lambda line: None, task=dying_task)
    verdicts = {(r["m"], r["standardize"]): r["verdict"] for r in rows}
    assert verdicts[(3, "whiten")] == "failed"
    assert all(v in ("matches", "deviates") for k, v in verdicts.items() if k != (3, "whiten"))
    failed = [r for r in rows if r["verdict"] == "failed"][0]
    assert "Killed" in failed["error"] or "worker" in failed["error"].lower()


COMPILING_SWEEP = """
import fastsgd.cli   # the main module of `fastsgd sweep`: Numba is imported before the nanny's env
import sys
from pathlib import Path


def compiling_task(config_json, path, ode):
    import numba
    kernel = numba.njit(lambda x: x + 1.0)   # a kernel no cache holds: compiled in the worker
    return {"status": ["ok"], "value": kernel(1.0)}


if __name__ == "__main__":
    from fastsgd.sweep import _run_on_dask, read_grid
    cells, ode = read_grid(sys.argv[1])
    results, failures = {}, {}
    _run_on_dask([cells[0].job], Path(sys.argv[2]), ode, compiling_task, results, failures,
                 scheduler=None, workers=1, echo=print)
    print("failures:", failures)
    sys.exit(1 if failures or list(results.values())[0]["value"] != 2.0 else 0)
"""


def test_a_local_worker_compiles_kernels_under_the_cli_main_module(grid_file, tmp_path):
    """A worker of `fastsgd sweep`'s local cluster that must compile a kernel (an empty cache,
    an edited source) compiles it: the nanny's env sets no NUMBA_NUM_THREADS after the worker
    imported Numba with its main module (before the fix every such task failed with "Cannot set
    NUMBA_NUM_THREADS to a different value once the threads have been launched")."""
    import subprocess
    script = tmp_path / "compiling_sweep.py"
    script.write_text(COMPILING_SWEEP)
    done = subprocess.run([sys.executable, str(script), str(grid_file), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "failures: {}" in done.stdout


def fork_probe_task(config_json, path, ode):
    """What a worker inherited from the sweep's process, and the thread counts it runs with."""
    import numba
    from threadpoolctl import threadpool_info
    return {"status": ["ok"], "probe": getattr(sys, "_fastsgd_fork_probe", None),
            "numba": numba.get_num_threads(),
            "blas": sorted({p["num_threads"] for p in threadpool_info()
                            if p["user_api"] == "blas"})}


def test_local_workers_are_spawned_and_run_one_thread(grid_file, tmp_path):
    """The local cluster's workers are spawned, also under a Dask configuration that asks for
    fork (a worker forked while a thread of the sweep's process held stdout's lock hangs for
    good), a worker killed mid-task is replaced, and every task runs with one Numba and one
    BLAS thread."""
    import dask

    from fastsgd.sweep import _run_on_dask
    cells, ode = read_grid(grid_file)
    jobs = list({job.name: job for cell in cells for job in cell.jobs}.values())
    sys._fastsgd_fork_probe = os.getpid()     # a forked worker would inherit it
    try:
        with dask.config.set({"distributed.worker.multiprocessing-method": "fork"}):
            results, failures = {}, {}
            _run_on_dask(jobs, tmp_path / "sweep", ode, fork_probe_task, results, failures,
                         scheduler=None, workers=2, echo=lambda line: None)
            dying, dead = {}, {}
            _run_on_dask(jobs, tmp_path / "dying", ode, dying_task, dying, dead,
                         scheduler=None, workers=2, echo=lambda line: None)
    finally:
        del sys._fastsgd_fork_probe
    assert not failures and len(results) == len(jobs) == 6
    assert all(r["probe"] is None and r["numba"] == 1 and r["blas"] in ([], [1])
               for r in results.values()), results
    assert len(dead) == 1 and len(dying) == 5   # the killed cell alone; its worker was replaced


def started_task(config_json, path, ode):
    """When it started; it lasts 0.1 s, so that every task is submitted before the second."""
    import time
    started = time.perf_counter_ns()
    time.sleep(0.1)
    return {"status": ["ok"], "started": started}


def test_the_longest_jobs_run_first(tmp_path):
    """A worker takes the jobs in decreasing cost (seeds × (steps + test_size) × D × (N + M)),
    ties in the order the cells claimed them, whatever the grid's order."""
    from fastsgd.sweep import _run_on_dask, job_cost
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID.replace("t_max = 40\n", "").replace("alpha = [1.5]",
                                                             "alpha = [1.5]\nt_max = [10, 40]"))
    cells, ode = read_grid(grid)
    jobs = list({job.name: job for cell in cells for job in cell.jobs}.values())
    costs = [job_cost(job) for job in jobs]
    assert costs != sorted(costs, reverse=True)     # claimed t_max = 10 first, then 40
    results, failures = {}, {}
    _run_on_dask(jobs, tmp_path / "sweep", ode, started_task, results, failures,
                 scheduler=None, workers=1, echo=lambda line: None)
    ran = sorted(jobs, key=lambda job: results[job.name]["started"])
    assert ran == sorted(jobs, key=job_cost, reverse=True)
    assert [job_cost(job) for job in ran] == sorted(map(job_cost, jobs), reverse=True)


def test_temporaries_of_killed_attempts_are_removed_once_their_run_is_complete(grid_file,
                                                                               tmp_path):
    out = tmp_path / "leftovers"
    lines = []
    sweep(grid_file, out, workers=2, echo=lines.append, task=attempt_left_behind_task)
    runs = out / "runs"
    assert not list(runs.glob("*.tmp*")) and len(list(runs.glob("*.h5"))) == 6
    assert len(list(runs.glob("*.notes"))) == 6          # only the temporaries are removed
    assert "removed 6 temporary file(s)" in "\n".join(lines)


@pytest.mark.parametrize("text, fragment", [
    ("[grid]\nm = []\n", "non-empty list"),
    ("[base]\nN = 0\n[grid]\nm = [1]\n", "N must be"),
    ("[grid]\nalpha = [-1.0]\n", "alpha must be"),
    ("[grid]\nm = [2]\nblock_size = [7]\n", "block_size must be a divisor"),
    ("[grid]\nm = [1]\n[ode]\ndt = 0\n", "dt must be"),
    ("[grid]\nm = [1]\n[ode]\nmethod = 'rk45'\n", "method must be"),
    ("[grid]\nm = [1]\n[ode]\nmethod = ['rk4']\n", "method must be"),
    ("[grid]\nm = [1]\n[extra]\nx = 1\n", "unknown table"),
    ("[grid]\nm = [1]\nbogus = [1]\n", "unknown configuration field"),
    ("[base]\nm = 2\n[grid]\nm = [1]\n", "both [base] and [grid]"),
    ("[base]\nsteps = 10\nt_max = 3\n[grid]\nm = [1]\n", "steps or t_max"),
    ("[grid\nm = [1]\n", "not valid TOML"),
])
def test_bad_grid_files_are_refused_with_one_line(text, fragment, tmp_path, capsys):
    grid = tmp_path / "bad.toml"
    grid.write_text(text)
    with pytest.raises(GridError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        read_grid(grid)
    out = tmp_path / "out"
    code = main(["sweep", str(grid), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and fragment in err[0]
    assert not out.exists()


def test_missing_grid_and_missing_out_parent(tmp_path, capsys, grid_file):
    assert main(["sweep", str(tmp_path / "none.toml"), "--out", str(tmp_path / "o")]) == 2
    assert main(["sweep", str(grid_file), "--out", str(tmp_path / "no" / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no such file" in err[0] and "does not exist" in err[1]


def test_plot_of_a_sweep_and_bad_plot_inputs(grid_file, tmp_path, capsys):
    out = tmp_path / "sweep"
    sweep(grid_file, out, workers=2, echo=lambda line: None)
    png = tmp_path / "heat.png"
    assert main(["plot", str(out), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert main(["plot", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    assert main(["plot", str(out), "--out", str(tmp_path / "no" / "x.png")]) == 2
    not_h5 = tmp_path / "note.h5"
    not_h5.write_text("hello")
    assert main(["plot", str(not_h5), "--out", str(tmp_path / "y.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "summary.csv" in err[0] and "does not exist" in err[1]
    assert "note.h5" in err[2]


def test_derived_keys_scale_with_N(tmp_path):
    grid = tmp_path / "series.toml"
    grid.write_text("[base]\ndelta = 0.5\nt_max = 30\ntest_size_per_N = 20\n"
                    "[grid]\nN = [500, 4000]\nstandardize = ['none', 'whiten']\n")
    cells, _ = read_grid(grid)
    configs = {(c.job.config.N, c.job.config.standardize): c.job.config for c in cells}
    big = configs[(4000, "whiten")]
    assert (big.D, big.steps, big.test_size) == (2000, 120_000, 80_000)
    assert configs[(500, "none")].D == 250
    # one floor and one reference per N, shared by the standardizations
    assert len({c.floor.name for c in cells}) == 2 and len({c.reference.name for c in cells}) == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("[base]\ndelta = 0.5\nD = 10\n[grid]\nN = [20]\n")
    with pytest.raises(GridError, match="D or delta"):
        read_grid(bad)


def test_example_grids_are_valid():
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent / "examples"
    cells, ode = read_grid(root / "universality.toml")
    assert len(cells) == 160 and ode == {"dt": 0.01, "method": "euler", "theory": ["hmm"]}
    assert len(read_grid(root / "finite_size.toml")[0]) == 16
    for name, n_cells, n_runs in (("matched", 48, 110), ("scalar", 48, 88), ("aligned", 4, 12),
                                  ("matched_seeds", 6, 20), ("moments", 8, 16),
                                  ("centred", 24, 38)):
        cells, _ = read_grid(root / f"universality_{name}.toml")
        assert len(cells) == n_cells and all(c.matched_floor is not None for c in cells)
        assert len({job.name for c in cells for job in c.jobs}) == n_runs


def test_sweep_judges_relu_cells_against_the_relu_ode(tmp_path):
    """g = relu has an ODE: its cells get ODE-mode verdicts with finite deviations."""
    path = tmp_path / "relu.toml"
    path.write_text(GRID.replace("m = [1, 3]", 'm = [3]\ng = ["erf", "relu"]')
                    .replace('standardize = ["none", "whiten"]', 'standardize = ["whiten"]'))
    rows = sweep(path, tmp_path / "sweep", workers=1, echo=lambda line: None)
    assert len(rows) == 2
    summary = read_summary(tmp_path / "sweep" / "summary.csv")
    assert sorted(r["g"] for r in summary) == ["erf", "relu"]
    for r in summary:
        assert r["verdict_mode"] == "ode", r
        assert 0.0 < float(r["eg_dev_ode_mean"]) < 1.0, r


MATCHED_GRID = """
[base]
N = 48
D = 24
seeds = 3
t_max = 20
records = 10
test_size = 200
m = 3
alpha = 2.0
moment_samples = 2000

[grid]
standardize = ["sample", "population", "whiten"]
block_size = ["D", 1]

[compare]
matched = true
"""
CLASSES = {"gaussian", "second_order", "higher_order", "inconsistent", "undetermined"}


def test_a_matched_sweep_reuses_runs_by_law_and_classifies_every_cell(tmp_path, capsys):
    """docs/model.md §10.4: six cells, one N(0, I) floor and reference, and the matched floors
    and references that are not N(0, I) (population with B = 1 and whiten are): 14 runs."""
    grid = tmp_path / "matched.toml"
    grid.write_text(MATCHED_GRID)
    cells, _ = read_grid(grid)
    whiten = [c for c in cells if c.params["standardize"] == "whiten"]
    assert all(c.matched_floor is c.floor and c.matched_reference is c.reference for c in whiten)
    population_1 = next(c for c in cells if c.params == {"standardize": "population",
                                                         "block_size": 1})
    assert population_1.matched_floor is population_1.floor
    lines = []
    rows = sweep(grid, tmp_path / "sweep", workers=2, echo=lines.append)
    assert "6 cell(s), 14 run(s)" in lines[0]
    summary = read_summary(tmp_path / "sweep" / "summary.csv")
    for r in summary:
        assert r["universality"] == universality_class(r["verdict_ref"], r["verdict_matched"])
        assert r["universality_holm"] == universality_class(r["verdict_ref_holm"],
                                                            r["verdict_matched_holm"])
        assert r["universality"] in CLASSES and r["universality_holm"] in CLASSES, r
        assert r["verdict_matched"] in ("matches", "deviates"), r
        for column in ("eg_dev_matched_mean", "floor_matched_mean", "eg_dev_ref_mean"):
            assert float(r[column]) > 0, (column, r)
        assert -3 < float(r["nu0_kurtosis"]) < 3 and r["lambda_kurtosis_end"] != ""
    for r in rows:   # against the same reference and floor, both legs agree exactly
        if r["standardize"] == "whiten":
            assert r["eg_dev_matched_mean"] == r["eg_dev_ref_mean"]
            assert r["verdict_matched"] == r["verdict_ref"]
            assert r["universality"] in ("gaussian", "higher_order")
    png = tmp_path / "classes.png"
    assert main(["plot", str(tmp_path / "sweep"), "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("text, fragment", [
    ("[grid]\nm = [1]\n[compare]\nmatched = 1\n", "matched must be true or false"),
    ("[grid]\nm = [1]\n[compare]\nmore = true\n", "[compare] unknown key"),
])
def test_bad_compare_tables_are_refused(text, fragment, tmp_path):
    grid = tmp_path / "bad.toml"
    grid.write_text(text)
    with pytest.raises(GridError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        read_grid(grid)


MOMENTS_GRID = """
[base]
N = 48
delta = 0.5
t_max = 30
seeds = 3
records = 12
test_size = 300
m = 3
alpha = 1.5

[grid]
standardize = ["population", "whiten"]
center_inputs = [false, true]

[ode]
theory = ["hmm", "moments"]

[compare]
matched = true
"""


def test_sweep_with_the_moments_theory(tmp_path):
    """[ode] theory = ["hmm", "moments"] (docs/model.md §10.5): the moments columns beside the
    HMM ones; an uncentred mixture (E x ≠ 0) is "unavailable" with the reason; the N(0, I)
    floor (E x = 0 exactly, so centring it changes nothing) is one run for all four cells."""
    grid = tmp_path / "grid.toml"
    grid.write_text(MOMENTS_GRID)
    cells, ode = read_grid(grid)
    assert ode["theory"] == ["hmm", "moments"] and ode["dt"] is None
    assert len({c.floor.name for c in cells}) == 1
    rows = {(r["standardize"], r["center_inputs"]): r
            for r in sweep(grid, tmp_path / "out", workers=2, echo=lambda line: None)}
    refused = rows[("population", False)]
    assert refused["verdict_moments"] == "unavailable"
    assert "‖E x‖²" in refused["moments_unavailable"]
    assert math.isnan(refused["eg_dev_moments_mean"])
    for key in (("population", True), ("whiten", True)):
        row = rows[key]
        assert row["verdict_moments"] in ("matches", "deviates"), row
        assert row["eg_dev_moments_mean"] > 0 and row["floor_moments_mean"] > 0
        assert row["eg_dev_ode_mean"] > 0                    # the HMM columns are still there
        assert row["matched_dev_moments_mean"] > 0           # the matched twin: E x = 0
    summary = read_summary(tmp_path / "out" / "summary.csv")
    assert "verdict_moments_holm" in summary[0]


def test_run_job_adds_a_theory_without_simulating_again(tmp_path):
    from fastsgd.sweep import run_job
    cfg = SimConfig(N=48, D=24, steps=1000, records=8, test_size=200, m=3, alpha=1.5,
                    standardize="whiten", center_inputs=True)
    path = tmp_path / "runs" / "cell.h5"
    first = run_job(cfg.to_json(), str(path), {"dt": 0.01, "method": "euler",
                                               "theory": ["hmm"]})
    assert "moments" not in first
    made = path.stat().st_mtime_ns
    both = run_job(cfg.to_json(), str(path), {"dt": 0.01, "method": "euler",
                                              "theory": ["hmm", "moments"]})
    assert path.stat().st_mtime_ns == made                    # not simulated again
    assert both["ode"] == first["ode"] and set(both["moments"]) == {
        "eg_mc", "v", "empirical/Q", "empirical/R"}


def test_moments_verdict_is_undetermined_when_its_monte_carlo_error_reaches_the_floor(tmp_path):
    """docs/model.md §10.5: the theory's own Monte Carlo error must stay below the floor; where
    it does not (or a half's ODE failed: inf) the moments verdict is "undetermined"."""
    from fastsgd.sweep import _moments_columns
    grid = tmp_path / "grid.toml"
    grid.write_text(MOMENTS_GRID)
    cell = read_grid(grid)[0][0]
    d = {"eg_mc": [0.05, 0.06, 0.07], "v": [0.1] * 3, "empirical/Q": [0.1] * 3,
         "empirical/R": [0.1] * 3}
    floor = {**d, "eg_mc": [0.01, 0.012, 0.011]}
    for errors, expected in (([None, None, None], "deviates"), ([0.001, 0.002, 0.0], "deviates"),
                             ([0.001, 0.02, 0.0], "undetermined"),
                             ([0.001, float("inf"), 0.0], "undetermined")):
        results = {cell.job.name: {"moments": d, "moments_error": errors},
                   cell.floor.name: {"moments": floor},
                   cell.matched_floor.name: {"moments": floor}}
        row = _moments_columns(cell, results)
        assert row["verdict_moments"] == expected, (errors, row)
        if expected == "undetermined":
            assert "raise moment_samples" in row["moments_unavailable"]
