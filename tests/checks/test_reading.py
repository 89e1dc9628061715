"""read_table: bad input fails with a clear reason code and message; good input reads as text cells."""
import tracemalloc

import pytest

from include.checks import READ_REASON_CODES, UnreadableFile, find_formula_cells, iter_table_chunks, read_table
from include.checks.reading import read_column_rows
from tests.data.bad_inputs import HEADERS, csv_text, make_valid_file, valid_rows

INVOICE_COLUMNS = [c for c in HEADERS["invoice"] if c != "notes"]


def _read_error(path, **kwargs) -> UnreadableFile:
    fmt = "xlsx" if str(path).endswith(".xlsx") else "csv"
    with pytest.raises(UnreadableFile) as info:
        read_table(path, fmt, required_columns=INVOICE_COLUMNS, **kwargs)
    assert info.value.reason_code in READ_REASON_CODES
    assert info.value.message and info.value.reason_code in str(info.value)
    return info.value


@pytest.fixture(params=["numpy_fast_path", "csv_module_only"])
def field_count_path(request, monkeypatch):
    """Run a test with the vectorised record count and again with only the exact csv-module pass."""
    if request.param == "csv_module_only":
        monkeypatch.setattr("include.checks.reading._ASCII_SAFE", frozenset())
    return request.param


def test_every_read_level_bad_input_raises_its_reason(corpus, field_count_path):
    read_level = {n: v for n, v in corpus.items() if v[1] in READ_REASON_CODES}
    assert len(read_level) >= 20
    for name, (path, expected) in read_level.items():
        error = _read_error(path)
        assert error.reason_code == expected, (name, error.message)


def test_wrong_delimiter_message_names_expected_and_found_columns(corpus):
    error = _read_error(corpus["wrong_delimiter"][0])
    assert "expected columns invoice_number, invoice_date" in error.message
    assert "found one column 'invoice_number;invoice_date;" in error.message
    assert "';'-separated" in error.message
    assert error.details["found_delimiter"] == ";"


def test_non_utf8_is_located_not_mojibaked(corpus, tmp_path):
    content = corpus["non_utf8"][0].read_bytes()
    first_bad = next(i for i, line in enumerate(content.split(b"\n"), start=1) if any(b > 127 for b in line))
    error = _read_error(corpus["non_utf8"][0])
    assert error.details["line"] == first_bad
    assert "cp1252" in error.message
    path = tmp_path / "one_bad_byte.csv"
    path.write_bytes(("a,b\n" + "x,y\n" * 4).encode() + "Müller,z\n".encode("cp1252") + b"ok,\xe2\x82\xac\n")
    with pytest.raises(UnreadableFile) as info:
        read_table(path)
    assert info.value.reason_code == "not_utf8"
    assert info.value.details == {"line": 6, "byte_offset": 4 + 16 + 1, "bytes": "fc"}  # the cp1252 "ü"


def test_explicit_encoding_is_the_documented_fallback(corpus):
    df = read_table(corpus["non_utf8"][0], encoding="cp1252", required_columns=INVOICE_COLUMNS)
    assert "Müller, Straße" in df["notes"].tolist()


def test_bom_is_accepted_and_stripped(corpus):
    df = read_table(corpus["bom"][0], required_columns=INVOICE_COLUMNS)
    assert list(df.columns)[0] == "invoice_number"
    assert len(df) == 12


def test_truncation_and_field_counts_say_where(corpus):
    last = _read_error(corpus["truncated_last_row"][0])
    assert last.details["row"] == 13 and last.details["expected_fields"] == 9 and last.details["fields"] < 9
    quotes = _read_error(corpus["truncated_in_quotes"][0])
    assert "never closed" in quotes.message
    middle = _read_error(corpus["short_row_middle"][0])
    assert middle.reason_code == "field_count_mismatch" and middle.details["row"] == 6 and middle.details["fields"] == 4


def test_ten_megabyte_line_fails_with_bounded_memory(corpus):
    path = corpus["single_line_10mb"][0]
    tracemalloc.start()
    try:
        error = _read_error(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.reason_code == "line_too_long" and error.details["line"] == 1
    # Bounded by the 1 MiB pre-scan block (numpy works on one block at a time), not by the line.
    assert peak < 8 * 1024 * 1024 < path.stat().st_size, f"peak {peak} bytes: the reader must not load the line"


def test_line_limit_is_configurable(tmp_path):
    path = tmp_path / "long.csv"
    header, rows = valid_rows("invoice", 3)
    rows[1][8] = "x" * 5000
    path.write_text(csv_text(header, rows))
    assert len(read_table(path, max_line_bytes=10_000)) == 3
    assert _read_error(path, max_line_bytes=1000).details["line"] == 3


def test_formula_cells_rejected_with_locations(corpus):
    error = _read_error(corpus["formula_plus"][0])
    assert error.reason_code == "formula_cells"
    assert error.details["count"] == 1
    assert error.details["cells"] == [{"row": 4, "column": "supplier_id", "value": "+cmd|' /C calc'!A0"}]


def test_signed_numbers_are_not_formulas_but_signed_text_is(tmp_path):
    import pandas as pd

    df = pd.DataFrame(
        {"amount": ["-5.00", "+3", "-1e3", " -7", "-", "-x"], "note": ["ok", "@a", "=1", "a=b", "\tx", "+ 1 2"]}
    )
    count, cells = find_formula_cells(df)
    assert count == 6
    assert [(c["row"], c["column"]) for c in cells] == [
        (3, "note"), (4, "note"), (6, "amount"), (6, "note"), (7, "amount"), (7, "note"),
    ]


def test_formulas_allow_returns_the_cells(corpus):
    df = read_table(corpus["formula_equals"][0], required_columns=INVOICE_COLUMNS, formulas="allow")
    assert df["notes"].iloc[1].startswith("=HYPERLINK")


def test_cells_are_text_and_only_empty_cells_are_missing(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(" a , b ,c\n007,NA,\n1.50,null,x\n")
    df = read_table(path)
    assert list(df.columns) == ["a", "b", "c"]  # header names are stripped
    assert df["a"].tolist() == ["007", "1.50"]  # no numeric conversion: leading zeros survive
    assert df["b"].tolist() == ["NA", "null"]
    assert df["c"].isna().tolist() == [True, False]


def test_xlsx_reads_values_dates_and_formula_text(tmp_path):
    import datetime as dt

    from openpyxl import Workbook

    path = tmp_path / "t.xlsx"
    book = Workbook()
    sheet = book.active
    sheet.append(["sku", "when", "qty", "note"])
    sheet.append(["A-1", dt.datetime(2026, 11, 25), 3, None])
    sheet.append([None, None, None, None])
    sheet.append(["A-2", dt.date(2026, 1, 2), 2.5, "=SUM(C2:C3)"])
    book.save(path)
    df = read_table(path, "xlsx", formulas="allow")
    assert df.to_dict("list") == {
        "sku": ["A-1", "A-2"], "when": ["2026-11-25", "2026-01-02"], "qty": ["3", "2.5"], "note": [None, "=SUM(C2:C3)"],
    }
    assert df.index.tolist() == [0, 2]  # spreadsheet rows 2 and 4: index + 2
    with pytest.raises(UnreadableFile) as info:
        read_table(path, "xlsx")
    assert info.value.details["cells"] == [{"row": 4, "column": "note", "value": "=SUM(C2:C3)"}]


def test_chunks_have_file_wide_index_and_checks_run_before_the_first_chunk(tmp_path, corpus):
    path = make_valid_file(tmp_path, "purchase_order", rows=1050)
    chunks = list(iter_table_chunks(path, chunksize=400))
    assert [len(c) for c in chunks] == [400, 400, 250]
    assert chunks[2].index[0] == 800 and chunks[2].index[-1] == 1049
    with pytest.raises(UnreadableFile) as info:
        iter_table_chunks(corpus["truncated_last_row"][0], chunksize=2)  # fails on the call, not later
    assert info.value.reason_code == "truncated"


def test_read_column_rows_returns_the_text_at_given_rows(tmp_path):
    path = make_valid_file(tmp_path, "invoice", rows=500)
    df = read_table(path)
    found = read_column_rows(path, "csv", "invoice_number", [3, 250, 499], chunksize=100)
    assert found == {i: df["invoice_number"].iloc[i] for i in (3, 250, 499)}


def test_missing_file_is_a_caller_bug(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_table(tmp_path / "nope.csv")


@pytest.mark.parametrize("shift", [-2, -1, 0, 1])
def test_formula_prefilter_sees_cells_across_block_boundaries(tmp_path, shift):
    """The pre-scan reads 1 MiB blocks; a delimiter, quote and '=' split over two blocks still count."""
    head = "a,b\n"
    filler_row = "x" * 60 + ",y\n"
    body = head + filler_row * ((1 << 20) // len(filler_row))
    pad = (1 << 20) - len(body) + shift  # put the ',"=' of the last row around the block boundary
    body += "z" * max(pad, 1) + ',"=1+1"\n'
    path = tmp_path / "boundary.csv"
    path.write_text(body)
    with pytest.raises(UnreadableFile) as info:
        read_table(path)
    assert info.value.details["count"] == 1 and info.value.details["cells"][0]["value"] == "=1+1"


def test_prefilter_marks_files_without_formula_characters(tmp_path, corpus):
    assert read_table(corpus["valid"][0]).attrs["formula_candidates"] is False
    assert read_table(corpus["negative_amount"][0], formulas="allow").attrs["formula_candidates"] is True


def test_fast_record_count_never_accepts_what_the_csv_module_rejects(corpus):
    from include.checks.reading import _check_records, _prescan_csv

    accepted = 0
    for name, (path, _) in corpus.items():
        if path.suffix != ".csv":
            continue
        try:
            scan = _prescan_csv(path, ",", "utf-8", 1 << 20)
        except UnreadableFile:
            continue
        if scan.field_counts_ok:
            accepted += 1
            _check_records(path, ",", "utf-8-sig" if scan.has_bom else "utf-8", scan.record_width, 1 << 20)
    assert accepted >= 10  # the valid, BOM, CRLF, odd-name ... files take the fast path
