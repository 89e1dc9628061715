"""Validate a partner file against a suite with great-expectations 1.x on pandas.

great-expectations and pandas are imported inside the functions (importing GX costs ~5 s and
~200 MB). The ephemeral GX context, its pandas datasource and the built suites are cached per process,
so only the first validation in a worker pays for them.

Steps of :func:`validate_file`: read (``read_table`` / ``iter_table_chunks`` with ``formulas="allow"``)
-> built-in ``no_formula_cells`` check -> convert typed columns (built-in ``values_parse_as_<type>``
check) -> great-expectations -> :class:`CheckReport`. A file that cannot be read gives a report with
``read_error``; bad input never raises.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from include.checks.report import CheckReport
from include.checks.suites import SuiteSpec

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: Distinct sample values kept per failed expectation.
DEFAULT_SAMPLE_SIZE = 5


def validate_file(
    path: str | Path,
    suite_name: str,
    *,
    fmt: str | None = None,
    delimiter: str | None = None,
    encoding: str | None = None,
    chunksize: int | None = None,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    file_name: str | None = None,
    suites_dir: str | Path | None = None,
) -> CheckReport:
    """Read ``path`` and validate it against suite ``suite_name``; never raises for bad file content.

    :param fmt, delimiter, encoding: override the suite's (e.g. from the partner registry); ``fmt``
        defaults to the suite's, or ``xlsx`` when the file name ends in .xlsx.
    :param chunksize: validate in chunks of this many rows (bounded memory for big files). Column map
        expectations are merged by summing; ``expect_column_values_to_be_unique`` is checked across
        chunks on 64-bit hashes of the key column; ``expect_table_row_count_to_be_between`` and
        ``expect_table_columns_to_match_*``/``expect_column_to_exist`` are checked once on the whole;
        other aggregate expectations are rejected with ``ValueError`` in chunked mode.
    :param file_name: the name shown in the report (default: the path's name). Use the partner's
        original name, not a temporary download path.
    :raises UnknownSuite / InvalidSuite: configuration errors.
    :raises FileNotFoundError: the path does not exist.
    """
    raise NotImplementedError


def validate_dataframe(
    df: pd.DataFrame,
    suite_name: str | SuiteSpec,
    *,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    file_name: str = "<dataframe>",
    suites_dir: str | Path | None = None,
) -> CheckReport:
    """Validate an in-memory DataFrame of text cells (as returned by ``read_table``) against a suite."""
    raise NotImplementedError


def gx_context():
    """The per-process ephemeral GX context with the pandas datasource used by the runner (cached)."""
    raise NotImplementedError
