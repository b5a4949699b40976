"""Latents read from data (docs/model.md §11): a file of latent vectors, validated, hashed and
standardized by its own empirical moments.

A data latent is a row of a (P, D) array, drawn with replacement (fastsgd/sampling.py,
:func:`~fastsgd.sampling.draw_data_rows`). The law sampled is the data's empirical law, so its
moments are known exactly: the standardizations use them (:func:`standardize_data`), the matched
twin is the Gaussian with them (:func:`data_matched_law`) and the moments theory sums over the
rows (fastsgd/input_law.py).

The file is named by a *location*: ``PATH.npy`` (a NumPy array) or ``PATH.h5:DATASET`` (a dataset
of an HDF5 file; ``:DATASET`` may be left out when the file holds exactly one 2-D dataset). A
configuration keeps the location, the shape and a hash of the content
(:func:`content_hash`); a run refuses a file whose content no longer has that hash
(:func:`data_law`).
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from dataclasses import dataclass

import numpy as np

from fastsgd.observables import centred_covariance, field_shape

#: File suffixes read as HDF5 (anything else must be a .npy file).
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
#: Whitening refuses a covariance whose smallest eigenvalue is at most this fraction of the
#: largest (a numerically singular covariance: constant pixels, dependent columns).
SINGULAR_RATIO = 1e-10
#: A column (population) or row (sample) whose standard deviation is at most this fraction of the
#: largest is constant: it cannot be scaled to variance 1.
CONSTANT_RATIO = 1e-12
#: The prefix of every content hash (bump it if the hashed bytes ever change).
HASH_PREFIX = b"fastsgd latent data v1\n"
#: The first bytes of every .npy file.
NPY_MAGIC = b"\x93NUMPY"
#: Distinct (file, standardization) laws kept in memory by :func:`data_law`.
CACHE_SIZE = 4


class LatentDataError(ValueError):
    """A latent-data file that cannot be used; the message is one line that says why."""


def minimum_rows(D: int) -> int:
    """Rows a data file needs: D + 1, the fewest whose empirical covariance can have rank D."""
    return D + 1


def split_location(location: str) -> tuple[str, str | None]:
    """(file path, HDF5 dataset or None) of ``PATH.npy``, ``PATH.h5`` or ``PATH.h5:DATASET``."""
    for suffix in HDF5_SUFFIXES:
        marker = suffix + ":"
        at = location.lower().rfind(marker)
        if at >= 0:
            return location[:at + len(suffix)], location[at + len(marker):] or None
    return location, None


def absolute_location(location: str, folder: str | os.PathLike | None = None) -> str:
    """The location with an absolute file path (the dataset part unchanged); a relative path
    is taken relative to ``folder`` (default: the working directory)."""
    path, dataset = split_location(os.fspath(location))
    path = os.path.expanduser(path)
    if folder is not None and not os.path.isabs(path):
        path = os.path.join(os.fspath(folder), path)
    path = os.path.abspath(path)
    return path if dataset is None else f"{path}:{dataset}"


def _is_hdf5(path: str) -> bool:
    return path.lower().endswith(HDF5_SUFFIXES)


def _two_dimensional_datasets(fh) -> list[str]:
    import h5py
    names: list[str] = []
    fh.visititems(lambda name, obj: names.append(name)
                  if isinstance(obj, h5py.Dataset) and obj.ndim == 2 else None)
    return names


def _check_fits(shape: tuple, location: str) -> None:
    """Refuse, before reading it, a file whose values, their float64 copy and standardized
    rows (3 × 8·P·D bytes) do not fit in the available memory."""
    from fastsgd.resources import GIB, available_memory
    need, available = 3 * 8 * math.prod(shape), available_memory()
    if available is not None and need > available:
        raise LatentDataError(f"{location} of shape {tuple(shape)} needs {need / GIB:.2f} GiB "
                              f"in memory (values, their float64 copy, standardized rows) but "
                              f"{available / GIB:.2f} GiB are available")


def _read_hdf5(path: str, dataset: str | None) -> tuple[np.ndarray, str]:
    """The dataset's values and its name (the one 2-D dataset where ``dataset`` is None)."""
    import h5py

    from fastsgd.io import open_for_reading   # no file locking: many jobs read one data file
    try:
        with open_for_reading(path) as fh:
            if dataset is None:
                names = _two_dimensional_datasets(fh)
                if len(names) != 1:
                    found = ", ".join(names[:8]) or "none"
                    raise LatentDataError(f"{path} holds {len(names)} 2-D datasets ({found}): "
                                          f"name one as {path}:DATASET")
                dataset = names[0]
            node = fh.get(dataset)
            if not isinstance(node, h5py.Dataset):
                raise LatentDataError(f"{path} has no dataset {dataset!r}")
            _check_fits(node.shape, f"{path}:{dataset}")
            return node[()], dataset
    except (OSError, KeyError) as exc:   # KeyError: a broken (external) link
        raise LatentDataError(f"{path} cannot be read as HDF5 ({exc})") from None


def _read_npy(path: str) -> np.ndarray:
    try:
        with open(path, "rb") as fh:
            header = fh.read(len(NPY_MAGIC))
        if header != NPY_MAGIC:
            raise LatentDataError(f"{path} is not a .npy file (no NumPy header); give a .npy "
                                  "array or an HDF5 dataset")
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
        _check_fits(mapped.shape, path)
        return np.array(mapped)
    except LatentDataError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Python objects" in str(exc):
            raise LatentDataError(f"{path} holds Python objects, not numbers") from None
        raise LatentDataError(f"{path} cannot be read as .npy ({exc})") from None
    except OSError as exc:
        raise LatentDataError(f"{path} cannot be read ({exc.strerror or exc})") from None


def _load(location: str) -> tuple[np.ndarray, str]:
    """The checked float64 array at ``location`` and the location with its HDF5 dataset
    named (a file's one 2-D dataset where none was given)."""
    path, dataset = split_location(location)
    if not os.path.isfile(path):
        raise LatentDataError(f"{path} does not exist (or is not a file)")
    if _is_hdf5(path):
        raw, dataset = _read_hdf5(path, dataset)
        location = f"{path}:{dataset}"
    else:
        raw = _read_npy(path)
    raw = np.asarray(raw)
    if raw.dtype.kind not in "iuf":
        raise LatentDataError(f"{location} holds {raw.dtype} values; latent vectors must be "
                              "integers or floats")
    if raw.ndim != 2:
        raise LatentDataError(f"{location} is {raw.ndim}-D with shape {raw.shape}; it must be a "
                              "2-D array of shape (P, D), one latent vector per row")
    array = np.ascontiguousarray(raw, dtype=np.float64)
    bad = ~np.isfinite(array)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise LatentDataError(f"{location} has {int(bad.sum())} non-finite entries (NaN or "
                              f"inf), the first at row {row}, column {column}")
    return array, location


def read_array(location: str) -> np.ndarray:
    """The array at ``location`` as float64, C-contiguous: checked to exist, to be numeric
    (integers or floats), 2-D and finite. Raises :class:`LatentDataError`."""
    return _load(location)[0]


def content_hash(array: np.ndarray) -> str:
    """SHA-256 (hex) of the array's shape and float64 values (little-endian, C order): the
    same numbers give the same hash whatever file format holds them."""
    values = np.ascontiguousarray(array, dtype="<f8")
    digest = hashlib.sha256(HASH_PREFIX)
    digest.update(np.asarray(values.shape, dtype="<i8").tobytes())
    digest.update(memoryview(values).cast("B"))
    return digest.hexdigest()


@dataclass(frozen=True, eq=False)   # hashed by identity: the key of its standardized laws
class DataFile:
    """A checked latent-data file: its absolute location, values, shape and content hash."""

    location: str
    array: np.ndarray
    sha256: str

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(int(n) for n in self.array.shape)


def check_shape(shape: tuple[int, int], D: int, location: str) -> None:
    """The file's columns are D and its rows at least :func:`minimum_rows` (D)."""
    if shape[1] != D:
        raise LatentDataError(f"{location} has {shape[1]} columns, so D must be {shape[1]} "
                              f"(got D = {D})")
    if shape[0] < minimum_rows(D):
        raise LatentDataError(f"{location} has {shape[0]} rows; its covariance needs at least "
                              f"D + 1 = {minimum_rows(D)}")


# ------------------------------------------------------------------ standardization
@dataclass(frozen=True)
class DataLaw:
    """The empirical law of a data file's rows after a standardization (docs/model.md §11.2).

    Attributes
    ----------
    rows : (P, D) the standardized rows; a latent is one of them, drawn uniformly.
    mean : (D,) the law's mean (exact zeros for population and whiten).
    covariance : (D, D) the law's covariance, 1/P normalisation (the identity for whiten, the
        data's correlation matrix for population).
    standardize : the standardization applied.
    """

    rows: np.ndarray
    mean: np.ndarray
    covariance: np.ndarray
    standardize: str


def _centred_moments(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (1/P, made exactly symmetric) of the rows."""
    covariance = centred_covariance(array, array)
    return array.mean(axis=0), (covariance + covariance.T) / 2


def _constant(std: np.ndarray) -> np.ndarray:
    return std <= CONSTANT_RATIO * max(float(std.max(initial=0.0)), np.finfo(float).tiny)


def _sample_standardized(array: np.ndarray) -> np.ndarray:
    """Each row c ← (c − c̄)/s over its own coordinates, 1/D normalisation (§2.2)."""
    centred = array - array.mean(axis=1, keepdims=True)
    std = np.sqrt(np.mean(centred * centred, axis=1))
    constant = _constant(std)
    if constant.any():
        raise LatentDataError(f"{int(constant.sum())} row(s) are constant (the first is row "
                              f"{int(np.flatnonzero(constant)[0])}): sample standardization "
                              "cannot scale them to variance 1")
    return centred / std[:, None]


def _population_standardized(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """c_r ← (c_r − μ̂_r)/ŝ_r with the data's column means and standard deviations (1/P); and
    the standardized covariance, the data's correlation matrix."""
    mean, covariance = _centred_moments(array)
    std = np.sqrt(np.diag(covariance))
    constant = _constant(std)
    if constant.any():
        raise LatentDataError(f"{int(constant.sum())} column(s) are constant (the first is "
                              f"column {int(np.flatnonzero(constant)[0])}): population "
                              "standardization cannot scale them to variance 1")
    inv = 1.0 / std
    return (array - mean) * inv, covariance * np.outer(inv, inv)


def whitening_matrix(covariance: np.ndarray) -> np.ndarray:
    """Σ̂^{−1/2} (symmetric) of a covariance whose eigenvalues all exceed SINGULAR_RATIO times
    the largest; a numerically singular one is refused (no pseudo-inverse: a whitened latent
    has covariance I exactly, so its matched twin is N(0, I))."""
    values, vectors = np.linalg.eigh(covariance)
    top = float(values[-1])
    if not values[0] > SINGULAR_RATIO * top:
        small = int(np.sum(values <= SINGULAR_RATIO * top))
        raise LatentDataError(f"its covariance is numerically singular ({small} of "
                              f"{values.shape[0]} eigenvalues ≤ {SINGULAR_RATIO:g} × the "
                              f"largest, {top:.3g}): whiten needs full rank; drop constant or "
                              "dependent columns, or use population")
    return (vectors / np.sqrt(values)) @ vectors.T


def standardize_data(array: np.ndarray, standardize: str) -> DataLaw:
    """The data's empirical law after ``standardize`` (docs/model.md §11.2), by its own
    empirical moments: none (as is), sample (per row), population (per column, by the column
    means and standard deviations) or whiten ((c − μ̂)Σ̂^{−1/2}). Raises
    :class:`LatentDataError` where the standardization cannot apply."""
    D = array.shape[1]
    if standardize == "none":
        mean, covariance = _centred_moments(array)
        return DataLaw(array, mean, covariance, standardize)
    if standardize == "sample":
        rows = _sample_standardized(array)
        mean, covariance = _centred_moments(rows)
        return DataLaw(rows, mean, covariance, standardize)
    if standardize == "population":
        rows, covariance = _population_standardized(array)
        return DataLaw(rows, np.zeros(D), covariance, standardize)
    if standardize == "whiten":
        mean, covariance = _centred_moments(array)
        rows = (array - mean) @ whitening_matrix(covariance)
        return DataLaw(rows, np.zeros(D), np.eye(D), standardize)
    raise ValueError(f"standardize must be none, sample, population or whiten, got "
                     f"{standardize!r}")


# ------------------------------------------------------------------ files of a configuration
@functools.lru_cache(maxsize=CACHE_SIZE)
def _read(location: str, size: int, mtime_ns: int, inode: int, ctime_ns: int) -> DataFile:
    """The file at ``location`` as it is at that size, modification time, inode and
    status-change time (a rewrite that keeps size and mtime still changes the inode or ctime)."""
    array, resolved = _load(location)
    array.setflags(write=False)
    return DataFile(resolved, array, content_hash(array))


def open_data(location: str) -> DataFile:
    """The checked file at ``location``, read again only when it changed on disk; raises
    :class:`LatentDataError`."""
    location = absolute_location(location)
    path, _ = split_location(location)
    try:
        info = os.stat(path)
    except OSError:
        raise LatentDataError(f"{path} does not exist (or is not a file)") from None
    return _read(location, info.st_size, info.st_mtime_ns, info.st_ino, info.st_ctime_ns)


def checked_data(location: str, sha256: str) -> DataFile:
    """The file at ``location``, refused if its content's hash is not ``sha256`` (the file
    changed since the configuration was made)."""
    data = open_data(location)
    if data.sha256 != sha256:
        raise LatentDataError(f"{data.location} has changed since this configuration was made "
                              f"(content hash {data.sha256[:12]}…, the configuration's "
                              f"{sha256[:12]}…): refusing to mix runs of two data sets")
    return data


@functools.lru_cache(maxsize=CACHE_SIZE)
def _standardized(data: DataFile, standardize: str) -> DataLaw:
    try:
        law = standardize_data(data.array, standardize)
    except LatentDataError as exc:
        raise LatentDataError(f"{data.location}: {exc}") from None
    for array in (law.rows, law.mean, law.covariance):
        array.setflags(write=False)
    return law


def data_law(location: str, sha256: str, standardize: str) -> DataLaw:
    """The standardized empirical law of the file at ``location`` whose content hash must be
    ``sha256``; computed once per process for each (file, standardization)."""
    return _standardized(checked_data(location, sha256), standardize)


def describe(location: str, D: int, standardize: str) -> DataFile:
    """Check a new configuration's data file: readable, numeric, finite, 2-D, D columns, at
    least D + 1 rows, and ``standardize`` applicable. Returns the file (location made
    absolute)."""
    data = open_data(location)
    check_shape(data.shape, D, data.location)
    data_law(data.location, data.sha256, standardize)
    return data


def save_latents(array: np.ndarray, path: str, overwrite: bool = False) -> str:
    """Write latent vectors to ``path``: ``.npy``, or an HDF5 file (dataset ``latents``).
    Without ``overwrite`` the file is created exclusively (FileExistsError if it exists, even if
    made a moment ago); with it, written under a temporary name beside ``path`` and renamed over
    it, so an existing file is intact until the new one is complete. Returns the absolute
    path."""
    import tempfile
    path = os.path.abspath(path)
    folder, name = os.path.split(path)
    target = path
    if overwrite:
        handle, target = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
        os.close(handle)
        os.remove(target)
    try:
        if _is_hdf5(path):
            import h5py
            with h5py.File(target, "x") as fh:
                fh.create_dataset("latents", data=array, track_order=False)
        else:
            with open(target, "xb") as fh:
                np.save(fh, array, allow_pickle=False)
    except BaseException:
        if overwrite and os.path.exists(target):
            os.remove(target)
        raise
    if overwrite:
        os.replace(target, path)
    return path


def is_sha256(text) -> bool:
    """Whether ``text`` is a SHA-256 hex digest (64 lower-case hex digits)."""
    return (isinstance(text, str) and len(text) == 64
            and all(ch in "0123456789abcdef" for ch in text))


def summary(law: DataLaw) -> dict:
    """The moments a user checks a data law by: shape, mean and variance ranges, covariance
    eigenvalue range, and the excess kurtosis of the coordinates (median, max |·|)."""
    variance = np.diag(law.covariance)
    eigenvalues = np.linalg.eigvalsh(law.covariance)
    kurtosis = field_shape(law.rows)[1]
    finite = kurtosis[np.isfinite(kurtosis)]
    return {"shape": law.rows.shape,
            "mean_range": (float(law.mean.min()), float(law.mean.max())),
            "variance_range": (float(variance.min()), float(variance.max())),
            "eigenvalue_range": (float(eigenvalues[0]), float(eigenvalues[-1])),
            "excess_kurtosis_median": float(np.median(finite)) if finite.size else math.nan,
            "excess_kurtosis_max_abs": float(np.abs(finite).max()) if finite.size else math.nan}
