"""The catalog suites through the shared runner, plus the pandas-side catalog checks, on real files."""
from datetime import date

import pytest

from include.catalog.checks import validate_catalog_file
from include.catalog.kinds import CATALOG, PRICE_LIST, PROMOTIONS

AS_OF = date(2026, 11, 25)
ACME_MAP = {"price_list": {"SKU": "sku", "Net Price": "price", "Currency": "currency", "Valid From": "valid_from"}}


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def failed(report):
    return {(r.expectation_type, r.column): (r.unexpected_count, r.sample_values, r.sample_rows) for r in report.failed_results}


def test_good_price_list_with_partner_column_names_passes(tmp_path):
    path = write(tmp_path, "price_list_1.csv", "SKU,Net Price,Currency,Valid From\nA,1.50,EUR,2026-12-01\nB,2,USD,2026-11-20\n")
    report = validate_catalog_file(path, PRICE_LIST, file_name=path.name, as_of=AS_OF, column_map=ACME_MAP, chunksize=1)
    assert report.passed, report.summary_markdown()
    assert report.rows == 2 and report.chunks == 2
    assert "effective_date_within_tolerance" in {r.expectation_type for r in report.results}


def test_bad_price_list_reports_every_rule_with_rows(tmp_path):
    path = write(tmp_path, "price_list_2.csv",
                 "sku,price,currency,effective_date\nA,0,EUR,2026-12-01\nA,2,XXX,2020-01-01\nC,abc,eur,notadate\nD,-1,USD,2026-11-17\n")
    report = validate_catalog_file(path, PRICE_LIST, file_name=path.name, as_of=AS_OF, chunksize=2)
    bad = failed(report)
    assert not report.passed and report.reason_code == "expectations_failed"
    assert bad[("expect_column_values_to_be_unique", "sku")][0] == 2
    assert bad[("expect_column_values_to_be_between", "price")][1] == ["0", "-1"]
    assert bad[("expect_column_values_to_be_in_set", "currency")][1] == ["XXX", "eur"]
    assert bad[("values_parse_as_date", "effective_date")][1] == ["notadate"]
    # 7 days of tolerance before 2026-11-25: 2026-11-17 is one day too old, 2020 far too old.
    assert bad[("effective_date_within_tolerance", "effective_date")] == (2, ["2020-01-01", "2026-11-17"], [3, 5])


def test_catalog_gtin_check_digit_is_part_of_the_report(tmp_path):
    path = write(tmp_path, "catalog.csv",
                 "sku,gtin,description,brand,unit_of_measure,pack_size\n"
                 "A,4006381333931,Tea,Acme,EA,1\nB,4006381333932,Cup,Acme,EA,6\nC,12345,Pot,Acme,EA,0\n")
    report = validate_catalog_file(path, CATALOG, file_name=path.name, as_of=AS_OF)
    bad = failed(report)
    assert bad[("gtin_check_digit", "gtin")] == (2, ["4006381333932", "12345"], [3, 4])
    assert bad[("expect_column_values_to_match_regex", "gtin")][1] == ["12345"]
    assert bad[("expect_column_values_to_be_between", "pack_size")][1] == ["0"]
    assert "gtin\\_check\\_digit" in report.summary_markdown() or "gtin_check_digit" in report.summary_markdown()


def test_promotion_ending_before_it_starts_fails(tmp_path):
    path = write(tmp_path, "promotions.csv", "sku,promo_price,start_date,end_date\nA,1,2026-12-01,2026-12-10\nB,1,2026-12-10,2026-12-01\nC,1,2026-12-05,2026-12-05\n")
    report = validate_catalog_file(path, PROMOTIONS, file_name=path.name, as_of=AS_OF)
    assert failed(report) == {("expect_column_pair_values_a_to_be_greater_than_b", "end_date, start_date"): (1, ["2026-12-01 / 2026-12-10"], [3])}


def test_xlsx_price_list(tmp_path):
    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["SKU", "Net Price", "Currency", "Valid From"])
    sheet.append(["A", "1.5", "EUR", "2026-12-01"])
    sheet.append(["B", "3", "GBP", "2019-01-01"])
    path = tmp_path / "price_list.xlsx"
    workbook.save(path)
    report = validate_catalog_file(path, PRICE_LIST, file_name=path.name, as_of=AS_OF, column_map=ACME_MAP)
    assert failed(report) == {("effective_date_within_tolerance", "Valid From"): (1, ["2019-01-01"], [3])}


def test_missing_required_column_is_a_read_error(tmp_path):
    path = write(tmp_path, "price_list.csv", "sku,price\nA,1\n")
    report = validate_catalog_file(path, PRICE_LIST, file_name=path.name, as_of=AS_OF)
    assert not report.passed and report.reason_code == "missing_columns"
