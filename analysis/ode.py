"""Gaussian ODEs for online SGD (MODEL.md §5).

This module holds the initial state of the hidden-manifold ODE (:class:`HmmInitialState`, the
spectral decomposition of MODEL.md §4.4), which the simulator records for every seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
