"""What a run needs from the machine (fastsgd/resources.py; docs/model.md §8.1 "Threads and
memory").

memory_per_seed counts the documented buffers: F and the GEMM operand [F | W̃ᵀ]/√D (plus its
float32 copy in mixed precision), the test set (latents P·D, inputs P·N at 1 byte for int8 sign
inputs and 8 otherwise, ξ for the equivalent Gaussian model), Ω = FᵀF/N with its
eigendecomposition, and the chunk buffers; it contains MODEL.md's 8·(N·D + P·N + P·D) for
float64 inputs. check_resources refuses, before anything is written, a run whose concurrent
seeds do not fit (ConfigError on ``threads``).
"""

from __future__ import annotations

import os

import pytest

import fastsgd
from fastsgd import resources
from fastsgd.config import ConfigError, SimConfig
from fastsgd.resources import (check_disk, check_resources, file_bytes, memory_needed,
                               memory_per_seed, usable_cores)

BASE = dict(N=1000, D=500, M=2, test_size=10_000)


def mem(**changes) -> int:
    return memory_per_seed(SimConfig(**{**BASE, **changes}))


def test_int8_sign_inputs_take_one_byte_and_other_folds_eight():
    N, P = BASE["N"], BASE["test_size"]
    for f in ("erf", "linear", "relu", "tanh"):
        assert mem(f=f) - mem(f="sign") == 7 * P * N, f


def test_equivalent_gaussian_inputs_are_float64_plus_xi():
    N, P = BASE["N"], BASE["test_size"]
    # sign: int8 → float64 inputs (+7 P·N) and the test set's ξ (+8 P·N)
    assert mem(input_model="equivalent_gaussian") - mem() == 15 * P * N
    # erf inputs were float64 already: only ξ
    assert mem(f="erf", input_model="equivalent_gaussian") - mem(f="erf") == 8 * P * N


def test_mixed_precision_adds_the_float32_operand():
    N, D, M = BASE["N"], BASE["D"], BASE["M"]
    assert mem(precision="mixed") - mem() == 4 * D * (N + M)


def test_each_test_sample_counts_its_latent_and_its_input():
    """Linear in P, with at least the latent (8 D) and the input (1 or 8 bytes × N) per sample."""
    N, D = BASE["N"], BASE["D"]
    for f, input_bytes in (("sign", 1), ("erf", 8)):
        slope = mem(f=f, test_size=2001) - mem(f=f, test_size=2000)
        assert mem(f=f, test_size=3000) - mem(f=f, test_size=2000) == 1000 * slope
        assert slope >= 8 * D + input_bytes * N, f


def test_features_operand_and_spectrum_are_counted():
    """Per seed at least F (8 N·D), the operand (8 D·(N + M)) and Ω with its eigenvectors
    (2 × 8 D²); the test set and the chunk buffers on top."""
    for N, D in ((1000, 500), (200, 2000), (5000, 50)):
        cfg = SimConfig(N=N, D=D, test_size=1)
        assert memory_per_seed(cfg) >= 8 * (N * D + D * (N + 2) + 2 * D * D)
    # the D² term: second difference in D at fixed N
    second = mem(D=502) - 2 * mem(D=501) + mem(D=500)
    assert second >= 2 * 16


def test_contains_the_external_specifications_figure_for_float64_inputs():
    for values in (dict(f="erf"), dict(f="sign", input_model="equivalent_gaussian"),
                   dict(f="tanh", N=100, D=4000, test_size=10 ** 5)):
        cfg = SimConfig(**{**BASE, **values})
        N, D, P = cfg.N, cfg.D, cfg.test_size
        assert memory_per_seed(cfg) >= 8 * (N * D + P * N + P * D), values


def test_check_resources_refuses_what_does_not_fit(monkeypatch):
    cfg = SimConfig(**BASE)
    need = memory_needed(cfg, 1) + memory_per_seed(cfg)      # two seeds
    monkeypatch.setattr(resources, "available_memory", lambda: need - 1)
    check_resources(cfg, 1)                       # one seed fits
    with pytest.raises(ConfigError) as info:
        check_resources(cfg, 2)                   # two do not
    error = info.value
    assert error.parameter == "threads" and error.value == 2
    assert error.allowed == "at most 1 concurrent seed(s)"
    assert "memory" in str(error) and "GiB" in str(error)
    monkeypatch.setattr(resources, "available_memory", lambda: None)
    check_resources(cfg, 1000)                    # unknown memory: no refusal


def test_a_run_that_does_not_fit_is_refused_before_anything_is_written(monkeypatch, tmp_path):
    cfg = SimConfig(N=32, D=16, steps=10, seeds=2, test_size=20)
    monkeypatch.setattr(resources, "available_memory", lambda: memory_needed(cfg, 1))
    out = tmp_path / "run.h5"
    with pytest.raises(ConfigError) as info:
        fastsgd.simulate(cfg, out=out, threads=2)
    assert info.value.parameter == "threads"
    assert not out.exists() and list(tmp_path.iterdir()) == []
    run = fastsgd.simulate(cfg, out=out, threads=1)    # one at a time fits
    assert run.status == ["ok", "ok"]


def test_usable_cores_and_available_memory():
    assert usable_cores() == len(os.sched_getaffinity(0)) >= 1
    available = resources.available_memory()
    if os.path.exists("/proc/meminfo"):
        assert isinstance(available, int) and available > 0


def test_the_spectral_densities_k_squared_terms_are_counted():
    """The initial state's σ (K, K, D) and r (K, M, D): second difference in K at fixed D is at
    least 2·8·D (the K²·D term), and the record's test-set fields add 4·8·P per unit."""
    D, P = BASE["D"], BASE["test_size"]
    second = mem(K=12) - 2 * mem(K=11) + mem(K=10)
    assert second >= 2 * 8 * D
    assert mem(K=11) - mem(K=10) >= 8 * (4 * P + 21 * D)


def test_memory_counts_the_file_loaded_at_the_end(monkeypatch):
    """Many seeds and records at one thread: the loaded file is the peak."""
    cfg = SimConfig(N=64, D=32, K=8, M=8, seeds=100, records=2000, steps=10 ** 6, test_size=100)
    assert file_bytes(cfg) > memory_per_seed(cfg)
    assert memory_needed(cfg, 1) == file_bytes(cfg)
    monkeypatch.setattr(resources, "available_memory", lambda: file_bytes(cfg) - 1)
    with pytest.raises(ConfigError, match="loaded at the end"):
        check_resources(cfg, 1)


@pytest.mark.parametrize("values", [dict(), dict(K=5, M=3, seeds=3, records=50),
                                    dict(center_inputs=True, m=2, alpha=1.0, seeds=2)])
def test_file_bytes_bounds_the_real_file(tmp_path, values):
    """file_bytes is at least the size of the file a run makes, and at most twice it."""
    cfg = SimConfig(**{"N": 64, "D": 32, "steps": 300, "test_size": 50, **values})
    run = fastsgd.simulate(cfg, out=tmp_path / "r.h5", threads=1)
    size = run.path.stat().st_size
    assert size <= file_bytes(cfg) <= 2 * size + 256 * 1024


def test_check_disk_refuses_a_file_larger_than_the_free_space(monkeypatch, tmp_path):
    cfg = SimConfig(N=64, D=32, steps=300, test_size=50)
    real = os.statvfs(tmp_path)

    class Stats:
        f_frsize, f_bavail = 1, file_bytes(cfg) - 1

    check_disk(cfg, tmp_path)
    monkeypatch.setattr(resources.os, "statvfs", lambda folder: Stats)
    with pytest.raises(ConfigError) as info:
        check_disk(cfg, tmp_path)
    assert info.value.parameter == "out" and "MiB free" in str(info.value)
    with pytest.raises(ConfigError):
        fastsgd.simulate(cfg, out=tmp_path / "r.h5")
    assert list(tmp_path.iterdir()) == [] and real.f_bavail > 0


def test_memory_counts_a_data_latent_once(monkeypatch, tmp_path):
    """A data latent's file (values and standardized rows, covariance and whitening matrix) is
    shared by the seeds: counted once, and refused when it does not fit (docs/model.md §11)."""
    import numpy as np

    from fastsgd.resources import data_bytes
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((300, 32)))
    cfg = SimConfig(N=64, D=32, test_size=50, seeds=2, latent="data",
                    latent_data=str(tmp_path / "x.npy"))
    assert data_bytes(cfg) == 8 * (2 * 300 * 32 + 2 * 32 * 32)
    assert data_bytes(SimConfig()) == 0
    plain = cfg.replace(latent="mixture", latent_data=None)
    assert memory_needed(cfg, 2) - memory_needed(plain, 2) == data_bytes(cfg)
    monkeypatch.setattr(resources, "available_memory", lambda: memory_needed(cfg, 1) - 1)
    with pytest.raises(ConfigError, match=r"the latent data 0\.00 GiB"):
        check_resources(cfg, 1)
