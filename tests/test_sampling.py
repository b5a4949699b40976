"""Mixture sampler and standardization (fastsgd/sampling.py; docs/model.md §2.1, §2.2, §3.3;
checks §7.6 and §7.7).

The kernel :func:`sample_latent` is checked three ways:

* exactly, against a NumPy replay of the same streams (a copy of the latent stream gives the
  normals z, a copy of the label stream the uniforms u, so c = z + μ_J bit for bit);
* statistically, against the exact moments of :class:`Mixture` (5 estimated standard errors);
* for common random numbers: m, α, weights, B and standardize never move the normals.

All streams are fastsgd.streams.stream Generators with fixed entropies, so every statistical
assertion is deterministic: it either always passes or always fails.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastsgd.sampling import (
    STANDARDIZE_CODES,
    draw_mixture,
    fill_standard_normal,
    latent_law,
    mixture_moments,
    sample_latent,
)
from fastsgd.streams import LABELS, LATENT, MIXTURE, TRAIN, stream

D = 16
SEED = 20240517          # entropy of the mixture stream (s, 2)
SAMPLE_SEED = 7321       # entropy of the latent and label streams (s, 4, 0/1)
N_MOMENTS = 500_000      # samples for the sampler moments (§7.6 asks 10⁶; halved for CI time)
N_STANDARDIZE = 400_000  # samples for the statistical standardization checks (§7.7)
N_EXACT = 20_000         # samples for the exact (bitwise / 1e-12) checks
K_SE = 5.0               # tolerance in estimated standard errors


# ----------------------------------------------------------------------------------------------
# helpers


def make_mixture(m: int, alpha: float, B: int, weights="uniform", s: int = 0):
    """The seed's mixture constants, drawn from the mixture stream (s, 2) as in §3.3."""
    means, p = draw_mixture(stream(SEED, s, MIXTURE), m, alpha, D, weights)
    return mixture_moments(means, p, B)


def latent_streams(s: int = 0):
    return stream(SAMPLE_SEED, s, TRAIN, LATENT), stream(SAMPLE_SEED, s, TRAIN, LABELS)


def run_kernel(mix, standardize: str, n: int, s: int = 0, dtype=np.float64):
    """n latents from the kernel; also returns the two Generators after the call."""
    rng_latent, rng_labels = latent_streams(s)
    out = np.empty((n, D), dtype=dtype)
    sample_latent(rng_latent, rng_labels, out, latent_law(mix, standardize))
    return out, rng_latent, rng_labels


def replay(mix, n: int, s: int = 0):
    """NumPy replay of the kernel's draws from fresh copies of the same streams (§2.1, §3.3).

    Returns the normals z (n, D), the block labels J (n, D/B) and the per-coordinate means
    μ_{J_b, r} (n, D), plus the two Generators after the draws.
    """
    m = mix.means.shape[0]
    B = mix.block_size
    rng_latent, rng_labels = latent_streams(s)
    z = rng_latent.standard_normal((n, D))            # standard_normal(D) per sample, in order
    if m > 1:
        u = rng_labels.random((n, D // B))            # random(D/B) per sample, in order
        J = np.minimum(np.searchsorted(np.cumsum(mix.weights), u, side="right"), m - 1)
    else:
        J = np.zeros((n, D // B), dtype=np.int64)     # m = 1: no label draw at all
    mu_J = mix.means[np.repeat(J, B, axis=1), np.arange(D)]
    return z, J, mu_J, rng_latent, rng_labels


def moments(x):
    """Sample mean, covariance and their estimated standard errors.

    s.e. of a covariance entry: the standard deviation of the product of centred coordinates
    over √n, from the fourth-moment matrix (y²)ᵀ(y²)/n.
    """
    n = x.shape[0]
    mean = x.mean(axis=0)
    se_mean = x.std(axis=0) / np.sqrt(n)
    y = x - mean
    cov = y.T @ y / n
    y2 = y * y
    fourth = y2.T @ y2 / n
    se_cov = np.sqrt(np.maximum(fourth - cov * cov, 0.0) / n)
    return mean, se_mean, cov, se_cov


def assert_within_se(estimate, exact, se, what: str, k: float = K_SE):
    estimate, exact, se = np.broadcast_arrays(np.asarray(estimate, float),
                                              np.asarray(exact, float), np.asarray(se, float))
    assert np.all(se > 0), f"{what}: non-positive standard error"
    z = np.abs(estimate - exact) / se
    worst = np.unravel_index(np.argmax(z), z.shape)
    assert z[worst] <= k, (
        f"{what}: {z[worst]:.2f} s.e. off at index {tuple(int(i) for i in worst)} "
        f"(estimate {estimate[worst]!r}, exact {exact[worst]!r}, s.e. {se[worst]!r})")


def whitening_matrix(mix, b: int) -> np.ndarray:
    """M_b = I_B + U_b diag(shift_b) U_bᵀ from the stored whitening factors (§2.2)."""
    U = mix.whiten_vectors[b].T
    return np.eye(mix.block_size) + U @ np.diag(mix.whiten_shifts[b]) @ U.T


def inverse_sqrt(S: np.ndarray) -> np.ndarray:
    """Symmetric inverse square root by eigh, independent of the SVD route of sampling.py."""
    vals, vecs = np.linalg.eigh(S)
    return (vecs / np.sqrt(vals)) @ vecs.T


# ----------------------------------------------------------------------------------------------
# 1. the mixture sampler (§2.1, §7.6)

MOMENT_CASES = [(m, alpha, B) for m in (1, 2, 5) for alpha in (0.5, 2.0) for B in (1, 4, 16)]


@pytest.mark.parametrize("m, alpha, B", MOMENT_CASES)
def test_sampler_moments(m, alpha, B):
    """§7.6: means, every covariance entry and label frequencies within 5 s.e. of μ̄, Σ_c, p;
    and the kernel's latents are exactly z + μ_J on the same streams."""
    # Dirichlet weights (unequal p_i) make the label frequencies and the cumsum/searchsorted
    # mapping a real test; for m = 1 the draw gives p = (1,).
    mix = make_mixture(m, alpha, B, weights="dirichlet")
    out, rng_latent, rng_labels = run_kernel(mix, "none", N_MOMENTS)
    z, J, mu_J, ref_latent, ref_labels = replay(mix, N_MOMENTS)

    # Exact: c_r = μ_{J_b, r} + z_r, with exactly D normals and D/B uniforms per sample
    # (none at all from the label stream when m = 1).
    np.testing.assert_array_equal(out, z + mu_J)
    assert rng_latent.bit_generator.state == ref_latent.bit_generator.state
    assert rng_labels.bit_generator.state == ref_labels.bit_generator.state
    del z, mu_J

    mean, se_mean, cov, se_cov = moments(out)
    assert_within_se(mean, mix.mean, se_mean, f"sample mean (m={m}, alpha={alpha}, B={B})")
    assert_within_se(cov, mix.covariance(), se_cov,
                     f"sample covariance (m={m}, alpha={alpha}, B={B})")

    freq = np.bincount(J.ravel(), minlength=m) / J.size
    if m > 1:
        se_freq = np.sqrt(freq * (1.0 - freq) / J.size)
        assert_within_se(freq, mix.weights, se_freq,
                         f"label frequencies (m={m}, alpha={alpha}, B={B})")
    else:
        np.testing.assert_array_equal(freq, [1.0])


def test_sampler_blocks_share_one_label():
    """Within a block every coordinate reads the same component: c − z is one row of the means
    per block, and blocks of one sample are labelled independently (B < D)."""
    m, B = 3, 4
    mix = make_mixture(m, 2.0, B, weights="dirichlet")
    out, _, _ = run_kernel(mix, "none", N_EXACT)
    z, J, _, _, _ = replay(mix, N_EXACT)
    shift = out - z
    for b in range(D // B):
        blk = slice(b * B, (b + 1) * B)
        # each block's shift is (to rounding) the block of the mean of its own label
        np.testing.assert_allclose(shift[:, blk], mix.means[J[:, b]][:, blk], rtol=0, atol=1e-14)
    # different blocks of one sample are not forced onto one label
    assert np.mean(J[:, 0] != J[:, 1]) > 0.1


def test_label_mapping_edge_weights():
    """J = min(searchsorted(cumsum(p), u, 'right'), m − 1): zero-weight components are never
    drawn, whatever their position."""
    for weights in [(0.0, 1.0, 0.0), (0.5, 0.0, 0.5), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)]:
        mix = make_mixture(3, 1.0, 2, weights=weights)
        out, _, _ = run_kernel(mix, "none", N_EXACT)
        z, J, mu_J, _, _ = replay(mix, N_EXACT)
        np.testing.assert_array_equal(out, z + mu_J)
        drawn = set(np.unique(J).tolist())
        allowed = {i for i, w in enumerate(weights) if w > 0}
        assert drawn <= allowed, (weights, drawn)
        assert drawn == allowed, (weights, drawn)


# ----------------------------------------------------------------------------------------------
# 2. mixture constants and the mixture stream (§2.1, §3.3)


@pytest.mark.parametrize("m", [1, 2, 5])
def test_draw_mixture_dirichlet_stream_order(m):
    """weights='dirichlet': μ = uniform(−α, α, (m, D)), then p = dirichlet(ones(m)), same stream."""
    alpha = 1.5
    rng = stream(SEED, 3, MIXTURE)
    means, p = draw_mixture(rng, m, alpha, D, "dirichlet")
    ref = stream(SEED, 3, MIXTURE)
    ref_means = ref.uniform(-alpha, alpha, (m, D))
    ref_p = ref.dirichlet(np.ones(m))
    np.testing.assert_array_equal(means, ref_means)
    np.testing.assert_array_equal(p, ref_p)
    assert rng.bit_generator.state == ref.bit_generator.state
    assert means.shape == (m, D)
    assert np.all(means >= -alpha) and np.all(means < alpha)
    assert np.all(p >= 0) and abs(p.sum() - 1.0) < 1e-12


@pytest.mark.parametrize("weights, expected", [
    ("uniform", (0.25, 0.25, 0.25, 0.25)),
    ((1.0, 2.0, 3.0, 2.0), (0.125, 0.25, 0.375, 0.25)),
    ([2, 0, 1, 1], (0.5, 0.0, 0.25, 0.25)),
    ((0.1, 0.2, 0.3, 0.4), (0.1, 0.2, 0.3, 0.4)),
])
def test_draw_mixture_uniform_and_explicit_weights(weights, expected):
    """Uniform p_i = 1/m; explicit weights normalised by their sum; neither draws from the
    stream after the means, and the means do not depend on the weight scheme."""
    m, alpha = 4, 0.7
    rng = stream(SEED, 4, MIXTURE)
    means, p = draw_mixture(rng, m, alpha, D, weights)
    ref = stream(SEED, 4, MIXTURE)
    ref_means = ref.uniform(-alpha, alpha, (m, D))
    np.testing.assert_array_equal(means, ref_means)
    assert rng.bit_generator.state == ref.bit_generator.state
    np.testing.assert_allclose(p, expected, rtol=1e-15, atol=0)
    assert p.dtype == np.float64
    assert abs(p.sum() - 1.0) < 1e-15
    # the means under dirichlet weights from the same stream are the same ones
    dmeans, _ = draw_mixture(stream(SEED, 4, MIXTURE), m, alpha, D, "dirichlet")
    np.testing.assert_array_equal(dmeans, means)


@pytest.mark.parametrize("m, B", [(1, 16), (2, 1), (3, 4), (5, 16), (5, 2)])
def test_mixture_moments_exact(m, B):
    """μ̄ = Σ p_i μ_i, s_r² = 1 + Σ p_i (μ_ir − μ̄_r)², Σ_c = I + block-masked Σ p_i d_i d_iᵀ."""
    mix = make_mixture(m, 1.3, B, weights="dirichlet", s=5)
    p, mu = mix.weights, mix.means
    mean = sum(p[i] * mu[i] for i in range(m))
    d = mu - mean
    full = np.eye(D) + sum(p[i] * np.outer(d[i], d[i]) for i in range(m))
    blocks = np.arange(D) // B
    expected_cov = np.where(blocks[:, None] == blocks[None, :], full, np.eye(D))
    np.testing.assert_allclose(mix.mean, mean, rtol=0, atol=1e-14)
    np.testing.assert_allclose(mix.std, np.sqrt(np.diag(full)), rtol=1e-14, atol=0)
    np.testing.assert_allclose(mix.covariance(), expected_cov, rtol=0, atol=1e-13)
    np.testing.assert_allclose(np.diag(mix.covariance()), mix.std ** 2, rtol=1e-14, atol=0)
    np.testing.assert_allclose(mix.cumulative_weights, np.cumsum(p), rtol=0, atol=0)
    assert mix.whiten_vectors.shape == (D // B, m, B)
    assert mix.whiten_shifts.shape == (D // B, m)


# ----------------------------------------------------------------------------------------------
# 3. standardization (§2.2, §7.7)

STANDARDIZE_CASES = [(m, B) for m in (2, 5) for B in (1, 4, 16)]


@pytest.mark.parametrize("m, B", STANDARDIZE_CASES + [(1, 16)])
def test_standardize_sample(m, B):
    """§7.7 `sample`: each sample has mean 0 and (1/D) variance 1 to 1e-12, and equals
    (c − c̄)/s of the unstandardized latent drawn from the same streams."""
    mix = make_mixture(m, 2.0, B)
    out, _, _ = run_kernel(mix, "sample", N_EXACT)
    raw, _, _ = run_kernel(mix, "none", N_EXACT)
    np.testing.assert_allclose(out.mean(axis=1), 0.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose((out ** 2).mean(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=1), 1.0, rtol=0, atol=1e-12)  # 1/D normalisation
    centred = raw - raw.mean(axis=1, keepdims=True)
    expected = centred / np.sqrt((centred ** 2).mean(axis=1, keepdims=True))
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("m, B", STANDARDIZE_CASES)
def test_standardize_population(m, B):
    """§7.7 `population`: coordinate means 0 and variances 1 within 5 s.e.; within-block
    covariances stay those of Σ_c rescaled; output = (c − μ̄)/s on the same streams."""
    mix = make_mixture(m, 2.0, B, weights="dirichlet")
    out, _, _ = run_kernel(mix, "population", N_STANDARDIZE)
    raw, _, _ = run_kernel(mix, "none", N_STANDARDIZE)
    np.testing.assert_allclose(out, (raw - mix.mean) / mix.std, rtol=0, atol=1e-13)

    mean, se_mean, cov, se_cov = moments(out)
    assert_within_se(mean, 0.0, se_mean, f"population mean (m={m}, B={B})")
    assert_within_se(np.diag(cov), 1.0, np.diag(se_cov), f"population variance (m={m}, B={B})")
    corr = mix.covariance() / np.outer(mix.std, mix.std)
    assert_within_se(cov, corr, se_cov, f"population covariance (m={m}, B={B})")


@pytest.mark.parametrize("m, B", STANDARDIZE_CASES)
def test_standardize_whiten(m, B):
    """§7.7 `whiten`: M_b Σ_b M_b = I to 1e-12; mean 0 and covariance I within 5 s.e.;
    output = Σ_c^{−1/2}(c − μ̄) on the same streams."""
    mix = make_mixture(m, 2.0, B, weights="dirichlet")
    Sigma = mix.covariance()
    for b in range(D // B):
        blk = slice(b * B, (b + 1) * B)
        M = whitening_matrix(mix, b)
        np.testing.assert_allclose(M, M.T, rtol=0, atol=1e-15)
        np.testing.assert_allclose(M @ Sigma[blk, blk] @ M, np.eye(B), rtol=0, atol=1e-12)
        # M_b is the *symmetric* inverse square root, not just any whitening matrix
        np.testing.assert_allclose(M, inverse_sqrt(Sigma[blk, blk]), rtol=0, atol=1e-12)

    out, _, _ = run_kernel(mix, "whiten", N_STANDARDIZE)
    raw, _, _ = run_kernel(mix, "none", N_STANDARDIZE)
    np.testing.assert_allclose(out, (raw - mix.mean) @ inverse_sqrt(Sigma), rtol=0, atol=1e-12)

    mean, se_mean, cov, se_cov = moments(out)
    assert_within_se(mean, 0.0, se_mean, f"whitened mean (m={m}, B={B})")
    assert_within_se(cov, np.eye(D), se_cov, f"whitened covariance (m={m}, B={B})")


@pytest.mark.parametrize("B", [1, 4, 16])
@pytest.mark.parametrize("standardize", ["population", "whiten"])
def test_standardize_identity_for_gaussian_latent(standardize, B):
    """§2.2/§7.7: for the Gaussian latent (m = 1, α = 0) `population` and `whiten` return their
    input to 1e-15 (compared with `none` on the same streams)."""
    mix = make_mixture(1, 0.0, B)
    raw, _, _ = run_kernel(mix, "none", N_EXACT)
    out, _, _ = run_kernel(mix, standardize, N_EXACT)
    np.testing.assert_allclose(out, raw, rtol=0, atol=1e-15)
    for b in range(D // B):
        np.testing.assert_allclose(whitening_matrix(mix, b), np.eye(B), rtol=0, atol=1e-15)


def test_standardize_sample_is_not_identity_for_gaussian_latent():
    """`sample` is not the identity on the Gaussian latent (it projects onto ‖c‖² = D)."""
    mix = make_mixture(1, 0.0, D)
    raw, _, _ = run_kernel(mix, "none", N_EXACT)
    out, _, _ = run_kernel(mix, "sample", N_EXACT)
    assert np.max(np.abs(out - raw)) > 0.1
    np.testing.assert_allclose((out ** 2).sum(axis=1), D, rtol=1e-12, atol=0)


def test_float32_output_is_float64_rounded_once():
    """A float32 ``out`` holds the float64 latent rounded once (same streams)."""
    mix = make_mixture(5, 2.0, 4, weights="dirichlet")
    for standardize in STANDARDIZE_CODES:
        out64, _, _ = run_kernel(mix, standardize, N_EXACT)
        out32, _, _ = run_kernel(mix, standardize, N_EXACT, dtype=np.float32)
        np.testing.assert_array_equal(out32, out64.astype(np.float32))


def test_fill_standard_normal_fills_any_shape_in_order_and_refuses_a_strided_array():
    """One kernel for every shape: a (3, 4, 5) array holds the stream's first 60 normals in C
    order, as a flat array would; a non-contiguous array would be filled through a copy, so it is
    refused."""
    flat = np.empty(60)
    fill_standard_normal(np.random.default_rng(3), flat)
    for shape in [(60,), (6, 10), (3, 4, 5)]:
        out = np.empty(shape, dtype=np.float32 if len(shape) == 2 else np.float64)
        fill_standard_normal(np.random.default_rng(3), out)
        np.testing.assert_array_equal(out.ravel(), flat.astype(out.dtype))
    with pytest.raises(ValueError, match="C-contiguous"):
        fill_standard_normal(np.random.default_rng(3), np.empty((6, 10))[:, ::2])


def test_a_law_without_standardization_says_so_in_its_type():
    """none and matched laws carry standardization=None (the kernel then compiles without
    standardize_latent); the others a Standardization with their code."""
    mix = make_mixture(3, 1.0, 8)
    assert latent_law(mix, "none").standardization is None
    assert latent_law(mix, "whiten", matched=True).standardization is None
    for name in ("sample", "population", "whiten"):
        assert latent_law(mix, name).standardization.code == STANDARDIZE_CODES[name]


# ----------------------------------------------------------------------------------------------
# 4. common random numbers (§3.3)

CRN_CASES = [
    # (m, alpha, weights, B, standardize)
    (1, 0.0, "uniform", 16, "none"),
    (1, 1.0, "uniform", 16, "none"),
    (2, 2.0, "uniform", 16, "none"),
    (5, 0.5, "dirichlet", 1, "none"),
    (3, 2.0, (1.0, 2.0, 5.0), 4, "none"),
    (5, 2.0, "uniform", 4, "sample"),
    (2, 0.5, "dirichlet", 1, "population"),
    (5, 2.0, (3.0, 1.0, 1.0, 0.5, 2.0), 16, "population"),
    (3, 2.0, "dirichlet", 4, "whiten"),
    (5, 2.0, "uniform", 1, "whiten"),
    (1, 0.0, "uniform", 4, "whiten"),
]


@pytest.mark.parametrize("m, alpha, weights, B, standardize", CRN_CASES)
def test_common_random_numbers(m, alpha, weights, B, standardize):
    """Changing m, α, weights, B or standardize never moves the latent normals: every case reads
    the Gaussian run's normals (m = 1, α = 0, B = D, none), and consumes exactly as many."""
    gauss_mix = make_mixture(1, 0.0, D)
    gauss, gauss_latent, gauss_labels = run_kernel(gauss_mix, "none", N_EXACT)

    mix = make_mixture(m, alpha, B, weights=weights)
    out, rng_latent, rng_labels = run_kernel(mix, standardize, N_EXACT)
    _, J, mu_J, _, ref_labels = replay(mix, N_EXACT)

    # the latent stream is left in the same state as by the Gaussian run
    assert rng_latent.bit_generator.state == gauss_latent.bit_generator.state
    # the label stream is untouched for m = 1 and advanced by exactly n·D/B uniforms otherwise
    assert rng_labels.bit_generator.state == ref_labels.bit_generator.state
    if m == 1:
        assert rng_labels.bit_generator.state == gauss_labels.bit_generator.state
        assert rng_labels.bit_generator.state == latent_streams()[1].bit_generator.state

    c = gauss + mu_J                  # the unstandardized mixture latent on the Gaussian normals
    if standardize == "none":
        np.testing.assert_array_equal(out, c)
    elif standardize == "sample":
        centred = c - c.mean(axis=1, keepdims=True)
        expected = centred / np.sqrt((centred ** 2).mean(axis=1, keepdims=True))
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)
    elif standardize == "population":
        np.testing.assert_allclose(out, (c - mix.mean) / mix.std, rtol=0, atol=1e-13)
    else:
        np.testing.assert_allclose(out, (c - mix.mean) @ inverse_sqrt(mix.covariance()),
                                   rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# 5. scalar means (§10.1) and the aligned teacher's direction (§10.3)


@pytest.mark.parametrize("weights", ["uniform", "dirichlet"])
def test_scalar_means_draw_m_values_then_the_weights(weights):
    m, alpha = 4, 2.0
    means, p = draw_mixture(stream(SEED, 0, MIXTURE), m, alpha, D, weights, "scalar")
    rng = stream(SEED, 0, MIXTURE)
    a = rng.uniform(-alpha, alpha, m)
    np.testing.assert_array_equal(means, np.repeat(a[:, None], D, axis=1))
    if weights == "dirichlet":
        np.testing.assert_array_equal(p, rng.dirichlet(np.ones(m)))


@pytest.mark.parametrize("B", [1, 4, D])
def test_scalar_mean_moments_are_the_closed_forms(B):
    mix = mixture_moments(*draw_mixture(stream(SEED, 1, MIXTURE), 3, 2.0, D, "dirichlet",
                                        "scalar"), B)
    a, p = mix.means[:, 0], mix.weights
    abar = p @ a
    var_a = p @ (a - abar) ** 2
    np.testing.assert_allclose(mix.mean, abar * np.ones(D), rtol=1e-14)
    np.testing.assert_allclose(mix.std, np.sqrt(1 + var_a) * np.ones(D), rtol=1e-14)
    blocks = np.kron(np.eye(D // B), np.ones((B, B)))
    np.testing.assert_allclose(mix.covariance(), np.eye(D) + var_a * blocks, atol=1e-14)


def test_sample_standardization_removes_a_scalar_mean_exactly():
    """With B = D each sample is a_J·1 + z, and c − c̄1 = z − z̄1: sample standardization of the
    scalar-mean mixture equals that of the Gaussian latent to rounding (§10.1)."""
    mix = mixture_moments(*draw_mixture(stream(SEED, 2, MIXTURE), 5, 3.0, D, "uniform",
                                        "scalar"), D)
    out, _, _ = run_kernel(mix, "sample", N_EXACT)
    z, *_ = replay(mix, N_EXACT)
    centred = z - z.mean(axis=1, keepdims=True)
    expected = centred / np.sqrt((centred ** 2).mean(axis=1, keepdims=True))
    np.testing.assert_allclose(out, expected, atol=2e-15, rtol=0)   # docs/model.md §10.1


def _top_direction_by_eigh(mix):
    """The top eigenvector of Σ_c − I from the dense covariance, the first block on ties."""
    B = mix.block_size
    cov = mix.covariance() - np.eye(D)
    tops = [np.linalg.eigh(cov[b * B:(b + 1) * B, b * B:(b + 1) * B]) for b in range(D // B)]
    values = np.array([vals[-1] for vals, _ in tops])
    b = int(np.flatnonzero(values >= values.max() * (1 - 1e-9))[0])
    u = np.zeros(D)
    u[b * B:(b + 1) * B] = tops[b][1][:, -1]
    return u, values.max()


@pytest.mark.parametrize("means", ["vector", "scalar"])
@pytest.mark.parametrize("B", [1, 4, D])
def test_aligned_direction_is_the_top_eigenvector_with_the_documented_sign(means, B):
    from fastsgd.sampling import aligned_direction
    mix = mixture_moments(*draw_mixture(stream(SEED, 3, MIXTURE), 3, 2.0, D, "uniform", means),
                          B)
    u = aligned_direction(mix)
    expected, top = _top_direction_by_eigh(mix)
    assert abs(u @ u - 1) < 1e-14
    np.testing.assert_allclose(u @ (mix.covariance() - np.eye(D)) @ u, top, rtol=1e-12)
    np.testing.assert_allclose(np.abs(u), np.abs(expected), atol=1e-12)
    big = np.abs(u).max()
    assert u[np.flatnonzero(np.abs(u) >= big * (1 - 1e-9))[0]] > 0
    if B == 1:
        assert np.count_nonzero(u) == 1 and u.max() == 1.0
    if means == "scalar":   # every block ties: block 0, u = 1_B/√B
        np.testing.assert_allclose(u[:B], 1 / np.sqrt(B), rtol=1e-12)
        assert not u[B:].any()


def test_aligned_direction_refuses_a_mixture_without_between_label_covariance():
    from fastsgd.sampling import aligned_direction
    mix = mixture_moments(*draw_mixture(stream(SEED, 3, MIXTURE), 3, 2.0, D, (1.0, 0.0, 0.0)), D)
    with pytest.raises(ValueError, match="Σ_c − I is 0"):
        aligned_direction(mix)
