"""tg_items (moved from document_delivery's delivery_tg_items): the upsert of many TG items in one statement,
on both supported databases."""
import pytest
from sqlalchemy import create_engine

from include.exchange.items import OPEN_STATUSES, ItemRecord, remember_items, tg_items, tracked_items
from include.schema import ensure_schema


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'exchange.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    engine = create_engine(url)
    ensure_schema(engine)
    with engine.begin() as conn:
        conn.execute(tg_items.delete())
    yield engine
    engine.dispose()


def _facts(n: int, **changes) -> ItemRecord:
    facts = dict(use_case="document_delivery", partner_key="acme", kind="document_delivery",
                 subject_key=f"invoice:inv-{n}", file_name=f"INV-{n}.csv", sha256="ab" * 32, ledger_entry_id=n,
                 run_id="r1")
    return ItemRecord(**{**facts, **changes})


def test_many_items_in_one_call_then_a_status_change_keeps_the_facts(engine):
    items = [{"id": f"itm_{n}", "external_ref": f"ref-{n}", "status": "open", "updated_at": "t1"} for n in range(1200)]
    remember_items(engine, [(item, _facts(n)) for n, item in enumerate(items)])
    rows = tracked_items(engine, partner_key="acme")
    assert len(rows) == 1200 and {r.status for r in rows} == {"open"}

    changed = {**items[7], "status": "disputed", "updated_at": "t2"}
    remember_items(engine, [(changed, _facts(7, run_id="r2", file_name="other.csv")),
                                (items[8], _facts(8))])
    (row,) = tracked_items(engine, subject_keys=["invoice:inv-7"])
    assert (row.status, row.tg_updated_at, row.item_id) == ("disputed", "t2", "itm_7")
    assert (row.run_id, row.file_name) == ("r1", "INV-7.csv")  # facts stay those of the first sighting
    assert len(tracked_items(engine)) == 1200
    assert [r.item_id for r in tracked_items(engine, statuses=("disputed",))] == ["itm_7"]


def test_open_cases_are_looked_up_by_document_not_by_reading_every_open_item(engine):
    rows = [({"id": f"itm_n{n}", "external_ref": f"n-{n}", "status": "open"}, _facts(n)) for n in range(300)]
    rows.append(({"id": "itm_case", "external_ref": "case-5", "status": "open"},
                 _facts(5, kind="validation_failure")))
    rows.append(({"id": "itm_closed", "external_ref": "case-6", "status": "resolved"},
                 _facts(6, kind="validation_failure")))
    remember_items(engine, rows)
    found = tracked_items(engine, partner_key="acme", statuses=OPEN_STATUSES,
                             kinds=("validation_failure", "transfer_failure"),
                             subject_keys=["invoice:inv-5", "invoice:inv-6", "invoice:inv-7"])
    assert [r.item_id for r in found] == ["itm_case"]
    assert tracked_items(engine, subject_keys=[]) == []
