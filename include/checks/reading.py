"""Read a partner file (CSV or XLSX) into a pandas DataFrame of text cells, or fail with a clear reason.

pandas and openpyxl are imported inside the functions: importing ``include.checks`` stays cheap.

What a successful read guarantees (and what each failure is called, see :mod:`include.checks.errors`):

- CSV is decoded strictly (utf-8 by default, a UTF-8 BOM is accepted and stripped). Invalid bytes are
  ``not_utf8`` with the line and byte offset; there is no silent fallback. A partner whose files are
  in another encoding gets it configured explicitly (``encoding="cp1252"``).
- A binary pre-scan runs first, in 1 MiB blocks (bounded memory): ``zero_bytes``, ``empty``,
  ``not_utf8`` and ``line_too_long`` (no line break within ``max_line_bytes``) fail before pandas
  reads anything, so a 10 MB single line fails after two blocks.
- The header must contain the required columns (``missing_columns``); a header that is one column
  containing ``;``, ``\\t`` or ``|`` when ``,`` was expected is ``wrong_delimiter``.
- Every record has exactly as many fields as the header, because pandas silently pads short rows:
  counted on bytes with numpy during the pre-scan, and by the csv module (``strict=True``) whenever
  that count is in doubt. The last record short or an unterminated quote is ``truncated``, any other
  record is ``field_count_mismatch``, quoting the csv module rejects is ``malformed_csv``.
- At least one data row (``header_only``).
- Cells are text (``str``); empty cells are missing (NaN). Nothing is converted to numbers here:
  conversion and its failures belong to the suite (see runner).
- XLSX is inspected first, within limits per document type (:mod:`include.checks.xlsx_guard`: zip
  size and compression ratio, macros, external links, DTDs, rows, columns, strings): openpyxl only
  ever sees a workbook that cannot take unbounded memory or time.
- Formula cells (CSV injection): a cell whose first character is ``= + - @``, tab or CR is a
  formula cell **unless the whole cell is a plain number** (``-5.00``, ``+3``, ``-1e3``), because a
  spreadsheet shows a number for those and executes nothing. With ``formulas="reject"`` (default)
  they raise ``formula_cells`` with their locations; ``formulas="allow"`` returns them (the runner
  does that and reports them as the failed ``no_formula_cells`` check, next to the other results).
  Header cells count too (row 1): a column named ``=HYPERLINK(...)`` runs like any other cell.
- A NUL character anywhere is ``nul_byte`` with its row and column (no database stores it), and a code
  column (``digit_columns``: the suite's ``exact_digits``) holding an XLSX number cell or scientific
  notation is ``code_as_number`` (:mod:`include.checks.cells`).
"""
from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from include.checks.cells import (
    code_as_number_error,
    is_code_as_number,
    locate_nul,
    nul_error,
    nul_in_cells,
    refuse_exponent_cells,
)
from include.checks.errors import (
    DUPLICATE_COLUMNS,
    EMPTY,
    FIELD_COUNT_MISMATCH,
    FORMULA_CELLS,
    HEADER_ONLY,
    LINE_TOO_LONG,
    MALFORMED_CSV,
    MISSING_COLUMNS,
    NOT_UTF8,
    NOT_XLSX,
    TRUNCATED,
    WRONG_DELIMITER,
    ZERO_BYTES,
    UnreadableFile,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from include.checks.xlsx_guard import WorkbookLimits

#: A physical line longer than this fails as ``line_too_long`` (1 MiB: far above any real record).
DEFAULT_MAX_LINE_BYTES = 1 << 20
#: Characters that make a spreadsheet treat a cell as a formula (OWASP CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
#: How many formula cell locations an error / result lists.
MAX_FORMULA_LOCATIONS = 20



_NUMBER_TEXT = r"\s*[+-]?(?:\d+(?:[.,]\d*)?|[.,]\d+)(?:[eE][+-]?\d+)?\s*"
_BLOCK = 1 << 20
_OTHER_DELIMITERS = (";", "\t", "|", ",")
_BOMS_NOT_UTF8 = {
    b"\xff\xfe\x00\x00": "UTF-32 (little-endian)",
    b"\x00\x00\xfe\xff": "UTF-32 (big-endian)",
    b"\xff\xfe": "UTF-16 (little-endian)",
    b"\xfe\xff": "UTF-16 (big-endian)",
}


@dataclass
class _Prescan:
    """What one binary pass over a CSV learned (see _prescan_csv)."""

    size: int
    has_bom: bool
    lines: int
    formula_candidates: bool  # some field may start with a formula character: scan the cells
    field_counts_ok: bool = False  # the vectorised count proved every record has the same width
    record_width: int | None = None  # that width (fields per record)
    records: int | None = None  # non-blank records, header included, when field_counts_ok


def read_table(
    path: str | Path,
    fmt: str = "csv",
    *,
    delimiter: str = ",",
    encoding: str = "utf-8",
    required_columns: Sequence[str] | None = None,
    formulas: str = "reject",
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    sheet: str | None = None,
    number_columns: Sequence[str] = (),
    xlsx_limits: WorkbookLimits | None = None,
    digit_columns: Sequence[str] = (),
) -> pd.DataFrame:
    """Read the whole file as a DataFrame of text cells (see the module docstring for the rules).

    :param fmt: ``"csv"`` or ``"xlsx"`` (first sheet unless ``sheet`` is given; formulas are read as
        their formula text, not cached values, so they are caught).
    :param required_columns: columns that must be in the header; extra columns are kept.
    :param formulas: ``"reject"`` raises ``formula_cells``; ``"allow"`` returns the cells as they are.
    :param number_columns: CSV columns the caller converts to numbers anyway (the runner's ``number``
        and ``integer`` columns): pandas' C parser may parse them while reading, which saves a
        text copy and a second parse. A chunk's column comes back as ``float64``/``int64`` only when
        every non-empty cell is a finite number (those cells are plain numbers, never formula cells);
        otherwise it stays text. ``attrs["number_columns"]`` names the columns that were parsed.
    :param xlsx_limits: what an XLSX workbook may hold (``xlsx_guard.limits_for(suite)``; default
        ``xlsx_guard.DEFAULT_LIMITS``).
    :param digit_columns: code columns (GTIN...): a number cell (XLSX) or scientific notation there is
        ``code_as_number``.
    :raises UnreadableFile: with a reason code from :mod:`include.checks.errors`.
    :raises FileNotFoundError: the path does not exist (a caller bug, not bad input).
    """
    chunks = list(
        _read(path, fmt, None, delimiter, encoding, required_columns, formulas, max_line_bytes, sheet, number_columns,
              xlsx_limits, digit_columns)
    )
    if len(chunks) == 1:
        return chunks[0]
    import pandas as pd

    return pd.concat(chunks)


@dataclass(frozen=True)
class SimpleCsv:
    """A small CSV file that :func:`read_simple_tables` parses together with others of its header."""

    header: tuple[str, ...]
    body: str  # the data lines, decoded, each ending in a line break
    rows: int
    formula_candidates: bool


def simple_csv(path: str | Path, *, delimiter: str = ",", encoding: str = "utf-8",
               required_columns: Sequence[str] | None = None, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
               **_: Any) -> SimpleCsv | None:
    """The parts of a CSV file whose records the pre-scan counted, or None.

    It must pass the reader's whole-file checks with the fast field count (pre-scan, header, every
    record as wide as the header; that count is quote-aware and skips blank lines as pandas does),
    have no bare CR (pandas would end a record there, the count would not), and start with its
    header line, unquoted. Then its data rows are the counted records minus the header, so many such
    files can be parsed with one pandas call (:func:`read_simple_tables`, which checks the total).
    None for anything else, including every file the reader would refuse: :func:`read_table`
    reads it (and raises its error).
    """
    path = Path(path)
    data = path.read_bytes()
    if not data or data.count(b"\r") != data.count(b"\r\n"):
        return None
    try:
        scan = _prescan_csv(path, delimiter, encoding, max_line_bytes)
        text_encoding = "utf-8-sig" if scan.has_bom else encoding
        header = _csv_header(path, delimiter, text_encoding, required_columns)
    except UnreadableFile:
        return None
    if not (scan.field_counts_ok and scan.record_width == len(header)) or not scan.records or scan.records < 2:
        return None
    first, newline, body = data.decode(text_encoding).partition("\n")
    if not newline or not first.strip() or '"' in first or not body.strip():
        return None
    if not body.endswith("\n"):
        body += "\n"
    return SimpleCsv(tuple(header), body, scan.records - 1, scan.formula_candidates)


def read_simple_tables(files: Sequence[SimpleCsv], *, delimiter: str = ",") -> pd.DataFrame:
    """One DataFrame of text cells for simple files of one header (see :func:`simple_csv`), their rows
    in order, as :func:`read_table` would give each. :raises ValueError: the rows do not add up."""
    import io

    import pandas as pd

    header = files[0].header
    if any(f.header != header for f in files):
        raise ValueError("simple files of one batch must share their header")
    frame = pd.read_csv(
        io.StringIO("".join(f.body for f in files)), sep=delimiter, header=None, names=list(header), dtype=str,
        keep_default_na=False, na_values=[""], skip_blank_lines=True, engine="c",
    )
    if len(frame) != sum(f.rows for f in files):
        raise ValueError(f"simple files gave {len(frame)} rows, expected {sum(f.rows for f in files)}")
    frame.attrs["formula_candidates"] = any(f.formula_candidates for f in files)
    return frame


def iter_table_chunks(
    path: str | Path,
    fmt: str = "csv",
    *,
    chunksize: int,
    delimiter: str = ",",
    encoding: str = "utf-8",
    required_columns: Sequence[str] | None = None,
    formulas: str = "reject",
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    sheet: str | None = None,
    number_columns: Sequence[str] = (),
    xlsx_limits: WorkbookLimits | None = None,
    digit_columns: Sequence[str] = (),
) -> Iterator[pd.DataFrame]:
    """Like :func:`read_table` but yields DataFrames of at most ``chunksize`` rows (bounded memory).

    The index continues across chunks (row ``i`` of the file has index ``i`` in whichever chunk), so
    locations stay file-wide. For CSV all whole-file checks (pre-scan, header, field counts) run in
    this call, so a bad file fails before any chunk is processed; formula cells
    (``formulas="reject"``) and, for XLSX, row-level problems (``header_only``, values beyond the
    header) surface while iterating.
    """
    if not chunksize or chunksize < 1:
        raise ValueError("chunksize must be a positive number of rows")
    return _read(path, fmt, chunksize, delimiter, encoding, required_columns, formulas, max_line_bytes, sheet, number_columns,
                 xlsx_limits, digit_columns)


def _read(path, fmt, chunksize, delimiter, encoding, required_columns, formulas, max_line_bytes, sheet, number_columns=(),
          xlsx_limits=None, digit_columns=()):
    """Run every whole-file check eagerly, then return an iterator of DataFrames."""
    if formulas not in ("reject", "allow"):
        raise ValueError("formulas must be 'reject' or 'allow'")
    path = Path(path)
    size = path.stat().st_size  # FileNotFoundError on purpose: a caller bug, not bad input
    if size == 0:
        raise UnreadableFile(ZERO_BYTES, "the file is empty (0 bytes); often an upload that did not finish")
    if fmt == "csv":
        frames, candidates = _open_csv(path, chunksize, delimiter, encoding, required_columns, max_line_bytes, number_columns,
                                       digit_columns)
    elif fmt == "xlsx":
        frames, candidates = _open_xlsx(path, chunksize, required_columns, sheet, xlsx_limits, digit_columns), True
    else:
        raise ValueError(f"unsupported format {fmt!r} (csv or xlsx)")
    frames = _marked(frames, candidates)
    if formulas == "reject" and candidates:
        return _rejecting_formulas(frames)
    return frames


def _marked(frames, candidates: bool):
    """Tell later steps whether any cell can be a formula (``attrs["formula_candidates"]``).

    False when the pre-scan found no field starting with a formula character anywhere in the file,
    so the per-cell scan (the costliest built-in check) can be skipped.
    """
    for frame in frames:
        frame.attrs["formula_candidates"] = candidates
        yield frame


def _rejecting_formulas(frames):
    for number, frame in enumerate(frames):
        count, cells = find_formula_cells(frame, header=number == 0)
        if count:
            shown = ", ".join(f"{c['column']} row {c['row']} ({c['value']!r})" for c in cells[:5])
            raise UnreadableFile(
                FORMULA_CELLS,
                f"{count} cell(s) start with = + - @ or a control character and would run as spreadsheet "
                f"formulas: {shown}",
                {"count": count, "cells": cells},
            )
        yield frame


# ---------------------------------------------------------------------------------------------- CSV


def _open_csv(path, chunksize, delimiter, encoding, required_columns, max_line_bytes, number_columns=(), digit_columns=()):
    scan = _prescan_csv(path, delimiter, encoding, max_line_bytes)
    text_encoding = "utf-8-sig" if scan.has_bom else encoding
    header = _csv_header(path, delimiter, text_encoding, required_columns)
    if not (scan.field_counts_ok and scan.record_width == len(header)):
        _check_records(path, delimiter, text_encoding, len(header), max_line_bytes)

    import pandas as pd

    numbers = [i for i, name in enumerate(header) if name in set(number_columns)]
    reader = pd.read_csv(
        path,
        sep=delimiter,
        # by position: the file's header may carry blanks around the names
        dtype={i: str for i in range(len(header)) if i not in numbers} if numbers else str,
        keep_default_na=False,
        na_values=[""],  # an empty cell is missing; "NA", "null", "n/a" stay text (they may be codes)
        encoding=text_encoding,
        encoding_errors="strict",
        skip_blank_lines=True,
        engine="c",
        chunksize=chunksize,
    )

    def frames():
        try:
            chunks = reader if chunksize else [reader]
            for frame in chunks:
                frame.columns = header  # names stripped of surrounding blanks
                if numbers:
                    _settle_number_columns(frame, [header[i] for i in numbers], path, delimiter, text_encoding)
                refuse_exponent_cells(frame, digit_columns)
                yield frame
        except (pd.errors.ParserError, ValueError) as exc:  # the csv pass should have caught it
            raise UnreadableFile(MALFORMED_CSV, f"pandas could not parse the file: {_short(exc)}") from exc

    return frames(), scan.formula_candidates


def _settle_number_columns(frame, names, path, delimiter, encoding) -> None:
    """Keep a column pandas parsed only if it is all finite numbers; else put the file's text back.

    Text (pandas could not parse some cell) is kept as it is. ``int64``/``float64`` with only finite
    values is kept: each such cell is a plain number (also by the formula rule). Anything else
    (``inf``, integers beyond 64 bits, ``True``) is read again as text, rows of this chunk only.
    """
    import numpy as np
    import pandas as pd

    parsed = []
    for name in names:
        series = frame[name]
        if pd.api.types.is_string_dtype(series.dtype) and series.dtype != object:
            continue  # could not parse: the cells are the file's text already
        if series.dtype.kind in "if" and np.isfinite(series.to_numpy(dtype="float64")[series.notna().to_numpy()]).all():
            parsed.append(name)
            continue
        rows = [int(i) for i in frame.index]
        text = read_cells(path, [name], rows, delimiter=delimiter, encoding=encoding)
        frame[name] = pd.Series([text.get((i, name)) for i in rows], index=frame.index, dtype=str)
    frame.attrs["number_columns"] = parsed


def read_cells(
    path: str | Path, columns: Sequence[str], rows: Sequence[int], *, delimiter: str = ",", encoding: str = "utf-8",
    chunksize: int = 200_000,
) -> dict[tuple[int, str], str | None]:
    """The file's text at ``(row index, column)`` for the given rows of a checked CSV (None = empty cell).

    A column-only second pass that stops after the last wanted row; index numbering matches
    :func:`iter_table_chunks`. Used for sample values of columns pandas parsed as numbers.
    """
    import pandas as pd

    wanted = set(rows)
    last = max(wanted) if wanted else -1
    found: dict[tuple[int, str], str | None] = {}
    if not wanted:
        return found
    with open(path, "rb") as fh:
        has_bom = fh.read(3) == codecs.BOM_UTF8
    text_encoding = "utf-8-sig" if has_bom else encoding
    header = _csv_header(Path(path), delimiter, text_encoding, columns)
    positions = [header.index(c) for c in columns]
    frames = pd.read_csv(
        path, sep=delimiter, dtype=str, keep_default_na=False, na_values=[""], encoding=text_encoding,
        usecols=positions, skip_blank_lines=True, chunksize=chunksize,
    )
    for frame in frames:
        frame.columns = [header[i] for i in sorted(positions)]
        hit = frame[frame.index.isin(wanted)]
        for column in columns:
            found.update(((int(i), column), None if v != v else str(v)) for i, v in hit[column].items())
        if len(frame) and frame.index[-1] >= last:
            break
    return found


def _prescan_csv(path: Path, delimiter: str, encoding: str, max_line_bytes: int) -> _Prescan:
    """One binary pass in bounded blocks: encoding, line length, blank file, NUL, formula candidates."""
    block_size = max(1, min(_BLOCK, max_line_bytes))
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    lines = 0  # line breaks seen before the current block
    since_newline = 0  # bytes of the current (unfinished) line before the current block
    offset = 0
    has_bom = False
    nonblank = False
    candidates = False
    nul_line = None  # physical line of the first NUL byte
    tail = b""
    counter = _FieldCounter(delimiter) if codecs.lookup(encoding).name in _ASCII_SAFE else None
    with open(path, "rb") as fh:
        while block := fh.read(block_size):
            if offset == 0:
                for bom, name in _BOMS_NOT_UTF8.items():
                    if block.startswith(bom):
                        raise UnreadableFile(
                            NOT_UTF8,
                            f"the file is {name} (byte order mark {bom.hex(' ')}); expected {encoding}",
                            {"encoding_found": name},
                        )
                if block.startswith(codecs.BOM_UTF8) and encoding.replace("_", "-").lower() in ("utf-8", "utf8", "utf-8-sig"):
                    has_bom = True
                    block = block[3:]
                    offset = 3
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                bad_at = max(0, exc.start - len(getattr(decoder, "buffer", b"") or b""))
                line = lines + block.count(b"\n", 0, bad_at) + 1
                bad = exc.object[exc.start : exc.end][:4]
                raise UnreadableFile(
                    NOT_UTF8,
                    f"byte(s) {bad.hex(' ')} at line {line} (byte offset {offset + bad_at}) are not valid "
                    f"{encoding}; the file looks like another encoding (e.g. cp1252/latin-1). Ask the "
                    f"partner for {encoding}, or configure the partner's encoding explicitly",
                    {"line": line, "byte_offset": offset + bad_at, "bytes": bad.hex()},
                ) from None
            if nul_line is None and (nul := block.find(b"\x00")) != -1:
                nul_line = lines + block.count(b"\n", 0, nul) + 1
            first = block.find(b"\n")
            if first == -1:
                since_newline += len(block)
            else:
                since_newline += first
            if since_newline > max_line_bytes:
                raise UnreadableFile(
                    LINE_TOO_LONG,
                    f"line {lines + 1} is longer than {max_line_bytes:,} bytes without a line break "
                    f"(file size {path.stat().st_size:,} bytes); not a line-based CSV",
                    {"line": lines + 1, "max_line_bytes": max_line_bytes},
                )
            if first != -1:
                since_newline = len(block) - block.rfind(b"\n") - 1
                lines += block.count(b"\n")
            if not nonblank and block.strip():
                nonblank = True
            # The file start counts as a line break; the previous block's last bytes keep boundaries exact.
            if not candidates and _has_formula_start((tail if tail else b"\n") + block, delimiter):
                candidates = True
            tail = block[-2:]
            offset += len(block)
            if counter is not None:
                counter.feed(block)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise UnreadableFile(
                NOT_UTF8,
                f"the file ends in the middle of a multi-byte {encoding} character (cut off?)",
                {"line": lines + 1, "byte_offset": offset},
            ) from None
    if not nonblank:
        raise UnreadableFile(EMPTY, "the file contains no data, only blank lines or whitespace")
    if nul_line is not None:
        raise locate_nul(path, delimiter=delimiter, encoding="utf-8-sig" if has_bom else encoding, line=nul_line,
                         max_field_chars=max_line_bytes)
    return _Prescan(
        size=offset,
        has_bom=has_bom,
        lines=lines,
        formula_candidates=candidates,
        field_counts_ok=counter is not None and counter.all_records_equal(),
        record_width=None if counter is None or counter.width is None else counter.width + 1,
        records=None if counter is None else counter.records,
    )


def _has_formula_start(data: bytes, delimiter: str) -> bool:
    """Whether some field in ``data`` may start with a formula character (numpy, ~10 ms per MiB).

    A field starts after a line break or a delimiter, optionally with an opening quote. Over-reports
    on purpose (a delimiter inside quotes counts too): it only decides whether cells are scanned.
    """
    import numpy as np

    raw = np.frombuffer(data, dtype=np.uint8)
    if len(raw) < 2:
        return False
    starts = np.flatnonzero((raw[:-1] == 10) | (raw[:-1] == ord(delimiter))) + 1
    first = raw[starts]
    quoted = first == 34
    second = raw[np.minimum(starts + 1, len(raw) - 1)]
    char = np.where(quoted, second, first)
    table = np.zeros(256, dtype=bool)
    table[[ord(c) for c in "=+-@\t"]] = True
    return bool((table[char] | (quoted & (char == 13))).any())


#: Encodings in which '"', the delimiter and '\n' are always those single bytes (never inside a
#: multi-byte character), so records can be counted on bytes.
_ASCII_SAFE = frozenset({"utf-8", "utf-8-sig", "ascii", "latin-1", "iso8859-1", "cp1252", "iso8859-15"})


class _FieldCounter:
    """Counts fields per CSV record on raw bytes with numpy, block by block (the fast path).

    A delimiter or line break counts only outside quotes: outside means an even number of ``"``
    since the file start (``""`` escapes keep the parity). This proves the common case, "every
    non-blank record has the header's number of fields and no quote is left open", at C speed
    (positions and binary searches, no per-byte cumulative sums); any
    doubt (a short/long record, a whitespace-only line, an odd quote, a quote inside an unquoted
    field) makes :meth:`all_records_equal` False and the exact csv-module pass decides and explains.
    """

    def __init__(self, delimiter: str):
        self.delimiter = ord(delimiter)
        self.quote_parity = 0  # quotes seen so far, mod 2
        self.fields_in_record = 0  # delimiters seen in the unfinished record
        self.record_length = 0  # bytes of the unfinished record
        self.width: int | None = None  # delimiters in the header record
        self.records = 0
        self.uneven = False
        self.last_byte = 10  # the byte before the current block (the file start counts as a line break)

    def feed(self, block: bytes) -> None:
        import numpy as np

        if self.uneven or not block:
            return
        data = np.frombuffer(block, dtype=np.uint8)
        quotes = np.flatnonzero(data == 34)
        if not len(quotes):
            self.last_byte = int(data[-1])
        delimiters = np.flatnonzero(data == self.delimiter)
        ends = np.flatnonzero(data == 10)
        if len(quotes) and not self._quotes_well_placed(data, quotes):
            self.uneven = True  # e.g. '"INV"X': the csv module rejects it, pandas would not
            return
        if len(quotes):  # keep only the delimiters / line breaks after an even number of quotes
            delimiters = delimiters[((np.searchsorted(quotes, delimiters) + self.quote_parity) & 1) == 0]
            ends = ends[((np.searchsorted(quotes, ends) + self.quote_parity) & 1) == 0]
            self.quote_parity = (self.quote_parity + len(quotes)) & 1
        elif self.quote_parity:  # the whole block is inside a quoted field
            delimiters = ends = delimiters[:0]
        if len(ends):
            before_end = np.searchsorted(delimiters, ends)  # delimiters before each record end
            counts = np.diff(before_end, prepend=0)
            counts[0] += self.fields_in_record
            lengths = np.diff(ends, prepend=-1) - 1
            lengths[0] += self.record_length
            carriage = data[np.maximum(ends - 1, 0)] == 13
            blank = (lengths == 0) | ((lengths == 1) & carriage & (counts == 0))
            self._check(counts[~blank])
            self.fields_in_record = len(delimiters) - int(before_end[-1])
            self.record_length = len(data) - int(ends[-1]) - 1
        else:
            self.fields_in_record += len(delimiters)
            self.record_length += len(data)

    def _quotes_well_placed(self, data, quotes) -> bool:
        """Each quote opens a field, closes one, or is half of an escaped ``""`` (approximately)."""
        import numpy as np

        size = len(data)
        prev = np.where(quotes > 0, data[np.maximum(quotes - 1, 0)], self.last_byte)
        nxt = np.where(quotes < size - 1, data[np.minimum(quotes + 1, size - 1)], 10)  # unknown: accept
        self.last_byte = int(data[-1])
        opening = (prev == self.delimiter) | (prev == 10)
        closing = (nxt == self.delimiter) | (nxt == 10) | (nxt == 13)
        paired = (prev == 34) | (nxt == 34)
        return bool((opening | closing | paired).all())

    def _check(self, counts) -> None:
        if not len(counts):
            return
        if self.width is None:
            self.width = int(counts[0])
        self.records += len(counts)
        if (counts != self.width).any():
            self.uneven = True

    def all_records_equal(self) -> bool:
        """True only if every non-blank record had the header's width, quotes closed, ≥ 1 data row."""
        import numpy as np

        if self.record_length:  # last record without a final line break
            self._check(np.array([self.fields_in_record]))
            self.record_length = self.fields_in_record = 0
        return not self.uneven and self.quote_parity == 0 and self.records >= 2


def _csv_header(path: Path, delimiter: str, encoding: str, required_columns) -> list[str]:
    """Parse the first non-blank line as the header and check it against the required columns."""
    with open(path, encoding=encoding, newline="") as fh:
        header_line = None
        for line in fh:
            if line.strip():
                if header_line is None:
                    header_line = line
                else:
                    break
        else:
            if header_line is None:
                raise UnreadableFile(EMPTY, "the file contains no data, only blank lines or whitespace")
            raise UnreadableFile(HEADER_ONLY, "the file has a header line but no data rows")
    names = [n.strip() for n in next(csv.reader([header_line], delimiter=delimiter))]
    return _check_header(names, delimiter, required_columns, header_line.strip())


def _check_header(names: list[str], delimiter: str | None, required_columns, raw_header: str) -> list[str]:
    required = list(required_columns or [])
    if delimiter and len(names) == 1 and len(required) != 1:
        others = [d for d in _OTHER_DELIMITERS if d != delimiter and d in names[0]]
        if others:
            found = max(others, key=names[0].count)
            expected = ", ".join(required) if required else "several columns"
            raise UnreadableFile(
                WRONG_DELIMITER,
                f"expected columns {_excerpt(expected, 120)} separated by {delimiter!r}; found one column "
                f"{_excerpt(raw_header, 80)!r} — the file looks {found!r}-separated",
                {"expected_delimiter": delimiter, "found_delimiter": found, "header": _excerpt(raw_header, 200)},
            )
    seen, dupes = set(), []
    for n in names:
        if n and n in seen:
            dupes.append(n)
        seen.add(n)
    if dupes:
        raise UnreadableFile(
            DUPLICATE_COLUMNS,
            f"column(s) {', '.join(map(repr, dupes))} appear more than once in the header",
            {"duplicates": dupes},
        )
    missing = [c for c in required if c not in seen]
    if missing:
        raise UnreadableFile(
            MISSING_COLUMNS,
            f"missing required column(s) {', '.join(missing)}; found {_excerpt(', '.join(names), 200)}",
            {"missing": missing, "found": names},
        )
    return names


def _check_records(path: Path, delimiter: str, encoding: str, width: int, max_line_bytes: int) -> None:
    """Every record has ``width`` fields; quotes are closed (pandas pads short rows silently)."""
    if csv.field_size_limit() < max_line_bytes:
        csv.field_size_limit(max_line_bytes)
    bad = None  # (record number, line, field count) of a wrong record, decided when we know if it is last
    record = 0
    with open(path, encoding=encoding, newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter, strict=True)
        try:
            for fields in reader:
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue  # blank line: pandas skips it too
                record += 1
                if bad:
                    break
                if record > 1 and len(fields) != width:
                    bad = (record, reader.line_num, len(fields))
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                raise UnreadableFile(
                    TRUNCATED,
                    f"a quoted field is never closed: the file ends inside quotes (row {record + 1}, "
                    f"after line {reader.line_num}); the file was probably cut off",
                    {"row": record + 1, "line": reader.line_num},
                ) from None
            raise UnreadableFile(
                MALFORMED_CSV,
                f"line {reader.line_num}: {exc}",
                {"line": reader.line_num},
            ) from None
    if bad is None:
        if record < 2:
            raise UnreadableFile(HEADER_ONLY, "the file has a header line but no data rows")
        return
    row, line, count = bad
    if row == record:  # the wrong record is the last one
        raise UnreadableFile(
            TRUNCATED,
            f"the last row (row {row}, line {line}) has {count} field(s), the header has {width}; "
            f"the file was probably cut off",
            {"row": row, "line": line, "fields": count, "expected_fields": width},
        )
    raise UnreadableFile(
        FIELD_COUNT_MISMATCH,
        f"row {row} (line {line}) has {count} field(s), the header has {width}",
        {"row": row, "line": line, "fields": count, "expected_fields": width},
    )


# --------------------------------------------------------------------------------------------- XLSX


def _open_xlsx(path: Path, chunksize, required_columns, sheet, limits: WorkbookLimits | None = None, digit_columns=()):
    import zipfile

    from include.checks.xlsx_guard import DEFAULT_LIMITS, inspect_workbook

    inspect_workbook(path, limits or DEFAULT_LIMITS)  # the one guard before any openpyxl read
    from openpyxl import load_workbook

    # A file object, not the path: openpyxl refuses names not ending in .xlsx (temporary download names).
    handle = open(path, "rb")  # noqa: SIM115 - closed with the workbook below
    try:
        workbook = load_workbook(handle, read_only=True, data_only=False)  # formulas as text: we flag them
    except (zipfile.BadZipFile, KeyError, OSError, ValueError, TypeError) as exc:
        handle.close()
        raise UnreadableFile(NOT_XLSX, f"not a readable .xlsx workbook: {_short(exc)}") from None
    except Exception as exc:  # openpyxl raises its own InvalidFileException and friends
        handle.close()
        raise UnreadableFile(NOT_XLSX, f"not a readable .xlsx workbook: {type(exc).__name__}") from None

    def close():
        workbook.close()
        handle.close()

    try:
        worksheet = workbook[sheet] if sheet else workbook.worksheets[0]
    except (KeyError, IndexError):
        close()
        raise UnreadableFile(NOT_XLSX, f"the workbook has no sheet {sheet!r}" if sheet else "the workbook has no sheet") from None

    rows = worksheet.iter_rows(values_only=True)
    header = None
    header_row = 0
    for number, values in enumerate(rows, start=1):
        if any(v is not None and str(v).strip() for v in values):
            header, header_row = [_xlsx_text(v) or "" for v in values], number
            break
    if header is None:
        close()
        raise UnreadableFile(EMPTY, "the workbook's sheet is empty")
    while header and not header[-1]:
        header.pop()
    try:
        if (position := nul_in_cells(header)) is not None:
            raise nul_error(header_row, header[position], header[position])
        names = _check_header([n.strip() for n in header], None, required_columns, ", ".join(header))
    except UnreadableFile:
        close()
        raise
    width = len(names)
    codes = [(names.index(c), c) for c in digit_columns if c in names]

    def frames():
        import pandas as pd

        buffer, index, count = [], [], 0
        try:
            for number, values in enumerate(rows, start=header_row + 1):
                cells = [_xlsx_text(v) for v in values]
                if not any(c is not None and c != "" for c in cells):
                    continue
                _refuse_xlsx_cells(number, values, cells, names, codes)
                if any(c not in (None, "") for c in cells[width:]):
                    raise UnreadableFile(
                        FIELD_COUNT_MISMATCH,
                        f"row {number} has values beyond the last header column ({width} columns)",
                        {"row": number, "expected_fields": width},
                    )
                cells = (cells + [None] * width)[:width]
                buffer.append([None if c == "" else c for c in cells])
                index.append(number - 2)  # spreadsheet row = index + 2, like CSV
                count += 1
                if chunksize and len(buffer) >= chunksize:
                    yield pd.DataFrame(buffer, columns=names, index=index, dtype=object)
                    buffer, index = [], []
            if count == 0:
                raise UnreadableFile(HEADER_ONLY, "the sheet has a header row but no data rows")
            if buffer or not chunksize:
                yield pd.DataFrame(buffer, columns=names, index=index, dtype=object)
        finally:
            close()

    return frames()


def _refuse_xlsx_cells(number: int, values, cells: list, names: list[str], codes: list[tuple[int, str]]) -> None:
    """A row's NUL (``nul_byte``) and code cells stored as numbers (``code_as_number``)."""
    if (position := nul_in_cells(cells)) is not None:
        column = names[position] if position < len(names) else f"column {position + 1}"
        raise nul_error(number, column, cells[position])
    for position, column in codes:
        if position < len(values) and is_code_as_number(values[position]):
            raise code_as_number_error(column, number, values[position])


def _xlsx_text(value) -> str | None:
    """A cell value as the text a partner sees; dates as ISO 8601, formulas as their formula text."""
    import datetime as dt

    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time(0) else value.isoformat(sep=" ")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    text = getattr(value, "text", None)  # openpyxl ArrayFormula / DataTableFormula
    return text if isinstance(text, str) else str(value)


def read_column_rows(
    path: str | Path,
    fmt: str,
    column: str,
    rows: Sequence[int],
    *,
    delimiter: str = ",",
    encoding: str = "utf-8",
    chunksize: int = 200_000,
    xlsx_limits: WorkbookLimits | None = None,
) -> dict[int, str]:
    """Text of ``column`` at the given row indexes of an already checked file (second, column-only pass).

    Used by chunked validation to show sample values of duplicates found across chunks; reads only
    until the last wanted row. Index numbering matches :func:`iter_table_chunks`.
    """
    import pandas as pd

    wanted = set(rows)
    last = max(wanted) if wanted else -1
    found: dict[int, str] = {}
    if fmt == "xlsx":
        frames = _open_xlsx(Path(path), chunksize, [column], None, xlsx_limits)
    else:
        with open(path, "rb") as fh:
            has_bom = fh.read(3) == codecs.BOM_UTF8
        header = _csv_header(Path(path), delimiter, "utf-8-sig" if has_bom else encoding, [column])
        frames = pd.read_csv(
            path,
            sep=delimiter,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            encoding="utf-8-sig" if has_bom else encoding,
            usecols=[header.index(column)],
            skip_blank_lines=True,
            chunksize=chunksize,
        )
    for frame in frames:
        series = frame.iloc[:, 0] if fmt != "xlsx" else frame[column]
        hit = series[series.index.isin(wanted)]
        found.update((int(i), str(v)) for i, v in hit.items())
        if len(series) and series.index[-1] >= last:
            break
    return found


# ------------------------------------------------------------------------------------------ formulas


def find_formula_cells(df: pd.DataFrame, *, limit: int = MAX_FORMULA_LOCATIONS,
                       header: bool = False) -> tuple[int, list[dict[str, Any]]]:
    """Count formula cells in ``df`` and list the first ``limit`` as ``{"row", "column", "value"}``.

    ``row`` is the spreadsheet row number (header = 1, so index ``i`` is row ``i + 2``), ``value`` a
    short excerpt. Plain numbers with a sign are not formula cells. ``header``: the column names count
    too (row 1); pass it for a file's first chunk only, so a header is counted once.
    """
    total = 0
    hits: list[tuple[int, int, str, str]] = []
    if header:
        for position, name in header_formula_cells(df.columns):
            total += 1
            hits.append((-1, position, name, name))
    for position, column, formulas in _formula_columns(df):
        total += len(formulas)
        for index, value in formulas.head(limit).items():
            hits.append((int(index), position, str(column), value))
    hits.sort()
    cells = [{"row": i + 2, "column": c, "value": _excerpt(v, 40)} for i, _, c, v in hits[:limit]]
    return total, cells


def is_formula_text(value: Any) -> bool:
    """Whether one cell's text would run as a spreadsheet formula (the rule of the module docstring)."""
    return (isinstance(value, str) and value.startswith(FORMULA_PREFIXES)
            and re.fullmatch(_NUMBER_TEXT, value) is None)


def header_formula_cells(columns: Sequence[Any]) -> list[tuple[int, str]]:
    """``(position, name)`` of the header cells that are formula cells."""
    return [(position, name) for position, name in enumerate(columns) if is_formula_text(name)]


def formula_rows(df: pd.DataFrame):
    """Boolean array, one entry per row of ``df``: the row holds at least one formula cell
    (the same cells :func:`find_formula_cells` counts)."""
    import numpy as np

    rows = np.zeros(len(df), dtype=bool)
    for _, _, formulas in _formula_columns(df):
        rows[df.index.get_indexer(formulas.index)] = True
    return rows


def _formula_columns(df: pd.DataFrame):
    """``(position, column, formula cells as a Series)`` for each column holding formula cells."""
    for position, column in enumerate(df.columns):
        series = df[column]
        if series.dtype.kind in "biufcmM":  # already typed: cannot hold formula text
            continue
        text = series if series.dtype != object else series.where(series.map(type) == str)
        starts = text.str.startswith(FORMULA_PREFIXES, na=False).to_numpy(dtype=bool)
        if not starts.any():
            continue
        candidates = text[starts]
        formulas = candidates[~candidates.str.fullmatch(_NUMBER_TEXT, na=False).to_numpy(dtype=bool)]
        if len(formulas):
            yield position, column, formulas


def _excerpt(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(exc: BaseException) -> str:
    return _excerpt(" ".join(str(exc).split()), 200)
