"""Versions, supersede, the gated one-transaction load and the history, on real PostgreSQL."""
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from sqlalchemy import func, select

from include.catalog import store
from include.catalog import tables as t
from include.catalog.history import format_history
from include.exchange.journal import journal_table

T0 = datetime(2026, 11, 24, 6, 0, tzinfo=timezone.utc)


def price_frame(rows):
    return pd.DataFrame(rows, columns=["sku", "price", "currency", "effective_date"])


def new_version(db, sha, sent_at=T0, partner="acme", kind="price_list", rows=None, posted=True):
    version, created = store.register_version(
        db, partner_key=partner, kind=kind, sha256=sha, file_name=f"{kind}_{sha}.csv", size=100, sent_at=sent_at, run_id="r1"
    )
    store.record_checks(db, version["id"], passed=True, summary={"success": True}, row_count=2)
    store.stage_rows(db, version["id"], [price_frame(rows or [("A", "1.00", "EUR", "2026-11-24"), ("B", "2", "eur", "2026-11-24")])])
    if posted:
        store.record_posted(db, version["id"], item_id=f"IT-{sha}", external_ref=f"ref-{sha}", diff_counts={}, created=True)
    return version["id"]


def downstream_prices(db, partner="acme"):
    with db.connect() as conn:
        return conn.execute(
            select(t.downstream_prices.c.sku, t.downstream_prices.c.price, t.downstream_prices.c.currency)
            .where(t.downstream_prices.c.partner_key == partner).order_by(t.downstream_prices.c.sku)
        ).all()


def test_same_content_is_one_version(db):
    first, created = store.register_version(db, partner_key="acme", kind="catalog", sha256="a" * 64, file_name="catalog.csv", size=1, sent_at=T0)
    again, created_again = store.register_version(db, partner_key="acme", kind="catalog", sha256="a" * 64, file_name="catalog (1).csv", size=1, sent_at=T0)
    other, _ = store.register_version(db, partner_key="globex", kind="catalog", sha256="a" * 64, file_name="catalog.csv", size=1, sent_at=T0)
    assert created and not created_again
    assert first["id"] == again["id"] != other["id"]


def test_failed_checks_reject_once(db):
    version, _ = store.register_version(db, partner_key="acme", kind="catalog", sha256="b" * 64, file_name="c.csv", size=1, sent_at=T0)
    rejected = store.record_checks(db, version["id"], passed=False, summary={"failed": ["gtin"]}, row_count=3)
    assert rejected["status"] == t.REJECTED
    # A rerun's second verdict does not flip it.
    assert store.record_checks(db, version["id"], passed=True, summary={}, row_count=3)["status"] == t.REJECTED


def test_load_is_gated_on_acknowledgement_and_happens_once(db):
    vid = new_version(db, "c1", posted=False)
    store.record_decision(db, vid, tg_status="acknowledged", actor="early", at=T0)  # no item yet: ignored
    assert store.get_version(db, vid)["status"] == t.VALIDATED
    store.record_posted(db, vid, item_id="IT-1", external_ref="ref", diff_counts={"added": 2}, created=True)
    assert store.load_version(db, vid) == store.LoadResult(False, "not_acknowledged")
    assert downstream_prices(db) == []

    store.record_decision(db, vid, tg_status="acknowledged", actor="retailer@acme", at=T0)
    first = store.load_version(db, vid)
    second = store.load_version(db, vid)
    assert (first.loaded, first.rows) == (True, 2)
    assert (second.loaded, second.reason) == (False, "already_loaded")
    assert [(s, str(p), c) for s, p, c in downstream_prices(db)] == [("A", "1.0000", "EUR"), ("B", "2.0000", "EUR")]
    assert store.accepted_version(db, "acme", "price_list")["id"] == vid


def test_new_version_replaces_downstream_rows_of_that_partner_only(db):
    v1 = new_version(db, "d1")
    other = new_version(db, "d1", partner="globex")
    for vid in (v1, other):
        store.record_decision(db, vid, tg_status="acknowledged", actor="x", at=T0)
        assert store.load_version(db, vid).loaded
    v2 = new_version(db, "d2", sent_at=T0 + timedelta(days=1), rows=[("A", "1.25", "EUR", "2026-11-25")])
    store.record_decision(db, v2, tg_status="resolved", actor="x", at=T0)
    assert store.load_version(db, v2).loaded
    assert [s for s, _, _ in downstream_prices(db)] == ["A"]
    assert [s for s, _, _ in downstream_prices(db, "globex")] == ["A", "B"]
    assert store.accepted_frame(db, "acme", "price_list")["price"].tolist() == ["1.25"]


def test_a_bad_row_rolls_the_whole_load_back(db):
    good = new_version(db, "e1")
    store.record_decision(db, good, tg_status="acknowledged", actor="x", at=T0)
    store.load_version(db, good)
    bad = new_version(db, "e2", sent_at=T0 + timedelta(days=1), rows=[("A", "3", "EUR", "2026-11-25"), ("B", "n/a", "EUR", "2026-11-25")])
    store.record_decision(db, bad, tg_status="acknowledged", actor="x", at=T0)
    with pytest.raises(store.LoadError, match="sku B: price 'n/a' is not a number"):
        store.load_version(db, bad)
    # Nothing of the failed load is visible: old rows, old accepted version, status unchanged.
    assert [(s, str(p)) for s, p, _ in downstream_prices(db)] == [("A", "1.0000"), ("B", "2.0000")]
    assert store.accepted_version(db, "acme", "price_list")["id"] == good
    assert store.get_version(db, bad)["status"] == t.ACKNOWLEDGED
    with db.connect() as conn:
        loaded_events = conn.execute(select(func.count()).where(
            journal_table.c.subject_key == store.subject_key(bad), journal_table.c.event == "loaded")).scalar()
    assert loaded_events == 0


def test_dispute_blocks_the_load_and_a_corrected_file_supersedes_it(db):
    v1 = new_version(db, "f1")
    store.record_decision(db, v1, tg_status="disputed", actor="buyer", at=T0)
    assert store.load_version(db, v1).reason == "disputed"

    v2 = new_version(db, "f2", sent_at=T0 + timedelta(hours=3))
    result = store.supersede(db, v2)
    assert [o["id"] for o in result.superseded] == [v1] and result.superseded_by is None
    assert store.get_version(db, v1)["status"] == t.SUPERSEDED
    assert store.get_version(db, v1)["superseded_by"] == v2
    # The disputed item being resolved later (by the supersede itself) must not load v1.
    store.record_decision(db, v1, tg_status="resolved", actor="buyer", at=T0)
    assert store.load_version(db, v1).reason == "superseded"
    # Supersede is idempotent.
    assert store.supersede(db, v2).superseded == []


def test_older_file_registered_late_is_stale(db):
    newer = new_version(db, "g2", sent_at=T0 + timedelta(days=1))
    store.record_decision(db, newer, tg_status="acknowledged", actor="x", at=T0)
    store.load_version(db, newer)
    older = new_version(db, "g1", sent_at=T0)  # a backfill reaches the older interval afterwards
    result = store.supersede(db, older)
    assert result.superseded_by["id"] == newer
    assert store.get_version(db, older)["status"] == t.SUPERSEDED
    assert store.get_version(db, newer)["status"] == t.LOADED


def test_history_tells_the_story(db):
    v1 = new_version(db, "h1", posted=False)
    store.record_posted(db, v1, item_id="IT-9", external_ref="r", diff_counts={"added": 2}, created=True)
    store.record_decision(db, v1, tg_status="acknowledged", actor="anna@retail.example", at=T0 + timedelta(hours=1))
    store.load_version(db, v1)
    versions = store.history(db, "acme")
    assert [e["event"] for e in versions[0]["events"]] == ["received", "checks_passed", "staged", "diff_posted", "acknowledged", "loaded"]
    text = format_history("acme", versions)
    assert "status LOADED" in text
    assert "acknowledged by anna@retail.example at 2026-11-24 07:00:00Z" in text
    assert "TG item IT-9" in text
    assert format_history("nobody", store.history(db, "nobody")) == "No catalog versions for partner nobody."


def test_two_concurrent_loads_of_one_version_load_it_once(db):
    from concurrent.futures import ThreadPoolExecutor

    vid = new_version(db, "k1", rows=[(f"S{i}", "1", "EUR", "2026-11-24") for i in range(3000)])
    store.record_decision(db, vid, tg_status="acknowledged", actor="x", at=T0)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: store.load_version(db, vid), range(2)))
    assert sorted(r.reason for r in results) == ["already_loaded", "loaded"]
    assert len(downstream_prices(db)) == 3000


def test_catalog_and_promotions_load_into_typed_tables(db):
    from datetime import date

    cat_cols = ["sku", "gtin", "description", "brand", "unit_of_measure", "pack_size", "colour"]
    promo_cols = ["sku", "promo_price", "start_date", "end_date"]
    loaded = {}
    for kind, frame in (
        ("catalog", pd.DataFrame([("A", "4006381333931", "Tea", "Acme", "EA", "12.0", "green")], columns=cat_cols)),
        ("promotions", pd.DataFrame([("A", "0.99", "2026-12-01", "2026-12-24T00:00:00")], columns=promo_cols)),
    ):
        version, _ = store.register_version(db, partner_key="acme", kind=kind, sha256=kind * 3, file_name=f"{kind}.xlsx", size=1, sent_at=T0)
        store.record_checks(db, version["id"], passed=True, summary={}, row_count=1)
        store.stage_rows(db, version["id"], [frame])
        store.record_posted(db, version["id"], item_id=f"IT-{kind}", external_ref=kind, diff_counts={}, created=True)
        store.record_decision(db, version["id"], tg_status="acknowledged", actor="x", at=T0)
        assert store.load_version(db, version["id"]).loaded
        loaded[kind] = version["id"]
    with db.connect() as conn:
        item = conn.execute(select(t.downstream_catalog_items)).mappings().one()
        promo = conn.execute(select(t.downstream_promotions)).mappings().one()
    assert (item["gtin"], item["pack_size"], item["version_id"]) == ("4006381333931", 12, loaded["catalog"])
    assert (str(promo["promo_price"]), promo["start_date"], promo["end_date"]) == ("0.9900", date(2026, 12, 1), date(2026, 12, 24))
    # Extra partner columns are kept in the staged version (the next diff and the audit see them).
    assert store.version_frame(db, loaded["catalog"])["colour"].tolist() == ["green"]
