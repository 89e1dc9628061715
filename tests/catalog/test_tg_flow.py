"""Post, acknowledge, dispute, supersede and load against the real TG sandbox and PostgreSQL.

The intake part (SFTP) is covered by test_receive.py and the DAG tests; here versions are registered
directly so the TG side of the story is tested on its own. Posting goes plan_posts -> post_items (the
bulk post operator's function) -> record_posts (tests/catalog/steps.py).
"""
from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from sqlalchemy import select

from include.catalog import store
from include.catalog import tables as t
from include.catalog.decision import LoadBlocked, decide_and_load
from tests.catalog.steps import post_diff

T0 = datetime(2026, 11, 24, 6, 0, tzinfo=timezone.utc)


def add_version(db, sha, rows, sent_at):
    version, _ = store.register_version(db, partner_key="acme", kind="price_list", sha256=sha * 8,
                                        file_name=f"price_list_{sha}.csv", size=123, sent_at=sent_at, run_id="test")
    store.record_checks(db, version["id"], passed=True, summary={}, row_count=len(rows))
    store.stage_rows(db, version["id"], [pd.DataFrame(rows, columns=["sku", "price", "currency", "effective_date"])])
    return version["id"]


def loaded_prices(db):
    with db.connect() as conn:
        return {s: float(p) for s, p in conn.execute(
            select(t.downstream_prices.c.sku, t.downstream_prices.c.price).where(t.downstream_prices.c.partner_key == "acme"))}


BASE = [("A", "10.00", "EUR", "2026-12-01"), ("B", "4.00", "EUR", "2026-12-01")]


def test_clean_cycle_posts_once_and_loads_once(db, hooks, acme):
    enterprise, portal = hooks
    vid = add_version(db, "c0ffee01", BASE, T0)
    posted = post_diff(db, enterprise, acme, vid, run_id="r1")
    again = post_diff(db, enterprise, acme, vid, run_id="r2")  # rerun
    assert posted == again and posted["deadline_hours"] == 48
    item = enterprise.get_item(posted["item_id"])
    assert item["category"] == "catalog_sync" and item["requires_ack"] and item["partner_id"] == "P-ACME"
    assert "| SKUs added | 2 |" in item["body"]
    assert len(enterprise.list_items(external_ref=item["external_ref"])) == 1
    attachments = enterprise.list_attachments(item["id"])
    assert len(attachments) == 1
    diff_rows = list(csv.DictReader(io.StringIO(enterprise.get_attachment_content(item["id"], attachments[0]["id"]).decode())))
    assert {r["sku"] for r in diff_rows} == {"A", "B"}

    with pytest.raises(LoadBlocked, match="not_acknowledged"):
        decide_and_load(db, enterprise, vid)  # the gate holds without an answer
    portal.acknowledge(item["id"], note="received, looks fine")
    assert decide_and_load(db, enterprise, vid) == {"version_id": vid, "loaded": True, "rows": 2}
    assert decide_and_load(db, enterprise, vid)["reason"] == "already_loaded"
    assert loaded_prices(db) == {"A": 10.0, "B": 4.0}
    version = store.get_version(db, vid)
    assert (version["status"], version["decided_status"], version["decided_by"]) == (t.LOADED, "acknowledged", "acme-portal")


def test_price_jump_disputed_then_corrected_file_resolves(db, hooks, acme):
    enterprise, portal = hooks
    v1 = add_version(db, "aaaa0001", BASE, T0)
    p1 = post_diff(db, enterprise, acme, v1, run_id="r1")
    portal.acknowledge(p1["item_id"])
    decide_and_load(db, enterprise, v1)

    # The next cycle's price list has A at +150 %: above acme's 20 % threshold.
    v2 = add_version(db, "aaaa0002", [("A", "25.00", "EUR", "2026-12-01"), ("B", "4.00", "EUR", "2026-12-01")], T0 + timedelta(days=1))
    p2 = post_diff(db, enterprise, acme, v2, run_id="r2")
    item2 = enterprise.get_item(p2["item_id"])
    assert "price changes above threshold" in item2["title"] and item2["severity"] == "medium"
    assert "| A | 10 | 25 | +150.00% |" in item2["body"]
    portal.transition(p2["item_id"], "disputed", comment="A cannot cost 25.00, please check")
    with pytest.raises(LoadBlocked, match="disputed"):
        decide_and_load(db, enterprise, v2)
    assert loaded_prices(db) == {"A": 10.0, "B": 4.0}

    # The partner sends a corrected file: it supersedes the disputed version and resolves its item.
    v3 = add_version(db, "aaaa0003", [("A", "10.50", "EUR", "2026-12-01"), ("B", "4.00", "EUR", "2026-12-01")], T0 + timedelta(days=1, hours=2))
    p3 = post_diff(db, enterprise, acme, v3, run_id="r3")
    post_diff(db, enterprise, acme, v3, run_id="r3-rerun")
    old = enterprise.get_item(p2["item_id"])
    assert old["status"] == "resolved" and old["title"].startswith("[Superseded]")
    notes = [c["body"] for c in enterprise.list_comments(p2["item_id"]) if c["body"].startswith("Corrected file received")]
    assert len(notes) == 1 and "price_list_aaaa0003.csv" in notes[0]
    with pytest.raises(LoadBlocked, match="superseded"):
        decide_and_load(db, enterprise, v2)  # its resolved item must not load it

    portal.transition(p3["item_id"], "resolved", comment="corrected price accepted")
    assert decide_and_load(db, enterprise, v3)["loaded"]
    assert loaded_prices(db) == {"A": 10.5, "B": 4.0}
    statuses = [(v["id"], v["status"]) for v in store.history(db, "acme")]
    assert statuses == [(v1, t.LOADED), (v2, t.SUPERSEDED), (v3, t.LOADED)]


def test_unanswered_item_is_escalated_reminded_and_recorded(db, hooks, acme, monkeypatch, pg_url):
    """The deadline path of the ack sensor, called directly (its timing is the base sensor's)."""
    from include.catalog.ack_sensor import REMINDER, CatalogAckSensor

    enterprise, _ = hooks
    monkeypatch.setenv("EXCHANGE_DB_URL", pg_url)
    vid = add_version(db, "dead0001", BASE, T0)
    posted = post_diff(db, enterprise, acme, vid, run_id="r1")
    sensor = CatalogAckSensor(task_id="await_ack", version=posted)
    sensor._apply_version()
    assert sensor.item_id == posted["item_id"] and sensor.timeout == 48 * 3600
    sensor.escalate(None)
    sensor.escalate(None)  # a rerun changes nothing more
    item = enterprise.get_item(posted["item_id"])
    assert item["severity"] == "high"
    assert [c["body"] for c in enterprise.list_comments(item["id"])].count(REMINDER) == 1
    assert [e["event"] for e in store.history(db, "acme")[0]["events"]].count("escalated") == 2


def test_deadline_escalation_mails_an_alert(db, hooks, acme, monkeypatch, pg_url, smtp_inbox):
    """At the deadline the sensor escalates and mails through include.alerts (real SMTP server)."""
    from types import SimpleNamespace

    from include.catalog.ack_sensor import CatalogAckSensor

    enterprise, _ = hooks
    monkeypatch.setenv("EXCHANGE_DB_URL", pg_url)
    monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("SMTP_PORT", str(smtp_inbox.port))
    monkeypatch.setenv("ALERT_EMAIL_TO", "category-managers@retail.example")
    vid = add_version(db, "a1e70001", BASE, T0)
    posted = post_diff(db, enterprise, acme, vid, run_id="r1")
    sensor = CatalogAckSensor(task_id="await_acknowledgement", version=posted)
    sensor._apply_version()
    # What Airflow hands the task (the parts include.alerts reads); a TI cannot exist outside a run.
    ti = SimpleNamespace(dag_id="catalog_sync", task_id="confirm_and_load.await_acknowledgement", run_id="r1",
                         map_index=0, try_number=1, log_url=None)
    sensor.escalate({"task_instance": ti, "ti": ti, "run_id": "r1", "task": sensor})
    received = smtp_inbox.wait_for(1)
    assert len(received) == 1
    import email
    from email import policy

    mail = email.message_from_bytes(received[0].content, policy=policy.default)
    text = mail.get_content()
    assert "await_acknowledgement[0]" in mail["Subject"]
    assert received[0].rcpt_tos == ["category-managers@retail.example"]
    assert "CatalogAckOverdue" in text and f"TG item {posted['item_id']} unanswered after 48 h" in text
    assert enterprise.get_item(posted["item_id"])["severity"] == "high"
