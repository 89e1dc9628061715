"""Bound an XLSX workbook before openpyxl reads it: refuse what would cost unbounded memory or time.

openpyxl trusts the workbook: it inflates parts as the zip declares them, keeps every element it does
not know (and every cleared row) in its tree, loads all shared strings, pads each row to the declared
dimension and fills missing rows up to the last row number. A 2 MB file of whitespace reached 4 GB
RSS, 2.7 KB declaring ``A1:XFD1048576`` ran for minutes. :func:`inspect_workbook` runs first, in
bounded memory (one 1 MiB block, expat with no tree) and time (it reads at most
``max_total_bytes`` of XML), and raises :class:`~include.checks.errors.UnreadableFile` with a reason:

1. the zip's end record and central directory (before :mod:`zipfile` builds one object per entry):
   file size, member count, duplicate names, stored/deflate only, per-member compression ratio and
   total uncompressed size (``xlsx_too_large``, ``xlsx_compression_ratio``). :mod:`zipfile` never
   returns more than a member declares (and checks its CRC), so these sizes are real bounds;
2. active content (``xlsx_active_content``: VBA projects, Excel 4.0 macro sheets, ActiveX, OLE
   objects, macro-enabled content types) and links that make a spreadsheet fetch or update from
   elsewhere (``xlsx_external_links``: ``externalLinks/`` parts, external relationships except
   hyperlinks);
3. every XML part, streamed with expat: no DTD at all (``xlsx_xml_dtd``: entity bombs, external
   entities), no token (tag, comment) over ``max_token_bytes``; rows and columns (row numbers,
   cell references, the declared dimension) against the document type's caps (``xlsx_too_many_rows``,
   ``xlsx_too_many_columns``, ``xlsx_too_many_cells``); cell text and shared strings
   (``xlsx_string_too_long``, ``xlsx_shared_strings_too_large``); and what openpyxl would keep in
   memory: parts it loads whole (workbook, styles, relationships...) and everything outside rows
   and strings in the parts it streams (``xlsx_markup_too_large``).

Caps per document type (suite name) are :data:`DOCUMENT_TYPE_LIMITS` over :data:`DEFAULT_LIMITS`
(docs/checks.md). A workbook that passed is remembered per process (path, size, mtime, inode, limits)
so re-reads of the same file do not pay again. Standard library only.
"""
from __future__ import annotations

import posixpath
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from include.checks.errors import (
    NOT_XLSX,
    XLSX_ACTIVE_CONTENT,
    XLSX_COMPRESSION_RATIO,
    XLSX_EXTERNAL_LINKS,
    XLSX_MARKUP_TOO_LARGE,
    XLSX_SHARED_STRINGS_TOO_LARGE,
    XLSX_STRING_TOO_LONG,
    XLSX_TOO_LARGE,
    XLSX_TOO_MANY_CELLS,
    XLSX_TOO_MANY_COLUMNS,
    XLSX_TOO_MANY_ROWS,
    XLSX_XML_DTD,
    UnreadableFile,
)

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


_passed: dict[tuple, None] = {}
_MAX_REMEMBERED = 256


def inspect_workbook(path: str | Path, limits: WorkbookLimits = DEFAULT_LIMITS) -> None:
    """Return if ``path`` is a workbook within ``limits``; raise :class:`UnreadableFile` otherwise.

    :raises FileNotFoundError: the path does not exist (a caller bug, not bad input).
    """
    import zipfile
    import zlib

    stat = Path(path).stat()
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino, limits)
    if key in _passed:
        return
    _over(stat.st_size, limits.max_file_bytes, XLSX_TOO_LARGE, "the file is {value:,} bytes; the limit is {limit:,}")
    with open(path, "rb") as handle:
        _check_end_record(handle, stat.st_size, limits)
        try:
            archive = zipfile.ZipFile(handle)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, struct.error) as exc:
            raise UnreadableFile(NOT_XLSX, f"not a readable .xlsx workbook: {_short(exc)}") from None
        with archive:
            try:
                _inspect_archive(archive, limits)
            except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError, ValueError) as exc:
                # a CRC or size that does not match, a broken deflate stream, an unsupported feature
                raise UnreadableFile(NOT_XLSX, f"a workbook part cannot be unpacked: {_short(exc)}") from None
    if len(_passed) >= _MAX_REMEMBERED:
        _passed.clear()
    _passed[key] = None


def _inspect_archive(archive, limits: WorkbookLimits) -> None:
    infos = _check_members(archive.infolist(), limits)
    names = {info.filename: info for info in infos}
    if "[Content_Types].xml" not in names:
        raise UnreadableFile(NOT_XLSX, "not an .xlsx workbook: it has no [Content_Types].xml")
    package = _Package()
    _scan(archive, names["[Content_Types].xml"], limits, tree=True, collect=package.content_type)
    for info in infos:
        if info.filename.lower().endswith(".rels"):
            _scan(archive, info, limits, tree=True, collect=package.relationship)
    package.check(limits)
    for info in infos:
        if info.filename == "[Content_Types].xml" or info.filename.lower().endswith(".rels") or info.is_dir():
            continue
        if _looks_like_xml(archive, info):
            _scan(archive, info, limits, tree=info.filename in package.tree_parts or None)


# ------------------------------------------------------------------------------------------- the zip


def _check_end_record(handle, size: int, limits: WorkbookLimits) -> None:
    """Member count and central directory size from the end record, found as :mod:`zipfile` finds it."""
    tail_length = min(size, 22 + 0xFFFF + 20 + 56)
    handle.seek(size - tail_length)
    tail = handle.read(tail_length)
    at = len(tail) - 22 if tail[-22:-18] == b"PK\x05\x06" and tail[-2:] == b"\0\0" else tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return  # no end record: zipfile refuses the file
    entries, directory_bytes = struct.unpack("<10xHI", tail[at:at + 16])
    if (entries == 0xFFFF or directory_bytes == 0xFFFFFFFF) and at >= 76 and tail[at - 20:at - 16] == b"PK\x06\x07":
        record = tail[at - 76:at - 20]
        if record[:4] == b"PK\x06\x06":
            entries, directory_bytes = struct.unpack("<32xQQ", record[:48])
    _over(entries, limits.max_members, XLSX_TOO_LARGE, "the workbook has {value:,} parts; the limit is {limit:,}")
    _over(directory_bytes, limits.max_members * 1024, XLSX_TOO_LARGE,
          "the zip directory is {value:,} bytes; the limit is {limit:,}")


def _check_members(infos, limits: WorkbookLimits):
    import zipfile

    _over(len(infos), limits.max_members, XLSX_TOO_LARGE, "the workbook has {value:,} parts; the limit is {limit:,}")
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        if name.lower() in seen:
            raise UnreadableFile(NOT_XLSX, f"the part {_shown(name)} appears twice in the zip", {"part": _shown(name)})
        seen.add(name.lower())
        if info.flag_bits & 0x1:
            raise UnreadableFile(NOT_XLSX, f"the part {_shown(name)} is encrypted", {"part": _shown(name)})
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise UnreadableFile(NOT_XLSX, f"the part {_shown(name)} uses a compression no spreadsheet writes "
                                 f"(method {info.compress_type})", {"part": _shown(name)})
        if info.file_size >= limits.ratio_floor_bytes and info.file_size > limits.max_compression_ratio * max(1, info.compress_size):
            ratio = info.file_size // max(1, info.compress_size)
            raise UnreadableFile(
                XLSX_COMPRESSION_RATIO,
                f"the part {_shown(name)} inflates {ratio:,}:1 ({info.compress_size:,} to {info.file_size:,} bytes); "
                f"real workbooks stay below {limits.max_compression_ratio}:1 (a zip bomb?)",
                {"part": _shown(name), "ratio": ratio, "limit": limits.max_compression_ratio},
            )
        total += info.file_size
        _over(total, limits.max_total_bytes, XLSX_TOO_LARGE,
              "the workbook unpacks to more than {limit:,} bytes (at least {value:,}); send large files as CSV")
        _refuse_by_name(name)
    return infos


def _refuse_by_name(name: str) -> None:
    lower = name.lower()
    if lower.rpartition("/")[2] in ("vbaproject.bin", "vbaprojectsignature.bin") or any(
        marker in lower for marker in ("/macrosheets/", "/activex/", "/embeddings/oleobject")
    ):
        raise UnreadableFile(XLSX_ACTIVE_CONTENT, f"the workbook contains macros or other active content "
                             f"({_shown(name)}); save it as a plain .xlsx without macros", {"part": _shown(name)})
    if "/externallinks/" in "/" + lower:
        raise UnreadableFile(XLSX_EXTERNAL_LINKS, f"the workbook links to other workbooks ({_shown(name)}); "
                             "break the links (paste values) and send it again", {"part": _shown(name)})


def _looks_like_xml(archive, info) -> bool:
    """XML by its first bytes, not its name or content type (openpyxl parses what the relationships name)."""
    with archive.open(info) as member:
        head = member.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head[:1] == b"<" or head[:2] in (b"\xff\xfe", b"\xfe\xff", b"\x00<")


# -------------------------------------------------------------------------------------- the package

_WORKBOOK_TYPES = ("sheet.main+xml", "template.main+xml", "macroenabled.main+xml")
_ACTIVE_TYPES = ("macroenabled", "vbaproject", "macrosheet", "activex", "oleobject")
_HYPERLINK = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/hyperlink"
#: Parts openpyxl loads whole by their fixed names (workbook parts and chartsheets are added as found).
_TREE_PARTS = ("xl/workbook.xml", "xl/styles.xml", "docProps/core.xml", "docProps/custom.xml", "xl/theme/theme1.xml")


class _Package:
    """What [Content_Types].xml and the relationships say: refusals, and which parts are loaded whole."""

    def __init__(self) -> None:
        self.tree_parts = set(_TREE_PARTS)
        self.active: list[str] = []
        self.external: list[str] = []
        self.source = ""

    def content_type(self, local: str, attrs: dict) -> None:
        kind = str(attrs.get("ContentType", "")).lower()
        if local not in ("Default", "Override") or not kind:
            return
        if any(marker in kind for marker in _ACTIVE_TYPES):
            self.active.append(kind)
        if "externallink" in kind:
            self.external.append(kind)
        if local == "Override" and kind.endswith(_WORKBOOK_TYPES):
            self.tree_parts.add(str(attrs.get("PartName", "")).lstrip("/"))

    def relationship(self, local: str, attrs: dict) -> None:
        if local != "Relationship":
            return
        kind, target = str(attrs.get("Type", "")), str(attrs.get("Target", ""))
        if kind.lower().endswith(("/vbaproject", "/activexcontrol", "/oleobject")):
            self.active.append(kind)
        external = str(attrs.get("TargetMode", "")).lower() == "external"
        if kind.lower().endswith(("/externallink", "/externallinkpath")) or (external and kind != _HYPERLINK):
            self.external.append(f"{kind.rpartition('/')[2]} -> {target}")
        if "chartsheet" in kind.lower() and not external:
            self.tree_parts.add(posixpath.normpath(posixpath.join(self.source, target)).lstrip("/"))

    def check(self, limits: WorkbookLimits) -> None:
        if self.active:
            raise UnreadableFile(XLSX_ACTIVE_CONTENT, f"the workbook declares macros or other active content "
                                 f"({_shown(self.active[0])}); save it as a plain .xlsx without macros",
                                 {"found": [_shown(a) for a in self.active[:5]]})
        if self.external:
            raise UnreadableFile(XLSX_EXTERNAL_LINKS, f"the workbook links to outside content ({_shown(self.external[0])}); "
                                 "break the links (paste values) and send it again",
                                 {"found": [_shown(e) for e in self.external[:5]]})


# ------------------------------------------------------------------------------------------ the XML

_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main "
_STREAMED_ROOTS = (_MAIN + "worksheet", _MAIN + "sst")
_ROW, _SI, _DIMENSION = _MAIN + "row", _MAIN + "si", _MAIN + "dimension"
_RECORD_TAGS = frozenset((_ROW, _SI, _DIMENSION))
_DIGITS = "0123456789"
_BLOCK = _MiB


def _scan(archive, info, limits: WorkbookLimits, *, tree: bool | None, collect=None) -> None:
    """Stream one part through expat with a :class:`_PartScan`; ``tree=None``: decided by the root."""
    import pyexpat

    scan = _PartScan(info, limits, tree, collect)
    parser = pyexpat.ParserCreate(namespace_separator=" ")
    scan.attach(parser)
    fed = 0
    with archive.open(info) as member:
        try:
            while block := member.read(_BLOCK):
                parser.Parse(block, False)
                fed += len(block)
                _over(fed - scan.last_event, limits.max_token_bytes, XLSX_MARKUP_TOO_LARGE,
                      f"{_shown(info.filename)} has a tag or comment of more than {{limit:,}} bytes")
            parser.Parse(b"", True)
        except pyexpat.ExpatError as exc:
            raise UnreadableFile(NOT_XLSX, f"the part {_shown(info.filename)} is not well-formed XML "
                                 f"(line {exc.lineno}, column {exc.offset}: {pyexpat.ErrorString(exc.code)})",
                                 {"part": _shown(info.filename), "line": exc.lineno}) from None
    scan.finish()


class _PartScan:
    """Counters for one XML part; the handlers raise UnreadableFile as soon as a limit is passed.

    A *record* is a row (with its cells) or a shared string: openpyxl builds and clears one at a time
    in the parts it streams (worksheets, shared strings), so records have caps of their own there;
    everything else in such a part, and the whole of any other part, stays in openpyxl's tree
    (*kept*: elements, text, attributes). Rows, cells and dimensions count in every part.
    """

    def __init__(self, info, limits: WorkbookLimits, tree: bool | None, collect) -> None:
        self.part, self.size, self.limits, self.tree, self.collect = _shown(info.filename), info.file_size, limits, tree, collect
        self.max_record_elements, self.max_record_chars = limits.max_record_elements, limits.max_record_chars
        self.max_cell_chars, self.max_string_chars = 2 * limits.max_string_chars, limits.max_string_chars
        self.parser = None
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
        self.watch = max(self.cell_depth, rows[-1][0] if rows else self.record_depth)

    def text(self, data: str) -> None:
        size = len(data)
        if self.tree or not self.record_depth:
            self.last_event = self.parser.CurrentByteIndex
            self.kept_chars += size
            if self.kept_chars > self.limits.max_tree_text_chars:
                self._markup(f"more than {self.limits.max_tree_text_chars:,} characters a reader keeps in memory")
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
            _over(self.size, self.limits.max_tree_part_bytes, XLSX_MARKUP_TOO_LARGE,
                  f"the part {self.part} is read whole and is {{value:,}} bytes; the limit is {{limit:,}}")

    def _keep(self, name: str, attrs: dict) -> None:
        self.last_event = self.parser.CurrentByteIndex
        self.kept_elements += 1
        if self.kept_elements > self.limits.max_tree_elements:
            self._markup(f"more than {self.limits.max_tree_elements:,} elements a reader keeps in memory")
        if attrs:
            self.kept_chars += sum(map(len, attrs)) + sum(map(len, attrs.values()))
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
            if not self.tree and set(attrs) - {"r", "spans"}:  # openpyxl keeps a formatted row's attributes
                self.kept_chars += sum(map(len, attrs)) + sum(map(len, attrs.values()))

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
        details = {"part": self.part, "dimension": _shown(ref[:40])}
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
        raise UnreadableFile(NOT_XLSX, f"{part} has an invalid cell reference {_shown(reference[:20])}", {"part": part})
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
        raise UnreadableFile(NOT_XLSX, f"{part} has an invalid row number {_shown(text[:20])}", {"part": part})
    return int(value)


def _over(value: int, limit: int, code: str, message: str) -> None:
    if value > limit:
        raise UnreadableFile(code, message.format(value=value, limit=limit), {"value": value, "limit": limit})


def _shown(text: str) -> str:
    """A name taken from the file, escaped and short (messages carry no more than an excerpt)."""
    shown = text if len(text) <= 80 else text[:79] + "…"
    return repr(shown)[1:-1]


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:199] + "…"
