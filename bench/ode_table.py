"""The ODE table of issue 16: our integrators beside the published C++ integrators.

    python bench/ode_table.py [--rounds 3]

One thread each. For every ODE: Euler at dt = 0.01 (the published integrators' method and step,
the same output) and RK4 at its default (error-controlled steps, docs/model.md §5.5), as the
best of ``rounds`` runs in wall seconds and in CPU seconds of this process (the CPU figure moves
less when other processes share the machine), and the ratio to the C++ figure. The C++ figures
were measured on this machine class with the published codes (Armadillo, OpenBLAS, one thread;
issue 16): ``hmm_ode`` D = 250, t = 1000: 5.5 s; ``scmpp_ode`` K = M = 2, t = 2000: 0.29 s,
K = M = 4: 2.85 s. RK4's accuracy is its largest |Δε_g| against fixed RK4 steps of 0.05.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import throughput as tp

CPP_SECONDS = {"HMM D=250 t=1000": 5.5, "SCM K=M=2 t=2000": 0.29, "SCM K=M=4 t=2000": 2.85}
GOALS = {"HMM D=250 t=1000": 20.0, "SCM K=M=2 t=2000": 5.0, "SCM K=M=4 t=2000": 10.0}


def _best(run, rounds: int) -> tuple[float, float]:
    wall = min(run(time.perf_counter) for _ in range(rounds))
    cpu = min(run(time.process_time) for _ in range(rounds))
    return wall, cpu


def _cases():
    return {
        "HMM D=250 t=1000": lambda method, dt: (
            lambda clock: tp.hmm_ode_seconds(method, dt, clock=clock)),
        "SCM K=M=2 t=2000": lambda method, dt: (
            lambda clock: tp.scm_ode_seconds(method=method, dt=dt, clock=clock)),
        "SCM K=M=4 t=2000": lambda method, dt: (
            lambda clock: tp.scm_ode_seconds(method=method, dt=dt, K=4, clock=clock)),
    }


def _rk4(name: str, t: np.ndarray, dt: float | None):
    """The RK4 trajectory of the case ``name`` on the times t (dt None: the default)."""
    import fastsgd
    from analysis.ode import integrate_hmm, integrate_scm
    if name.startswith("HMM"):
        state = fastsgd.initial_state(fastsgd.SimConfig(N=500, D=250))
        return integrate_hmm(state, lr=0.2, delta=0.5, train_second_layer=True, t_eval=t,
                             method="rk4", dt=dt)
    start = tp.scm_start(4 if "K=M=4" in name else 2)
    return integrate_scm(*start, lr=0.2, t_eval=t, method="rk4", dt=dt)


def rk4_default_error() -> dict[str, float]:
    """max |Δε_g| of RK4 at its default against fixed RK4 steps of 0.05 (150 log-spaced times)."""
    errors = {}
    for name, t_max in (("HMM D=250 t=1000", 1000.0), ("SCM K=M=2 t=2000", 2000.0),
                        ("SCM K=M=4 t=2000", 2000.0)):
        t = np.unique(np.r_[0.0, np.rint(np.geomspace(0.1, t_max, 150) / 0.05) * 0.05])
        errors[name] = float(np.nanmax(np.abs(_rk4(name, t, None).eg - _rk4(name, t, 0.05).eg)))
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    errors = rk4_default_error()
    print(f"{'ODE':18s} {'method':12s} {'wall s':>8s} {'CPU s':>8s} {'C++ s':>6s} "
          f"{'× C++ (CPU)':>11s} {'goal':>5s}  RK4 error")
    for name, case in _cases().items():
        for method, dt in (("euler", 0.01), ("rk4", None)):
            wall, cpu = _best(case(method, dt), args.rounds)
            cpp = CPP_SECONDS[name]
            label = "euler 0.01" if method == "euler" else "rk4 default"
            note = f"  {errors[name]:.1e}" if method == "rk4" else ""
            print(f"{name:18s} {label:12s} {wall:8.3f} {cpu:8.3f} {cpp:6.2f} {cpp / cpu:11.1f} "
                  f"{GOALS[name] if method == 'euler' else '':>5}{note}", flush=True)


if __name__ == "__main__":
    main()
