"""The HDF5 run file: where it goes, its layout, writer and loader (docs/model.md §8.1–8.2, §10.6).

Every dataset is created at full size when the file is created (floats filled with NaN), so its
space is reserved up front and a full disk is found before the first step; records are flushed
at least once a second and when the run ends; no dataset records a modification time, so a killed
writer leaves every flushed record readable and equal runs give bitwise-equal datasets.
Files are created exclusively, or under a temporary name renamed over the target with
``overwrite`` (:class:`Output`).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import secrets
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from analysis.ode import HmmInitialState
from fastsgd.config import DEFAULTS, ConfigError, SimConfig

FORMAT_VERSION = 1
CREATOR = "fastsgd"
STATUSES = ("pending", "running", "ok", "diverged", "interrupted")
STATUS_DTYPE = "S12"


class RunFileError(ValueError):
    """A file that is not a readable fastsgd run; the message names the file and the problem."""


class OutputExistsError(FileExistsError):
    """The output file exists and replacing it was not asked for; ``path`` names it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        super().__init__(f"out: {path} exists; pass overwrite=True to replace it")

    def __reduce__(self):
        return (type(self), (self.path,))


#: Fields named in a default output name only where they differ from their default.
_EXTRA_FIELDS = ("precision", "input_model", "weights", "sigma", "sample_seed",
                 "first_seed_index", "train_second_layer", "means", "latent", "teacher",
                 "moment_samples", "center_inputs", "latent_data")


def _name_parts(cfg: SimConfig) -> list[str]:
    parts = [f"N{cfg.N}", f"D{cfg.D}", f"K{cfg.K}", f"M{cfg.M}", f"m{cfg.m}",
             f"alpha{cfg.alpha:g}", f"std-{cfg.standardize}", f"B{cfg.block_size}",
             f"{cfg.f}-{cfg.g}", f"lr{cfg.lr:g}", f"steps{cfg.steps}", f"seeds{cfg.seeds}",
             f"seed{cfg.seed}"]
    for name in _EXTRA_FIELDS:
        value = getattr(cfg, name)
        if value == DEFAULTS[name]:
            continue
        if name == "train_second_layer":
            parts.append("first-layer-only")
        elif name == "center_inputs":
            parts.append("centred")
        elif name == "latent_data":   # the file's name and content (docs/model.md §11.1)
            from fastsgd.latent_data import split_location
            stem = Path(split_location(value)[0]).stem
            parts.append(f"data-{stem}-{cfg.latent_data_sha256[:8]}")
        elif isinstance(value, tuple):
            parts.append("weights-explicit")
        elif isinstance(value, float):
            parts.append(f"{name.replace('_', '-')}{value:g}")
        else:
            parts.append(f"{name.replace('_', '-')}-{value}")
    return parts


def _numbered(path: Path, n: int) -> Path:
    return path if n == 0 else path.with_name(f"{path.stem}_{n}{path.suffix}")


def default_output_path(cfg: SimConfig, folder: Path = Path("data")) -> Path:
    """A parameter-derived name inside ``folder``, with a numeric suffix if taken (the name
    free now; :meth:`Output.create` claims it, or the next free one, exclusively)."""
    base = folder / ("_".join(_name_parts(cfg)) + ".h5")
    n = 0
    while _numbered(base, n).exists():
        n += 1
    return _numbered(base, n)


@dataclass
class Output:
    """A file this process writes (docs/model.md §10.6).

    Without ``overwrite`` the file is created exclusively at ``target`` and written in place
    (a ``numbered`` default name takes the next free suffix instead of failing); with it, the file
    is written under a temporary name beside ``target`` and renamed over it by :meth:`commit`.
    A process removes (:meth:`discard`) only the file it created, recognised by its inode.
    """

    target: Path
    overwrite: bool = False
    numbered: bool = False
    written: Path | None = None     # the file this process created, once created
    _fd: int | None = field(default=None, repr=False)

    def create(self) -> h5py.File:
        """Create the file (HDF5, open for writing); raises :class:`OutputExistsError` if
        ``target`` exists without ``overwrite`` (even if another process made it a moment ago).
        If HDF5 fails after the name was claimed, the file claimed is removed."""
        if self.overwrite:
            self._claim(self.target.with_name(
                f"{self.target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"))
        else:
            n = 0
            while not self._claim(_numbered(self.target, n), taken_ok=self.numbered):
                n += 1
            self.target = self.written
        try:
            return h5py.File(self.written, "w")
        except BaseException:
            self.discard()
            raise

    def _claim(self, path: Path, taken_ok: bool = False) -> bool:
        """Create ``path`` empty and exclusively (O_EXCL); False if taken and ``taken_ok``.
        The descriptor stays open until commit or discard, so that the inode cannot be reused
        and :meth:`_is_mine` recognises the file."""
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            if taken_ok:
                return False
            raise OutputExistsError(path) from None
        self.written, self._fd = path, fd
        return True

    def _is_mine(self) -> bool:
        try:
            here, mine = os.stat(self.written), os.fstat(self._fd)
        except (OSError, TypeError):
            return False
        return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def commit(self) -> Path:
        """Rename the temporary file over ``target`` (``overwrite``); returns ``target``."""
        if self.written is not None and self.written != self.target and self._is_mine():
            os.replace(self.written, self.target)
            self.written = self.target
        self._release()
        return self.target

    def discard(self) -> None:
        """Remove the file this process created, if it is still there (never another's)."""
        if self.written is not None and self._is_mine():
            self.written.unlink()
        self.written = None
        self._release()


def resolve_output(cfg: SimConfig, out, overwrite: bool) -> Output:
    """Where the run goes, checked before anything is written: the default name in ``data/``
    (created) for None; raises ConfigError for a folder, a missing or unwritable folder and
    :class:`OutputExistsError` for an existing file without ``overwrite`` (checked again,
    atomically, when the file is created)."""
    if out is None:
        folder = Path("data")
        try:
            folder.mkdir(exist_ok=True)
        except OSError as exc:
            raise ConfigError("out", "a writable folder", "data",
                              message=f"the default folder data/ cannot be made here "
                                      f"({exc.strerror or exc}); pass --out") from None
        _check_writable_folder(folder)
        return Output(default_output_path(cfg, folder), numbered=True)
    path = Path(out)
    if path.is_dir():
        raise ConfigError("out", "a file path", str(path),
                          message=f"out must be a file path, got the folder {str(path)!r}")
    if not path.parent.is_dir():
        raise ConfigError("out", "a path in an existing folder", str(path),
                          message=f"out must be a path in an existing folder; "
                                  f"{str(path.parent)!r} does not exist")
    _check_writable_folder(path.parent)
    if path.exists() and not overwrite:
        raise OutputExistsError(path)
    return Output(path, overwrite=overwrite)


def _check_writable_folder(folder: Path) -> None:
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError("out", "a path in a writable folder", str(folder),
                          message=f"the folder {str(folder)!r} is not writable by this user")


def record_steps(steps: int, records: int) -> np.ndarray:
    """Record steps: sorted unique {0} ∪ rint(geomspace(1, steps, records − 1))
    (docs/model.md §3.4).

    With records = 2 the one log-spaced point is ``steps`` itself (geomspace would give 1), so
    step 0 and ``steps`` are always included and n_t ≤ records."""
    grid = np.rint(np.geomspace(1, steps, records - 1)) if records > 2 else np.array([steps])
    return np.unique(np.concatenate([[0], grid]).astype(np.int64))


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment_attributes() -> dict[str, str]:
    """Versions and machine facts that bitwise reproducibility depends on."""
    from importlib.metadata import version

    import numba

    from fastsgd import __version__

    try:  # the BLAS NumPy was built against: every product in fastsgd is NumPy's
        info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{info.get('name')} {info.get('version')} ({info.get('openblas configuration', '')})"
    except (KeyError, TypeError, ValueError):
        blas = "unknown"
    attrs = {
        "fastsgd_version": __version__,
        "python_version": platform.python_version(),
        "numpy_version": np.__version__,
        "numba_version": numba.__version__,
        "scipy_version": version("scipy"),
        "h5py_version": h5py.__version__,
        "blas": blas.strip().removesuffix("()").strip(),
        "cpu_model": _cpu_model(),
    }
    if "OPENBLAS_CORETYPE" in os.environ:
        attrs["OPENBLAS_CORETYPE"] = os.environ["OPENBLAS_CORETYPE"]
    return attrs


#: Every dataset of a run file: name → (its named dimensions, dtype) (docs/model.md §8.2).
#: The dimensions are HDF5 dimension scales: /t is the coordinate of "t", the others are
#: dimension-only scales (netCDF-4's convention), so xarray opens the file with these names.
DATASETS: dict[str, tuple[tuple[str, ...], str]] = {
    "seed_index": (("seed",), "i8"),
    "step": (("t",), "i8"), "t": (("t",), "f8"),
    "Q": (("seed", "t", "student_k", "student_l"), "f8"),
    "R": (("seed", "t", "student_k", "teacher_m"), "f8"),
    "T": (("seed", "teacher_m", "teacher_n"), "f8"),
    "v": (("seed", "t", "student_k"), "f8"), "A": (("seed", "teacher_m"), "f8"),
    "W": (("seed", "t", "student_k", "student_l"), "f8"),
    "Sigma": (("seed", "t", "student_k", "student_l"), "f8"),
    "eg": (("seed", "t"), "f8"), "eg_mc": (("seed", "t"), "f8"),
    "empirical/Q": (("seed", "t", "student_k", "student_l"), "f8"),
    "empirical/R": (("seed", "t", "student_k", "teacher_m"), "f8"),
    "empirical/T": (("seed", "t", "teacher_m", "teacher_n"), "f8"),
    "empirical/lambda_mean": (("seed", "t", "student_k"), "f8"),
    "empirical/nu_mean": (("seed", "teacher_m"), "f8"),
    "empirical/lambda_skewness": (("seed", "t", "student_k"), "f8"),
    "empirical/lambda_kurtosis": (("seed", "t", "student_k"), "f8"),
    "empirical/nu_skewness": (("seed", "teacher_m"), "f8"),
    "empirical/nu_kurtosis": (("seed", "teacher_m"), "f8"),
    "n_records": (("seed",), "i8"), "diverged_step": (("seed",), "i8"),
    "status": (("seed",), STATUS_DTYPE),
    "mixture/means": (("seed", "component", "latent"), "f8"),
    "mixture/weights": (("seed", "component"), "f8"),
    "final/w": (("seed", "student_k", "input"), "f8"), "final/v": (("seed", "student_k"), "f8"),
    "initial_state/rhos": (("seed", "mode"), "f8"),
    "initial_state/r": (("seed", "student_k", "teacher_m", "mode"), "f8"),
    "initial_state/sigma": (("seed", "student_k", "student_l", "mode"), "f8"),
    "initial_state/omega": (("seed", "teacher_m", "mode"), "f8"),
    "initial_state/W": (("seed", "student_k", "student_l"), "f8"),
    "initial_state/T": (("seed", "teacher_m", "teacher_n"), "f8"),
    "initial_state/T_tilde": (("seed", "teacher_m", "teacher_n"), "f8"),
    "initial_state/v": (("seed", "student_k"), "f8"),
    "initial_state/A": (("seed", "teacher_m"), "f8"),
}
#: center_inputs runs only (docs/model.md §10.5).
CENTRED_DATASETS = {"input_mean": (("seed", "input"), "f8"),
                    "mean_fields": (("seed", "t", "student_k"), "f8")}


def dimension_sizes(cfg: SimConfig, n_t: int) -> dict[str, int]:
    """The length of each named dimension of a run file (docs/model.md §8.2)."""
    return {"seed": cfg.seeds, "t": n_t, "student_k": cfg.K, "student_l": cfg.K,
            "teacher_m": cfg.M, "teacher_n": cfg.M, "input": cfg.N, "latent": cfg.D,
            "mode": cfg.D, "component": cfg.m}


def dataset_dims(cfg: SimConfig) -> dict[str, tuple[tuple[str, ...], str]]:
    """Name → (dimension names, dtype) of every dataset of a run file of ``cfg``."""
    return {**DATASETS, **(CENTRED_DATASETS if cfg.center_inputs else {})}


def dataset_shapes(cfg: SimConfig, n_t: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name → (shape, dtype) of every dataset of a run file."""
    sizes = dimension_sizes(cfg, n_t)
    return {name: (tuple(sizes[d] for d in dims), dtype)
            for name, (dims, dtype) in dataset_dims(cfg).items()}


def attach_dimensions(fh: h5py.File, cfg: SimConfig, n_t: int) -> None:
    """Make the dimension scales and attach one to every axis of every dataset: /t is the
    coordinate of "t", /seed (the seed indices, as /seed_index) that of "seed"; the other
    dimensions are netCDF-4 dimension-only scales (no storage)."""
    fh["t"].make_scale("t")
    fh.create_dataset("seed", data=np.asarray(cfg.seed_indices, dtype=np.int64),
                      track_times=False).make_scale("seed")
    for dim, size in dimension_sizes(cfg, n_t).items():
        if dim not in COORDINATES:
            scale = fh.create_dataset(dim, shape=(size,), dtype="f4", track_times=False)
            scale.make_scale(NOT_A_VARIABLE + f"{size:10d}".encode("ascii"))
    for name, (dims, _) in dataset_dims(cfg).items():
        if name == "t":
            continue
        for axis, dim in enumerate(dims):
            fh[name].dims[axis].attach_scale(fh[dim])
        if dims[0] == "seed" and "/" not in name and name != "seed_index":
            fh[name].attrs["coordinates"] = "seed_index step" if "t" in dims else "seed_index"


#: The dimensions with a coordinate variable (the others have none).
COORDINATES = ("seed", "t")
#: netCDF-4's NAME of a dimension without a coordinate variable (what h5netcdf reads).
NOT_A_VARIABLE = b"This is a netCDF dimension but not a netCDF variable."


#: Per-record datasets: name → key of the record dictionary.
RECORD_DATASETS = {
    "Q": "Q", "R": "R", "v": "v", "W": "W", "Sigma": "Sigma", "eg": "eg", "eg_mc": "eg_mc",
    "empirical/Q": "emp_Q", "empirical/R": "emp_R", "empirical/T": "emp_T",
    "empirical/lambda_mean": "lambda_mean", "empirical/lambda_skewness": "lambda_skewness",
    "empirical/lambda_kurtosis": "lambda_kurtosis", "mean_fields": "mean_fields",
}

#: Datasets added after format_version 1 was fixed: a file made before them loads with NaN.
LATER_DATASETS = ("empirical/lambda_skewness", "empirical/lambda_kurtosis",
                  "empirical/nu_skewness", "empirical/nu_kurtosis")


#: Records are flushed at least this often, in seconds of wall time (docs/model.md §10.6).
FLUSH_SECONDS = 1.0


class RunWriter:
    """Creates a run file with every dataset allocated, then writes records, flushed at least
    every :data:`FLUSH_SECONDS` and when the run ends (docs/model.md §10.6).

    Records are kept in memory until the next flush and then written per dataset, the rows a
    seed made since the last flush as one slice: one HDF5 write per dataset and second instead
    of one per record (a record's write cost about 3.3 ms, as much as computing it). What a
    killed run loses is unchanged: at most the last second.

    ``output`` is an :class:`Output` or a path (then created as ``Output(path, overwrite)``).
    Thread-safe: seeds running in parallel threads share one writer; a background thread flushes.
    """

    def __init__(self, output: Output | Path, cfg: SimConfig, steps: np.ndarray, gen_block: int,
                 command_line: str, overwrite: bool = False) -> None:
        self.output = output if isinstance(output, Output) else Output(Path(output), overwrite)
        self.steps = steps
        self.lock = threading.Lock()
        self.run_id = uuid.uuid4().hex
        self.file = self.output.create()
        try:
            self._fill(cfg, gen_block, command_line)
        except BaseException:
            self._abandon()
            raise
        self.path = self.output.written
        self._dirty = False
        self._pending: dict[int, list[tuple[int, dict]]] = {}
        self._next_row: dict[int, int] = {}             # each seed's next record row
        self._failure: BaseException | None = None   # a write of the flusher thread that failed
        self._closed = threading.Event()
        self._flusher = threading.Thread(target=self._flush_every_second, daemon=True,
                                         name="fastsgd-flush")
        self._flusher.start()

    def _fill(self, cfg: SimConfig, gen_block: int, command_line: str) -> None:
        """The root attributes and every dataset at full size with its initial value."""
        attrs = self.file.attrs
        attrs.update({"creator": CREATOR, "format_version": FORMAT_VERSION,
                      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                      "run_id": self.run_id, "command_line": command_line,
                      "config": cfg.to_json(), "gen_block": gen_block})
        attrs.update(environment_attributes())
        for name, (shape, dtype) in dataset_shapes(cfg, self.steps.shape[0]).items():
            if dtype == STATUS_DTYPE:
                data = np.full(shape, b"pending", dtype=dtype)
            elif dtype == "i8":
                data = np.full(shape, -1 if name == "diverged_step" else 0, dtype=dtype)
            else:
                data = np.full(shape, np.nan)
            fill = data.flat[0] if data.size else None
            self.file.create_dataset(name, data=data, track_times=False, fillvalue=fill)
        self.file["seed_index"][...] = np.asarray(cfg.seed_indices, dtype=np.int64)
        self.file["step"][...] = self.steps
        self.file["t"][...] = self.steps / cfg.N
        attach_dimensions(self.file, cfg, self.steps.shape[0])
        self.file.flush()

    def _abandon(self) -> None:
        """Creation failed (a full disk): close what can be closed, remove the file made."""
        try:
            self.file.close()
        except OSError:
            pass
        self.output.discard()

    def _flush_every_second(self) -> None:
        while not self._closed.wait(FLUSH_SECONDS):
            with self.lock:
                if self._dirty and self.file.id.valid and self._failure is None:
                    try:
                        self._write_pending()
                        self.file.flush()
                    except Exception as exc:      # raised in the run's thread by the next call
                        self._failure = exc
                    self._dirty = False

    def _write_pending(self) -> None:
        """Write the records kept since the last flush (the caller holds the lock): each seed's
        new rows, consecutive with the same keys (:meth:`write_record`), as one slice per
        dataset, n_records last. Raises the flusher thread's failure, if it had one."""
        if self._failure is not None:
            raise self._failure
        for i, rows in self._pending.items():
            first = rows[0][0]
            for name, key in RECORD_DATASETS.items():
                if key in rows[0][1]:
                    self.file[name][i, first:first + len(rows)] = np.stack(
                        [record[key] for _, record in rows])
            self.file["n_records"][i] = first + len(rows)
        self._pending.clear()

    def write(self, i: int, values: dict[str, np.ndarray]) -> None:
        """Write per-seed datasets ``{name: value}`` for seed position i."""
        with self.lock:
            for name, value in values.items():
                self.file[name][i] = value
            self._dirty = True

    def write_record(self, i: int, row: int, record: dict[str, np.ndarray | float]) -> None:
        """Record ``row`` of seed position i (and n_records), written at the next flush. A
        seed's records come in order (rows 0, 1, …), each with the keys of its first. The
        record's arrays are copied: the caller's (e.g. the live weights v) keep changing."""
        snapshot = {key: np.array(value) for key, value in record.items()}
        with self.lock:
            if self._failure is not None:
                raise self._failure
            expected = self._next_row.get(i, 0)
            if row != expected:
                raise ValueError(f"record {row} of seed position {i}: expected row {expected}")
            self._next_row[i] = row + 1
            self._pending.setdefault(i, []).append((row, snapshot))
            self._dirty = True

    def set_status(self, i: int, status: str, diverged_step: int | None = None) -> None:
        """Set seed position i's status (and step of divergence) and flush."""
        assert status in STATUSES
        with self.lock:
            self._write_pending()
            self.file["status"][i] = status.encode("ascii")
            if diverged_step is not None:
                self.file["diverged_step"][i] = diverged_step
            self.file.flush()
            self._dirty = False

    def statuses(self) -> list[str]:
        with self.lock:
            return [s.decode("ascii") for s in self.file["status"][...]]

    def close(self) -> Path:
        """Flush and close the file, then give it its name (:meth:`Output.commit`); returns the
        target path. If closing fails the file is left where it was written."""
        self._closed.set()
        with self.lock:
            if self.file.id.valid:
                try:
                    self._write_pending()
                finally:
                    self.file.close()
        return self.output.commit()


@dataclass
class Run:
    """A run file loaded into memory (docs/model.md §8.3). Arrays have a leading seed axis S."""

    path: Path
    config: SimConfig
    attrs: dict
    seed_index: np.ndarray
    step: np.ndarray
    t: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    T: np.ndarray
    v: np.ndarray
    A: np.ndarray
    W: np.ndarray
    Sigma: np.ndarray
    eg: np.ndarray
    eg_mc: np.ndarray
    empirical: dict[str, np.ndarray]
    n_records: np.ndarray
    status: list[str]
    diverged_step: np.ndarray
    mixture_means: np.ndarray
    mixture_weights: np.ndarray
    final_w: np.ndarray
    final_v: np.ndarray
    initial: dict[str, np.ndarray] = field(repr=False)
    input_mean: np.ndarray | None = None     # (S, N) E x of a center_inputs run (§10.5)
    mean_fields: np.ndarray | None = None    # (S, n_t, K) w_k·E x/√N, center_inputs only

    def array(self, name: str) -> np.ndarray:
        """The values of dataset ``name`` of the file (e.g. "Q", "empirical/R",
        "initial_state/r", "mixture/means"), as loaded."""
        group, _, leaf = name.partition("/")
        if group == "empirical":
            return self.empirical[leaf]
        if group == "initial_state":
            return self.initial[leaf]
        if name == "status":
            return np.array(self.status)
        return getattr(self, name.replace("/", "_"))

    def to_xarray(self):
        """The run as an ``xarray.Dataset`` (optional dependency: ``pip install
        'fastsgd[xarray]'``): every dataset of the file with its named dimensions (docs/model.md
        §8.2), "/" in names replaced by "_" (empirical_Q, initial_state_r, …); coordinates seed
        (the seed indices), t and step; the file's root attributes."""
        try:
            import xarray as xr
        except ImportError:
            raise ImportError("Run.to_xarray needs xarray: pip install 'fastsgd[xarray]'"
                              ) from None
        variables = {name.replace("/", "_"): (dims, self.array(name))
                     for name, (dims, _) in dataset_dims(self.config).items()
                     if name not in ("t", "step", "seed_index")}
        coords = {"seed": self.seed_index, "t": self.t, "step": ("t", self.step)}
        return xr.Dataset(variables, coords=coords, attrs=dict(self.attrs))

    def initial_state(self, seed_index: int) -> HmmInitialState:
        """The HMM ODE's initial state of the seed at position ``seed_index`` in this file."""
        if not 0 <= seed_index < len(self.status):
            raise IndexError(f"seed_index must be in [0, {len(self.status) - 1}], "
                             f"got {seed_index}")
        i = seed_index
        return HmmInitialState(
            rhos=self.initial["rhos"][i], r=self.initial["r"][i], sigma=self.initial["sigma"][i],
            W=self.initial["W"][i], T=self.initial["T"][i], T_tilde=self.initial["T_tilde"][i],
            v=self.initial["v"][i], A=self.initial["A"][i], omega=self.initial["omega"][i])


def _read(fh: h5py.File, name: str, shape: tuple) -> np.ndarray:
    """A dataset's values; one of LATER_DATASETS missing from an older file reads as NaN."""
    if name in LATER_DATASETS and name not in fh:
        return np.full(shape, np.nan)
    return fh[name][...]


def open_for_reading(path) -> h5py.File:
    """Open an HDF5 file read-only without file locking, so that a run still being written can
    be inspected; where this process already holds it open with locking (e.g. through xarray),
    HDF5 refuses other flags, and the file is opened as that handle was."""
    try:
        return h5py.File(path, "r", locking=False)
    except OSError as exc:
        if "locking flag" not in str(exc):
            raise
        return h5py.File(path, "r")


def load(path: str | os.PathLike) -> Run:
    """Load a fastsgd run file eagerly into a :class:`Run`.

    Raises :class:`RunFileError` naming the file if it is missing, not HDF5, not a fastsgd run,
    of an unsupported format_version, or truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise RunFileError(f"{path}: no such file")
    try:
        fh = open_for_reading(path)
    except OSError as exc:
        raise RunFileError(f"{path}: not a readable HDF5 file ({exc})") from None
    with fh:
        try:
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in fh.attrs.items()}
        except OSError as exc:   # e.g. read while another process flushes it
            raise RunFileError(f"{path}: damaged or truncated fastsgd run file ({exc})") from None
        if attrs.get("creator") != CREATOR:
            raise RunFileError(f"{path}: not a fastsgd run file (no creator='fastsgd' attribute)")
        version = attrs.get("format_version")
        if isinstance(version, np.generic):
            version = version.item()
        if version != FORMAT_VERSION:
            raise RunFileError(f"{path}: unsupported format_version {version!r} "
                               f"(this fastsgd reads {FORMAT_VERSION})")
        try:
            config = SimConfig.from_json(attrs["config"])
            data = {name: _read(fh, name, shape)
                    for name, (shape, _) in dataset_shapes(config, len(fh["t"])).items()}
        except (KeyError, OSError, ValueError, ConfigError, json.JSONDecodeError) as exc:
            raise RunFileError(f"{path}: damaged or truncated fastsgd run file ({exc})") from None
    return Run(
        path=path, config=config, attrs=attrs, seed_index=data["seed_index"],
        step=data["step"], t=data["t"], Q=data["Q"], R=data["R"], T=data["T"], v=data["v"],
        A=data["A"], W=data["W"], Sigma=data["Sigma"], eg=data["eg"], eg_mc=data["eg_mc"],
        empirical={k.split("/", 1)[1]: data[k] for k in data if k.startswith("empirical/")},
        n_records=data["n_records"],
        status=[s.decode("ascii") for s in data["status"]],
        diverged_step=data["diverged_step"],
        mixture_means=data["mixture/means"], mixture_weights=data["mixture/weights"],
        final_w=data["final/w"], final_v=data["final/v"],
        initial={k.split("/", 1)[1]: data[k] for k in data if k.startswith("initial_state/")},
        input_mean=data.get("input_mean"), mean_fields=data.get("mean_fields"),
    )
