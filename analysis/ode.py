"""Gaussian ODEs for online SGD (MODEL.md §5): Saad–Solla for i.i.d. inputs
(:func:`integrate_scm`) and the hidden manifold model (:func:`integrate_hmm`), started from a
seed's exact spectral state (:class:`HmmInitialState`, MODEL.md §4.4).

Both right-hand sides and both integrators (explicit Euler with the published integrators'
semantics, classical RK4) run in one numba kernel; the integrals come from
:mod:`analysis.integrals` and the folding coefficients from :mod:`analysis.activations`, the same
definitions the simulator uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from analysis.activations import (ACTIVATION_CODES, ACTIVATIONS, G_ERF, G_RELU,
                                  folding_coefficients)
from analysis.integrals import (erf_i3_lambda3, erf_i3_value, erf_i4_lambda0, erf_i4_lambda4,
                                erf_i4_lambda_side, erf_i4_value, generalisation_error_kernel,
                                i2_at, i3_at, i4_at, j2_at, relu_i4_sums)
from analysis.orthant import NODES, WEIGHTS


@dataclass(frozen=True)
class HmmInitialState:
    """Exact spectral state of one seed at step 0, from which the HMM ODE starts (MODEL.md §4.4).

    Attributes
    ----------
    rhos : (D,) eigenvalues ρ_τ of Ω = FᵀF/N, ascending; each a spectral bin of weight 1/D.
    r : (K, M, D) r^{kn}(ρ_τ) = Γ_kτ ω_nτ.
    sigma : (K, K, D) σ^{kl}(ρ_τ) = Γ_kτ Γ_lτ.
    W : (K, K) W = w wᵀ/N.
    T : (M, M) T = W̃ W̃ᵀ/D.
    T_tilde : (M, M) T̃ = W̃ Ω W̃ᵀ/D.
    v : (K,) second-layer weights.
    A : (M,) teacher second layer.
    omega : optional (M, D) teacher projections ω_nτ (per-eigenvalue variant).
    """

    rhos: np.ndarray
    r: np.ndarray
    sigma: np.ndarray
    W: np.ndarray
    T: np.ndarray
    T_tilde: np.ndarray
    v: np.ndarray
    A: np.ndarray
    omega: np.ndarray | None = None

    def __post_init__(self) -> None:
        D = np.shape(self.rhos)[0]
        K, M = np.shape(self.r)[:2]
        expected = {"rhos": (D,), "r": (K, M, D), "sigma": (K, K, D), "W": (K, K),
                    "T": (M, M), "T_tilde": (M, M), "v": (K,), "A": (M,)}
        if self.omega is not None:
            expected["omega"] = (M, D)
        for name, shape in expected.items():
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if value.shape != shape:
                raise ValueError(f"HmmInitialState.{name} must have shape {shape}, "
                                 f"got {value.shape}")
            object.__setattr__(self, name, value)

    @property
    def K(self) -> int:
        return self.r.shape[0]

    @property
    def M(self) -> int:
        return self.r.shape[1]

    @property
    def D(self) -> int:
        return self.rhos.shape[0]


# ====================================================================== the ODE right-hand sides
SCM, HMM = 0, 1
EULER, RK4 = 0, 1
METHODS = {"euler": EULER, "rk4": RK4}
_DEGENERATE = 1e-12


@njit(cache=True, nogil=True, error_model="numpy")
def _field_integrals(C, K, M, v, A, g, sigma, train_v, drift, i4sum, j2, i2u, scratch):
    """Sums over the fields that every equation needs, with u = (−v, A) over all K + M fields:
    drift[k, b] = Σ_a u_a I3(k, b, a); i4sum[k, l] = 𝓘4(k, l) = Σ_{a,b} u_a u_b I4(k, l, a, b);
    j2[k, l] = σ² J2(k, l); i2u[k] = Σ_a u_a I2(k, a) (only when v is trained: dv/dt alone
    needs it).

    For erf the parts of I3 and I4 that depend on fewer indices (Λ₃ per (k, a); Λ₄ per (k, l),
    Λ₁ per a) are computed once per evaluation from the same formulas as
    :func:`analysis.integrals.i3_entries` and :func:`analysis.integrals.i4_entries`. For relu
    𝓘4 comes from :func:`analysis.integrals.relu_i4_sums`, which computes the one- and
    two-field parts once per evaluation; only terms with four distinct fields need a
    quadrature.
    ``scratch`` is (2, K + M)."""
    n = K + M
    u = scratch[0]
    side = scratch[1]
    for j in range(K):
        u[j] = -v[j]
    for m in range(M):
        u[K + m] = A[m]
    erf = g == G_ERF
    if g == G_RELU:
        relu_i4_sums(C, K, u, i4sum, NODES, WEIGHTS)
    for k in range(K):
        acc2 = 0.0
        if train_v:
            for a in range(n):
                acc2 += u[a] * i2_at(C, k, a, g)
        i2u[k] = acc2
        if erf:
            for a in range(n):
                side[a] = u[a] / math.sqrt(erf_i3_lambda3(C[k, k], C[k, a], C[a, a]))
            for b in range(n):
                acc = 0.0
                for a in range(n):
                    acc += erf_i3_value(C[k, k], C[k, b], C[k, a], C[b, a], side[a])
                drift[k, b] = acc
        else:
            for b in range(n):
                acc = 0.0
                for a in range(n):
                    acc += u[a] * i3_at(C, k, b, a, g)
                drift[k, b] = acc
    for k in range(K):
        for l in range(k, K):
            acc = i4sum[k, l]       # relu: relu_i4_sums filled it
            if erf:
                acc = 0.0
                c00, c01, c11 = C[k, k], C[k, l], C[l, l]
                lam4 = erf_i4_lambda4(c00, c01, c11)
                inv4 = 1.0 / math.sqrt(lam4)
                for a in range(n):
                    side[a] = 1.0 / math.sqrt(erf_i4_lambda_side(lam4, c00, c01, c11, C[k, a],
                                                                 C[l, a], C[a, a]))
                for a in range(n):
                    for b in range(a, n):
                        lam0 = erf_i4_lambda0(lam4, c00, c01, c11, C[k, a], C[k, b], C[l, a],
                                              C[l, b], C[a, b])
                        weight = u[a] * u[b] if a == b else 2.0 * u[a] * u[b]
                        acc += weight * erf_i4_value(inv4, lam0, side[a], side[b])
            elif g != G_RELU:
                acc = 0.0
                for a in range(n):
                    acc += u[a] * u[a] * i4_at(C, k, l, a, a, g)
                    for b in range(a + 1, n):
                        acc += 2.0 * u[a] * u[b] * i4_at(C, k, l, a, b, g)
            i4sum[k, l] = acc
            i4sum[l, k] = acc
            noise = sigma * sigma * j2_at(C, k, l, g) if sigma > 0.0 else 0.0
            j2[k, l] = noise
            j2[l, k] = noise


@njit(cache=True, nogil=True, error_model="numpy")
def _scm_rhs(y, dy, K, M, T, A, lr, g, sigma, train_v, C, drift, i4sum, j2, i2u, scratch):
    """Saad–Solla ODE (MODEL.md §5.1) on y = [Q (K·K), R (K·M), v (K)]. Returns False when C is
    non-finite. (Indexes y and dy directly: array views cost more than the arithmetic here.)"""
    KK = K * K
    KKM = KK + K * M
    for k in range(K):
        for l in range(K):
            C[k, l] = y[k * K + l]
        for n in range(M):
            C[k, K + n] = C[K + n, k] = y[KK + k * M + n]
    for n in range(M):
        for m in range(M):
            C[K + n, K + m] = T[n, m]
    if not _covariance_ok(C, K, M, False):
        return False
    _field_integrals(C, K, M, y[KKM:], A, g, sigma, train_v, drift, i4sum, j2, i2u, scratch)
    for k in range(K):
        vk = y[KKM + k]
        for l in range(K):
            vl = y[KKM + l]
            dy[k * K + l] = (lr * (vk * drift[k, l] + vl * drift[l, k])
                             + lr * lr * vk * vl * (i4sum[k, l] + j2[k, l]))
        for n in range(M):
            dy[KK + k * M + n] = lr * vk * drift[k, K + n]
        dy[KKM + k] = lr * i2u[k] if train_v else 0.0
    return _all_finite(dy)


@njit(cache=True, nogil=True, error_model="numpy")
def _covariance_ok(C, K, M, check_determinants):
    """Finite C with positive field variances; with ``check_determinants`` (the HMM bracket
    divides by them) every det_kj and det_kn must exceed 1e-12 × the product of its diagonal
    entries (MODEL.md §5.5). The Saad–Solla equations divide by no determinant: a student that
    has learned the teacher exactly (singular C) is their fixed point, not a failure."""
    n = K + M
    for a in range(n):
        if not (C[a, a] > 0.0 and math.isfinite(C[a, a])):
            return False
        for b in range(n):
            if not math.isfinite(C[a, b]):
                return False
    if not check_determinants:
        return True
    for k in range(K):
        for b in range(n):
            if b != k:
                det = C[k, k] * C[b, b] - C[k, b] * C[k, b]
                if not det > _DEGENERATE * C[k, k] * C[b, b]:
                    return False
    return True


@njit(cache=True, nogil=True, error_model="numpy")
def _all_finite(a):
    for i in range(a.shape[0]):
        if not math.isfinite(a[i]):
            return False
    return True


# Loops over the D eigenvalues may be reassociated (vectorised sums, fused multiply-adds); no
# flag that assumes finite values is set, so NaN and inf still reach the failure checks.
_FAST = {"reassoc", "contract"}


@njit(cache=True, nogil=True, error_model="numpy", fastmath=_FAST)
def _hmm_closure(y, K, M, D, b, zeta, Q, R, Sigma):
    """Σ = (1/D)Σ_τ σ(ρ_τ), Q = ζW + b²Σ, R = (b/D)Σ_τ r(ρ_τ)."""
    r = y[:K * M * D].reshape((K, M, D))
    sig = y[K * M * D:K * M * D + K * K * D].reshape((K, K, D))
    W = y[K * M * D + K * K * D:K * M * D + K * K * D + K * K].reshape((K, K))
    for k in range(K):
        for l in range(K):
            acc = 0.0
            for t in range(D):
                acc += sig[k, l, t]
            Sigma[k, l] = acc / D
            Q[k, l] = zeta * W[k, l] + b * b * Sigma[k, l]
        for n in range(M):
            acc = 0.0
            for t in range(D):
                acc += r[k, n, t]
            R[k, n] = b * acc / D


@njit(cache=True, nogil=True, error_model="numpy", fastmath=_FAST)
def _hmm_densities(r, sig, dr, dsig, Yr, Bmat, gamma, v, rate, d_rho, b_rho, noise_rho, noise,
                   acc_x, acc_y):
    """The density equations, given B, γ (see :func:`_hmm_rhs`), with d(ρ) = ζδ + b²ρ,
    bρ and ζρ + b²ρ²/δ tabulated over the eigenvalues; ``noise`` (K, K) is
    η² v_k v_l (𝓘4 + σ²J2)."""
    K, M, D = r.shape
    for k in range(K):
        vk = rate * v[k]
        for m in range(M):
            acc_x[:] = 0.0
            acc_y[:] = 0.0
            for j in range(K):
                c = Bmat[k, j]
                for t in range(D):
                    acc_x[t] += c * r[j, m, t]
            for n in range(M):
                c = gamma[k, n]
                for t in range(D):
                    acc_y[t] += c * Yr[n, m, t]
            for t in range(D):
                dr[k, m, t] = vk * (d_rho[t] * acc_x[t] + b_rho[t] * acc_y[t])
    for k in range(K):
        for l in range(k, K):
            acc_x[:] = 0.0
            acc_y[:] = 0.0
            for j in range(K):
                ck = v[k] * Bmat[k, j]
                cl = v[l] * Bmat[l, j]
                for t in range(D):
                    acc_x[t] += ck * sig[j, l, t] + cl * sig[j, k, t]
            for n in range(M):
                ck = v[k] * gamma[k, n]
                cl = v[l] * gamma[l, n]
                for t in range(D):
                    acc_y[t] += ck * r[l, n, t] + cl * r[k, n, t]
            nkl = noise[k, l]
            for t in range(D):
                value = rate * (d_rho[t] * acc_x[t] + b_rho[t] * acc_y[t]) + nkl * noise_rho[t]
                dsig[k, l, t] = value
                dsig[l, k, t] = value


@njit(cache=True, nogil=True, error_model="numpy")
def _hmm_rhs(y, dy, K, M, D, rhos, Yr, T, A, lr, delta, b, zeta, c_f, g, sigma, train_v,
             C, drift, i4sum, j2, i2u, Bmat, gamma, work_kk, work_d, scratch):
    """Hidden-manifold ODE (MODEL.md §5.2) on y = [r (K·M·D), σ (K·K·D), W (K·K), v (K)].

    With the bracket written as 𝓛_k[X, Y](ρ) = v_k {d(ρ) Σ_j B_kj X^j + bρ Σ_n γ_kn Y^n}:
      B_kk = −Σ_{j≠k} v_j [Q^{jj}I3(k,k,j) − Q^{kj}I3(k,j,j)]/det_kj − v_k I3(k,k,k)/Q^{kk}
             + Σ_n A_n [T^{nn}I3(k,k,n) − R^{kn}I3(k,n,n)]/det_kn,
      B_kj = −v_j [Q^{kk}I3(k,j,j) − Q^{kj}I3(k,k,j)]/det_kj  (j ≠ k),
      γ_kn = A_n [Q^{kk}I3(k,n,n) − R^{kn}I3(k,k,n)]/det_kn.
    ``Yr`` (M, M, D) holds the r-equation's teacher term Y^n for each m: T̃^{nm} or ω_nτ ω_mτ.
    """
    KMD = K * M * D
    KKD = K * K * D
    d_rho, b_rho, noise_rho, acc_x, acc_y = work_d[0], work_d[1], work_d[2], work_d[3], work_d[4]
    Sigma, noise = work_kk[0], work_kk[1]
    Q = C[:K, :K]
    R = C[:K, K:]
    _hmm_closure(y, K, M, D, b, zeta, Q, R, Sigma)
    for n in range(M):
        for k in range(K):
            C[K + n, k] = C[k, K + n]
        for m in range(M):
            C[K + n, K + m] = T[n, m]
    if not _covariance_ok(C, K, M, True):
        return False
    v = y[KMD + KKD + K * K:]
    _field_integrals(C, K, M, v, A, g, sigma, train_v, drift, i4sum, j2, i2u, scratch)
    for k in range(K):
        diag = -v[k] * i3_at(C, k, k, k, g) / Q[k, k]
        for j in range(K):
            if j == k:
                continue
            det = Q[k, k] * Q[j, j] - Q[k, j] * Q[k, j]
            diag -= v[j] * (Q[j, j] * i3_at(C, k, k, j, g) - Q[k, j] * i3_at(C, k, j, j, g)) / det
            Bmat[k, j] = -v[j] * (Q[k, k] * i3_at(C, k, j, j, g)
                                  - Q[k, j] * i3_at(C, k, k, j, g)) / det
        for n in range(M):
            tn = K + n
            det = Q[k, k] * T[n, n] - R[k, n] * R[k, n]
            diag += A[n] * (T[n, n] * i3_at(C, k, k, tn, g) - R[k, n] * i3_at(C, k, tn, tn, g)) / det
            gamma[k, n] = A[n] * (Q[k, k] * i3_at(C, k, tn, tn, g)
                                  - R[k, n] * i3_at(C, k, k, tn, g)) / det
        Bmat[k, k] = diag

    dW = dy[KMD + KKD:KMD + KKD + K * K].reshape((K, K))
    dv = dy[KMD + KKD + K * K:]
    for k in range(K):
        for l in range(K):
            noise[k, l] = lr * lr * v[k] * v[l] * (i4sum[k, l] + j2[k, l])
    _hmm_densities(y[:KMD].reshape((K, M, D)), y[KMD:KMD + KKD].reshape((K, K, D)),
                   dy[:KMD].reshape((K, M, D)), dy[KMD:KMD + KKD].reshape((K, K, D)), Yr, Bmat,
                   gamma, v, lr / delta, d_rho, b_rho, noise_rho, noise, acc_x, acc_y)
    for k in range(K):
        for l in range(K):
            dW[k, l] = (lr * (v[k] * drift[k, l] + v[l] * drift[l, k])
                        + lr * lr * c_f * v[k] * v[l] * (i4sum[k, l] + j2[k, l]))
        dv[k] = lr * i2u[k] if train_v else 0.0
    return _all_finite(dy)


@njit(cache=True, nogil=True, error_model="numpy")
def _rhs(model, y, dy, params, work):
    """dy = F(y) for the model; ``params`` = (K, M, D, rhos, Yr, T, A, lr, delta, b, zeta, c_f,
    g, sigma, train_v), ``work`` = the workspaces. False when the state is unusable."""
    K, M, D, rhos, Yr, T, A, lr, delta, b, zeta, c_f, g, sigma, train_v = params
    C, drift, i4sum, j2, i2u, Bmat, gamma, work_kk, work_d, scratch = work
    if model == SCM:
        return _scm_rhs(y, dy, K, M, T, A, lr, g, sigma, train_v, C, drift, i4sum, j2, i2u,
                        scratch)
    return _hmm_rhs(y, dy, K, M, D, rhos, Yr, T, A, lr, delta, b, zeta, c_f, g, sigma, train_v,
                    C, drift, i4sum, j2, i2u, Bmat, gamma, work_kk, work_d, scratch)


@njit(cache=True, nogil=True, error_model="numpy")
def _observe(model, y, K, M, D, b, zeta, out):
    """out = [Q (K·K), R (K·M), v (K), W (K·K), Σ (K·K)], all linear in the state y."""
    KK, KM = K * K, K * M
    Q = out[:KK].reshape((K, K))
    R = out[KK:KK + KM].reshape((K, M))
    W = out[KK + KM + K:2 * KK + KM + K].reshape((K, K))
    Sigma = out[2 * KK + KM + K:].reshape((K, K))
    if model == SCM:
        out[:KK + KM + K] = y
        W[:, :] = math.nan
        Sigma[:, :] = math.nan
    else:
        _hmm_closure(y, K, M, D, b, zeta, Q, R, Sigma)
        start = K * M * D + K * K * D
        W[:, :] = y[start:start + KK].reshape((K, K))
        out[KK + KM:KK + KM + K] = y[start + KK:]
    return _all_finite(out[:KK + KM + K])


@njit(cache=True, nogil=True, error_model="numpy")
def _integrate(model, method, y0, dt, t_eval, lo, theta, K, M, D, rhos, Yr, T, A, lr, delta,
               b, zeta, c_f, g, sigma, train_v, out):
    """Integrate from y0 and fill ``out`` (n_eval, n_obs) at ``t_eval``; rows not reached stay
    NaN. Returns the failure time, or −1.0 when every row was filled.

    euler: y_{n+1} = y_n + dt·F(y_n); the row at t = n·dt is the n-th iterate, a t off the grid
    is (1 − θ)·y_lo + θ·y_{lo+1}. rk4: classical steps of dt, the last step before each t_eval
    shortened to land on it.
    """
    n_eval = t_eval.shape[0]
    n_obs = out.shape[1]
    C = np.empty((K + M, K + M))
    drift = np.empty((K, K + M))
    i4sum = np.empty((K, K))
    j2 = np.empty((K, K))
    i2u = np.empty(K)
    Bmat = np.empty((K, K))
    gamma = np.empty((K, M))
    work_kk = np.empty((2, K, K))
    work_d = np.empty((5, D))
    for t in range(D):
        work_d[0, t] = zeta * delta + b * b * rhos[t]              # d(ρ)
        work_d[1, t] = b * rhos[t]                                 # bρ
        work_d[2, t] = zeta * rhos[t] + b * b * rhos[t] ** 2 / delta  # ζρ + b²ρ²/δ
    params = (K, M, D, rhos, Yr, T, A, lr, delta, b, zeta, c_f, g, sigma, train_v)
    work = (C, drift, i4sum, j2, i2u, Bmat, gamma, work_kk, work_d, np.empty((2, K + M)))
    y = y0.copy()
    dy = np.empty_like(y)
    obs = np.empty(n_obs)
    out[:, :] = 0.0
    done = np.zeros(n_eval, dtype=np.bool_)
    failed_at = -1.0
    if method == EULER:
        n_max = 0
        for i in range(n_eval):
            n_max = max(n_max, lo[i] + (1 if theta[i] > 0.0 else 0))
        first = 0
        for n in range(n_max + 1):
            if first < n_eval and lo[first] <= n:
                if not _observe(model, y, K, M, D, b, zeta, obs):
                    failed_at = n * dt
                    break
                for i in range(first, n_eval):
                    if lo[i] > n:
                        break
                    if lo[i] == n:
                        out[i] += (1.0 - theta[i]) * obs
                        if theta[i] == 0.0:
                            done[i] = True
                    elif lo[i] + 1 == n and theta[i] > 0.0:
                        out[i] += theta[i] * obs
                        done[i] = True
                while first < n_eval and done[first]:
                    first += 1
            if n == n_max:
                break
            if not _rhs(model, y, dy, params, work):
                failed_at = n * dt
                break
            for q in range(y.shape[0]):
                y[q] += dt * dy[q]
    else:
        k1 = np.empty_like(y)
        k2 = np.empty_like(y)
        k3 = np.empty_like(y)
        k4 = np.empty_like(y)
        stage = np.empty_like(y)
        t = 0.0
        for i in range(n_eval):
            target = t_eval[i]
            ok = True
            while target - t > 1e-9 * dt:
                h = min(dt, target - t)
                ok = _rhs(model, y, k1, params, work)
                if ok:
                    stage[:] = y + 0.5 * h * k1
                    ok = _rhs(model, stage, k2, params, work)
                if ok:
                    stage[:] = y + 0.5 * h * k2
                    ok = _rhs(model, stage, k3, params, work)
                if ok:
                    stage[:] = y + h * k3
                    ok = _rhs(model, stage, k4, params, work)
                if not ok:
                    failed_at = t
                    break
                for q in range(y.shape[0]):
                    y[q] += h / 6.0 * (k1[q] + 2.0 * k2[q] + 2.0 * k3[q] + k4[q])
                t = target if target - (t + h) <= 1e-9 * dt else t + h
            if not ok or not _observe(model, y, K, M, D, b, zeta, obs):
                if failed_at < 0.0:
                    failed_at = t
                break
            out[i] = obs
            done[i] = True
    for i in range(n_eval):
        if not done[i]:
            out[i, :] = math.nan
    return failed_at


# ====================================================================== Python API
@dataclass
class Trajectory:
    """An ODE solution on the output grid ``t``.

    Q (n, K, K), R (n, K, M), v (n, K), eg (n,); for the HMM ODE also W and Sigma (n, K, K).
    status is "ok", or "failed" when a non-finite value or a degenerate covariance appeared at
    t_failed (later rows are NaN).
    """

    t: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    v: np.ndarray
    eg: np.ndarray
    T: np.ndarray
    A: np.ndarray
    W: np.ndarray | None
    Sigma: np.ndarray | None
    status: str
    t_failed: float
    method: str
    dt: float


def output_grid(dt: float, t_max: float | None, t_eval) -> np.ndarray:
    """The output times (MODEL.md §5.5): t_eval as given (sorted, ≥ 0, finite), or {0} ∪ the
    multiples of dt nearest to 200 log-spaced points in [0.1, t_max], capped at t_max."""
    if t_eval is None:
        if t_max is None:
            raise ValueError("give t_max or t_eval")
        t_max = float(t_max)
        if not (math.isfinite(t_max) and t_max >= 0):
            raise ValueError(f"t_max must be a finite number >= 0, got {t_max!r}")
        points = np.geomspace(0.1, t_max, 200) if t_max > 0.1 else np.array([t_max])
        grid = np.minimum(np.rint(points / dt) * dt, t_max)
        return np.unique(np.concatenate([[0.0], grid]))
    t = np.array(t_eval, dtype=np.float64).reshape(-1)
    if t.size == 0 or not np.all(np.isfinite(t)) or np.any(t < 0) or np.any(np.diff(t) < 0):
        raise ValueError("t_eval must be a non-empty sorted sequence of finite times >= 0")
    if t_max is not None and float(t_max) < t[-1]:
        raise ValueError(f"t_max = {t_max} is before the last t_eval = {t[-1]}")
    return t


def _grid_positions(t: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    x = t / dt
    nearest = np.rint(x)
    on_grid = np.abs(x - nearest) <= 1e-9
    lo = np.where(on_grid, nearest, np.floor(x)).astype(np.int64)
    theta = np.where(on_grid, 0.0, x - lo)
    return lo, theta


def _check_common(lr, dt, method, g, sigma) -> tuple[int, int]:
    for name, value in (("lr", lr), ("dt", dt)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if g not in ACTIVATIONS:
        raise ValueError(f"g must be one of {', '.join(ACTIVATIONS)}, got {g!r}")
    return METHODS[method], ACTIVATION_CODES[g]


def _solve(model, method_code, y0, dt, t, K, M, D, rhos, Yr, T, A, lr, delta, b, zeta, c_f,
           g, sigma, train_v, method, has_layers) -> Trajectory:
    lo, theta = _grid_positions(t, dt)
    n_obs = 3 * K * K + K * M + K
    out = np.empty((t.shape[0], n_obs))
    failed_at = _integrate(model, method_code, y0, float(dt), t, lo, theta, K, M, D, rhos, Yr,
                           T, A, float(lr), float(delta), float(b), float(zeta), float(c_f),
                           g, float(sigma), bool(train_v), out)
    if failed_at >= 0:
        out[t >= failed_at] = np.nan  # valid rows are exactly those before the failure
    KK, KM = K * K, K * M
    n = t.shape[0]
    Q = out[:, :KK].reshape(n, K, K)
    R = out[:, KK:KK + KM].reshape(n, K, M)
    v = out[:, KK + KM:KK + KM + K]
    W = out[:, KK + KM + K:2 * KK + KM + K].reshape(n, K, K)
    Sigma = out[:, 2 * KK + KM + K:].reshape(n, K, K)
    eg = np.array([generalisation_error_kernel(Q[i], R[i], T, v[i], A, g)
                   if np.isfinite(Q[i]).all() else np.nan for i in range(n)])
    return Trajectory(t=t, Q=Q, R=R, v=v, eg=eg, T=T.copy(), A=A.copy(),
                      W=W if has_layers else None, Sigma=Sigma if has_layers else None,
                      status="failed" if failed_at >= 0 else "ok",
                      t_failed=float(failed_at) if failed_at >= 0 else math.nan,
                      method=method, dt=float(dt))


def _matrix(x, shape, name) -> np.ndarray:
    a = np.ascontiguousarray(x, dtype=np.float64)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    return a


def integrate_scm(Q0, R0, T, v0, A, *, lr: float, g: str = "erf",
                  train_second_layer: bool = False, dt: float = 0.01, t_max: float | None = None,
                  t_eval=None, method: str = "euler", sigma: float = 0.0) -> Trajectory:
    """Saad–Solla ODE for i.i.d. Gaussian inputs (MODEL.md §5.1).

    dR^{kn}/dt = η v_k [Σ_m A_m I3(k,n,m) − Σ_j v_j I3(k,n,j)]
    dQ^{kl}/dt = η v_k [Σ_m A_m I3(k,l,m) − Σ_j v_j I3(k,l,j)] + (k ↔ l)
                 + η² v_k v_l 𝓘4(k,l) + η² σ² v_k v_l J2(k,l)
    dv_k/dt   = η [Σ_n A_n I2(k,n) − Σ_j v_j I2(k,j)]   (second layer trained only)

    Q0 (K,K), R0 (K,M), T (M,M), v0 (K,), A (M,); integrator semantics of MODEL.md §5.5.
    """
    method_code, g_code = _check_common(lr, dt, method, g, sigma)
    Q0 = np.asarray(Q0, dtype=np.float64)
    K = Q0.shape[0]
    T = np.ascontiguousarray(T, dtype=np.float64)
    M = T.shape[0]
    Q0 = _matrix(Q0, (K, K), "Q0")
    R0 = _matrix(R0, (K, M), "R0")
    T = _matrix(T, (M, M), "T")
    v0 = _matrix(v0, (K,), "v0")
    A = _matrix(A, (M,), "A")
    t = output_grid(dt, t_max, t_eval)
    y0 = np.concatenate([Q0.ravel(), R0.ravel(), v0])
    return _solve(SCM, method_code, y0, dt, t, K, M, 0, np.empty(0), np.empty((M, M, 0)), T, A,
                  lr, 1.0, 0.0, 0.0, 0.0, g_code, sigma, train_second_layer, method, False)


def integrate_hmm(state: HmmInitialState, *, lr: float, delta: float, f: str = "sign",
                  g: str = "erf", train_second_layer: bool = False, dt: float = 0.01,
                  t_max: float | None = None, t_eval=None, method: str = "euler",
                  sigma: float = 0.0, teacher_projection: str = "T_tilde") -> Trajectory:
    """Hidden-manifold ODE with one density per eigenvalue of FᵀF/N (MODEL.md §5.2).

    ∂_t r^{km}(ρ) = (η/δ) 𝓛_k[X^j = r^{jm}(ρ), Y^n = T̃^{nm}]
    ∂_t σ^{kl}(ρ) = (η/δ) {𝓛_k[σ^{jl}(ρ), r^{ln}(ρ)] + 𝓛_l[σ^{jk}(ρ), r^{kn}(ρ)]}
                    + η² (ζρ + b²ρ²/δ) v_k v_l 𝓘4(k,l)
    dW^{kl}/dt    = η v_k [Σ_n A_n I3(k,l,n) − Σ_j v_j I3(k,l,j)] + (k ↔ l) + η² c_f v_k v_l 𝓘4(k,l)
    dv_k/dt       = η [Σ_n A_n I2(k,n) − Σ_j v_j I2(k,j)]   (trained only)
    with the closure Σ = ⟨σ⟩_τ, Q = ζW + b²Σ, R = b⟨r⟩_τ and d(ρ) = ζδ + b²ρ. Output noise σ adds
    its J2 terms. ``teacher_projection="per_eigenvalue"`` replaces T̃^{nm} by ω_nτ ω_mτ.
    """
    method_code, g_code = _check_common(lr, dt, method, g, sigma)
    if not (isinstance(delta, (int, float)) and math.isfinite(delta) and delta > 0):
        raise ValueError(f"delta must be a finite number > 0, got {delta!r}")
    a, b, c_f, zeta = folding_coefficients(f)
    if a != 0.0:
        raise ValueError(f"the HMM ODE requires a = E f(u) = 0, but f = {f} has a = {a:.4f}; "
                         "f = relu is simulator-only (compare with a Gaussian-latent run)")
    if not isinstance(state, HmmInitialState):
        raise TypeError(f"state must be an HmmInitialState, got {type(state).__name__}")
    K, M, D = state.K, state.M, state.D
    if teacher_projection == "T_tilde":
        Yr = np.ascontiguousarray(np.broadcast_to(state.T_tilde[:, :, None], (M, M, D)))
    elif teacher_projection == "per_eigenvalue":
        if state.omega is None:
            raise ValueError("teacher_projection='per_eigenvalue' needs state.omega")
        Yr = np.ascontiguousarray(state.omega[:, None, :] * state.omega[None, :, :])
    else:
        raise ValueError("teacher_projection must be 'T_tilde' or 'per_eigenvalue', "
                         f"got {teacher_projection!r}")
    t = output_grid(dt, t_max, t_eval)
    y0 = np.concatenate([state.r.ravel(), state.sigma.ravel(), state.W.ravel(), state.v])
    return _solve(HMM, method_code, y0, dt, t, K, M, D, np.ascontiguousarray(state.rhos), Yr,
                  np.ascontiguousarray(state.T), np.ascontiguousarray(state.A), lr, delta, b,
                  zeta, c_f, g_code, sigma, train_second_layer, method, True)
