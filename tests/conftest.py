"""Shared test set-up: tests/ on the path (naive.py, cases.py), one OpenMP thread, fixtures."""

import errno
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def full_disk_after(monkeypatch):
    """``full_disk_after(n)``: every record written after the n-th fails with ENOSPC, as on a
    full disk (docs/model.md §8.1, exit code 1); returns a function that restores the writer."""
    from fastsgd import io

    original = io.RunWriter.write_record

    def install(n: int):
        calls = {"n": 0}

        def failing(self, i, row, record):
            calls["n"] += 1
            if calls["n"] > n:
                raise OSError(errno.ENOSPC, "No space left on device")
            return original(self, i, row, record)

        monkeypatch.setattr(io.RunWriter, "write_record", failing)
        return lambda: monkeypatch.setattr(io.RunWriter, "write_record", original)

    return install
