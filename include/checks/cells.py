"""Cells the reader refuses besides formulas: NUL characters, and codes a spreadsheet turned into numbers.

- ``nul_byte``: no database column can hold a NUL (PostgreSQL refuses it), so a file with one would
  pass the checks and then fail its load on every retry. The CSV pre-scan finds the first NUL byte
  while it reads the blocks anyway (``bytes.find``, no extra pass); :func:`locate_nul` then reads
  records with the csv module only up to it, to name the row and the column.
- ``code_as_number``: a column declared ``exact_digits`` in the suite (GTIN, SSCC, tariff code) holds
  an XLSX number cell, or a text in scientific notation (``4.00638E+12``). A spreadsheet keeps a
  number to 15 significant digits and without leading zeros, and a CSV saved from it writes what
  it shows: the code's digits may be gone while the value still looks like digits
  (``4006380000000`` passes a 13-digit pattern). Refused rather than guessed at.

Messages show cell excerpts through :func:`include.textsafe.safe_text` (a NUL never reaches a message).
"""
from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.checks.errors import CODE_AS_NUMBER, NUL_BYTE, UnreadableFile
from include.textsafe import safe_text

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

NUL = "\x00"
#: A number in scientific notation, as a spreadsheet writes a long number it rounded.
EXPONENT_TEXT = r"\s*[+-]?(?:\d+(?:[.,]\d*)?|[.,]\d+)[eE][+-]?\d+\s*"
_EXPONENT = re.compile(EXPONENT_TEXT)
_EXCERPT = 40


def _quoted(value: Any) -> str:
    """A short excerpt for a message: quoted, controls escaped, cut."""
    return f"'{safe_text(value, _EXCERPT, keep='')}'"
#: Locations an error lists.
MAX_LOCATIONS = 5


# ---------------------------------------------------------------------------------------------- NUL


def nul_error(row: int | None, column: str | None, value: str | None, *, line: int | None = None) -> UnreadableFile:
    """The ``nul_byte`` error for the first NUL, at a (spreadsheet) row and column when known."""
    where = f"row {row}, column {_quoted(column)}" if row is not None else f"line {line}"
    excerpt = f" ({_quoted(value)})" if value is not None else ""
    return UnreadableFile(
        NUL_BYTE,
        f"{where}: a cell holds a NUL character (\\x00){excerpt}, which no database can store; often a sign of "
        "a binary file, or of UTF-16 text without a byte order mark",
        {"row": row, "column": None if column is None else safe_text(column), "line": line},
    )


def locate_nul(path: str | Path, *, delimiter: str, encoding: str, line: int, max_field_chars: int) -> UnreadableFile:
    """The ``nul_byte`` error of a CSV whose first NUL byte is on physical ``line``: its row and column
    from a csv-module pass that stops at that record (blank lines are not rows, as for pandas)."""
    if csv.field_size_limit() < max_field_chars:
        csv.field_size_limit(max_field_chars)
    header: list[str] | None = None
    row = 0
    with open(path, encoding=encoding, errors="replace", newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        try:
            for fields in reader:
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue
                row += 1
                header = header or [f.strip() for f in fields]
                for position, value in enumerate(fields):
                    if NUL in value:
                        column = header[position] if position < len(header) else f"field {position + 1}"
                        return nul_error(row, column, value)
                if reader.line_num >= line:
                    break
        except csv.Error:  # broken quoting before the NUL: the line is all we can say
            pass
    return nul_error(None, None, None, line=line)


def nul_in_cells(values: Sequence[Any]) -> int | None:
    """Position of the first text value holding a NUL, or None (XLSX rows, header lists)."""
    for position, value in enumerate(values):
        if isinstance(value, str) and NUL in value:
            return position
    return None


# ------------------------------------------------------------------------------------- codes as numbers


def code_as_number_error(column: str, row: int, value: Any, *, count: int = 1) -> UnreadableFile:
    """The ``code_as_number`` error for the first offending cell (``value``: the raw cell, number or text)."""
    if isinstance(value, str):
        what = f"{_quoted(value)} is a number in scientific notation"
    else:
        what = f"the cell is a number ({value!r}), not text"
    more = f" ({count} such cells)" if count > 1 else ""
    return UnreadableFile(
        CODE_AS_NUMBER,
        f"column {_quoted(column)}, row {row}: {what}{more}. A spreadsheet keeps numbers to "
        "15 significant digits and drops leading zeros, so the code may have lost digits; send the column "
        "formatted as text, with every digit",
        {"column": safe_text(column), "row": row, "value": safe_text(value, _EXCERPT), "count": count,
         "number_cell": not isinstance(value, str)},
    )


def is_code_as_number(value: Any) -> bool:
    """An XLSX cell value that cannot be trusted as a code: a number cell, or text in scientific notation."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    return isinstance(value, str) and _EXPONENT.fullmatch(value) is not None


def _exponent_mask(series):
    """Boolean array: the cell is a number in scientific notation. Codes are digits, so a column
    without any ``e``/``E`` (one join and two C searches, ~40 ms per million cells) needs no regex
    (~0.8 s per million cells with pandas' Python string storage)."""
    import numpy as np

    values = series.to_numpy()
    present = series.notna().to_numpy()
    try:
        joined = "\n".join(values[present].tolist())
    except TypeError:  # not all text (an object column of another origin): ask the regex
        joined = "e"
    if "e" not in joined and "E" not in joined:
        return np.zeros(len(series), dtype=bool)
    return series.str.fullmatch(EXPONENT_TEXT, na=False).to_numpy(dtype=bool)


def exponent_cells(frame: pd.DataFrame, columns: Sequence[str]) -> tuple[int, list[tuple[int, str, str]]]:
    """Text cells in scientific notation in ``columns`` of a frame of text cells: how many, and the
    first :data:`MAX_LOCATIONS` as ``(spreadsheet row, column, value)`` in file order."""
    total, hits = 0, []
    for column in columns:
        if column not in frame.columns or frame[column].dtype.kind in "biufc":
            continue
        series = frame[column]
        mask = _exponent_mask(series)
        if mask.any():
            total += int(mask.sum())
            hits += [(int(index) + 2, column, value) for index, value in series[mask].head(MAX_LOCATIONS).items()]
    hits.sort()
    return total, hits[:MAX_LOCATIONS]


def refuse_exponent_cells(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    """Raise ``code_as_number`` if a code column of ``frame`` holds scientific notation."""
    count, hits = exponent_cells(frame, columns)
    if count:
        row, column, value = hits[0]
        raise code_as_number_error(column, row, value, count=count)


def exponent_rows(frame: pd.DataFrame, columns: Sequence[str]):
    """Boolean array per row: some code column holds scientific notation (the batch screen's flag)."""
    import numpy as np

    rows = np.zeros(len(frame), dtype=bool)
    for column in columns:
        if column in frame.columns and frame[column].dtype.kind not in "biufc":
            rows |= _exponent_mask(frame[column])
    return rows
