"""Expectation suites stored as JSON data, one per document type, in include/expectations/.

Format (see docs/checks.md)::

    {
      "name": "invoice",
      "description": "one line per invoice",
      "format": "csv",                      # csv | xlsx
      "delimiter": ",",                     # csv only
      "encoding": "utf-8",                  # utf-8 (BOM accepted); another codec only if a partner needs it
      "allow_extra_columns": true,
      "columns": [
        {"name": "invoice_number", "type": "string", "required": true},
        {"name": "invoice_date", "type": "date", "format": "%Y-%m-%d", "required": true},
        {"name": "amount", "type": "number", "required": true},
        {"name": "gtin", "type": "string", "required": false, "exact_digits": true}
      ],
      "expectations": [
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "invoice_number"},
         "meaning": "an invoice number identifies one invoice"}
      ]
    }

``type`` is the snake_case name of a great-expectations 1.x expectation class
(``expect_column_values_to_be_unique`` -> ``ExpectColumnValuesToBeUnique``), ``kwargs`` its arguments.
Column ``type`` (string | number | integer | date) says how the runner converts the text cells
before great-expectations sees them; a cell that does not convert is reported as a failure of the
built-in ``values_parse_as_<type>`` check. ``exact_digits`` marks a string column holding a code
written in digits (GTIN, SSCC, tariff code): the reader refuses the file (``code_as_number``) when
such a cell is an XLSX number cell or a text in scientific notation (``4.00638E+12``), because a
spreadsheet keeps numbers to 15 significant digits without leading zeros. Loading a suite is plain JSON (no great-expectations import);
only :func:`build_gx_suite` imports great-expectations.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from include.checks.errors import InvalidSuite, UnknownSuite
from include.checks.gx_session import gx_context

EXPECTATIONS_DIR = Path(__file__).resolve().parent.parent / "expectations"
COLUMN_TYPES = ("string", "number", "integer", "date")
FORMATS = ("csv", "xlsx")
_SUITE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_EXPECTATION_TYPE = re.compile(r"^expect_[a-z0-9_]+$")


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a document type: its name, how its text converts, whether it must be present."""

    name: str
    type: str = "string"
    required: bool = True
    format: str | None = None  # strftime format for type "date" (default ISO 8601 %Y-%m-%d)
    exact_digits: bool = False  # a code in digits: never a number cell, never scientific notation


@dataclass(frozen=True)
class ExpectationSpec:
    """One expectation: a great-expectations 1.x expectation type (snake_case) and its kwargs."""

    type: str
    kwargs: dict[str, Any]
    meaning: str = ""  # for people: why this rule exists (shown in docs, kept in the report)

    @property
    def column(self) -> str | None:
        """The column the expectation is about, if any (column_A/column_B pairs: ``"A, B"``)."""
        if "column" in self.kwargs:
            return self.kwargs["column"]
        if "column_A" in self.kwargs:
            return f"{self.kwargs['column_A']}, {self.kwargs['column_B']}"
        if "column_list" in self.kwargs:
            return ", ".join(self.kwargs["column_list"])
        return None


@dataclass(frozen=True)
class SuiteSpec:
    """A parsed suite file. Immutable so it can be cached per process."""

    name: str
    columns: tuple[ColumnSpec, ...]
    expectations: tuple[ExpectationSpec, ...]
    format: str = "csv"
    delimiter: str = ","
    encoding: str = "utf-8"
    allow_extra_columns: bool = True
    description: str = ""
    path: str | None = field(default=None, compare=False)

    @property
    def required_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    @property
    def column_types(self) -> dict[str, ColumnSpec]:
        return {c.name: c for c in self.columns}

    @property
    def digit_columns(self) -> list[str]:
        """The ``exact_digits`` columns (codes a spreadsheet must not have turned into numbers)."""
        return [c.name for c in self.columns if c.exact_digits]


def list_suites(directory: str | Path | None = None) -> list[str]:
    """Names of the suites available in ``directory`` (default include/expectations/), sorted."""
    directory = Path(directory) if directory else EXPECTATIONS_DIR
    return sorted(p.stem for p in directory.glob("*.json"))


def load_suite(name: str, directory: str | Path | None = None) -> SuiteSpec:
    """Load and validate ``<directory>/<name>.json``; cached per process (suites are data, read once).

    :raises UnknownSuite: no such file.
    :raises InvalidSuite: the JSON does not follow the documented format.
    """
    return _load_suite_cached(name, str(Path(directory).resolve()) if directory else str(EXPECTATIONS_DIR))


@lru_cache(maxsize=64)
def _load_suite_cached(name: str, directory: str) -> SuiteSpec:
    if not _SUITE_NAME.match(name or ""):
        raise UnknownSuite(f"suite name {name!r} is not a plain lowercase identifier")
    path = Path(directory) / f"{name}.json"
    if not path.is_file():
        raise UnknownSuite(f"no suite {name!r} in {directory} (available: {', '.join(list_suites(directory))})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InvalidSuite(f"{path.name}: not valid JSON: {exc}") from exc
    spec = parse_suite(data, path=str(path))
    if spec.name != name:
        raise InvalidSuite(f"{path.name}: 'name' is {spec.name!r}, expected {name!r} (the file name)")
    return spec


def parse_suite(data: dict[str, Any], path: str | None = None) -> SuiteSpec:
    """Validate a suite document (already parsed JSON) and return a :class:`SuiteSpec`.

    Checks the shape only (names, types, kwargs are dicts, expectation columns are declared);
    whether great-expectations accepts the kwargs is checked by :func:`build_gx_suite`.
    """
    where = path or "suite"
    if not isinstance(data, dict):
        raise InvalidSuite(f"{where}: top level must be an object")
    unknown = set(data) - {
        "name", "description", "format", "delimiter", "encoding", "allow_extra_columns", "columns", "expectations",
    }
    if unknown:
        raise InvalidSuite(f"{where}: unknown keys {sorted(unknown)}")
    name = data.get("name")
    if not isinstance(name, str) or not _SUITE_NAME.match(name):
        raise InvalidSuite(f"{where}: 'name' must be a lowercase identifier")
    fmt = data.get("format", "csv")
    if fmt not in FORMATS:
        raise InvalidSuite(f"{where}: 'format' must be one of {FORMATS}")
    delimiter = data.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise InvalidSuite(f"{where}: 'delimiter' must be one character")
    encoding = data.get("encoding", "utf-8")
    try:
        import codecs

        codecs.lookup(encoding)
    except (LookupError, TypeError) as exc:
        raise InvalidSuite(f"{where}: unknown encoding {encoding!r}") from exc

    columns = []
    for raw in data.get("columns") or []:
        if isinstance(raw, str):
            raw = {"name": raw}
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
            raise InvalidSuite(f"{where}: each column needs a 'name'")
        extra = set(raw) - {"name", "type", "required", "format", "exact_digits"}
        if extra:
            raise InvalidSuite(f"{where}: column {raw['name']!r} has unknown keys {sorted(extra)}")
        ctype = raw.get("type", "string")
        if ctype not in COLUMN_TYPES:
            raise InvalidSuite(f"{where}: column {raw['name']!r} type must be one of {COLUMN_TYPES}")
        exact_digits = raw.get("exact_digits", False)
        if not isinstance(exact_digits, bool) or (exact_digits and ctype != "string"):
            raise InvalidSuite(f"{where}: column {raw['name']!r}: 'exact_digits' is true or false, on a string column")
        columns.append(
            ColumnSpec(
                name=raw["name"],
                type=ctype,
                required=bool(raw.get("required", True)),
                format=raw.get("format") or ("%Y-%m-%d" if ctype == "date" else None),
                exact_digits=exact_digits,
            )
        )
    if not columns:
        raise InvalidSuite(f"{where}: 'columns' must list at least one column")
    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise InvalidSuite(f"{where}: duplicate column names")

    expectations = []
    for i, raw in enumerate(data.get("expectations") or []):
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str) or not _EXPECTATION_TYPE.match(raw["type"]):
            raise InvalidSuite(f"{where}: expectation #{i} needs a 'type' like 'expect_column_values_to_be_unique'")
        kwargs = raw.get("kwargs", {})
        if not isinstance(kwargs, dict):
            raise InvalidSuite(f"{where}: expectation #{i} 'kwargs' must be an object")
        for key in ("column", "column_A", "column_B"):
            if key in kwargs and kwargs[key] not in names:
                raise InvalidSuite(f"{where}: expectation #{i} refers to undeclared column {kwargs[key]!r}")
        for col in kwargs.get("column_list", []):
            if col not in names:
                raise InvalidSuite(f"{where}: expectation #{i} refers to undeclared column {col!r}")
        expectations.append(ExpectationSpec(type=raw["type"], kwargs=dict(kwargs), meaning=str(raw.get("meaning", ""))))

    return SuiteSpec(
        name=name,
        columns=tuple(columns),
        expectations=tuple(expectations),
        format=fmt,
        delimiter=delimiter,
        encoding=encoding,
        allow_extra_columns=bool(data.get("allow_extra_columns", True)),
        description=str(data.get("description", "")),
        path=path,
    )


def build_gx_suite(spec: SuiteSpec, expectations: list[ExpectationSpec] | None = None):
    """Build a ``great_expectations.ExpectationSuite`` from ``spec`` (imports great-expectations).

    Each expectation carries ``meta={"index": i}`` (its position in ``spec.expectations``) so results,
    which great-expectations returns in its own order, map back to the suite entry.

    :param expectations: a subset of ``spec.expectations`` (same objects) to include; default all.
    :raises InvalidSuite: an unknown expectation type or kwargs the expectation class rejects.
    """
    import great_expectations as gx

    gx_context()  # GX suites need an active (here: the cached ephemeral) data context
    suite = gx.ExpectationSuite(name=spec.name)
    wanted = None if expectations is None else {id(e) for e in expectations}
    for index, expectation in enumerate(spec.expectations):
        if wanted is not None and id(expectation) not in wanted:
            continue
        cls = gx_expectation_class(expectation.type)
        try:
            gx_expectation = cls(**expectation.kwargs, meta={"index": index})
        except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
            raise InvalidSuite(f"suite {spec.name!r}: {expectation.type} rejects its kwargs: {exc}") from exc
        suite.add_expectation(gx_expectation)
    return suite


def gx_expectation_class(expectation_type: str):
    """The great-expectations 1.x class for a snake_case expectation type (imports great-expectations)."""
    from great_expectations.exceptions import ExpectationNotFoundError
    from great_expectations.expectations.registry import get_expectation_impl

    try:
        return get_expectation_impl(expectation_type)
    except ExpectationNotFoundError as exc:
        raise InvalidSuite(f"unknown great-expectations expectation type {expectation_type!r}") from exc
