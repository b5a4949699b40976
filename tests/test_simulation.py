"""The simulation driver (fastsgd/simulation.py; docs/model.md §3.3 Threads, §8.1, §8.3 simulate).

Through the Python API, in-process: argument checks before anything is written (the config's
type, threads, an existing output: OutputExistsError), seeds in parallel threads writing one
file, a failed write mid-run (WriteError, every unfinished seed "interrupted") and SIGINT /
SIGTERM (KeyboardInterrupt / Terminated re-raised after the file is finished, the previous
SIGTERM handler restored). Real processes and the exit codes are in tests/test_signals.py and
tests/test_robustness.py.
"""

from __future__ import annotations

import errno
import os
import signal

import numpy as np
import pytest

import fastsgd
from fastsgd import io, simulation
from fastsgd.config import ConfigError, SimConfig

TINY = dict(N=32, D=16, steps=300, records=5, test_size=50)


def test_only_a_simconfig_is_simulated(tmp_path):
    with pytest.raises(TypeError, match="SimConfig"):
        fastsgd.simulate(dict(TINY), out=tmp_path / "run.h5")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("threads", [0, -1, 1.5, "x"])
def test_bad_threads_are_refused_before_anything_is_written(threads, tmp_path):
    with pytest.raises(ConfigError) as info:
        fastsgd.simulate(SimConfig(**TINY), out=tmp_path / "run.h5", threads=threads)
    assert info.value.parameter == "threads"
    assert list(tmp_path.iterdir()) == []


def test_an_existing_output_is_kept_unless_overwrite(tmp_path):
    out = tmp_path / "run.h5"
    out.write_bytes(b"precious")
    with pytest.raises(fastsgd.OutputExistsError) as info:
        fastsgd.simulate(SimConfig(**TINY), out=out)
    assert isinstance(info.value, FileExistsError) and info.value.path == out
    assert out.read_bytes() == b"precious"
    run = fastsgd.simulate(SimConfig(**TINY), out=out, overwrite=True)
    assert run.status == ["ok"] and run.path == out


def test_the_run_is_returned_loaded_and_threads_beyond_seeds_are_harmless(tmp_path):
    cfg = SimConfig(seeds=3, **TINY)
    run = fastsgd.simulate(cfg, out=tmp_path / "run.h5", threads=8, command_line="x y")
    assert isinstance(run, fastsgd.Run) and run.config == cfg
    assert run.status == ["ok"] * 3 and run.attrs["command_line"] == "x y"
    one = fastsgd.simulate(cfg, out=tmp_path / "one.h5", threads=1)
    np.testing.assert_array_equal(run.eg_mc, one.eg_mc)


def test_a_failed_write_mid_run_marks_every_unfinished_seed_interrupted(tmp_path,
                                                                         full_disk_after):
    """§8.1 exit code 1 (here: WriteError, an OSError): records flushed before stay valid; the
    seed that failed and the seeds that never started are "interrupted"."""
    restore = full_disk_after(4)
    out = tmp_path / "full.h5"
    with pytest.raises(fastsgd.WriteError) as info:
        fastsgd.simulate(SimConfig(seeds=3, **{**TINY, "steps": 5000, "records": 30}), out=out,
                         threads=1)
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    assert str(out) in str(info.value)
    restore()
    run = fastsgd.load(out)
    assert run.status == ["interrupted"] * 3
    assert run.n_records.tolist() == [4, 0, 0]
    assert np.all(np.isfinite(run.eg_mc[0, :4])) and np.all(np.isnan(run.eg_mc[0, 4:]))


@pytest.mark.parametrize("signum, exception", [(signal.SIGINT, KeyboardInterrupt),
                                               (signal.SIGTERM, fastsgd.Terminated)])
def test_a_signal_finishes_the_file_and_is_re_raised(signum, exception, tmp_path, monkeypatch):
    """§3.3, §8.3: the signal reaches the main thread; the seeds stop at their next block, every
    unfinished seed is "interrupted", the file holds every record so far, and the exception is
    re-raised with the previous SIGTERM handler back in place."""
    original = io.RunWriter.write_record
    sent = []

    def signalling(self, i, row, record):
        original(self, i, row, record)
        if i == 0 and row == 3 and not sent:
            sent.append(row)
            os.kill(os.getpid(), signum)    # from a seed thread, as a terminal would

    monkeypatch.setattr(io.RunWriter, "write_record", signalling)
    # a shell's background job inherits SIGINT as ignored, and Python then honours that
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "signal.h5"
    # long enough that the seeds are still running when the signal comes, short enough that
    # a lost signal fails the test (no exception) instead of hanging it
    cfg = SimConfig(seeds=3, **{**TINY, "steps": 3 * 10 ** 6, "records": 400})
    try:
        with pytest.raises(exception):
            fastsgd.simulate(cfg, out=out, threads=2)
    finally:
        signal.signal(signal.SIGINT, previous_int)
    assert signal.getsignal(signal.SIGTERM) is before
    monkeypatch.setattr(io.RunWriter, "write_record", original)
    run = fastsgd.load(out)
    assert run.status == ["interrupted"] * 3
    assert run.n_records[0] >= 4 and run.n_records[2] == 0      # seed 2 never started
    for i in range(3):
        n = int(run.n_records[i])
        assert np.all(np.isfinite(run.eg_mc[i, :n])) and np.all(np.isnan(run.eg_mc[i, n:]))


def test_sigterm_handler_is_installed_only_during_the_run(tmp_path, monkeypatch):
    seen = []

    class Probe(simulation.SeedRunner):
        def run(self):
            seen.append(signal.getsignal(signal.SIGTERM))
            return super().run()

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(simulation, "SeedRunner", Probe)
    fastsgd.simulate(SimConfig(**TINY), out=tmp_path / "run.h5")
    assert seen == [simulation._raise_terminated]
    assert signal.getsignal(signal.SIGTERM) is before
