"""Validate many small files of one suite together; each file gets the report ``validate_file`` gives it.

Why: a great-expectations run costs ~0.6 s whatever the size of the frame, and even the vectorised
rules cost ~4 ms of pandas overhead per file. A poll that brings a thousand small invoices would
spend minutes (GX) or seconds (vectorised rules) on fixed costs alone. :func:`validate_files` reads
each file with the same safe reader, concatenates the frames of one column layout and *screens* them
all in one vectorised pass: the built-in checks (formula cells, values that do not parse as their
declared type), every suite expectation that :mod:`include.checks.fast_rules` evaluates with GX's
own pandas semantics, and ``expect_column_values_to_be_unique`` within each file. A header holding a
formula cell, or a code column (``exact_digits``) in scientific notation, flags its file too.

- A file the screen finds **nothing** in gets its report from the screen. With every count zero, a
  report is determined by the file's rows, columns and missing cells, and is the one the reference
  path writes (tests/checks/test_batch.py compares them with ``engine="gx"`` reports).
- Any file the screen flags (even a finding ``mostly`` would tolerate), a file the reader refuses,
  an XLSX or big file, and every file of a suite holding an expectation the screen does not know,
  goes through :func:`include.checks.runner.validate_file` on its own: samples, rows and read
  errors always come from the reference path.

pandas is imported inside the functions, like everywhere in include/checks.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from include.checks import fast_rules
from include.checks.cells import exponent_rows
from include.checks.reading import (
    DEFAULT_MAX_LINE_BYTES,
    SimpleCsv,
    formula_rows,
    header_formula_cells,
    read_simple_tables,
    read_table,
    simple_csv,
)
from include.checks.report import CheckReport
from include.checks.runner import (
    _UNIQUE,
    DEFAULT_SAMPLE_SIZE,
    _convert,
    _new_checks,
    _report,
    read_options,
    validate_file,
)
from include.checks.suites import SuiteSpec, load_suite

#: Bigger files are validated on their own (the reader's whole-file checks dominate; nothing to share).
BATCH_MAX_FILE_BYTES = 4 * 1024 * 1024
#: Rows screened in one pass (bounded memory whatever the number of files).
BATCH_MAX_ROWS = 200_000


def screenable(spec: SuiteSpec) -> bool:
    """Whether every expectation of ``spec`` is one the screen evaluates exactly."""
    for expectation in spec.expectations:
        if expectation.type == _UNIQUE:
            if not set(expectation.kwargs) <= {"column", "mostly"} or expectation.column not in spec.column_types:
                return False
        elif not fast_rules.plan(expectation, spec):
            return False
    return True


def validate_files(
    files: Sequence[tuple[str | Path, str | None]],
    suite_name: str,
    *,
    fmt: str | None = None,
    delimiter: str | None = None,
    encoding: str | None = None,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    suites_dir: str | Path | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    return_exceptions: bool = False,
) -> list[CheckReport | BaseException]:
    """One :class:`CheckReport` per ``(path, file name)`` of ``files``, in order (see the module docstring).

    The options mean what they mean for :func:`validate_file`. ``return_exceptions``: an error of one
    file (e.g. ``FileNotFoundError``) is returned in its place instead of raised, so the others keep
    their reports.
    """
    spec = load_suite(suite_name, suites_dir)
    items = [(Path(path), name if name is not None else Path(path).name) for path, name in files]
    reports: list[Any] = [None] * len(items)

    def alone(index: int) -> None:
        path, name = items[index]
        try:
            reports[index] = validate_file(path, suite_name, fmt=fmt, delimiter=delimiter, encoding=encoding,
                                           sample_size=sample_size, file_name=name, suites_dir=suites_dir,
                                           max_line_bytes=max_line_bytes)
        except Exception as exc:
            if not return_exceptions:
                raise
            reports[index] = exc

    if not screenable(spec):
        for index in range(len(items)):
            alone(index)
        return reports

    # Text cells only: for a small file, pandas parsing the number columns while reading (and the
    # check that kept them) costs more than converting the whole batch's text in one go (~0.25 ms a file).
    options = {**read_options(spec, delimiter=delimiter, encoding=encoding, max_line_bytes=max_line_bytes),
               "number_columns": ()}
    declared = {c.name for c in spec.columns}
    needed = {c for e in spec.expectations for c in _columns(e)}
    # Per header: simple files (records = lines) parsed later with one pandas call; the others read alone.
    simple: dict[tuple[str, ...], list[tuple[int, SimpleCsv, float]]] = {}
    read: dict[tuple[str, ...], list[tuple[int, Any, float]]] = {}
    for index, (path, name) in enumerate(items):
        file_fmt = fmt or ("xlsx" if path.name.lower().endswith(".xlsx") else spec.format)  # as validate_file
        try:
            small = file_fmt == "csv" and path.stat().st_size <= BATCH_MAX_FILE_BYTES
        except OSError:
            small = False  # the reference path raises the error for this file
        if not small:
            alone(index)
            continue
        started = time.perf_counter()
        try:
            parts = simple_csv(path, **options)
            frame = None if parts is not None else read_table(path, "csv", **options)
        except Exception:  # noqa: BLE001 - read errors are reported by the reference path
            alone(index)
            continue
        columns = parts.header if parts is not None else tuple(str(c) for c in frame.columns)
        if (not spec.allow_extra_columns and set(columns) - declared) or not needed <= set(columns):
            alone(index)  # unexpected columns (a read error) or an optional column a rule needs
            continue
        candidates = parts.formula_candidates if parts is not None else frame.attrs.get("formula_candidates", True)
        if candidates and header_formula_cells(columns):
            alone(index)  # the reference path reports the header's formula cells (as it scans this file's cells)
            continue
        seconds = time.perf_counter() - started
        if parts is not None:
            simple.setdefault(columns, []).append((index, parts, seconds))
        else:
            read.setdefault(columns, []).append((index, frame, seconds))

    for columns, members in simple.items():
        for part in _bounded(members, rows=lambda parts: parts.rows):
            started = time.perf_counter()
            try:
                frame = read_simple_tables([parts for _, parts, _ in part], delimiter=options["delimiter"])
            except Exception:  # noqa: BLE001 - cannot happen for files simple_csv accepted; stay exact anyway
                for index, _, _ in part:
                    alone(index)
                continue
            share = (time.perf_counter() - started) / len(part)
            meta = [(index, seconds + share) for index, _, seconds in part]
            for index in _screen(spec, list(columns), frame, [p.rows for _, p, _ in part], meta, items, reports,
                                 sample_size):
                alone(index)
    for columns, members in read.items():
        for part in _bounded(members, rows=len):
            import pandas as pd

            frames = [frame for _, frame, _ in part]
            frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
            frame.attrs["formula_candidates"] = any(f.attrs.get("formula_candidates", True) for f in frames)
            meta = [(index, seconds) for index, _, seconds in part]
            for index in _screen(spec, list(columns), frame, [len(f) for f in frames], meta, items, reports,
                                 sample_size):
                alone(index)
    return reports


def _columns(expectation) -> list[str]:
    kwargs = expectation.kwargs
    return [kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs]


def _bounded(members: list, *, rows, max_rows: int = BATCH_MAX_ROWS):
    """``members`` (``(index, file, seconds)``) in consecutive parts of at most ``max_rows`` rows."""
    part, total = [], 0
    for member in members:
        if part and total + rows(member[1]) > max_rows:
            yield part
            part, total = [], 0
        part.append(member)
        total += rows(member[1])
    if part:
        yield part


def _screen(spec: SuiteSpec, columns: list[str], frame, lengths: list[int], meta: list[tuple[int, float]],
            items: list, reports: list, sample_size: int) -> list[int]:
    """Screen ``frame`` (the files' rows in order, ``lengths`` rows each; ``meta``: their index and
    read seconds) in one pass; write the clean files' reports, return the others' indexes."""
    import numpy as np

    started = time.perf_counter()
    lengths = np.asarray(lengths, dtype=np.int64)
    segment = np.repeat(np.arange(len(meta)), lengths)

    def per_file(mask) -> np.ndarray:
        return np.bincount(segment, weights=np.asarray(mask, dtype=np.float64), minlength=len(meta))

    flagged = np.zeros(len(frame), dtype=bool)
    if frame.attrs.get("formula_candidates", True):
        flagged |= formula_rows(frame)
    flagged |= exponent_rows(frame, spec.digit_columns)  # the reader refuses these (code_as_number)
    typed = frame.copy(deep=False)
    present: dict[str, np.ndarray] = {}
    for column in spec.columns:
        if column.type == "string" or column.name not in frame.columns:
            continue
        values, bad = _convert(frame[column.name], column)
        typed[column.name] = values
        flagged |= bad.to_numpy()
        present[column.name] = per_file(frame[column.name].notna().to_numpy())
    missing: dict[int, np.ndarray] = {}
    for i, expectation in enumerate(spec.expectations):
        if expectation.type == _UNIQUE:
            unexpected, gaps = _duplicated_within(segment, typed[expectation.column])
        else:
            unexpected, gaps = fast_rules.row_masks(expectation, typed)
        flagged |= unexpected
        missing[i] = per_file(gaps) if gaps is not None else np.zeros(len(meta))
    dirty = per_file(flagged) > 0
    share = (time.perf_counter() - started) / len(meta)

    others = []
    for k, (index, read_seconds) in enumerate(meta):
        if dirty[k]:
            others.append(index)
            continue
        rows = int(lengths[k])
        formulas, parse, merged = _new_checks(spec)
        zero = dict(unexpected_count=0, samples=[], rows=[], sample_size=sample_size)
        checked = (rows + 1) * len(columns)  # the header's cells too, as the reference path counts them
        formulas.add(element_count=checked, nonmissing_count=checked, **zero)
        for name, check in parse.items():
            if name in present:
                check.add(element_count=rows, nonmissing_count=int(present[name][k]), **zero)
        for i, check in merged.items():
            check.add(element_count=rows, nonmissing_count=rows - int(missing[i][k]), **zero)
        reports[index] = _report(
            spec, items[index][1], formulas, parse, merged, rows=rows, columns=columns, chunks=1,
            timings={"read_seconds": read_seconds, "screen_seconds": share},
            started=time.perf_counter() - read_seconds - share,
        )
    return others


def _duplicated_within(segment, values):
    """Rows whose (non-missing) value occurs more than once in the same file, as GX's uniqueness sees it."""
    import numpy as np
    import pandas as pd

    gaps = values.isna().to_numpy()
    unexpected = np.zeros(len(values), dtype=bool)
    keep = ~gaps
    if keep.any():
        keys = pd.DataFrame({"file": segment[keep], "value": values.to_numpy()[keep]})
        unexpected[keep] = keys.duplicated(keep=False).to_numpy()
    return unexpected, gaps
