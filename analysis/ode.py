"""Gaussian ODEs for online SGD (docs/model.md §5, §10.5): Saad–Solla for i.i.d. inputs
(:func:`integrate_scm`), the hidden manifold model (:func:`integrate_hmm`), started from a
seed's exact spectral state (:class:`HmmInitialState`, docs/model.md §4.4), and the
Gaussian-equivalent ODE on the input covariance (:func:`integrate_gaussian_equivalent`, started
from :class:`GaussianEquivalentState`, docs/model.md §10.5).

The HMM and the Gaussian-equivalent ODE share one density equation (:func:`_hmm_densities`) and
one bracket (:func:`_hmm_bracket`): they differ only in the tables over the spectrum, the rate
and the closure (docs/model.md §10.5). Every right-hand side and both integrators (explicit
Euler with the published integrators' semantics, classical RK4) run in numba kernels; the
integrals come from :mod:`analysis.integrals` and the folding coefficients from
:mod:`analysis.activations`, the same definitions the simulator uses.

The kernels take three named tuples, each built by one function, so that a field is named once:

- :class:`OdeParameters` (:func:`ode_parameters`): the model and everything constant during an
  integration;
- :class:`OdeGrid` (:func:`ode_grid`): the integrator, its step and the output times;
- :class:`OdeWorkspace` (:func:`ode_workspace`): the scratch arrays of one right-hand side.

Compiled boundaries. Every call of a compiled kernel increments and decrements the reference
count of each array it receives, those inside a named tuple included, and every function inlined
by numba (``inline=True``) is translated and typed again at each call site, which is most of a
cold start. So:

- one integrator kernel per method (:func:`_integrate_euler`, :func:`_integrate_rk4`), each
  compiled for the types of its arguments: the spectrum is None for SCM, and :func:`_rhs` and
  :func:`_observe` are overloads decided by its type, so a kernel holds one model family's
  right-hand side (:func:`_scm_rhs` or :func:`_spectral_rhs`, one compiled call per
  evaluation) and never compiles the other (a numba ``if spectrum is None`` prunes only the
  branch that None rules out, and an overload inlined with ``inline="always"`` was miscompiled
  here);
- inside a right-hand side, the per-evaluation kernels that take the tuples are inlined;
- the erf I4 table forms all its arcsine arguments first and takes the arcsines in one loop
  that LLVM vectorises (:func:`analysis.arcsine.arcsine`; ``math.asin`` is a libm call);
- the kernels with reassociated loops (:func:`_hmm_closure`, :func:`_hmm_densities`,
  :func:`_all_finite`) are never inlined: their flags must not reach, or be lost in, a caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numba import types
from numba.extending import overload

from analysis.activations import (ACTIVATION_CODES, ACTIVATIONS, G_ERF, G_LINEAR, G_RELU,
                                  folding_coefficients)
from analysis.arcsine import arcsine
from analysis.integrals import (FOUR_OVER_PI2, TWO_OVER_PI, erf_i3_lambda3, erf_i4_lambda0,
                                erf_i4_lambda4, erf_i4_lambda_side, generalisation_error_kernel,
                                i2_at, i3_at, j2_at, relu_i4_sums_if)
from analysis.jit import THEORY_OPTIONS, theory_kernel
from analysis.orthant import NODES, WEIGHTS

__all__ = ["HmmInitialState", "GaussianEquivalentState", "Trajectory", "METHODS",
           "integrate_hmm", "integrate_scm", "integrate_gaussian_equivalent", "output_grid",
           "OdeParameters", "Spectrum", "OdeGrid", "OdeWorkspace", "ode_parameters", "ode_grid",
           "ode_workspace"]


def _set_float_arrays(state, expected: dict) -> None:
    """Store each field of the frozen dataclass ``state`` named in ``expected`` as a C-contiguous
    float64 array of its expected shape; a wrong shape raises ValueError naming the field."""
    for name, shape in expected.items():
        value = np.ascontiguousarray(getattr(state, name), dtype=np.float64)
        if value.shape != shape:
            raise ValueError(f"{type(state).__name__}.{name} must have shape {shape}, "
                             f"got {value.shape}")
        object.__setattr__(state, name, value)


class _Units:
    """K and M of a state whose ``r`` has shape (K, M, …)."""

    @property
    def K(self) -> int:
        return self.r.shape[0]

    @property
    def M(self) -> int:
        return self.r.shape[1]


@dataclass(frozen=True)
class HmmInitialState(_Units):
    """Exact spectral state of one seed at step 0, from which the HMM ODE starts
    (docs/model.md §4.4).

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
        _set_float_arrays(self, expected)

    @property
    def D(self) -> int:
        return self.rhos.shape[0]


@dataclass(frozen=True)
class GaussianEquivalentState(_Units):
    """State of the Gaussian-equivalent ODE on the input covariance at t = 0 (docs/model.md
    §10.5; conventions of sgoldt/gaussian-equiv-2layer ``deepgen_ode.cpp``).

    Attributes
    ----------
    rhos : (N,) eigenvalues ρ_τ of Ω = Cov(x), ascending.
    q : (K, K, N) q^{kl}(τ) = (w_k·e_τ)(w_l·e_τ).
    r : (K, M, N) r^{km}(τ) = (w_k·e_τ)(e_τ·ΦW̃_mᵀ).
    t_tilde : (M, M, N) t̃^{nm}(τ) = (e_τ·ΦW̃_nᵀ)(e_τ·ΦW̃_mᵀ), constant.
    T : (M, M) teacher covariance W̃ S_c W̃ᵀ/D.
    v : (K,) second-layer weights.
    A : (M,) teacher second layer.
    delta : δ = D/N.
    """

    rhos: np.ndarray
    q: np.ndarray
    r: np.ndarray
    t_tilde: np.ndarray
    T: np.ndarray
    v: np.ndarray
    A: np.ndarray
    delta: float

    def __post_init__(self) -> None:
        N = np.shape(self.rhos)[0]
        K, M = np.shape(self.r)[:2]
        expected = {"rhos": (N,), "q": (K, K, N), "r": (K, M, N), "t_tilde": (M, M, N),
                    "T": (M, M), "v": (K,), "A": (M,)}
        _set_float_arrays(self, expected)
        delta = self.delta
        if not (isinstance(delta, (int, float)) and math.isfinite(delta) and delta > 0):
            raise ValueError(f"delta must be a finite number > 0, got {delta!r}")
        object.__setattr__(self, "delta", float(delta))

    @classmethod
    def from_moments(cls, omega, phi, w, teacher, latent_covariance, v, A
                     ) -> "GaussianEquivalentState":
        """The state of weights w (K, N) and teacher W̃ (M, D) under inputs with covariance
        Ω (N, N), input–latent cross-covariance Φ (N, D) and latent covariance S_c (D, D)
        (docs/model.md §10.5): Ω = Σ_τ ρ_τ e_τe_τᵀ, T = W̃S_cW̃ᵀ/D, δ = D/N."""
        omega, phi = np.asarray(omega, dtype=np.float64), np.asarray(phi, dtype=np.float64)
        w, teacher = np.asarray(w, dtype=np.float64), np.asarray(teacher, dtype=np.float64)
        N, D = phi.shape
        rhos, vectors = np.linalg.eigh(omega)
        student = w @ vectors                       # (K, N): w_k·e_τ
        projected = (phi @ teacher.T).T @ vectors   # (M, N): e_τ·ΦW̃_mᵀ
        T = teacher @ np.asarray(latent_covariance, dtype=np.float64) @ teacher.T / D
        return cls(rhos=rhos, q=student[:, None] * student[None],
                   r=student[:, None] * projected[None],
                   t_tilde=projected[:, None] * projected[None], T=(T + T.T) / 2, v=v, A=A,
                   delta=D / N)

    @property
    def N(self) -> int:
        return self.rhos.shape[0]


# ====================================================================== the kernels' arguments
SCM, HMM, MOMENTS = 0, 1, 2
EULER, RK4 = 0, 1
METHODS = {"euler": EULER, "rk4": RK4}
_DEGENERATE = 1e-12
#: A time within this fraction of dt of a multiple of dt is on the grid (docs/model.md §5.5).
GRID_TOLERANCE = 1e-9
#: The default step and method: the published integrators' semantics (docs/model.md §5.5).
DEFAULT_DT = 0.01
DEFAULT_METHOD = "euler"
#: The Gaussian-equivalent ODE's default RK4 step and its stability control: each step is at
#: most STABILITY / (2 η ρ_max max_k Σ_j |v_k B_kj|), the stiffest density's rate
#: (docs/model.md §10.5).
MOMENTS_RK4_DT = 0.1
STABILITY = 0.3
#: RK4 at its default (Saad–Solla and HMM ODEs): steps chosen by step doubling so that each
#: step's error is within RK4_TOLERANCE × (1 + |y|) in every component, at most RK4_MAX_DT
#: (docs/model.md §5.5; bench/ode_table.py and tests/test_ode.py measure the result against
#: a fine fixed-step reference: within 1e-6 in ε_g).
RK4_TOLERANCE = 2e-6
RK4_MAX_DT = 4.0
#: The first trial step of a controlled integration.
CONTROLLED_FIRST_STEP = 0.01


class Spectrum(NamedTuple):
    """The spectral models' constants (HMM and MOMENTS); built by :func:`ode_parameters` only.

    Attributes
    ----------
    rhos : (D,) eigenvalues ρ_τ.
    Yr : (M, M, D) the r-equation's teacher term Y^n for each m: T̃^{nm} or ω_nτ ω_mτ (HMM),
        t̃^{nm}(τ) (MOMENTS).
    delta : δ = D/N.
    b, zeta, c_f : folding coefficients of f (HMM; 0 for MOMENTS).
    d_rho, b_rho, noise_rho : (D,) the density equations' tables over the eigenvalues: HMM
        d(ρ) = ζδ + b²ρ, bρ and ζρ + b²ρ²/δ; MOMENTS ρ, δ^{-1/2} and ρ.
    rate : the density equations' rate, η/δ (HMM) or η (MOMENTS).
    """

    rhos: np.ndarray
    Yr: np.ndarray
    delta: float
    b: float
    zeta: float
    c_f: float
    d_rho: np.ndarray
    b_rho: np.ndarray
    noise_rho: np.ndarray
    rate: float


class OdeParameters(NamedTuple):
    """Everything constant during one integration; built by :func:`ode_parameters` only.

    The kernels take it with the model's :class:`Spectrum`, or None for SCM, as a separate
    argument: its type decides when a kernel is compiled which right-hand side it holds
    (:func:`_rhs`), so a kernel compiles one model family. Likewise ``relu_quadrature`` is None
    unless g = relu (:func:`analysis.integrals.relu_i4_sums_if`).

    Attributes
    ----------
    model : SCM, HMM or MOMENTS.
    K, M, D : students, teachers, eigenvalues (D = 0 for SCM; N for MOMENTS).
    T : (M, M) teacher covariance.
    A : (M,) teacher second layer.
    lr : learning rate η.
    g : activation code.
    sigma : output-noise standard deviation.
    train_v : whether the second layer is trained.
    stiffness : rate × max_τ |d(ρ_τ)|, the stiffest density's rate per unit of the bracket
        (0 for SCM).
    relu_quadrature : the Gauss–Legendre (nodes, weights) of the ReLU I4 for g = relu, else
        None.
    """

    model: int
    K: int
    M: int
    D: int
    T: np.ndarray
    A: np.ndarray
    lr: float
    g: int
    sigma: float
    train_v: bool
    stiffness: float
    relu_quadrature: tuple | None


class OdeGrid(NamedTuple):
    """The integrator and where it reports; built by :func:`ode_grid` only.

    Attributes
    ----------
    method : EULER or RK4.
    dt : step.
    t : (n,) output times, sorted.
    lo, theta : (n,) t = (lo + θ)·dt with θ = 0 on the grid (Euler interpolates off it).
    stability : RK4 only: 0 for fixed steps of dt, else each step is at most
        stability / (2 × stiffness × max_k Σ_j |v_k B_kj|) (see :func:`_rk4_fixed`).
    tolerance : RK4 only: 0, else steps of at most dt chosen by their error
        (:func:`_rk4_controlled`).
    """

    method: int
    dt: float
    t: np.ndarray
    lo: np.ndarray
    theta: np.ndarray
    stability: float
    tolerance: float


class OdeWorkspace(NamedTuple):
    """Scratch arrays of one right-hand side evaluation; built by :func:`ode_workspace` only.

    Attributes
    ----------
    C : (K + M, K + M) covariance of all fields.
    i3 : (K, K + M, K + M) I3(k, b, a).
    drift : (K, K + M) Σ_a u_a I3(k, b, a).
    i4sum : (K, K) 𝓘4(k, l).
    j2 : (K, K) σ² J2(k, l).
    i2u : (K,) Σ_a u_a I2(k, a).
    Bmat, gamma : (K, K), (K, M) coefficients of the HMM bracket.
    Sigma, noise : (K, K) ⟨σ⟩_τ and η² v_k v_l (𝓘4 + σ²J2).
    u, side : (K + M,) u = (−v, A) and a per-field factor.
    i4_arg, i4_weight : (K(K+1)/2 · n(n+1)/2,) with n = K + M: the erf I4 table's arcsine
        arguments (then values) and weights, one entry per (k ≤ l, a ≤ b).
    """

    C: np.ndarray
    i3: np.ndarray
    drift: np.ndarray
    i4sum: np.ndarray
    j2: np.ndarray
    i2u: np.ndarray
    Bmat: np.ndarray
    gamma: np.ndarray
    Sigma: np.ndarray
    noise: np.ndarray
    u: np.ndarray
    side: np.ndarray
    i4_arg: np.ndarray
    i4_weight: np.ndarray


@theory_kernel()
def _spectral_tables(model, rhos, delta, b, zeta):
    """The density equations' tables over the eigenvalues: HMM d(ρ) = ζδ + b²ρ, bρ and
    ζρ + b²ρ²/δ (docs/model.md §5.2); MOMENTS ρ_τ, δ^{-1/2} and ρ_τ (§10.5)."""
    D = rhos.shape[0]
    d_rho = np.empty(D)
    b_rho = np.empty(D)
    noise_rho = np.empty(D)
    for t in range(D):
        if model == MOMENTS:
            d_rho[t] = rhos[t]
            b_rho[t] = 1.0 / math.sqrt(delta)
            noise_rho[t] = rhos[t]
        else:
            d_rho[t] = zeta * delta + b * b * rhos[t]
            b_rho[t] = b * rhos[t]
            noise_rho[t] = zeta * rhos[t] + b * b * rhos[t] ** 2 / delta
    return d_rho, b_rho, noise_rho


def ode_parameters(model: int, K: int, T: np.ndarray, A: np.ndarray, *, lr: float, g: int,
                   sigma: float, train_v: bool, rhos: np.ndarray | None = None,
                   Yr: np.ndarray | None = None, delta: float = 1.0, b: float = 0.0,
                   zeta: float = 0.0, c_f: float = 0.0
                   ) -> tuple[OdeParameters, Spectrum | None]:
    """The one constructor of :class:`OdeParameters` and :class:`Spectrum` (the kernels' types
    are fixed here).

    Parameters
    ----------
    model : SCM, HMM or MOMENTS.
    K : number of students.
    T, A : (M, M) teacher covariance and (M,) teacher second layer, C-contiguous float64.
    lr, g, sigma, train_v : learning rate, activation code, output noise, second layer trained.
    rhos, Yr : HMM and MOMENTS: (D,) eigenvalues and (M, M, D) teacher term.
    delta : HMM and MOMENTS: δ = D/N.
    b, zeta, c_f : HMM only: the folding coefficients.

    Returns
    -------
    (OdeParameters, Spectrum or None)
        The spectrum is None for SCM.
    """
    spectrum, D, stiffness = None, 0, 0.0
    if model != SCM:
        rhos = np.ascontiguousarray(rhos, dtype=np.float64)
        delta, b, zeta = float(delta), float(b), float(zeta)
        d_rho, b_rho, noise_rho = _spectral_tables(int(model), rhos, delta, b, zeta)
        rate = float(lr) if model == MOMENTS else float(lr) / delta
        D = int(rhos.shape[0])
        stiffness = rate * float(np.max(np.abs(d_rho))) if D else 0.0
        spectrum = Spectrum(rhos=rhos, Yr=np.ascontiguousarray(Yr, dtype=np.float64),
                            delta=delta, b=b, zeta=zeta, c_f=float(c_f), d_rho=d_rho,
                            b_rho=b_rho, noise_rho=noise_rho, rate=rate)
    p = OdeParameters(model=int(model), K=int(K), M=int(T.shape[0]), D=D,
                      T=np.ascontiguousarray(T, dtype=np.float64),
                      A=np.ascontiguousarray(A, dtype=np.float64), lr=float(lr), g=int(g),
                      sigma=float(sigma), train_v=bool(train_v), stiffness=stiffness,
                      relu_quadrature=(NODES, WEIGHTS) if g == G_RELU else None)
    return p, spectrum


def _grid_positions(t: np.ndarray, dt: float) -> tuple[np.ndarray, np.ndarray]:
    x = t / dt
    nearest = np.rint(x)
    on_grid = np.abs(x - nearest) <= GRID_TOLERANCE
    lo = np.where(on_grid, nearest, np.floor(x)).astype(np.int64)
    theta = np.where(on_grid, 0.0, x - lo)
    return lo, theta


def ode_grid(method: int, dt: float, t: np.ndarray, stability: float = 0.0,
             tolerance: float = 0.0) -> OdeGrid:
    """The one constructor of :class:`OdeGrid`: integrator code, (largest) step, output times
    and the RK4 step's stability or error control (0: fixed steps)."""
    lo, theta = _grid_positions(t, dt)
    return OdeGrid(method=int(method), dt=float(dt), t=t, lo=lo, theta=theta,
                   stability=float(stability), tolerance=float(tolerance))


@theory_kernel()
def ode_workspace(K, M):
    """The one constructor of :class:`OdeWorkspace` for K students and M teachers."""
    n = K + M
    table = K * (K + 1) // 2 * (n * (n + 1) // 2)
    return OdeWorkspace(np.empty((n, n)), np.empty((K, n, n)), np.empty((K, n)),
                        np.empty((K, K)), np.empty((K, K)), np.empty(K), np.empty((K, K)),
                        np.empty((K, M)), np.empty((K, K)), np.empty((K, K)), np.empty(n),
                        np.empty(n), np.empty(table), np.empty(table))


# ====================================================================== the field integrals
@theory_kernel(inline=True)
def _field_integrals(p, ws, v):
    """Sums over the fields that every equation needs, with u = (−v, A) over all K + M fields.

    Fills ``ws.i3[k, b, a]`` = I3(k, b, a), ``ws.drift[k, b]`` = Σ_a u_a I3(k, b, a),
    ``ws.i4sum[k, l]`` = 𝓘4(k, l) = Σ_{a,b} u_a u_b I4(k, l, a, b), ``ws.j2[k, l]`` = σ² J2(k, l)
    and ``ws.i2u[k]`` = Σ_a u_a I2(k, a) (only when v is trained: dv/dt alone needs it), on the
    covariance ``ws.C``.

    For relu 𝓘4 comes from :func:`analysis.integrals.relu_i4_sums`, which computes the one- and
    two-field parts once per evaluation; only terms with four distinct fields need a quadrature.
    """
    K, M, C, u, g = p.K, p.M, ws.C, ws.u, p.g
    n = K + M
    for j in range(K):
        u[j] = -v[j]
    for m in range(M):
        u[K + m] = p.A[m]
    _i3_table(C, K, g, ws.side, ws.i3)
    for k in range(K):
        for b in range(n):
            acc = 0.0
            for a in range(n):
                acc += u[a] * ws.i3[k, b, a]
            ws.drift[k, b] = acc
        acc2 = 0.0
        if p.train_v:
            for a in range(n):
                acc2 += u[a] * i2_at(C, k, a, g)
        ws.i2u[k] = acc2
    if g == G_ERF:
        _erf_i4_sums(C, K, u, ws.side, ws.i4_arg, ws.i4_weight, ws.i4sum)
    elif g == G_LINEAR:
        _linear_i4_sums(C, K, u, ws.i4sum)
    else:
        relu_i4_sums_if(p.relu_quadrature, C, K, u, ws.i4sum)
    for k in range(K):
        for l in range(k, K):
            noise = p.sigma * p.sigma * j2_at(C, k, l, g) if p.sigma > 0.0 else 0.0
            ws.j2[k, l] = noise
            ws.j2[l, k] = noise


@theory_kernel(inline=True)
def _i3_table(C, K, g, scale, i3):
    """``i3[k, b, a]`` = I3(k, b, a) for every student k and fields b, a; ``scale`` is scratch
    of the fields' length.

    For erf the formula of :func:`analysis.integrals.erf_i3_value`, with its factors that
    depend on fewer indices (2/(π√Λ₃) per (k, a), 1/(1 + C_kk) per k) computed once.
    """
    n = C.shape[0]
    for k in range(K):
        if g == G_ERF:
            inv = 1.0 / (1.0 + C[k, k])
            for a in range(n):
                scale[a] = TWO_OVER_PI * (1.0 / math.sqrt(erf_i3_lambda3(C[k, k], C[k, a],
                                                                       C[a, a])))
            for b in range(n):
                ckb = C[k, b] * inv
                for a in range(n):
                    i3[k, b, a] = scale[a] * (C[b, a] - ckb * C[k, a])
        else:
            for b in range(n):
                for a in range(n):
                    i3[k, b, a] = i3_at(C, k, b, a, g)


@theory_kernel(inline=True)
def _erf_i4_sums(C, K, u, side, arg, weight, i4sum):
    """𝓘4(k, l) for erf into ``i4sum``, from the formulas of
    :func:`analysis.integrals.i4_entries` with Λ₄ per (k, l) and Λ₁ per field computed once.

    Every arcsine argument of the table (one per k ≤ l and a ≤ b) is formed first (``arg``,
    with its weight u_a u_b or 2u_a u_b in ``weight``), then all arcsines are taken in one
    loop that LLVM vectorises (:func:`analysis.arcsine.arcsine`), then each 𝓘4(k, l) =
    (4/π²) Λ₄^{−1/2} Σ weight · arcsine.
    """
    n = u.shape[0]
    q = 0
    for k in range(K):
        for l in range(k, K):
            c00, c01, c11 = C[k, k], C[k, l], C[l, l]
            lam4 = erf_i4_lambda4(c00, c01, c11)
            for a in range(n):
                side[a] = 1.0 / math.sqrt(erf_i4_lambda_side(lam4, c00, c01, c11, C[k, a],
                                                             C[l, a], C[a, a]))
            for a in range(n):
                for b in range(a, n):
                    lam0 = erf_i4_lambda0(lam4, c00, c01, c11, C[k, a], C[k, b], C[l, a],
                                          C[l, b], C[a, b])
                    arg[q] = lam0 * side[a] * side[b]
                    weight[q] = u[a] * u[b] if a == b else 2.0 * u[a] * u[b]
                    q += 1
    for i in range(q):
        arg[i] = arcsine(arg[i])
    per_pair = n * (n + 1) // 2
    q = 0
    for k in range(K):
        for l in range(k, K):
            acc = 0.0
            for i in range(q, q + per_pair):
                acc += weight[i] * arg[i]
            q += per_pair
            value = FOUR_OVER_PI2 / math.sqrt(erf_i4_lambda4(C[k, k], C[k, l], C[l, l])) * acc
            i4sum[k, l] = value
            i4sum[l, k] = value


@theory_kernel(inline=True)
def _linear_i4_sums(C, K, u, i4sum):
    """𝓘4(k, l) for g = linear: I4(k, l, a, b) = C_ab for every (k, l), so Σ_{a,b} u_a u_b C_ab
    for all (k, l)."""
    n = u.shape[0]
    acc = 0.0
    for a in range(n):
        acc += u[a] * u[a] * C[a, a]
        for b in range(a + 1, n):
            acc += 2.0 * u[a] * u[b] * C[a, b]
    for k in range(K):
        for l in range(K):
            i4sum[k, l] = acc


@theory_kernel(inline=True)
def _covariance_ok(C, K, M, check_determinants):
    """Whether the covariance C of the K + M fields is usable (docs/model.md §5.5).

    C must be finite with positive field variances; with ``check_determinants`` (the HMM
    bracket divides by them) every det_kj and det_kn must exceed 1e-12 × the product of its
    diagonal entries. The Saad–Solla equations divide by no determinant: a student that has
    learned the teacher exactly (singular C) is their fixed point, not a failure.
    """
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


@theory_kernel(reassociate=True)
def _all_finite(a):
    """Whether every entry of the 1-D array ``a`` is finite: Σ (a_i − a_i) is 0, or NaN if any
    a_i is NaN or ±inf. A sum LLVM may reassociate (vectorise), where a test and a branch per
    entry could not be (the HMM Euler step went 5.9 → 4.7 µs); no flag that assumes finite
    values is set, so a_i − a_i is never folded to 0."""
    acc = 0.0
    for i in range(a.shape[0]):
        acc += a[i] - a[i]
    return acc == 0.0


# ====================================================================== the right-hand sides
def _scm_rhs(y, dy, p, sp, ws):
    """Saad–Solla ODE (docs/model.md §5.1): dy = F(y) on y = [Q (K·K), R (K·M), v (K)].

    Returns False when C is non-finite. (Indexes y and dy directly: array views cost more than
    the arithmetic here.)
    """
    K, M, C = p.K, p.M, ws.C
    KK = K * K
    KKM = KK + K * M
    for k in range(K):
        for l in range(K):
            C[k, l] = y[k * K + l]
        for n in range(M):
            C[k, K + n] = C[K + n, k] = y[KK + k * M + n]
    for n in range(M):
        for m in range(M):
            C[K + n, K + m] = p.T[n, m]
    if not _covariance_ok(C, K, M, False):
        return False
    _field_integrals(p, ws, y[KKM:])
    lr, drift, i4sum, j2 = p.lr, ws.drift, ws.i4sum, ws.j2
    for k in range(K):
        vk = y[KKM + k]
        for l in range(K):
            vl = y[KKM + l]
            dy[k * K + l] = (lr * (vk * drift[k, l] + vl * drift[l, k])
                             + lr * lr * vk * vl * (i4sum[k, l] + j2[k, l]))
        for n in range(M):
            dy[KK + k * M + n] = lr * vk * drift[k, K + n]
        dy[KKM + k] = lr * ws.i2u[k] if p.train_v else 0.0
    return _all_finite(dy)


# Loops over the D eigenvalues may be reassociated (vectorised sums, fused multiply-adds); no
# flag that assumes finite values is set, so NaN and inf still reach the failure checks.
@theory_kernel(reassociate=True)
def _hmm_closure(y, K, M, D, b, zeta, Q, R, Sigma):
    """The closure Σ = (1/D)Σ_τ σ(ρ_τ), Q = ζW + b²Σ, R = (b/D)Σ_τ r(ρ_τ) (docs/model.md §5.2),
    written into ``Q``, ``R`` and ``Sigma`` from the HMM state y."""
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


@theory_kernel(reassociate=True)
def _hmm_densities(sp, ws, r, sig, dr, dsig, v):
    """The density equations of docs/model.md §5.2 into ``dr`` (K, M, D), ``dsig`` (K, K, D).

    Given B, γ (``ws.Bmat``, ``ws.gamma``, see :func:`_hmm_bracket`), ``ws.noise`` (K, K) =
    η² v_k v_l (𝓘4 + σ²J2), and the spectrum ``sp``'s rate and tables d(ρ), bρ, ζρ + b²ρ²/δ.
    Each output row is accumulated in place, one pass per term (d(ρ) and bρ applied in the
    pass), with no scratch rows to clear and combine.
    """
    K, M, D = r.shape
    Yr, Bmat, gamma = sp.Yr, ws.Bmat, ws.gamma
    d_rho, b_rho, noise_rho, rate = sp.d_rho, sp.b_rho, sp.noise_rho, sp.rate
    for k in range(K):
        vk = rate * v[k]
        for m in range(M):
            c = vk * Bmat[k, 0]
            for t in range(D):
                dr[k, m, t] = c * d_rho[t] * r[0, m, t]
            for j in range(1, K):
                c = vk * Bmat[k, j]
                for t in range(D):
                    dr[k, m, t] += c * d_rho[t] * r[j, m, t]
            for n in range(M):
                c = vk * gamma[k, n]
                for t in range(D):
                    dr[k, m, t] += c * b_rho[t] * Yr[n, m, t]
    for k in range(K):
        for l in range(k, K):
            nkl = ws.noise[k, l]
            for t in range(D):
                dsig[k, l, t] = nkl * noise_rho[t]
            for j in range(K):
                ck = rate * v[k] * Bmat[k, j]
                cl = rate * v[l] * Bmat[l, j]
                for t in range(D):
                    dsig[k, l, t] += d_rho[t] * (ck * sig[j, l, t] + cl * sig[j, k, t])
            for n in range(M):
                ck = rate * v[k] * gamma[k, n]
                cl = rate * v[l] * gamma[l, n]
                for t in range(D):
                    dsig[k, l, t] += b_rho[t] * (ck * r[l, n, t] + cl * r[k, n, t])
            if l != k:
                for t in range(D):
                    dsig[l, k, t] = dsig[k, l, t]


@theory_kernel(inline=True)
def _hmm_bracket(p, ws, v):
    """The coefficients B (``ws.Bmat``) and γ (``ws.gamma``) of the bracket
    𝓛_k[X, Y](ρ) = v_k {d(ρ) Σ_j B_kj X^j + bρ Σ_n γ_kn Y^n} (docs/model.md §5.2), from the
    I3 table ``ws.i3`` (I3(k, b, a) = ``ws.i3[k, b, a]``):

      B_kk = −Σ_{j≠k} v_j [Q^{jj}I3(k,k,j) − Q^{kj}I3(k,j,j)]/det_kj − v_k I3(k,k,k)/Q^{kk}
             + Σ_n A_n [T^{nn}I3(k,k,n) − R^{kn}I3(k,n,n)]/det_kn,
      B_kj = −v_j [Q^{kk}I3(k,j,j) − Q^{kj}I3(k,k,j)]/det_kj  (j ≠ k),
      γ_kn = A_n [Q^{kk}I3(k,n,n) − R^{kn}I3(k,k,n)]/det_kn.
    """
    K, M, C, T, A, i3 = p.K, p.M, ws.C, p.T, p.A, ws.i3
    for k in range(K):
        qkk = C[k, k]
        diag = -v[k] * i3[k, k, k] / qkk
        for j in range(K):
            if j == k:
                continue
            qkj = C[k, j]
            det = qkk * C[j, j] - qkj * qkj
            diag -= v[j] * (C[j, j] * i3[k, k, j] - qkj * i3[k, j, j]) / det
            ws.Bmat[k, j] = -v[j] * (qkk * i3[k, j, j] - qkj * i3[k, k, j]) / det
        for n in range(M):
            tn = K + n
            rkn = C[k, tn]
            det = qkk * T[n, n] - rkn * rkn
            diag += A[n] * (T[n, n] * i3[k, k, tn] - rkn * i3[k, tn, tn]) / det
            ws.gamma[k, n] = A[n] * (qkk * i3[k, tn, tn] - rkn * i3[k, k, tn]) / det
        ws.Bmat[k, k] = diag


@theory_kernel(reassociate=True)
def _moments_closure(y, K, M, N, rhos, delta, Q, R):
    """The closure Q = (1/N)Σ_τ ρ_τ q(τ), R = (1/(N√δ))Σ_τ r(τ) (docs/model.md §10.5), written
    into ``Q`` and ``R`` from the Gaussian-equivalent state y."""
    r = y[:K * M * N].reshape((K, M, N))
    q = y[K * M * N:K * M * N + K * K * N].reshape((K, K, N))
    for k in range(K):
        for l in range(K):
            acc = 0.0
            for t in range(N):
                acc += rhos[t] * q[k, l, t]
            Q[k, l] = acc / N
        for n in range(M):
            acc = 0.0
            for t in range(N):
                acc += r[k, n, t]
            R[k, n] = acc / N / math.sqrt(delta)


@theory_kernel(inline=True)
def _spectral_closure(p, sp, ws, y):
    """The model's closure into the top-left K × K and K × M blocks of ``ws.C`` (and ⟨σ⟩ into
    ``ws.Sigma`` for the HMM)."""
    K, M, D, C = p.K, p.M, p.D, ws.C
    if p.model == MOMENTS:
        _moments_closure(y, K, M, D, sp.rhos, sp.delta, C[:K, :K], C[:K, K:])
    else:
        _hmm_closure(y, K, M, D, sp.b, sp.zeta, C[:K, :K], C[:K, K:], ws.Sigma)


def _spectral_rhs(y, dy, p, sp, ws):
    """The HMM ODE (docs/model.md §5.2) on y = [r (K·M·D), σ (K·K·D), W (K·K), v (K)], or the
    Gaussian-equivalent ODE (§10.5) on y = [r (K·M·N), q (K·K·N), v (K)]: one density equation
    on the model's tables and rate, the model's closure, and W's equation for the HMM only.

    Returns False when the covariance is degenerate or dy is non-finite.
    """
    K, M, D, C, lr = p.K, p.M, p.D, ws.C, p.lr
    KMD = K * M * D
    KKD = K * K * D
    _spectral_closure(p, sp, ws, y)
    for n in range(M):
        for k in range(K):
            C[K + n, k] = C[k, K + n]
        for m in range(M):
            C[K + n, K + m] = p.T[n, m]
    if not _covariance_ok(C, K, M, True):
        return False
    v = y[y.shape[0] - K:]
    _field_integrals(p, ws, v)
    _hmm_bracket(p, ws, v)
    drift, i4sum, j2, noise = ws.drift, ws.i4sum, ws.j2, ws.noise
    for k in range(K):
        for l in range(K):
            noise[k, l] = lr * lr * v[k] * v[l] * (i4sum[k, l] + j2[k, l])
    _hmm_densities(sp, ws, y[:KMD].reshape((K, M, D)), y[KMD:KMD + KKD].reshape((K, K, D)),
                   dy[:KMD].reshape((K, M, D)), dy[KMD:KMD + KKD].reshape((K, K, D)), v)
    dv = dy[dy.shape[0] - K:]
    c_f = sp.c_f
    for k in range(K):
        if p.model == HMM:
            for l in range(K):
                dy[KMD + KKD + k * K + l] = (
                    lr * (v[k] * drift[k, l] + v[l] * drift[l, k])
                    + lr * lr * c_f * v[k] * v[l] * (i4sum[k, l] + j2[k, l]))
        dv[k] = lr * ws.i2u[k] if p.train_v else 0.0
    return _all_finite(dy)


def _rhs(y, dy, p, sp, ws):
    """dy = F(y) for the model of ``p`` and its spectrum ``sp`` (None: Saad–Solla); False when
    the state is unusable. Decided by the type of ``sp`` when a kernel is compiled (see
    :class:`OdeParameters`): :func:`_scm_rhs` or :func:`_spectral_rhs`, one compiled call per
    evaluation; a kernel never compiles the other. Compiled code only."""
    raise NotImplementedError("_rhs is called from compiled code only")


@overload(_rhs, jit_options=THEORY_OPTIONS)
def _rhs_for(y, dy, p, sp, ws):
    return _scm_rhs if isinstance(sp, types.NoneType) else _spectral_rhs


def _observe(p, sp, ws, y, out):
    """out = [Q (K·K), R (K·M), v (K), W (K·K), Σ (K·K)], all linear in the state y; False when
    Q, R or v is non-finite. W and Σ are NaN for SCM and MOMENTS. Uses ``ws.C`` as scratch.
    Decided by the type of ``sp`` like :func:`_rhs`. Compiled code only."""
    raise NotImplementedError("_observe is called from compiled code only")


@overload(_observe, jit_options=THEORY_OPTIONS)
def _observe_for(p, sp, ws, y, out):
    return _observe_scm if isinstance(sp, types.NoneType) else _observe_spectral


def _observe_scm(p, sp, ws, y, out):
    """:func:`_observe` for the Saad–Solla state (y holds Q, R and v)."""
    n_obs = p.K * p.K + p.K * p.M + p.K
    for i in range(n_obs, out.shape[0]):
        out[i] = math.nan
    _copy(out[:n_obs], y)
    return _all_finite(out[:n_obs])


def _observe_spectral(p, sp, ws, y, out):
    """:func:`_observe` for the HMM and Gaussian-equivalent states (their closures)."""
    K, M, C = p.K, p.M, ws.C
    KK, KM = K * K, K * M
    _spectral_closure(p, sp, ws, y)
    for k in range(K):
        for l in range(K):
            out[k * K + l] = C[k, l]
        for n in range(M):
            out[KK + k * M + n] = C[k, K + n]
    start = K * M * p.D + K * K * p.D
    if p.model == HMM:
        _copy(out[KK + KM + K:2 * KK + KM + K], y[start:start + KK])      # W
        for k in range(K):
            for l in range(K):
                out[2 * KK + KM + K + k * K + l] = ws.Sigma[k, l]             # Σ
        _copy(out[KK + KM:KK + KM + K], y[start + KK:])                   # v
    else:
        for i in range(KK + KM + K, out.shape[0]):
            out[i] = math.nan
        _copy(out[KK + KM:KK + KM + K], y[start:])                        # v
    return _all_finite(out[:KK + KM + K])


@theory_kernel(inline=True)
def _copy(dst, src):
    """dst[i] = src[i] for 1-D arrays of one length. Element by element: an array assigned to
    a slice makes numba compile its formatted shape-mismatch error, seconds of a cold start."""
    for i in range(src.shape[0]):
        dst[i] = src[i]


# ====================================================================== the integrators
@theory_kernel()
def _integrate_euler(p, sp, grid, y0, out):
    """Explicit Euler from y0 into ``out`` (n_eval, n_obs) at ``grid.t`` (:func:`_euler`) for
    the parameters ``p`` and spectrum ``sp`` (None for SCM); rows not reached stay NaN
    (docs/model.md §5.5).

    Returns
    -------
    float
        The failure time, or −1.0 when every row was filled.
    """
    ws, y, obs, done = _start(p, y0, out)
    failed_at = _euler(p, sp, grid, ws, y, obs, out, done)
    _finish(out, done)
    return failed_at


@theory_kernel()
def _integrate_rk4(p, sp, grid, y0, out):
    """Classical RK4 from y0 into ``out`` at ``grid.t`` (:func:`_rk4`); as
    :func:`_integrate_euler` otherwise."""
    ws, y, obs, done = _start(p, y0, out)
    failed_at = _rk4(p, sp, grid, ws, y, obs, out, done)
    _finish(out, done)
    return failed_at


#: The integrator kernel of each method code. Each compiles, on first use, for the types of its
#: arguments: one kernel per model family (spectrum None or not) and activation family (relu or
#: not).
_INTEGRATORS = {EULER: _integrate_euler, RK4: _integrate_rk4}


@theory_kernel(inline=True)
def _start(p, y0, out):
    """The workspace, the state, an output row and the rows' done flags; ``out`` zeroed."""
    ws = ode_workspace(p.K, p.M)
    out[:, :] = 0.0
    return ws, y0.copy(), np.empty(out.shape[1]), np.zeros(out.shape[0], dtype=np.bool_)


@theory_kernel(inline=True)
def _finish(out, done):
    """Rows not reached become NaN."""
    for i in range(out.shape[0]):
        if not done[i]:
            out[i, :] = math.nan


@theory_kernel(inline=True)
def _euler(p, sp, grid, ws, y, obs, out, done):
    """Explicit Euler, y_{n+1} = y_n + dt·F(y_n), from y (overwritten).

    The row at t = n·dt is the n-th iterate; a t off the grid is (1 − θ)·y_lo + θ·y_{lo+1}
    (accumulated into ``out``, which starts at 0). Sets ``done`` for the rows filled; returns
    the failure time or −1.0.
    """
    lo, theta, dt = grid.lo, grid.theta, grid.dt
    n_eval = lo.shape[0]
    dy = np.empty_like(y)
    n_max = 0
    for i in range(n_eval):
        n_max = max(n_max, lo[i] + (1 if theta[i] > 0.0 else 0))
    first = 0
    for n in range(n_max + 1):
        if first < n_eval and lo[first] <= n:
            if not _observe(p, sp, ws, y, obs):
                return n * dt
            for i in range(first, n_eval):
                if lo[i] > n:
                    break
                if lo[i] == n:
                    _axpy(out[i], out[i], 1.0 - theta[i], obs)
                    if theta[i] == 0.0:
                        done[i] = True
                elif lo[i] + 1 == n and theta[i] > 0.0:
                    _axpy(out[i], out[i], theta[i], obs)
                    done[i] = True
            while first < n_eval and done[first]:
                first += 1
        if n == n_max:
            break
        if not _rhs(y, dy, p, sp, ws):
            return n * dt
        for q in range(y.shape[0]):
            y[q] += dt * dy[q]
    return -1.0


@theory_kernel(inline=True)
def _rk4(p, sp, grid, ws, y, obs, out, done):
    """Classical RK4 from y (overwritten); sets ``out`` and ``done`` for the rows filled and
    returns the failure time or −1.0. Fixed steps (:func:`_rk4_fixed`) or, with
    ``grid.tolerance`` > 0, steps chosen by their error (:func:`_rk4_controlled`)."""
    n = y.shape[0]
    scratch = np.empty((9, n))
    if grid.tolerance > 0.0:
        return _rk4_controlled(p, sp, grid, ws, y, obs, out, done, scratch)
    return _rk4_fixed(p, sp, grid, ws, y, obs, out, done, scratch)


@theory_kernel(inline=True)
def _rk4_step(p, sp, ws, y, k1, h, scratch, y_next):
    """y_next = one classical RK4 step of h from y, given k1 = F(y); rows 1–4 of ``scratch``
    are its stages. y_next may be y itself (each entry is read before it is written). False
    when an evaluation failed."""
    stage = scratch[4]
    for s in range(1, 4):
        _axpy(stage, y, h if s == 3 else 0.5 * h, k1 if s == 1 else scratch[s - 1])
        if not _rhs(stage, scratch[s], p, sp, ws):
            return False
    for q in range(y.shape[0]):
        y_next[q] = y[q] + h / 6.0 * (k1[q] + 2.0 * scratch[1, q] + 2.0 * scratch[2, q]
                                      + scratch[3, q])
    return True


@theory_kernel(inline=True)
def _rk4_fixed(p, sp, grid, ws, y, obs, out, done, scratch):
    """Classical RK4 steps of dt, the last step before each output time shortened to land on it.

    With ``grid.stability`` > 0 each step h is also at most stability / (2 s b), s =
    ``p.stiffness`` and b = max_k Σ_j |v_k B_kj| at the step's start (the bracket of its first
    evaluation): 2 s b bounds the rate of the stiffest density mode (docs/model.md §10.5).
    """
    dt = grid.dt
    k1 = scratch[5]
    t = 0.0
    for i in range(grid.t.shape[0]):
        target = grid.t[i]
        while target - t > GRID_TOLERANCE * dt:
            h = min(dt, target - t)
            if not _rhs(y, k1, p, sp, ws):
                return t
            if grid.stability > 0.0:
                h = min(h, grid.stability / (2.0 * p.stiffness * _bracket_norm(ws, y, p)))
            if not _rk4_step(p, sp, ws, y, k1, h, scratch, y):
                return t
            t = target if target - (t + h) <= GRID_TOLERANCE * dt else t + h
        if not _report(p, sp, ws, y, obs, out[i]):
            return t
        done[i] = True
    return -1.0


@theory_kernel(inline=True)
def _rk4_controlled(p, sp, grid, ws, y, obs, out, done, scratch):
    """Classical RK4 with steps chosen by step doubling (docs/model.md §5.5): one step of h and
    two of h/2 from the same state; their difference Δ / 15 estimates the error of the two half
    steps. A step is accepted when every component q of it is within ``grid.tolerance`` ×
    (1 + |y_q|), and then extrapolated (y = two half steps + Δ/15, Richardson: fifth order).

    The next step is 0.9 (tolerance / error)^{1/5} times the last (between 1/5 and 4 times), at
    most ``grid.dt``, and is shortened to land on each output time (a step shortened so keeps
    the longer one for later). A rejected or failed trial is retried shorter; the integration
    fails where F(y) itself fails, or where even a step of ``GRID_TOLERANCE`` × dt fails.
    """
    tol, h_max = grid.tolerance, grid.dt
    k1, full, half, k1_half, half2 = scratch[5], scratch[6], scratch[7], scratch[0], scratch[8]
    h = min(h_max, CONTROLLED_FIRST_STEP)
    t = 0.0
    for i in range(grid.t.shape[0]):
        target = grid.t[i]
        while target - t > GRID_TOLERANCE * h_max:
            if not _rhs(y, k1, p, sp, ws):
                return t
            step = min(h, target - t)
            error = _doubling_error(p, sp, ws, y, k1, step, scratch, full, half, k1_half,
                                    half2, tol)
            accepted = error <= 1.0
            if accepted:
                for q in range(y.shape[0]):
                    y[q] = half2[q] + (half2[q] - full[q]) / 15.0
                t = target if target - (t + step) <= GRID_TOLERANCE * h_max else t + step
            elif step <= GRID_TOLERANCE * h_max:
                return t
            factor = 4.0 if error == 0.0 else min(4.0, max(0.2, 0.9 * error ** -0.2))
            h = min(h_max, max(h, step * factor) if accepted and step < h else step * factor)
        if not _report(p, sp, ws, y, obs, out[i]):
            return t
        done[i] = True
    return -1.0


@theory_kernel(inline=True)
def _doubling_error(p, sp, ws, y, k1, step, scratch, full, half, k1_half, half2, tol):
    """The step-doubling error of RK4 from y (k1 = F(y)): ``full`` one step of ``step``,
    ``half2`` two of step/2, and max_q |half2 − full| / (15 tol (1 + |half2_q|)); inf when an
    evaluation failed or a value is not finite."""
    if not _rk4_step(p, sp, ws, y, k1, step, scratch, full):
        return math.inf
    if not _rk4_step(p, sp, ws, y, k1, 0.5 * step, scratch, half):
        return math.inf
    if not _rhs(half, k1_half, p, sp, ws):
        return math.inf
    if not _rk4_step(p, sp, ws, half, k1_half, 0.5 * step, scratch, half2):
        return math.inf
    error = 0.0
    for q in range(y.shape[0]):
        e = abs(half2[q] - full[q]) / (15.0 * tol * (1.0 + abs(half2[q])))
        if not e <= error:          # also catches NaN
            error = e if math.isfinite(e) else math.inf
    return error


@theory_kernel(inline=True)
def _report(p, sp, ws, y, obs, row):
    """``row`` = the observation of y (RK4 lands on each output time); False when it is not
    finite."""
    if not _observe(p, sp, ws, y, obs):
        return False
    _copy(row, obs)
    return True


@theory_kernel(inline=True)
def _bracket_norm(ws, y, p):
    """max_k Σ_j |v_k B_kj| from the bracket of the last evaluation (tiny when v = 0)."""
    v = y[y.shape[0] - p.K:]
    norm = 1e-300
    for k in range(p.K):
        acc = 0.0
        for j in range(p.K):
            acc += abs(v[k] * ws.Bmat[k, j])
        norm = max(norm, acc)
    return norm


@theory_kernel(inline=True)
def _axpy(out, y, c, k):
    """out = y + c·k, elementwise (no temporary array)."""
    for q in range(y.shape[0]):
        out[q] = y[q] + c * k[q]


# ====================================================================== Python API
@dataclass
class Trajectory:
    """An ODE solution on the output grid ``t``.

    Q (n, K, K), R (n, K, M), v (n, K), eg (n,); for the HMM ODE also W and Sigma (n, K, K).
    dt is the (largest) step; with ``step_control`` (Gaussian-equivalent RK4 at its default)
    steps may be shorter.
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
    step_control: bool = False


def output_grid(dt: float, t_max: float | None, t_eval) -> np.ndarray:
    """The output times (docs/model.md §5.5): t_eval as given (sorted, ≥ 0, finite), or {0} ∪
    the multiples of dt nearest to 200 log-spaced points in [0.1, t_max], capped at t_max."""
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


def _solve(p: OdeParameters, spectrum: Spectrum | None, grid: OdeGrid, y0: np.ndarray,
           method: str) -> Trajectory:
    """Integrate and unpack the kernel's output rows into a :class:`Trajectory`."""
    K, M, t = p.K, p.M, grid.t
    out = np.empty((t.shape[0], 3 * K * K + K * M + K))
    failed_at = _INTEGRATORS[grid.method](p, spectrum, grid, y0, out)
    if failed_at >= 0:
        out[t >= failed_at] = np.nan  # valid rows are exactly those before the failure
    KK, KM = K * K, K * M
    n = t.shape[0]
    Q = out[:, :KK].reshape(n, K, K)
    R = out[:, KK:KK + KM].reshape(n, K, M)
    v = out[:, KK + KM:KK + KM + K]
    W = out[:, KK + KM + K:2 * KK + KM + K].reshape(n, K, K)
    Sigma = out[:, 2 * KK + KM + K:].reshape(n, K, K)
    eg = np.array([generalisation_error_kernel(Q[i], R[i], p.T, v[i], p.A, p.g)
                   if np.isfinite(Q[i]).all() else np.nan for i in range(n)])
    has_layers = p.model == HMM
    return Trajectory(t=t, Q=Q, R=R, v=v, eg=eg, T=p.T.copy(), A=p.A.copy(),
                      W=W if has_layers else None, Sigma=Sigma if has_layers else None,
                      status="failed" if failed_at >= 0 else "ok",
                      t_failed=float(failed_at) if failed_at >= 0 else math.nan,
                      method=method, dt=grid.dt,
                      step_control=grid.stability > 0.0 or grid.tolerance > 0.0)


def _matrix(x, shape, name) -> np.ndarray:
    a = np.ascontiguousarray(x, dtype=np.float64)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    return a


def _checked_grid(method: str, dt: float | None, t_max, t_eval, lr, g, sigma
                  ) -> tuple[int, OdeGrid]:
    """The Saad–Solla and HMM ODEs' checked arguments: (activation code, grid). dt None is the
    method's default: Euler DEFAULT_DT (the published semantics), RK4 steps of at most
    RK4_MAX_DT chosen by their error (RK4_TOLERANCE); the output grid is rounded to multiples
    of the given dt, or of DEFAULT_DT."""
    controlled = dt is None and method == "rk4"
    step = RK4_MAX_DT if controlled else DEFAULT_DT if dt is None else dt
    method_code, g_code = _check_common(lr, step, method, g, sigma)
    t = output_grid(DEFAULT_DT if dt is None else dt, t_max, t_eval)
    return g_code, ode_grid(method_code, step, t,
                            tolerance=RK4_TOLERANCE if controlled else 0.0)


def integrate_scm(Q0, R0, T, v0, A, *, lr: float, g: str = "erf",
                  train_second_layer: bool = False, dt: float | None = None,
                  t_max: float | None = None, t_eval=None, method: str = DEFAULT_METHOD,
                  sigma: float = 0.0) -> Trajectory:
    """Saad–Solla ODE for i.i.d. Gaussian inputs (docs/model.md §5.1).

    dR^{kn}/dt = η v_k [Σ_m A_m I3(k,n,m) − Σ_j v_j I3(k,n,j)]
    dQ^{kl}/dt = η v_k [Σ_m A_m I3(k,l,m) − Σ_j v_j I3(k,l,j)] + (k ↔ l)
                 + η² v_k v_l 𝓘4(k,l) + η² σ² v_k v_l J2(k,l)
    dv_k/dt   = η [Σ_n A_n I2(k,n) − Σ_j v_j I2(k,j)]   (second layer trained only)

    Parameters
    ----------
    Q0, R0, T, v0, A : (K, K), (K, M), (M, M), (K,), (M,) initial state and teacher.
    lr : learning rate η.
    g : activation, one of :data:`analysis.activations.ACTIVATIONS`.
    train_second_layer : whether v is trained.
    dt, t_max, t_eval, method : integrator and output grid (docs/model.md §5.5,
        :func:`output_grid`); method is "euler" or "rk4"; dt None is the method's default:
        Euler DEFAULT_DT, RK4 error-controlled steps of at most RK4_MAX_DT
        (:func:`_rk4_controlled`). An explicit dt is used as given (fixed steps).
    sigma : output-noise standard deviation.

    Returns
    -------
    Trajectory
    """
    g_code, grid = _checked_grid(method, dt, t_max, t_eval, lr, g, sigma)
    Q0 = np.asarray(Q0, dtype=np.float64)
    K = Q0.shape[0]
    T = np.ascontiguousarray(T, dtype=np.float64)
    M = T.shape[0]
    Q0 = _matrix(Q0, (K, K), "Q0")
    R0 = _matrix(R0, (K, M), "R0")
    T = _matrix(T, (M, M), "T")
    v0 = _matrix(v0, (K,), "v0")
    A = _matrix(A, (M,), "A")
    y0 = np.concatenate([Q0.ravel(), R0.ravel(), v0])
    p, spectrum = ode_parameters(SCM, K, T, A, lr=lr, g=g_code, sigma=sigma,
                                 train_v=train_second_layer)
    return _solve(p, spectrum, grid, y0, method)


def integrate_hmm(state: HmmInitialState, *, lr: float, delta: float, f: str = "sign",
                  g: str = "erf", train_second_layer: bool = False, dt: float | None = None,
                  t_max: float | None = None, t_eval=None, method: str = DEFAULT_METHOD,
                  sigma: float = 0.0, teacher_projection: str = "T_tilde") -> Trajectory:
    """Hidden-manifold ODE with one density per eigenvalue of FᵀF/N (docs/model.md §5.2).

    ∂_t r^{km}(ρ) = (η/δ) 𝓛_k[X^j = r^{jm}(ρ), Y^n = T̃^{nm}]
    ∂_t σ^{kl}(ρ) = (η/δ) {𝓛_k[σ^{jl}(ρ), r^{ln}(ρ)] + 𝓛_l[σ^{jk}(ρ), r^{kn}(ρ)]}
                    + η² (ζρ + b²ρ²/δ) v_k v_l 𝓘4(k,l)
    dW^{kl}/dt    = η v_k [Σ_n A_n I3(k,l,n) − Σ_j v_j I3(k,l,j)] + (k ↔ l) + η² c_f v_k v_l 𝓘4(k,l)
    dv_k/dt       = η [Σ_n A_n I2(k,n) − Σ_j v_j I2(k,j)]   (trained only)
    with the closure Σ = ⟨σ⟩_τ, Q = ζW + b²Σ, R = b⟨r⟩_τ and d(ρ) = ζδ + b²ρ. Output noise σ adds
    its J2 terms.

    Parameters
    ----------
    state : the seed's spectral state at step 0.
    lr, delta : learning rate η and δ = D/N.
    f : folding function (a = E f(u) must vanish: not relu).
    g, train_second_layer, dt, t_max, t_eval, method, sigma : as for :func:`integrate_scm`.
    teacher_projection : "T_tilde", or "per_eigenvalue" to replace T̃^{nm} by ω_nτ ω_mτ
        (needs ``state.omega``).

    Returns
    -------
    Trajectory
        With W and Sigma.
    """
    g_code, grid = _checked_grid(method, dt, t_max, t_eval, lr, g, sigma)
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
    y0 = np.concatenate([state.r.ravel(), state.sigma.ravel(), state.W.ravel(), state.v])
    p, spectrum = ode_parameters(HMM, K, state.T, state.A, lr=lr, g=g_code, sigma=sigma,
                                 train_v=train_second_layer, rhos=state.rhos, Yr=Yr,
                                 delta=delta, b=b, zeta=zeta, c_f=c_f)
    return _solve(p, spectrum, grid, y0, method)


def integrate_gaussian_equivalent(state: GaussianEquivalentState, *, lr: float, g: str = "erf",
                                  train_second_layer: bool = False, dt: float | None = None,
                                  t_max: float | None = None, t_eval=None,
                                  method: str = DEFAULT_METHOD,
                                  sigma: float = 0.0) -> Trajectory:
    """Gaussian-equivalent ODE on the input covariance (docs/model.md §10.5; Goldt et al. 2021,
    ``deepgen_ode.cpp``), with 𝓛_k[X, Y](τ) = v_k {ρ_τ Σ_j B_kj X^j + δ^{-1/2} Σ_n γ_kn Y^n}
    (B, γ as in :func:`integrate_hmm`):

    ∂_t r^{km}(τ) = η 𝓛_k[r^{jm}(τ), t̃^{nm}(τ)]
    ∂_t q^{kl}(τ) = η {𝓛_k[q^{jl}(τ), r^{ln}(τ)] + 𝓛_l[q^{jk}(τ), r^{kn}(τ)]}
                    + η² ρ_τ v_k v_l (𝓘4(k,l) + σ²J2(k,l))
    dv_k/dt       = η [Σ_n A_n I2(k,n) − Σ_j v_j I2(k,j)]   (trained only)
    with the closure Q = (1/N)Σ_τ ρ_τ q(τ), R = (1/(N√δ))Σ_τ r(τ).

    Parameters
    ----------
    state : the state at t = 0 (:meth:`GaussianEquivalentState.from_moments`).
    lr, g, train_second_layer, t_max, t_eval, sigma : as for :func:`integrate_scm`.
    dt : the step; None for the method's default: Euler DEFAULT_DT (the published semantics),
        RK4 MOMENTS_RK4_DT with every step capped for stability by the state's stiffness
        (:func:`_rk4`). An explicit dt is used as given (fixed steps).
    method : "euler" or "rk4".

    Returns
    -------
    Trajectory
        Without W and Sigma.
    """
    controlled = dt is None and method == "rk4"
    if dt is None:
        dt = MOMENTS_RK4_DT if method == "rk4" else DEFAULT_DT
    method_code, g_code = _check_common(lr, dt, method, g, sigma)
    if not isinstance(state, GaussianEquivalentState):
        raise TypeError(f"state must be a GaussianEquivalentState, got {type(state).__name__}")
    t = output_grid(dt, t_max, t_eval)
    y0 = np.concatenate([state.r.ravel(), state.q.ravel(), state.v])
    p, spectrum = ode_parameters(MOMENTS, state.K, state.T, state.A, lr=lr, g=g_code,
                                 sigma=sigma, train_v=train_second_layer, rhos=state.rhos,
                                 Yr=state.t_tilde, delta=state.delta)
    grid = ode_grid(method_code, dt, t, STABILITY if controlled else 0.0)
    return _solve(p, spectrum, grid, y0, method)
