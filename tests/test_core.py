"""The fixed-order dot product of the SGD kernel (fastsgd/core.py; docs/model.md §3.1, §3.3).

λ_k = w_k·x/√N is summed in four interleaved partial sums, (s0 + s1) + (s2 + s3), with the
remainder added to s0: an order fixed by the code, whatever the data or the thread count. Called
on its own (no fast-math flags), the result equals that order replayed in Python bitwise.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastsgd.core import dot


def four_chain_sum(a, b) -> float:
    s = [0.0, 0.0, 0.0, 0.0]
    n = len(a)
    n4 = n - n % 4
    for i in range(0, n4, 4):
        for j in range(4):
            s[j] += float(a[i + j]) * float(b[i + j])
    for i in range(n4, n):
        s[0] += float(a[i]) * float(b[i])
    return (s[0] + s[1]) + (s[2] + s[3])


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 8, 13, 64, 1001])
def test_dot_sums_in_the_documented_order(n):
    rng = np.random.default_rng(n)
    a = rng.normal(size=n) * 10.0 ** rng.integers(-8, 8, size=n)
    b = rng.normal(size=n)
    assert dot(a, b) == four_chain_sum(a, b)
    assert dot(a, b) == pytest.approx(float(np.dot(a, b)), rel=1e-9, abs=1e-300)
    if n in (13, 1001):     # the data tell the orders apart: a plain running sum differs
        running = 0.0
        for x, y in zip(a, b):
            running += float(x) * float(y)
        assert running != dot(a, b)


def test_dot_propagates_nan_and_inf():
    a = np.ones(6)
    b = np.ones(6)
    b[5] = np.nan
    assert np.isnan(dot(a, b))
    b[5] = np.inf
    assert dot(a, b) == np.inf
