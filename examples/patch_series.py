"""Whitened image patches of growing size (docs/universality.md, docs/model.md §11.5): does the
failure of the Gaussian theory shrink as D grows?

    python examples/patch_series.py [OUT_DIR]

For patch sides 8, 12, 16 and 20 pixels (D = 64, 144, 256, 400; corners every half side) makes
the latent file with `fastsgd latents patches`, then sweeps the whitened data latent at δ = 0.5
(N = 2D), with and without centred inputs, against the N(0, I) HMM ODE, the matched twin (N(0, I)
itself for whitened data) and the moments theory: the model of the main study, 5 seeds, t ≤ 100.
Prints one Markdown row per patch side and centring.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from fastsgd.datasets import projection_kurtosis
from fastsgd.latent_data import read_array, standardize_data
from matched_report import judged, pm   # examples/ is on the path when run as a script
from moments_report import moments_cell

SIDES = (8, 12, 16, 20)
GRID = """[base]
N = {N}
D = {D}
K = 2
M = 2
f = "sign"
g = "erf"
lr = 0.2
seeds = 5
t_max = 100
records = 60
test_size = 10000
latent = "data"
latent_data = "{data}"
standardize = "whiten"

[grid]
center_inputs = [false, true]

[ode]
dt = 0.01
method = "euler"
theory = ["hmm", "moments"]

[compare]
matched = true
"""


def fastsgd(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "fastsgd.cli", *args], check=True,
                   stdout=subprocess.DEVNULL)


def main(out: Path) -> None:
    from fastsgd.summary import read_summary
    out.mkdir(parents=True, exist_ok=True)
    print("| side | D = N/2 | rows | projection kurtosis (median) | centred | d vs N(0, I) ODE | "
          "its floor | d vs moments ODE | its floor | class (Holm) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for side in SIDES:
        data = out / f"patches{side}.npy"
        if not data.exists():
            fastsgd("latents", "patches", "--patch-size", str(side), "--out", str(data))
        rows = read_array(str(data))
        kurtosis = float(np.median(projection_kurtosis(standardize_data(rows, "whiten").rows)))
        D = rows.shape[1]
        grid = out / f"patches{side}.toml"
        grid.write_text(GRID.format(N=2 * D, D=D, data=data.resolve()))
        fastsgd("sweep", str(grid), "--out", str(out / f"sweep{side}"))
        for r in read_summary(out / f"sweep{side}" / "summary.csv"):
            print(f"| {side} | {D} | {rows.shape[0]} | {kurtosis:.2f} | {r['center_inputs']} | "
                  f"{judged(r, 'ode')} | {pm(r, 'floor_ode')} | {moments_cell(r)} | "
                  f"{pm(r, 'floor_moments')} | {r['universality']} ({r['universality_holm']}) |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "data/patch_series"))
