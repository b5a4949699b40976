"""The example scripts run against the summaries the docs quote: examples/data_report.py on
docs/data/universality_{data,digits}_summary.csv prints the numbers docs/universality.md shows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_data_report_reproduces_the_tables_of_the_docs(tmp_path):
    for name in ("data", "digits"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "summary.csv").write_bytes(
            (ROOT / "docs" / "data" / f"universality_{name}_summary.csv").read_bytes())
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "data_report.py"),
                           str(tmp_path / "data"), str(tmp_path / "digits")],
                          capture_output=True, text=True, cwd=ROOT / "examples", check=True)
    rows = [line for line in proc.stdout.splitlines()
            if line.startswith("| 512 ") or line.startswith("| 1024 ")
            or line.startswith("| 104 ")]
    assert len(rows) == 2 * 16 + 2 * 8      # both tables of both studies
    quoted = [row for row in rows if row.count("|") == 13 or not row.startswith("| 104 ")]
    assert len(quoted) == 2 * 16 + 8        # the docs leave out the digits' field shapes
    docs = (ROOT / "docs" / "universality.md").read_text()
    for row in quoted:
        assert row in docs, row
