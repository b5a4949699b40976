"""Latent sampling: Gaussian mixtures, block labels and standardization (docs/model.md §2.1–2.2,
§10.1–10.3).

The Python functions here compute the per-seed mixture constants (means, vector or scalar,
weights, exact moments, whitening factors, the aligned teacher's direction); the kernel
:func:`sample_latent` draws a block of latents from the seed's own Generators and standardizes
them (:func:`standardize_latent`), O(D·m) per sample. A matched-Gaussian latent (§10.2) is drawn
here as its normals z only: its factor L and mean enter through the GEMM operand
(fastsgd/matched.py, fastsgd/problem.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from analysis.jit import kernel
from fastsgd.core import dot

WEIGHT_SCHEMES = ("uniform", "dirichlet")
MEAN_GEOMETRIES = ("vector", "scalar")
TEACHERS = ("random", "aligned")
#: Relative tolerance under which singular values or entries count as tied (§10.3).
TIE_TOLERANCE = 1e-12
STANDARDIZATIONS = ("none", "sample", "population", "whiten")
#: The kernels' runtime codes of the standardizations (one compiled kernel serves all).
STANDARDIZE_CODES = {name: code for code, name in enumerate(STANDARDIZATIONS)}
STD_NONE, STD_SAMPLE, STD_POPULATION, STD_WHITEN = (STANDARDIZE_CODES[name]
                                                    for name in STANDARDIZATIONS)


@dataclass(frozen=True)
class Mixture:
    """Constants of one seed's latent law (docs/model.md §2.1).

    Attributes
    ----------
    means : (m, D) component means μ_i, entries ~ U[−α, α).
    weights : (m,) component weights p_i, summing to 1.
    block_size : B, the number of consecutive coordinates that share one label.
    mean : (D,) exact mean μ̄ = Σ_i p_i μ_i.
    std : (D,) exact coordinate standard deviation s_r = √(1 + Σ_i p_i (μ_{i,r} − μ̄_r)²).
    whiten_vectors : (D/B, m, B) left singular vectors of V_b, U_bᵀ per block (zero rows past
        the rank); stored transposed so that the kernel reads them contiguously.
    singular_values : (D/B, m) singular values s_b of V_b, descending (zeros past the rank).
    """

    means: np.ndarray
    weights: np.ndarray
    block_size: int
    mean: np.ndarray
    std: np.ndarray
    whiten_vectors: np.ndarray
    singular_values: np.ndarray

    @property
    def cumulative_weights(self) -> np.ndarray:
        return np.cumsum(self.weights)

    @property
    def whiten_shifts(self) -> np.ndarray:
        """(1 + s_b²)^{−1/2} − 1 per block and singular value: Σ_b^{−1/2} − I_B on U_b."""
        return 1.0 / np.sqrt(1.0 + self.singular_values ** 2) - 1.0

    @property
    def root_shifts(self) -> np.ndarray:
        """(1 + s_b²)^{1/2} − 1 per block and singular value: Σ_b^{1/2} − I_B on U_b."""
        return np.sqrt(1.0 + self.singular_values ** 2) - 1.0

    def covariance(self) -> np.ndarray:
        """Exact covariance Σ_c = blockdiag(I_B + V_b V_bᵀ) (D × D)."""
        D = self.means.shape[1]
        B = self.block_size
        cov = np.eye(D)
        for b in range(D // B):
            V = block_factor(self.means[:, b * B:(b + 1) * B], self.weights)
            cov[b * B:(b + 1) * B, b * B:(b + 1) * B] += V @ V.T
        return cov


def draw_mixture(rng: np.random.Generator, m: int, alpha: float, D: int,
                 weights: str | tuple[float, ...], means: str = "vector"
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Means and weights from the mixture stream (s,2), in the order of docs/model.md §3.3, §10.1.

    vector: μ = uniform(−α, α, (m, D)); scalar: a = uniform(−α, α, m), μ_i = a_i·1_D. Then
    p = dirichlet(ones(m)) if weights = "dirichlet", otherwise p_i = 1/m (uniform) or the
    explicit weights normalised by their sum.
    """
    if means == "scalar":
        means = np.repeat(rng.uniform(-alpha, alpha, m)[:, None], D, axis=1)
    elif means == "vector":
        means = rng.uniform(-alpha, alpha, (m, D))
    else:
        raise ValueError(f"means must be one of {', '.join(MEAN_GEOMETRIES)}, got {means!r}")
    if isinstance(weights, str) and weights == "dirichlet":
        p = rng.dirichlet(np.ones(m))
    elif isinstance(weights, str) and weights == "uniform":
        p = np.full(m, 1.0 / m)
    else:
        p = np.asarray(weights, dtype=np.float64)
        p = p / p.sum()
    return means, p


def block_factor(block_means: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """V_b (B × m): columns √p_i (μ_{i,b} − μ̄_b), so that Σ_b = I_B + V_b V_bᵀ."""
    centred = block_means - weights @ block_means
    return (centred * np.sqrt(weights)[:, None]).T


def mixture_moments(means: np.ndarray, weights: np.ndarray, block_size: int) -> Mixture:
    """Exact moments and whitening factors of the block mixture (docs/model.md §2.1–2.2).

    Whitening per block: with the thin SVD V_b = U_b diag(s_b) Z_bᵀ,
    Σ_b^{−1/2} = I_B + U_b diag((1 + s_b²)^{−1/2} − 1) U_bᵀ.
    """
    m, D = means.shape
    B = block_size
    mean = weights @ means
    std = np.sqrt(1.0 + weights @ (means - mean) ** 2)
    n_blocks = D // B
    vectors = np.zeros((n_blocks, m, B))
    values = np.zeros((n_blocks, m))
    if m > 1:
        for b in range(n_blocks):
            U, s, _ = np.linalg.svd(block_factor(means[:, b * B:(b + 1) * B], weights),
                                    full_matrices=False)
            rank = s.shape[0]
            vectors[b, :rank, :] = U.T
            values[b, :rank] = s
    return Mixture(means=means, weights=weights, block_size=B, mean=mean, std=std,
                   whiten_vectors=vectors, singular_values=values)


def first_tied(values: np.ndarray) -> int:
    """The lowest index whose value is within TIE_TOLERANCE (relative) of the largest."""
    top = values.max()
    return int(np.flatnonzero(values >= top - TIE_TOLERANCE * abs(top))[0])


def aligned_direction(mixture: Mixture) -> np.ndarray:
    """The unit top eigenvector u of Σ_c − I (docs/model.md §10.3), from the per-block SVD of V_b:
    the block with the largest singular value (lowest block index on ties), signed so that its
    entry of largest magnitude (lowest index on ties) is positive.

    Raises ValueError where Σ_c − I = 0 (every component mean equal, or one component weighted)."""
    top = mixture.singular_values[:, 0]
    if not top.max() > 0.0:
        raise ValueError("the mixture's between-label covariance Σ_c − I is 0: no direction to "
                         "align the teacher with")
    b = first_tied(top)
    B = mixture.block_size
    u = np.zeros(mixture.means.shape[1])
    u[b * B:(b + 1) * B] = mixture.whiten_vectors[b, 0]
    if u[first_tied(np.abs(u))] < 0:
        u = -u
    return u


class Standardization(NamedTuple):
    """A standardization other than none, as :func:`standardize_latent` reads it."""

    code: int
    mean: np.ndarray               # (D,) μ̄
    inv_std: np.ndarray            # (D,) 1/s_r
    whiten_vectors: np.ndarray     # (D/B, m, B)
    whiten_shifts: np.ndarray      # (D/B, m)


class LatentLaw(NamedTuple):
    """What :func:`sample_latent` needs besides its Generators and output; built by
    :func:`latent_law` only."""

    matched: bool                  # a matched-Gaussian latent: draw z only (§10.2)
    means: np.ndarray              # (m, D)
    cumulative_weights: np.ndarray  # (m,)
    block_size: int
    standardization: Standardization | None   # None: standardize none, or a matched latent


class DataRows(NamedTuple):
    """A data latent's law for :func:`draw_latents`: the rows of its standardized data
    (fastsgd/latent_data.py), one drawn uniformly per sample."""

    rows: np.ndarray               # (P, D)


def draw_data_rows(rng: np.random.Generator, out: np.ndarray, rows: np.ndarray) -> None:
    """Fill ``out`` (n, D) with rows of ``rows`` (P, D) drawn with replacement
    (docs/model.md §11.1): sample s takes row J_s = min(⌊u_s·P⌋, P − 1), u_s = random() from
    ``rng``. One double per sample, so the stream does not depend on how the samples are split
    into blocks (NumPy's bounded integers would: they buffer 32-bit halves within one call)."""
    P = rows.shape[0]
    index = np.minimum((rng.random(out.shape[0]) * P).astype(np.int64), P - 1)
    if out.dtype == rows.dtype:
        np.take(rows, index, axis=0, out=out)
    else:   # float32 latents (mixed precision): rounded once
        out[:] = rows[index]


def draw_latents(law, latent_rng: np.random.Generator, label_rng: np.random.Generator,
                 row_rng: np.random.Generator, out: np.ndarray) -> None:
    """Fill ``out`` (n, D) with latents of ``law``: rows of a data latent from ``row_rng``
    (:class:`DataRows`), otherwise :func:`sample_latent` from ``latent_rng`` and
    ``label_rng``."""
    if isinstance(law, DataRows):
        draw_data_rows(row_rng, out, law.rows)
    else:
        sample_latent(latent_rng, label_rng, out, law)


def standardization(mixture: Mixture, standardize: str) -> Standardization:
    """The kernel's description of a standardization of the mixture's latents (any but none)."""
    return Standardization(code=STANDARDIZE_CODES[standardize], mean=mixture.mean,
                           inv_std=1.0 / mixture.std, whiten_vectors=mixture.whiten_vectors,
                           whiten_shifts=mixture.whiten_shifts)


def latent_law(mixture: Mixture, standardize: str, matched: bool = False) -> LatentLaw:
    """The kernel's description of a seed's latent law: the mixture and its standardization, or
    (``matched``) the matched Gaussian's normals.

    Without a standardization (none, or a matched latent) the law's type says so, and
    :func:`sample_latent` is compiled without :func:`standardize_latent` (0.6 s of a cold
    start)."""
    skip = matched or standardize == "none"
    return LatentLaw(matched=bool(matched), means=mixture.means,
                     cumulative_weights=mixture.cumulative_weights,
                     block_size=mixture.block_size,
                     standardization=None if skip else standardization(mixture, standardize))


# Reassociation vectorises the whitening projections (analysis/jit.py).
@kernel(reassociate=True)
def standardize_latent(c, code, mean, inv_std, whiten_vectors, whiten_shifts, scratch):
    """Standardize one latent c (D,) in place (docs/model.md §2.2).

    sample:     c ← (c − c̄)/s over the sample's own coordinates, 1/D normalisation.
    population: c_r ← (c_r − μ̄_r)/s_r.
    whiten:     c ← Σ_c^{−1/2}(c − μ̄), per block c_b ← c_b + U_b diag(shift_b) U_bᵀ c_b.
                (Columns past the rank, with shift 0, are skipped.)
    ``scratch`` holds at least m floats.
    """
    D = c.shape[0]
    if code == STD_SAMPLE:
        total = 0.0
        for r in range(D):
            total += c[r]
        centre = total / D
        ss = 0.0
        for r in range(D):
            d = c[r] - centre
            ss += d * d
        inv_s = 1.0 / np.sqrt(ss / D)
        for r in range(D):
            c[r] = (c[r] - centre) * inv_s
    elif code == STD_POPULATION:
        for r in range(D):
            c[r] = (c[r] - mean[r]) * inv_std[r]
    elif code == STD_WHITEN:
        for r in range(D):
            c[r] -= mean[r]
        n_blocks, m, B = whiten_vectors.shape
        for b in range(n_blocks):
            base = b * B
            block = c[base:base + B]
            for j in range(m):
                scratch[j] = dot(whiten_vectors[b, j], block) * whiten_shifts[b, j]
            for j in range(m):
                coef = scratch[j]
                if coef != 0.0:
                    for q in range(B):
                        c[base + q] += whiten_vectors[b, j, q] * coef


def sample_latent(rng_latent, rng_labels, out, law):
    """Fill ``out`` (n, D) with n latents, drawn and standardized sample by sample.

    Per sample: z = standard_normal(D) from the latent stream. A matched-Gaussian law (§10.2)
    stops there (c = m_c + L z is formed by the GEMM). A mixture: if m > 1, one label per block,
    J_b = min(searchsorted(cumsum(p), u_b, side="right"), m − 1) with u_b = random() from the
    label stream; c_r = μ_{J_b, r} + z_r; then standardization (docs/model.md §2.1–2.2).
    ``out`` may be float32 (mixed precision): the latent is built in float64 and rounded once.
    ``law`` is a :class:`LatentLaw`.
    """
    _sample_latent(rng_latent, rng_labels, out, law.matched, law.means, law.cumulative_weights,
                   law.block_size, law.standardization)


# Reassociation as in standardize_latent (analysis/jit.py).
@kernel(reassociate=True)
def _sample_latent(rng_latent, rng_labels, out, matched, means, cumulative_weights, block_size,
                   standardization):
    # The kernel of sample_latent. A standardization of None is pruned when the kernel is
    # compiled (numba prunes `argument is None` by the argument's type): a law without one
    # never compiles standardize_latent.
    n, D = out.shape
    m = means.shape[0]
    n_blocks = D // block_size
    c = np.empty(D)
    scratch = np.empty(m)
    for s in range(n):
        for r in range(D):   # the one call site of the normals: LLVM inlines their sampler
            c[r] = rng_latent.standard_normal()
        if matched:
            pass   # a matched law's latent is z itself (§10.2)
        elif m > 1:
            for b in range(n_blocks):
                u = rng_labels.random()
                label = 0
                while label < m - 1 and cumulative_weights[label] <= u:
                    label += 1
                base = b * block_size
                for q in range(block_size):
                    c[base + q] += means[label, base + q]
        else:
            for r in range(D):
                c[r] += means[0, r]
        if standardization is not None:
            standardize_latent(c, standardization.code, standardization.mean,
                               standardization.inv_std, standardization.whiten_vectors,
                               standardization.whiten_shifts, scratch)
        for r in range(D):
            out[s, r] = c[r]


def fill_standard_normal(rng, out):
    """Fill ``out`` (any shape, C-contiguous) with standard normals from ``rng``, in order."""
    if not out.flags.c_contiguous:
        raise ValueError("fill_standard_normal fills C-contiguous arrays only")
    _fill_standard_normal(rng, out.reshape(-1))   # a view: one compiled kernel for every shape


@kernel()
def _fill_standard_normal(rng, flat):
    for i in range(flat.shape[0]):
        flat[i] = rng.standard_normal()
