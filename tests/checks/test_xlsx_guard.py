"""xlsx_guard: hostile workbooks are refused with their reason, in bounded memory and time; real ones pass.

The hostile workbooks are written here with zipfile, part by part (tests/data/bad_inputs.write_xlsx_package):
small on disk, huge once inflated. They are read in a child process (``read_table``, the path every
check takes) that reports its reason code and its own peak RSS (VmHWM), so a guard that let openpyxl
loose would show as gigabytes there, not take this test process down.
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from include.checks import validate_file
from include.checks.errors import READ_REASON_CODES, UnreadableFile
from include.checks.xlsx_guard import DEFAULT_LIMITS, WorkbookLimits, inspect_workbook, limits_for
from tests.data.bad_inputs import (
    DOC_TYPES,
    XLSX_MAIN_NS,
    XLSX_MACRO_WORKBOOK_TYPE,
    XLSX_WORKBOOK_TYPE,
    make_valid_file,
    valid_rows,
    write_xlsx_package,
    xlsx_rows_xml,
    xlsx_worksheet,
)

REPO = Path(__file__).resolve().parents[2]
GiB, MiB = 1 << 30, 1 << 20
HEADER, ROWS = valid_rows("invoice", 5, seed=3)
BODY = xlsx_rows_xml(HEADER, ROWS)
#: the other caps wide open, so one rule at a time is what refuses
NO_RATIO = {"max_compression_ratio": 10**9, "max_total_bytes": 8 * GiB, "max_file_bytes": 8 * GiB}

_CHILD = """
import json, sys, time
from dataclasses import replace
from include.checks.errors import UnreadableFile
from include.checks.reading import read_table
from include.checks.xlsx_guard import limits_for

path, document_type, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
started = time.perf_counter()
try:
    read_table(path, "xlsx", xlsx_limits=replace(limits_for(document_type), **overrides))
    reason = None
except UnreadableFile as exc:
    reason = exc.reason_code
# VmHWM: this process's own peak (ru_maxrss would include the parent's pages at fork time)
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({"reason": reason, "seconds": time.perf_counter() - started,
                  "peak_rss": int(status["VmHWM"].split()[0]) * 1024}))
"""


def _read_in_child(path: Path, document_type: str = "invoice", **overrides) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run([sys.executable, "-c", _CHILD, str(path), document_type, json.dumps(overrides)],
                          capture_output=True, text=True, timeout=120, env=env, check=True)  # "ends at all"
    return json.loads(done.stdout.strip().splitlines()[-1])


def _refusal(path: Path, limits: WorkbookLimits = DEFAULT_LIMITS) -> UnreadableFile:
    with pytest.raises(UnreadableFile) as info:
        inspect_workbook(path, limits)
    assert info.value.reason_code in READ_REASON_CODES and info.value.message
    return info.value


def _repeat(piece: bytes, total: int):
    block = piece * max(1, MiB // len(piece))
    for _ in range(total // len(block)):
        yield block


def _whitespace_2gb(path):
    return write_xlsx_package(path, xlsx_worksheet([BODY, *_repeat(b" " * 64, 2 * GiB)]), level=1)


def _empty_rows_1_5gb(path):
    return write_xlsx_package(path, xlsx_worksheet([BODY, *_repeat(b"<row/>", 1536 * MiB)]), level=1)


def _empty_rows_1_5m(path):
    rows = (b"".join(b'<row r="%d"/>' % n for n in range(start, start + 50_000)) for start in range(7, 1_500_007, 50_000))
    return write_xlsx_package(path, xlsx_worksheet([BODY, *rows]))


def _whole_sheet_dimension(path):
    return write_xlsx_package(path, xlsx_worksheet(BODY, dimension="A1:XFD1048576"))


def _shared_string_400mb(path):
    import random

    rng = random.Random(9)  # words from a small vocabulary: inflates ~20:1, like text, not like a bomb
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(32)) for _ in range(16)]
    block = "".join(rng.choice(words) for _ in range(MiB // 32)).encode()
    strings = [f'<sst xmlns="{XLSX_MAIN_NS}"><si><t>'.encode(), *([block] * 400), b"</t></si></sst>"]
    sheet = xlsx_worksheet([BODY, b'<row r="9"><c r="A9" t="s"><v>0</v></c></row>'])
    return write_xlsx_package(path, sheet, shared_strings=strings, level=1)


def _macro_renamed(path):
    return write_xlsx_package(path, xlsx_worksheet(BODY), workbook_type=XLSX_MACRO_WORKBOOK_TYPE,
                              parts={"xl/vbaProject.bin": b"\xd0\xcf\x11\xe0" + bytes(4096)})


def _external_link(path):
    rels = ('<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
            'externalLinkPath" Target="https://evil.example/prices.xlsx" TargetMode="External"/></Relationships>')
    return write_xlsx_package(path, xlsx_worksheet(BODY), parts={
        "xl/externalLinks/externalLink1.xml": f'<externalLink xmlns="{XLSX_MAIN_NS}"/>'.encode(),
        "xl/externalLinks/_rels/externalLink1.xml.rels": rels.encode()})


def _billion_laughs(path):
    entities = b"".join(b'<!ENTITY l%d "%s">' % (i, b"&l%d;" % (i - 1) * 10) for i in range(1, 10))
    prolog = b'<!DOCTYPE worksheet [<!ENTITY l0 "lol">' + entities + b"]>"
    return write_xlsx_package(path, xlsx_worksheet([BODY, b'<row r="9"><c r="A9" t="inlineStr"><is><t>&l9;</t></is></c></row>']),
                              prolog=prolog)


HOSTILE = [
    # (builder, document type, limit overrides, expected reason)
    pytest.param(_whitespace_2gb, "invoice", {}, "xlsx_compression_ratio", id="2GB-whitespace", marks=pytest.mark.slow),
    pytest.param(_whitespace_2gb, "invoice", NO_RATIO, "xlsx_markup_too_large", id="2GB-whitespace-streamed",
                 marks=pytest.mark.slow),
    pytest.param(_empty_rows_1_5gb, "product_file", {}, "xlsx_compression_ratio", id="1.5GB-empty-rows", marks=pytest.mark.slow),
    pytest.param(_empty_rows_1_5gb, "product_file", NO_RATIO, "xlsx_too_many_rows", id="1.5GB-empty-rows-streamed",
                 marks=pytest.mark.slow),
    pytest.param(_empty_rows_1_5m, "invoice", {}, "xlsx_too_many_rows", id="1.5M-rows-invoice"),
    pytest.param(_empty_rows_1_5m, "product_file", {}, "xlsx_too_many_rows", id="1.5M-rows-product-file"),
    pytest.param(_whole_sheet_dimension, "invoice", {}, "xlsx_too_many_columns", id="A1:XFD1048576"),
    pytest.param(_shared_string_400mb, "invoice", {}, "xlsx_too_large", id="400MB-string", marks=pytest.mark.slow),
    pytest.param(_shared_string_400mb, "invoice", NO_RATIO, "xlsx_string_too_long", id="400MB-string-streamed",
                 marks=pytest.mark.slow),
    pytest.param(_macro_renamed, "invoice", {}, "xlsx_active_content", id="macros-renamed-xlsx"),
    pytest.param(_external_link, "invoice", {}, "xlsx_external_links", id="external-link"),
    pytest.param(_billion_laughs, "invoice", {}, "xlsx_xml_dtd", id="billion-laughs"),
]


@pytest.mark.parametrize("build, document_type, overrides, expected", HOSTILE)
def test_hostile_workbook_is_refused_in_bounded_memory(tmp_path, build, document_type, overrides, expected):
    path = build(tmp_path / "hostile.xlsx")
    try:
        assert path.stat().st_size < 50 * MiB
        result = _read_in_child(path, document_type, **overrides)
    finally:
        path.unlink()
    assert result["reason"] == expected
    assert result["peak_rss"] < 1 * GiB, f"peak RSS {result['peak_rss'] / MiB:.0f} MiB"


def test_declared_dimension_bomb_is_tiny_and_refused_before_any_row(tmp_path):
    path = _whole_sheet_dimension(tmp_path / "d.xlsx")
    assert path.stat().st_size < 3000
    error = _refusal(path)
    assert error.reason_code == "xlsx_too_many_columns" and "A1:XFD1048576" in error.message
    assert error.details["dimension"] == "A1:XFD1048576"


def test_row_caps_follow_the_document_type(tmp_path):
    """200,001 rows: too many for an invoice (the runner passes limits_for(suite)), fine for a product file."""
    rows = (b"".join(b'<row r="%d"><c r="A%d"><v>1</v></c></row>' % (n, n) for n in range(s, s + 50_000))
            for s in range(7, 200_009, 50_000))
    path = write_xlsx_package(tmp_path / "many.xlsx", xlsx_worksheet([BODY, *rows]))
    assert _refusal(path, limits_for("invoice")).reason_code == "xlsx_too_many_rows"
    inspect_workbook(path, limits_for("product_file"))
    assert validate_file(path, "invoice").reason_code == "xlsx_too_many_rows"
    assert limits_for("invoice").max_rows == 200_000 and limits_for("no_such_type") == DEFAULT_LIMITS


@pytest.mark.parametrize("doc_type", DOC_TYPES)
def test_real_workbooks_pass(tmp_path, doc_type):
    """openpyxl-written fixtures (write-only: inline strings) and a normal save (shared strings, styles)."""
    from openpyxl import Workbook

    inspect_workbook(make_valid_file(tmp_path, doc_type, rows=300, fmt="xlsx"), limits_for(doc_type))
    header, rows = valid_rows(doc_type, 50)
    workbook = Workbook()
    workbook.active.append(header)
    for row in rows:
        workbook.active.append(row)
    workbook.active["A60"].hyperlink = "https://example.com/doc"
    workbook.save(tmp_path / "normal.xlsx")
    inspect_workbook(tmp_path / "normal.xlsx", limits_for(doc_type))
    assert validate_file(tmp_path / "normal.xlsx", doc_type).reason_code != "xlsx_external_links"


def test_hyperlinks_pass_other_external_targets_do_not(tmp_path):
    sheet = xlsx_worksheet(BODY)
    link = write_xlsx_package(tmp_path / "link.xlsx", sheet, sheet_rels=[("hyperlink", "https://example.com/a", "External")])
    inspect_workbook(link)
    assert _refusal(link, replace(DEFAULT_LIMITS, allow_hyperlinks=False)).reason_code == "xlsx_external_links"
    beacon = write_xlsx_package(tmp_path / "beacon.xlsx", xlsx_worksheet(BODY),
                                sheet_rels=[("image", "https://tracker.example/pixel.png", "External")])
    error = _refusal(beacon)
    assert error.reason_code == "xlsx_external_links" and "tracker.example" in error.message


@pytest.mark.parametrize("kind, parts, overrides, workbook_type", [
    ("macro-enabled workbook content type", {}, None, XLSX_MACRO_WORKBOOK_TYPE),
    ("Excel 4.0 macro sheet", {"xl/macrosheets/sheet1.xml": f'<xm:macrosheet xmlns:xm="{XLSX_MAIN_NS}"/>'.encode()}, None, None),
    ("ActiveX control", {"xl/activeX/activeX1.xml": b"<ax/>"}, None, None),
    ("OLE object", {"xl/embeddings/oleObject1.bin": b"\xd0\xcf\x11\xe0"}, None, None),
    ("vbaProject content type", {"xl/code.bin": b"x"}, {"/xl/code.bin": "application/vnd.ms-office.vbaProject"}, None),
])
def test_active_content_is_refused_by_name_or_content_type(tmp_path, kind, parts, overrides, workbook_type):
    path = write_xlsx_package(tmp_path / "a.xlsx", xlsx_worksheet(BODY), parts=parts, overrides=overrides,
                              workbook_type=workbook_type or XLSX_WORKBOOK_TYPE)
    assert _refusal(path).reason_code == "xlsx_active_content", kind


@pytest.mark.parametrize("part", ["[Content_Types].xml", "xl/_rels/workbook.xml.rels", "xl/sharedStrings.xml", "docProps/app.xml"])
def test_a_dtd_in_any_part_is_refused(tmp_path, part):
    path = write_xlsx_package(tmp_path / "plain.xlsx", xlsx_worksheet(BODY), shared_strings=f'<sst xmlns="{XLSX_MAIN_NS}"/>'.encode(),
                              parts={"docProps/app.xml": b"<Properties/>"})
    with zipfile.ZipFile(path) as archive:
        parts = {info.filename: archive.read(info) for info in archive.infolist()}
    parts[part] = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>' + parts[part].split(b"?>", 1)[-1]
    _rewrite(path, parts)
    error = _refusal(path)
    assert error.reason_code == "xlsx_xml_dtd" and error.details["part"] == part


def test_rows_and_columns_count_wherever_openpyxl_would_find_them(tmp_path):
    """By content, not by name: a prefixed namespace, a sheet part under another name, nested rows."""
    prefixed = (f'<x:worksheet xmlns:x="{XLSX_MAIN_NS}"><x:dimension ref="A1:XFD9"/><x:sheetData/></x:worksheet>').encode()
    path = write_xlsx_package(tmp_path / "p.xlsx", [prefixed])
    assert _refusal(path).reason_code == "xlsx_too_many_columns"
    nested = xlsx_worksheet([BODY, b'<row r="9"><c r="A9"><row r="2000000000"/></c></row>'])
    assert _refusal(write_xlsx_package(tmp_path / "n.xlsx", nested)).reason_code == "xlsx_too_many_rows"
    wide = xlsx_worksheet([BODY, b'<row r="9"><c r="XFD9"><v>1</v></c></row>'])
    assert _refusal(write_xlsx_package(tmp_path / "w.xlsx", wide)).reason_code == "xlsx_too_many_columns"
    unnumbered = xlsx_worksheet([BODY, b'<row r="9">' + b"<c><v>1</v></c>" * 300 + b"</row>"])
    assert _refusal(write_xlsx_package(tmp_path / "u.xlsx", unnumbered)).reason_code == "xlsx_too_many_columns"
    elsewhere = write_xlsx_package(tmp_path / "e.xlsx", xlsx_worksheet(BODY), parts={
        "xl/data.bin": b"".join(xlsx_worksheet(BODY, dimension="A1:J1048576000"))})
    assert _refusal(elsewhere).reason_code == "xlsx_too_many_rows"


def test_cells_strings_and_kept_markup_have_caps(tmp_path):
    small = replace(DEFAULT_LIMITS, max_cells=5_000, max_shared_strings=3, max_shared_string_chars=100,
                    max_tree_elements=1_000, max_tree_part_bytes=10_000, max_token_bytes=64 * 1024)
    tall = xlsx_worksheet([BODY, b'<row r="1000"><c r="J1000"><v>1</v></c></row>'])
    assert _refusal(write_xlsx_package(tmp_path / "c.xlsx", tall), small).reason_code == "xlsx_too_many_cells"
    many = f'<sst xmlns="{XLSX_MAIN_NS}">{"<si><t>x</t></si>" * 4}</sst>'.encode()
    path = write_xlsx_package(tmp_path / "s.xlsx", xlsx_worksheet(BODY), shared_strings=many)
    assert _refusal(path, small).reason_code == "xlsx_shared_strings_too_large"
    chars = f'<sst xmlns="{XLSX_MAIN_NS}"><si><t>{"y" * 60}</t></si><si><t>{"z" * 60}</t></si></sst>'.encode()
    path = write_xlsx_package(tmp_path / "t.xlsx", xlsx_worksheet(BODY), shared_strings=chars)
    assert _refusal(path, small).reason_code == "xlsx_shared_strings_too_large"
    merged = xlsx_worksheet(BODY, after=b"<mergeCells>" + b'<mergeCell ref="A1:B1"/>' * 2_000 + b"</mergeCells>")
    assert _refusal(write_xlsx_package(tmp_path / "m.xlsx", merged), small).reason_code == "xlsx_markup_too_large"
    styles = b'<styleSheet xmlns="%s">%s</styleSheet>' % (XLSX_MAIN_NS.encode(), b"<numFmt/>" * 2_000)
    path = write_xlsx_package(tmp_path / "y.xlsx", xlsx_worksheet(BODY), parts={"xl/styles.xml": styles})
    assert _refusal(path, small).reason_code == "xlsx_markup_too_large"
    # the same rows as a worksheet are records (streamed, cleared one by one); as a chartsheet openpyxl
    # loads the part whole, so they count against the tree caps
    rows = b"".join(b'<row r="%d"><c r="A%d"><v>1</v></c></row>' % (n, n) for n in range(7, 500))
    inspect_workbook(write_xlsx_package(tmp_path / "r.xlsx", xlsx_worksheet([BODY, rows])), small)
    chart = write_xlsx_package(tmp_path / "h.xlsx", xlsx_worksheet(BODY), parts={
        "xl/chartsheets/sheet2.xml": b"".join(xlsx_worksheet([BODY, rows]))},
        workbook_rels=[("chartsheet", "chartsheets/sheet2.xml", "")])
    assert _refusal(chart, small).reason_code == "xlsx_markup_too_large"
    token = xlsx_worksheet([BODY, b'<row r="9"><c r="A9" x="' + b"a" * 200_000 + b'"/></row>'])
    error = _refusal(write_xlsx_package(tmp_path / "k.xlsx", token), small)
    assert error.reason_code == "xlsx_markup_too_large" and "tag or comment" in error.message
    cell = xlsx_worksheet([BODY, b'<row r="9"><c r="A9" t="inlineStr"><is><t>' + b"w" * 70_000 + b"</t></is></c></row>"])
    assert _refusal(write_xlsx_package(tmp_path / "l.xlsx", cell)).reason_code == "xlsx_string_too_long"

    # parse time goes by events more than bytes: elements (in records too) and comments share one budget
    few = replace(DEFAULT_LIMITS, max_elements=1_000)
    for name, pieces in (("deep", b'<row r="9"><c r="A9">' + b"<a/>" * 1_000 + b"</c></row>"), ("comments", b"<!---->" * 1_000)):
        error = _refusal(write_xlsx_package(tmp_path / f"{name}.xlsx", xlsx_worksheet([BODY, pieces])), few)
        assert error.reason_code == "xlsx_markup_too_large" and "in all" in error.message, name
    inspect_workbook(write_xlsx_package(tmp_path / "fine.xlsx", xlsx_worksheet([BODY, b"<!---->" * 500])), few)


def test_row_attributes_count_as_kept_only_when_openpyxl_keeps_them(tmp_path):
    """Excel writes x14ac:dyDescent on every row (openpyxl drops it); a custom height is kept per row."""
    small = replace(DEFAULT_LIMITS, max_tree_text_chars=20_000)
    x14ac = b'xmlns:x14ac="http://schemas.microsoft.com/office/spreadsheetml/2009/9/ac"'

    def rows(extra: bytes) -> bytes:
        return b"".join(b'<row r="%d" spans="1:1" %s x14ac:dyDescent="0.25"%s><c r="A%d"><v>1</v></c></row>'
                        % (n, x14ac, extra, n) for n in range(7, 2_007))

    inspect_workbook(write_xlsx_package(tmp_path / "excel.xlsx", xlsx_worksheet([BODY, rows(b"")])), small)
    tall = write_xlsx_package(tmp_path / "tall.xlsx", xlsx_worksheet([BODY, rows(b' ht="30" customHeight="1"')]))
    assert _refusal(tall, small).reason_code == "xlsx_markup_too_large"


def test_zip_directory_is_checked_before_zipfile_trusts_it(tmp_path):
    path = tmp_path / "many.xlsx"
    write_xlsx_package(path, xlsx_worksheet(BODY), parts={f"xl/media/p{i}.bin": b"" for i in range(30)})
    error = _refusal(path, replace(DEFAULT_LIMITS, max_members=20))
    assert error.reason_code == "xlsx_too_large" and error.details == {"value": 35, "limit": 20}

    with zipfile.ZipFile(path) as archive:
        parts = {info.filename: archive.read(info) for info in archive.infolist()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:  # the same name twice
        for name, content in parts.items():
            archive.writestr(name, content)
        archive.writestr("XL/WORKBOOK.XML", parts["xl/workbook.xml"])
    assert _refusal(path).reason_code == "not_xlsx"
    _rewrite(path, parts, compression={"xl/workbook.xml": zipfile.ZIP_BZIP2})
    assert "compression" in _refusal(path).message


def test_a_central_directory_that_lies_about_sizes_cannot_inflate_more(tmp_path):
    """zipfile returns no more than a member declares and then checks the CRC: declared sizes bound."""
    path = write_xlsx_package(tmp_path / "lie.xlsx", xlsx_worksheet([BODY, b" " * 500_000]))
    data = bytearray(path.read_bytes())
    name = b"xl/worksheets/sheet1.xml"
    entry = data.find(b"PK\x01\x02")
    while data[entry + 46:entry + 46 + len(name)] != name:
        entry = data.find(b"PK\x01\x02", entry + 4)
    struct.pack_into("<I", data, entry + 24, 1000)  # the directory entry says: 1,000 bytes uncompressed
    path.write_bytes(bytes(data))
    with zipfile.ZipFile(path) as archive:
        assert archive.getinfo(name.decode()).file_size == 1000
    assert _refusal(path).reason_code == "not_xlsx"


def test_a_passing_workbook_is_inspected_once_until_it_changes(tmp_path, monkeypatch):
    import include.checks.xlsx_guard as guard

    path = write_xlsx_package(tmp_path / "ok.xlsx", xlsx_worksheet(BODY))
    inspect_workbook(path)
    calls = []
    monkeypatch.setattr(guard, "_inspect_archive", lambda *args: calls.append(args))
    inspect_workbook(path)
    assert calls == []
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    inspect_workbook(path)
    assert len(calls) == 1
    inspect_workbook(path, limits_for("invoice"))
    assert len(calls) == 2, "other limits: inspected again"


def _rewrite(path: Path, parts: dict[str, bytes], compression: dict[str, int] | None = None) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in parts.items():
            archive.writestr(name, content, compress_type=(compression or {}).get(name, zipfile.ZIP_DEFLATED))
