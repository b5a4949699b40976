"""The matched Gaussian latent: the Gaussian with the mean and covariance of a configured latent
after its standardization (docs/model.md §10.2).

A matched latent is c = m_c + L z with L the symmetric square root of S_c, so that only its first
two moments equal the mixture's. :func:`matched_law` gives (m_c, L) in a structured form,

    L = diag(out_scale) · blockdiag(in_scale·I_B + U_bᵀ diag(shift_b) U_b),

exact for every standardization except ``sample`` with block structure, which is estimated by
Monte Carlo from stream (s,6,0). The simulator never forms c: Lᵀ and m_c are folded into the GEMM
operand once per seed (:meth:`MatchedLaw.apply_transpose`), so a matched run costs what a
Gaussian run does.
"""

from __future__ import annotations

import math
import threading
import warnings
from dataclasses import dataclass

import numpy as np

from fastsgd.sampling import Mixture, latent_law, sample_latent

LATENT_LAWS = ("mixture", "matched_gaussian", "data")
#: Samples per chunk of the Monte Carlo moments (a stop request is checked between chunks).
MOMENT_CHUNK = 4096
#: Eigenvalues of S_c below this fraction of the largest are rounding noise of a null space.
NULL_EIGENVALUE = 1e-12


class Stopped(Exception):
    """A stop was requested while Monte Carlo moments were being drawn."""


@dataclass(frozen=True)
class MatchedLaw:
    """c = mean + L z (docs/model.md §10.2), L = diag(out_scale)·blockdiag(in_scale·I_B +
    U_bᵀ diag(shift_b) U_b); ``vectors`` holds U_b as (D/B, r, B), ``shifts`` (D/B, r)."""

    mean: np.ndarray
    out_scale: np.ndarray
    in_scale: float
    vectors: np.ndarray
    shifts: np.ndarray
    method: str

    @property
    def is_standard(self) -> bool:
        """True when c = z exactly (L = I, m_c = 0): the Gaussian latent's own draws."""
        return (self.in_scale == 1.0 and not self.shifts.any() and not self.mean.any()
                and bool(np.all(self.out_scale == 1.0)))

    def _symmetric_part(self, X: np.ndarray) -> np.ndarray:
        """blockdiag(in_scale·I_B + U_bᵀ diag(shift_b) U_b)·X, in O(D·r·k) operations."""
        n_blocks, _, B = self.vectors.shape
        out = self.in_scale * X
        for b in range(n_blocks):
            U = self.vectors[b]
            rows = slice(b * B, (b + 1) * B)
            out[rows] += U.T @ (self.shifts[b][:, None] * (U @ X[rows]))
        return out

    def apply(self, X: np.ndarray) -> np.ndarray:
        """L X for X (D, k)."""
        return self.out_scale[:, None] * self._symmetric_part(X)

    def apply_transpose(self, X: np.ndarray) -> np.ndarray:
        """Lᵀ X for X (D, k): the GEMM operand of a row of normals zᵀ, since cᵀ = m_cᵀ + zᵀLᵀ
        (L is not symmetric for `population`)."""
        return self._symmetric_part(self.out_scale[:, None] * X)

    def factor(self) -> np.ndarray:
        """L as a dense D × D matrix."""
        return self.apply(np.eye(self.mean.shape[0]))

    def covariance(self) -> np.ndarray:
        """S_c = L Lᵀ (D × D)."""
        L = self.factor()
        return L @ L.T


def _structured(mean, in_scale, vectors, shifts, method, out_scale=None) -> MatchedLaw:
    D = mean.shape[0]
    return MatchedLaw(mean=mean, out_scale=np.ones(D) if out_scale is None else out_scale,
                      in_scale=float(in_scale), vectors=vectors, shifts=shifts, method=method)


def _eigen_root(matrix: np.ndarray, in_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvectors (as rows) and shifts √λ − in_scale of a symmetric PSD matrix, eigenvalues
    below NULL_EIGENVALUE of the largest counted as 0 (a singular S_c keeps its null space
    exactly): the symmetric square root, never a Cholesky factor."""
    values, vectors = np.linalg.eigh(matrix)
    top = values.max(initial=0.0)
    values = np.where(values > NULL_EIGENVALUE * top, values, 0.0)
    return vectors.T, np.sqrt(values) - in_scale


def sample_standardized_moments(norm: float, D: int) -> tuple[float, float]:
    """a = E[x∥/‖x‖] and b = E[x∥²/‖x‖²] for x∥ ~ N(norm, 1), ‖x‖² = x∥² + χ²_{D−2}
    (docs/model.md §10.2), by one-dimensional quadrature of the exact Laplace representations

        b = ∫₀^∞ (1+2s)^{−(k+1)/2} e^{−n²s/(1+2s)} [1/(1+2s) + n²/(1+2s)²] ds,
        a = (2n/√π) ∫₀^∞ (1+2r²)^{−(k+3)/2} e^{−n²r²/(1+2r²)} dr,        k = D − 2,

    from 1/q = ∫ e^{−sq} ds, 1/√q = π^{−1/2} ∫ s^{−1/2} e^{−sq} ds, E e^{−sχ²_k} = (1+2s)^{−k/2}
    and the Gaussian tilt of x∥."""
    from scipy.integrate import IntegrationWarning, quad

    k, n2 = D - 2, norm * norm

    def b_integrand(s):
        q = 1.0 + 2.0 * s
        weight = math.exp(-0.5 * (k + 1) * math.log1p(2.0 * s) - n2 * s / q)
        return weight * (1.0 / q + n2 / (q * q))

    def a_integrand(r):
        q = 1.0 + 2.0 * r * r
        return math.exp(-0.5 * (k + 3) * math.log1p(2.0 * r * r) - n2 * r * r / q)

    # the integrands fall off over s ~ 1/(k + n²) (r ~ its square root): split there. quad's
    # round-off warnings in the far tails are harmless; the bounds below catch a real failure.
    scale = 1.0 / (k + 1.0 + n2)
    options = dict(epsabs=0.0, epsrel=1e-12, limit=500)
    root = math.sqrt(scale)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IntegrationWarning)
        b = (quad(b_integrand, 0.0, 20.0 * scale, **options)[0]
             + quad(b_integrand, 20.0 * scale, np.inf, **options)[0])
        a = (quad(a_integrand, 0.0, 20.0 * root, **options)[0]
             + quad(a_integrand, 20.0 * root, np.inf, **options)[0]) * 2.0 * norm / math.sqrt(
                 math.pi)
    # 0 ≤ a ≤ 1, b between its value at ‖ν‖ = 0, 1/(D − 1), and 1, and a² ≤ b (Jensen)
    if not (0.0 <= a <= 1.0 and (1.0 - 1e-9) / (D - 1) <= b <= 1.0 + 1e-12
            and a * a <= b + 1e-8):
        raise ArithmeticError(f"the quadrature of the sample-standardized moments failed at "
                              f"‖ν‖ = {norm:g}, D = {D}: a = {a!r}, b = {b!r}")
    return a, b


def _sample_vector_law(mixture: Mixture) -> MatchedLaw:
    """`sample` with one label per sample (B = D, or m = 1): per label, c = √D·x/‖x‖ with
    x ~ N(ν_J, P), ν_J = Pμ_J; E[c|J] = √D a_J ν̂, E[ccᵀ|J] = D[b_J ν̂ν̂ᵀ + (1 − b_J)/(D − 2)
    (P − ν̂ν̂ᵀ)], averaged over J with weights p (docs/model.md §10.2). Then
    S_c = κP + G with G of rank ≤ m in span{ν̂_J} ⊥ 1, and L = √κ P + (√(κ + G) − √κ) on that
    span."""
    means, p = mixture.means, mixture.weights
    D = means.shape[1]
    centred = means - means.mean(axis=1, keepdims=True)      # ν_J = P μ_J
    norms = np.linalg.norm(centred, axis=1)
    directions = np.divide(centred, norms[:, None], out=np.zeros_like(centred),
                           where=norms[:, None] > 0)
    ab = np.array([sample_standardized_moments(n, D) if n > 0 else (0.0, 1.0 / (D - 1))
                   for n in norms])
    a, b = ab[:, 0], ab[:, 1]
    mean = math.sqrt(D) * (p * a) @ directions
    kappa = float(D * np.sum(p * (1.0 - b)) / (D - 2))
    beta = D * p * (b - (1.0 - b) / (D - 2))
    basis, singular, _ = np.linalg.svd(directions.T, full_matrices=False)
    basis = basis[:, singular > 1e-12 * max(singular.max(initial=0.0), 1e-300)]   # (D, r)
    projected = basis.T @ directions.T                          # (r, m)
    spike = (projected * beta) @ projected.T - np.outer(basis.T @ mean, basis.T @ mean)
    rows, shifts = _eigen_root(kappa * np.eye(basis.shape[1]) + spike, math.sqrt(kappa))
    ones = np.full((1, D), 1.0 / math.sqrt(D))
    vectors = np.concatenate([ones, rows @ basis.T])[None]
    return _structured(mean, math.sqrt(kappa), vectors,
                       np.concatenate([[-math.sqrt(kappa)], shifts])[None], "quadrature")


def _centring_law(D: int) -> MatchedLaw:
    """`sample` of an exchangeable latent: m_c = 0, S_c = D/(D − 1)·P, L = √(D/(D − 1))·P."""
    scale = math.sqrt(D / (D - 1))
    vectors = np.full((1, 1, D), 1.0 / math.sqrt(D))
    return _structured(np.zeros(D), scale, vectors, np.array([[-scale]]), "exact")


def monte_carlo_law(mixture: Mixture, standardize: str, rng: np.random.Generator,
                    samples: int, stop: threading.Event | None = None) -> MatchedLaw:
    """Mean and covariance (1/n normalisation) of ``samples`` standardized latents drawn by the
    simulator's own sampler from ``rng`` (stream (s,6,0), labels and normals interleaved),
    MOMENT_CHUNK at a time; L from the eigendecomposition of the estimate (clipped at 0)."""
    D = mixture.means.shape[1]
    law = latent_law(mixture, standardize)
    total, second = np.zeros(D), np.zeros((D, D))
    chunk = np.empty((min(samples, MOMENT_CHUNK), D))
    for start in range(0, samples, MOMENT_CHUNK):
        if stop is not None and stop.is_set():
            raise Stopped
        block = chunk[:min(MOMENT_CHUNK, samples - start)]
        sample_latent(rng, rng, block, law)
        total += block.sum(axis=0)
        second += block.T @ block
    mean = total / samples
    rows, shifts = _eigen_root(second / samples - np.outer(mean, mean), 0.0)
    return _structured(mean, 0.0, rows[None], shifts[None], "monte_carlo")


def empirical_law(mean: np.ndarray, covariance: np.ndarray, whitened: bool) -> MatchedLaw:
    """The matched Gaussian of a data latent (docs/model.md §11.3): the Gaussian with the
    standardized data's empirical mean and covariance, L their symmetric square root. A
    whitened data latent has covariance I and mean 0 exactly: c = z, as for the Gaussian latent."""
    D = mean.shape[0]
    if whitened:
        return _structured(np.zeros(D), 1.0, np.zeros((1, 0, D)), np.zeros((1, 0)), "exact")
    rows, shifts = _eigen_root(covariance, 0.0)
    return _structured(mean.copy(), 0.0, rows[None], shifts[None], "data")


def matched_method(m: int, alpha: float, means: str, block_size: int, D: int,
                   standardize: str) -> str:
    """How the matched law of a configuration is obtained: "exact", "quadrature" (sample, one
    label per sample, vector means) or "monte_carlo" (sample with other block structures)."""
    if standardize != "sample":
        return "exact"
    exchangeable = m == 1 and means == "scalar" or alpha == 0.0 or (
        means == "scalar" and block_size in (1, D))
    if exchangeable:
        return "exact"
    if (block_size == D or m == 1) and D >= 3:
        return "quadrature"
    return "monte_carlo"


def matched_law(mixture: Mixture, standardize: str, method: str, *,
                rng: np.random.Generator | None = None, samples: int = 0,
                stop: threading.Event | None = None) -> MatchedLaw:
    """The matched Gaussian of the mixture after ``standardize`` (docs/model.md §10.2), by the
    ``method`` :func:`matched_method` chose (Monte Carlo needs ``rng`` and ``samples``)."""
    D = mixture.means.shape[1]
    if standardize == "whiten":
        return _structured(np.zeros(D), 1.0, np.zeros((1, 0, D)), np.zeros((1, 0)), "exact")
    if standardize in ("none", "population"):
        out_scale = 1.0 / mixture.std if standardize == "population" else None
        mean = np.zeros(D) if standardize == "population" else mixture.mean.copy()
        return _structured(mean, 1.0, mixture.whiten_vectors, mixture.root_shifts, "exact",
                           out_scale)
    if method == "exact":
        return _centring_law(D)
    if method == "quadrature":
        return _sample_vector_law(mixture)
    return monte_carlo_law(mixture, standardize, rng, samples, stop)
