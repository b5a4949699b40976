"""Nothing lost, nothing silent (docs/model.md §7.11, §8.1, §8.2, §10.6): truncated and killed
(SIGKILL) files, a signal during a long setup, divergence of one seed among several, a full disk
mid-run and an output that cannot be created, each through the command line or a real process;
concurrent writers of one file; a real small filesystem; no command succeeds on an empty or failed
result, and every error is one line (unwritable folders and figure formats refused up front).
The property test of SimConfig validation is in tests/test_config.py."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

import fastsgd
from fastsgd.cli import main


# --------------------------------------------------------------- files: truncated, killed
@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    cfg = fastsgd.SimConfig(N=64, D=32, steps=2000, records=20, test_size=200, seeds=2)
    return fastsgd.simulate(cfg, out=tmp_path_factory.mktemp("small") / "run.h5")


def test_truncated_file_is_refused_with_one_line(small_run, tmp_path, capsys):
    broken = tmp_path / "truncated.h5"
    data = small_run.path.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(fastsgd.RunFileError, match="truncated.h5"):
        fastsgd.load(broken)
    for command in (["ode", str(broken), "--out", str(tmp_path / "o.h5")],
                    ["compare", str(broken)]):
        code = main(command)
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and "truncated.h5" in err
    assert not (tmp_path / "o.h5").exists()


def spawn(args, **kw):
    return subprocess.Popen([sys.executable, "-m", "fastsgd.cli", "simulate", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            **kw)


def wait_until(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached")


def test_sigkill_leaves_every_flushed_record_readable(tmp_path):
    out = tmp_path / "killed.h5"
    proc = spawn(["-N", 200, "-D", 100, "--steps", "1e9", "--records", 400, "--test-size", 300,
                  "--out", out, "--quiet"])

    def has_records():
        try:
            return fastsgd.load(out).n_records[0] >= 50
        except fastsgd.RunFileError:
            return False

    try:
        wait_until(has_records)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
    run = fastsgd.load(out)
    n = int(run.n_records[0])
    assert n >= 50 and run.status == ["running"]
    assert np.all(np.isfinite(run.eg_mc[0, :n])) and np.all(np.isfinite(run.Q[0, :n]))
    assert np.all(np.isnan(run.eg_mc[0, n + 1:]))


def test_signal_during_a_long_setup_stops_within_seconds(tmp_path):
    out = tmp_path / "setup.h5"
    proc = spawn(["-N", 1000, "-D", 1000, "--test-size", "1e5", "--steps", "1e9", "--out", out,
                  "--quiet"])
    try:
        wait_until(lambda: out.exists() and os.path.getsize(out) > 0)
        time.sleep(1.0)  # inside the test set's construction, which takes several seconds
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        elapsed = time.monotonic() - sent
    finally:
        proc.kill()
    assert proc.returncode == 143 and elapsed < 3.0
    run = fastsgd.load(out)
    assert run.status == ["interrupted"] and run.n_records.tolist() == [0]


# --------------------------------------------------------------- divergence of one seed
def test_one_diverging_seed_stops_alone_and_the_exit_code_says_so(tmp_path, capsys):
    out = tmp_path / "div.h5"
    # lr = 2.5 with a linear student: seed index 1 diverges at step 232, 0 and 2 stay finite
    code = main(["simulate", "-N", 64, "-D", 32, "--f", "sign", "--g", "linear", "--lr", 2.5,
                 "--steps", 3000, "--records", 20, "--seeds", 3, "--test-size", 300,
                 "--out", out, "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    run = fastsgd.load(out)
    diverged = [i for i, s in enumerate(run.status) if s == "diverged"]
    assert diverged and len(diverged) < 3, run.status
    assert code == 3 and len(err) == 1 and "diverged" in err[0]
    for i in range(3):
        n = int(run.n_records[i])
        if i in diverged:
            assert 0 <= run.diverged_step[i] < 3000 and n < len(run.step)
            assert np.all(np.isnan(run.eg_mc[i, n:]))
            assert str(int(run.seed_index[i])) in err[0]
        else:
            assert run.status[i] == "ok" and run.diverged_step[i] == -1
            assert n == len(run.step) and np.all(np.isfinite(run.eg_mc[i]))


# --------------------------------------------------------------- a full disk
def test_full_disk_mid_run_ends_cleanly(tmp_path, full_disk_after, capsys):
    full_disk_after(6)
    out = tmp_path / "full.h5"
    code = main(["simulate", "-N", 64, "-D", 32, "--steps", 5000, "--records", 40,
                 "--test-size", 100, "--out", out, "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "No space left" in err[0] and str(out) in err[0]
    run = fastsgd.load(out)
    assert run.status == ["interrupted"] and int(run.n_records[0]) == 6
    assert np.all(np.isfinite(run.eg_mc[0, :6]))


def test_output_that_cannot_be_created_is_bad_input(tmp_path, monkeypatch, capsys):
    import h5py as h5

    real_file = h5.File

    def no_space(path, mode="r", *args, **kwargs):
        if mode in ("w", "w-"):
            open(path, "wb").close()  # a half-made file that must not stay behind
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_file(path, mode, *args, **kwargs)

    monkeypatch.setattr("fastsgd.io.h5py.File", no_space)
    out = tmp_path / "nospace.h5"
    code = main(["simulate", "-N", 16, "-D", 8, "--steps", 10, "--out", out, "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "No space left" in err[0]
    assert not out.exists()


# --------------------------------------------------------------- concurrent writers (§10.6)
def _finish(proc, timeout=120):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err.strip().splitlines()


def test_two_writers_of_one_explicit_out_one_wins_and_the_other_says_so(tmp_path):
    """Started together without --overwrite: exactly one writes (exit 0), the other exits 2
    with one line; the file holds the winner's run."""
    out = tmp_path / "same.h5"
    procs = [spawn(["-N", 64, "-D", 32, "--steps", 2000, "--test-size", 100,
                    "--records", records, "--out", out]) for records in (10, 12)]
    results = [_finish(p) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    winner = next(i for i, (code, _, _) in enumerate(results) if code == 0)
    loser_err = results[1 - winner][2]
    assert len(loser_err) == 1 and "exists" in loser_err[0], loser_err
    assert fastsgd.load(out).config.records == (10, 12)[winner]


def test_default_names_chosen_at_the_same_moment_are_distinct(tmp_path):
    """Two runs whose default names coincide (records is not in the name) take two suffixes;
    each reports the file that holds its own run."""
    procs = [spawn(["-N", 64, "-D", 32, "--steps", 2000, "--test-size", 100,
                    "--records", records], cwd=tmp_path) for records in (10, 12)]
    results = [_finish(p) for p in procs]
    assert [code for code, _, _ in results] == [0, 0], results
    paths = [tmp_path / out.split("wrote ", 1)[1].strip() for _, out, _ in results]
    assert paths[0] != paths[1] and len(list((tmp_path / "data").iterdir())) == 2
    assert [fastsgd.load(p).config.records for p in paths] == [10, 12]


def _long_run(out, *extra):
    return spawn(["-N", 200, "-D", 100, "--steps", "1e9", "--records", 400, "--test-size", 300,
                  "--out", out, "--quiet", *extra])


def _has_records(path, n=5):
    try:
        return fastsgd.load(path).n_records[0] >= n
    except fastsgd.RunFileError:
        return False


def test_overwrite_keeps_the_old_file_until_the_run_ends_then_renames(tmp_path, small_run):
    """SIGINT ends the run: the temporary file (with its records) replaces the old one; until
    then the old file is intact, and no other file is left behind."""
    out = tmp_path / "old.h5"
    out.write_bytes(small_run.path.read_bytes())
    proc = _long_run(out, "--overwrite")
    try:
        wait_until(lambda: any(_has_records(p) for p in tmp_path.glob("old.h5.tmp-*")))
        assert out.read_bytes() == small_run.path.read_bytes()
        proc.send_signal(signal.SIGINT)
        code, _, err = _finish(proc)
    finally:
        proc.kill()
    assert code == 130 and len(err) == 1
    run = fastsgd.load(out)
    assert run.status == ["interrupted"] and run.config.N == 200 and run.n_records[0] >= 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.h5"]


def test_sigkill_during_overwrite_leaves_the_old_file_and_the_temporary_one(tmp_path,
                                                                              small_run):
    out = tmp_path / "old.h5"
    out.write_bytes(small_run.path.read_bytes())
    proc = _long_run(out, "--overwrite")
    try:
        wait_until(lambda: any(_has_records(p) for p in tmp_path.glob("old.h5.tmp-*")))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
    assert out.read_bytes() == small_run.path.read_bytes()
    (temporary,) = tmp_path.glob("old.h5.tmp-*")
    assert fastsgd.load(temporary).n_records[0] >= 5


def test_a_run_whose_file_another_process_replaced_does_not_report_success(tmp_path):
    """A writes in place; B --overwrite replaces A's file before A ends: A exits 1 with one line
    naming the replacement, B's file stays."""
    out = tmp_path / "contested.h5"
    first = spawn(["-N", 200, "-D", 100, "--steps", "2e6", "--records", 50, "--test-size", 300,
                   "--out", out, "--quiet"])
    try:
        wait_until(lambda: _has_records(out, 2))
        second = spawn(["-N", 32, "-D", 16, "--steps", 100, "--test-size", 50, "--out", out,
                        "--overwrite", "--quiet"])
        assert _finish(second)[0] == 0
        assert first.poll() is None, "the first run ended before the second replaced its file"
        code, _, err = _finish(first)
    finally:
        first.kill()
    assert code == 1 and len(err) == 1 and "replaced by another process" in err[0], err
    assert fastsgd.load(out).config.N == 32


# --------------------------------------------------------------- a small filesystem of its own
@pytest.fixture
def small_filesystem(tmp_path):
    """A 2 MiB tmpfs mounted for this test (root only: skipped elsewhere)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


BIG_RUN = ["-N", 2000, "-D", 1000, "--steps", 2000, "--seeds", 16, "--records", 400,
           "--test-size", 100]


def test_a_run_larger_than_the_disk_is_refused_up_front(small_filesystem):
    out = small_filesystem / "big.h5"
    proc = spawn([*BIG_RUN, "--out", out, "--quiet"])
    code, _, err = _finish(proc)
    assert code == 2 and len(err) == 1 and "MiB free" in err[0], err
    assert list(small_filesystem.iterdir()) == []


def test_hdf5_failing_on_a_full_disk_at_creation_leaves_nothing_and_one_line(small_filesystem):
    """The free-space check bypassed: HDF5's own ENOSPC while reserving the datasets is exit 2,
    one line, no file, and no crash at exit."""
    script = ("import sys, fastsgd.resources as r; r.check_disk = lambda *a: None; "
              "from fastsgd.cli import main; sys.exit(main(sys.argv[1:]))")
    args = ["simulate", *map(str, BIG_RUN), "--out", str(small_filesystem / "big.h5"), "-q"]
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          timeout=120)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == 1 and "No space left" in err[0], done.stderr
    assert list(small_filesystem.iterdir()) == []


def test_a_disk_filled_mid_run_does_not_touch_the_reserved_file(small_filesystem):
    """The run's space is reserved at creation: filling the disk while it runs changes nothing,
    and the run ends ok with every record."""
    out = small_filesystem / "run.h5"
    proc = spawn(["-N", 200, "-D", 100, "--steps", "2e5", "--seeds", 2, "--records", 100,
                  "--test-size", 200, "--out", out, "--quiet"])
    try:
        wait_until(lambda: _has_records(out, 2))
        with open(small_filesystem / "filler", "wb") as fh, pytest.raises(OSError) as full:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        assert full.value.errno == errno.ENOSPC
        code, _, err = _finish(proc)
    finally:
        proc.kill()
    assert code == 0, err
    run = fastsgd.load(out)
    assert run.status == ["ok", "ok"] and np.all(run.n_records == len(run.step))


# --------------------------------------------------------------- no silent success, one line
def _one_error_line(capsys, code, expected_code, *needles):
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code == expected_code and len(err) == 1, (code, captured.err)
    assert "Traceback" not in captured.err
    for needle in needles:
        assert needle in err[0], err[0]
    return captured


@pytest.fixture(scope="module")
def diverged_run(tmp_path_factory):
    """Every seed diverges within 10 steps (lr = 8, linear student and teacher)."""
    cfg = fastsgd.SimConfig(N=64, D=32, steps=2000, test_size=100, seeds=2, lr=8.0, f="linear",
                            g="linear")
    return fastsgd.simulate(cfg, out=tmp_path_factory.mktemp("div") / "div.h5")


@pytest.mark.parametrize("command", ["compare", "plot"])
def test_an_unsupported_figure_format_is_refused_before_any_work(small_run, tmp_path, capsys,
                                                                command):
    figure = tmp_path / "fig.xyz"
    args = ([command, small_run.path, "--plot", figure] if command == "compare"
            else [command, small_run.path, "--out", figure])
    captured = _one_error_line(capsys, main(args), 2, "figure format", "png")
    assert captured.out == "" and not figure.exists()


def test_an_empty_deviation_window_is_refused(small_run, capsys):
    _one_error_line(capsys, main(["compare", small_run.path, "--t-min", 1e9]), 2,
                    "holds none of the run's record times")
    _one_error_line(capsys, main(["compare", small_run.path, "--t-min", 5, "--t-max", 4]), 2,
                    "--t-max must be > --t-min")


def test_compare_with_no_valid_deviation_prints_no_nan_table(diverged_run, capsys):
    captured = _one_error_line(capsys, main(["compare", diverged_run.path]), 1,
                               "no seed", "diverged")
    assert captured.out == ""


def test_ode_failing_for_every_seed_exits_one(diverged_run, tmp_path, capsys):
    out = tmp_path / "ode.h5"
    _one_error_line(capsys, main(["ode", diverged_run.path, "--out", out]), 1,
                    "failed for seed index(es) [0, 1]", "2 of 2")
    with h5py.File(out, "r") as fh:           # the file records where each seed failed
        assert [s.decode() for s in fh["status"][...]] != ["ok", "ok"]


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder this user cannot write: a read-only tmpfs as root, else mode 0555."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:
        made = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                              capture_output=True)
        if made.returncode != 0:
            pytest.skip("root cannot be refused a folder without a read-only mount")
        yield folder
        subprocess.run(["umount", "-l", str(folder)], check=False)
    else:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)


def test_unwritable_output_folders_are_refused_before_any_work(small_run, read_only_folder,
                                                               capsys, monkeypatch):
    for args in (["simulate", "-N", 16, "-D", 8, "--steps", 100, "--out",
                  read_only_folder / "r.h5"],
                 ["ode", small_run.path, "--out", read_only_folder / "o.h5"],
                 ["compare", small_run.path, "--plot", read_only_folder / "f.png"],
                 ["plot", small_run.path, "--out", read_only_folder / "f.png"],
                 ["sweep", "no_grid_needed.toml", "--out", read_only_folder / "sweep"]):
        _one_error_line(capsys, main(args), 2, "not writable")
    monkeypatch.chdir(read_only_folder)        # the default data/ cannot be made here
    _one_error_line(capsys, main(["simulate", "-N", 16, "-D", 8, "--steps", 100]), 2,
                    "data/ cannot be made")


def test_an_unexpected_error_is_one_line_exit_one(small_run, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("an internal\nfailure")

    monkeypatch.setattr("fastsgd.theory.theory_for", broken)
    _one_error_line(capsys, main(["compare", small_run.path]), 1,
                    "RuntimeError: an internal failure", "FASTSGD_TRACEBACK")
    monkeypatch.setenv("FASTSGD_TRACEBACK", "1")
    with pytest.raises(RuntimeError):
        main(["compare", small_run.path])


def test_a_truncated_or_unparsable_sweep_summary_is_refused(tmp_path, capsys):
    from pathlib import Path
    real = (Path(__file__).resolve().parent.parent / "docs" / "data"
            / "universality_moments_summary.csv").read_text()
    folder = tmp_path / "sweep"
    folder.mkdir()
    figure = tmp_path / "map.png"
    (folder / "summary.csv").write_text(real[:-20])
    _one_error_line(capsys, main(["plot", folder, "--out", figure]), 2, "truncated")
    (folder / "summary.csv").write_text(real.replace("0.325714", "0.32x5714", 1))
    _one_error_line(capsys, main(["plot", folder, "--out", figure]), 2, "is not a number")
    header = real.splitlines()[0]
    failed = header + "\n" + ",".join("failed" if c == "verdict" else "1"
                                      for c in header.split(",")) + "\n"
    (folder / "summary.csv").write_text(failed)
    _one_error_line(capsys, main(["plot", folder, "--out", figure]), 1, "every cell")
    assert not figure.exists()
    (folder / "summary.csv").write_text(real)
    assert main(["plot", folder, "--out", figure]) == 0 and figure.exists()
