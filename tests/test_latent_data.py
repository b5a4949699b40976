"""Latents read from data (docs/model.md §11): files, hashes, standardizations, the row sampler,
the configuration's fields and refusals, the matched twin, the input moments and the CLI.

The kernel against the NumPy twin on data latents is in tests/test_sgd.py (its data cases).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import fastsgd
from fastsgd.cli import cli
from fastsgd.config import DEFAULTS, ConfigError, SimConfig, canonical, matched_twin, \
    standard_normal_twin
from fastsgd.input_law import data_moments
from fastsgd.latent_data import (CONSTANT_RATIO, SINGULAR_RATIO, LatentDataError, content_hash,
                                 minimum_rows, read_array, split_location,
                                 standardize_data)
from fastsgd.config import config_data_law
from fastsgd.problem import build_problem, seed_moments
from fastsgd.sampling import DataRows, draw_data_rows
from fastsgd.streams import SeedStreams
from analysis.activations import FOLD_CODES, fold_array
from synthetic_data import synthetic_latents


D = 12


@pytest.fixture
def data(tmp_path):
    """A (200, D) synthetic data set saved as .npy and as an HDF5 dataset."""
    X = synthetic_latents(200, D, seed=3)
    np.save(tmp_path / "x.npy", X)
    with h5py.File(tmp_path / "x.h5", "w") as fh:
        fh["group/latents"] = X
    return X, tmp_path


def config(path, **extra) -> SimConfig:
    values = dict(N=24, D=D, K=2, M=2, steps=600, records=4, test_size=50, latent="data",
                  latent_data=str(path))
    values.update(extra)
    return SimConfig(**values)


# ------------------------------------------------------------------ 1. files
def test_locations_split_at_the_hdf5_suffix():
    assert split_location("/a/b.npy") == ("/a/b.npy", None)
    assert split_location("/a/b.h5") == ("/a/b.h5", None)
    assert split_location("/a:b/c.h5:g/d") == ("/a:b/c.h5", "g/d")
    assert split_location("c.HDF5:x") == ("c.HDF5", "x")
    assert split_location("c.h5:") == ("c.h5", None)


def test_npy_and_hdf5_give_the_same_values_and_hash(data):
    X, folder = data
    a = read_array(str(folder / "x.npy"))
    b = read_array(str(folder / "x.h5:group/latents"))
    c = read_array(str(folder / "x.h5"))           # the one 2-D dataset
    for array in (a, b, c):
        np.testing.assert_array_equal(array, X)
        assert array.dtype == np.float64 and array.flags.c_contiguous
    assert content_hash(a) == content_hash(b) == content_hash(X)
    assert len(content_hash(a)) == 64


def test_the_hash_sees_every_value_and_the_shape(data):
    X, _ = data
    h = content_hash(X)
    Y = X.copy()
    Y[137, 5] = np.nextafter(Y[137, 5], np.inf)      # one ulp of one entry
    assert content_hash(Y) != h
    assert content_hash(X.reshape(100, 2 * D)) != h  # same bytes, another shape


def test_integers_are_numbers(tmp_path):
    ints = np.arange(60, dtype=np.int16).reshape(20, 3) ** 2
    np.save(tmp_path / "i.npy", ints)
    np.testing.assert_array_equal(read_array(str(tmp_path / "i.npy")), ints.astype(float))


def _npy_bytes(array) -> bytes:
    import io
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize("make, words", [
    (lambda p: None, "does not exist"),
    (lambda p: p.write_text("not an array"), "is not a .npy file (no NumPy header)"),
    (lambda p: np.save(p, np.array([["a", "b"]] * 20)), "holds <U1 values"),
    (lambda p: np.save(p, np.ones((20, 3), dtype=bool)), "holds bool values"),
    (lambda p: np.save(p, np.ones((20, 3), dtype=complex)), "holds complex128"),
    (lambda p: np.save(p, np.array([object()] * 3)), "holds Python objects, not numbers"),
    (lambda p: p.write_bytes(_npy_bytes(np.ones((20, 3)))[:-40]), "cannot be read as .npy"),
    (lambda p: np.save(p, np.ones(20)), "1-D with shape (20,)"),
    (lambda p: np.save(p, np.ones((2, 20, 3))), "3-D"),
    (lambda p: np.save(p, np.where(np.eye(20, 3) > 0, np.nan, 1.0)), "3 non-finite entries"),
    (lambda p: np.save(p, np.where(np.eye(20, 3)[::-1] > 0, -np.inf, 1.0)),
     "the first at row 17, column 2"),
])
def test_bad_files_are_refused_in_one_line(tmp_path, make, words):
    path = tmp_path / "bad.npy"
    make(path)
    with pytest.raises(LatentDataError) as info:
        read_array(str(path))
    assert words in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).count(str(path)) == 1


def test_hdf5_datasets_must_be_named_unless_one(tmp_path):
    path = tmp_path / "two.h5"
    with h5py.File(path, "w") as fh:
        fh["a"] = np.ones((20, 3))
        fh["b"] = np.ones((20, 3))
        fh["c"] = np.ones(5)
    with pytest.raises(LatentDataError, match=r"2 2-D datasets \(a, b\): name one"):
        read_array(str(path))
    with pytest.raises(LatentDataError, match="has no dataset 'nope'"):
        read_array(f"{path}:nope")
    np.testing.assert_array_equal(read_array(f"{path}:b"), np.ones((20, 3)))
    with h5py.File(path, "a") as fh:
        fh["broken"] = h5py.ExternalLink("missing.h5", "/x")
    with pytest.raises(LatentDataError, match="has no dataset 'broken'"):   # a broken link
        read_array(f"{path}:broken")
    np.save(tmp_path / "x.npy", np.ones((20, 3)))
    with pytest.raises(LatentDataError, match="x.npy:a does not exist"):   # no datasets in .npy
        read_array(f"{tmp_path / 'x.npy'}:a")


def test_a_file_too_large_for_memory_is_refused_before_it_is_read(data, monkeypatch):
    from fastsgd import resources
    _, folder = data
    need = 3 * 8 * 200 * D
    monkeypatch.setattr(resources, "available_memory", lambda: need - 1)
    for location in (folder / "x.npy", f"{folder / 'x.h5'}:group/latents"):
        with pytest.raises(LatentDataError, match=r"of shape \(200, 12\) needs .* GiB in memory"):
            read_array(str(location))
    monkeypatch.setattr(resources, "available_memory", lambda: need)
    read_array(str(folder / "x.npy"))


def test_a_rewrite_that_keeps_size_and_mtime_is_still_seen(data):
    from fastsgd.latent_data import checked_data, open_data
    X, folder = data
    path = folder / "x.npy"
    before = open_data(str(path))
    info = os.stat(path)
    Y = X.copy()
    Y[5, 5] += 1.0
    np.save(folder / "y.npy", Y)
    os.replace(folder / "y.npy", path)                   # same size, another inode
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    with pytest.raises(LatentDataError, match="has changed"):
        checked_data(str(path), before.sha256)


def test_columns_and_rows(data):
    X, folder = data
    assert minimum_rows(D) == D + 1
    with pytest.raises(ConfigError, match=rf"has {D} columns, so D must be {D} \(got D = 11\)"):
        config(folder / "x.npy", D=11)
    np.save(folder / "few.npy", X[:D])
    with pytest.raises(ConfigError, match=rf"has {D} rows; its covariance needs at least "
                                          rf"D \+ 1 = {D + 1}"):
        config(folder / "few.npy")
    np.save(folder / "enough.npy", X[:D + 1])
    assert config(folder / "enough.npy").latent_data_shape == (D + 1, D)


# ------------------------------------------------------------------ 2. standardizations
def test_standardizations_use_the_empirical_moments(data):
    X, _ = data
    none = standardize_data(X, "none")
    np.testing.assert_array_equal(none.rows, X)
    np.testing.assert_allclose(none.mean, X.mean(0), rtol=1e-14)
    np.testing.assert_allclose(none.covariance, np.cov(X.T, bias=True), rtol=1e-12, atol=1e-14)

    sample = standardize_data(X, "sample")
    np.testing.assert_allclose(sample.rows.mean(1), 0, atol=1e-14)
    np.testing.assert_allclose(sample.rows.std(1), 1, rtol=1e-13)
    np.testing.assert_allclose(sample.rows, (X - X.mean(1)[:, None]) / X.std(1)[:, None],
                               rtol=1e-13, atol=1e-14)

    population = standardize_data(X, "population")
    np.testing.assert_allclose(population.rows.mean(0), 0, atol=1e-14)
    np.testing.assert_allclose(population.rows.std(0), 1, rtol=1e-13)
    assert not population.mean.any()
    np.testing.assert_allclose(population.covariance, np.corrcoef(X.T), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(population.covariance,
                               np.cov(population.rows.T, bias=True), rtol=1e-12, atol=1e-13)

    whiten = standardize_data(X, "whiten")
    np.testing.assert_allclose(np.cov(whiten.rows.T, bias=True), np.eye(D), atol=1e-12)
    np.testing.assert_allclose(whiten.rows.mean(0), 0, atol=1e-13)
    np.testing.assert_array_equal(whiten.covariance, np.eye(D))
    assert not whiten.mean.any()
    # the symmetric inverse root: whitening commutes with nothing else (not a Cholesky factor)
    W = np.linalg.lstsq(X - X.mean(0), whiten.rows, rcond=None)[0]
    np.testing.assert_allclose(W, W.T, atol=1e-10)
    # the four laws differ
    for a, b in [(none, sample), (sample, population), (population, whiten)]:
        assert not np.allclose(a.covariance, b.covariance, atol=1e-3)


def test_what_a_standardization_cannot_scale_is_refused():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 5))
    X[:, 3] = 2.5                                   # a constant column
    with pytest.raises(LatentDataError, match=r"1 column\(s\) are constant .* column 3"):
        standardize_data(X, "population")
    with pytest.raises(LatentDataError, match="numerically singular .*1 of 5 eigenvalues"):
        standardize_data(X, "whiten")
    standardize_data(X, "none")
    standardize_data(X, "sample")
    Y = rng.standard_normal((40, 5))
    Y[7] = -1.0                                     # a constant row
    with pytest.raises(LatentDataError, match=r"1 row\(s\) are constant .* row 7"):
        standardize_data(Y, "sample")
    Z = rng.standard_normal((40, 5))
    Z[:, 4] = Z[:, 0] + Z[:, 1]                     # dependent columns: rank 4
    with pytest.raises(LatentDataError, match="whiten needs full rank"):
        standardize_data(Z, "whiten")
    # just above the thresholds is accepted
    Z[:, 4] += 1e-4 * rng.standard_normal(40)
    standardize_data(Z, "whiten")
    assert SINGULAR_RATIO == 1e-10 and CONSTANT_RATIO == 1e-12


# ------------------------------------------------------------------ 3. the row sampler
def test_rows_are_drawn_from_one_double_each_whatever_the_blocks():
    rows = np.arange(70.0).reshape(7, 10)
    whole = np.empty((1000, 10))
    draw_data_rows(np.random.default_rng(5), whole, rows)
    rng = np.random.default_rng(5)
    parts = []
    for size in (1, 255, 256, 7, 481):
        part = np.empty((size, 10))
        draw_data_rows(rng, part, rows)
        parts.append(part)
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    u = np.random.default_rng(5).random(1000)
    np.testing.assert_array_equal(whole[:, 0] // 10, np.minimum(np.floor(u * 7), 6))
    counts = np.bincount((whole[:, 0] // 10).astype(int), minlength=7)
    chi2 = np.sum((counts - 1000 / 7) ** 2 / (1000 / 7))
    assert chi2 < 22.5                      # χ²(6) 99.9 % quantile: rows drawn uniformly
    mixed = np.empty((50, 10), dtype=np.float32)
    draw_data_rows(np.random.default_rng(5), mixed, rows)
    np.testing.assert_array_equal(mixed, whole[:50].astype(np.float32))


def test_the_test_set_is_drawn_from_its_own_stream(data):
    X, folder = data
    cfg = config(folder / "x.npy", standardize="population", test_size=300)
    streams = SeedStreams.for_seed(cfg.seed, cfg.sample_entropy, 0)
    problem = build_problem(cfg, streams)
    assert isinstance(problem.law, DataRows)
    Z = (X - X.mean(0)) / X.std(0)
    u = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
        cfg.sample_entropy, spawn_key=(0, 5, 3)))).random(300)
    C = Z[np.minimum((u * 200).astype(int), 199)]
    np.testing.assert_allclose(problem.test_nu, C @ problem.teacher.T / math.sqrt(D),
                               rtol=1e-12, atol=1e-13)


# ------------------------------------------------------------------ 4. configuration
def test_a_new_configuration_records_location_shape_and_hash(data, monkeypatch):
    X, folder = data
    monkeypatch.chdir(folder)
    cfg = config("x.npy")
    assert cfg.latent_data == str(folder / "x.npy")           # made absolute
    assert cfg.latent_data_shape == (200, D)
    assert cfg.latent_data_sha256 == content_hash(X)
    same = SimConfig.from_json(cfg.to_json())
    assert same == cfg
    os.remove(folder / "x.npy")                               # a stored config needs no file
    assert SimConfig.from_json(cfg.to_json()) == cfg
    assert '"latent_data_shape": [200, 12]' in cfg.to_json()
    # at their defaults the new fields stay out of the JSON (§10: names of old sweeps kept)
    assert "latent_data" not in SimConfig().to_json()


def test_hdf5_configuration_and_replace(data):
    X, folder = data
    a = config(f"{folder / 'x.h5'}:group/latents")
    assert a.latent_data == f"{folder / 'x.h5'}:group/latents"
    assert config(folder / "x.h5").latent_data == a.latent_data     # the dataset is recorded
    assert a.latent_data_sha256 == content_hash(X)
    np.save(folder / "y.npy", X[::-1])
    b = a.replace(latent_data=str(folder / "y.npy"))          # another file: read again
    assert b.latent_data_sha256 == content_hash(X[::-1]) != a.latent_data_sha256
    assert a.replace(lr=0.1).latent_data_sha256 == a.latent_data_sha256
    from pathlib import Path
    same = a.replace(latent_data=Path(folder / "x.h5"), latent_data_sha256=a.latent_data_sha256)
    assert isinstance(same.latent_data, str) and same.to_json()       # a path-like location


def test_replace_checks_another_standardization(tmp_path):
    X = synthetic_latents(100, D, seed=1)
    X[:, 4] = X[:, 2] - X[:, 3]                              # rank D − 1: whiten is refused
    np.save(tmp_path / "s.npy", X)
    cfg = config(tmp_path / "s.npy", standardize="population")
    with pytest.raises(ConfigError, match="numerically singular"):
        cfg.replace(standardize="whiten")
    assert canonical(standard_normal_twin(cfg)).latent_data is None   # its floor still works


@pytest.mark.parametrize("field, value", [
    ("m", 3), ("alpha", 1.0), ("means", "scalar"), ("weights", "dirichlet"),
    ("teacher", "aligned"), ("block_size", 4)])
def test_mixture_fields_are_refused(data, field, value):
    _, folder = data
    with pytest.raises(ConfigError) as info:
        config(folder / "x.npy", **{field: value})
    assert info.value.parameter == field
    assert "no meaning for a data latent" in str(info.value)


def test_latent_and_file_go_together(data):
    _, folder = data
    with pytest.raises(ConfigError, match="latent_data must be a file of latent vectors"):
        SimConfig(latent="data")
    with pytest.raises(ConfigError) as info:
        SimConfig(D=D, latent_data=str(folder / "x.npy"))
    assert info.value.parameter == "latent"
    with pytest.raises(ConfigError, match="latent_data_sha256 must be a SHA-256"):
        SimConfig(D=D, latent="data", latent_data=str(folder / "x.npy"),
                  latent_data_shape=(200, D), latent_data_sha256="abc")
    with pytest.raises(ConfigError, match="latent_data_shape must be two positive integers"):
        SimConfig(D=D, latent="data", latent_data=str(folder / "x.npy"),
                  latent_data_shape=(200,), latent_data_sha256="0" * 64)
    with pytest.raises(ConfigError, match="latent_data must be set"):
        SimConfig(latent_data_sha256="0" * 64)


def test_a_changed_file_is_refused_before_anything_is_written(data, tmp_path):
    X, folder = data
    cfg = config(folder / "x.npy")
    Y = X.copy()
    Y[0, 0] += 1.0
    np.save(folder / "x.npy", Y)
    out = tmp_path / "run.h5"
    with pytest.raises(ConfigError) as info:
        fastsgd.simulate(cfg, out=out)
    assert info.value.parameter == "latent_data"
    assert "has changed since this configuration was made" in str(info.value)
    assert not out.exists()
    with pytest.raises(ConfigError, match="has changed"):
        seed_moments(cfg.replace(standardize="whiten"), 0)


def test_floors_and_twins(data):
    _, folder = data
    cfg = config(folder / "x.npy", standardize="population")
    assert canonical(standard_normal_twin(cfg)) == SimConfig(**{
        name: getattr(cfg, name) if name not in ("latent", "latent_data", "latent_data_shape",
                                                 "latent_data_sha256", "standardize")
        else DEFAULTS[name] for name in DEFAULTS})              # the Gaussian latent
    twin = matched_twin(cfg)
    assert twin.latent == "matched_gaussian" and twin.latent_data == cfg.latent_data
    assert twin.matched_method == "data"
    whiten = config(folder / "x.npy", standardize="whiten")
    assert matched_twin(whiten) == standard_normal_twin(whiten)   # N(0, I) exactly


def test_the_matched_twin_has_the_data_moments(data, tmp_path):
    X, folder = data
    cfg = config(folder / "x.npy", standardize="population", latent="matched_gaussian")
    problem = build_problem(cfg, SeedStreams.for_seed(cfg.seed, cfg.sample_entropy, 0))
    law = problem.matched
    assert law.method == "data" and not law.mean.any()
    np.testing.assert_allclose(law.covariance(), np.corrcoef(X.T), rtol=1e-11, atol=1e-12)
    none = config(folder / "x.npy", latent="matched_gaussian")
    law = build_problem(none, SeedStreams.for_seed(0, 0, 0)).matched
    np.testing.assert_allclose(law.mean, X.mean(0), rtol=1e-13)
    np.testing.assert_allclose(law.covariance(), np.cov(X.T, bias=True), rtol=1e-11, atol=1e-12)
    whiten = config(folder / "x.npy", standardize="whiten", latent="matched_gaussian")
    assert build_problem(whiten, SeedStreams.for_seed(0, 0, 0)).matched.is_standard


# ------------------------------------------------------------------ 5. input moments (§11.4)
@pytest.mark.parametrize("f, standardize", [("erf", "whiten"), ("tanh", "population"),
                                            ("sign", "sample")])
def test_input_moments_are_sums_over_the_rows(data, f, standardize):
    X, folder = data
    cfg = config(folder / "x.npy", standardize=standardize, f=f)
    draws, moments = seed_moments(cfg, 0)
    Z = config_data_law(cfg).rows
    x = fold_array(Z @ draws.features.T / math.sqrt(D), FOLD_CODES[f],
                   np.empty((200, cfg.N)))
    assert moments.method == "exact" and moments.samples == 200 and moments.halves is None
    np.testing.assert_allclose(moments.mean, x.mean(0), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(moments.omega, np.cov(x.T, bias=True), rtol=1e-11, atol=1e-13)
    xc, zc = x - x.mean(0), Z - Z.mean(0)
    np.testing.assert_allclose(moments.phi, xc.T @ zc / 200, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(moments.latent_covariance, np.cov(Z.T, bias=True), rtol=1e-11,
                               atol=1e-12)
    np.testing.assert_allclose(data_moments(Z, draws.features, f, mean_only=True),
                               x.mean(0), rtol=1e-12, atol=1e-14)


def test_the_moments_theory_needs_a_centred_latent(data, tmp_path):
    _, folder = data
    run = fastsgd.simulate(config(folder / "x.npy", standardize="sample"), out=tmp_path / "r.h5")
    from fastsgd.theory import TheoryUnavailable, moments_odes
    with pytest.raises(TheoryUnavailable, match=r"‖E c‖ = [0-9.]+ ≠ 0 \(standardize = "
                                                r"sample\).*use population or whiten"):
        moments_odes(run)
    centred = fastsgd.simulate(config(folder / "x.npy", standardize="whiten",
                                      center_inputs=True), out=tmp_path / "c.h5")
    odes = moments_odes(centred)
    assert odes.moments_method == "exact" and odes.samples == 200
    assert odes.trajectories[0].status == "ok"


# ------------------------------------------------------------------ 6. command line
def test_cli_implies_data_and_the_columns(data, tmp_path):
    _, folder = data
    out = tmp_path / "cli.h5"
    result = CliRunner().invoke(cli, ["simulate", "--latent-data", str(folder / "x.npy"),
                                      "-N", "24", "--steps", "300", "--test-size", "40",
                                      "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    run = fastsgd.load(out)
    assert (run.config.latent, run.config.D) == ("data", D)
    assert run.config.latent_data_shape == (200, D)
    from fastsgd.io import default_output_path   # the default name: the file's stem and hash
    name = default_output_path(run.config, tmp_path).name
    assert name.endswith(f"_latent-data_data-x-{run.config.latent_data_sha256[:8]}.h5")
    h5 = config(f"{folder / 'x.h5'}:group/latents")
    assert default_output_path(h5, tmp_path).name.endswith(
        f"_data-x-{h5.latent_data_sha256[:8]}.h5")


@pytest.mark.parametrize("args, words", [
    (["--latent-data", "{folder}/none.npy"], "--latent-data: latent_data {folder}/none.npy "
                                             "does not exist"),
    (["--latent-data", "{folder}/x.npy", "-D", "5"], "has 12 columns, so D must be 12"),
    (["--latent-data", "{folder}/x.npy", "--m", "3"], "--m: m has no meaning for a data latent"),
    (["--latent-data", "{folder}/x.h5:nope"], "has no dataset 'nope'"),
    (["--latent", "data"], "--latent-data: latent_data must be a file of latent vectors"),
])
def test_cli_bad_data_is_one_line_exit_2_nothing_written(data, tmp_path, args, words):
    _, folder = data
    out = tmp_path / "bad.h5"
    args = [a.format(folder=folder) for a in args]
    proc = subprocess.run([sys.executable, "-m", "fastsgd.cli", "simulate", *args, "-N", "24",
                           "--steps", "100", "--quiet", "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words.format(folder=folder) in lines[0], proc.stderr
    assert not out.exists()


# ------------------------------------------------------------------ 7. sweeps and comparisons
def test_a_grid_reads_data_relative_to_its_folder(data):
    from fastsgd.sweep import read_grid
    _, folder = data
    grid = folder / "grid.toml"
    grid.write_text('[base]\nN = 24\nD = 12\nlatent = "data"\nlatent_data = "x.npy"\n'
                    'seeds = 1\nt_max = 5\n[grid]\nstandardize = ["population", "whiten"]\n')
    cells, _ = read_grid(grid)
    assert [c.config.latent_data for c in cells] == [str(folder / "x.npy")] * 2
    population, whiten = cells
    assert population.floor.config.latent_data is None          # N(0, I): the Gaussian latent
    assert whiten.floor == population.floor


def test_a_sweep_refuses_to_resume_on_changed_data(data, tmp_path):
    import json

    from fastsgd.sweep import GridError, read_grid, _check_data_files
    X, folder = data
    grid = folder / "grid.toml"
    grid.write_text('[base]\nN = 24\nD = 12\nlatent = "data"\nlatent_data = "x.npy"\n'
                    'seeds = 1\nt_max = 5\n[grid]\nstandardize = ["population"]\n')
    cells, _ = read_grid(grid)
    runs = tmp_path / "runs"
    runs.mkdir()
    cell = cells[0].job
    (runs / f"{cell.name}.json").write_text(json.dumps({"config": cell.config.to_json()}))
    _check_data_files([cell], tmp_path)                          # the same content: resumes
    Y = X.copy()
    Y[3, 3] = 0.0
    np.save(folder / "x.npy", Y)
    changed, _ = read_grid(grid)
    with pytest.raises(GridError, match="has changed since the run .* refusing to resume"):
        _check_data_files([changed[0].job], tmp_path)
    from fastsgd.sweep import sweep
    with pytest.raises(GridError, match="refusing to resume"):   # before any cluster starts
        sweep(grid, tmp_path, echo=lambda line: None)


def test_compare_refuses_runs_of_two_data_sets(data, tmp_path):
    X, folder = data
    a = fastsgd.simulate(config(folder / "x.npy", standardize="whiten"), out=tmp_path / "a.h5")
    np.save(folder / "y.npy", X + 0.5)
    b = fastsgd.simulate(config(folder / "y.npy", standardize="whiten", sample_seed=1),
                         out=tmp_path / "b.h5")
    result = CliRunner().invoke(cli, ["compare", str(a.path), "--reference", str(b.path)])
    assert result.exit_code == 2
    assert "made from other latent data" in result.output


def test_the_data_study_grid(tmp_path):
    """examples/universality_data.toml, with the patches file made where it expects it."""
    import shutil
    from pathlib import Path

    from fastsgd.datasets import make_latents
    from fastsgd.latent_data import save_latents
    from fastsgd.sweep import read_grid
    root = Path(__file__).resolve().parent.parent / "examples"
    (tmp_path / "examples").mkdir()
    (tmp_path / "data").mkdir()
    shutil.copy(root / "universality_data.toml", tmp_path / "examples")
    save_latents(make_latents("patches"), str(tmp_path / "data" / "patches.npy"))
    cells, ode = read_grid(tmp_path / "examples" / "universality_data.toml")
    assert len(cells) == 16 and ode["theory"] == ["hmm", "moments"]
    assert {c.config.latent_data for c in cells} == {str(tmp_path / "data" / "patches.npy")}
    # per N: 8 cells, one N(0, I) floor and reference, matched floors and references of none,
    # sample (with and without centring) and population (centring is x − 0 for its symmetric
    # twin); whiten's matched twin is N(0, I)
    assert len({job.name for c in cells for job in c.jobs}) == 2 * 20


def test_data_runs_are_reproducible_at_any_thread_count(data, tmp_path):
    """docs/model.md §7.8 for a data latent: threads 1 and 2 give identical files, and a seed
    index run alone equals the same seed index of a multi-seed run."""
    _, folder = data
    cfg = config(folder / "x.npy", standardize="whiten", seeds=3, steps=1500)
    a = fastsgd.simulate(cfg, out=tmp_path / "a.h5", threads=1)
    b = fastsgd.simulate(cfg, out=tmp_path / "b.h5", threads=2)
    for name in ("eg_mc", "final_w", "final_v", "Q"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    alone = fastsgd.simulate(cfg.replace(seeds=1, first_seed_index=2), out=tmp_path / "c.h5")
    np.testing.assert_array_equal(alone.eg_mc[0], a.eg_mc[2])
    np.testing.assert_array_equal(alone.final_w[0], a.final_w[2])
