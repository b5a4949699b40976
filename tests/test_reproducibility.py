"""Reproducibility and common random numbers (docs/model.md §3.3, §7.8)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

import fastsgd

SMALL = dict(N=96, D=48, K=2, M=2, steps=3000, records=12, test_size=200)
VOLATILE_ATTRS = {"created", "command_line", "run_id"}


def file_contents(path):
    """Every dataset (name → array) and root attribute of an HDF5 file."""
    datasets = {}
    with h5py.File(path, "r") as fh:
        fh.visititems(lambda name, obj: datasets.__setitem__(name, obj[...])
                      if isinstance(obj, h5py.Dataset) else None)
        attrs = {k: v for k, v in fh.attrs.items() if k not in VOLATILE_ATTRS}
    return datasets, attrs


def assert_bitwise_equal_files(a, b):
    data_a, attrs_a = file_contents(a)
    data_b, attrs_b = file_contents(b)
    assert data_a.keys() == data_b.keys()
    for name in data_a:
        assert data_a[name].dtype == data_b[name].dtype, name
        assert data_a[name].tobytes() == data_b[name].tobytes(), name
    assert attrs_a.keys() == attrs_b.keys()
    for name in attrs_a:
        assert np.array_equal(attrs_a[name], attrs_b[name]), name


@pytest.mark.parametrize("extra", [dict(), dict(m=3, alpha=1.0, standardize="whiten",
                                                 block_size=8, f="erf", sigma=0.1)])
def test_same_seed_bitwise_equal_at_one_and_two_threads(extra, tmp_path):
    cfg = fastsgd.SimConfig(seeds=3, **SMALL, **extra)
    fastsgd.simulate(cfg, out=tmp_path / "t1.h5", threads=1)
    fastsgd.simulate(cfg, out=tmp_path / "t2.h5", threads=2)
    fastsgd.simulate(cfg, out=tmp_path / "t2b.h5", threads=2)
    assert_bitwise_equal_files(tmp_path / "t1.h5", tmp_path / "t2.h5")
    assert_bitwise_equal_files(tmp_path / "t2.h5", tmp_path / "t2b.h5")


def test_each_seed_can_be_rerun_alone(tmp_path):
    many = fastsgd.simulate(fastsgd.SimConfig(seeds=3, **SMALL), out=tmp_path / "many.h5")
    first = fastsgd.simulate(fastsgd.SimConfig(seeds=1, **SMALL), out=tmp_path / "s0.h5")
    third = fastsgd.simulate(fastsgd.SimConfig(seeds=1, first_seed_index=2, **SMALL),
                             out=tmp_path / "s2.h5")
    assert third.seed_index.tolist() == [2]
    for single, i in [(first, 0), (third, 2)]:
        for name in ("Q", "R", "W", "Sigma", "v", "eg", "eg_mc", "final_w", "T"):
            np.testing.assert_array_equal(getattr(single, name)[0], getattr(many, name)[i])
    assert not np.array_equal(many.final_w[0], many.final_w[1])


@pytest.mark.parametrize("change", [dict(m=4, alpha=2.0), dict(m=2, alpha=0.5, block_size=1),
                                    dict(standardize="whiten", m=3, alpha=1.0),
                                    dict(f="erf"), dict(test_size=300), dict(records=7)])
def test_mixture_and_recording_options_leave_problem_unchanged(change, tmp_path):
    base = fastsgd.simulate(fastsgd.SimConfig(**SMALL), out=tmp_path / "base.h5")
    other = fastsgd.simulate(fastsgd.SimConfig(**{**SMALL, **change}),
                             out=tmp_path / "other.h5")
    for name in base.initial:
        np.testing.assert_array_equal(base.initial[name], other.initial[name], err_msg=name)
    np.testing.assert_array_equal(base.T, other.T)
    np.testing.assert_array_equal(base.W[:, 0], other.W[:, 0])
    np.testing.assert_array_equal(base.v[:, 0], other.v[:, 0])


@pytest.mark.parametrize("change", [dict(test_size=300), dict(records=7)])
def test_recording_options_leave_trajectory_unchanged(change, tmp_path):
    base = fastsgd.simulate(fastsgd.SimConfig(**SMALL), out=tmp_path / "base.h5")
    other = fastsgd.simulate(fastsgd.SimConfig(**{**SMALL, **change}),
                             out=tmp_path / "other.h5")
    common, ia, ib = np.intersect1d(base.step, other.step, return_indices=True)
    assert common.size >= 2
    for name in ("Q", "R", "W", "Sigma", "v", "eg"):
        np.testing.assert_array_equal(getattr(base, name)[:, ia], getattr(other, name)[:, ib])
    np.testing.assert_array_equal(base.final_w, other.final_w)


def test_sample_seed_changes_data_only(tmp_path):
    base = fastsgd.simulate(fastsgd.SimConfig(**SMALL), out=tmp_path / "base.h5")
    other = fastsgd.simulate(fastsgd.SimConfig(sample_seed=99, **SMALL),
                             out=tmp_path / "other.h5")
    for name in base.initial:
        np.testing.assert_array_equal(base.initial[name], other.initial[name])
    assert not np.array_equal(base.final_w, other.final_w)
