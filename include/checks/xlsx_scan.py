"""Stream one XML part of a workbook through expat with caps: the XML half of :mod:`include.checks.xlsx_guard`.

No tree is built: expat calls the handlers of :class:`_PartScan`, which count what openpyxl would
build from the part and raise :class:`~include.checks.errors.UnreadableFile` as soon as a cap of
:class:`~include.checks.xlsx_guard.WorkbookLimits` is passed. What openpyxl does that the counts
mirror (openpyxl 3.1, read-only mode): it finds ``row`` and ``si`` elements at any depth; takes every
child of a row as a cell (column from its ``r`` reference, else the previous one plus one); fills
missing rows up to each row number and pads rows to the declared ``dimension``; clears a row or a
string once read but keeps the cleared element, and never clears elements it does not know; loads
workbook, styles, relationships, chartsheets whole. Memory here: one block and one open token,
bounded by ``max_token_bytes`` (expat buffers a tag until it ends: checked after every block).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from include.checks.errors import (
    NOT_XLSX,
    XLSX_MARKUP_TOO_LARGE,
    XLSX_SHARED_STRINGS_TOO_LARGE,
    XLSX_STRING_TOO_LONG,
    XLSX_TOO_MANY_CELLS,
    XLSX_TOO_MANY_COLUMNS,
    XLSX_TOO_MANY_ROWS,
    XLSX_XML_DTD,
    UnreadableFile,
)

if TYPE_CHECKING:  # pragma: no cover
    from include.checks.xlsx_limits import WorkbookLimits

_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main "
_STREAMED_ROOTS = (_MAIN + "worksheet", _MAIN + "sst")
_ROW, _SI, _DIMENSION = _MAIN + "row", _MAIN + "si", _MAIN + "dimension"
_RECORD_TAGS = frozenset((_ROW, _SI, _DIMENSION))
_DIGITS = "0123456789"
_BLOCK = 1 << 20


def scan_part(archive, info, limits: WorkbookLimits, *, budget: int, tree: bool | None, collect=None) -> int:
    """Stream one part through expat with a :class:`_PartScan`, in blocks of 1 MiB; return its events.

    :param budget: elements, comments and processing instructions the part may still have (what is
        left of ``max_elements`` for the workbook: parse time is per event more than per byte).
    :param tree: True for a part openpyxl loads whole, None to decide by its root element (a worksheet
        or shared strings root is streamed). :param collect: ``collect(local_name, attrs)`` for each
        element outside rows and strings ([Content_Types].xml, relationships).
    """
    import pyexpat

    scan = _PartScan(info, limits, tree, collect, budget)
    parser = pyexpat.ParserCreate(namespace_separator=" ")
    scan.attach(parser)
    fed = 0
    with archive.open(info) as member:
        try:
            while block := member.read(_BLOCK):
                parser.Parse(block, False)
                fed += len(block)
                over(fed - scan.last_event, limits.max_token_bytes, XLSX_MARKUP_TOO_LARGE,
                      f"{shown(info.filename)} has a tag or comment of more than {{limit:,}} bytes")
            parser.Parse(b"", True)
        except pyexpat.ExpatError as exc:
            raise UnreadableFile(NOT_XLSX, f"the part {shown(info.filename)} is not well-formed XML "
                                 f"(line {exc.lineno}, column {exc.offset}: {pyexpat.ErrorString(exc.code)})",
                                 {"part": shown(info.filename), "line": exc.lineno}) from None
    scan.finish()
    return scan.events


class _PartScan:
    """Counters for one XML part; the handlers raise UnreadableFile as soon as a limit is passed.

    A *record* is a row (with its cells) or a shared string: openpyxl builds and clears one at a time
    in the parts it streams (worksheets, shared strings), so records have caps of their own there;
    everything else in such a part, and the whole of any other part, stays in openpyxl's tree
    (*kept*: elements, text, attributes). Rows, cells and dimensions count in every part.
    """

    def __init__(self, info, limits: WorkbookLimits, tree: bool | None, collect, budget: int) -> None:
        self.part, self.size, self.limits, self.tree, self.collect = shown(info.filename), info.file_size, limits, tree, collect
        self.max_record_elements, self.max_record_chars = limits.max_record_elements, limits.max_record_chars
        self.max_cell_chars, self.max_string_chars = 2 * limits.max_string_chars, limits.max_string_chars
        self.parser = None
        self.budget, self.events = budget, 0  # events: kept elements, whole records, comments counted so far
        self.last_event = self.depth = 0
        self.open_rows: list[list[int]] = []  # [depth, cells, last column] of each open row element
        self.record_depth = self.cell_depth = 0  # depth of the outermost open record / of the open cell
        self.cell_level = self.watch = 0  # depth of the innermost row's cells / deepest depth whose end counts
        self.in_string = False
        self.kept_elements = self.kept_chars = self.record_elements = self.record_chars = self.cell_chars = 0
        self.rows = self.row_number = self.last_row = self.widest = self.strings = self.string_chars = 0

    def attach(self, parser) -> None:
        self.parser = parser
        parser.buffer_text = True
        parser.StartElementHandler = self.start
        parser.EndElementHandler = self.end
        parser.CharacterDataHandler = self.text
        parser.CommentHandler = parser.ProcessingInstructionHandler = self.other
        parser.StartDoctypeDeclHandler = parser.EntityDeclHandler = self.doctype

    def doctype(self, *_: Any) -> None:
        raise UnreadableFile(XLSX_XML_DTD, f"the part {self.part} declares a DTD or entities (an XML bomb?); "
                             "spreadsheet applications never write one", {"part": self.part})

    def other(self, *_: Any) -> None:
        self.last_event = self.parser.CurrentByteIndex
        self._count(1)

    def start(self, name: str, attrs: dict) -> None:
        depth = self.depth = self.depth + 1
        if self.record_depth:  # hot path: the elements of rows and strings
            self.record_elements += 1
            if self.record_elements > self.max_record_elements:
                self._markup(f"a row or string of more than {self.max_record_elements:,} elements")
            if depth == self.cell_level:
                self._cell(attrs.get("r"))
            if not self.tree and name not in _RECORD_TAGS:
                return
        elif depth == 1:
            self._root(name)
        if name == _ROW:
            self._row(attrs)
        elif name == _SI:
            self._string()
        elif name == _DIMENSION:
            self._dimension(str(attrs.get("ref", "")))
        if self.tree or not self.record_depth:
            self._keep(name, attrs)

    def end(self, _name: str) -> None:
        depth = self.depth
        self.depth = depth - 1
        if depth > self.watch:
            return
        if depth == self.cell_depth:
            self.cell_depth = 0
        rows = self.open_rows
        if rows and rows[-1][0] == depth:
            rows.pop()
            self.cell_level = rows[-1][0] + 1 if rows else 0
        if depth == self.record_depth:
            self.record_depth, self.in_string = 0, False
            self._cells_so_far()
            if not self.tree:  # a tree part counts each element as it is kept
                self._count(self.record_elements + 1)
        self.watch = max(self.cell_depth, rows[-1][0] if rows else self.record_depth)

    def text(self, data: str) -> None:
        size = len(data)
        if self.tree or not self.record_depth:
            self.last_event = self.parser.CurrentByteIndex
            self._kept_text(size)
            if not self.record_depth:
                return
        self.record_chars += size
        if self.record_chars > self.max_record_chars:
            self._markup(f"a row or string of more than {self.max_record_chars:,} characters")
        if self.in_string:
            self.last_event = self.parser.CurrentByteIndex
            self.string_chars += size
            if self.record_chars > self.max_string_chars:
                self._too_long(f"shared string #{self.strings:,}", self.max_string_chars)
            if self.string_chars > self.limits.max_shared_string_chars:
                self._strings(f"more than {self.limits.max_shared_string_chars:,} characters of shared strings")
        elif self.cell_depth:
            self.cell_chars += size
            if self.cell_chars > self.max_cell_chars:
                self._too_long(f"a cell in row {self.row_number:,}", self.max_cell_chars)

    def finish(self) -> None:
        self._cells_so_far()

    # -- the rules ------------------------------------------------------------------------------------

    def _root(self, name: str) -> None:
        if self.tree is None:
            self.tree = name not in _STREAMED_ROOTS
        if self.tree:
            over(self.size, self.limits.max_tree_part_bytes, XLSX_MARKUP_TOO_LARGE,
                  f"the part {self.part} is read whole and is {{value:,}} bytes; the limit is {{limit:,}}")

    def _kept_text(self, chars: int) -> None:
        self.kept_chars += chars
        if self.kept_chars > self.limits.max_tree_text_chars:
            self._markup(f"more than {self.limits.max_tree_text_chars:,} characters of text and attributes a reader "
                         "keeps in memory")

    def _count(self, events: int) -> None:
        self.events += events
        if self.events > self.budget:
            self._markup(f"more XML elements than the {self.limits.max_elements:,} a workbook may have in all")

    def _keep(self, name: str, attrs: dict) -> None:
        self.last_event = self.parser.CurrentByteIndex
        self._count(1)
        self.kept_elements += 1
        if self.kept_elements > self.limits.max_tree_elements:
            self._markup(f"more than {self.limits.max_tree_elements:,} elements a reader keeps in memory")
        if attrs:
            self._kept_text(sum(map(len, attrs)) + sum(map(len, attrs.values())))
        if self.collect:
            self.collect(name.rpartition(" ")[2], attrs)

    def _row(self, attrs: dict) -> None:
        self.last_event = self.parser.CurrentByteIndex
        number = attrs.get("r")
        self.rows += 1
        self.row_number = _row_number(number, self.part) if number is not None else self.row_number + 1
        self.last_row = max(self.last_row, self.row_number)
        if max(self.rows, self.last_row) > self.limits.max_rows:
            what = f"a row numbered {self.row_number:,}" if self.row_number > self.rows else f"more than {self.limits.max_rows:,} rows"
            raise UnreadableFile(XLSX_TOO_MANY_ROWS, f"the sheet {self.part} has {what}; the limit for this document type "
                                 f"is {self.limits.max_rows:,} rows (send large files as CSV)",
                                 {"part": self.part, "limit": self.limits.max_rows})
        self.open_rows.append([self.depth, 0, 0])
        self.cell_level = self.depth + 1
        self.watch = self.depth
        if not self.record_depth:
            self.record_depth, self.record_elements, self.record_chars = self.depth, 0, 0
            # openpyxl keeps a row's attributes when it has one beyond r and spans outside a namespace
            # (ht, s, hidden...; Excel's x14ac:dyDescent on every row does not count)
            if not self.tree and len(attrs) > 1 and any(" " not in k and k not in ("r", "spans") for k in attrs):
                self._kept_text(sum(map(len, attrs)) + sum(map(len, attrs.values())))

    def _cell(self, reference: str | None) -> None:
        self.last_event = self.parser.CurrentByteIndex
        row = self.open_rows[-1]
        row[1] += 1
        if reference:
            column = _columns.get(reference.rstrip(_DIGITS)) or _column_number(reference, self.part)
        else:
            column = row[2] + 1
        row[2] = column
        width = column if column > row[1] else row[1]
        if width > self.widest:
            if width > self.limits.max_columns:
                raise UnreadableFile(XLSX_TOO_MANY_COLUMNS, f"row {self.row_number:,} of {self.part} has more than "
                                     f"{self.limits.max_columns:,} columns", {"part": self.part, "limit": self.limits.max_columns})
            self.widest = width
        self.cell_depth = self.watch = self.depth
        self.cell_chars = 0

    def _cells_so_far(self) -> None:
        if self.last_row * self.widest > self.limits.max_cells:
            raise UnreadableFile(XLSX_TOO_MANY_CELLS, f"the sheet {self.part} spans {self.last_row:,} rows x "
                                 f"{self.widest:,} columns, more than {self.limits.max_cells:,} cells",
                                 {"part": self.part, "limit": self.limits.max_cells})

    def _string(self) -> None:
        self.last_event = self.parser.CurrentByteIndex
        self.strings += 1
        if self.strings > self.limits.max_shared_strings:
            self._strings(f"more than {self.limits.max_shared_strings:,} shared strings")
        if not self.record_depth:
            self.record_depth, self.record_elements, self.record_chars, self.in_string = self.depth, 0, 0, True
            self.watch = max(self.watch, self.depth)

    def _dimension(self, ref: str) -> None:
        """The declared size: openpyxl pads every row to its width."""
        last = ref.rpartition(":")[2].replace("$", "").strip()
        letters = last.rstrip("0123456789")
        columns = _column_number(letters, self.part) if letters else 0
        rows = _row_number(last[len(letters):], self.part) if last[len(letters):] else 0
        details = {"part": self.part, "dimension": shown(ref[:40])}
        for code, value, limit, what in (  # columns first: their cap is the same for every document type
            (XLSX_TOO_MANY_COLUMNS, columns, self.limits.max_columns, "columns"),
            (XLSX_TOO_MANY_ROWS, rows, self.limits.max_rows, "rows"),
            (XLSX_TOO_MANY_CELLS, rows * columns, self.limits.max_cells, "cells"),
        ):
            if value > limit:
                raise UnreadableFile(code, f"the sheet {self.part} declares {value:,} {what} ({details['dimension']}); "
                                     f"the limit for this document type is {limit:,}", details)
        self.widest = max(self.widest, columns)

    def _markup(self, what: str) -> None:
        raise UnreadableFile(XLSX_MARKUP_TOO_LARGE, f"the part {self.part} has {what}", {"part": self.part})

    def _too_long(self, where: str, limit: int) -> None:
        raise UnreadableFile(XLSX_STRING_TOO_LONG, f"{where} in {self.part} is longer than {limit:,} characters "
                             "(a spreadsheet cell holds at most 32,767)", {"part": self.part, "limit": limit})

    def _strings(self, what: str) -> None:
        raise UnreadableFile(XLSX_SHARED_STRINGS_TOO_LARGE, f"the workbook has {what} ({self.part})", {"part": self.part})


_columns: dict[str, int] = {}


def _column_number(reference: str, part: str) -> int:
    """1-based column of a cell reference (``AB12``, ``$AB$12``, or just its letters), as openpyxl reads it."""
    stripped = reference.rstrip(_DIGITS)
    letters = stripped.replace("$", "").upper()
    if not (0 < len(letters) <= 3 and letters.isascii() and letters.isalpha()):
        raise UnreadableFile(NOT_XLSX, f"{part} has an invalid cell reference {shown(reference[:20])}", {"part": part})
    number = 0
    for letter in letters:
        number = number * 26 + ord(letter) - 64
    if len(_columns) < 20_000:
        _columns[stripped] = number
    return number


def _row_number(text: str, part: str) -> int:
    """A row number as openpyxl reads it (``int``, else an integral float such as ``5.0``)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value.is_integer():
        raise UnreadableFile(NOT_XLSX, f"{part} has an invalid row number {shown(text[:20])}", {"part": part})
    return int(value)


def over(value: int, limit: int, code: str, message: str) -> None:
    if value > limit:
        raise UnreadableFile(code, message.format(value=value, limit=limit), {"value": value, "limit": limit})


def shown(text: str) -> str:
    """A name taken from the file, escaped and short (messages carry no more than an excerpt)."""
    shown = text if len(text) <= 80 else text[:79] + "…"
    return repr(shown)[1:-1]


def short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:199] + "…"
