"""Check a catalog file: the kind's great-expectations suite plus the checks GX cannot express.

The suites are data (include/expectations/catalog.json, price_list.json, promotions.json) and run
through the shared runner (:func:`include.checks.validate_file`, chunked for big files). Three
things are specific to catalog sync and handled here:

- **Partner column names.** A partner's file keeps its own headers. Rather than rewriting a
  multi-gigabyte file, the suite is translated to the partner's names (``column_map`` reversed) and
  written to a per-call directory; the report then names the columns as the partner knows them.
- **Run-time parameters.** ``price_list.json`` says "effective date not in the past beyond a
  tolerance" with a GX suite parameter ``{"$PARAMETER": "min_effective_date"}``; it is set here from
  the run's date (``as_of``) minus the tolerance, because the runner takes no parameters.
- **GTIN check digit.** No GX expectation computes a GS1 check digit; it runs on the pandas side
  over the same chunks and is appended to the same CheckReport as a ``gtin_check_digit`` result
  (``source="catalog"``), so the quarantine and the validation_failure case treat it like any other.

"promo end ≥ start" needs nothing custom: it is GX's ``expect_column_pair_values_a_to_be_greater_than_b``
with ``or_equal``.
"""
from __future__ import annotations

import csv
import json
import tempfile
from datetime import date, timedelta
from pathlib import Path
from typing import Iterator, Mapping

from include.catalog.kinds import FileKind, column_renames, map_columns

DEFAULT_CHUNKSIZE = 250_000
DEFAULT_EFFECTIVE_DATE_TOLERANCE_DAYS = 7
SAMPLE_SIZE = 5


def file_format(file_name: str) -> str:
    return "xlsx" if file_name.lower().endswith(".xlsx") else "csv"


def read_header(path: str | Path, fmt: str, *, delimiter: str = ",", encoding: str = "utf-8") -> list[str]:
    """The header row only (cheap even for a 5M-row file); [] if it cannot be read.

    A file whose header cannot be read fails in the runner with the precise reason; here it just
    means "no renaming".
    """
    try:
        if fmt == "xlsx":
            from openpyxl import load_workbook

            workbook = load_workbook(path, read_only=True, data_only=False)
            try:
                first = next(workbook.worksheets[0].iter_rows(max_row=1, values_only=True), ())
            finally:
                workbook.close()
            return [str(c) for c in first if c is not None]
        with open(path, newline="", encoding="utf-8-sig" if encoding.lower().replace("-", "") == "utf8" else encoding) as fh:
            return next(csv.reader(fh, delimiter=delimiter), [])
    except Exception:  # noqa: BLE001 — unreadable files are the runner's to describe
        return []


def translated_suite(kind: FileKind, header: list[str], column_map: Mapping | None, parameters: Mapping[str, object]) -> dict:
    """The kind's suite as JSON data, with our column names replaced by the file's and parameters set."""
    from include.checks import load_suite

    spec = load_suite(kind.suite)
    data = json.loads(Path(spec.path).read_text(encoding="utf-8"))
    ours_to_file = {ours: theirs for theirs, ours in column_renames(header, kind, column_map).items()}

    def rename(name):
        return ours_to_file.get(name, name)

    for column in data["columns"]:
        if isinstance(column, str):
            continue
        column["name"] = rename(column["name"])
    data["columns"] = [rename(c) if isinstance(c, str) else c for c in data["columns"]]
    for expectation in data.get("expectations", []):
        kwargs = expectation.get("kwargs", {})
        for key in ("column", "column_A", "column_B"):
            if key in kwargs:
                kwargs[key] = rename(kwargs[key])
        if "column_list" in kwargs:
            kwargs["column_list"] = [rename(c) for c in kwargs["column_list"]]
        for key, value in list(kwargs.items()):
            if isinstance(value, dict) and set(value) == {"$PARAMETER"}:
                name = value["$PARAMETER"]
                if name not in parameters:
                    raise ValueError(f"suite {kind.suite}: no value for parameter {name!r}")
                kwargs[key] = parameters[name]
    return data


def suite_parameters(as_of: date, tolerance_days: int) -> dict[str, object]:
    """Values of the suites' ``$PARAMETER`` placeholders for a run on ``as_of``."""
    return {"min_effective_date": (as_of - timedelta(days=tolerance_days)).isoformat()}


def validate_catalog_file(
    path: str | Path,
    kind: FileKind,
    *,
    file_name: str,
    as_of: date,
    column_map: Mapping | None = None,
    effective_date_tolerance_days: int = DEFAULT_EFFECTIVE_DATE_TOLERANCE_DAYS,
    chunksize: int | None = DEFAULT_CHUNKSIZE,
):
    """Check one catalog file; returns an ``include.checks.CheckReport`` (never raises for bad content)."""
    from include.checks import validate_file

    fmt = file_format(file_name)
    header = read_header(path, fmt)
    suite = translated_suite(kind, header, column_map, suite_parameters(as_of, effective_date_tolerance_days))
    with tempfile.TemporaryDirectory(prefix="catalog-suite-") as suites_dir:
        Path(suites_dir, f"{kind.suite}.json").write_text(json.dumps(suite), encoding="utf-8")
        report = validate_file(path, kind.suite, fmt=fmt, chunksize=chunksize, file_name=file_name, suites_dir=suites_dir)
    if report.read_error is None and kind.name == "catalog":
        result = gtin_check_result(iter_mapped_chunks(path, kind, column_map, fmt=fmt, chunksize=chunksize or DEFAULT_CHUNKSIZE))
        report.results.append(result)
        report.passed = report.passed and result.success
    return report


def iter_mapped_chunks(path, kind: FileKind, column_map: Mapping | None, *, fmt: str, chunksize: int = DEFAULT_CHUNKSIZE) -> Iterator:
    """The file's rows in chunks, with our column names (for the extra checks and staging)."""
    from include.checks import iter_table_chunks

    for chunk in iter_table_chunks(path, fmt, chunksize=chunksize, formulas="allow"):
        yield map_columns(chunk, kind, column_map)


def gtin_check_result(chunks):
    """The ``gtin_check_digit`` result over all chunks: counts, a few bad values and their rows."""
    from include.catalog.gtin import invalid_gtin_mask
    from include.checks import ExpectationResult

    total = bad = 0
    samples: list[str] = []
    rows: list[int] = []
    for chunk in chunks:
        if "gtin" not in chunk.columns:
            return ExpectationResult(expectation_type="gtin_check_digit", success=False, column="gtin",
                                     error="no gtin column", source="catalog", meaning=GTIN_MEANING)
        mask = invalid_gtin_mask(chunk["gtin"])
        total += len(chunk)
        count = int(mask.sum())
        if count:
            bad += count
            offending = chunk.loc[mask, "gtin"]
            for value in offending.head(SAMPLE_SIZE * 4).tolist():
                if len(samples) < SAMPLE_SIZE and str(value) not in samples:
                    samples.append(str(value))
            # Index continues across chunks: row i of the data is spreadsheet row i + 2.
            rows.extend(int(i) + 2 for i in offending.index[: max(0, SAMPLE_SIZE - len(rows))])
    return ExpectationResult(
        expectation_type="gtin_check_digit",
        success=bad == 0,
        column="gtin",
        element_count=total,
        unexpected_count=bad,
        unexpected_percent=(100.0 * bad / total) if total else 0.0,
        sample_values=samples,
        sample_rows=rows,
        meaning=GTIN_MEANING,
        source="catalog",
    )


GTIN_MEANING = "the GTIN's last digit is its GS1 check digit: a wrong one means a mistyped number"
