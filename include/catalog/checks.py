"""Check a catalog file: the kind's great-expectations suite plus the checks GX cannot express.

The suites are data (include/expectations/catalog.json, price_list.json, promotions.json) and run
through the shared runner (:func:`include.checks.validate_file`, chunked for big files). Three
things are specific to catalog sync and handled here:

- **Partner column names.** A partner's file keeps its own headers. Rather than rewriting a
  multi-gigabyte file, the suite is translated to the partner's names (``column_map`` reversed) and
  written to a per-call directory; the report then names the columns as the partner knows them.
- **Checks GX cannot express** run on the pandas side and are appended to the same CheckReport
  (``source="catalog"``), so the quarantine and the validation_failure case treat them like any
  other failed expectation:

  - ``gtin_check_digit`` (catalog): no GX expectation computes a GS1 check digit;
  - ``effective_date_within_tolerance`` (price list): "not in the past beyond a tolerance" depends
    on the run's date. A GX ``expect_column_values_to_be_between`` needs a datetime ``min_value``,
    which a JSON suite cannot carry (a string makes it fail on every row), and on a datetime column
    it converts value by value (24 s per million rows measured here).

  They read only the columns they need, after the runner has accepted the file's structure, so a
  plain ``pandas.read_csv(usecols=..., chunksize=...)`` is safe and cheap.

"promo end ≥ start" needs nothing custom: it is GX's ``expect_column_pair_values_a_to_be_greater_than_b``
with ``or_equal``.
"""
from __future__ import annotations

import csv
import json
import tempfile
import time
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

            from include.checks.xlsx_guard import inspect_workbook

            inspect_workbook(path)  # bounded before openpyxl opens it; a refusal is the runner's to describe
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


def translated_suite(kind: FileKind, header: list[str], column_map: Mapping | None) -> dict:
    """The kind's suite as JSON data, with our column names replaced by the file's."""
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
    return data


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
    suite = translated_suite(kind, header, column_map)
    with tempfile.TemporaryDirectory(prefix="catalog-suite-") as suites_dir:
        Path(suites_dir, f"{kind.suite}.json").write_text(json.dumps(suite), encoding="utf-8")
        report = validate_file(path, kind.suite, fmt=fmt, chunksize=chunksize, file_name=file_name, suites_dir=suites_dir)
    if report.read_error is None and kind.name in EXTRA_CHECKS:
        started = time.perf_counter()
        checks = [factory(as_of=as_of, tolerance_days=effective_date_tolerance_days) for factory in EXTRA_CHECKS[kind.name]]
        needed = sorted({c.column for c in checks})
        for chunk in column_chunks(path, fmt, kind, column_map, header, needed, chunksize or DEFAULT_CHUNKSIZE):
            for check in checks:
                check.add(chunk)
        shown = {ours: theirs for theirs, ours in column_renames(header, kind, column_map).items()}
        for check in checks:
            result = check.result()
            # Name the column as the partner's file does, like the suite's results.
            result.column = shown.get(check.column, check.column)
            result.kwargs["column"] = result.column
            report.results.append(result)
            report.passed = report.passed and result.success
        report.timings["catalog_checks_seconds"] = round(time.perf_counter() - started, 4)
    return report


def column_chunks(path, fmt: str, kind: FileKind, column_map: Mapping | None, header: list[str], ours: list[str], chunksize: int):
    """Chunks of just the columns ``ours`` (our names), as text; the file's structure is already checked."""
    import pandas as pd

    renames = column_renames(header, kind, column_map)
    theirs = [next((f for f, o in renames.items() if o == c), c) for c in ours]
    if fmt == "xlsx":
        for chunk in iter_mapped_chunks(path, kind, column_map, fmt=fmt, chunksize=chunksize):
            yield chunk[[c for c in ours if c in chunk.columns]]
        return
    reader = pd.read_csv(path, usecols=lambda c: c in theirs, dtype=str, chunksize=chunksize, encoding="utf-8-sig",
                         keep_default_na=False, na_values=[""])
    for chunk in reader:
        yield chunk.rename(columns=dict(zip(theirs, ours)))


def iter_mapped_chunks(path, kind: FileKind, column_map: Mapping | None, *, fmt: str, chunksize: int = DEFAULT_CHUNKSIZE) -> Iterator:
    """The file's rows in chunks, with our column names (for staging)."""
    from include.checks import iter_table_chunks

    for chunk in iter_table_chunks(path, fmt, chunksize=chunksize, formulas="allow"):
        yield map_columns(chunk, kind, column_map)


class _ChunkCheck:
    """A pandas-side check merged over chunks into one ExpectationResult (like the runner does)."""

    name = ""
    column = ""
    meaning = ""

    def __init__(self, **_: object) -> None:
        self.total = 0
        self.bad = 0
        self.samples: list[str] = []
        self.rows: list[int] = []
        self.error: str | None = None

    def bad_mask(self, series):  # pragma: no cover - abstract
        raise NotImplementedError

    def add(self, chunk) -> None:
        if self.column not in chunk.columns:
            self.error = f"no {self.column} column"
            return
        series = chunk[self.column]
        mask = self.bad_mask(series)
        self.total += len(chunk)
        count = int(mask.sum())
        if not count:
            return
        self.bad += count
        offending = series[mask]
        for value in offending.head(SAMPLE_SIZE * 4).tolist():
            if len(self.samples) < SAMPLE_SIZE and str(value) not in self.samples:
                self.samples.append(str(value))
        # The index runs on across chunks: data row i is spreadsheet row i + 2 (header is row 1).
        self.rows.extend(int(i) + 2 for i in offending.index[: max(0, SAMPLE_SIZE - len(self.rows))])

    def kwargs(self) -> dict:
        return {"column": self.column}

    def result(self):
        from include.checks import ExpectationResult

        return ExpectationResult(
            expectation_type=self.name, success=self.error is None and self.bad == 0, column=self.column,
            kwargs=self.kwargs(), element_count=self.total, unexpected_count=self.bad,
            unexpected_percent=(100.0 * self.bad / self.total) if self.total else 0.0,
            sample_values=self.samples, sample_rows=self.rows, error=self.error, meaning=self.meaning, source="catalog",
        )


class GtinCheckDigit(_ChunkCheck):
    name = "gtin_check_digit"
    column = "gtin"
    meaning = "the GTIN's last digit is its GS1 check digit: a wrong one means a mistyped number"

    def bad_mask(self, series):
        from include.catalog.gtin import invalid_gtin_mask

        return invalid_gtin_mask(series)


class EffectiveDateWithinTolerance(_ChunkCheck):
    name = "effective_date_within_tolerance"
    column = "effective_date"

    def __init__(self, *, as_of: date, tolerance_days: int, **kwargs: object) -> None:
        super().__init__()
        self.min_date = as_of - timedelta(days=tolerance_days)
        self.tolerance_days = tolerance_days
        self.meaning = (f"a price takes effect no earlier than {tolerance_days} days before the run "
                        f"({self.min_date.isoformat()}): prices are not changed retroactively")

    def kwargs(self) -> dict:
        return {"column": self.column, "min_value": self.min_date.isoformat(), "tolerance_days": self.tolerance_days}

    def bad_mask(self, series):
        import pandas as pd

        # Unparseable dates are the runner's values_parse_as_date failures: not counted twice.
        parsed = pd.to_datetime(series, format="%Y-%m-%d", errors="coerce")
        return (parsed < pd.Timestamp(self.min_date)).fillna(False)


EXTRA_CHECKS = {"catalog": [GtinCheckDigit], "price_list": [EffectiveDateWithinTolerance]}
