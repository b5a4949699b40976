"""Print the throughput table: steps/s, × the NumPy loop, fraction of the machine's limit.

    python bench/report.py            # every size and latent (a few minutes)
    python bench/report.py --quick    # fewer steps, for a smoke test

All figures come from this one run, so their ratios are comparable.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import throughput as tp  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (noisier)")
    args = parser.parse_args()
    steps = 40_000 if args.quick else 300_000
    naive_steps = 4_000 if args.quick else 30_000
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}, "
          f"steps per measurement {steps}")
    header = (f"{'size':18s} {'latent':22s} {'mode':10s} {'steps/s':>10s} {'x naive':>8s} "
              f"{'of limit':>9s} {'limit':>10s}")
    print(header)
    print("-" * len(header))
    for size, (N, D, K, M) in tp.SIZES.items():
        limits = {s: tp.measure_limit(N, D, M, concurrent=s) for s in (1, 2)}
        for latent in tp.LATENTS:
            cfg = tp.config(size, latent, steps=steps, records=2, test_size=1000)
            naive = max(tp.numpy_loop_steps_per_second(cfg, naive_steps, threads)
                        for threads in (1, 2))
            for seeds, mode in ((1, "1 seed"), (2, "2 seeds")):
                rate = tp.fastsgd_steps_per_second(cfg, seeds)
                limit = limits[seeds].steps_per_second
                print(f"{size:18s} {latent:22s} {mode:10s} {rate:10.0f} {rate / naive:8.2f} "
                      f"{rate / limit:9.2f} {limit:10.0f}", flush=True)
            print(f"{size:18s} {latent:22s} {'numpy loop':10s} {naive:10.0f} {1.0:8.2f} "
                  f"{naive / limits[1].steps_per_second:9.2f} {'(best of 1, 2 BLAS threads)'}",
                  flush=True)
    cfg = tp.config("N1000_D500_K2_M2", "gaussian", steps=steps, records=2, test_size=1000)
    f64 = tp.fastsgd_steps_per_second(cfg, 1)
    mixed = tp.fastsgd_steps_per_second(cfg.replace(precision="mixed"), 1)
    print(f"\nmixed precision, N1000_D500_K2_M2, 1 seed: {mixed:.0f} steps/s = "
          f"{mixed / f64:.2f} × f64 ({f64:.0f})")
    rec_steps = 200_000 if args.quick else 1_000_000
    cfg = tp.config("N1000_D500_K2_M2", "gaussian", steps=rec_steps, test_size=10_000)
    with_records, without = 0.0, 0.0
    for _ in range(2):  # interleaved, best of two: the run-to-run noise is as large as the effect
        without = max(without, tp.fastsgd_steps_per_second(cfg.replace(records=2), 1))
        with_records = max(with_records, tp.fastsgd_steps_per_second(cfg.replace(records=200), 1))
    print(f"recording, {rec_steps} steps, 200 records (test set 10⁴): "
          f"{100 * (without / with_records - 1):.1f} % of the run time")
    print(f"HMM ODE, D = 250, t = 1000, Euler dt = 0.01: {tp.hmm_ode_seconds():.3f} s; "
          f"RK4 dt = 1.5: {tp.hmm_ode_seconds('rk4', 1.5):.3f} s")
    print(f"SCM ODE, K = M = 2, t = 2000, Euler dt = 0.01: {tp.scm_ode_seconds():.3f} s")
    for method, dt in (("euler", 0.01), ("rk4", 0.01), ("rk4", None)):
        r = tp.moments_ode_seconds(method=method, dt=dt)
        print(f"moments ODE, N = 1000, D = 500, t = 100, {method} dt = {dt or 'default'}: "
              f"{r['moments']:.2f} s (HMM ODE {r['hmm']:.2f} s, per bin and step "
              f"{r['per_bin_step']:.2f}×); input moments {r['input_moments']:.2f} s, "
              f"state {r['state']:.2f} s")
    for model, run, rk4_dt in (("HMM", lambda g, m, dt: tp.hmm_ode_seconds(m, dt, g=g), 1.5),
                               ("SCM", lambda g, m, dt: tp.scm_ode_seconds(g, m, dt), 0.5)):
        times = {g: (run(g, "euler", 0.01), run(g, "rk4", rk4_dt)) for g in ("erf", "relu")}
        print(f"{model} ODE relu / erf: Euler dt = 0.01 {times['relu'][0]:.3f} / "
              f"{times['erf'][0]:.3f} s ({times['relu'][0] / times['erf'][0]:.1f}x); "
              f"RK4 dt = {rk4_dt} {times['relu'][1]:.3f} / {times['erf'][1]:.3f} s "
              f"({times['relu'][1] / times['erf'][1]:.1f}x)")


if __name__ == "__main__":
    main()
