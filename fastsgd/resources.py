"""What a run needs from the machine: usable cores, memory and disk, checked before anything runs
(docs/model.md §8.1 ``--threads``, §10.6)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from fastsgd.config import ConfigError, SimConfig
from fastsgd.io import dataset_shapes, record_steps
from fastsgd.problem import TEST_CHUNK, exact_int8_test_inputs
from fastsgd.runner import GEN_BLOCK

GIB = 2 ** 30
MIB = 2 ** 20


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def available_memory() -> int | None:
    """MemAvailable, capped by the cgroup (container) limit where one is set; None if unknown."""
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
    """Peak bytes of one running seed (docs/model.md §8.1).

    F and the GEMM operand [F/√D | W̃ᵀ/√D] (plus its float32 copy in mixed precision); the test
    set (latents P·D as the specification counts them, although they are made TEST_CHUNK at a
    time; inputs P·N at 1 byte for int8 sign inputs, ξ for the equivalent Gaussian model; the
    teacher fields and labels); Ω = FᵀF/N with its eigendecomposition and a matched law's
    covariance and factor (3 + 2 D²); the chunk buffers; the spectral initial state (the K² and
    K·M densities over D, the projections of w and W̃); the generation block's buffers; the test
    set's student fields and their activations at each record (4 P·K); the weights and the
    mixture's means. It exceeds the specification's 8·(N·D + P·N + P·D) except for int8 sign
    test inputs, which count one byte per entry."""
    N, D, M, K, P, m = cfg.N, cfg.D, cfg.M, cfg.K, cfg.test_size, cfg.m
    input_bytes = 1 if exact_int8_test_inputs(cfg) else 8
    xi = 8 * P * N if cfg.input_model == "equivalent_gaussian" else 0
    mixed = 4 * D * (N + M) if cfg.precision == "mixed" else 0
    spectral = D * (K * K + K * M + M * M + K + M + 1)
    block = GEN_BLOCK * (D + 3 * (N + M))
    return (8 * (N * D + D * (N + M) + P * D + 2 * P * M + P + 5 * D * D + 3 * TEST_CHUNK * N
                 + spectral + block + 4 * P * K + 3 * K * N + m * D)
            + mixed + input_bytes * P * N + xi)


def _dataset_bytes(cfg: SimConfig) -> list[int]:
    """Bytes of each dataset of :func:`fastsgd.io.dataset_shapes`."""
    n_t = record_steps(cfg.steps, cfg.records).shape[0]
    return [math.prod(shape) * np.dtype(dtype).itemsize
            for shape, dtype in dataset_shapes(cfg, n_t).values()]


def file_bytes(cfg: SimConfig) -> int:
    """Bytes of the run file: every dataset plus HDF5's headers and the root attributes (a
    generous 64 KiB + 2 KiB per dataset)."""
    sizes = _dataset_bytes(cfg)
    return sum(sizes) + 64 * 1024 + 2048 * len(sizes)


def data_bytes(cfg: SimConfig) -> int:
    """Bytes of a data latent's file, shared by every seed (docs/model.md §11): its values and
    standardized rows (P·D each), its covariance and whitening matrix (D² each)."""
    if cfg.latent_data is None:
        return 0
    P, D = cfg.latent_data_shape
    return 8 * (2 * P * D + 2 * D * D)


def memory_needed(cfg: SimConfig, threads: int) -> int:
    """Peak bytes of a run: its concurrent seeds, a data latent's file and the largest dataset
    (made whole at creation), or the whole file loaded when it ends, whichever is more."""
    return max(threads * memory_per_seed(cfg) + data_bytes(cfg) + max(_dataset_bytes(cfg)),
               file_bytes(cfg))


def check_resources(cfg: SimConfig, threads: int, folder: Path | None = None) -> None:
    """Refuse (ConfigError, with the figure) a run whose concurrent seeds, or whose loaded file,
    cannot fit in the available memory, or whose file cannot fit on the disk of ``folder``."""
    need = memory_needed(cfg, threads)
    available = available_memory()
    if available is not None and need > available:
        per_seed = memory_per_seed(cfg)
        fits = (max(available - max(_dataset_bytes(cfg)) - data_bytes(cfg), 0) // per_seed
                if file_bytes(cfg) <= available else 0)
        raise ConfigError(
            "threads", f"at most {fits} concurrent seed(s)", threads,
            message=f"memory: {threads} concurrent seed(s) need {need / GIB:.2f} GiB "
                    f"({per_seed / GIB:.2f} GiB each: F, the test set, FᵀF/N, the spectral "
                    f"densities; the run file loaded at the end {file_bytes(cfg) / GIB:.2f} GiB; "
                    f"the latent data {data_bytes(cfg) / GIB:.2f} GiB) "
                    f"but {available / GIB:.2f} GiB are available; lower threads, N, D, K, "
                    "test_size, records or seeds")
    if folder is not None:
        check_disk(cfg, folder)


def check_disk(cfg: SimConfig, folder: Path) -> None:
    """Refuse (ConfigError on ``out``) a run file larger than the free space in ``folder``."""
    try:
        stats = os.statvfs(folder)
    except OSError:
        return
    free, size = stats.f_bavail * stats.f_frsize, file_bytes(cfg)
    if size > free:
        raise ConfigError("out", f"a folder with {size / MIB:.1f} MiB free", str(folder),
                          message=f"the run file needs {size / MIB:.1f} MiB but "
                                  f"{str(folder)!r} has {free / MIB:.1f} MiB free; choose "
                                  "another --out or lower seeds, records, K, M, D or N")
