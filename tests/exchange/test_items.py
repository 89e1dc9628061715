"""tg_items: the upsert of many TG items (one statement per 500 rows), filters, chunked IN lists, on
SQLite and PostgreSQL."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import create_engine, event

from include.exchange import items as it
from include.schema import ensure_schema


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'exchange.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    engine = create_engine(url)
    ensure_schema(engine)
    with engine.begin() as conn:
        conn.execute(it.tg_items.delete())
    yield engine
    engine.dispose()


class StatementLog:
    """The SQL statements an engine ran (first word and table), to count round trips."""

    def __init__(self, engine):
        self.statements: list[str] = []
        event.listen(engine, "before_cursor_execute", self._seen)
        self._engine = engine

    def _seen(self, conn, cursor, statement, parameters, context, executemany):
        self.statements.append(" ".join(statement.split()[:3]).upper())

    def count(self, prefix: str) -> int:
        return sum(s.startswith(prefix.upper()) for s in self.statements)

    def close(self):
        event.remove(self._engine, "before_cursor_execute", self._seen)


def _record(n: int, **over) -> it.ItemRecord:
    values = dict(use_case="document_delivery", partner_key="acme", kind="document_delivery",
                  subject_key=f"invoice:inv-{n}", file_name=f"INV-{n}.csv", sha256="ab" * 32, ledger_entry_id=n, run_id="r1")
    values.update(over)
    return it.ItemRecord(**values)


def _item(n: int, **over) -> dict:
    return {"id": f"itm_{n}", "external_ref": f"ref-{n}", "status": "open", "updated_at": "2026-12-01T10:00:00.000000Z",
            "acknowledged_at": None, **over}


def test_1200_items_take_three_statements_and_a_rerun_keeps_the_facts(engine):
    log = StatementLog(engine)
    it.remember_items(engine, [(_item(n), _record(n)) for n in range(1200)])
    log.close()
    assert log.count("INSERT INTO EXCHANGE_TG_ITEMS") == 3
    rows = it.tracked_items(engine, partner_key="acme")
    assert len(rows) == 1200 and {r.status for r in rows} == {"open"} and not any(r.acknowledged for r in rows)

    acked = _item(7, status="acknowledged", updated_at="2026-12-01T11:00:00.000000Z",
                  acknowledged_at="2026-12-01T11:00:00.000000Z")
    it.remember_items(engine, [(acked, _record(7, run_id="r2", file_name="other.csv")), (_item(8), _record(8))])
    (row,) = it.tracked_items(engine, subject_keys=["invoice:inv-7"])
    assert (row.status, row.acknowledged, row.tg_updated_at, row.item_id) == (
        "acknowledged", True, "2026-12-01T11:00:00.000000Z", "itm_7")
    assert (row.run_id, row.file_name, row.ledger_entry_id) == ("r1", "INV-7.csv", 7)  # facts of the first sighting
    assert len(it.tracked_items(engine)) == 1200


def test_an_older_item_state_never_overwrites_a_newer_one(engine):
    it.remember_items(engine, [(_item(1, status="disputed", updated_at="2026-12-01T12:00:00.000000Z"), _record(1))])
    it.remember_items(engine, [(_item(1, status="open", updated_at="2026-12-01T10:00:00.000000Z"), _record(1))])
    it.set_status(engine, "ref-1", "in_progress", tg_updated_at="2026-12-01T11:00:00.000000Z", resolved_by="itm_x")
    (row,) = it.tracked_items(engine)
    assert (row.status, row.tg_updated_at) == ("disputed", "2026-12-01T12:00:00.000000Z")
    assert row.resolved_by_item_id == "itm_x"  # who resolved it is recorded either way

    it.set_status(engine, "ref-1", "resolved", tg_updated_at="2026-12-01T13:00:00.000000Z", acknowledged=True)
    (row,) = it.tracked_items(engine)
    assert (row.status, row.acknowledged, row.tg_updated_at) == ("resolved", True, "2026-12-01T13:00:00.000000Z")
    it.set_status(engine, "ref-1", "closed")  # no TG time: taken as said
    assert it.tracked_items(engine)[0].status == "closed"


def test_filters_combine_and_an_empty_list_matches_nothing(engine):
    rows = [(_item(n), _record(n)) for n in range(6)]
    rows.append((_item(10, status="disputed"), _record(10, kind="validation_failure", subject_key="invoice:inv-1")))
    rows.append((_item(11, status="resolved"), _record(11, kind="validation_failure", subject_key="invoice:inv-2")))
    rows.append((_item(12), _record(12, use_case="catalog_sync", partner_key="globex", kind="catalog_sync",
                                    subject_key="price_list:7")))
    it.remember_items(engine, rows)
    cases = it.tracked_items(engine, use_case="document_delivery", partner_key="acme", statuses=it.OPEN_STATUSES,
                             kinds=["validation_failure", "transfer_failure"],
                             subject_keys=["invoice:inv-1", "invoice:inv-2", "invoice:inv-3"])
    assert [c.item_id for c in cases] == ["itm_10"]
    assert [r.item_id for r in it.tracked_items(engine, use_case="catalog_sync")] == ["itm_12"]
    assert {r.item_id for r in it.tracked_items(engine, item_ids=["itm_3", "itm_12", "itm_unknown"])} == {"itm_3", "itm_12"}
    assert it.tracked_items(engine, subject_keys=[]) == []
    assert it.tracked_items(engine, item_ids=iter(())) == []


def test_long_in_lists_go_in_chunks_of_500(engine):
    it.remember_items(engine, [(_item(n), _record(n)) for n in range(1100)])
    wanted = [f"invoice:inv-{n}" for n in range(1100)] + [f"unknown:{n}" for n in range(100)]
    log = StatementLog(engine)
    found = it.tracked_items(engine, subject_keys=wanted, item_ids=[f"itm_{n}" for n in range(0, 1100, 2)])
    log.close()
    assert log.count("SELECT") == 3 * 2  # 1,200 subject keys x 550 item ids
    assert sorted(int(r.item_id[4:]) for r in found) == list(range(0, 1100, 2))
    # one call, one created_at: the chunks' rows come back merged in external_ref order
    assert [r.external_ref for r in found] == sorted(r.external_ref for r in found)


def test_writes_on_a_connection_belong_to_the_callers_transaction(engine):
    with pytest.raises(RuntimeError), engine.begin() as conn:
        it.remember_items(conn, [(_item(1), _record(1))])
        assert len(it.tracked_items(conn)) == 1  # visible inside
        raise RuntimeError("the caller's step failed")
    assert it.tracked_items(engine) == []


def test_a_tracked_item_crosses_xcom_as_json(engine):
    it.remember_items(engine, [(_item(1, acknowledged_at="2026-12-01T10:00:00.000000Z"), _record(1))])
    (row,) = it.tracked_items(engine)
    again = it.TrackedItem.from_dict(json.loads(json.dumps(row.to_dict())))
    assert again == row and again.acknowledged and again.is_open


def test_oldest_first(engine):
    it.remember_items(engine, [(_item(2), _record(2))])
    it.remember_items(engine, [(_item(1), _record(1))])
    assert [r.item_id for r in it.tracked_items(engine)] == ["itm_2", "itm_1"]


# Moved from document_delivery's delivery_tg_items tests (same assertions, on the kit's table).
def _facts(n: int, **changes) -> ItemRecord:
    facts = dict(use_case="document_delivery", partner_key="acme", kind="document_delivery",
                 subject_key=f"invoice:inv-{n}", file_name=f"INV-{n}.csv", sha256="ab" * 32, ledger_entry_id=n,
                 run_id="r1")
    return it.ItemRecord(**{**facts, **changes})


def test_many_items_in_one_call_then_a_status_change_keeps_the_facts(engine):
    items = [{"id": f"itm_{n}", "external_ref": f"ref-{n}", "status": "open", "updated_at": "t1"} for n in range(1200)]
    it.remember_items(engine, [(item, _facts(n)) for n, item in enumerate(items)])
    rows = it.tracked_items(engine, partner_key="acme")
    assert len(rows) == 1200 and {r.status for r in rows} == {"open"}

    changed = {**items[7], "status": "disputed", "updated_at": "t2"}
    it.remember_items(engine, [(changed, _facts(7, run_id="r2", file_name="other.csv")),
                                (items[8], _facts(8))])
    (row,) = it.tracked_items(engine, subject_keys=["invoice:inv-7"])
    assert (row.status, row.tg_updated_at, row.item_id) == ("disputed", "t2", "itm_7")
    assert (row.run_id, row.file_name) == ("r1", "INV-7.csv")  # facts stay those of the first sighting
    assert len(it.tracked_items(engine)) == 1200
    assert [r.item_id for r in it.tracked_items(engine, statuses=("disputed",))] == ["itm_7"]


def test_open_cases_are_looked_up_by_document_not_by_reading_every_open_item(engine):
    rows = [({"id": f"itm_n{n}", "external_ref": f"n-{n}", "status": "open"}, _facts(n)) for n in range(300)]
    rows.append(({"id": "itm_case", "external_ref": "case-5", "status": "open"},
                 _facts(5, kind="validation_failure")))
    rows.append(({"id": "itm_closed", "external_ref": "case-6", "status": "resolved"},
                 _facts(6, kind="validation_failure")))
    it.remember_items(engine, rows)
    found = it.tracked_items(engine, partner_key="acme", statuses=it.OPEN_STATUSES,
                             kinds=("validation_failure", "transfer_failure"),
                             subject_keys=["invoice:inv-5", "invoice:inv-6", "invoice:inv-7"])
    assert [r.item_id for r in found] == ["itm_case"]
    assert it.tracked_items(engine, subject_keys=[]) == []
