"""simulate's rate with a data latent beside the Gaussian latent and a mixture (docs/model.md §11).

    python bench/latent_rate.py [--steps 4e5] [--repeat 2]

N = 512, D = 256, 2 seeds (one thread each), records = 20, test set 2000: the whitened patches
of `fastsgd latents patches` (made in a temporary folder), the Gaussian latent and a whitened
m = 8, α = 2 mixture, interleaved in one process, kernels compiled first. Prints each law's best
wall time, its steps/s and its ratio to the Gaussian latent.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import fastsgd
from fastsgd.config import parse_count
from fastsgd.datasets import make_latents
from fastsgd.latent_data import save_latents


def laws(data: Path, steps: int) -> dict[str, fastsgd.SimConfig]:
    base = dict(N=512, D=256, steps=steps, records=20, test_size=2000, seeds=2)
    return {"gaussian": fastsgd.SimConfig(**base),
            "patches, whiten": fastsgd.SimConfig(**base, latent="data", latent_data=str(data),
                                                 standardize="whiten"),
            "mixture m = 8, whiten": fastsgd.SimConfig(**base, m=8, alpha=2.0,
                                                       standardize="whiten")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="4e5")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    steps = parse_count(args.steps, "steps", 1000, 10 ** 9)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        data = Path(save_latents(make_latents("patches"), str(work / "patches.npy")))
        configs = laws(data, steps)
        for cfg in configs.values():   # compile every kernel first
            fastsgd.simulate(cfg.replace(steps=2000), out=work / "warm.h5", overwrite=True)
        best = {name: float("inf") for name in configs}
        for _ in range(args.repeat):
            for name, cfg in configs.items():
                start = time.perf_counter()
                fastsgd.simulate(cfg, out=work / "run.h5", overwrite=True)
                best[name] = min(best[name], time.perf_counter() - start)
    reference = best["gaussian"]
    for name, seconds in best.items():
        rate = 2 * steps / seconds
        print(f"{name:22s} {seconds:6.2f} s  {rate / 1e3:6.0f} k steps/s  "
              f"{reference / seconds:.2f} × the Gaussian latent")


if __name__ == "__main__":
    main()
