"""The law of a seed's inputs x = f(F c/√D): their mean E x, covariance Ω and cross-covariance Φ
with the latent (docs/model.md §10.5), exact where c given its label is Gaussian, else by Monte
Carlo from stream (s,6,1).

- :func:`label_gaussians` writes the latent as a mixture of Gaussians with one covariance, where
  it is one (a Gaussian or matched latent: one label; a mixture with B = D or m = 1 and
  standardize none, population or whiten: one Gaussian per component, through the sampler's own
  standardization); the folds with closed forms then give exact moments
  (:func:`analysis.input_moments.folded_mixture_moments`).
- Otherwise (sample standardization of a mixture, B < D with m > 1, folds without closed forms)
  :func:`monte_carlo_moments` draws ``moment_samples`` latents with the simulator's own sampler,
  in two halves, so that the Monte Carlo error on what the moments predict can be estimated.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from fastsgd.matched import MatchedLaw
from analysis.activations import FOLD_CODES, fold_array
from fastsgd.sampling import (Mixture, fill_standard_normal, latent_law, sample_latent,
                              standardization, standardize_latent)

#: Latents per chunk of the Monte Carlo moments (a stop request is checked between chunks).
MOMENT_CHUNK = 2048
METHODS = ("exact", "monte_carlo")


class Stopped(Exception):
    """A stop was requested while Monte Carlo input moments were being drawn."""


@dataclass(frozen=True)
class LabelGaussians:
    """The latent as a mixture of Gaussians with one covariance: c | J ~ N(means[J], covariance),
    P(J) = weights[J]."""

    means: np.ndarray        # (J, D)
    weights: np.ndarray      # (J,)
    covariance: np.ndarray   # (D, D)

    @property
    def mean(self) -> np.ndarray:
        return self.weights @ self.means

    def total_covariance(self) -> np.ndarray:
        centred = self.means - self.mean
        return self.covariance + (centred * self.weights[:, None]).T @ centred


@dataclass(frozen=True)
class InputMoments:
    """A seed's input moments (docs/model.md §10.5); for Monte Carlo also those of each half of
    the samples (``halves``), for the error estimate."""

    mean: np.ndarray                 # (N,) E x
    omega: np.ndarray                # (N, N) Ω = Cov(x)
    phi: np.ndarray                  # (N, D) Φ = E[(x − Ex)(c − Ec)ᵀ]
    latent_mean: np.ndarray          # (D,) E c
    latent_covariance: np.ndarray    # (D, D) S_c
    method: str                      # "exact" or "monte_carlo"
    samples: int = 0
    halves: tuple["InputMoments", "InputMoments"] | None = None


def _standardization(mixture: Mixture, standardize: str) -> tuple[np.ndarray, np.ndarray]:
    """The affine standardization c ↦ A(c − shift) of none, population or whiten, read off the
    sampler's own :func:`standardize_latent`: shift = μ̄ (0 for none) and A's columns the
    standardized μ̄ + e_r."""
    D = mixture.means.shape[1]
    if standardize == "none":
        return np.eye(D), np.zeros(D)
    law = standardization(mixture, standardize)
    scratch = np.empty(mixture.means.shape[0])
    columns = np.tile(mixture.mean, (D, 1)) + np.eye(D)
    for row in columns:
        standardize_latent(row, *law, scratch)
    return columns.T, mixture.mean.copy()


def gaussian_per_label(m: int, block_size: int, D: int, standardize: str,
                       matched: bool) -> bool:
    """Whether c given its one label is Gaussian: a matched (or Gaussian) latent, or a mixture
    with one label per sample (B = D or m = 1) and an affine standardization."""
    return matched or (standardize != "sample" and (m == 1 or block_size == D))


def moments_method(m: int, block_size: int, D: int, standardize: str, matched: bool,
                   f: str) -> str:
    """"exact" where c is Gaussian per label and f has closed forms, else "monte_carlo"
    (docs/model.md §10.5)."""
    from analysis.input_moments import CLOSED_FORM_FOLDS   # scipy.special: imported when used
    exact = gaussian_per_label(m, block_size, D, standardize, matched) and (
        f in CLOSED_FORM_FOLDS)
    return "exact" if exact else "monte_carlo"


def label_gaussians(mixture: Mixture, standardize: str,
                    matched: MatchedLaw | None) -> LabelGaussians:
    """The seed's latent as Gaussians per label (:func:`gaussian_per_label` must hold)."""
    if matched is not None:
        return LabelGaussians(matched.mean[None], np.ones(1), matched.covariance())
    A, shift = _standardization(mixture, standardize)
    return LabelGaussians((mixture.means - shift) @ A.T, mixture.weights.copy(), A @ A.T)


def exact_moments(gaussians: LabelGaussians, features: np.ndarray, f: str,
                  mean_only: bool = False) -> InputMoments | np.ndarray:
    """Exact E x (``mean_only``) or the full :class:`InputMoments` of x = f(Fc/√D) for a latent
    that is Gaussian per label (u | J ~ N(G m_J, G S Gᵀ), G = F/√D; Cov(u, c | J) = G S)."""
    from analysis.input_moments import fold_mean, folded_mixture_moments
    G = features / math.sqrt(features.shape[1])
    field_means = gaussians.means @ G.T
    cross = G @ gaussians.covariance
    if mean_only:
        variances = np.einsum("ij,ij->i", cross, G)
        return gaussians.weights @ fold_mean(field_means, variances[None], f)
    mean, omega, phi = folded_mixture_moments(field_means, cross @ G.T, cross, gaussians.means,
                                              gaussians.weights, f)
    return InputMoments(mean, omega, phi, gaussians.mean, gaussians.total_covariance(), "exact")


class _Sums:
    """Running sums of x, c, xxᵀ, xcᵀ, ccᵀ over samples."""

    def __init__(self, N: int, D: int, mean_only: bool):
        self.n, self.mean_only = 0, mean_only
        self.x, self.c = np.zeros(N), np.zeros(D)
        if not mean_only:
            self.xx, self.xc, self.cc = np.zeros((N, N)), np.zeros((N, D)), np.zeros((D, D))

    def add(self, x: np.ndarray, c: np.ndarray) -> None:
        self.n += x.shape[0]
        self.x += x.sum(axis=0)
        self.c += c.sum(axis=0)
        if not self.mean_only:
            self.xx += x.T @ x
            self.xc += x.T @ c
            self.cc += c.T @ c

    def moments(self, halves=None) -> InputMoments:
        n = self.n
        mx, mc = self.x / n, self.c / n
        omega = self.xx / n - np.outer(mx, mx)
        return InputMoments(mx, (omega + omega.T) / 2, self.xc / n - np.outer(mx, mc), mc,
                            self.cc / n - np.outer(mc, mc), "monte_carlo", n, halves)

    def __iadd__(self, other: "_Sums") -> "_Sums":
        self.n += other.n
        for name in ("x", "c") + (() if self.mean_only else ("xx", "xc", "cc")):
            getattr(self, name).__iadd__(getattr(other, name))
        return self


def _latent_sampler(mixture: Mixture, standardize: str, matched: MatchedLaw | None):
    """draw(rng, block): fills a block with latents of the seed's law (the matched law: c =
    m_c + L z from the normals z), as the simulator's sampler makes them."""
    if matched is None:
        law = latent_law(mixture, standardize)
        return lambda rng, block: sample_latent(rng, rng, block, law)

    def draw(rng, block):
        fill_standard_normal(rng, block)
        block[:] = matched.mean + matched.apply(block.T).T
    return draw


def monte_carlo_moments(draw, features: np.ndarray, f: str, rng: np.random.Generator,
                        samples: int, *, mean_only: bool = False,
                        stop: threading.Event | None = None):
    """E x (``mean_only``) or :class:`InputMoments` from ``samples`` latents drawn by
    ``draw(rng, block)`` from ``rng`` (stream (s,6,1)), MOMENT_CHUNK at a time; x = f(c·Fᵀ/√D).
    The full moments keep each half's sums too (``halves``). Raises :class:`Stopped` on
    ``stop``."""
    N, D = features.shape
    operand = np.ascontiguousarray(features.T) / math.sqrt(D)
    half = samples // 2
    sums = [_Sums(N, D, mean_only), _Sums(N, D, mean_only)]
    chunk = np.empty((min(samples, MOMENT_CHUNK), D))
    done = 0
    while done < samples:
        if stop is not None and stop.is_set():
            raise Stopped
        size = min(MOMENT_CHUNK, (half if done < half else samples) - done)
        block = chunk[:size]
        draw(rng, block)
        u = block @ operand
        sums[0 if done < half else 1].add(fold_array(u, FOLD_CODES[f], u), block)
        done += size
    first, second = sums
    if mean_only:
        return (first.x + second.x) / samples
    halves = (first.moments(), second.moments()) if min(first.n, second.n) > 0 else None
    first += second
    return first.moments(halves)


def data_moments(rows: np.ndarray, features: np.ndarray, f: str, *, mean_only: bool = False,
                 stop: threading.Event | None = None):
    """E x (``mean_only``) or :class:`InputMoments` of a data latent (docs/model.md §11.4):
    sums over its P standardized rows, each weighted 1/P, which are the exact moments of the
    empirical law the simulator samples; x = f(c·Fᵀ/√D)."""
    N, D = features.shape
    operand = np.ascontiguousarray(features.T) / math.sqrt(D)
    sums = _Sums(N, D, mean_only)
    for start in range(0, rows.shape[0], MOMENT_CHUNK):
        if stop is not None and stop.is_set():
            raise Stopped
        block = rows[start:start + MOMENT_CHUNK]
        u = block @ operand
        sums.add(fold_array(u, FOLD_CODES[f], u), block)
    if mean_only:
        return sums.x / sums.n
    moments = sums.moments()
    return InputMoments(moments.mean, moments.omega, moments.phi, moments.latent_mean,
                        moments.latent_covariance, "exact", sums.n)


def input_moments(mixture: Mixture, standardize: str, matched: MatchedLaw | None,
                  features: np.ndarray, f: str, rng: np.random.Generator, samples: int, *,
                  mean_only: bool = False, stop: threading.Event | None = None):
    """A seed's E x (``mean_only``, (N,)) or :class:`InputMoments` (docs/model.md §10.5): exact
    where :func:`moments_method` says so, else Monte Carlo from ``rng`` (stream (s,6,1))."""
    m, D = mixture.means.shape
    if moments_method(m, mixture.block_size, D, standardize, matched is not None,
                      f) == "exact":
        return exact_moments(label_gaussians(mixture, standardize, matched), features, f,
                             mean_only)
    return monte_carlo_moments(_latent_sampler(mixture, standardize, matched), features, f, rng,
                               samples, mean_only=mean_only, stop=stop)
