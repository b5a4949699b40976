"""The run file's place, layout, writer and loader (fastsgd/io.py; docs/model.md §3.4, §8.1, §8.2,
§8.3).

1. record_steps: sorted unique {0} ∪ rint(geomspace(1, steps, records − 1)) as int64, with step 0
   and ``steps`` always in, 175 rows at the defaults; /step and /t = step/N of a run.
2. default_output_path: the parameter-derived name of §8.1 (its example, the documented extras)
   and the numeric suffix when taken; resolve_output's refusals (a folder, a missing folder:
   ConfigError on ``out``; an existing file: OutputExistsError) before anything is written.
3. RunWriter: every dataset allocated at full size with its initial value and no time stamps,
   records and statuses written in place.
4. load: RunFileError naming the file for a missing, foreign, future, truncated or damaged file;
   Run.initial_state by position.
5. Output (§10.6): exclusive creation, the next free suffix, overwrite through a temporary file
   renamed over the target, a process removes only what it created; records flushed within a
   second, not one by one. Concurrent processes and a real small disk: tests/test_robustness.py.
6. Named dimensions: a dimension scale on every axis of every dataset; xarray (h5netcdf) opens the
   root and every group with those names and the file's values; Run.to_xarray.
"""

from __future__ import annotations

import errno
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import fastsgd
from fastsgd.config import ConfigError, SimConfig
from fastsgd.io import (FLUSH_SECONDS, FORMAT_VERSION, Output, RunFileError, RunWriter,
                        dataset_dims, dataset_shapes, dimension_sizes, default_output_path, record_steps, resolve_output)

SMALL = dict(N=32, D=16, K=2, M=3, steps=300, records=5, test_size=50)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> fastsgd.Run:
    cfg = SimConfig(seeds=2, first_seed_index=4, **SMALL)
    return fastsgd.simulate(cfg, out=tmp_path_factory.mktemp("io") / "run.h5")


# --------------------------------------------------------------------------------------------
# 1. Record steps (§3.4)
# --------------------------------------------------------------------------------------------

def test_record_grid_and_time(tmp_path):
    cfg = fastsgd.SimConfig(N=50, D=20, steps=1_000, records=30, test_size=20)
    run = fastsgd.simulate(cfg, out=tmp_path / "run.h5")
    expected = np.unique(np.concatenate(
        [[0], np.rint(np.geomspace(1, 1_000, 29)).astype(np.int64)]))
    np.testing.assert_array_equal(run.step, expected)
    assert run.step.dtype == np.int64
    np.testing.assert_array_equal(run.t, run.step / cfg.N)
    assert run.n_records.tolist() == [len(expected)]


def test_defaults_give_175_records():
    assert record_steps(1_000_000, 200).shape == (175,)


@pytest.mark.parametrize("steps, records", [(1000, 2), (7, 3), (1, 2), (10 ** 6, 200)])
def test_record_grid_always_holds_zero_and_the_last_step(steps, records):
    grid = record_steps(steps, records)
    assert grid[0] == 0 and grid[-1] == steps and len(grid) <= records
    assert np.all(np.diff(grid) > 0)

@pytest.mark.parametrize("steps, records", [(1000, 30), (10 ** 6, 200), (5, 50), (300, 5),
                                            (10 ** 15, 3)])
def test_record_steps_follow_the_formula(steps, records):
    expected = np.unique(np.concatenate(
        [[0], np.rint(np.geomspace(1, steps, records - 1))]).astype(np.int64))
    got = record_steps(steps, records)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)


def test_two_records_are_the_first_and_the_last_step():
    """geomspace(1, steps, 1) would give 1: with records = 2 the one point is ``steps``."""
    for steps in (1, 2, 1000):
        np.testing.assert_array_equal(record_steps(steps, 2), [0, steps])


# --------------------------------------------------------------------------------------------
# 2. Output path (§8.1)
# --------------------------------------------------------------------------------------------

def test_default_name_is_the_documented_example(tmp_path):
    cfg = SimConfig(m=8, alpha=2)
    assert default_output_path(cfg, tmp_path) == tmp_path / (
        "N1000_D500_K2_M2_m8_alpha2_std-none_B500_sign-erf_lr0.2_steps1000000_seeds1_seed0.h5")


@pytest.mark.parametrize("change, suffix", [
    (dict(precision="mixed"), "_precision-mixed"),
    (dict(sigma=0.1), "_sigma0.1"),
    (dict(train_second_layer=False), "_first-layer-only"),
    (dict(weights="dirichlet"), "_weights-dirichlet"),
])
def test_documented_extras_are_appended(change, suffix, tmp_path):
    base = default_output_path(SimConfig(), tmp_path)
    assert default_output_path(SimConfig(**change), tmp_path) == tmp_path / (
        base.stem + suffix + ".h5")


@pytest.mark.parametrize("change, tag", [
    (dict(input_model="equivalent_gaussian"), "equivalent_gaussian"),
    (dict(sample_seed=3), "sample-seed"),
    (dict(first_seed_index=2), "first-seed-index"),
    (dict(m=2, weights=(1.0, 3.0)), "weights-explicit"),
])
def test_other_non_default_extras_are_named_too(change, tag, tmp_path):
    name = default_output_path(SimConfig(**change), tmp_path).name
    plain = default_output_path(SimConfig(**{k: v for k, v in change.items() if k == "m"}),
                                tmp_path).name
    assert name != plain and tag in name and name.startswith(plain[:-3])


def test_every_extra_at_once_keeps_every_part(tmp_path):
    cfg = SimConfig(precision="mixed", sigma=0.1, train_second_layer=False, weights="dirichlet")
    name = default_output_path(cfg, tmp_path).name
    for part in ("_precision-mixed", "_sigma0.1", "_first-layer-only", "_weights-dirichlet"):
        assert part in name, part


def test_a_taken_name_gets_a_numeric_suffix(tmp_path):
    cfg = SimConfig(N=40, D=20)
    first = default_output_path(cfg, tmp_path)
    assert first.parent == tmp_path and not first.exists()
    first.touch()
    second = default_output_path(cfg, tmp_path)
    assert second == tmp_path / f"{first.stem}_1.h5"
    second.touch()
    assert default_output_path(cfg, tmp_path) == tmp_path / f"{first.stem}_2.h5"
    first.unlink()                  # the first free name is taken again
    assert default_output_path(cfg, tmp_path) == first


def test_resolve_output_default_goes_to_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = SimConfig(N=40, D=20)
    output = resolve_output(cfg, None, overwrite=False)
    assert (tmp_path / "data").is_dir()
    assert output.target == Path("data") / default_output_path(cfg, tmp_path / "data").name
    assert output.numbered and not output.overwrite
    assert not output.target.exists()        # nothing is written yet


def test_resolve_output_refusals(tmp_path):
    cfg = SimConfig(N=40, D=20)
    with pytest.raises(ConfigError) as info:
        resolve_output(cfg, tmp_path, overwrite=True)
    assert info.value.parameter == "out" and info.value.value == str(tmp_path)
    missing = tmp_path / "no_such_folder" / "run.h5"
    with pytest.raises(ConfigError) as info:
        resolve_output(cfg, missing, overwrite=True)
    assert info.value.parameter == "out" and "no_such_folder" in str(info.value)
    assert not missing.parent.exists()
    existing = tmp_path / "run.h5"
    existing.write_bytes(b"keep")
    with pytest.raises(fastsgd.OutputExistsError) as info:
        resolve_output(cfg, existing, overwrite=False)
    assert isinstance(info.value, FileExistsError) and info.value.path == existing
    assert str(existing) in str(info.value)
    assert resolve_output(cfg, str(existing), overwrite=True).target == existing
    assert existing.read_bytes() == b"keep"     # resolving never deletes
    new = resolve_output(cfg, tmp_path / "new.h5", overwrite=False)
    assert new.target == tmp_path / "new.h5" and not new.numbered


# --------------------------------------------------------------------------------------------
# 3. RunWriter (§8.2)
# --------------------------------------------------------------------------------------------

def test_writer_allocates_every_dataset_with_its_initial_value(tmp_path):
    cfg = SimConfig(seeds=3, first_seed_index=7, m=2, alpha=1.0, **SMALL)
    steps = record_steps(cfg.steps, cfg.records)
    path = tmp_path / "w.h5"
    writer = RunWriter(path, cfg, steps, 256, "fastsgd simulate …", overwrite=False)
    assert writer.statuses() == ["pending"] * 3
    writer.close()
    shapes = dataset_shapes(cfg, len(steps))
    with h5py.File(path, "r") as fh:
        found = []
        fh.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset)
                      else None)
        scales = sorted(set(dimension_sizes(cfg, len(steps))) - {"t"})
        assert sorted(found) == sorted([*shapes, *scales])
        for name, (shape, dtype) in shapes.items():
            data = fh[name]
            assert data.shape == shape and data.dtype == np.dtype(dtype), name
            assert h5py.h5o.get_info(data.id).ctime == 0, name     # track_times=False
        np.testing.assert_array_equal(fh["seed_index"][...], [7, 8, 9])
        np.testing.assert_array_equal(fh["step"][...], steps)
        np.testing.assert_array_equal(fh["t"][...], steps / cfg.N)
        np.testing.assert_array_equal(fh["n_records"][...], 0)
        np.testing.assert_array_equal(fh["diverged_step"][...], -1)
        assert list(fh["status"][...]) == [b"pending"] * 3
        for name, (shape, dtype) in shapes.items():
            if dtype == "f8" and name not in ("t",):
                assert np.all(np.isnan(fh[name][...])), name
        attrs = dict(fh.attrs)
    assert attrs["creator"] == "fastsgd" and attrs["format_version"] == FORMAT_VERSION == 1
    assert attrs["gen_block"] == 256 and attrs["command_line"] == "fastsgd simulate …"
    assert SimConfig.from_json(attrs["config"]) == cfg
    assert json.loads(attrs["config"])["block_size"] == cfg.D


def test_writer_writes_records_and_statuses_in_place(tmp_path):
    cfg = SimConfig(seeds=2, **SMALL)
    steps = record_steps(cfg.steps, cfg.records)
    path = tmp_path / "w.h5"
    path.write_bytes(b"old")
    with pytest.raises(OSError):
        RunWriter(path, cfg, steps, 256, "", overwrite=False)
    assert path.read_bytes() == b"old"
    writer = RunWriter(path, cfg, steps, 256, "", overwrite=True)
    K, M = cfg.K, cfg.M
    record = {"Q": np.full((K, K), 1.5), "R": np.full((K, M), 2.5), "W": np.eye(K),
              "Sigma": 2 * np.eye(K), "v": np.arange(K, dtype=float), "eg": 0.25,
              "eg_mc": 0.3, "emp_Q": np.ones((K, K)), "emp_R": np.ones((K, M)),
              "emp_T": np.eye(M), "lambda_mean": np.zeros(K), "lambda_skewness": np.zeros(K),
              "lambda_kurtosis": np.zeros(K)}
    writer.write_record(1, 0, record)
    writer.write_record(1, 1, {**record, "eg_mc": 0.2})
    writer.set_status(1, "diverged", 17)
    writer.set_status(0, "running")
    writer.write(0, {"final/v": np.array([3.0, 4.0])})
    assert writer.statuses() == ["running", "diverged"]
    writer.close()
    writer.close()                  # closing twice is harmless
    run = fastsgd.load(path)
    assert run.n_records.tolist() == [0, 2]
    assert run.status == ["running", "diverged"] and run.diverged_step.tolist() == [-1, 17]
    np.testing.assert_array_equal(run.eg_mc[1, :3], [0.3, 0.2, np.nan])
    np.testing.assert_array_equal(run.Q[1, 1], record["Q"])
    np.testing.assert_array_equal(run.empirical["T"][1, 0], np.eye(M))
    assert np.all(np.isnan(run.eg_mc[0]))
    np.testing.assert_array_equal(run.final_v[0], [3.0, 4.0])


# --------------------------------------------------------------------------------------------
# 4. load (§8.2 Reading, §8.3)
# --------------------------------------------------------------------------------------------

def test_load_gives_the_run(small_run):
    run = fastsgd.load(small_run.path)
    assert run.config == small_run.config
    assert run.seed_index.tolist() == [4, 5] and run.status == ["ok", "ok"]
    assert run.Q.shape == (2, len(run.step), 2, 2) and run.R.shape == (2, len(run.step), 2, 3)
    assert set(run.empirical) == {"Q", "R", "T", "lambda_mean", "nu_mean", "lambda_skewness",
                                  "lambda_kurtosis", "nu_skewness", "nu_kurtosis"}
    assert set(run.initial) == {"rhos", "r", "sigma", "omega", "W", "T", "T_tilde", "v", "A"}


def test_initial_state_by_position(small_run):
    for i in range(2):
        state = small_run.initial_state(i)
        for name in ("rhos", "r", "sigma", "omega", "W", "T", "T_tilde", "v", "A"):
            np.testing.assert_array_equal(getattr(state, name), small_run.initial[name][i])
    for bad in (-1, 2, 4):          # positions, not seed indices
        with pytest.raises(IndexError):
            small_run.initial_state(bad)


def damaged_copy(run, folder: Path, name: str, edit) -> Path:
    path = folder / name
    shutil.copyfile(run.path, path)
    with h5py.File(path, "a") as fh:
        edit(fh)
    return path


def test_load_refuses_what_is_not_a_readable_run(small_run, tmp_path):
    text = tmp_path / "text.h5"
    text.write_text("not HDF5\n")
    truncated = tmp_path / "truncated.h5"
    data = small_run.path.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as fh:
        fh["x"] = np.arange(3)

    def drop_q(fh):
        del fh["Q"]

    cases = [
        (tmp_path / "missing.h5", "no such file"),
        (tmp_path, "no such file"),                  # a folder
        (text, "not a readable HDF5 file"),
        (foreign, "not a fastsgd run file"),
        (damaged_copy(small_run, tmp_path, "future.h5",
                      lambda fh: fh.attrs.__setitem__("format_version", 99)),
         "unsupported format_version 99"),
        (damaged_copy(small_run, tmp_path, "creator.h5",
                      lambda fh: fh.attrs.__setitem__("creator", "other")),
         "not a fastsgd run file"),
        (damaged_copy(small_run, tmp_path, "no_q.h5", drop_q), "damaged or truncated"),
        (damaged_copy(small_run, tmp_path, "bad_config.h5",
                      lambda fh: fh.attrs.__setitem__("config", "{")), "damaged or truncated"),
        (damaged_copy(small_run, tmp_path, "bad_field.h5",
                      lambda fh: fh.attrs.__setitem__("config", json.dumps(
                          {**json.loads(fh.attrs["config"]), "lr": 0}))),
         "damaged or truncated"),
        (truncated, ("damaged or truncated", "not a readable HDF5 file")),
    ]
    for path, message in cases:
        with pytest.raises(RunFileError) as info:
            fastsgd.load(path)
        text_ = str(info.value)
        assert str(path) in text_, text_
        options = message if isinstance(message, tuple) else (message,)
        assert any(m in text_ for m in options), text_
        assert "\n" not in text_
    assert issubclass(RunFileError, ValueError) and fastsgd.RunFileError is RunFileError


def test_load_accepts_a_string_path(small_run):
    assert fastsgd.load(str(small_run.path)).path == small_run.path
    assert not math.isnan(float(fastsgd.load(str(small_run.path)).eg_mc[0, 0]))


def test_a_file_made_before_the_field_shapes_loads_with_nan(small_run, tmp_path):
    """The field-shape datasets came after format_version 1 (docs/model.md §8.2): an older file
    without them still loads, and still counts as finished in a sweep."""
    from fastsgd import io
    old = tmp_path / "old.h5"
    shutil.copy(small_run.path, old)
    with h5py.File(old, "a") as fh:
        for name in io.LATER_DATASETS:
            del fh[name]
    run = io.load(old)
    assert np.isnan(run.empirical["lambda_kurtosis"]).all()
    assert run.empirical["nu_skewness"].shape == (2, small_run.config.M)
    np.testing.assert_array_equal(run.eg_mc, small_run.eg_mc)


# --------------------------------------------------------------------------------------------
# 5. Output: exclusive creation, temporary names, flushing (§10.6)
# --------------------------------------------------------------------------------------------

def test_output_is_created_exclusively_even_if_made_a_moment_ago(tmp_path):
    target = tmp_path / "r.h5"
    output = Output(target)
    target.write_bytes(b"another process")          # after the early check, before creation
    with pytest.raises(fastsgd.OutputExistsError):
        output.create()
    assert target.read_bytes() == b"another process"
    output.discard()                                  # it created nothing: removes nothing
    assert target.read_bytes() == b"another process"


def test_a_numbered_output_takes_the_next_free_suffix(tmp_path):
    base = tmp_path / "r.h5"
    base.write_bytes(b"taken")
    (tmp_path / "r_1.h5").write_bytes(b"taken")
    output = Output(base, numbered=True)
    output.create().close()
    assert output.target == output.written == tmp_path / "r_2.h5"
    assert base.read_bytes() == b"taken"


def test_overwrite_writes_a_temporary_file_and_renames_it_over_the_target(tmp_path):
    target = tmp_path / "r.h5"
    target.write_bytes(b"old")
    output = Output(target, overwrite=True)
    with output.create() as fh:
        fh["x"] = 1
    assert output.written.parent == tmp_path and output.written.name.startswith("r.h5.tmp-")
    assert target.read_bytes() == b"old"
    assert output.commit() == target
    with h5py.File(target, "r") as fh:
        assert fh["x"][()] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.h5"]


def test_discard_removes_only_the_file_this_process_created(tmp_path):
    target = tmp_path / "r.h5"
    output = Output(target)
    output.create().close()
    target.unlink()
    target.write_bytes(b"made by another process after ours was removed")
    output.discard()
    assert target.exists()
    mine = Output(tmp_path / "mine.h5")
    mine.create().close()
    mine.discard()
    assert not (tmp_path / "mine.h5").exists()


def test_a_failed_creation_removes_the_name_it_claimed(tmp_path, monkeypatch):
    def failing(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(h5py, "File", failing)
    with pytest.raises(OSError):
        Output(tmp_path / "r.h5").create()
    assert list(tmp_path.iterdir()) == []


def test_records_are_flushed_within_a_second_without_closing(tmp_path):
    """A record written and not followed by anything else is readable by another process within
    FLUSH_SECONDS (plus slack), while the writer stays open."""
    cfg = SimConfig(**SMALL)
    steps = record_steps(cfg.steps, cfg.records)
    path = tmp_path / "w.h5"
    writer = RunWriter(path, cfg, steps, 256, "", overwrite=False)
    reader = ("import sys, time, h5py, numpy as np\n"
              "deadline = time.monotonic() + float(sys.argv[2])\n"
              "while time.monotonic() < deadline:\n"
              "    with h5py.File(sys.argv[1], 'r', locking=False) as fh:\n"
              "        if np.array_equal(fh['final/v'][0], [3.0, 4.0]): sys.exit(0)\n"
              "    time.sleep(0.05)\n"
              "sys.exit(1)\n")
    try:
        writer.write(0, {"final/v": np.array([3.0, 4.0])})
        written = time.monotonic()
        seen = subprocess.run([sys.executable, "-c", reader, str(path), "20"], timeout=60)
        waited = time.monotonic() - written
    finally:
        writer.close()
    assert seen.returncode == 0
    assert waited < FLUSH_SECONDS + 5.0       # the reader's start-up (h5py import) included


def test_records_are_not_flushed_one_by_one(tmp_path, monkeypatch):
    """Flushing is time-based: 200 records in quick succession cost at most a few flushes."""
    cfg = SimConfig(**{**SMALL, "records": 200, "steps": 10 ** 5})
    steps = record_steps(cfg.steps, cfg.records)
    writer = RunWriter(tmp_path / "w.h5", cfg, steps, 256, "", overwrite=False)
    flushes = []
    original = h5py.File.flush
    monkeypatch.setattr(h5py.File, "flush", lambda fh: (flushes.append(1), original(fh)))
    record = {"eg": 0.1, "eg_mc": 0.2}
    for row in range(len(steps)):
        writer.write_record(0, row, record)
    writer.close()
    assert len(flushes) <= 3
    assert fastsgd.load(tmp_path / "w.h5").n_records[0] == len(steps)


def test_an_attribute_unreadable_mid_flush_is_a_run_file_error(small_run, monkeypatch):
    """Read while another process flushes it, a file's attributes can fail to read (HDF5: "len
    not positive after adjustment for EOA"): load says RunFileError, as for a truncated file."""
    def unreadable(self):
        raise OSError("Can't synchronously read data (len not positive after adjustment for EOA)")

    monkeypatch.setattr(h5py.AttributeManager, "items", unreadable)
    with pytest.raises(RunFileError, match="damaged or truncated"):
        fastsgd.load(small_run.path)


def test_records_keep_their_values_when_the_caller_changes_its_arrays(tmp_path):
    """Records are written at the next flush: the writer keeps copies, so a live array the
    caller passes (the weights v) and changes afterwards is recorded as it was."""
    cfg = SimConfig(**{**SMALL, "records": 5})
    steps = record_steps(cfg.steps, cfg.records)
    writer = RunWriter(tmp_path / "w.h5", cfg, steps, 256, "", overwrite=False)
    v = np.zeros(cfg.K)
    for row in range(3):
        v[:] = row + 1.0
        writer.write_record(0, row, {"v": v, "eg": float(row)})
    v[:] = -1.0
    writer.close()
    run = fastsgd.load(tmp_path / "w.h5")
    np.testing.assert_array_equal(run.v[0, :3], [[1.0] * cfg.K, [2.0] * cfg.K, [3.0] * cfg.K])
    np.testing.assert_array_equal(run.eg[0, :3], [0.0, 1.0, 2.0])
    assert run.n_records[0] == 3


def test_a_record_out_of_order_is_refused(tmp_path):
    """Kept records are written as one slice per seed, so a seed's rows must come in order: a
    skipped or repeated row is refused instead of being written in the wrong place."""
    cfg = SimConfig(seeds=2, **SMALL)
    steps = record_steps(cfg.steps, cfg.records)
    writer = RunWriter(tmp_path / "w.h5", cfg, steps, 256, "", overwrite=False)
    writer.write_record(0, 0, {"eg": 0.5})
    for row in (0, 2):
        with pytest.raises(ValueError, match="expected row 1"):
            writer.write_record(0, row, {"eg": 0.4})
    writer.write_record(1, 0, {"eg": 0.3})      # each seed has its own rows
    writer.close()
    run = fastsgd.load(tmp_path / "w.h5")
    assert run.n_records.tolist() == [1, 1] and run.eg[1, 0] == 0.3


def test_a_write_that_fails_in_the_flusher_is_raised_in_the_run(tmp_path, monkeypatch):
    """The background flush writes the kept records; if that fails (a full disk), the next
    record, status or close raises it instead of the run ending as if it had succeeded."""
    cfg = SimConfig(**{**SMALL, "records": 5})
    steps = record_steps(cfg.steps, cfg.records)
    writer = RunWriter(tmp_path / "w.h5", cfg, steps, 256, "", overwrite=False)

    def full(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(RunWriter, "_write_pending", full)
    writer.write_record(0, 0, {"eg": 0.5})
    deadline = time.monotonic() + FLUSH_SECONDS + 5.0
    while writer._failure is None and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(OSError, match="No space"):
        writer.write_record(0, 1, {"eg": 0.4})
    monkeypatch.undo()
    with pytest.raises(OSError, match="No space"):
        writer.close()


# --------------------------------------------------------------------------------------------
# 6. Named dimensions: HDF5 dimension scales, xarray (§8.2)
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def centred_run(tmp_path_factory):
    cfg = SimConfig(N=48, D=24, K=3, M=2, m=2, alpha=1.0, seeds=2, first_seed_index=4,
                    steps=1000, records=15, test_size=60, center_inputs=True)
    return fastsgd.simulate(cfg, out=tmp_path_factory.mktemp("dims") / "run.h5")


def test_every_axis_of_every_dataset_has_its_named_dimension_scale(centred_run):
    dims = dataset_dims(centred_run.config)
    with h5py.File(centred_run.path, "r") as fh:
        assert h5py.h5ds.is_scale(fh["t"].id) and h5py.h5ds.is_scale(fh["seed"].id)
        for name, (names, _) in dims.items():
            data = fh[name]
            assert len(names) == data.ndim, name
            if name == "t":
                continue                          # the coordinate of "t" is itself the scale
            for axis, dim in enumerate(names):
                scales = data.dims[axis]
                assert len(scales) == 1, (name, axis)
                assert scales[0].name == f"/{dim}", (name, axis)
                assert scales[0].shape == (data.shape[axis],), (name, axis)
        np.testing.assert_array_equal(fh["seed"][...], [4, 5])


def _groups(run):
    return sorted({name.split("/")[0] for name in dataset_dims(run.config) if "/" in name})


def test_xarray_opens_a_run_file_with_named_dimensions(centred_run):
    xr = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    dims = dataset_dims(centred_run.config)
    with xr.open_dataset(centred_run.path, engine="h5netcdf") as ds:
        np.testing.assert_array_equal(ds["t"].values, centred_run.t)
        np.testing.assert_array_equal(ds["seed"].values, [4, 5])
        assert {"seed_index", "step"} <= set(ds.coords)
        for name, (names, _) in dims.items():
            if "/" not in name and name not in ("t",):
                assert ds[name].dims == names, name
                values = ds[name].values
                expected = centred_run.array(name)
                if name == "status":
                    values = values.astype(str)
                np.testing.assert_array_equal(values, expected, err_msg=name)
        # a run file is readable by fastsgd while xarray holds it open
        assert fastsgd.load(centred_run.path).n_records.tolist() == [15, 15]
    for group in _groups(centred_run):
        with xr.open_dataset(centred_run.path, engine="h5netcdf", group=group) as ds:
            for name, (names, _) in dims.items():
                if name.startswith(group + "/"):
                    leaf = name.split("/", 1)[1]
                    assert ds[leaf].dims == names, name
                    np.testing.assert_array_equal(ds[leaf].values, centred_run.array(name))


def test_xarray_opens_the_whole_file_as_a_tree_with_inherited_coordinates(centred_run):
    xr = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    with xr.open_datatree(centred_run.path, engine="h5netcdf") as tree:
        for group in _groups(centred_run):
            node = tree[group]
            if "seed" in node.dims:
                np.testing.assert_array_equal(node["seed"].values, [4, 5])
            if "t" in node.dims:
                np.testing.assert_array_equal(node["t"].values, centred_run.t)
        picked = tree["empirical"]["Q"].sel(seed=5).isel(t=-1).values
        np.testing.assert_array_equal(picked, centred_run.empirical["Q"][1, -1])


def test_run_to_xarray_holds_every_dataset_with_its_dimensions(centred_run):
    pytest.importorskip("xarray")
    ds = centred_run.to_xarray()
    dims = dataset_dims(centred_run.config)
    assert ds["eg_mc"].dims == ("seed", "t") and ds["seed"].values.tolist() == [4, 5]
    np.testing.assert_array_equal(ds["step"].values, centred_run.step)
    for name, (names, _) in dims.items():
        if name in ("t", "step", "seed_index"):
            continue
        variable = ds[name.replace("/", "_")]
        assert variable.dims == names, name
        np.testing.assert_array_equal(variable.values, centred_run.array(name), err_msg=name)
    assert ds.attrs["config"] == centred_run.attrs["config"]
    last = ds["eg_mc"].sel(seed=5).isel(t=-1).item()
    assert last == centred_run.eg_mc[1, -1]
