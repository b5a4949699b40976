"""A branch-free arcsine that LLVM vectorises (docs/model.md §5.3: the erf I4 is one arcsine).

``math.asin`` is a call into libm that no loop can vectorise: in the erf ODEs it is most of a
right-hand side (30 arcsines per evaluation at K = M = 2, 360 at K = M = 4). :func:`arcsine`
computes the same function in straight-line arithmetic (one square root, one polynomial and
selects), so that a loop over many arguments runs in SIMD lanes.

The method (the classical range reduction):

- |x| ≤ 1/2: asin(x) = x + x z P(z) with z = x²;
- |x| > 1/2: asin(|x|) = π/2 − 2 asin(s) with s = √z, z = (1 − |x|)/2 ≤ 1/4, the same
  polynomial on the same interval; π/2 is added as two doubles;
- the sign of x is copied onto the result; |x| > 1 and NaN give NaN.

P approximates (asin(√z) − √z)/z^{3/2} on [0, 1/4] to the rounding of its coefficients
(relative 6e-17): :data:`COEFFICIENTS` come from :func:`fit_coefficients`, a least-squares fit
at 400 Chebyshev nodes computed with mpmath at 50 digits (run it to reproduce them). The
result is within 2 ulp of a correctly rounded arcsine on [−1, 1] (tests/test_arcsine.py checks
it against mpmath and against ``math.asin``).
"""

from __future__ import annotations

import math

from analysis.jit import theory_kernel

__all__ = ["COEFFICIENTS", "DEGREE", "arcsine", "fit_coefficients"]

#: Degree of P: degree 12 leaves a relative error of 1.1e-16 in P, degree 13 its rounding.
DEGREE = 13

#: P(z) = Σ_j COEFFICIENTS[j] z^j (the output of ``fit_coefficients()``, rounded to doubles).
COEFFICIENTS = (0.16666666666666666, 0.07500000000000125, 0.04464285714253574,
                0.030381944476963723, 0.02237215737767329, 0.01735281834070849,
                0.013963748435199949, 0.011566830427132645, 0.009618864779963437,
                0.009335970060991405, 0.0029838811037374503, 0.01970071180526169,
                -0.01944563642504257, 0.0297378456439969)

_P0, _P1, _P2, _P3, _P4, _P5, _P6, _P7, _P8, _P9, _P10, _P11, _P12, _P13 = COEFFICIENTS
_HALF_PI_HI = 1.5707963267948966          # the double nearest π/2
_HALF_PI_LO = 6.123233995736766e-17       # π/2 − _HALF_PI_HI


@theory_kernel(inline=True)
def arcsine(x):
    """asin(x) for a float x, without branches or calls (see the module's notes).

    P is evaluated by Estrin's scheme (a tree of independent products instead of one chain of
    13 dependent multiply-adds): the measured cost per value in a vectorised loop is two
    thirds of Horner's.
    """
    a = abs(x)
    large = a > 0.5
    z = 0.5 - 0.5 * a if large else a * a
    root = math.sqrt(z)
    s = root if large else a
    z2 = z * z
    z4 = z2 * z2
    low = (_P0 + _P1 * z) + (_P2 + _P3 * z) * z2 + ((_P4 + _P5 * z) + (_P6 + _P7 * z) * z2) * z4
    high = (_P8 + _P9 * z) + (_P10 + _P11 * z) * z2 + (_P12 + _P13 * z) * z4
    r = s + s * (z * (low + high * (z4 * z4)))
    r = _HALF_PI_HI - (2.0 * r - _HALF_PI_LO) if large else r
    return math.copysign(r, x)


def fit_coefficients(degree: int = DEGREE, nodes: int = 400, digits: int = 50) -> list[float]:
    """The least-squares polynomial of ``degree`` for (asin(√z) − √z)/z^{3/2} on [0, 1/4] at
    ``nodes`` Chebyshev nodes, solved in mpmath at ``digits`` digits, rounded to doubles.

    ``fit_coefficients() == list(COEFFICIENTS)`` (tests/test_arcsine.py); it takes a second.
    """
    import mpmath as mp

    with mp.workdps(digits):
        def target(z):
            s = mp.sqrt(z)
            return (mp.asin(s) - s) / (s * z)

        zs = [mp.mpf(1) / 8 * (1 - mp.cos(mp.pi * (i + mp.mpf(1) / 2) / nodes))
              for i in range(nodes)]
        design = mp.matrix([[z ** j for j in range(degree + 1)] for z in zs])
        values = mp.matrix([target(z) for z in zs])
        solution = mp.lu_solve(design.T * design, design.T * values)
        return [float(solution[j]) for j in range(degree + 1)]
