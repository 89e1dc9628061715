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
FORMULA_CELLS = "formula_cells"  # cells starting with = + - @ tab CR (CSV/formula injection), header included
NUL_BYTE = "nul_byte"  # a NUL character in a cell or the header (no database column can hold it)
CODE_AS_NUMBER = "code_as_number"  # a code column (GTIN...) holds a number cell or scientific notation: digits lost
# XLSX refused before openpyxl reads it (include/checks/xlsx_guard.py; limits in docs/checks.md).
XLSX_TOO_LARGE = "xlsx_too_large"  # file size, part count or total uncompressed size over the limit
XLSX_COMPRESSION_RATIO = "xlsx_compression_ratio"  # a part inflates far more than real workbooks (zip bomb)
XLSX_ACTIVE_CONTENT = "xlsx_active_content"  # VBA macros, Excel 4.0 macro sheets, ActiveX, OLE objects
XLSX_EXTERNAL_LINKS = "xlsx_external_links"  # links to other workbooks or external targets (not hyperlinks)
XLSX_XML_DTD = "xlsx_xml_dtd"  # a DTD or entity declaration in a part (billion laughs, external entities)
XLSX_TOO_MANY_ROWS = "xlsx_too_many_rows"  # rows, row numbers or declared dimension over the document type's cap
XLSX_TOO_MANY_COLUMNS = "xlsx_too_many_columns"  # cells in a row, cell references or declared dimension too wide
XLSX_TOO_MANY_CELLS = "xlsx_too_many_cells"  # last row x widest row (what a reader pads) over the cap
XLSX_STRING_TOO_LONG = "xlsx_string_too_long"  # a shared string or cell text longer than a spreadsheet allows
XLSX_SHARED_STRINGS_TOO_LARGE = "xlsx_shared_strings_too_large"  # too many shared strings or characters
XLSX_MARKUP_TOO_LARGE = "xlsx_markup_too_large"  # XML a reader would keep in memory beyond the caps

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
        NUL_BYTE,
        CODE_AS_NUMBER,
        XLSX_TOO_LARGE,
        XLSX_COMPRESSION_RATIO,
        XLSX_ACTIVE_CONTENT,
        XLSX_EXTERNAL_LINKS,
        XLSX_XML_DTD,
        XLSX_TOO_MANY_ROWS,
        XLSX_TOO_MANY_COLUMNS,
        XLSX_TOO_MANY_CELLS,
        XLSX_STRING_TOO_LONG,
        XLSX_SHARED_STRINGS_TOO_LARGE,
        XLSX_MARKUP_TOO_LARGE,
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
