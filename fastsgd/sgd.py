"""The per-sample online SGD kernel (MODEL.md §3.1).

One generation block holds, per sample, the pre-folding inputs u = F c/√D and the teacher fields
ν = W̃ c/√D (one row of the GEMM C·[F/√D | W̃ᵀ/√D]). :func:`sgd_steps` folds each row and runs one
SGD step per row, strictly in order: one fresh sample per step.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from analysis.activations import (FOLD_LINEAR, FOLD_RELU, FOLD_SIGN, activation,
                                  activation_derivative, fold)
from fastsgd.core import dot

INPUT_HMM, INPUT_EQUIVALENT_GAUSSIAN = 0, 1

#: |ŷ| above this bound counts as divergence (MODEL.md §3.4).
DIVERGENCE_BOUND = 1e8


@njit(cache=True, nogil=True, inline="always")
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


# Reassociation lets LLVM vectorise the λ sums and fuse multiply-adds, in an order fixed by the
# compiled code (so results do not depend on threads); no flag that assumes finite values is
# set, so NaN and inf still reach the divergence check.
_FAST = {"reassoc", "contract"}


@njit(cache=True, nogil=True, fastmath=_FAST)
def sgd_steps(U, row_start, row_stop, w, v, A, f_code, g_code, train_second_layer, lr,
              input_model, fold_a, fold_b, fold_noise, xi, label_noise, x, lam, coef,
              yhat_out):
    """Run one SGD step for each row ``row_start … row_stop − 1`` of the block ``U``.

    For each row (sample μ):
      x = f(u)  (hmm)  or  x = a + b·u + √ζ·ξ  (equivalent_gaussian),
      ν_n = U[row, N + n],  y = Σ_n A_n g(ν_n) + σξ_y,
      λ_k = w_k·x/√N,  ŷ = Σ_k v_k g(λ_k),  Δ = y − ŷ,
      w_k ← w_k + (η/√N) v_k Δ g'(λ_k) x,
      v_k ← v_k + (η/N) Δ g(λ_k)   (if the second layer is trained),
    all from pre-step values. ŷ of each row is stored in ``yhat_out[row]``.

    Parameters
    ----------
    U : (n, N + M) float64 or float32 block; ``xi`` (n, N) the ξ block (equivalent_gaussian only)
        and ``label_noise`` (n,) the σξ_y of each row (zeros without output noise).
    w, v, A : weights, updated in place (w, v).
    x, lam, coef : scratch arrays of sizes N, K, K.

    Returns
    -------
    int
        −1 if every step was finite, else the row at which ŷ stopped being finite or exceeded
        ``DIVERGENCE_BOUND``; that row's update is not applied.
    """
    K, N = w.shape
    M = A.shape[0]
    inv_sqrt_n = 1.0 / math.sqrt(N)
    w_rate = lr * inv_sqrt_n
    v_rate = lr / N
    for row in range(row_start, row_stop):
        if input_model == INPUT_HMM:
            _fold_row(U, row, x, f_code, N)
        else:
            for i in range(N):
                x[i] = fold_a + fold_b * np.float64(U[row, i]) + fold_noise * xi[row, i]
        y = label_noise[row]
        for n in range(M):
            y += A[n] * activation(np.float64(U[row, N + n]), g_code)
        yhat = 0.0
        for k in range(K):
            lam[k] = dot(w[k], x) * inv_sqrt_n
            yhat += v[k] * activation(lam[k], g_code)
        yhat_out[row] = yhat
        if not abs(yhat) <= DIVERGENCE_BOUND:
            return row
        delta = y - yhat
        for k in range(K):
            coef[k] = w_rate * v[k] * delta * activation_derivative(lam[k], g_code)
        if train_second_layer:
            for k in range(K):
                v[k] += v_rate * delta * activation(lam[k], g_code)
        for k in range(K):
            ck = coef[k]
            for i in range(N):
                w[k, i] += ck * x[i]
    return -1


@njit(cache=True, nogil=True)
def all_finite(a):
    """True if every entry of ``a`` is finite."""
    flat = a.ravel()
    for i in range(flat.shape[0]):
        if not math.isfinite(flat[i]):
            return False
    return True
