"""The problem a seed index is built from: features, teacher, latent law, initial weights and
the fixed test set, drawn in the stream order of docs/model.md §3.3.

:func:`initial_state` gives a seed's exact spectral initial state (docs/model.md §4.4) straight from
a configuration, without running anything.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from analysis.activations import (ACTIVATION_CODES, FOLD_CODES, activation_array, fold_array,
                                  folding_coefficients)
from analysis.ode import HmmInitialState
from fastsgd.config import ConfigError, SimConfig, config_data_law
from fastsgd.observables import centred_covariance, spectral_initial_state
from fastsgd.input_law import Stopped as InputMomentsStopped
from fastsgd.input_law import InputMoments, data_moments, input_moments
from fastsgd.matched import MatchedLaw, matched_law
from fastsgd.matched import Stopped as MomentsStopped
from fastsgd.matched import empirical_law
from fastsgd.sampling import (DataRows, LatentLaw, Mixture, aligned_direction, draw_latents,
                              draw_mixture, fill_standard_normal, latent_law, mixture_moments)
from fastsgd.streams import SeedStreams

#: Test samples made per GEMM while the test set is built (a stop request is checked between).
TEST_CHUNK = 1024


class Stopped(Exception):
    """A stop was requested while a seed's problem was being built."""


@dataclass
class SeedDraws:
    """A seed's fixed quantities before its test set: F, W̃, A, the mixture, w(0), v(0)."""

    features: np.ndarray          # F (N, D)
    teacher: np.ndarray           # W̃ (M, D)
    A: np.ndarray                 # (M,)
    mixture: Mixture
    w: np.ndarray                 # (K, N), initial
    v: np.ndarray                 # (K,), initial


@dataclass
class SeedProblem(SeedDraws):
    """Everything fixed for one seed index: its draws, the GEMM operand and the test set.

    A block of latents C gives U = C·generator (+ offset): the pre-folding inputs and the teacher
    fields. For a matched-Gaussian latent (§10.2) C holds the normals z (as rows), generator =
    Lᵀ·[F/√D | W̃ᵀ/√D] and offset = m_cᵀ[F/√D | W̃ᵀ/√D], so that U is the one of c = m_c + L z."""

    generator: np.ndarray         # [F/√D | W̃ᵀ/√D] (D, N + M), Lᵀ times it for a matched latent
    offset: np.ndarray | None     # (N + M,) for a matched latent with m_c ≠ 0, else None
    law: LatentLaw | DataRows
    matched: MatchedLaw | None
    input_mean: np.ndarray | None  # (N,) E x, subtracted from every input (center_inputs)
    test_inputs: np.ndarray       # (P, N) int8 (sign) or float64
    test_nu: np.ndarray           # (P, M)
    test_y: np.ndarray            # (P,) noiseless labels
    test_T: np.ndarray            # (M, M) centred covariance of ν on the test set (fixed)


def exact_int8_test_inputs(cfg: SimConfig) -> bool:
    """Sign-folded, uncentred HMM inputs are stored as int8: exact, and 8× smaller."""
    return cfg.f == "sign" and cfg.input_model == "hmm" and not cfg.center_inputs


def seed_latent_law(cfg: SimConfig, mixture: Mixture) -> LatentLaw | DataRows:
    """The sampler's description of a seed's latent law under ``cfg``."""
    if cfg.latent == "data":
        return DataRows(config_data_law(cfg).rows)
    return latent_law(mixture, cfg.standardize, cfg.latent == "matched_gaussian")


def seed_matched_law(cfg: SimConfig, mixture: Mixture, streams: SeedStreams,
                     stop: threading.Event | None) -> MatchedLaw:
    """The matched Gaussian of ``cfg``'s latent (docs/model.md §10.2, §11.3)."""
    if cfg.latent_data is not None:
        law = config_data_law(cfg)
        return empirical_law(law.mean, law.covariance, cfg.standardize == "whiten")
    try:
        return matched_law(mixture, cfg.standardize, cfg.matched_method,
                           rng=streams.matched_moments, samples=cfg.moment_samples, stop=stop)
    except MomentsStopped:
        raise Stopped from None


def latents_to_fields(latent: np.ndarray, generator: np.ndarray, offset: np.ndarray | None,
                      out: np.ndarray | None = None) -> np.ndarray:
    """U = C·generator (+ offset): pre-folding inputs and teacher fields of a block of latents."""
    U = np.dot(latent, generator, out=out)
    if offset is not None:
        U += offset
    return U


def make_inputs(cfg: SimConfig, U: np.ndarray, xi: np.ndarray | None) -> np.ndarray:
    """Inputs x from the pre-folding block U[:, :N]: f(u), or a + b·u + √ζ·ξ (float64)."""
    a, b, _, zeta = folding_coefficients(cfg.f)
    u = np.ascontiguousarray(U[:, :cfg.N], dtype=np.float64)
    if cfg.input_model == "equivalent_gaussian":
        return a + b * u + math.sqrt(zeta) * xi
    return fold_array(u, FOLD_CODES[cfg.f], np.empty_like(u))


def _draw(cfg: SimConfig, streams: SeedStreams) -> SeedDraws:
    """F, W̃, A = 1, the mixture, w(0) and v(0) from streams (s,0) … (s,3) (docs/model.md §3.3)."""
    features = streams.features.standard_normal((cfg.N, cfg.D))
    teacher = streams.teacher.standard_normal((cfg.M, cfg.D))
    means, weights = draw_mixture(streams.mixture, cfg.m, cfg.alpha, cfg.D, cfg.weights,
                                  cfg.means)
    mixture = mixture_moments(means, weights, cfg.block_size)
    if cfg.teacher == "aligned":   # row 0 along the top eigenvector of Σ_c − I (§10.3)
        try:
            teacher[0] = math.sqrt(cfg.D) * aligned_direction(mixture)
        except ValueError as exc:
            raise ConfigError("teacher", "random for this mixture", "aligned",
                              message=f"teacher = aligned: {exc}") from None
    w = streams.student.standard_normal((cfg.K, cfg.N))
    v = streams.student.standard_normal(cfg.K) if cfg.train_second_layer else np.ones(cfg.K)
    return SeedDraws(features, teacher, np.ones(cfg.M), mixture, w, v)


def _operand(cfg: SimConfig, draws: SeedDraws, streams: SeedStreams,
             stop: threading.Event | None) -> tuple[np.ndarray, np.ndarray | None,
                                                    MatchedLaw | None]:
    """The GEMM operand [F/√D | W̃ᵀ/√D], its offset and the matched law (docs/model.md §10.2)."""
    base = np.concatenate([draws.features.T, draws.teacher.T], axis=1) / math.sqrt(cfg.D)
    if cfg.latent != "matched_gaussian":
        return base, None, None
    law = seed_matched_law(cfg, draws.mixture, streams, stop)
    if law.is_standard:   # c = z: bitwise the Gaussian latent's fields
        return base, None, law
    offset = law.mean @ base if law.mean.any() else None
    return law.apply_transpose(base), offset, law


def seed_input_mean(cfg: SimConfig, draws: SeedDraws, matched: MatchedLaw | None,
                    streams: SeedStreams, stop: threading.Event | None) -> np.ndarray | None:
    """E x of the seed's inputs for center_inputs (docs/model.md §10.5; Monte Carlo from
    (s,6,1) where no exact form applies), else None."""
    if not cfg.center_inputs:
        return None
    return _input_moments(cfg, draws, matched, streams, stop, mean_only=True)


def _input_moments(cfg: SimConfig, draws: SeedDraws, matched: MatchedLaw | None,
                   streams: SeedStreams, stop: threading.Event | None, mean_only: bool):
    """E x or the input moments of a seed (docs/model.md §10.5): sums over the rows of a data
    latent (§11.4), else :func:`fastsgd.input_law.input_moments`."""
    try:
        if cfg.latent == "data":
            return data_moments(config_data_law(cfg).rows, draws.features, cfg.f,
                                mean_only=mean_only, stop=stop)
        return input_moments(draws.mixture, cfg.standardize, matched, draws.features, cfg.f,
                             streams.input_moments, cfg.moment_samples, mean_only=mean_only,
                             stop=stop)
    except InputMomentsStopped:
        raise Stopped from None


def build_problem(cfg: SimConfig, streams: SeedStreams,
                  stop: threading.Event | None = None) -> SeedProblem:
    """Draw one seed's fixed quantities in the stream order of docs/model.md §3.3 and its test set.

    The test set is made TEST_CHUNK samples at a time (latents, one GEMM, inputs); with
    ``stop``, the construction checks it between chunks (raising :class:`Stopped`), so a signal
    during a long setup is honoured within a fraction of a second."""
    N, M, P = cfg.N, cfg.M, cfg.test_size
    draws = _draw(cfg, streams)
    generator, offset, matched = _operand(cfg, draws, streams, stop)
    input_mean = seed_input_mean(cfg, draws, matched, streams, stop)
    law = seed_latent_law(cfg, draws.mixture)
    latent = np.empty((min(P, TEST_CHUNK), cfg.D))
    equivalent = cfg.input_model == "equivalent_gaussian"
    xi = np.empty((latent.shape[0], N) if equivalent else (0, 0))
    test_inputs = np.empty((P, N), dtype=np.int8 if exact_int8_test_inputs(cfg) else np.float64)
    test_nu = np.empty((P, M))
    for start in range(0, P, TEST_CHUNK):
        if stop is not None and stop.is_set():
            raise Stopped
        end = min(start + TEST_CHUNK, P)
        chunk = latent[:end - start]   # drawn sample by sample: the same stream as in one call
        draw_latents(law, streams.test_latent, streams.test_labels, streams.test_rows, chunk)
        if equivalent:
            fill_standard_normal(streams.test_xi, xi[:end - start])
        U = latents_to_fields(chunk, generator, offset)
        test_inputs[start:end] = make_inputs(cfg, U, xi[:end - start] if equivalent else None)
        if input_mean is not None:
            test_inputs[start:end] -= input_mean
        test_nu[start:end] = U[:, N:]
    test_y = activation_array(test_nu, ACTIVATION_CODES[cfg.g], np.empty_like(test_nu)) @ draws.A
    return SeedProblem(draws.features, draws.teacher, draws.A, draws.mixture, draws.w, draws.v,
                       generator, offset, law, matched, input_mean, test_inputs, test_nu, test_y,
                       centred_covariance(test_nu, test_nu))


def problem_initial_state(problem: SeedDraws) -> HmmInitialState:
    """The HMM ODE's exact initial state of a seed's draws or built problem (§4.4)."""
    return spectral_initial_state(problem.features, problem.w, problem.teacher, problem.v,
                                  problem.A)


def seed_draws(cfg: SimConfig, seed_index: int) -> SeedDraws:
    """Seed index ``seed_index``'s F, W̃, A, mixture, w(0) and v(0) (streams (s,0) … (s,3))."""
    return _draw(cfg, SeedStreams.for_seed(cfg.seed, cfg.sample_entropy, int(seed_index)))


def seed_moments(cfg: SimConfig, seed_index: int, stop: threading.Event | None = None
                 ) -> tuple[SeedDraws, InputMoments]:
    """Seed index ``seed_index``'s draws (streams (s,0) … (s,3)) and its input moments (§10.5):
    exact where :func:`fastsgd.input_law.moments_method` says so, else Monte Carlo from (s,6,1)
    with ``cfg.moment_samples`` samples (a matched law by Monte Carlo from (s,6,0) first)."""
    streams = SeedStreams.for_seed(cfg.seed, cfg.sample_entropy, int(seed_index))
    draws = _draw(cfg, streams)
    _, _, matched = _operand(cfg, draws, streams, stop)
    return draws, _input_moments(cfg, draws, matched, streams, stop, mean_only=False)


def initial_state(cfg: SimConfig, seed_index: int | None = None) -> HmmInitialState:
    """The exact spectral initial state (docs/model.md §4.4) of seed index ``seed_index`` (default
    ``cfg.first_seed_index``) of ``cfg``, without running it: equal to what a run of ``cfg``
    stores in /initial_state. Only the streams (s,0) … (s,3) are drawn (no test set)."""
    s = cfg.first_seed_index if seed_index is None else int(seed_index)
    return problem_initial_state(seed_draws(cfg, s))
