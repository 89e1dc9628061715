"""File checks: read partner files safely and validate them with great-expectations suites stored as data.

Public API (importing this package does not import pandas or great-expectations)::

    from include.checks import validate_file, read_table, CheckReport, UnreadableFile

    report = validate_file("/tmp/in/invoice.csv", "invoice", file_name="INV 2026-11.csv")
    report.passed, report.reason_code, report.summary_markdown(), report.to_json()

See docs/checks.md for the suite format, reason codes and figures.
"""
from include.checks.errors import (
    EXPECTATIONS_FAILED,
    READ_REASON_CODES,
    InvalidSuite,
    UnknownSuite,
    UnreadableFile,
)
from include.checks.reading import find_formula_cells, iter_table_chunks, read_table
from include.checks.report import CheckReport, ExpectationResult
from include.checks.runner import validate_dataframe, validate_file
from include.checks.suites import SuiteSpec, list_suites, load_suite

__all__ = [
    "CheckReport",
    "EXPECTATIONS_FAILED",
    "ExpectationResult",
    "InvalidSuite",
    "READ_REASON_CODES",
    "SuiteSpec",
    "UnknownSuite",
    "UnreadableFile",
    "find_formula_cells",
    "iter_table_chunks",
    "list_suites",
    "load_suite",
    "read_table",
    "validate_dataframe",
    "validate_file",
]
