"""Suites are JSON data in a documented format; every suite in include/expectations builds with GX."""
import json

import pytest

from include.checks import InvalidSuite, UnknownSuite, list_suites, load_suite
from include.checks.suites import build_gx_suite, parse_suite

DOCUMENT_SUITES = ("invoice", "purchase_order", "shipping_manifest", "compliance_certificate", "product_file")


def test_document_suites_exist():
    assert set(DOCUMENT_SUITES) <= set(list_suites())


@pytest.mark.parametrize("name", list_suites())
def test_every_suite_builds_a_gx_suite(name):
    spec = load_suite(name)
    suite = build_gx_suite(spec)
    assert len(suite.expectations) == len(spec.expectations) > 0
    assert sorted(e.meta["index"] for e in suite.expectations) == list(range(len(spec.expectations)))


def test_invoice_suite_says_what_the_brief_asks():
    spec = load_suite("invoice")
    types = {(e.type, e.column) for e in spec.expectations}
    assert ("expect_column_values_to_be_unique", "invoice_number") in types
    assert ("expect_column_values_to_be_in_set", "currency") in types
    assert spec.column_types["invoice_date"].type == "date"
    assert spec.column_types["amount"].type == "number"
    between = next(e for e in spec.expectations if e.type == "expect_column_values_to_be_between" and e.column == "amount")
    assert between.kwargs["min_value"] == 0 and between.kwargs["strict_min"] is True
    currencies = next(e for e in spec.expectations if e.column == "currency" and "value_set" in e.kwargs).kwargs["value_set"]
    assert {"EUR", "USD", "JPY", "CHF"} <= set(currencies) and "XXX" not in currencies and "EURO" not in currencies


def test_unknown_suite_is_a_configuration_error():
    with pytest.raises(UnknownSuite):
        load_suite("no_such_document")
    with pytest.raises(UnknownSuite):
        load_suite("../invoice")


def _suite(**changes):
    data = {
        "name": "t",
        "columns": [{"name": "a"}, {"name": "n", "type": "number"}],
        "expectations": [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "a"}}],
    }
    data.update(changes)
    return data


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"columns": []}, "at least one column"),
        ({"columns": [{"name": "a", "type": "money"}]}, "type must be one of"),
        ({"format": "parquet"}, "'format'"),
        ({"delimiter": ";;"}, "one character"),
        ({"encoding": "no-such-codec"}, "unknown encoding"),
        ({"expectations": [{"type": "not_an_expectation"}]}, "needs a 'type'"),
        ({"expectations": [{"type": "expect_column_values_to_be_unique", "kwargs": {"column": "zz"}}]}, "undeclared column"),
        ({"surprise": 1}, "unknown keys"),
    ],
)
def test_parse_suite_rejects_malformed_documents(changes, message):
    with pytest.raises(InvalidSuite, match=message):
        parse_suite(_suite(**changes))


def test_build_rejects_unknown_expectation_and_bad_kwargs():
    unknown = parse_suite(_suite(expectations=[{"type": "expect_column_values_to_be_purple", "kwargs": {"column": "a"}}]))
    with pytest.raises(InvalidSuite, match="unknown great-expectations expectation"):
        build_gx_suite(unknown)
    bad_kwargs = parse_suite(_suite(expectations=[{"type": "expect_column_values_to_be_between", "kwargs": {"column": "n"}}]))
    with pytest.raises(InvalidSuite, match="rejects its kwargs"):
        build_gx_suite(bad_kwargs)


def test_suite_name_must_match_file_name(tmp_path):
    (tmp_path / "mine.json").write_text(json.dumps(_suite(name="other")))
    with pytest.raises(InvalidSuite, match="file name"):
        load_suite("mine", tmp_path)
