"""analysis.arcsine: the vectorisable arcsine against mpmath and libm."""

import math

import mpmath as mp
import numpy as np
import pytest
from numba import njit

from analysis.arcsine import COEFFICIENTS, arcsine, fit_coefficients


@njit(cache=False)
def _arcsines(x, out):
    for i in range(x.shape[0]):
        out[i] = arcsine(x[i])
    return out


def _values(x):
    x = np.ascontiguousarray(x, dtype=np.float64)
    return _arcsines(x, np.empty_like(x))


def _arguments():
    rng = np.random.default_rng(0)
    edge = 1.0 - np.logspace(-16, -1, 2000)
    return np.concatenate([rng.uniform(-1, 1, 200_000), rng.uniform(0.499, 0.501, 20_000),
                           edge, -edge, np.logspace(-300, -1, 500), -np.logspace(-300, -1, 500),
                           np.nextafter(0.5, [0.0, 1.0]), [0.5, -0.5, 1.0, -1.0]])


def test_within_two_ulp_of_libm_everywhere_on_the_interval():
    x = _arguments()
    got, ref = _values(x), np.arcsin(x)
    ulp = np.abs(got - ref) / np.spacing(np.abs(ref))
    assert ulp.max() <= 2.0
    assert ulp.mean() < 0.3


def test_within_5e_16_of_mpmath():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.uniform(-1, 1, 1500), 1 - np.logspace(-15, -1, 100),
                        np.linspace(0.45, 0.55, 101)])
    got = _values(x)
    with mp.workdps(40):
        worst = max(abs((mp.mpf(float(g)) - mp.asin(mp.mpf(float(v)))) / mp.asin(mp.mpf(float(v))))
                    for g, v in zip(got, x) if v != 0.0)
    assert worst < 5e-16


def test_exact_at_zero_and_the_ends_and_odd():
    got = _values([0.0, -0.0, 1.0, -1.0])
    assert got[0] == 0.0 and math.copysign(1.0, got[1]) == -1.0
    assert got[2] == math.pi / 2 and got[3] == -math.pi / 2
    x = np.random.default_rng(2).uniform(0, 1, 1000)
    assert np.array_equal(_values(-x), -_values(x))


@pytest.mark.parametrize("bad", [1.0 + 1e-15, -1.5, math.inf, -math.inf, math.nan])
def test_outside_the_domain_gives_nan(bad):
    assert math.isnan(_values([bad])[0])


def test_the_coefficients_are_the_fit_they_say_they_are():
    assert fit_coefficients() == list(COEFFICIENTS)
