"""What an XLSX workbook may hold before openpyxl reads it: the limits of :mod:`include.checks.xlsx_guard`.

Its own module so the guard and the streamed scan (:mod:`include.checks.xlsx_scan`) both import it
without importing each other.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

_MiB = 1 << 20


@dataclass(frozen=True)
class WorkbookLimits:
    """What a workbook may hold (defaults: :data:`DEFAULT_LIMITS`; per type: :func:`limits_for`)."""

    max_file_bytes: int = 256 * _MiB
    max_members: int = 2_000
    max_total_bytes: int = 256 * _MiB  # uncompressed, all members: also bounds the time of the scan
    max_compression_ratio: int = 100  # real sheets inflate 10-15x; a whitespace bomb ~1000x
    ratio_floor_bytes: int = _MiB  # smaller members may compress as well as they like
    max_rows: int = 1_048_576  # Excel's own maximum
    max_columns: int = 256
    max_cells: int = 1 << 24  # last row x widest row: what openpyxl pads and yields
    max_string_chars: int = 32_767  # Excel's limit for a cell; a cell's value and formula get twice that
    max_shared_strings: int = 4_000_000
    max_shared_string_chars: int = 128 * _MiB
    max_tree_part_bytes: int = 32 * _MiB  # parts openpyxl loads whole (workbook, styles, rels...)
    max_tree_elements: int = 500_000  # per part: elements openpyxl keeps in a tree
    max_tree_text_chars: int = 32 * _MiB  # per part: text openpyxl keeps in a tree
    max_record_elements: int = 65_536  # inside one row or shared string
    max_record_chars: int = 16 * _MiB
    max_token_bytes: int = _MiB  # one tag, comment or processing instruction
    max_elements: int = 24_000_000  # in all parts, with comments: bounds the scan's time (~0.5 us each)
    allow_hyperlinks: bool = True  # external relationships of type hyperlink (followed only on a click)


DEFAULT_LIMITS = WorkbookLimits()
#: Per document type (suite name): XLSX is for small files (openpyxl reads tens of thousands of rows a second).
DOCUMENT_TYPE_LIMITS: dict[str, dict[str, Any]] = {
    "invoice": {"max_rows": 200_000},
    "purchase_order": {"max_rows": 200_000},
    "shipping_manifest": {"max_rows": 200_000},
    "compliance_certificate": {"max_rows": 200_000},
}


def limits_for(document_type: str | None) -> WorkbookLimits:
    """The limits for files of ``document_type`` (a suite name); the defaults for any other."""
    overrides = DOCUMENT_TYPE_LIMITS.get(document_type or "")
    return replace(DEFAULT_LIMITS, **overrides) if overrides else DEFAULT_LIMITS


