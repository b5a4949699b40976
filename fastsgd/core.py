"""Small numba helpers shared by the kernels."""

from __future__ import annotations

from analysis.jit import kernel


@kernel(inline=True)
def dot(a, b):
    """Σ_i a_i b_i for 1-D arrays, in a fixed order with four independent partial sums.

    Four chains keep the floating-point units busy; the order is fixed by the code, not by the
    thread count or the data, so results are bitwise reproducible.
    """
    n = a.shape[0]
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    n4 = n - n % 4
    for i in range(0, n4, 4):
        s0 += a[i] * b[i]
        s1 += a[i + 1] * b[i + 1]
        s2 += a[i + 2] * b[i + 2]
        s3 += a[i + 3] * b[i + 3]
    for i in range(n4, n):
        s0 += a[i] * b[i]
    return (s0 + s1) + (s2 + s3)
