"""HMM ODE accuracy per unit of time (D = 250, t = 1000, sign/erf, K = M = 2, both layers).

    python bench/ode_accuracy.py

Prints Euler's wall time at dt = 0.01, the largest RK4 step whose ε_g stays within 1e-6
relative of RK4 at half that step (on 150 log-spaced integer times), its wall time, and Euler's
error at dt = 0.01 measured against it.
"""

from __future__ import annotations

import time

import numpy as np

import fastsgd
from analysis.ode import integrate_hmm

RK4_STEPS = (5.0, 4.0, 3.0, 2.5, 2.0, 1.5, 1.25, 1.0, 0.8, 0.5, 0.25, 0.1)


def main() -> None:
    state = fastsgd.initial_state(fastsgd.SimConfig(N=500, D=250))
    t_eval = np.unique(np.concatenate([[0.0], np.rint(np.geomspace(1, 1000, 150))]))
    kw = dict(lr=0.2, delta=0.5, f="sign", g="erf", train_second_layer=True, t_eval=t_eval)

    def timed(**extra):
        integrate_hmm(state, **{**kw, "t_eval": [0.0, 1.0]}, **extra)  # load the kernel
        best, traj = np.inf, None
        for _ in range(3):
            start = time.perf_counter()
            traj = integrate_hmm(state, **kw, **extra)
            best = min(best, time.perf_counter() - start)
        return traj, best

    euler, t_euler = timed(method="euler", dt=0.01)
    print(f"Euler dt = 0.01: {t_euler:.3f} s (best of 3)")
    for dt in RK4_STEPS:
        a, _ = timed(method="rk4", dt=dt)
        b, _ = timed(method="rk4", dt=dt / 2)
        rel = float(np.nanmax(np.abs(a.eg - b.eg) / np.abs(b.eg)))
        print(f"RK4 dt = {dt}: max relative ε_g difference to dt/2: {rel:.2e} ({a.status})")
        if a.status == "ok" and rel <= 1e-6:
            break
    rk4, t_rk4 = timed(method="rk4", dt=dt)
    err = np.abs(euler.eg - rk4.eg) / np.abs(rk4.eg)
    print(f"RK4 dt = {dt}: {t_rk4:.3f} s (best of 3)")
    print(f"Euler dt = 0.01 against RK4 dt = {dt}: max relative ε_g error {np.nanmax(err):.2e}, "
          f"{err[-1]:.2e} at t = 1000")


if __name__ == "__main__":
    main()
