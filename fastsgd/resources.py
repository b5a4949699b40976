"""What a run needs from the machine: usable cores and memory, checked before anything runs
(docs/model.md §8.1 ``--threads``)."""

from __future__ import annotations

import os

from fastsgd.config import ConfigError, SimConfig
from fastsgd.problem import TEST_CHUNK, exact_int8_test_inputs

GIB = 2 ** 30


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
    """Peak bytes of one running seed: F and the GEMM operand [F/√D | W̃ᵀ/√D] (plus its float32
    copy in mixed precision), the test set (latents P·D as the specification counts them,
    although they are made TEST_CHUNK at a time; inputs P·N at 1 byte
    for int8 sign inputs, ξ for the equivalent Gaussian model), Ω = FᵀF/N with its
    eigendecomposition, and the chunk buffers (docs/model.md §8.1). It exceeds the specification's
    8·(N·D + P·N + P·D) except for int8 sign test inputs, which count one byte per entry."""
    N, D, M, P = cfg.N, cfg.D, cfg.M, cfg.test_size
    input_bytes = 1 if exact_int8_test_inputs(cfg) else 8
    xi = 8 * P * N if cfg.input_model == "equivalent_gaussian" else 0
    mixed = 4 * D * (N + M) if cfg.precision == "mixed" else 0
    return (8 * (N * D + D * (N + M) + P * D + 2 * P * M + 3 * D * D + 3 * TEST_CHUNK * N)
            + mixed + input_bytes * P * N + xi)


def check_resources(cfg: SimConfig, threads: int) -> None:
    """Refuse (ConfigError, with the figure) a run whose concurrent seeds cannot fit in the
    available memory."""
    need = threads * memory_per_seed(cfg)
    available = available_memory()
    if available is not None and need > available:
        raise ConfigError(
            "threads", f"at most {available // memory_per_seed(cfg)} concurrent seed(s)",
            threads,
            message=f"memory: {threads} concurrent seed(s) need {need / GIB:.1f} GiB "
                    f"({memory_per_seed(cfg) / GIB:.2f} GiB each: F, the test set, FᵀF/N) but "
                    f"{available / GIB:.1f} GiB are available; lower threads, N, D or "
                    "test_size")
