"""The per-sample online SGD kernel (docs/model.md §3.1).

One generation block holds, per sample, the pre-folding inputs u = F c/√D and the teacher fields
ν = W̃ c/√D (one row of the GEMM C·[F/√D | W̃ᵀ/√D]). :func:`sgd_steps` folds each row and runs one
SGD step per row, strictly in order: one fresh sample per step.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from analysis.activations import (ACTIVATION_CODES, FOLD_CODES, FOLD_LINEAR, FOLD_RELU,
                                  FOLD_SIGN, activation, activation_derivative, fold,
                                  folding_coefficients)
from analysis.jit import kernel
from fastsgd.core import dot

INPUT_MODELS = ("hmm", "equivalent_gaussian")
#: The kernel's runtime codes of the input models.
INPUT_MODEL_CODES = {name: code for code, name in enumerate(INPUT_MODELS)}
INPUT_HMM, INPUT_EQUIVALENT_GAUSSIAN = (INPUT_MODEL_CODES[name] for name in INPUT_MODELS)

#: |ŷ| above this bound counts as divergence (docs/model.md §3.4).
DIVERGENCE_BOUND = 1e8


class SgdParameters(NamedTuple):
    """What :func:`sgd_steps` needs besides the block and the weights; built by
    :func:`sgd_parameters` only."""

    A: np.ndarray            # (M,) teacher second layer
    f_code: int
    g_code: int
    train_second_layer: bool
    lr: float
    input_model: int
    fold_a: float            # a, b, √ζ of f: the equivalent Gaussian inputs a + b·u + √ζ·ξ
    fold_b: float
    fold_noise: float
    center: bool             # the student reads x − E x (docs/model.md §10.5)
    input_mean: np.ndarray   # (N,) E x when centring, else (0,)


class SgdBuffers(NamedTuple):
    """Per-block inputs and scratch of :func:`sgd_steps`; built by :func:`sgd_buffers` only."""

    xi: np.ndarray           # (rows, N) ξ of the equivalent Gaussian inputs, else (1, 1)
    label_noise: np.ndarray  # (rows,) σξ_y of each row (zeros without output noise)
    x: np.ndarray            # (N,) the current input
    lam: np.ndarray          # (K,) the current student fields
    coef: np.ndarray         # (K,) the current first-layer step sizes
    yhat: np.ndarray         # (rows,) ŷ of each row


def sgd_parameters(A: np.ndarray, *, f: str, g: str, train_second_layer: bool, lr: float,
                   input_model: str, input_mean: np.ndarray | None = None) -> SgdParameters:
    """The kernel's options as runtime codes, with the folding coefficients of f and, for
    centred inputs, E x."""
    a, b, _, zeta = folding_coefficients(f)
    center = input_mean is not None
    mean = np.ascontiguousarray(input_mean, dtype=np.float64) if center else np.empty(0)
    return SgdParameters(A=A, f_code=FOLD_CODES[f], g_code=ACTIVATION_CODES[g],
                         train_second_layer=bool(train_second_layer), lr=float(lr),
                         input_model=INPUT_MODEL_CODES[input_model], fold_a=a, fold_b=b,
                         fold_noise=math.sqrt(zeta), center=center, input_mean=mean)


def sgd_buffers(rows: int, N: int, K: int, equivalent_gaussian: bool) -> SgdBuffers:
    """Buffers for blocks of ``rows`` samples."""
    return SgdBuffers(xi=np.empty((rows, N) if equivalent_gaussian else (1, 1)),
                      label_noise=np.zeros(rows), x=np.empty(N), lam=np.empty(K),
                      coef=np.empty(K), yhat=np.empty(rows))


@kernel(inline=True)
def _fold_row(U, row, x, f_code, N):
    # One loop per fold, the branch outside it, so that the simple folds vectorise.
    if f_code == FOLD_SIGN:
        for i in range(N):
            x[i] = fold(np.float64(U[row, i]), FOLD_SIGN)
    elif f_code == FOLD_LINEAR:
        for i in range(N):
            x[i] = U[row, i]
    elif f_code == FOLD_RELU:
        for i in range(N):
            x[i] = fold(np.float64(U[row, i]), FOLD_RELU)
    else:
        for i in range(N):
            x[i] = fold(np.float64(U[row, i]), f_code)


@kernel(inline=True)
def _input_row(U, row, x, params, buffers, N):
    """x = f(u) (hmm) or a + b·u + √ζ·ξ (equivalent_gaussian) of one row, minus E x when the
    inputs are centred (docs/model.md §10.5)."""
    if params.input_model == INPUT_HMM:
        _fold_row(U, row, x, params.f_code, N)
    else:
        for i in range(N):
            x[i] = (params.fold_a + params.fold_b * np.float64(U[row, i])
                    + params.fold_noise * buffers.xi[row, i])
    if params.center:
        for i in range(N):
            x[i] -= params.input_mean[i]


# Reassociation lets LLVM vectorise the λ sums and fuse multiply-adds (analysis/jit.py).
@kernel(reassociate=True)
def sgd_steps(U, row_start, row_stop, w, v, params, buffers):
    """Run one SGD step for each row ``row_start … row_stop − 1`` of the block ``U``.

    For each row (sample μ):
      x = f(u)  (hmm)  or  x = a + b·u + √ζ·ξ  (equivalent_gaussian),  minus E x if centring,
      ν_n = U[row, N + n],  y = Σ_n A_n g(ν_n) + σξ_y,
      λ_k = w_k·x/√N,  ŷ = Σ_k v_k g(λ_k),  Δ = y − ŷ,
      w_k ← w_k + (η/√N) v_k Δ g'(λ_k) x,
      v_k ← v_k + (η/N) Δ g(λ_k)   (if the second layer is trained),
    all from pre-step values. ŷ of each row is stored in ``buffers.yhat[row]``.

    Parameters
    ----------
    U : (n, N + M) float64 or float32 block.
    w, v : weights, updated in place.
    params : :class:`SgdParameters`; buffers : :class:`SgdBuffers` (ξ and σξ_y of the block's
        rows, scratch).

    Returns
    -------
    int
        −1 if every step was finite, else the row at which ŷ stopped being finite or exceeded
        ``DIVERGENCE_BOUND``; that row's update is not applied.
    """
    A, g_code, lr = params.A, params.g_code, params.lr
    x, lam, coef = buffers.x, buffers.lam, buffers.coef
    K, N = w.shape
    M = A.shape[0]
    inv_sqrt_n = 1.0 / math.sqrt(N)
    w_rate = lr * inv_sqrt_n
    v_rate = lr / N
    for row in range(row_start, row_stop):
        _input_row(U, row, x, params, buffers, N)
        y = buffers.label_noise[row]
        for n in range(M):
            y += A[n] * activation(np.float64(U[row, N + n]), g_code)
        yhat = 0.0
        for k in range(K):
            lam[k] = dot(w[k], x) * inv_sqrt_n
            coef[k] = activation(lam[k], g_code)   # g(λ_k) until the step sizes overwrite it
            yhat += v[k] * coef[k]
        buffers.yhat[row] = yhat
        if not abs(yhat) <= DIVERGENCE_BOUND:
            return row
        delta = y - yhat
        for k in range(K):
            g_k = coef[k]
            coef[k] = w_rate * v[k] * delta * activation_derivative(lam[k], g_code)
            if params.train_second_layer:
                v[k] += v_rate * delta * g_k
        for k in range(K):
            ck = coef[k]
            for i in range(N):
                w[k, i] += ck * x[i]
    return -1


def all_finite(a: np.ndarray) -> bool:
    """True if every entry of ``a`` is finite.

    NumPy, not a kernel: it runs once per generation block (microseconds against the block's
    milliseconds), and a kernel compiled for the weights' two shapes cost a cold start 0.5 s.
    """
    return bool(np.isfinite(a).all())
