"""SIGINT and SIGTERM on a real `fastsgd simulate` process (docs/model.md §3.3, §8.1, §7.11): the
run stops within seconds, the file is valid with every record so far, unfinished seeds say
"interrupted", and the exit code is 130 / 143. In-process signals through the API are in
tests/test_simulation.py."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fastsgd


def wait_for_records(path, at_least, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            run = fastsgd.load(path)
            if run.n_records.min() >= at_least:
                return run
        except fastsgd.RunFileError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{path} never reached {at_least} records")


@pytest.mark.parametrize("signum, code, word", [(signal.SIGINT, 130, "SIGINT"),
                                                (signal.SIGTERM, 143, "SIGTERM")])
def test_signal_leaves_a_valid_file(signum, code, word, tmp_path):
    out = tmp_path / "run.h5"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastsgd.cli", "simulate", "-N", "200", "-D", "100",
         "--steps", "1e9", "--records", "400", "--seeds", "2", "--test-size", "500",
         "--out", str(out), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # a shell's background job inherits SIGINT as ignored, and Python then honours that;
        # the child gets the default disposition, as a command typed at a terminal has
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for_records(out, 60)
        sent = time.monotonic()
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
        stopped_after = time.monotonic() - sent
    finally:
        proc.kill()
    assert proc.returncode == code
    assert stopped_after < 5.0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and word in lines[0]
    run = fastsgd.load(out)
    assert run.status == ["interrupted", "interrupted"]
    for i in range(2):
        n = int(run.n_records[i])
        assert n >= 60
        assert np.all(np.isfinite(run.eg_mc[i, :n])) and np.all(np.isnan(run.eg_mc[i, n:]))
        assert np.all(np.isfinite(run.final_w[i]))
