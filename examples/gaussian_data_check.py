"""A control for the real-data study (docs/universality.md): a data file of Gaussian rows.

    python examples/gaussian_data_check.py [OUT_DIR] [P] [D]

Writes P rows (default 50000) of N(0, A Aᵀ) (D = 256 by default, A = I + 0.5·G/√D, seed 5) to
OUT_DIR/gauss.npy and runs them as a data latent at N = 2D, t ≤ 100, 2 seeds, centred inputs,
whitened and population-standardized; prints each seed's deviation d of eg_mc from the moments
theory and from the N(0, I) HMM ODE. A Gaussian data set must track the moments theory at the
floor: the pipeline (rows, standardization, the input moments summed over the rows) adds no
deviation of its own. With P as small as a real data set's, each row is seen steps/P times
(t·N/P): the same check tells whether that repetition alone moves the dynamics.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import fastsgd
from analysis.deviation import eg_deviation
from fastsgd.theory import integrate_run, moments_odes

SEEDS = 2


def main(out: Path, P: int, D: int = 256) -> None:
    N = 2 * D
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    A = np.eye(D) + 0.5 * rng.standard_normal((D, D)) / np.sqrt(D)
    path = out / "gauss.npy"
    np.save(path, rng.standard_normal((P, D)) @ A.T)
    print("| standardize | seed | d vs moments ODE | d vs N(0, I) ODE |")
    print("|---|---|---|---|")
    for standardize in ("whiten", "population"):
        cfg = fastsgd.SimConfig(N=N, D=D, latent="data", latent_data=str(path),
                                standardize=standardize, center_inputs=True, steps=100 * N,
                                records=40, seeds=SEEDS)
        run = fastsgd.simulate(cfg, out=out / f"gauss_{standardize}.h5", overwrite=True)
        moments, hmm = moments_odes(run), integrate_run(run)
        for i in range(SEEDS):
            d_moments = eg_deviation(run.t, run.eg_mc[i], run.t, moments.trajectories[i].eg)
            d_hmm = eg_deviation(run.t, run.eg_mc[i], hmm[i].t, hmm[i].eg)
            print(f"| {standardize} | {i} | {d_moments:.3f} | {d_hmm:.3f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "data/gaussian_data_check"),
         int(sys.argv[2]) if len(sys.argv) > 2 else 50_000,
         int(sys.argv[3]) if len(sys.argv) > 3 else 256)
