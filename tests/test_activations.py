"""Folds f, activations g, their derivatives and the folding coefficients (docs/model.md §2.3,
§2.4; check §7.2's folding table).

analysis/activations.py:
1. folding_coefficients (a, b, c_f, ζ) against adaptive quadrature of the plain f of
   tests/naive.py and against the printed table of §2.4, to 1e-9;
2. the scalar kernels fold / activation / activation_derivative and their array forms against the
   plain definitions of tests/naive.py, their special points (sign(0) = 0, Θ(0) = 0) and NaN
   propagation (§2.3: every fold, activation and derivative maps NaN to NaN);
3. the runtime-code tables (FOLD_CODES, ACTIVATION_CODES and the named constants) against the
   name tuples FOLDS and ACTIVATIONS.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

from analysis.activations import (
    ACTIVATION_CODES,
    ACTIVATIONS,
    FOLD_CODES,
    FOLDS,
    activation,
    activation_derivative,
    activation_numpy,
    fold_numpy,
    folding_coefficients,
)
from analysis.activations import fold as fold_kernel
from naive import fold, g_act, g_prime


# ---------------------------------------------------------------------------------------------
# 1. Folding coefficients (§2.4)
# ---------------------------------------------------------------------------------------------

def _gauss(u: float) -> float:
    return math.exp(-0.5 * u * u) / math.sqrt(2.0 * math.pi)


def _quad_std_normal(h) -> float:
    """E[h(u)], u ~ N(0, 1), split at the kink/jump at 0."""
    opts = dict(epsabs=1e-14, epsrel=1e-13, limit=200)
    left = integrate.quad(lambda u: h(u) * _gauss(u), -np.inf, 0.0, **opts)[0]
    right = integrate.quad(lambda u: h(u) * _gauss(u), 0.0, np.inf, **opts)[0]
    return left + right


def _scalar_fold(f: str):
    return lambda u: float(fold(np.float64(u), f))


# The printed table of docs/model.md §2.4 (exact expressions where given, else the printed decimals).
FOLDING_TABLE = {
    "sign": (0.0, math.sqrt(2 / math.pi), 1.0, 1 - 2 / math.pi),
    "erf": (0.0, 1 / math.sqrt(math.pi), 1 / 3, 1 / 3 - 1 / math.pi),
    "linear": (0.0, 1.0, 1.0, 0.0),
    "tanh": (0.0, 0.6057055096, 0.3942944904, 0.0274153260),
    "relu": (1 / math.sqrt(2 * math.pi), 0.5, 0.5, 0.25 - 1 / (2 * math.pi)),
}
PRINTED_DECIMALS = {
    ("sign", "b"): 0.7978845608, ("sign", "zeta"): 0.3633802276,
    ("erf", "b"): 0.5641895835, ("erf", "zeta"): 0.0150234471,
    ("tanh", "b"): 0.6057055096, ("tanh", "c_f"): 0.3942944904, ("tanh", "zeta"): 0.0274153260,
    ("relu", "a"): 0.3989422804, ("relu", "zeta"): 0.0908450569,
}


@pytest.mark.parametrize("f", FOLDS)
def test_folding_coefficients_match_quadrature_and_table(f):
    h = _scalar_fold(f)
    a = _quad_std_normal(h)
    b = _quad_std_normal(lambda u: u * h(u))
    c_f = _quad_std_normal(lambda u: h(u) ** 2)
    zeta = c_f - a * a - b * b
    got = folding_coefficients(f)
    assert len(got) == 4
    np.testing.assert_allclose(got, (a, b, c_f, zeta), rtol=0, atol=1e-9)
    np.testing.assert_allclose(got, FOLDING_TABLE[f], rtol=0, atol=1e-9)
    np.testing.assert_allclose((a, b, c_f, zeta), FOLDING_TABLE[f], rtol=0, atol=1e-9)
    # the quadrature through the package's own fold agrees with the plain formula
    a_pkg = _quad_std_normal(lambda u: float(fold_numpy(np.array([u]), f)[0]))
    assert abs(a_pkg - a) < 1e-12
    # ζ is consistent with (a, b, c_f)
    assert got[3] == pytest.approx(got[2] - got[0] ** 2 - got[1] ** 2, abs=1e-15)


def test_folding_table_printed_decimals():
    names = ("a", "b", "c_f", "zeta")
    for (f, name), printed in PRINTED_DECIMALS.items():
        value = folding_coefficients(f)[names.index(name)]
        assert abs(value - printed) < 1e-9, (f, name, value, printed)


def test_tanh_b_plus_cf_is_one():
    _, b, c_f, _ = folding_coefficients("tanh")
    assert abs(b + c_f - 1.0) < 1e-9
    # and E[u tanh u] = E[sech² u] by quadrature, independently of the package
    tanh = _scalar_fold("tanh")
    b_q = _quad_std_normal(lambda u: u * tanh(u))
    sech2 = _quad_std_normal(lambda u: 1.0 / math.cosh(u) ** 2 if abs(u) < 300 else 0.0)
    assert abs(b_q - sech2) < 1e-12
    assert abs(b - sech2) < 1e-9


def test_only_relu_fold_has_nonzero_mean():
    for f in FOLDS:
        a = folding_coefficients(f)[0]
        assert (a != 0.0) == (f == "relu"), (f, a)


# ---------------------------------------------------------------------------------------------
# 2. Scalar/array folds and activations: definitions, special points and NaN propagation
# ---------------------------------------------------------------------------------------------

GRID = np.concatenate([np.linspace(-6.0, 6.0, 241), [-1e-300, 1e-300, -0.0, 0.0, 40.0, -40.0]])


@pytest.mark.parametrize("f", FOLDS)
def test_fold_matches_definition(f):
    np.testing.assert_allclose(fold_numpy(GRID, f), fold(GRID, f), rtol=1e-15, atol=1e-300)
    code = FOLD_CODES[f]
    scalars = np.array([fold_kernel(float(u), code) for u in GRID])
    np.testing.assert_allclose(scalars, fold(GRID, f), rtol=1e-15, atol=1e-300)
    # shape is preserved
    assert fold_numpy(GRID.reshape(-1, 1), f).shape == (GRID.size, 1)


@pytest.mark.parametrize("g", ACTIVATIONS)
def test_activation_and_derivative_match_definition(g):
    code = ACTIVATION_CODES[g]
    np.testing.assert_allclose(activation_numpy(GRID, g), g_act(GRID, g), rtol=1e-15, atol=1e-300)
    np.testing.assert_allclose([activation(float(z), code) for z in GRID], g_act(GRID, g),
                               rtol=1e-15, atol=1e-300)
    np.testing.assert_allclose([activation_derivative(float(z), code) for z in GRID],
                               g_prime(GRID, g), rtol=1e-14, atol=1e-300)


@pytest.mark.parametrize("f", FOLDS)
def test_fold_propagates_nan(f):
    out = fold_numpy(np.array([np.nan, 1.0, np.nan]), f)
    assert np.isnan(out[0]) and np.isnan(out[2]) and not np.isnan(out[1])
    assert np.all(np.isnan(fold_numpy(np.nan, f)))
    assert math.isnan(fold_kernel(math.nan, FOLD_CODES[f]))


@pytest.mark.parametrize("g", ACTIVATIONS)
def test_activation_propagates_nan(g):
    out = activation_numpy(np.array([np.nan, -1.0, np.nan]), g)
    assert np.isnan(out[0]) and np.isnan(out[2]) and not np.isnan(out[1])
    assert np.all(np.isnan(activation_numpy(np.nan, g)))
    code = ACTIVATION_CODES[g]
    assert math.isnan(activation(math.nan, code))
    assert math.isnan(activation_derivative(math.nan, code))


def test_special_points():
    sign = FOLD_CODES["sign"]
    assert fold_kernel(0.0, sign) == 0.0
    assert fold_kernel(-0.0, sign) == 0.0
    assert fold_numpy(np.array([0.0]), "sign")[0] == 0.0
    assert fold_kernel(2.5, sign) == 1.0 and fold_kernel(-2.5, sign) == -1.0
    assert fold_kernel(-1.0, FOLD_CODES["relu"]) == 0.0
    assert fold_numpy(np.array([-1.0]), "relu")[0] == 0.0
    relu = ACTIVATION_CODES["relu"]
    assert activation(-1.0, relu) == 0.0
    assert activation_numpy(np.array([-1.0]), "relu")[0] == 0.0
    assert activation_derivative(-1.0, relu) == 0.0
    assert activation_derivative(0.0, relu) == 0.0  # Θ(0) = 0
    assert activation_derivative(1e-300, relu) == 1.0


# ---------------------------------------------------------------------------------------------
# 3. Runtime codes
# ---------------------------------------------------------------------------------------------

def test_code_tables_follow_the_name_tuples():
    """One compiled kernel serves every option through small integer codes: each table maps the
    i-th name to i, and the named constants the kernels branch on are those codes."""
    import analysis.activations as act

    assert FOLDS == ("sign", "erf", "linear", "relu", "tanh")          # docs/model.md §2.3
    assert ACTIVATIONS == ("erf", "relu", "linear")
    assert FOLD_CODES == {name: i for i, name in enumerate(FOLDS)}
    assert ACTIVATION_CODES == {name: i for i, name in enumerate(ACTIVATIONS)}
    for name in FOLDS:
        assert getattr(act, f"FOLD_{name.upper()}") == FOLD_CODES[name], name
    for name in ACTIVATIONS:
        assert getattr(act, f"G_{name.upper()}") == ACTIVATION_CODES[name], name


def test_every_code_selects_its_own_function():
    """No two codes give the same function: each code's kernel matches its own definition and
    differs from every other definition somewhere on the grid."""
    for f, code in FOLD_CODES.items():
        got = np.array([fold_kernel(float(u), code) for u in GRID])
        for other in FOLDS:
            same = np.allclose(got, fold(GRID, other), rtol=1e-15, atol=1e-300)
            assert same == (other == f), (f, other)
    for g, code in ACTIVATION_CODES.items():
        got = np.array([activation(float(z), code) for z in GRID])
        for other in ACTIVATIONS:
            same = np.allclose(got, g_act(GRID, other), rtol=1e-15, atol=1e-300)
            assert same == (other == g), (g, other)


def test_folding_coefficients_refuse_an_unknown_fold_and_are_computed_once():
    with pytest.raises(ValueError, match="f must be one of"):
        folding_coefficients("gelu")
    assert folding_coefficients("tanh") is folding_coefficients("tanh")  # cached per process
