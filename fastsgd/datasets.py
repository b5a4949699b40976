"""Real data sets that ship inside packages, turned into latent files (docs/model.md §11.5).

No data is downloaded at run time: both sets come with a package of the optional extra
``fastsgd[data]``.

- ``patches``: 16 × 16 patches of two 512 × 512 grayscale photographs that ship with PyWavelets
  (``pywt.data.ascent``, public domain; ``pywt.data.camera``, CC0), every 8 pixels in both
  directions, less the 13 flat ones (all pixels equal: sample standardization cannot scale
  them): 2 × 63² − 13 = 7925 rows, D = 256. The pixel values are divided by 255, nothing else:
  no centring, no PCA (after a PCA the covariance is diagonal and population would equal
  whiten), so every standardization of §11.2 does something of its own.
- ``digits``: the 1797 8 × 8 handwritten digits that ship with scikit-learn
  (``sklearn.datasets.load_digits``, UCI, CC BY 4.0), values divided by 16, keeping the pixels
  whose variance is at least 1e-3 (52 of 64: the others are blank, or ink in a handful of
  images, in which a standardization would turn one image into an outlier of size √P).
"""

from __future__ import annotations

import numpy as np

DATASETS = ("patches", "digits")
#: Side and stride of the image patches.
PATCH_SIZE, PATCH_STRIDE = 16, 8
#: Digit pixels of smaller variance (values in [0, 1]) are dropped.
DIGITS_MIN_VARIANCE = 1e-3


class MissingPackage(ImportError):
    """The package that ships a data set is not installed; the message says how to get it."""


def image_patches(image: np.ndarray, size: int, stride: int) -> np.ndarray:
    """Every ``size`` × ``size`` patch of a 2-D image whose corner lies on the ``stride`` grid,
    as rows (row-major pixels), patches in row-major order of their corners."""
    windows = np.lib.stride_tricks.sliding_window_view(image, (size, size))
    return windows[::stride, ::stride].reshape(-1, size * size)


def patches_latents(size: int = PATCH_SIZE, stride: int = PATCH_STRIDE) -> np.ndarray:
    """(7925, 256) patches of PyWavelets' ascent and camera photographs, values in [0, 1],
    without the flat ones (all pixels equal)."""
    try:
        import pywt.data
    except ImportError:
        raise MissingPackage("the patches data set ships with PyWavelets: "
                             "pip install 'fastsgd[data]'") from None
    images = [pywt.data.ascent(), pywt.data.camera()]
    rows = np.concatenate([image_patches(np.asarray(img, dtype=np.float64) / 255.0, size,
                                         stride) for img in images])
    return rows[rows.max(axis=1) > rows.min(axis=1)]   # flat patches cannot be sample-scaled


def digits_columns(pixels: np.ndarray, min_variance: float = DIGITS_MIN_VARIANCE) -> np.ndarray:
    """The columns of (P, 64) digit pixels in [0, 1] whose variance (1/P) is ≥ ``min_variance``."""
    return np.flatnonzero(pixels.var(axis=0) >= min_variance)


def digits_latents() -> np.ndarray:
    """(1797, 52) scikit-learn digits, values in [0, 1], nearly constant pixels dropped."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise MissingPackage("the digits data set ships with scikit-learn: "
                             "pip install 'fastsgd[data]'") from None
    pixels = np.asarray(load_digits().data, dtype=np.float64) / 16.0
    return pixels[:, digits_columns(pixels)]


#: Patch sides that fit the 512-pixel photographs with room for many patches.
PATCH_SIZES = range(2, 65)


def make_latents(name: str, patch_size: int = PATCH_SIZE,
                 patch_stride: int | None = None) -> np.ndarray:
    """The latent vectors of data set ``name`` (one of :data:`DATASETS`); for patches, of side
    ``patch_size`` on a grid of ``patch_stride`` pixels (default: half the side, at least 1)."""
    if name == "patches":
        if patch_size not in PATCH_SIZES:
            raise ValueError(f"patch size must be an integer in [{PATCH_SIZES[0]}, "
                             f"{PATCH_SIZES[-1]}], got {patch_size!r}")
        stride = max(1, patch_size // 2) if patch_stride is None else patch_stride
        if not 1 <= stride <= patch_size:
            raise ValueError(f"patch stride must be an integer in [1, {patch_size}] (the "
                             f"patch size), got {stride!r}")
        return patches_latents(patch_size, stride)
    if name == "digits":
        return digits_latents()
    raise ValueError(f"data set must be one of {', '.join(DATASETS)}, got {name!r}")


def projection_kurtosis(rows: np.ndarray, directions: int = 200, seed: int = 0) -> np.ndarray:
    """Excess kurtosis of c·w/|w| over the rows for ``directions`` Gaussian directions w
    (0 for a Gaussian law): how far the data are from Gaussian along generic directions."""
    from fastsgd.observables import field_shape
    w = np.random.default_rng(seed).standard_normal((rows.shape[1], directions))
    return field_shape(rows @ (w / np.linalg.norm(w, axis=0)))[1]
