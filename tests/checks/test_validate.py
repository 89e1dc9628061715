"""validate_file with great-expectations 1.x: reasons, counts, samples, summary, JSON, chunking."""
import json
import re

import pytest

from include.checks import CheckReport, validate_dataframe, validate_file
from include.checks.runner import gx_context
from tests.data.bad_inputs import DOC_TYPES, csv_text, make_valid_file, valid_rows


def test_every_bad_input_gets_its_reason_and_nothing_raises(corpus):
    for name, (path, expected) in corpus.items():
        report = validate_file(path, "invoice")
        assert report.reason_code == expected, (name, report.read_error, [r.expectation_type for r in report.failed_results])
        assert report.passed is (expected is None)
        markdown = report.summary_markdown()
        if expected is None:
            assert markdown.startswith("**Check passed:")
        else:
            assert markdown.startswith("**Check failed:") and f"`{expected}`" in markdown
        if report.read_error:
            assert report.results == [] and report.read_error["message"]
        json.loads(report.to_json())


@pytest.mark.parametrize("doc_type", DOC_TYPES)
def test_valid_files_pass(tmp_path, doc_type):
    report = validate_file(make_valid_file(tmp_path, doc_type, rows=300, seed=5), doc_type)
    assert report.passed, report.summary_markdown()
    assert report.rows == 300 and report.reason_code is None
    assert all(r.success for r in report.results) and len(report.results) > 5


def test_valid_xlsx_passes(tmp_path):
    report = validate_file(make_valid_file(tmp_path, "shipping_manifest", rows=40, fmt="xlsx"), "shipping_manifest")
    assert report.passed, report.summary_markdown()
    assert report.rows == 40


def _by(report, expectation_type, column):
    return next(r for r in report.results if r.expectation_type == expectation_type and r.column == column)


def test_failing_expectations_report_counts_samples_and_rows(corpus):
    report = validate_file(corpus["bad_values"][0], "invoice")
    assert not report.passed and report.reason_code == "expectations_failed"
    currency = _by(report, "expect_column_values_to_be_in_set", "currency")
    assert (currency.success, currency.unexpected_count, currency.sample_values, currency.sample_rows) == (False, 1, ["EURO"], [3])
    parse = _by(report, "values_parse_as_number", "amount")
    assert (parse.unexpected_count, parse.sample_values, parse.sample_rows) == (1, ["12,50"], [5])
    date = _by(report, "values_parse_as_date", "invoice_date")
    assert date.sample_values == ["2026-13-01"] and date.sample_rows == [4]
    po = _by(report, "expect_column_values_to_not_be_null", "po_number")
    assert po.unexpected_count == 1 and po.sample_rows == [6]
    assert _by(report, "expect_column_values_to_be_unique", "invoice_number").success
    failed = {(r.expectation_type, r.column) for r in report.failed_results}
    assert ("expect_column_values_to_be_between", "amount") not in failed  # "12,50" is a parse failure, not a range one


def test_duplicates_and_negative_amounts(corpus):
    dup = _by(validate_file(corpus["duplicate_invoice_number"][0], "invoice"), "expect_column_values_to_be_unique", "invoice_number")
    assert dup.unexpected_count == 2 and dup.sample_rows == [4, 11] and len(dup.sample_values) == 1
    negative = validate_file(corpus["negative_amount"][0], "invoice")
    between = _by(negative, "expect_column_values_to_be_between", "amount")
    assert between.sample_values == ["-5.00"] and between.sample_rows == [8]
    assert _by(negative, "no_formula_cells", None).success  # -5.00 is a number, not a formula


def test_formula_cells_are_a_failed_check_with_locations(corpus):
    report = validate_file(corpus["formula_at"][0], "invoice")
    check = report.failed_results[0]
    assert check.expectation_type == "no_formula_cells" and check.column == "notes"
    assert check.observed_value == {"cells": [{"row": 6, "column": "notes", "value": "@SUM(1+9)*cmd|' /C calc'!A0"}]}
    assert report.rows == 12  # the rest of the file was still validated


def test_summary_markdown_is_a_short_escaped_table(tmp_path):
    header, rows = valid_rows("invoice", 30)
    rows[4][header.index("currency")] = "<b>|x"
    rows[7][header.index("currency")] = "[a](http://evil.example)"
    rows[9][header.index("amount")] = "0"
    path = tmp_path / "inv|oice `1`.csv"
    path.write_text(csv_text(header, rows))
    markdown = validate_file(path, "invoice").summary_markdown()
    lines = markdown.splitlines()
    assert lines[0].startswith("**Check failed: `inv¦oice ˋ1ˋ.csv`** (invoice, 30 rows × 9 columns): 2 of ")
    assert "| Check | Column | Bad rows | Sample bad values | Rows |" in lines
    table = [line for line in lines if line.startswith("| ") and "Check |" not in line]
    assert len(table) == 2
    currency = next(line for line in table if "in\\_set (value\\_set=156 values) — an active ISO 4217" in line)
    assert "`<b>¦x`" in currency and "`[a](http://evil.example)`" in currency and "| 6, 9 |" in currency
    assert "| 2 (6.7%) |" in currency
    amount = next(line for line in table if "amount is positive" in line)
    assert "`0`" in amount and "| 11 |" in amount
    for line in table:  # no cell content adds columns
        assert len(re.findall(r"(?<!\\)\|", line)) == 6


def test_checks_without_meaning_are_labelled_by_type_and_short_arguments(tmp_path):
    data = _custom_suite(tmp_path, [
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "k", "value_set": [f"k{i}" for i in range(10)]}},
    ])
    markdown = validate_file(data, "mini", suites_dir=tmp_path).summary_markdown()
    assert "| column\\_values\\_to\\_be\\_in\\_set (value\\_set=10 values) | k | 80 (80.0%) |" in markdown  # k0..k9 are rows 0-9 and 60-69


def test_read_error_summary_escapes_the_message(corpus):
    markdown = validate_file(corpus["wrong_delimiter"][0], "invoice", file_name="a<b>.csv").summary_markdown()
    assert markdown.startswith("**Check failed: `a<b>.csv` could not be read as invoice** (reason `wrong_delimiter`)")
    assert "found one column 'invoice\\_number;invoice\\_date;" in markdown


def test_report_json_round_trip(corpus):
    report = validate_file(corpus["bad_values"][0], "invoice", file_name="INV 2026-11.csv")
    data = json.loads(report.to_json())
    assert data["reason_code"] == "expectations_failed" and data["file_name"] == "INV 2026-11.csv"
    assert data["rows"] == 12 and data["columns"][0] == "invoice_number"
    assert {"read_seconds", "gx_seconds", "total_seconds"} <= set(data["timings"])
    again = CheckReport.from_dict(data)
    assert again.to_dict() == report.to_dict()
    assert again.summary_markdown() == report.summary_markdown()


def _medium_file(tmp_path):
    header, rows = valid_rows("invoice", 9000, seed=3)
    for i in (5, 4000, 8100):
        rows[i][0] = rows[2500][0]  # duplicates in different chunks
    rows[8999][0] = rows[1][0]
    for i in range(0, 9000, 997):
        rows[i][5] = "EURO" if i % 2 else "eur"
    for i in range(3, 9000, 1503):
        rows[i][6] = "-1.00"
    rows[6123][8] = "=cmd()"
    rows[7000][1] = "2026-02-30"
    path = tmp_path / "medium.csv"
    path.write_text(csv_text(header, rows))
    return path


def _comparable(report):
    data = report.to_dict()
    data.pop("timings"), data.pop("chunks")
    return data


@pytest.mark.parametrize("chunksize", [1000, 2999, 20_000])
def test_chunked_validation_equals_whole_file(tmp_path, chunksize):
    path = _medium_file(tmp_path)
    whole = validate_file(path, "invoice")
    chunked = validate_file(path, "invoice", chunksize=chunksize)
    assert chunked.chunks == -(-9000 // chunksize)
    assert _comparable(chunked) == _comparable(whole)
    unique = _by(chunked, "expect_column_values_to_be_unique", "invoice_number")
    assert unique.unexpected_count == 6 and unique.sample_rows == [3, 7, 2502, 4002, 8102]
    assert sorted(r.expectation_type for r in whole.failed_results) == [
        "expect_column_values_to_be_between", "expect_column_values_to_be_in_set", "expect_column_values_to_be_unique",
        "expect_column_values_to_not_be_null", "no_formula_cells", "values_parse_as_date",
    ]


def _custom_suite(tmp_path, expectations, **extra):
    suite = {
        "name": "mini",
        "columns": [{"name": "k"}, {"name": "n", "type": "number"}],
        "expectations": expectations,
        **extra,
    }
    (tmp_path / "mini.json").write_text(json.dumps(suite))
    data = tmp_path / "mini.csv"
    data.write_text("k,n,extra\n" + "".join(f"k{i % 60},{i},e\n" for i in range(100)))
    return data


def test_row_count_and_columns_are_checked_on_the_whole_file_in_chunked_mode(tmp_path):
    data = _custom_suite(tmp_path, [
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1, "max_value": 99}},
        {"type": "expect_column_to_exist", "kwargs": {"column": "k"}},
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "k", "mostly": 0.15}},
    ])
    whole = validate_file(data, "mini", suites_dir=tmp_path)
    chunked = validate_file(data, "mini", suites_dir=tmp_path, chunksize=30)
    assert _comparable(chunked) == _comparable(whole)
    row_count = _by(whole, "expect_table_row_count_to_be_between", None)
    assert row_count.success is False and row_count.observed_value == 100
    unique = _by(whole, "expect_column_values_to_be_unique", "k")
    # k0..k39 twice (80 rows), k40..k59 once: 20% unique >= mostly 15%, so GX and the merge both pass it
    assert unique.unexpected_count == 80 and unique.success


def test_whole_column_expectations_are_refused_in_chunked_mode(tmp_path):
    data = _custom_suite(tmp_path, [{"type": "expect_column_mean_to_be_between", "kwargs": {"column": "n", "min_value": 0}}])
    assert validate_file(data, "mini", suites_dir=tmp_path).passed
    with pytest.raises(ValueError, match="cannot be merged across chunks"):
        validate_file(data, "mini", suites_dir=tmp_path, chunksize=10)


def test_extra_columns_can_be_refused(tmp_path):
    data = _custom_suite(tmp_path, [], allow_extra_columns=False)
    report = validate_file(data, "mini", suites_dir=tmp_path)
    assert report.reason_code == "unexpected_columns" and report.read_error["details"] == {"unexpected": ["extra"]}


def test_validate_dataframe(tmp_path):
    import pandas as pd

    header, rows = valid_rows("purchase_order", 20)
    df = pd.DataFrame(rows, columns=header).replace("", None)
    assert validate_dataframe(df, "purchase_order").passed
    missing = validate_dataframe(df.drop(columns=["currency"]), "purchase_order")
    assert missing.reason_code == "missing_columns"


def test_gx_context_is_cached_per_process():
    assert gx_context() is gx_context()


def test_file_name_and_format_overrides(tmp_path):
    path = make_valid_file(tmp_path, "invoice", rows=5, fmt="xlsx", name="download.tmp")
    report = validate_file(path, "invoice", fmt="xlsx", file_name="Rechnung Mai.xlsx")
    assert report.passed and report.file_name == "Rechnung Mai.xlsx"
    assert validate_file(path, "invoice").reason_code in ("wrong_delimiter", "not_utf8", "malformed_csv", "missing_columns")


def test_gx_suites_are_cached_by_content(tmp_path):
    from include.checks.runner import _gx_suites

    data = _custom_suite(tmp_path, [{"type": "expect_column_values_to_be_between", "kwargs": {"column": "n", "min_value": 0}}])
    first = validate_file(data, "mini", suites_dir=tmp_path)
    cached = len(_gx_suites)
    again = validate_file(data, "mini", suites_dir=tmp_path)
    assert len(_gx_suites) == cached and first.passed and again.passed
    assert "gx_setup_seconds" not in again.timings  # import and context were paid once per process
    changed = tmp_path / "changed"
    changed.mkdir()
    data2 = _custom_suite(changed, [{"type": "expect_column_values_to_be_between", "kwargs": {"column": "n", "min_value": 50}}])
    stricter = validate_file(data2, "mini", suites_dir=changed)
    assert len(_gx_suites) == cached + 1
    assert _by(stricter, "expect_column_values_to_be_between", "n").unexpected_count == 50
