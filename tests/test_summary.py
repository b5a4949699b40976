"""A sweep's summary files (fastsgd/summary.py; docs/model.md §8.5): summary.csv read back
validated (every summary the study wrote is accepted; truncated, short, long or unparsable rows
are refused with the line and column), and summary_long.csv, the same numbers in long form,
readable by pandas and equal to the wide file's numbers."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from fastsgd.summary import SummaryError, long_rows, read_summary, write_summary

DATA = Path(__file__).resolve().parent.parent / "docs" / "data"
SUMMARIES = sorted(DATA.glob("*summary.csv"))


def test_the_studys_summaries_are_accepted():
    assert len(SUMMARIES) >= 3
    for path in SUMMARIES:
        rows = read_summary(path)
        assert rows and all("verdict" in row for row in rows), path


@pytest.fixture
def summary(tmp_path):
    path = tmp_path / "summary.csv"
    path.write_text(SUMMARIES[0].read_text())
    return path


def test_a_truncated_summary_is_refused(summary):
    text = summary.read_text()
    summary.write_text(text[: len(text) - 7])              # cut inside the last row
    with pytest.raises(SummaryError, match="truncated"):
        read_summary(summary)
    lines = text.splitlines(keepends=True)
    summary.write_text("".join(lines[:-1]) + ",".join(lines[-1].split(",")[:5]) + "\n")
    with pytest.raises(SummaryError, match=r"line \d+ has 5 fields"):
        read_summary(summary)


def test_an_extra_field_or_an_unparsable_number_is_refused(summary):
    text = summary.read_text()
    lines = text.splitlines(keepends=True)
    summary.write_text("".join(lines[:-1]) + lines[-1].rstrip("\n") + ",extra\n")
    with pytest.raises(SummaryError, match="fields, the header"):
        read_summary(summary)
    header = lines[0].rstrip("\r\n").split(",")
    column = header.index("eg_dev_ode_mean")
    row = next(csv.reader([lines[1]]))
    row[column] = "0.1x"
    with open(summary, "w", newline="") as fh:
        csv.writer(fh).writerows([header, row])
    with pytest.raises(SummaryError, match="column eg_dev_ode_mean: '0.1x' is not a number"):
        read_summary(summary)


def test_an_empty_or_foreign_csv_is_refused(tmp_path):
    path = tmp_path / "summary.csv"
    path.write_text("m,alpha,verdict\n")
    with pytest.raises(SummaryError, match="holds no cell"):
        read_summary(path)
    path.write_text("a,b\n1,2\n")
    with pytest.raises(SummaryError, match="not a fastsgd sweep summary"):
        read_summary(path)


def test_the_long_form_holds_every_number_of_the_wide_one(tmp_path):
    rows = read_summary(DATA / "universality_moments_summary.csv")
    write_summary(rows, tmp_path / "summary.csv")
    assert read_summary(tmp_path / "summary.csv") == rows        # written as read
    pandas = pytest.importorskip("pandas")
    long = pandas.read_csv(tmp_path / "summary_long.csv")
    assert list(long.columns[-3:]) == ["quantity", "statistic", "value"]
    assert set(long["statistic"]) <= {"mean", "sem", "value"}
    count = 0
    for index, row in enumerate(rows):
        for column in ("eg_dev_ode_mean", "eg_dev_ode_sem", "paired_z"):
            quantity, _, statistic = column.rpartition("_")
            if column == "paired_z":
                quantity, statistic = column, "value"
            found = long[(long["cell"] == index) & (long["quantity"] == quantity)
                         & (long["statistic"] == statistic)]["value"]
            expected = float(row[column])
            assert len(found) == 1 and (found.iloc[0] == expected or
                                        math.isnan(expected) and math.isnan(found.iloc[0]))
            count += 1
    assert count == 3 * len(rows)
    # the cell's columns (its config and its verdicts) are kept in every long row
    first = long[long["cell"] == 0].iloc[0]
    assert first["verdict"] == rows[0]["verdict"] and first["m"] == float(rows[0]["m"])


def test_long_rows_split_suffixes_and_skip_empty_numbers():
    rows = [{"m": 2, "alpha": 1.0, "verdict": "matches", "eg_dev_ode_mean": 0.1,
             "eg_dev_ode_sem": "", "z": 0.5, "error": ""}]
    assert long_rows(rows) == [
        {"cell": 0, "m": 2, "alpha": 1.0, "verdict": "matches", "error": "",
         "quantity": "eg_dev_ode", "statistic": "mean", "value": 0.1},
        {"cell": 0, "m": 2, "alpha": 1.0, "verdict": "matches", "error": "",
         "quantity": "z", "statistic": "value", "value": 0.5}]
