"""Activation functions g, folding functions f and the folding coefficients
(docs/model.md §2.3–2.4).

Both the simulator kernels and the ODEs use these definitions. Options travel into the numba
kernels as small integer codes (``FOLD_CODES``, ``ACTIVATION_CODES``) so that one compiled kernel
serves every combination.

All scalar functions propagate NaN: ``fold(nan) = g(nan) = g'(nan) = nan``.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from analysis.jit import kernel

__all__ = ["FOLDS", "ACTIVATIONS", "FOLD_CODES", "ACTIVATION_CODES", "fold", "activation",
           "activation_derivative", "fold_array", "activation_array", "fold_numpy",
           "activation_numpy", "folding_coefficients"]

FOLDS = ("sign", "erf", "linear", "relu", "tanh")
ACTIVATIONS = ("erf", "relu", "linear")
FOLD_CODES = {name: code for code, name in enumerate(FOLDS)}
ACTIVATION_CODES = {name: code for code, name in enumerate(ACTIVATIONS)}

FOLD_SIGN, FOLD_ERF, FOLD_LINEAR, FOLD_RELU, FOLD_TANH = range(5)
G_ERF, G_RELU, G_LINEAR = range(3)

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


@kernel(inline=True)
def fold(u, code):
    """Folding function x = f(u): sign(u) | erf(u/√2) | u | max(u, 0) | tanh(u)."""
    if code == FOLD_SIGN:
        if u > 0.0:
            return 1.0
        if u < 0.0:
            return -1.0
        return u * 0.0  # 0 at 0, NaN at NaN (numpy's sign)
    if code == FOLD_ERF:
        return math.erf(u * _INV_SQRT2)
    if code == FOLD_LINEAR:
        return u
    if code == FOLD_RELU:
        if u > 0.0:
            return u
        if u <= 0.0:
            return 0.0
        return u
    return math.tanh(u)


@kernel(inline=True)
def activation(z, code):
    """Activation g(z): erf(z/√2) | max(z, 0) | z."""
    if code == G_ERF:
        return math.erf(z * _INV_SQRT2)
    if code == G_RELU:
        if z > 0.0:
            return z
        if z <= 0.0:
            return 0.0
        return z
    return z


@kernel(inline=True)
def activation_derivative(z, code):
    """Derivative g'(z): √(2/π) exp(−z²/2) | Θ(z) (1 for z > 0, else 0) | 1."""
    if code == G_ERF:
        return _SQRT_2_OVER_PI * math.exp(-0.5 * z * z)
    if code == G_RELU:
        if z > 0.0:
            return 1.0
        if z <= 0.0:
            return 0.0
        return z
    return 1.0 + 0.0 * z


@kernel()
def fold_array(u, code, out):
    """Apply :func:`fold` elementwise to ``u`` (any shape, C-contiguous), writing into ``out``."""
    uf = u.ravel()
    of = out.ravel()
    for i in range(uf.shape[0]):
        of[i] = fold(uf[i], code)
    return out


@kernel()
def activation_array(z, code, out):
    """Apply :func:`activation` elementwise to ``z`` (C-contiguous), writing into ``out``."""
    zf = z.ravel()
    of = out.ravel()
    for i in range(zf.shape[0]):
        of[i] = activation(zf[i], code)
    return out


def fold_numpy(u: np.ndarray, f: str) -> np.ndarray:
    """Folding function f on a float64 array (a convenience wrapper around :func:`fold_array`)."""
    u = np.ascontiguousarray(u, dtype=np.float64)
    return fold_array(u, FOLD_CODES[f], np.empty_like(u))


def activation_numpy(z: np.ndarray, g: str) -> np.ndarray:
    """Activation g on a float64 array (a convenience wrapper around :func:`activation_array`)."""
    z = np.ascontiguousarray(z, dtype=np.float64)
    return activation_array(z, ACTIVATION_CODES[g], np.empty_like(z))


def _tanh_coefficients() -> tuple[float, float, float]:
    from scipy import integrate

    def gauss(u: float) -> float:
        return math.exp(-0.5 * u * u) / math.sqrt(2.0 * math.pi)

    b = integrate.quad(lambda u: u * math.tanh(u) * gauss(u), -np.inf, np.inf,
                       epsabs=1e-14, epsrel=1e-13)[0]
    c_f = integrate.quad(lambda u: math.tanh(u) ** 2 * gauss(u), -np.inf, np.inf,
                         epsabs=1e-14, epsrel=1e-13)[0]
    return 0.0, b, c_f


@functools.cache
def folding_coefficients(f: str) -> tuple[float, float, float, float]:
    """Folding coefficients (a, b, c_f, ζ) of f for u ~ N(0, 1) (docs/model.md §2.4).

    a = E f(u), b = E[u f(u)], c_f = E[f(u)²], ζ = c_f − a² − b². Closed forms for sign, erf,
    linear and relu; tanh by adaptive quadrature.
    """
    if f == "sign":
        a, b, c_f = 0.0, math.sqrt(2.0 / math.pi), 1.0
    elif f == "erf":
        a, b, c_f = 0.0, 1.0 / math.sqrt(math.pi), 1.0 / 3.0
    elif f == "linear":
        a, b, c_f = 0.0, 1.0, 1.0
    elif f == "relu":
        a, b, c_f = 1.0 / math.sqrt(2.0 * math.pi), 0.5, 0.5
    elif f == "tanh":
        a, b, c_f = _tanh_coefficients()
    else:
        raise ValueError(f"f must be one of {', '.join(FOLDS)}, got {f!r}")
    return a, b, c_f, c_f - a * a - b * b
