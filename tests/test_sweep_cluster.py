"""Sweeps on an external Dask cluster (fastsgd/sweep.py, `fastsgd sweep --scheduler`): a scheduler
and workers started as separate processes with Dask's own command line (`dask scheduler`,
`dask worker`) on 127.0.0.1, each in its own process group and working directory, torn down by
the fixtures' finalizers. The sweep itself runs as the `fastsgd sweep` command with a relative
--out (the workers resolve nothing against their own working directories). Checked: a sweep on
two workers gives a complete summary; one worker killed (SIGKILL of its process group) while it
runs a task leaves the sweep to finish on the other, with the same summary and no damaged run
file; and a worker started with --nthreads 2 and two threads for each library runs every task
with one Numba and one BLAS/OpenMP thread."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastsgd.summary import read_summary
from fastsgd.sweep import read_grid

#: 4 cells (6 runs with the shared floor and reference) of about 3 s each (the simulation, then
#: its ODE): long enough for a worker to be killed in the middle of one.
GRID = """
[base]
N = 600
D = 300
seeds = 2
t_max = 100
records = 10
test_size = 200

[grid]
m = [1, 3]
standardize = ["none", "whiten"]
alpha = [1.5]

[ode]
dt = 0.02
"""
CELLS = [("1", "none"), ("1", "whiten"), ("3", "none"), ("3", "whiten")]
RUNS = 6

#: The scheduler as the README starts it, with the settings fastsgd.sweep.DASK_SETTINGS gives a
#: local cluster's: a task whose worker dies is given to another worker once, not twice.
SCHEDULER_ENV = {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1",
                 "DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION": "1.0"}
DASK = [sys.executable, "-m", "dask"]
_SCRIPT = Path(sys.executable).with_name("fastsgd")
FASTSGD = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "fastsgd.cli"]
#: The cluster imports this module's tasks by name, as a real one imports fastsgd's.
TEST_PATH = os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                          os.environ.get("PYTHONPATH", "")]))
#: Fresh worker processes load (or, after an edit, compile) the Numba kernels.
SWEEP_TIMEOUT = 300


class Cluster:
    """A scheduler and workers, each `python -m dask ...` in its own session (process group),
    with logs and working directories under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.scheduler_file = root / "scheduler.json"
        self.procs: dict[str, subprocess.Popen] = {}
        self.address = ""

    def _start(self, name: str, args: list[str], env: dict | None = None) -> None:
        cwd = self.root / name
        cwd.mkdir()
        log = open(self.root / f"{name}.log", "w")
        self.procs[name] = subprocess.Popen(
            DASK + args, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": TEST_PATH, **(env or {})}, start_new_session=True)
        log.close()

    def start_scheduler(self) -> None:
        self._start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", "0",
                                  "--no-dashboard", "--scheduler-file",
                                  str(self.scheduler_file)], SCHEDULER_ENV)
        deadline = time.monotonic() + 60
        while not self.address:
            if self.procs["scheduler"].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dask scheduler did not start: {self.log('scheduler')}")
            try:
                self.address = json.loads(self.scheduler_file.read_text())["address"]
            except (OSError, ValueError, KeyError):
                time.sleep(0.1)

    def start_worker(self, name: str, *args: str, env: dict | None = None) -> None:
        self._start(name, ["worker", "--scheduler-file", str(self.scheduler_file),
                           "--name", name, "--nworkers", "1", "--no-dashboard",
                           "--host", "127.0.0.1", "--death-timeout", "60",
                           "--local-directory", str(self.root / name), *args], env)

    def wait_for_workers(self, n: int) -> None:
        from distributed import Client
        with Client(self.address, timeout=30) as client:
            try:
                client.wait_for_workers(n, timeout=60)
            except TimeoutError:
                logs = {name: self.log(name) for name in self.procs}
                raise RuntimeError(f"{n} dask worker(s) did not start: {logs}") from None

    def client(self):
        from distributed import Client
        return Client(self.address, timeout=30)

    def kill(self, name: str) -> None:
        """SIGKILL the process group: a nanny and its worker die at once (no restart)."""
        proc = self.procs[name]
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def log(self, name: str) -> str:
        try:
            return (self.root / f"{name}.log").read_text()[-3000:]
        except OSError:
            return ""

    def close(self) -> None:
        for name in reversed(list(self.procs)):
            self.kill(name)


@pytest.fixture
def new_cluster(tmp_path_factory):
    """Makes clusters (a scheduler started, no worker yet), every one torn down at the end."""
    clusters = []

    def make() -> Cluster:
        cluster = Cluster(tmp_path_factory.mktemp("cluster"))
        clusters.append(cluster)
        cluster.start_scheduler()
        return cluster

    yield make
    for cluster in clusters:
        cluster.close()


@pytest.fixture(scope="module")
def grid_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("grid")
    (path / "grid.toml").write_text(GRID)
    return path


def start_sweep(cwd: Path, address: str) -> subprocess.Popen:
    """`fastsgd sweep grid.toml --out sweep --scheduler ADDRESS` in ``cwd`` (relative paths)."""
    return subprocess.Popen(FASTSGD + ["sweep", "grid.toml", "--out", "sweep", "--scheduler",
                                       address], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=SWEEP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"fastsgd sweep did not finish in {SWEEP_TIMEOUT} s: {err[-3000:]}")
    return proc.returncode, out, err


def check_sweep_folder(out: Path) -> list[dict]:
    """Every cell with valid numbers; every run file whole, with its config and its sidecar;
    no temporary file left."""
    import fastsgd
    summary = read_summary(out / "summary.csv")
    assert [(r["m"], r["standardize"]) for r in summary] == CELLS
    for r in summary:
        assert r["verdict_mode"] == "ode" and r["verdict"] in ("matches", "deviates"), r
        assert r["error"] == "" and int(r["n_valid"]) == 2
        for column in ("eg_dev_ode_mean", "eg_dev_ref_mean", "floor_ode_mean", "floor_ref_mean",
                       "op_dev_Q_mean", "op_dev_R_mean", "op_dev_v_mean", "p_one_sided"):
            assert math.isfinite(float(r[column])), (column, r)
    runs = sorted((out / "runs").glob("*.h5"))
    assert len(runs) == RUNS
    assert not list((out / "runs").glob("*.tmp*"))
    cells, _ = read_grid(out.parent / "grid.toml")
    configs = {job.name: job.config for cell in cells for job in cell.jobs}
    for path in runs:
        run = fastsgd.load(path)
        assert run.config == configs[path.stem]
        assert set(run.status) == {"ok"}
        assert json.loads(path.with_suffix(".json").read_text())["ode"] is not None
    return summary


@pytest.fixture(scope="module")
def external_sweep(grid_dir, tmp_path_factory):
    """One undisturbed sweep on an external cluster of two one-thread workers: its folder, its
    stderr and its wall time (from the command's start, workers already up)."""
    cluster = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start_scheduler()
        for name in ("w0", "w1"):
            cluster.start_worker(name, "--nthreads", "1")
        cluster.wait_for_workers(2)
        start = time.perf_counter()
        rc, _, err = finish(start_sweep(grid_dir, cluster.address))
        wall = time.perf_counter() - start
    finally:
        cluster.close()
    print(f"\nexternal-cluster sweep: {wall:.1f} s")
    assert rc == 0, err
    return grid_dir / "sweep", err, wall


def test_a_sweep_on_an_external_cluster_completes(external_sweep):
    out, err, _ = external_sweep
    check_sweep_folder(out)
    assert f"4 cell(s), {RUNS} run(s): 0 finished, {RUNS} to do" in err
    assert err.count(": ok\n") == RUNS and "FAILED" not in err


def executing(dask_worker) -> tuple:
    """On a worker: the keys of the tasks it runs now."""
    return tuple(sorted(ts.key for ts in dask_worker.state.executing))


def times_processed(key, dask_scheduler) -> int:
    """On the scheduler: how many times the task ``key`` was given to a worker."""
    return sum(1 for t in dask_scheduler.story(key) if t[2] == "processing")


def test_a_killed_worker_s_task_is_rescheduled(external_sweep, new_cluster, tmp_path):
    """A worker killed while it runs a task: the scheduler gives the task to the other worker,
    the sweep exits 0 and its summary is the undisturbed sweep's."""
    cluster = new_cluster()
    for name in ("w0", "w1"):
        cluster.start_worker(name, "--nthreads", "1")
    cluster.wait_for_workers(2)
    (tmp_path / "grid.toml").write_text(GRID)
    runs = tmp_path / "sweep" / "runs"
    start = time.perf_counter()
    sweep = start_sweep(tmp_path, cluster.address)
    try:
        with cluster.client() as client:
            names = {addr: w["name"] for addr, w in client.scheduler_info()["workers"].items()}
            deadline, before, victim = time.monotonic() + SWEEP_TIMEOUT, {}, None
            while victim is None:   # after a run file, the first worker to begin a new task
                assert sweep.poll() is None, sweep.communicate()[1]
                assert time.monotonic() < deadline, "no worker began a task after a run file"
                now = client.run(executing)
                if list(runs.glob("*.h5")):
                    for addr, keys in now.items():
                        if keys and addr in before and keys[0] not in before[addr]:
                            victim, key = names[addr], keys[0]   # began < 0.1 s ago
                            break
                before = now
                time.sleep(0.05)
            cluster.kill(victim)   # in the first second of a task of ~3 s
            killed_at = time.perf_counter() - start
            rc, _, err = finish(sweep)
            wall = time.perf_counter() - start
            # the task ran on the victim, then (its worker gone) on the other worker
            assert client.run_on_scheduler(times_processed, key) == 2
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
            sweep.communicate()
    print(f"\nkilled {victim} running {key} at {killed_at:.1f} s; sweep: {wall:.1f} s")
    assert rc == 0, err
    assert "FAILED" not in err and err.count(": ok\n") == RUNS
    summary = check_sweep_folder(tmp_path / "sweep")
    out, _, _ = external_sweep
    assert summary == read_summary(out / "summary.csv")


def probe_task(config_json, path, ode):
    """fastsgd's own task, with the thread counts this task sees before and after it."""
    import threading

    import numba
    from threadpoolctl import threadpool_info

    from fastsgd.sweep import run_job

    def counts():
        return {"numba": numba.get_num_threads(),
                "pools": sorted({(p["user_api"], p["internal_api"], p["num_threads"])
                                 for p in threadpool_info()})}

    before = counts()
    result = run_job(config_json, path, ode)
    return {**result, "thread": threading.get_ident(), "before": before, "after": counts()}


def plain_probe(i):
    import numba
    from threadpoolctl import threadpool_info
    return numba.get_num_threads(), {p["user_api"]: p["num_threads"] for p in threadpool_info()}


def test_an_external_worker_runs_each_task_with_one_numba_and_one_blas_thread(new_cluster,
                                                                             tmp_path):
    """A worker with two task threads, without a nanny (no Dask defaults for the environment)
    and told to use two threads in Numba, OpenMP and BLAS: every sweep task sees one."""
    from fastsgd.sweep import _run_on_dask

    cluster = new_cluster()
    cluster.start_worker("w2", "--nthreads", "2", "--no-nanny",
                         env={"NUMBA_NUM_THREADS": "2", "OMP_NUM_THREADS": "2",
                              "OPENBLAS_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"})
    cluster.wait_for_workers(1)
    with cluster.client() as client:   # what the worker does for a task of its own
        numba_threads, pools = client.submit(plain_probe, 0, pure=False).result()
    assert numba_threads == 2 and pools.get("openmp", 2) == 2   # OpenMP: Numba's layer

    grid = tmp_path / "grid.toml"
    grid.write_text(GRID.replace("N = 600", "N = 48").replace("D = 300", "D = 24")
                    .replace("t_max = 100", "t_max = 20"))
    cells, ode = read_grid(grid)
    jobs = list({job.name: job for cell in cells for job in cell.jobs}.values())
    results, failures = {}, {}
    _run_on_dask(jobs, tmp_path / "sweep", ode, probe_task, results, failures,
                 scheduler=cluster.address, workers=None, echo=lambda line: None)
    assert not failures and len(results) == RUNS
    for r in results.values():
        print(f"task in thread {r['thread']}: before {r['before']}, after {r['after']}")
        assert set(r["status"]) == {"ok"}
        for seen in (r["before"], r["after"]):
            assert seen["numba"] == 1
            assert seen["pools"] and all(n == 1 for _, _, n in seen["pools"]), seen
            assert any(api == "blas" for api, _, _ in seen["pools"])
    assert len({r["thread"] for r in results.values()}) == 2   # both task threads were used
