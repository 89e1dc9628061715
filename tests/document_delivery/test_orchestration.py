"""The document_delivery task functions end to end against real sshd, TG sandbox and PostgreSQL.

No scheduler: each test calls the functions the DAG's tasks call, in the DAG's order
(``run_partner_once`` = check_readiness → fetch_and_validate → publish_results).
"""
from __future__ import annotations

import pytest

from include import document_delivery as dd
from tests.data.bad_inputs import make_valid_file, valid_rows, csv_text
from tests.document_delivery.conftest import PARTNER, TG_PARTNER, sha256_of


def _bad_invoice(rows: int = 5, seed: int = 3) -> str:
    header, data = valid_rows("invoice", rows, seed=seed)
    data[1][header.index("amount")] = "-5.00"  # fails amount > 0
    return csv_text(header, data)


def test_happy_path_archives_and_notifies_with_metadata(delivery_env):
    env = delivery_env
    source = make_valid_file(env.tmp / "src", "invoice", rows=12, name="INV-1001.csv")
    env.drop("INV-1001.csv", source)

    summary = dd.run_partner_once(PARTNER, env.ctx)

    assert env.names(env.inbound) == []
    archived = env.names(env.archive)
    assert len(archived) == 1 and archived[0].startswith("INV-1001.csv.")
    assert (env.archive / archived[0]).read_bytes() == source.read_bytes()
    items = env.items(partner_id=TG_PARTNER)
    assert len(items) == 1
    item = items[0]
    assert (item["type"], item["category"], item["requires_ack"]) == ("notification", "document_delivery", True)
    meta = item["metadata"]
    assert meta["document_type"] == "invoice"
    assert meta["file_name"] == "INV-1001.csv"
    assert meta["sha256"] == sha256_of(source)
    assert meta["size"] == source.stat().st_size
    assert meta["rows"] == 12
    assert meta["dag_id"] == "document_delivery" and meta["run_id"] == env.ctx.run_id
    assert summary["notifications"] == [item["id"]]
    tracked = dd.tracked_items(partner_key=PARTNER)
    assert [(t["item_id"], t["kind"], t["status"]) for t in tracked] == [(item["id"], "document_delivery", "open")]


def test_rerun_and_new_run_post_nothing_new(delivery_env):
    env = delivery_env
    env.drop("INV-1002.csv", make_valid_file(env.tmp / "src", "invoice", rows=3, name="x.csv"))
    env.drop("INV-1003.csv", _bad_invoice())
    first = dd.run_partner_once(PARTNER, env.ctx)
    assert first["created"] == 2
    before = {i["id"]: i["updated_at"] for i in env.items()}

    # Clearing publish_results: same run, same outcomes, posted again → converges, nothing new.
    again = dd.publish_results(PARTNER, first["outcomes"], env.ctx)
    assert again["created"] == 0 and again["reused"] == 2
    # The same run cleared as a whole, and the next scheduled run: nothing left to do.
    assert dd.run_partner_once(PARTNER, env.ctx)["created"] == 0
    assert dd.run_partner_once(PARTNER, env.context("scheduled__next"))["created"] == 0
    after = env.items()
    assert sorted(i["id"] for i in after) == sorted(before)
    case = next(i for i in after if i["category"] == "validation_failure")
    assert len(env.attachments(case["id"])) == 1, "report attached once, not per rerun"
