"""A sweep's summary files (docs/model.md §8.5): DIR/summary.csv (one row per cell), written and
read back validated, and DIR/summary_long.csv, the same numbers in long (tidy) form.

A summary that is truncated, holds a row with a missing or an extra field, or a value that does
not parse where a number belongs is refused (:class:`SummaryError`) instead of drawn or tabled.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from fastsgd.config import DEFAULTS

#: Columns that hold numbers without a _mean/_sem suffix.
NUMBER_COLUMNS = frozenset({
    "N", "D", "seeds", "n_valid", "paired_z", "z", "p_one_sided",
    "p_ref", "z_matched", "p_matched", "z_moments", "p_moments", "moments_error",
    "nu0_kurtosis", "nu_kurtosis_extreme", "lambda_kurtosis_end", "m", "alpha", "t_max",
    "delta", "test_size_per_N"})
#: Columns that say which cell a row is: the config's fields and GRID.toml's derived keys.
CELL_COLUMNS = frozenset(DEFAULTS) | {"t_max", "delta", "test_size_per_N"}
STATISTICS = ("mean", "sem")


class SummaryError(ValueError):
    """A summary.csv that is not a complete fastsgd sweep summary; the message says where."""


def is_number_column(name: str) -> bool:
    return name in NUMBER_COLUMNS or name.endswith(("_mean", "_sem"))


def write_summary(rows: list[dict], path: Path) -> None:
    """DIR/summary.csv: columns in the order of their first appearance over the rows, floats
    with 6 significant digits, a missing value as an empty field; and DIR/summary_long.csv
    beside it (:func:`long_rows`)."""
    columns = _columns(rows)
    text = [{k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
            for row in rows]
    _write_csv(path, columns, text)
    _write_csv(path.with_name("summary_long.csv"), *_long_table(columns, text))


def _columns(rows: list[dict]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    return columns


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)


def long_rows(rows: list[dict]) -> list[dict]:
    """The summary in long form: per cell and number column, one row with the cell's columns
    (its config values, verdicts and classes), ``cell`` (its row number), ``quantity`` (the
    column without _mean/_sem), ``statistic`` (mean, sem or value) and ``value``; empty numbers
    are left out."""
    return _long_table(_columns(rows), rows)[1]


def _long_table(columns: list[str], rows: list[dict]) -> tuple[list[str], list[dict]]:
    measures = [c for c in columns if is_number_column(c) and c not in CELL_COLUMNS]
    keep = [c for c in columns if c not in measures]
    out = []
    for index, row in enumerate(rows):
        cell = {"cell": index, **{c: row.get(c, "") for c in keep}}
        for column in measures:
            if row.get(column, "") in ("", None):
                continue
            quantity, _, statistic = column.rpartition("_")
            if statistic not in STATISTICS:
                quantity, statistic = column, "value"
            out.append({**cell, "quantity": quantity, "statistic": statistic,
                        "value": row[column]})
    return ["cell", *keep, "quantity", "statistic", "value"], out


def read_summary(path: Path) -> list[dict]:
    """The rows of a summary.csv, each value a string as written; raises SummaryError for a
    file that is empty, truncated (no final newline, a row short of fields), has extra fields,
    lacks the verdict column, or holds a number that does not parse (m and alpha, where they
    are columns, in every row)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SummaryError(f"{path}: cannot be read ({exc})") from None
    if not text.endswith("\n"):
        raise SummaryError(f"{path}: truncated (it does not end with a complete line)")
    reader = csv.DictReader(io.StringIO(text))
    rows = list(reader)
    if "verdict" not in (reader.fieldnames or ()):
        raise SummaryError(f"{path}: not a fastsgd sweep summary (no verdict column)")
    if not rows:
        raise SummaryError(f"{path}: holds no cell")
    for line, row in enumerate(rows, start=2):
        _check_row(path, line, row, len(reader.fieldnames))
    return rows


def _check_row(path: Path, line: int, row: dict, width: int) -> None:
    if None in row or None in row.values():
        found = width + len(row.get(None, [])) - sum(v is None for v in row.values())
        raise SummaryError(f"{path}: line {line} has {found} fields, the header {width}")
    for column, value in row.items():
        required = column in ("m", "alpha")
        if (value or required) and is_number_column(column) and not _parses(value):
            raise SummaryError(f"{path}: line {line}, column {column}: {value!r} is not a "
                               "number")


def _parses(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True
