"""Cold and warm starts as whole processes: `fastsgd simulate --steps 1e3 --quiet` and
`fastsgd ode RUN.h5` (sign/erf, K = M = 2, N = 1000, D = 500, a run of 2·10⁴ steps), each cold
run with NUMBA_CACHE_DIR set to a new empty folder and followed by a warm run on that cache.

    python bench/cold_start.py [--pairs 2] [--baseline TREE]

With ``--baseline`` another source tree's processes (PYTHONPATH=TREE) run interleaved with this
tree's. Prints wall and CPU seconds (user + system of the child) and the 1-minute load.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def timed(tree: Path, cache: str, args: list[str], cwd: str) -> tuple[int, float, float]:
    """(exit code, wall s, CPU s) of ``python -m fastsgd.cli ARGS`` from ``tree``."""
    env = dict(os.environ, PYTHONPATH=str(tree), NUMBA_CACHE_DIR=cache)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    code = subprocess.run([sys.executable, "-m", "fastsgd.cli", *args], env=env, cwd=cwd,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return code, wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--baseline", type=Path, default=None)
    args = parser.parse_args()
    trees = [("this tree", HERE)]
    if args.baseline is not None:
        trees.insert(0, ("baseline", args.baseline.absolute()))
    with tempfile.TemporaryDirectory() as work:
        run = f"{work}/run.h5"
        subprocess.run([sys.executable, "-m", "fastsgd.cli", "simulate", "--steps", "2e4",
                        "--quiet", "--out", run], check=True, cwd=work,
                       env=dict(os.environ, PYTHONPATH=str(HERE)), stdout=subprocess.DEVNULL)
        commands = {"simulate": ["simulate", "--steps", "1e3", "--quiet", "--out"],
                    "ode": ["ode", run, "--out"]}
        for _ in range(args.pairs):
            for command, argv in commands.items():
                for name, tree in trees:
                    with tempfile.TemporaryDirectory() as cache:
                        load = os.getloadavg()[0]
                        cold = timed(tree, cache, argv + [f"{cache}/a.h5"], work)
                        warm = timed(tree, cache, argv + [f"{cache}/b.h5"], work)
                    print(f"{command:8s} {name}: cold {cold[1]:.1f} s wall, {cold[2]:.1f} s CPU "
                          f"(exit {cold[0]}); warm {warm[1]:.1f} s wall, {warm[2]:.1f} s CPU "
                          f"(exit {warm[0]}); load {load:.1f}", flush=True)


if __name__ == "__main__":
    main()
