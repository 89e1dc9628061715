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

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.checks import fast_rules
from include.checks.errors import UNEXPECTED_COLUMNS, UNREADABLE, UnreadableFile
from include.checks.gx_session import gx_context, gx_session, take_setup_seconds  # noqa: F401  (gx_context: public here too)
from include.checks.reading import (
    DEFAULT_MAX_LINE_BYTES,
    find_formula_cells,
    iter_table_chunks,
    read_cells,
    read_column_rows,
    read_table,
)
from include.checks.report import CheckReport, ExpectationResult, _cut
from include.checks.suites import ExpectationSpec, SuiteSpec, build_gx_suite, gx_expectation_class, load_suite
from include.checks.xlsx_guard import limits_for

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)

#: Distinct sample values kept per failed expectation.
DEFAULT_SAMPLE_SIZE = 5
#: How many unexpected values great-expectations lists per expectation (samples are picked from them).
_PARTIAL_UNEXPECTED = 50
#: Expectations whose result over the whole file is the merge of per-chunk results only with help.
_UNIQUE = "expect_column_values_to_be_unique"
_ROW_COUNT = ("expect_table_row_count_to_be_between", "expect_table_row_count_to_equal")
_SHAPE = (
    "expect_column_to_exist",
    "expect_table_columns_to_match_set",
    "expect_table_columns_to_match_ordered_list",
    "expect_table_column_count_to_be_between",
    "expect_table_column_count_to_equal",
)
_NOT_PER_ROW = ("expect_compound_columns_to_be_unique",)  # multicolumn, but uniqueness spans chunks

_MAX_CACHED_SUITES = 64
#: ``engine=`` values: ``auto`` (the vectorised rules when a file spans several chunks, else GX),
#: ``gx`` (great-expectations for every expectation), ``fast`` (the vectorised rules wherever they apply).
ENGINES = ("auto", "gx", "fast")

_gx_suites_lock = threading.Lock()
_gx_suites: dict[str, Any] = {}


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
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    engine: str = "auto",
) -> CheckReport:
    """Read ``path`` and validate it against suite ``suite_name``; never raises for bad file content.

    :param fmt, delimiter, encoding: override the suite's (e.g. from the partner registry); ``fmt``
        defaults to ``xlsx`` when the file name ends in .xlsx, else the suite's.
    :param chunksize: validate in chunks of this many rows (bounded memory for big files). Column map
        expectations are merged by summing; ``expect_column_values_to_be_unique`` is checked across
        chunks on 64-bit hashes of the key column; ``expect_table_row_count_*`` on the total and
        ``expect_table_columns_*``/``expect_column_to_exist`` once on the first chunk; other aggregate
        expectations are rejected with ``ValueError`` in chunked mode.
    :param file_name: the name shown in the report (default: the path's name). Use the partner's
        original name, not a temporary download path.
    :param engine: who evaluates the simple per-row expectations (see :mod:`include.checks.fast_rules`):
        ``auto`` uses the vectorised rules when the file is chunked and fills more than one chunk (GX
        costs ~1 s per chunk plus ~5 s per million rows), great-expectations otherwise; ``gx`` always
        great-expectations (the reference); ``fast`` the vectorised rules wherever they apply. Results
        are identical (tested); expectation types the vectorised rules do not know always run in GX.
    :raises UnknownSuite / InvalidSuite: configuration errors.
    :raises FileNotFoundError: the path does not exist.
    """
    started = time.perf_counter()
    spec = load_suite(suite_name, suites_dir)
    path = Path(path)
    if fmt is None:
        fmt = "xlsx" if path.name.lower().endswith(".xlsx") else spec.format
    options = read_options(spec, delimiter=delimiter, encoding=encoding, max_line_bytes=max_line_bytes)
    report_name = file_name if file_name is not None else path.name
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if chunksize:
        _check_chunkable(spec)
    try:
        if chunksize:
            frames = lambda: _prefetched(iter_table_chunks(path, fmt, chunksize=chunksize, **options))  # noqa: E731
        else:
            frames = lambda: iter([read_table(path, fmt, **options)])  # noqa: E731

        def reread(column: str, rows: list[int]) -> dict[int, str]:
            return read_column_rows(path, fmt, column, rows, delimiter=options["delimiter"], encoding=options["encoding"])

        def reread_cells(columns: list[str], rows: list[int]) -> dict[tuple[int, str], str | None]:
            return read_cells(path, columns, rows, delimiter=options["delimiter"], encoding=options["encoding"])

        return _validate_frames(
            frames, spec, sample_size, report_name, started, chunked=bool(chunksize), reread=reread,
            engine=engine, chunksize=chunksize, reread_cells=reread_cells,
        )
    except UnreadableFile as exc:
        return _read_error_report(spec, report_name, exc.to_dict(), started)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as exc:  # a reader failure we did not foresee: report it, keep the file
        log.exception("unexpected error while reading %s for suite %s", report_name, spec.name)
        error = {"reason_code": UNREADABLE, "message": f"the file could not be read ({type(exc).__name__})", "details": {}}
        return _read_error_report(spec, report_name, error, started)


def read_options(spec: SuiteSpec, *, delimiter: str | None = None, encoding: str | None = None,
                 max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> dict[str, Any]:
    """The reader's keyword arguments for files of ``spec`` (overrides win over the suite's)."""
    return dict(
        delimiter=delimiter or spec.delimiter,
        encoding=encoding or spec.encoding,
        required_columns=spec.required_columns,
        formulas="allow",  # reported as a failed check next to the others, not as a read error
        max_line_bytes=max_line_bytes,
        # parsed by pandas' C reader when a chunk is all finite numbers: no text copy, no second parse
        number_columns=[c.name for c in spec.columns if c.type in _NUMBER_KINDS],
        xlsx_limits=limits_for(spec.name),  # per document type (include/checks/xlsx_guard.py)
        digit_columns=spec.digit_columns,  # exact_digits: a number cell or 4.00638E+12 is code_as_number
    )


def validate_dataframe(
    df: pd.DataFrame,
    suite_name: str | SuiteSpec,
    *,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    file_name: str = "<dataframe>",
    suites_dir: str | Path | None = None,
) -> CheckReport:
    """Validate an in-memory DataFrame of text cells (as returned by ``read_table``) against a suite.

    Missing required columns give a report with a ``missing_columns`` read error.
    """
    started = time.perf_counter()
    spec = suite_name if isinstance(suite_name, SuiteSpec) else load_suite(suite_name, suites_dir)
    missing = [c for c in spec.required_columns if c not in df.columns]
    if missing:
        exc = UnreadableFile("missing_columns", f"missing required column(s) {', '.join(missing)}", {"missing": missing})
        return _read_error_report(spec, file_name, exc.to_dict(), started)
    try:
        return _validate_frames(lambda: iter([df]), spec, sample_size, file_name, started, chunked=False)
    except UnreadableFile as exc:
        return _read_error_report(spec, file_name, exc.to_dict(), started)


def _gx_suite(spec: SuiteSpec, expectations: list[ExpectationSpec]):
    """Built GX suites cached per process, keyed by content (a changed JSON is a new key)."""
    key = json.dumps(
        [spec.name, [[spec.expectations.index(e), e.type, e.kwargs] for e in expectations]], sort_keys=True, default=str
    )
    with _gx_suites_lock:
        suite = _gx_suites.get(key)
    if suite is None:
        suite = build_gx_suite(spec, expectations)
        with _gx_suites_lock:
            if len(_gx_suites) >= _MAX_CACHED_SUITES:  # run-time parameterised suites: keep it bounded
                _gx_suites.clear()
            _gx_suites[key] = suite
    return suite


def _check_chunkable(spec: SuiteSpec) -> None:
    if all(e.type in (_UNIQUE, *_ROW_COUNT, *_SHAPE, *fast_rules.FAST_TYPES) for e in spec.expectations):
        return  # all per-row or merged here: no need to import great-expectations to know
    from great_expectations.expectations.expectation import (
        ColumnMapExpectation,
        ColumnPairMapExpectation,
        MulticolumnMapExpectation,
    )

    for expectation in spec.expectations:
        if expectation.type in (_UNIQUE, *_ROW_COUNT, *_SHAPE):
            continue
        cls = gx_expectation_class(expectation.type)
        per_row = issubclass(cls, (ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation))
        if not per_row or expectation.type in _NOT_PER_ROW:
            raise ValueError(
                f"suite {spec.name!r}: {expectation.type} looks at the whole column and cannot be merged "
                "across chunks; validate without chunksize or drop it from the suite"
            )


def _prefetched(frames: Iterator, depth: int = 1) -> Iterator:
    """Read the next chunk in a thread while the caller checks the current one.

    pandas' C tokenizer releases the GIL, so on two cores reading overlaps the checks; memory grows by
    at most ``depth`` chunks. Reader exceptions (``UnreadableFile``…) are re-raised in the caller;
    when the caller stops early, the thread stops at its next chunk.
    """
    import queue

    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for frame in frames:
                if not put((frame, None)):
                    return
            put((done, None))
        except BaseException as exc:  # handed to the caller, raised there
            put((None, exc))

    thread = threading.Thread(target=read, name="chunk-reader", daemon=True)
    thread.start()
    try:
        while True:
            frame, error = handoff.get()
            if error is not None:
                raise error
            if frame is done:
                return
            yield frame
    finally:
        stop.set()
        thread.join(timeout=5)


def _read_error_report(spec: SuiteSpec, file_name: str, error: dict[str, Any], started: float) -> CheckReport:
    return CheckReport(
        suite=spec.name,
        file_name=file_name,
        passed=False,
        read_error=error,
        chunks=0,
        timings={"total_seconds": round(time.perf_counter() - started, 4)},
    )


@dataclass
class _Merged:
    """One check's results summed over chunks."""

    expectation_type: str
    column: str | None
    kwargs: dict[str, Any]
    meaning: str = ""
    source: str = "gx"
    element_count: int = 0
    nonmissing_count: int = 0
    unexpected_count: int = 0
    counted: bool = False  # a per-row check (has unexpected counts)
    success: bool = True
    samples: list[str] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    observed_value: Any = None
    error: str | None = None
    # Sample candidates in file order while some still need the file's text: str, or a row index
    # whose cells in ``text_columns`` were parsed as numbers by the reader (see resolve_samples).
    pending: list | None = None
    text_columns: tuple[str, ...] = ()

    def add(self, *, element_count, nonmissing_count, unexpected_count, samples, rows, sample_size):
        self.counted = True
        self.element_count += element_count
        self.nonmissing_count += nonmissing_count
        self.unexpected_count += unexpected_count
        if self.pending is None and len(self.samples) < sample_size and any(isinstance(v, int) for v in samples):
            self.pending = list(self.samples)
        if self.pending is not None:
            self.pending.extend(samples)
        else:
            for value in samples:
                if len(self.samples) >= sample_size:
                    break
                if value not in self.samples:
                    self.samples.append(value)
        self.rows.extend(rows[: max(0, sample_size - len(self.rows))])

    def resolve_samples(self, texts: dict[tuple[int, str], str | None], sample_size: int) -> None:
        """Turn pending row indexes into the partner's text and keep the first distinct values, as add() does."""
        self.samples = []
        for value in self.pending or []:
            if len(self.samples) >= sample_size:
                break
            if isinstance(value, int):
                value = _cut(" / ".join("∅" if texts.get((value, c)) is None else texts[(value, c)] for c in self.text_columns))
            if value not in self.samples:
                self.samples.append(value)
        self.pending = None

    def result(self) -> ExpectationResult:
        percent = None
        if self.counted and self.nonmissing_count:
            percent = round(100.0 * self.unexpected_count / self.nonmissing_count, 4)
        elif self.counted:
            percent = 0.0
        return ExpectationResult(
            expectation_type=self.expectation_type,
            success=self.success and self.error is None,
            column=self.column,
            kwargs=self.kwargs,
            element_count=self.element_count if self.counted else None,
            unexpected_count=self.unexpected_count if self.counted else None,
            unexpected_percent=percent,
            sample_values=self.samples,
            sample_rows=self.rows,
            observed_value=self.observed_value,
            error=self.error,
            meaning=self.meaning,
            source=self.source,
        )


def _validate_frames(
    frames: Callable[[], Iterator[pd.DataFrame]],
    spec: SuiteSpec, sample_size: int, file_name: str, started: float, *, chunked: bool, reread=None,
    engine: str = "gx", chunksize: int | None = None, reread_cells=None,
):
    """Run the built-in checks and GX on each frame and merge; reading errors propagate to the caller.

    ``frames`` is called once, inside the timed section, so ``read_seconds`` includes the whole-file checks.
    """
    import pandas as pd

    timings = {"read_seconds": 0.0, "convert_seconds": 0.0, "gx_seconds": 0.0}
    # Decided per expectation once; ``auto`` switches on when the first chunk is full (more may follow).
    fast_planned = {i for i, e in enumerate(spec.expectations) if fast_rules.plan(e, spec)} if engine != "gx" else set()
    use_fast = engine == "fast"

    typed_columns = [c for c in spec.columns if c.type != "string"]
    merged_formulas, merged_parse, merged = _new_checks(spec)
    unique_hashes: dict[int, list] = {}  # chunked only: expectation index -> [(hashes, index), ...]
    formula_cells: list[dict[str, Any]] = []
    rows = 0
    chunks = 0
    columns: list[str] = []

    tick = time.perf_counter()
    for frame in frames():
        timings["read_seconds"] += time.perf_counter() - tick
        chunks += 1
        rows += len(frame)
        if chunks == 1:
            use_fast = use_fast or (engine == "auto" and chunked and bool(chunksize) and len(frame) >= chunksize)
            columns = [str(c) for c in frame.columns]
            declared = {c.name for c in spec.columns}
            extra = [c for c in columns if c not in declared]
            if extra and not spec.allow_extra_columns:
                raise UnreadableFile(
                    UNEXPECTED_COLUMNS,
                    f"column(s) {', '.join(extra)} are not part of {spec.name} files",
                    {"unexpected": extra},
                )

        tick = time.perf_counter()
        # The reader's pre-scan says whether any field (header included) can start with a formula character.
        header = chunks == 1  # the header's cells are checked (and counted) once, with the first chunk
        count, cells = (find_formula_cells(frame, header=header) if frame.attrs.get("formula_candidates", True)
                        else (0, []))
        checked = frame.size + (len(frame.columns) if header else 0)
        merged_formulas.add(
            element_count=checked,
            nonmissing_count=checked,  # percent of all cells: counting empty ones costs a full pass
            unexpected_count=count,
            samples=[c["value"] for c in cells],
            rows=[c["row"] for c in cells],
            sample_size=sample_size,
        )
        formula_cells.extend(cells[: max(0, 20 - len(formula_cells))])
        typed = frame.copy(deep=False)
        for column in typed_columns:
            if column.name not in frame.columns:
                continue
            values, bad = _convert(frame[column.name], column)
            typed[column.name] = values
            bad_values = frame[column.name][bad]
            merged_parse[column.name].add(
                element_count=len(frame),
                nonmissing_count=int(frame[column.name].notna().sum()),
                unexpected_count=int(bad.sum()),
                samples=[_cut(v) for v in bad_values.head(_PARTIAL_UNEXPECTED).drop_duplicates().tolist()],
                rows=[int(i) + 2 for i in bad_values.index[:sample_size]],
                sample_size=sample_size,
            )
        timings["convert_seconds"] += time.perf_counter() - tick

        done = set()
        if use_fast:
            tick = time.perf_counter()
            for i in sorted(fast_planned):
                result = fast_rules.evaluate(spec.expectations[i], typed, _PARTIAL_UNEXPECTED)
                if result is not None:
                    _merge_result(merged[i], result, None, frame, spec.expectations[i], sample_size, chunked)
                    done.add(i)
            timings["fast_rules_seconds"] = timings.get("fast_rules_seconds", 0.0) + time.perf_counter() - tick

        tick = time.perf_counter()
        run = []
        for i, expectation in enumerate(spec.expectations):
            if i in done:
                continue
            if chunked and expectation.type == _UNIQUE:
                column = expectation.kwargs["column"]
                values = typed[column].dropna()
                hashes = _value_hashes(values)
                unique_hashes.setdefault(i, []).append((hashes, values.index.to_numpy(dtype="int64")))
            elif chunked and expectation.type in _ROW_COUNT:
                continue  # decided on the total below
            elif chunked and chunks > 1 and expectation.type in _SHAPE:
                continue  # every chunk has the same columns
            else:
                run.append(expectation)
        if run:
            batch_definition = gx_session().batch_definition
            gx_setup = take_setup_seconds()
            if gx_setup:
                timings["gx_setup_seconds"] = round(gx_setup, 4)
            batch = batch_definition.get_batch(batch_parameters={"dataframe": typed})
            outcome = batch.validate(
                _gx_suite(spec, run),
                result_format={"result_format": "SUMMARY", "partial_unexpected_count": _PARTIAL_UNEXPECTED},
            )
            for gx_result in outcome.results:
                index = gx_result.expectation_config.meta["index"]
                _merge_gx_result(merged[index], gx_result, frame, spec.expectations[index], sample_size, chunked)
        timings["gx_seconds"] += time.perf_counter() - tick
        tick = time.perf_counter()

    pending = [m for m in merged.values() if m.pending is not None]
    if pending:  # samples from columns the reader parsed as numbers: the partner's text, one more pass
        wanted_rows = sorted({v for m in pending for v in m.pending if isinstance(v, int)})
        wanted_columns = list(dict.fromkeys(c for m in pending for c in m.text_columns))
        texts = reread_cells(wanted_columns, wanted_rows) if reread_cells else {}
        for target in pending:
            target.resolve_samples(texts, sample_size)

    if chunked:
        tick = time.perf_counter()
        for i, parts in unique_hashes.items():
            wanted = _merge_unique(merged[i], parts, spec.expectations[i], sample_size, rows)
            if wanted and reread is not None:
                text = reread(spec.expectations[i].kwargs["column"], wanted)
                merged[i].samples = [_cut(text[row]) for row in wanted if row in text]
        for i, expectation in enumerate(spec.expectations):
            if expectation.type in _ROW_COUNT:
                _row_count(merged[i], expectation, rows)
        timings["gx_seconds"] += time.perf_counter() - tick

    if formula_cells:
        merged_formulas.observed_value = {"cells": formula_cells}
        merged_formulas.column = ", ".join(dict.fromkeys(c["column"] for c in formula_cells))
    return _report(spec, file_name, merged_formulas, merged_parse, merged, rows=rows, columns=columns,
                   chunks=chunks, timings=timings, started=started)


def _new_checks(spec: SuiteSpec) -> tuple[_Merged, dict[str, _Merged], dict[int, _Merged]]:
    """The empty accumulators of one file's checks: formula cells, parse per typed column, the suite."""
    merged_formulas = _Merged("no_formula_cells", None, {}, meaning="no cell runs as a spreadsheet formula", source="checks")
    merged_parse = {
        c.name: _Merged(
            f"values_parse_as_{c.type}",
            c.name,
            {"format": c.format} if c.format else {},
            meaning=f"every {c.name} is a {c.type}" + (f" ({c.format})" if c.format else ""),
            source="checks",
        )
        for c in spec.columns
        if c.type != "string"
    }
    merged = {
        i: _Merged(e.type, e.column, dict(e.kwargs), meaning=e.meaning) for i, e in enumerate(spec.expectations)
    }
    return merged_formulas, merged_parse, merged


def _report(spec: SuiteSpec, file_name: str, merged_formulas: _Merged, merged_parse: dict[str, _Merged],
            merged: dict[int, _Merged], *, rows: int, columns: list[str], chunks: int, timings: dict[str, float],
            started: float) -> CheckReport:
    """The :class:`CheckReport` of one file from its accumulated checks."""
    merged_formulas.success = merged_formulas.unexpected_count == 0
    for check in merged_parse.values():
        check.success = check.unexpected_count == 0
    results = [merged_formulas.result(), *(m.result() for m in merged_parse.values()), *(m.result() for m in merged.values())]
    timings = {k: round(v, 4) for k, v in timings.items()}
    timings["total_seconds"] = round(time.perf_counter() - started, 4)
    return CheckReport(
        suite=spec.name,
        file_name=file_name,
        passed=all(r.success for r in results),
        rows=rows,
        columns=columns,
        results=results,
        chunks=chunks,
        timings=timings,
    )


_NUMBER_KINDS = {"number", "integer"}


def _convert(raw, column):
    """Text cells -> typed values for GX, and the mask of non-empty cells that did not convert."""
    import numpy as np
    import pandas as pd

    present = raw.notna().to_numpy()
    if column.type in _NUMBER_KINDS:
        values = pd.to_numeric(raw, errors="coerce").astype("float64")
        numbers = values.to_numpy()
        ok = np.isfinite(numbers)  # "nan", "inf" are not numbers a partner meant
        if column.type == "integer":
            ok &= np.equal(np.mod(numbers, 1, where=ok, out=np.zeros_like(numbers)), 0)
        values = values.where(ok)
    elif column.type == "date":
        values = pd.to_datetime(raw, format=column.format, errors="coerce")
        ok = values.notna().to_numpy()
    else:  # pragma: no cover - guarded by parse_suite
        raise ValueError(column.type)
    return values, pd.Series(present & ~ok, index=raw.index)


def _merge_gx_result(target: _Merged, gx_result, frame, expectation: ExpectationSpec, sample_size: int, chunked: bool):
    info = gx_result.exception_info or {}
    if info.get("raised_exception"):
        target.error = _cut(info.get("exception_message") or "great-expectations raised an exception", 300)
        target.success = False
        return
    _merge_result(target, gx_result.result or {}, bool(gx_result.success), frame, expectation, sample_size, chunked)


def _merge_result(target: _Merged, result: dict, success: bool | None, frame, expectation: ExpectationSpec,
                  sample_size: int, chunked: bool):
    """Merge one frame's ``result`` fields (from GX or :mod:`fast_rules`) into ``target``.

    ``success`` is GX's verdict for a whole-file run; ``None`` (the vectorised rules) decides it
    from the counts and ``mostly``, as in chunked runs.
    """
    if "unexpected_count" in result:
        indexes = list(result.get("partial_unexpected_index_list") or [])
        columns = _expectation_columns(expectation)
        if indexes and set(columns) & set(frame.attrs.get("number_columns", ())):
            # the reader parsed these cells as numbers: show the partner's text, read after the last chunk
            target.text_columns = tuple(columns)
            samples = [int(i) for i in indexes]
        else:
            samples = _raw_samples(frame, expectation, indexes) if indexes else [
                _cut(_plain(v)) for v in result.get("partial_unexpected_list") or []
            ]
        element_count = int(result.get("element_count") or 0)
        target.add(
            element_count=element_count,
            nonmissing_count=element_count - int(result.get("missing_count") or 0),
            unexpected_count=int(result["unexpected_count"] or 0),
            samples=samples,
            rows=[int(i) + 2 for i in indexes if isinstance(i, (int,)) or hasattr(i, "__index__")][:sample_size],
            sample_size=sample_size,
        )
        if chunked or success is None:
            mostly = float(expectation.kwargs.get("mostly", 1.0))
            n = target.nonmissing_count
            target.success = n == 0 or (1 - target.unexpected_count / n) >= mostly - 1e-12
        else:
            target.success = success
    else:
        target.observed_value = _plain(result.get("observed_value"))
        target.success = target.success and bool(success)


def _expectation_columns(expectation: ExpectationSpec) -> list[str]:
    kwargs = expectation.kwargs
    columns = [kwargs["column"]] if "column" in kwargs else [kwargs[k] for k in ("column_A", "column_B") if k in kwargs]
    return columns or list(kwargs.get("column_list", []))


def _raw_samples(frame, expectation: ExpectationSpec, indexes: list) -> list[str]:
    """The partner's own text at the offending rows (not the converted value GX saw)."""
    columns = _expectation_columns(expectation)
    samples = []
    for index in indexes:
        try:
            values = [frame.at[index, c] for c in columns]
        except KeyError:
            continue
        text = " / ".join("∅" if _missing(v) else str(v) for v in values)
        samples.append(_cut(text))
    return samples


def _merge_unique(target: _Merged, parts, expectation: ExpectationSpec, sample_size: int, rows: int) -> list[int]:
    """Cross-chunk uniqueness on 64-bit hashes: every row whose value occurs more than once, like GX.

    Returns the row indexes whose values make the samples (first ``sample_size`` distinct duplicated
    values in file order); the caller reads their text in a second, column-only pass.
    """
    import numpy as np

    hashes = np.concatenate([h for h, _ in parts]) if parts else np.empty(0, dtype="uint64")
    indexes = np.concatenate([i for _, i in parts]) if parts else np.empty(0, dtype="int64")
    # A value is duplicated when its sorted neighbour has the same hash (one sort, no inverse mapping).
    order = np.argsort(hashes)
    ordered = hashes[order]
    same = ordered[1:] == ordered[:-1]
    duplicated_sorted = np.zeros(len(hashes), dtype=bool)
    duplicated_sorted[1:] |= same
    duplicated_sorted[:-1] |= same
    duplicated = np.empty(len(hashes), dtype=bool)
    duplicated[order] = duplicated_sorted
    del order, ordered, same, duplicated_sorted
    order = np.argsort(indexes[duplicated], kind="stable")
    dup_rows = indexes[duplicated][order]
    dup_hashes = hashes[duplicated][order]
    target.counted = True
    target.element_count = rows
    target.nonmissing_count = int(len(hashes))
    target.unexpected_count = int(duplicated.sum())
    target.rows = [int(i) + 2 for i in dup_rows[:sample_size]]
    mostly = float(expectation.kwargs.get("mostly", 1.0))
    n = target.nonmissing_count
    target.success = n == 0 or (1 - target.unexpected_count / n) >= mostly - 1e-12
    wanted, seen = [], set()
    for row, value_hash in zip(dup_rows.tolist(), dup_hashes.tolist()):
        if len(seen) >= sample_size:
            break
        if value_hash not in seen:
            seen.add(value_hash)
            wanted.append(row)
    return wanted


def _value_hashes(values):
    """64-bit hashes of a column's non-missing values (equal values, equal hashes) for cross-chunk uniqueness."""
    import pandas as pd

    import numpy as np

    if values.dtype != object and pd.api.types.is_string_dtype(values.dtype):
        # Text keys: Python's own 64-bit string hash (SipHash, C speed, half the time of
        # pandas.util.hash_array). It differs between processes, but every hash of one file is made
        # and compared in this process.
        return np.fromiter(map(hash, values.to_numpy(dtype=object)), dtype=np.int64, count=len(values)).view(np.uint64)
    return pd.util.hash_pandas_object(values, index=False).to_numpy()


def _row_count(target: _Merged, expectation: ExpectationSpec, rows: int) -> None:
    kwargs = expectation.kwargs
    if expectation.type == "expect_table_row_count_to_equal":
        ok = rows == kwargs["value"]
    else:
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        ok = (low is None or rows >= low) and (high is None or rows <= high)
    target.observed_value = rows
    target.success = bool(ok)


def _missing(value) -> bool:
    try:
        return value is None or value != value  # NaN / NaT
    except Exception:  # pragma: no cover - pd.NA comparisons
        return True


def _plain(value):
    """A GX value as plain JSON data (timestamps as ISO dates, numpy scalars as Python)."""
    if value is None:
        return None
    if hasattr(value, "isoformat"):
        text = value.isoformat()
        return text[:10] if text.endswith("T00:00:00") else text
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value if isinstance(value, (str, int, float, bool)) else str(value)
