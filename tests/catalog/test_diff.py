import csv
import io

import pandas as pd

from include.catalog.diff import compute_diff
from include.catalog.kinds import CATALOG, PRICE_LIST


def prices(rows):
    return pd.DataFrame(rows, columns=["sku", "price", "currency", "effective_date"])


def test_added_removed_and_price_changes_against_threshold():
    old = prices([("A", "10.00", "EUR", "2026-11-01"), ("B", "5", "EUR", "2026-11-01"), ("C", "2", "EUR", "2026-11-01")])
    new = prices([("A", "12.50", "EUR", "2026-11-01"), ("B", "5.5", "EUR", "2026-11-01"), ("D", "1", "EUR", "2026-11-01")])
    diff = compute_diff(new, old, PRICE_LIST, threshold_pct=20)
    assert diff.added == ["D"]
    assert diff.removed == ["C"]
    assert [(s, o, n, p) for s, o, n, p in diff.price_changes] == [("A", 10.0, 12.5, 25.0), ("B", 5.0, 5.5, 10.0)]
    assert [p[0] for p in diff.price_changes_above_threshold] == ["A"]
    assert diff.needs_attention
    assert diff.counts()["price_changes_above_threshold"] == 1


def test_threshold_is_per_partner():
    old = prices([("A", "10", "EUR", "2026-11-01")])
    new = prices([("A", "12.5", "EUR", "2026-11-01")])
    assert compute_diff(new, old, PRICE_LIST, threshold_pct=30).price_changes_above_threshold == []
    assert len(compute_diff(new, old, PRICE_LIST, threshold_pct=5).price_changes_above_threshold) == 1


def test_same_price_written_differently_is_no_change_but_attributes_are_compared():
    old = prices([("A", "1.50", "EUR", "2026-11-01")])
    new = prices([("A", "1.5", "USD", "2026-12-01")])
    diff = compute_diff(new, old, PRICE_LIST, threshold_pct=20)
    assert diff.price_changes == []
    assert diff.attribute_changes == [("A", "currency", "EUR", "USD"), ("A", "effective_date", "2026-11-01", "2026-12-01")]


def test_first_version_is_all_added_and_empty_diff_says_so():
    new = prices([("A", "1", "EUR", "2026-11-01")])
    first = compute_diff(new, None, PRICE_LIST, threshold_pct=20)
    assert first.added == ["A"] and first.rows_before == 0
    same = compute_diff(new, new.copy(), PRICE_LIST, threshold_pct=20)
    assert same.is_empty and not same.needs_attention
    assert "No change" in same.summary_markdown()


def test_catalog_attribute_changes_and_csv_attachment():
    cols = ["sku", "gtin", "description", "brand", "unit_of_measure", "pack_size"]
    old = pd.DataFrame([("A", "4006381333931", "Tea 20 bags", "Acme", "EA", "1")], columns=cols)
    new = pd.DataFrame([("A", "4006381333931", "Tea 25 bags", "Acme", "EA", "1"), ("B", "96385074", "Cup", "Acme", "EA", "6")], columns=cols)
    diff = compute_diff(new, old, CATALOG, threshold_pct=20)
    assert diff.attribute_changes == [("A", "description", "Tea 20 bags", "Tea 25 bags")]
    rows = list(csv.DictReader(io.StringIO(diff.to_csv().decode())))
    assert {(r["change"], r["sku"], r["field"]) for r in rows} == {("added", "B", ""), ("attribute_change", "A", "description")}


def test_summary_lists_big_price_jumps_and_csv_has_all_rows():
    old = prices([(f"S{i:03d}", "10", "EUR", "2026-11-01") for i in range(30)])
    new = prices([(f"S{i:03d}", "20" if i < 15 else "10.1", "EUR", "2026-11-01") for i in range(30)])
    diff = compute_diff(new, old, PRICE_LIST, threshold_pct=20)
    body = diff.summary_markdown()
    assert "| price changes above 20% | 15 |" in body
    assert "| S000 | 10 | 20 | +100.00% |" in body
    assert body.count("+100.00%") == 10  # a sample; the attachment has everything
    rows = list(csv.DictReader(io.StringIO(diff.to_csv().decode())))
    assert len(rows) == 30
    assert sum(r["above_threshold"] == "True" for r in rows) == 15
