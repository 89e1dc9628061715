"""Errors raised while reading a partner file, with a stable machine-readable reason code.

A reason code is part of the contract with the orchestration: it ends up in the check report
attached to the Trading Grid case and in the ledger, so codes are only ever added, never renamed.
"""
from __future__ import annotations

from typing import Any

# Reading (the file cannot be turned into a table at all).
ZERO_BYTES = "zero_bytes"  # 0-byte file: usually an aborted upload
EMPTY = "empty"  # only whitespace / line breaks / a BOM
HEADER_ONLY = "header_only"  # a header line and zero data rows
NOT_UTF8 = "not_utf8"  # bytes that are not valid in the expected encoding (utf-8 unless configured)
LINE_TOO_LONG = "line_too_long"  # a physical line longer than max_line_bytes (e.g. 10 MB, no newline)
WRONG_DELIMITER = "wrong_delimiter"  # header is one column that contains another delimiter
MISSING_COLUMNS = "missing_columns"  # required columns of the suite not in the header
UNEXPECTED_COLUMNS = "unexpected_columns"  # columns the suite does not declare, with allow_extra_columns false
DUPLICATE_COLUMNS = "duplicate_columns"  # the same column name twice in the header
TRUNCATED = "truncated"  # last record cut short, or a quote left open at end of file
FIELD_COUNT_MISMATCH = "field_count_mismatch"  # a record (not the last) with too few / too many fields
MALFORMED_CSV = "malformed_csv"  # broken quoting the csv module rejects (e.g. '"a"b'), or a giant field
NOT_XLSX = "not_xlsx"  # declared XLSX but not a readable workbook
UNREADABLE = "unreadable"  # any other failure while reading (logged with its traceback)
FORMULA_CELLS = "formula_cells"  # cells starting with = + - @ tab CR (CSV/formula injection)

# Validation (the table was read, the content breaks the suite).
EXPECTATIONS_FAILED = "expectations_failed"

READ_REASON_CODES = frozenset(
    {
        ZERO_BYTES,
        EMPTY,
        HEADER_ONLY,
        NOT_UTF8,
        LINE_TOO_LONG,
        WRONG_DELIMITER,
        MISSING_COLUMNS,
        UNEXPECTED_COLUMNS,
        DUPLICATE_COLUMNS,
        TRUNCATED,
        FIELD_COUNT_MISMATCH,
        MALFORMED_CSV,
        NOT_XLSX,
        UNREADABLE,
        FORMULA_CELLS,
    }
)


class UnreadableFile(Exception):
    """The file cannot be read as a table of the expected shape.

    :param reason_code: one of the module constants (stable, for machines).
    :param message: one sentence for people: what is wrong and where (line, column, byte offset).
        Never contains more than a short, escaped excerpt of the file content.
    :param details: JSON-safe extra facts (line number, found header, formula cell locations, ...).
    """

    def __init__(self, reason_code: str, message: str, details: dict[str, Any] | None = None):
        super().__init__(f"{reason_code}: {message}")
        self.reason_code = reason_code
        self.message = message
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        return {"reason_code": self.reason_code, "message": self.message, "details": self.details}


class UnknownSuite(LookupError):
    """No suite JSON with that name in the expectations directory (a configuration error, not bad input)."""


class InvalidSuite(ValueError):
    """A suite JSON does not follow the documented format (docs/checks.md)."""
