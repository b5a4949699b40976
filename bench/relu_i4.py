"""Accuracy and cost of the ReLU I4 (docs/model.md §5.4): `python bench/relu_i4.py`.

Accuracy: against 30-digit mpmath quadrature (tests/naive.py) on the fixed cases of
tests/test_integrals.py (random, near-degenerate pairs with 1 − |ρ| down to 1e-11, two students
close to two teachers, nearly singular), as relative error (absolute below 1e-4, as docs/model.md
§5.4 states the goal). Cost: nanoseconds per call inside a compiled loop, by number of distinct
fields, for a well-conditioned and a nearly singular covariance, and per 𝓘4 table of one
K = M = 2 ODE evaluation (30 I4 values).
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from analysis.integrals import (I4, relu_field_correlations, relu_i4_sums,  # noqa: E402
                                relu_i4_table, relu_workspace)
from analysis.orthant import NODES, WEIGHTS  # noqa: E402
from naive import relu_i4_mp  # noqa: E402
from test_integrals import CASES  # noqa: E402


@njit
def _calls(C, f, reps):
    sd, P, asin_P, rep, P4, quads, out = relu_workspace(C.shape[0], reps)
    relu_field_correlations(C, sd, P, asin_P, rep)
    for q in range(reps):
        quads[q, 0], quads[q, 1], quads[q, 2], quads[q, 3] = f[0], f[1], f[2], f[3]
    relu_i4_table(sd, P, asin_P, rep, quads, out, P4, NODES, WEIGHTS)
    return out


@njit
def _tables(C, u, reps):
    out = np.empty((2, 2))
    for _ in range(reps):
        relu_i4_sums(C, 2, u, out, NODES, WEIGHTS)
    return out


def ns_per(fn, *args, reps=20000):
    fn(*args, 10)
    best = np.inf
    for _ in range(3):
        start = time.perf_counter()
        fn(*args, reps)
        best = min(best, (time.perf_counter() - start) / reps * 1e9)
    return best


def main() -> None:
    worst = {}
    for name, C in CASES:
        ref = relu_i4_mp(C, dps=30)
        value = I4(C, g="relu")
        err = abs(value - ref) / (abs(ref) if abs(ref) >= 1e-4 else 1.0)
        kind = re.match(r"[a-z]+(?:01|23)?[+-]?", name).group()
        worst[kind] = max(worst.get(kind, 0.0), err)
    print("largest error against 30-digit quadrature (relative; absolute below 1e-4):")
    labels = {"random": "random, rank 6", "wide": "random, rank 40",
              "pair+": "pair (0, 2), ρ = 1 − 1e-3 … 1 − 1e-11",
              "pair01+": "pair (0, 1), ρ = 1 − 1e-3 … 1 − 1e-11",
              "pair23+": "pair (2, 3), ρ = 1 − 1e-3 … 1 − 1e-11",
              "twopairs": "two students ≈ two teachers, 1 − ρ = 1e-3 … 1e-11",
              "pair-": "pair (1, 3), ρ = −1 + 1e-3 … −1 + 1e-9",
              "pair01-": "pair (0, 1), ρ = −1 + 1e-3 … −1 + 1e-9",
              "rank": "rank 3 + 1e-2, 1e-4 · diag"}
    for kind, err in worst.items():
        print(f"  {labels.get(kind, kind):55s} {err:.1e}")
    print("known limit, four fields nearly in a plane (absolute error):")
    limit = np.random.default_rng(1)
    for rank, eps in ((2, 1e-7), (2, 1e-10), (3, 1e-11)):
        X = limit.normal(size=(4, rank))
        C = X @ X.T / rank
        C += eps * np.diag(np.diag(C))
        ref = relu_i4_mp(C, dps=30)
        print(f"  rank {rank} + {eps:g}·diag: I4 = {ref:.2e}, error {abs(I4(C, g='relu') - ref):.1e}")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4, 500))
    regular = X @ X.T / 500
    Y = rng.normal(size=(4, 3))
    singular = Y @ Y.T / 3 + 1e-8 * np.eye(4)
    print("ns per call (distinct fields): regular | nearly singular (λ_min ≈ 1e-8)")
    for f in ((0, 0, 0, 0), (0, 0, 1, 1), (0, 1, 2, 2), (0, 1, 2, 3)):
        print(f"  {len(set(f))}: {ns_per(_calls, regular, f):8.0f} | "
              f"{ns_per(_calls, singular, f, reps=2000):8.0f}")
    u = np.array([-1.0, -1.0, 1.0, 1.0])
    print(f"one K = M = 2 table of 𝓘4 (30 I4): {ns_per(_tables, regular, u) / 1e3:.2f} µs | "
          f"{ns_per(_tables, singular, u, reps=2000) / 1e3:.2f} µs")


if __name__ == "__main__":
    main()
