"""Cells a probe used to get past the checks: NUL characters, formula cells in the header row, codes
a spreadsheet turned into numbers (GTIN 4.00638E+12), and texts that must stay safe in the report."""
import pytest

from include.checks import InvalidSuite, UnreadableFile, iter_table_chunks, read_table, validate_file
from include.checks.batch import validate_files
from include.checks.errors import READ_REASON_CODES
from include.checks.report import CheckReport, ExpectationResult
from include.checks.suites import parse_suite
from tests.data.bad_inputs import (
    HEADERS,
    PRODUCT_SUITE,
    _write_xlsx,
    csv_text,
    make_product_bad_inputs,
    make_valid_file,
    valid_rows,
)

INVOICE = HEADERS["invoice"]


def _error(path, fmt="csv", **kwargs) -> UnreadableFile:
    with pytest.raises(UnreadableFile) as info:
        read_table(path, fmt, required_columns=INVOICE, **kwargs)
    return info.value


def _invoice(tmp_path, name, *, header=None, change=None, rows=6, extra=None):
    head, data = valid_rows("invoice", rows, seed=4)
    if change:
        row, column, value = change
        data[row][head.index(column)] = value
    if extra is not None:  # one more column: (name, value of every row)
        head, data = head + [extra[0]], [r + [extra[1]] for r in data]
    path = tmp_path / name
    path.write_text(csv_text(header or head, data), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- NUL


def test_a_nul_in_a_cell_is_refused_with_its_row_and_column_and_no_raw_nul_in_the_message(tmp_path):
    path = _invoice(tmp_path, "nul.csv", change=(3, "po_number", "PO-\x00-7"))
    error = _error(path)
    assert error.reason_code == "nul_byte" and "nul_byte" in READ_REASON_CODES
    assert (error.details["row"], error.details["column"]) == (5, "po_number")  # data row 3 = sheet row 5
    assert "\x00" not in error.message and "PO-\\x00-7" in error.message
    report = validate_file(path, "invoice")
    assert report.reason_code == "nul_byte" and "\x00" not in report.to_json() + report.summary_markdown()


def test_a_nul_in_the_header_is_row_one_and_a_chunked_read_refuses_before_the_first_chunk(tmp_path):
    head = list(INVOICE)
    head[-1] = "no\x00tes"
    path = _invoice(tmp_path, "nul-header.csv", header=head, rows=50)
    with pytest.raises(UnreadableFile) as info:
        iter_table_chunks(path, chunksize=10, required_columns=INVOICE)  # whole-file checks run in the call
    assert info.value.reason_code == "nul_byte" and info.value.details["row"] == 1
    assert info.value.details["column"] == "no\\x00tes"


def test_a_nul_after_blank_lines_and_a_quoted_line_break_is_counted_in_rows_not_lines(tmp_path):
    head, data = valid_rows("invoice", 4, seed=2)
    data[0][head.index("notes")] = "Zeile 1\nZeile 2"
    data[2][head.index("notes")] = "\x00"
    text = csv_text(head, data).replace("\n", "\n\n", 1)  # a blank line after the header
    path = tmp_path / "nul-rows.csv"
    path.write_text(text, encoding="utf-8")
    error = _error(path)
    assert error.details["row"] == 4 and error.details["column"] == "notes"


def test_other_control_characters_are_data_and_pass(tmp_path):
    path = _invoice(tmp_path, "controls.csv", change=(1, "notes", "bell\x07 esc\x1b[2J nel\x85"))
    assert validate_file(path, "invoice").passed


# ------------------------------------------------------------------------------------ header formulas


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_a_formula_in_the_header_fails_the_file_and_is_shown_as_row_one(tmp_path, fmt):
    head, data = valid_rows("invoice", 6, seed=4)
    head, data = head + ["@SUM(1+9)*cmd|' /C calc'!A0"], [r + ["x"] for r in data]
    path = tmp_path / f"header-formula.{fmt}"
    if fmt == "csv":
        path.write_text(csv_text(head, data), encoding="utf-8")
    else:
        _write_xlsx(path, head, data)
    report = validate_file(path, "invoice")
    assert not report.passed and report.reason_code == "formula_cells"
    (check,) = [r for r in report.results if r.expectation_type == "no_formula_cells"]
    assert check.unexpected_count == 1 and check.sample_rows == [1]
    assert check.element_count == 7 * len(head)  # header cells are checked (and counted) too
    assert _error(path, fmt).reason_code == "formula_cells"  # formulas="reject": the reader refuses it


def test_a_header_formula_is_counted_once_in_chunked_validation(tmp_path):
    path = _invoice(tmp_path, "chunked.csv", rows=40, extra=("=1+1", "x"))
    whole = validate_file(path, "invoice", engine="gx")
    chunked = validate_file(path, "invoice", chunksize=7, engine="gx")
    assert chunked.chunks > 1
    for report in (whole, chunked):
        (check,) = [r for r in report.results if r.expectation_type == "no_formula_cells"]
        assert (check.unexpected_count, check.element_count, check.sample_rows) == (1, 41 * 10, [1])


def test_a_negative_number_as_a_column_name_is_no_formula(tmp_path):
    path = _invoice(tmp_path, "minus.csv", extra=("-5", "x"))
    assert validate_file(path, "invoice").passed


def test_the_batch_screen_sends_a_header_formula_file_to_the_reference_path(tmp_path):
    files = [(_invoice(tmp_path, "hdr.csv", extra=("=1+1", "x")), None)]
    files += [(make_valid_file(tmp_path, "invoice", rows=4, name=f"ok{i}.csv", seed=i), None) for i in range(3)]
    reports = validate_files(files, "invoice")
    assert reports[0].reason_code == "formula_cells" and "screen_seconds" not in reports[0].timings
    assert all(r.passed and "screen_seconds" in r.timings for r in reports[1:])
    reference = validate_file(files[0][0], "invoice", engine="gx")
    assert {**reports[0].to_dict(), "timings": None} == {**reference.to_dict(), "timings": None}


# ------------------------------------------------------------------------------------ codes as numbers


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    return make_product_bad_inputs(tmp_path_factory.mktemp("products"))


def test_every_product_file_kind_gets_its_reason(products):
    for name, (path, expected) in products.items():
        report = validate_file(path, PRODUCT_SUITE)
        assert report.reason_code == expected, (name, report.summary_markdown())


def test_a_gtin_in_scientific_notation_names_column_row_and_what_to_do(products):
    report = validate_file(products["gtin_scientific_notation"][0], PRODUCT_SUITE)
    details, message = report.read_error["details"], report.read_error["message"]
    assert (details["column"], details["row"], details["value"]) == ("gtin", 4, "4.00638E+12")
    assert "scientific notation" in message and "as text" in message


@pytest.mark.parametrize("kind, column, value", [
    ("xlsx_gtin_number_cell", "gtin", "4006380000000"),  # looks like a GTIN-13: it would have passed
    ("xlsx_gtin_float_exponent", "gtin", "4006380000000.0"),
    ("xlsx_hs_code_number_cell", "hs_code", "901210000"),
])
def test_an_xlsx_number_cell_in_a_code_column_is_refused(products, kind, column, value):
    report = validate_file(products[kind][0], PRODUCT_SUITE)
    assert report.reason_code == "code_as_number"
    details = report.read_error["details"]
    assert (details["column"], details["value"], details["number_cell"]) == (column, value, True)


def test_scientific_notation_in_a_screened_suite_goes_to_the_reference_path(tmp_path):
    head, data = valid_rows("shipping_manifest", 5, seed=1)
    data[2][head.index("sscc")] = "3.40123E+17"
    bad = tmp_path / "manifest-bad.csv"
    bad.write_text(csv_text(head, data), encoding="utf-8")
    good = make_valid_file(tmp_path, "shipping_manifest", rows=5, name="manifest-ok.csv", seed=2)
    reports = validate_files([(bad, None), (good, None)], "shipping_manifest")
    assert reports[0].reason_code == "code_as_number" and reports[0].read_error["details"]["count"] == 1
    assert reports[1].passed and "screen_seconds" in reports[1].timings


def test_exact_digits_is_a_boolean_on_a_string_column():
    base = {"name": "x", "columns": [{"name": "code", "type": "string", "exact_digits": True}]}
    assert parse_suite(base).digit_columns == ["code"]
    for column in ({"name": "code", "type": "number", "exact_digits": True},
                   {"name": "code", "type": "string", "exact_digits": "yes"}):
        with pytest.raises(InvalidSuite):
            parse_suite({**base, "columns": [column]})


# ------------------------------------------------------------------------------------ the report's texts


def test_a_report_with_nul_surrogates_and_controls_is_safe_json_and_markdown():
    report = CheckReport(
        suite="invoice", file_name="INV\x00\x1b[31m\udce9.csv", passed=False, rows=2, columns=["a\x00"],
        results=[ExpectationResult("expect_column_values_to_be_in_set", False, column="cur\x07", unexpected_count=1,
                                   sample_values=["EU\x00R", "\ud800", "\u202eRLO"], sample_rows=[2])])
    text = report.to_json() + report.summary_markdown()
    text.encode("utf-8")  # no lone surrogate left: it would fail the attachment and the database
    for raw in ("\x00", "\x1b", "\x07", "\u202e"):
        assert raw not in text, repr(raw)
    data = report.to_dict()
    assert data["file_name"] == "INV\\x00\\x1b[31m\\xe9.csv" and data["columns"] == ["a\\x00"]
    assert data["results"][0]["sample_values"] == ["EU\\x00R", "\\ud800", "\\u202eRLO"]
    read_error = CheckReport(suite="invoice", file_name="f.csv", passed=False,
                             read_error={"reason_code": "missing_columns", "message": "found a\x00b, c\x1b", "details": {}})
    assert "\x00" not in read_error.summary_markdown() and "\x1b" not in read_error.summary_markdown()


def test_scientific_notation_is_found_whatever_else_the_column_holds():
    import pandas as pd

    from include.checks.cells import exponent_cells

    frame = pd.DataFrame({"gtin": ["4006381333931", None, "n/a e", "4.006381e12", " 1E+13 ", "12e"],
                          "name": ["4E+12"] * 6}, index=range(6)).astype("str")
    frame.loc[1, "gtin"] = None
    count, hits = exponent_cells(frame, ["gtin"])
    assert count == 2 and hits == [(5, "gtin", "4.006381e12"), (6, "gtin", " 1E+13 ")]
    assert exponent_cells(frame[["name"]].assign(gtin="4006381333931"), ["gtin"]) == (0, [])
