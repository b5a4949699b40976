"""A sweep's end-to-end rate beside `fastsgd simulate --seeds 2` (issue 16's first goal).

    python bench/sweep_rate.py [--t-max 100 20] [--repeat 2] [--baseline DIR]

The end-to-end rate of a sweep is the SGD steps of every run it made (floors and references
included: seeds × steps summed over DIR/runs) divided by the wall time of the whole
`fastsgd sweep` process (cluster start-up, per-seed set-up, records, ODEs and deviations, the
summary). The reference is a `fastsgd simulate --seeds 2` process of 10⁶ steps per seed, timed
the same way, in the same run. Both with the kernels already compiled (a warm cache), on a
local cluster of one one-thread worker per core. Cells: N = 1000, D = 500, K = M = 2, sign/erf,
lr = 0.2, 2 seeds, m ∈ {2, 8} × standardize ∈ {none, whiten}, α = 2, B = D.

--baseline DIR: a source tree of another version (e.g. `git archive COMMIT | tar -x -C DIR`)
whose sweeps run interleaved with this tree's (DIR first on PYTHONPATH), each pair beside the
same simulate reference: a paired A/B on a shared machine. Every line gives the 1-minute load
average before the measurement.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GRID = """[base]
N = 1000
D = 500
seeds = 2
t_max = {t_max}
records = 60
test_size = 10000
alpha = 2.0

[grid]
m = [2, 8]
standardize = ["none", "whiten"]
"""
SIMULATE_STEPS = 10 ** 6


def _timed(args: list[str], cwd: Path, tree: Path | None = None) -> float:
    env = dict(os.environ)
    if tree is not None:   # another version's fastsgd and analysis first on the path
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
    start = time.perf_counter()
    subprocess.run(args, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def sweep_steps(folder: Path) -> int:
    """SGD steps of every run in a sweep folder: seeds × steps summed over DIR/runs."""
    import fastsgd
    total = 0
    for path in (folder / "runs").glob("*.h5"):
        cfg = fastsgd.load(path).config
        total += cfg.seeds * cfg.steps
    return total


def sweep_rate(t_max: float, work: Path, tree: Path | None = None) -> tuple[float, int, float]:
    """(steps/s, steps, wall seconds) of a fresh sweep of the cells above at ``t_max`` (with
    the fastsgd of ``tree`` if given)."""
    grid = work / f"grid_t{t_max:g}.toml"
    grid.write_text(GRID.format(t_max=t_max))
    out = work / f"sweep_t{t_max:g}_{time.time_ns()}"
    wall = _timed([sys.executable, "-m", "fastsgd.cli", "sweep", str(grid), "--out", str(out)],
                  work, tree)
    steps = sweep_steps(out)
    return steps / wall, steps, wall


def simulate_rate(work: Path, steps: int = SIMULATE_STEPS) -> tuple[float, float]:
    """(steps/s, wall seconds) of `fastsgd simulate --seeds 2` with ``steps`` per seed."""
    out = work / f"simulate_{time.time_ns()}.h5"
    wall = _timed([sys.executable, "-m", "fastsgd.cli", "simulate", "--steps",
                   str(steps), "--seeds", "2", "--out", str(out), "--quiet"], work)
    return 2 * steps / wall, wall


def _load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--t-max", type=float, nargs="+", default=[100.0, 20.0])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--baseline", type=Path, default=None,
                        help="a source tree whose sweeps run interleaved with this tree's")
    args = parser.parse_args()
    trees = [("this tree", None)]
    if args.baseline is not None:
        trees.insert(0, (f"baseline {args.baseline}", args.baseline.absolute()))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        simulate_rate(work, 1000)               # compile, if needed, outside the timings
        for _, tree in trees:
            sweep_rate(0.3, work, tree)
        for _ in range(args.repeat):
            before = _load()
            reference, wall = simulate_rate(work)
            print(f"simulate --seeds 2, 10^6 steps each: {reference:,.0f} steps/s ({wall:.1f} s;"
                  f" {before})", flush=True)
            for t_max in args.t_max:
                for name, tree in trees:
                    before = _load()
                    rate, steps, wall = sweep_rate(t_max, work, tree)
                    print(f"  {name}: sweep t_max = {t_max:g}: {rate:,.0f} steps/s ({steps:,} "
                          f"steps in {wall:.1f} s; {before}) = {rate / reference:.2f} of "
                          "simulate", flush=True)


if __name__ == "__main__":
    main()
