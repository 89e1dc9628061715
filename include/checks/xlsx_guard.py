"""Bound an XLSX workbook before openpyxl reads it: refuse what would cost unbounded memory or time.

openpyxl trusts the workbook: it inflates parts as the zip declares them, keeps every element it does
not know (and every cleared row) in its tree, loads all shared strings, pads each row to the declared
dimension and fills missing rows up to the last row number. A 2 MB file of whitespace reached 4 GB
RSS, 2.7 KB declaring ``A1:XFD1048576`` ran for minutes. :func:`inspect_workbook` runs first, in
bounded memory (one 1 MiB block, expat with no tree: :mod:`include.checks.xlsx_scan`) and time (at
most ``max_total_bytes`` of XML and ``max_elements`` elements), and raises
:class:`~include.checks.errors.UnreadableFile` with a reason:

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
from pathlib import Path

from include.checks.errors import (
    NOT_XLSX,
    XLSX_ACTIVE_CONTENT,
    XLSX_COMPRESSION_RATIO,
    XLSX_EXTERNAL_LINKS,
    XLSX_TOO_LARGE,
    UnreadableFile,
)
from include.checks.xlsx_limits import DEFAULT_LIMITS, DOCUMENT_TYPE_LIMITS, WorkbookLimits, limits_for
from include.checks.xlsx_scan import over, scan_part, short, shown

_MiB = 1 << 20


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
    over(stat.st_size, limits.max_file_bytes, XLSX_TOO_LARGE, "the file is {value:,} bytes; the limit is {limit:,}")
    with open(path, "rb") as handle:
        _check_end_record(handle, stat.st_size, limits)
        try:
            archive = zipfile.ZipFile(handle)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, struct.error) as exc:
            raise UnreadableFile(NOT_XLSX, f"not a readable .xlsx workbook: {short(exc)}") from None
        with archive:
            try:
                _inspect_archive(archive, limits)
            except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError, RuntimeError, ValueError) as exc:
                # a CRC or size that does not match, a broken deflate stream, an unsupported feature
                raise UnreadableFile(NOT_XLSX, f"a workbook part cannot be unpacked: {short(exc)}") from None
    if len(_passed) >= _MAX_REMEMBERED:
        _passed.clear()
    _passed[key] = None


def _inspect_archive(archive, limits: WorkbookLimits) -> None:
    infos = _check_members(archive.infolist(), limits)
    names = {info.filename: info for info in infos}
    if "[Content_Types].xml" not in names:
        raise UnreadableFile(NOT_XLSX, "not an .xlsx workbook: it has no [Content_Types].xml")
    package = _Package(limits)
    budget = limits.max_elements
    budget -= scan_part(archive, names["[Content_Types].xml"], limits, budget=budget, tree=True, collect=package.content_type)
    for info in infos:
        if info.filename.lower().endswith(".rels"):
            package.source = posixpath.dirname(posixpath.dirname(info.filename))  # xl/_rels/x.rels: relative to xl/
            budget -= scan_part(archive, info, limits, budget=budget, tree=True, collect=package.relationship)
    package.check()
    for info in infos:
        if info.filename == "[Content_Types].xml" or info.filename.lower().endswith(".rels") or info.is_dir():
            continue
        if _looks_like_xml(archive, info):
            budget -= scan_part(archive, info, limits, budget=budget, tree=info.filename in package.tree_parts or None)


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
    over(entries, limits.max_members, XLSX_TOO_LARGE, "the workbook has {value:,} parts; the limit is {limit:,}")
    over(directory_bytes, limits.max_members * 1024, XLSX_TOO_LARGE,
          "the zip directory is {value:,} bytes; the limit is {limit:,}")


def _check_members(infos, limits: WorkbookLimits):
    import zipfile

    over(len(infos), limits.max_members, XLSX_TOO_LARGE, "the workbook has {value:,} parts; the limit is {limit:,}")
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        if name.lower() in seen:
            raise UnreadableFile(NOT_XLSX, f"the part {shown(name)} appears twice in the zip", {"part": shown(name)})
        seen.add(name.lower())
        if info.flag_bits & 0x1:
            raise UnreadableFile(NOT_XLSX, f"the part {shown(name)} is encrypted", {"part": shown(name)})
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise UnreadableFile(NOT_XLSX, f"the part {shown(name)} uses a compression no spreadsheet writes "
                                 f"(method {info.compress_type})", {"part": shown(name)})
        if info.file_size >= limits.ratio_floor_bytes and info.file_size > limits.max_compression_ratio * max(1, info.compress_size):
            ratio = info.file_size // max(1, info.compress_size)
            raise UnreadableFile(
                XLSX_COMPRESSION_RATIO,
                f"the part {shown(name)} inflates {ratio:,}:1 ({info.compress_size:,} to {info.file_size:,} bytes); "
                f"real workbooks stay below {limits.max_compression_ratio}:1 (a zip bomb?)",
                {"part": shown(name), "ratio": ratio, "limit": limits.max_compression_ratio},
            )
        total += info.file_size
        over(total, limits.max_total_bytes, XLSX_TOO_LARGE,
              "the workbook unpacks to more than {limit:,} bytes (at least {value:,}); send large files as CSV")
        _refuse_by_name(name)
    return infos


def _refuse_by_name(name: str) -> None:
    lower = name.lower()
    if lower.rpartition("/")[2] in ("vbaproject.bin", "vbaprojectsignature.bin") or any(
        marker in lower for marker in ("/macrosheets/", "/activex/", "/embeddings/oleobject")
    ):
        raise UnreadableFile(XLSX_ACTIVE_CONTENT, f"the workbook contains macros or other active content "
                             f"({shown(name)}); save it as a plain .xlsx without macros", {"part": shown(name)})
    if "/externallinks/" in "/" + lower:
        raise UnreadableFile(XLSX_EXTERNAL_LINKS, f"the workbook links to other workbooks ({shown(name)}); "
                             "break the links (paste values) and send it again", {"part": shown(name)})


def _looks_like_xml(archive, info) -> bool:
    """XML by its first bytes, not its name or content type (openpyxl parses what the relationships name)."""
    with archive.open(info) as member:
        head = member.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head[:1] == b"<" or head[:2] in (b"\xff\xfe", b"\xfe\xff", b"\x00<")


# -------------------------------------------------------------------------------------- the package

_WORKBOOK_TYPES = ("sheet.main+xml", "template.main+xml", "macroenabled.main+xml")
_ACTIVE_TYPES = ("macroenabled", "vbaproject", "macrosheet", "activex", "oleobject")
#: Parts openpyxl loads whole by their fixed names (workbook parts and chartsheets are added as found).
_TREE_PARTS = ("xl/workbook.xml", "xl/styles.xml", "docProps/core.xml", "docProps/custom.xml", "xl/theme/theme1.xml")


class _Package:
    """What [Content_Types].xml and the relationships say: refusals, and which parts are loaded whole."""

    def __init__(self, limits: WorkbookLimits) -> None:
        self.allow_hyperlinks = limits.allow_hyperlinks
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
        hyperlink = kind.lower().endswith("/hyperlink") and self.allow_hyperlinks  # transitional or strict OOXML
        if kind.lower().endswith(("/externallink", "/externallinkpath")) or (external and not hyperlink):
            self.external.append(f"{kind.rpartition('/')[2]} -> {target}")
        if "chartsheet" in kind.lower() and not external:
            self.tree_parts.add(posixpath.normpath(posixpath.join(self.source, target)).lstrip("/"))

    def check(self) -> None:
        if self.active:
            raise UnreadableFile(XLSX_ACTIVE_CONTENT, f"the workbook declares macros or other active content "
                                 f"({shown(self.active[0])}); save it as a plain .xlsx without macros",
                                 {"found": [shown(a) for a in self.active[:5]]})
        if self.external:
            raise UnreadableFile(XLSX_EXTERNAL_LINKS, f"the workbook links to outside content ({shown(self.external[0])}); "
                                 "break the links (paste values) and send it again",
                                 {"found": [shown(e) for e in self.external[:5]]})
