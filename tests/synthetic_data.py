"""The synthetic data set the tests make themselves (docs/model.md §11): latent vectors that are
correlated, shifted, unequally scaled and non-Gaussian, so that every standardization of §11.2
does something different.

c = μ + S·(G s + 0.7 s₀1) with s a vector of independent Laplace sources (excess kurtosis 3),
s₀ one shared Laplace factor (a dominant direction), G a random mixing matrix near I,
S = diag(scales) with scales spread over a factor 6 and μ a mean vector: none, sample,
population and whiten all give distinct laws, and whitened projections stay non-Gaussian.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np

#: In a test case, ``latent_data=SYNTHETIC`` stands for :func:`synthetic_file`'s path.
SYNTHETIC = "<synthetic>"


def synthetic_latents(P: int, D: int, seed: int = 0) -> np.ndarray:
    """(P, D) correlated, shifted, unequally scaled Laplace latents (see the module); the
    covariance's condition number stays in the thousands, so whitening loses few digits."""
    rng = np.random.default_rng(seed)
    sources = rng.laplace(size=(P, D)) / np.sqrt(2.0)          # unit variance
    common = rng.laplace(size=(P, 1)) / np.sqrt(2.0)           # one shared factor
    mixing = np.eye(D) + 0.3 * rng.standard_normal((D, D)) / np.sqrt(D)
    scales = np.geomspace(0.5, 3.0, D)
    shift = rng.uniform(-1.0, 1.0, D)
    return shift + (sources @ mixing.T + 0.7 * common) * scales


@functools.cache
def synthetic_file(P: int = 600, D: int = 32, seed: int = 0) -> str:
    """A .npy file of :func:`synthetic_latents`, written once per test process."""
    folder = Path(tempfile.mkdtemp(prefix="fastsgd-synthetic-"))
    path = folder / f"synthetic_{P}x{D}_{seed}.npy"
    np.save(path, synthetic_latents(P, D, seed))
    return str(path)
