"""Run a simulation: per-seed setup, the generation-block loop, recording and threads.

A thin Python layer over the kernels in :mod:`fastsgd.sampling`, :mod:`fastsgd.sgd` and
:mod:`fastsgd.observables`. Each seed index runs in its own thread with one BLAS thread; the
kernels release the GIL, so seeds run truly in parallel and every seed's floating-point order is
fixed whatever the thread count.
"""

from __future__ import annotations

import math
import os
import shlex
import signal
import sys
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.activations import (ACTIVATION_CODES, FOLD_CODES, activation_array, fold_array,
                                  folding_coefficients)
from analysis.integrals import generalisation_error
from fastsgd import io
from fastsgd.config import MAX_SEEDS, ConfigError, SimConfig, parse_count
from fastsgd.observables import (centred_covariance, order_parameters, spectral_initial_state,
                                 student_fields, teacher_overlap, test_set_statistics)
from fastsgd.sampling import (STANDARDIZE_CODES, Mixture, draw_mixture, fill_standard_normal,
                              mixture_moments, sample_mixture_latent)
from fastsgd.sgd import INPUT_EQUIVALENT_GAUSSIAN, INPUT_HMM, all_finite, sgd_steps
from fastsgd.streams import SeedStreams

#: Steps per generation block: draws and the GEMM run on this fixed grid from step 0.
GEN_BLOCK = 256
_TEST_CHUNK = 1024


class Terminated(BaseException):
    """Raised in the main thread when SIGTERM arrives during :func:`simulate`."""


class WriteError(OSError):
    """Writing the run file failed mid-run (a full disk, a vanished folder); the message names
    the file. Every record flushed before the failure is intact, unfinished seeds are marked
    "interrupted" where the file can still be written."""


class _Stopped(Exception):
    """A seed saw the stop flag during its setup."""


@dataclass
class SeedProblem:
    """Everything fixed for one seed index: features, teacher, mixture, initial weights, test set."""

    features: np.ndarray          # F (N, D)
    teacher: np.ndarray           # W̃ (M, D)
    A: np.ndarray                 # (M,)
    mixture: Mixture
    w: np.ndarray                 # (K, N), initial
    v: np.ndarray                 # (K,), initial
    generator: np.ndarray         # [F/√D | W̃ᵀ/√D] (D, N + M)
    test_inputs: np.ndarray       # (P, N) int8 (sign) or float64
    test_nu: np.ndarray           # (P, M)
    test_y: np.ndarray            # (P,) noiseless labels
    test_T: np.ndarray            # (M, M) centred covariance of ν on the test set (fixed)


def exact_int8_test_inputs(cfg: SimConfig) -> bool:
    """Sign-folded HMM inputs are stored as int8: exact, and 8× smaller."""
    return cfg.f == "sign" and cfg.input_model == "hmm"


def latent_kernel_args(mixture: Mixture, standardize: str) -> tuple:
    """Arguments of :func:`sample_mixture_latent` after the two Generators and the output."""
    return (mixture.means, mixture.cumulative_weights, mixture.block_size,
            STANDARDIZE_CODES[standardize], mixture.mean, 1.0 / mixture.std,
            mixture.whiten_vectors, mixture.whiten_shifts)


def make_inputs(cfg: SimConfig, U: np.ndarray, xi: np.ndarray | None) -> np.ndarray:
    """Inputs x from the pre-folding block U[:, :N]: f(u), or a + b·u + √ζ·ξ (float64)."""
    a, b, _, zeta = folding_coefficients(cfg.f)
    u = np.ascontiguousarray(U[:, :cfg.N], dtype=np.float64)
    if cfg.input_model == "equivalent_gaussian":
        return a + b * u + math.sqrt(zeta) * xi
    return fold_array(u, FOLD_CODES[cfg.f], np.empty_like(u))


def build_problem(cfg: SimConfig, streams: SeedStreams,
                  stop: threading.Event | None = None) -> SeedProblem:
    """Draw one seed's fixed quantities in the stream order of MODEL.md §3.3 and its test set.

    With ``stop``, the test set's construction checks it between chunks (raising _Stopped), so a
    signal during a long setup is honoured within a second or two."""
    N, D, K, M = cfg.N, cfg.D, cfg.K, cfg.M
    features = streams.features.standard_normal((N, D))
    teacher = streams.teacher.standard_normal((M, D))
    A = np.ones(M)
    means, weights = draw_mixture(streams.mixture, cfg.m, cfg.alpha, D, cfg.weights)
    mixture = mixture_moments(means, weights, cfg.block_size)
    w = streams.student.standard_normal((K, N))
    v = streams.student.standard_normal(K) if cfg.train_second_layer else np.ones(K)
    generator = np.concatenate([features.T, teacher.T], axis=1) / math.sqrt(D)

    P = cfg.test_size
    latent = np.empty((P, D))
    sample_mixture_latent(streams.test_latent, streams.test_labels, latent,
                          *latent_kernel_args(mixture, cfg.standardize))
    xi = None
    if cfg.input_model == "equivalent_gaussian":
        xi = np.empty((P, N))
        fill_standard_normal(streams.test_xi, xi)
    test_inputs = np.empty((P, N), dtype=np.int8 if exact_int8_test_inputs(cfg) else np.float64)
    test_nu = np.empty((P, M))
    for start in range(0, P, _TEST_CHUNK):
        if stop is not None and stop.is_set():
            raise _Stopped
        end = min(start + _TEST_CHUNK, P)
        U = latent[start:end] @ generator
        test_inputs[start:end] = make_inputs(cfg, U, None if xi is None else xi[start:end])
        test_nu[start:end] = U[:, N:]
    g_code = ACTIVATION_CODES[cfg.g]
    test_y = activation_array(test_nu, g_code, np.empty_like(test_nu)) @ A
    return SeedProblem(features, teacher, A, mixture, w, v, generator, test_inputs, test_nu,
                       test_y, centred_covariance(test_nu, test_nu))


def take_record(cfg: SimConfig, problem: SeedProblem, w: np.ndarray, v: np.ndarray
                ) -> dict[str, np.ndarray | float]:
    """All observables of one record (MODEL.md §4) for the current weights."""
    _, b, _, zeta = folding_coefficients(cfg.f)
    ops = order_parameters(w, problem.features, problem.teacher, b, zeta)
    T = teacher_overlap(problem.teacher)
    if cfg.f == "relu":
        eg = math.nan  # a ≠ 0: the Gaussian-equivalent closed form does not apply
    else:
        eg = generalisation_error(ops["Q"], ops["R"], T, v, problem.A, g=cfg.g)
    lam = student_fields(problem.test_inputs, w)
    stats = test_set_statistics(lam, problem.test_nu, problem.test_y, v,
                                ACTIVATION_CODES[cfg.g])
    return {"Q": ops["Q"], "R": ops["R"], "W": ops["W"], "Sigma": ops["Sigma"], "v": v,
            "eg": eg, "eg_mc": stats["eg_mc"], "emp_Q": stats["Q"], "emp_R": stats["R"],
            "emp_T": problem.test_T, "lambda_mean": stats["lambda_mean"]}


class SeedRunner:
    """Runs one seed index from step 0 to ``cfg.steps``, writing into position i of the file."""

    def __init__(self, cfg: SimConfig, i: int, writer: io.RunWriter, steps: np.ndarray,
                 stop: threading.Event, progress=None) -> None:
        self.cfg = cfg
        self.i = i
        self.s = cfg.first_seed_index + i
        self.writer = writer
        self.record_steps = steps
        self.stop = stop
        self.progress = progress

    def run(self) -> str:
        cfg, i = self.cfg, self.i
        if self.stop.is_set():
            return "pending"
        self.writer.set_status(i, "running")
        streams = SeedStreams.for_seed(cfg.seed, cfg.sample_entropy, self.s)
        try:
            problem = build_problem(cfg, streams, self.stop)
        except _Stopped:
            self.writer.set_status(i, "interrupted")
            return "interrupted"
        self._write_constants(problem)
        status, diverged_at = self._train(problem, streams)
        self.writer.set_status(i, status, diverged_at)
        return status

    def _write_constants(self, problem: SeedProblem) -> None:
        state = spectral_initial_state(problem.features, problem.w, problem.teacher, problem.v,
                                       problem.A)
        values = {f"initial_state/{name}": getattr(state, name)
                  for name in ("rhos", "r", "sigma", "omega", "W", "T", "T_tilde", "v", "A")}
        values.update({"T": state.T, "A": problem.A,
                       "empirical/nu_mean": problem.test_nu.mean(axis=0),
                       "mixture/means": problem.mixture.means,
                       "mixture/weights": problem.mixture.weights})
        self.writer.write(self.i, values)

    def _train(self, problem: SeedProblem, streams: SeedStreams) -> tuple[str, int | None]:
        cfg = self.cfg
        N, D, K, M = cfg.N, cfg.D, cfg.K, cfg.M
        dtype = np.float32 if cfg.precision == "mixed" else np.float64
        w = problem.w.copy()
        v = problem.v.copy()
        generator = problem.generator if dtype is np.float64 else problem.generator.astype(dtype)
        latent = np.empty((GEN_BLOCK, D), dtype=dtype)
        U = np.empty((GEN_BLOCK, N + M), dtype=dtype)
        equivalent = cfg.input_model == "equivalent_gaussian"
        xi = np.empty((GEN_BLOCK, N) if equivalent else (1, 1))
        label_noise = np.zeros(GEN_BLOCK)
        x, lam, coef = np.empty(N), np.empty(K), np.empty(K)
        yhat = np.empty(GEN_BLOCK)
        a, b, _, zeta = folding_coefficients(cfg.f)
        latent_args = latent_kernel_args(problem.mixture, cfg.standardize)
        kernel_args = (problem.A, FOLD_CODES[cfg.f], ACTIVATION_CODES[cfg.g],
                       cfg.train_second_layer, cfg.lr,
                       INPUT_EQUIVALENT_GAUSSIAN if equivalent else INPUT_HMM,
                       a, b, math.sqrt(zeta), xi, label_noise, x, lam, coef, yhat)
        steps = self.record_steps
        row_out = 0
        if steps[0] == 0:
            self.writer.write_record(self.i, 0, take_record(cfg, problem, w, v))
            row_out = 1
        step = 0
        while step < cfg.steps:
            if self.stop.is_set():
                self.writer.write(self.i, {"final/w": w, "final/v": v})
                return "interrupted", None
            sample_mixture_latent(streams.train_latent, streams.train_labels, latent,
                                  *latent_args)
            np.dot(latent, generator, out=U)
            if equivalent:
                fill_standard_normal(streams.train_xi, xi)
            if cfg.sigma > 0:
                fill_standard_normal(streams.train_noise, label_noise)
                label_noise *= cfg.sigma
            block_start = step
            block_stop = min(step + GEN_BLOCK, cfg.steps)
            while step < block_stop:
                stop_at = block_stop
                if row_out < steps.shape[0]:
                    stop_at = min(stop_at, int(steps[row_out]))
                bad = sgd_steps(U, step - block_start, stop_at - block_start, w, v,
                                *kernel_args)
                if bad >= 0:
                    step = block_start + bad
                    self.writer.write(self.i, {"final/w": w, "final/v": v})
                    return "diverged", step
                step = stop_at
                if row_out < steps.shape[0] and step == steps[row_out]:
                    self.writer.write_record(self.i, row_out, take_record(cfg, problem, w, v))
                    row_out += 1
            if not (all_finite(w) and all_finite(v)):  # once per block (MODEL.md §3.4)
                self.writer.write(self.i, {"final/w": w, "final/v": v})
                return "diverged", step
            if self.progress is not None:
                self.progress.update(block_stop - block_start)
        self.writer.write(self.i, {"final/w": w, "final/v": v})
        return "ok", None


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _available_memory() -> int | None:
    """MemAvailable, capped by the cgroup (container) limit where one is set."""
    available = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        limit = open("/sys/fs/cgroup/memory.max").read().strip()
        used = int(open("/sys/fs/cgroup/memory.current").read().strip())
        if limit != "max":
            room = int(limit) - used
            available = room if available is None else min(available, room)
    except (OSError, ValueError):
        pass
    return available


def memory_per_seed(cfg: SimConfig) -> int:
    """Peak bytes of one running seed: F and the GEMM operand [F/√D | W̃ᵀ/√D] (plus its float32
    copy in mixed precision), the test set (latents P·D while it is made, inputs P·N at 1 byte
    for int8 sign inputs, ξ for the equivalent Gaussian model), Ω = FᵀF/N with its
    eigendecomposition, and the chunk buffers. It contains MODEL.md's 8·(N·D + P·N + P·D)."""
    N, D, M, P = cfg.N, cfg.D, cfg.M, cfg.test_size
    input_bytes = 1 if exact_int8_test_inputs(cfg) else 8
    xi = 8 * P * N if cfg.input_model == "equivalent_gaussian" else 0
    mixed = 4 * D * (N + M) if cfg.precision == "mixed" else 0
    return (8 * (N * D + D * (N + M) + P * D + 2 * P * M + 3 * D * D + 3 * _TEST_CHUNK * N)
            + mixed + input_bytes * P * N + xi)


def default_output_path(cfg: SimConfig, folder: Path = Path("data")) -> Path:
    """A parameter-derived name inside ``folder``, with a numeric suffix if taken."""
    parts = [f"N{cfg.N}", f"D{cfg.D}", f"K{cfg.K}", f"M{cfg.M}", f"m{cfg.m}",
             f"alpha{cfg.alpha:g}", f"std-{cfg.standardize}", f"B{cfg.block_size}",
             f"{cfg.f}-{cfg.g}", f"lr{cfg.lr:g}", f"steps{cfg.steps}", f"seeds{cfg.seeds}",
             f"seed{cfg.seed}"]
    extras = {"precision": "f64", "input_model": "hmm", "weights": "uniform", "sigma": 0.0,
              "sample_seed": None, "first_seed_index": 0, "train_second_layer": True}
    for name, default in extras.items():
        value = getattr(cfg, name)
        if value != default:
            if name == "train_second_layer":
                parts.append("first-layer-only")
            elif isinstance(value, tuple):
                parts.append("weights-explicit")
            else:
                parts.append(f"{name.replace('_', '-')}{value:g}" if isinstance(value, float)
                             else f"{name.replace('_', '-')}-{value}")
    stem = "_".join(parts)
    candidate = folder / f"{stem}.h5"
    n = 1
    while candidate.exists():
        candidate = folder / f"{stem}_{n}.h5"
        n += 1
    return candidate


def resolve_output(cfg: SimConfig, out, overwrite: bool) -> Path:
    """Check the output path before anything is written; raise ConfigError or FileExistsError."""
    if out is None:
        folder = Path("data")
        folder.mkdir(exist_ok=True)
        return default_output_path(cfg, folder)
    path = Path(out)
    if path.is_dir():
        raise ConfigError(f"out must be a file path, got the folder {str(path)!r}")
    if not path.parent.is_dir():
        raise ConfigError(f"out: the folder {str(path.parent)!r} does not exist")
    if path.exists() and not overwrite:
        raise FileExistsError(f"out: {path} exists; pass --overwrite (overwrite=True) to replace it")
    return path


def check_resources(cfg: SimConfig, threads: int) -> None:
    need = threads * memory_per_seed(cfg)
    available = _available_memory()
    if available is not None and need > available:
        raise ConfigError(
            f"memory: {threads} concurrent seed(s) need {need / 2**30:.1f} GiB "
            f"({memory_per_seed(cfg) / 2**30:.2f} GiB each: F, the test set, FᵀF/N) but "
            f"{available / 2**30:.1f} GiB are available; lower threads, N, D or test_size")


def simulate(cfg: SimConfig, out=None, overwrite: bool = False, threads: int | None = None,
             progress: bool = False, command_line: str | None = None) -> io.Run:
    """Run the simulation of ``cfg`` and write it to an HDF5 file (MODEL.md §8.2).

    Parameters
    ----------
    cfg : the configuration.
    out : output path; None gives a parameter-derived name in ``data/``.
    overwrite : replace an existing ``out``; without it an existing file raises FileExistsError.
    threads : seeds run concurrently (each with one BLAS thread); default min(seeds, cores).
    progress : show a progress bar on stderr.

    Returns
    -------
    fastsgd.Run, the loaded file. On KeyboardInterrupt (SIGINT) or :class:`Terminated` (SIGTERM)
    the file is finished with status "interrupted" for unfinished seeds and the exception is
    re-raised.
    """
    if not isinstance(cfg, SimConfig):
        raise TypeError(f"cfg must be a fastsgd.SimConfig, got {type(cfg).__name__}")
    if threads is None:
        threads = min(cfg.seeds, usable_cores())
    else:
        threads = parse_count(threads, "threads", 1, MAX_SEEDS)
    threads = min(threads, cfg.seeds)
    check_resources(cfg, threads)
    path = resolve_output(cfg, out, overwrite)
    if command_line is None:
        command_line = shlex.join(sys.argv)
    steps = io.record_steps(cfg.steps, cfg.records)
    try:
        writer = io.RunWriter(path, cfg, steps, GEN_BLOCK, command_line, overwrite)
    except OSError as exc:  # nothing was run: bad output, and no half-made file left behind
        path.unlink(missing_ok=True)
        raise ConfigError(f"out: cannot write {path} ({exc.strerror or exc})") from None
    stop = threading.Event()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.seeds * cfg.steps, unit="step", unit_scale=True, smoothing=0.1,
                   file=sys.stderr, mininterval=0.5)
    previous_term = _install_sigterm()
    try:
        _run_seeds(cfg, writer, steps, stop, threads, bar)
    finally:
        if previous_term is not None:
            signal.signal(signal.SIGTERM, previous_term)
        if bar is not None:
            bar.close()
        writer.close()
    return io.load(path)


def _raise_terminated(signum, frame):
    raise Terminated(signum)


def _install_sigterm():
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


def _run_seeds(cfg, writer, steps, stop, threads, bar) -> None:
    from threadpoolctl import threadpool_limits  # every BLAS call is NumPy's (none in numba)

    runners = [SeedRunner(cfg, i, writer, steps, stop, bar) for i in range(cfg.seeds)]
    with threadpool_limits(limits=cfg.blas_threads, user_api="blas"), \
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fastsgd-seed") as pool:
        futures = [pool.submit(r.run) for r in runners]
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
                for fut in done:
                    if fut.exception() is not None:
                        raise fut.exception()
        except BaseException as exc:
            stop.set()
            _wait_through_signals(futures)
            try:
                for i, status in enumerate(writer.statuses()):
                    if status in ("pending", "running"):
                        writer.set_status(i, "interrupted")
            except OSError:
                pass  # the file cannot be written any more: its flushed records stay valid
            if isinstance(exc, OSError):
                raise WriteError(exc.errno, f"writing {writer.path} failed ({exc}); the file "
                                 "holds every record flushed before") from exc
            raise


def _wait_through_signals(futures) -> None:
    """Wait for the seeds to stop; a second Ctrl-C or SIGTERM does not cut the cleanup short."""
    while True:
        try:
            wait(futures)
            return
        except (KeyboardInterrupt, Terminated):
            continue
