"""A sweep's end-to-end rate beside `fastsgd simulate --seeds 2` (issue 16's first goal).

    python bench/sweep_rate.py [--t-max 100 20] [--repeat 2]

The end-to-end rate of a sweep is the SGD steps of every run it made (floors and references
included: seeds × steps summed over DIR/runs) divided by the wall time of the whole
`fastsgd sweep` process (cluster start-up, per-seed set-up, records, ODEs and deviations, the
summary). The reference is a `fastsgd simulate --seeds 2` process of 10⁶ steps per seed, timed
the same way, in the same run. Both with the kernels already compiled (a warm cache), on a
local cluster of one one-thread worker per core. Cells: N = 1000, D = 500, K = M = 2, sign/erf,
lr = 0.2, 2 seeds, m ∈ {2, 8} × standardize ∈ {none, whiten}, α = 2, B = D.
"""

from __future__ import annotations

import argparse
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


def _timed(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(args, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def sweep_steps(folder: Path) -> int:
    """SGD steps of every run in a sweep folder: seeds × steps summed over DIR/runs."""
    import fastsgd
    total = 0
    for path in (folder / "runs").glob("*.h5"):
        cfg = fastsgd.load(path).config
        total += cfg.seeds * cfg.steps
    return total


def sweep_rate(t_max: float, work: Path) -> tuple[float, int, float]:
    """(steps/s, steps, wall seconds) of a fresh sweep of the cells above at ``t_max``."""
    grid = work / f"grid_t{t_max:g}.toml"
    grid.write_text(GRID.format(t_max=t_max))
    out = work / f"sweep_t{t_max:g}_{time.time_ns()}"
    wall = _timed([sys.executable, "-m", "fastsgd.cli", "sweep", str(grid), "--out", str(out)],
                  work)
    steps = sweep_steps(out)
    return steps / wall, steps, wall


def simulate_rate(work: Path) -> tuple[float, float]:
    """(steps/s, wall seconds) of `fastsgd simulate --seeds 2` with 10⁶ steps per seed."""
    out = work / f"simulate_{time.time_ns()}.h5"
    wall = _timed([sys.executable, "-m", "fastsgd.cli", "simulate", "--steps",
                   str(SIMULATE_STEPS), "--seeds", "2", "--out", str(out), "--quiet"], work)
    return 2 * SIMULATE_STEPS / wall, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--t-max", type=float, nargs="+", default=[100.0, 20.0])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        simulate_rate(work)                     # compile, if needed, outside the timings
        for _ in range(args.repeat):
            reference, wall = simulate_rate(work)
            print(f"simulate --seeds 2, 10^6 steps each: {reference:,.0f} steps/s ({wall:.1f} s)")
            for t_max in args.t_max:
                rate, steps, wall = sweep_rate(t_max, work)
                print(f"sweep t_max = {t_max:g}: {rate:,.0f} steps/s ({steps:,} steps in "
                      f"{wall:.1f} s) = {rate / reference:.2f} of simulate", flush=True)


if __name__ == "__main__":
    main()
