"""The three catalog file kinds, how a file is recognised, and per-partner column mapping.

A partner names its columns as it likes; the registry's ``use_cases.catalog_sync.column_map`` maps
them to ours (``{kind: {partner_col: our_col}}``). Everything after reading a file works on our names only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Mapping


@dataclass(frozen=True)
class FileKind:
    """One kind of catalog file: its suite, its key, the columns it must have and those it compares."""

    name: str
    required: tuple[str, ...]
    compared: tuple[str, ...]  # attributes whose change the diff reports
    price_column: str | None = None  # the column whose relative change is held against the threshold
    date_columns: tuple[str, ...] = ()
    key: str = "sku"

    @property
    def suite(self) -> str:
        """Name of the great-expectations suite (include/expectations/<name>.json)."""
        return self.name


CATALOG = FileKind(
    name="catalog",
    required=("sku", "gtin", "description", "brand", "unit_of_measure", "pack_size"),
    compared=("gtin", "description", "brand", "unit_of_measure", "pack_size"),
)
PRICE_LIST = FileKind(
    name="price_list",
    required=("sku", "price", "currency", "effective_date"),
    compared=("price", "currency", "effective_date"),
    price_column="price",
    date_columns=("effective_date",),
)
PROMOTIONS = FileKind(
    name="promotions",
    required=("sku", "promo_price", "start_date", "end_date"),
    compared=("promo_price", "start_date", "end_date"),
    price_column="promo_price",
    date_columns=("start_date", "end_date"),
)
KINDS: dict[str, FileKind] = {k.name: k for k in (CATALOG, PRICE_LIST, PROMOTIONS)}

SUPPORTED_EXTENSIONS = (".csv", ".xlsx")

# File names start with the kind: catalog_2026-11-24.csv, price_list-week48.xlsx, promotions.csv.
# Common spellings partners use are accepted; anything else is not a catalog file.
_NAME_PATTERNS = (
    (re.compile(r"^(catalog|catalogue|items?)([_\-. ]|$)", re.I), CATALOG),
    (re.compile(r"^(price[_\- ]?list|prices?)([_\-. ]|$)", re.I), PRICE_LIST),
    (re.compile(r"^(promotions?|promos?)([_\-. ]|$)", re.I), PROMOTIONS),
)


class UnknownFileKind(ValueError):
    """The file name says neither catalog, price list nor promotions, or the format is unsupported."""


def kind_of(file_name: str) -> FileKind:
    """The kind of a catalog file, from its name; raises UnknownFileKind with the reason."""
    path = PurePosixPath(file_name)
    if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
        raise UnknownFileKind(f"{path.name}: unsupported format {path.suffix or '(none)'}; expected CSV or XLSX")
    for pattern, kind in _NAME_PATTERNS:
        if pattern.match(path.name):
            return kind
    raise UnknownFileKind(
        f"{path.name}: the name must start with catalog, price_list or promotions"
    )


# Other names for our columns, as registries and partners write them ("unit", "valid_from", ...):
# a column map may target either; everything downstream sees the canonical name.
COLUMN_ALIASES = {
    "unit": "unit_of_measure",
    "uom": "unit_of_measure",
    "pack": "pack_size",
    "ean": "gtin",
    "valid_from": "effective_date",
    "effective_from": "effective_date",
    "start": "start_date",
    "starts_on": "start_date",
    "end": "end_date",
    "ends_on": "end_date",
}


def canonical_column(name: str) -> str:
    """Our name for a (mapped) column: an alias becomes the canonical name, others stay as they are."""
    return COLUMN_ALIASES.get(name.strip().lower(), name)


def _normalise(name: object) -> str:
    return re.sub(r"\s+", " ", str(name)).strip()


def column_renames(columns, kind: FileKind, column_map: Mapping[str, Mapping[str, str]] | None) -> dict[str, str]:
    """``{file column: our column}`` for the columns of a file of ``kind``.

    The partner's map is matched case-insensitively and ignoring surrounding blanks (spreadsheet
    headers drift); a column that is already one of ours keeps its name.
    """
    mapping = {_normalise(k).lower(): v for k, v in ((column_map or {}).get(kind.name) or {}).items()}
    renames: dict[str, str] = {}
    for col in columns:
        key = _normalise(col).lower()
        if key in mapping:
            target = canonical_column(mapping[key])
        elif key in kind.required or key in kind.compared:
            target = key
        elif canonical_column(key) in kind.required:
            target = canonical_column(key)
        else:
            target = _normalise(col)
        if target != col:
            renames[col] = target
    return renames


def map_columns(frame, kind: FileKind, column_map: Mapping[str, Mapping[str, str]] | None):
    """The frame with the partner's column names replaced by ours (a new frame; no copy of the data)."""
    renames = column_renames(frame.columns, kind, column_map)
    return frame.rename(columns=renames) if renames else frame


def missing_columns(columns, kind: FileKind) -> list[str]:
    """Our required columns that a (mapped) file lacks, in the kind's order."""
    present = set(columns)
    return [c for c in kind.required if c not in present]
