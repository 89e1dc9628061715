"""Read a partner file (CSV or XLSX) into a pandas DataFrame of text cells, or fail with a clear reason.

pandas and openpyxl are imported inside the functions: importing ``include.checks`` stays cheap.

What a successful read guarantees (and what each failure is called, see :mod:`include.checks.errors`):

- CSV is decoded strictly (utf-8 by default, a UTF-8 BOM is accepted and stripped). Invalid bytes are
  ``not_utf8`` with the line and byte offset; there is no silent fallback. A partner whose files are
  in another encoding gets it configured explicitly (``encoding="cp1252"``).
- A cheap binary pre-scan runs first, in 1 MiB blocks (bounded memory): ``zero_bytes``, ``empty``,
  ``not_utf8`` and ``line_too_long`` (no line break within ``max_line_bytes``) fail before pandas
  reads anything, so a 10 MB single line fails in milliseconds.
- The header must contain the required columns (``missing_columns``); a header that is one column
  containing ``;``, ``\\t`` or ``|`` when ``,`` was expected is ``wrong_delimiter``.
- Every record has exactly as many fields as the header (checked with the csv module, because
  pandas silently pads short rows): the last record short or an unterminated quote is ``truncated``,
  any other record is ``field_count_mismatch``.
- At least one data row (``header_only``).
- Cells are text (``str``); empty cells are missing (NaN). Nothing is converted to numbers here:
  conversion and its failures belong to the suite (see runner).
- Formula cells (CSV injection): a cell whose first character is ``= + - @``, tab or CR is a
  formula cell **unless the whole cell is a plain number** (``-5.00``, ``+3``, ``-1e3``), because a
  spreadsheet shows a number for those and executes nothing. With ``formulas="reject"`` (default)
  they raise ``formula_cells`` with their locations; ``formulas="allow"`` returns them (the runner
  does that and reports them as the failed ``no_formula_cells`` check, next to the other results).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: A physical line longer than this fails as ``line_too_long`` (1 MiB: far above any real record).
DEFAULT_MAX_LINE_BYTES = 1 << 20
#: Characters that make a spreadsheet treat a cell as a formula (OWASP CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
#: How many formula cell locations an error / result lists.
MAX_FORMULA_LOCATIONS = 20


def read_table(
    path: str | Path,
    fmt: str = "csv",
    *,
    delimiter: str = ",",
    encoding: str = "utf-8",
    required_columns: Sequence[str] | None = None,
    formulas: str = "reject",
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    sheet: str | None = None,
) -> pd.DataFrame:
    """Read the whole file as a DataFrame of text cells (see the module docstring for the rules).

    :param fmt: ``"csv"`` or ``"xlsx"`` (first sheet unless ``sheet`` is given; formulas are read as
        their formula text, not cached values, so they are caught).
    :param required_columns: columns that must be in the header; extra columns are kept.
    :param formulas: ``"reject"`` raises ``formula_cells``; ``"allow"`` returns the cells as they are.
    :raises UnreadableFile: with a reason code from :mod:`include.checks.errors`.
    :raises FileNotFoundError: the path does not exist (a caller bug, not bad input).
    """
    raise NotImplementedError


def iter_table_chunks(
    path: str | Path,
    fmt: str = "csv",
    *,
    chunksize: int,
    delimiter: str = ",",
    encoding: str = "utf-8",
    required_columns: Sequence[str] | None = None,
    formulas: str = "reject",
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    sheet: str | None = None,
) -> Iterator[pd.DataFrame]:
    """Like :func:`read_table` but yields DataFrames of at most ``chunksize`` rows (bounded memory).

    The index continues across chunks (row ``i`` of the file has index ``i`` in whichever chunk), so
    locations stay file-wide. All whole-file checks (pre-scan, header, field counts) run before the
    first chunk is yielded, so a bad file fails before any chunk is processed.
    """
    raise NotImplementedError


def find_formula_cells(df: pd.DataFrame, *, limit: int = MAX_FORMULA_LOCATIONS) -> tuple[int, list[dict[str, Any]]]:
    """Count formula cells in ``df`` and list the first ``limit`` as ``{"row", "column", "value"}``.

    ``row`` is the spreadsheet row number (header = 1, so index ``i`` is row ``i + 2``), ``value`` a
    short excerpt. Plain numbers with a sign are not formula cells.
    """
    raise NotImplementedError
