"""Nothing lost, nothing silent (docs/model.md §7.11, §8.1, §8.2): truncated and killed
(SIGKILL) files, a signal during a long setup, divergence of one seed among several, a full disk
mid-run and an output that cannot be created, each through the command line or a real process.
The property test of SimConfig validation is in tests/test_config.py."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

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
        if mode == "w-":
            open(path, "wb").close()  # a half-made file that must not stay behind
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_file(path, mode, *args, **kwargs)

    monkeypatch.setattr("fastsgd.io.h5py.File", no_space)
    out = tmp_path / "nospace.h5"
    code = main(["simulate", "-N", 16, "-D", 8, "--steps", 10, "--out", out, "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "No space left" in err[0]
    assert not out.exists()
