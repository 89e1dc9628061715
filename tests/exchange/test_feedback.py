"""The feedback sync against the real TG sandbox (over HTTP) and PostgreSQL: only what changed since the
last run is read, each use case gets its own partner feedback, our own actions are not feedback, and a
sync interrupted between pages loses nothing and reports nothing twice."""
from __future__ import annotations

import json
import os

import pytest
from sqlalchemy import create_engine, event, select

from include.exchange import feedback as fb
from include.exchange import items as it
from include.exchange.journal import item_journey, journal_table
from include.schema import ensure_schema
from tests.support.postgres import create_database, drop_database
from tests.trading_grid.conftest import FAST_RETRIES, conn_env_name, make_payload
from trading_grid.hooks.trading_grid import RetryPolicy, TradingGridHook

DD, CATALOG = "document_delivery", "catalog_sync"


@pytest.fixture
def engine():
    url = create_database("feedback")
    engine = create_engine(url)
    ensure_schema(engine)
    yield engine
    engine.dispose()
    drop_database(url)


@pytest.fixture
def tg(tg_sandbox, monkeypatch):
    tg_sandbox.clear_faults()
    monkeypatch.setenv(conn_env_name("trading_grid_default"), tg_sandbox.airflow_conn_json())
    for partner in ("P-ACME", "P-GLOBEX"):
        monkeypatch.setenv(conn_env_name(_partner_conn(partner)), tg_sandbox.airflow_conn_json(client=partner))
    yield tg_sandbox
    tg_sandbox.clear_faults()


def _partner_conn(partner_id: str) -> str:
    return f"tg_feedback_{partner_id.replace('-', '_').lower()}"


@pytest.fixture
def hook(tg):
    with TradingGridHook(retry_policy=FAST_RETRIES) as h:
        yield h


@pytest.fixture
def acme(tg):
    with TradingGridHook(_partner_conn("P-ACME"), retry_policy=FAST_RETRIES) as h:
        yield h


@pytest.fixture
def globex(tg):
    with TradingGridHook(_partner_conn("P-GLOBEX"), retry_policy=FAST_RETRIES) as h:
        yield h


def _post(hook, engine, use_case: str, count: int, *, track: bool = True, tag: str = "") -> list[dict]:
    """``count`` items of one use case (document_delivery: P-ACME, catalog_sync: P-GLOBEX), tracked or not."""
    partner_id, partner_key = ("P-ACME", "acme") if use_case == DD else ("P-GLOBEX", "globex")
    payloads = [make_payload(partner_id, subject=f"{tag}{use_case}-{os.urandom(6).hex()}", category=use_case)
                for _ in range(count)]
    created = [item for item, _ in hook.create_items(payloads, max_concurrency=16)]
    if track:
        it.remember_items(engine, [(item, it.ItemRecord(use_case, partner_key, use_case, f"subject:{item['external_ref']}",
                                                        file_name=f"{n}.csv", run_id="r1"))
                                   for n, item in enumerate(created)])
    return created


def _changes(batch: fb.FeedbackBatch) -> list[tuple[str, str, str]]:
    return [(c.item_id, c.change, c.status) for c in batch.changes]


def test_partner_feedback_per_use_case_and_our_own_actions_are_not_feedback(engine, hook, acme, globex, tmp_path):
    delivery, catalog = _post(hook, engine, DD, 1)[0], _post(hook, engine, CATALOG, 1)[0]
    untracked = _post(hook, engine, DD, 1, track=False)[0]
    first = fb.sync_feedback(engine, hook)
    assert first.events_read >= 3 and first.changes == ()  # only our own creates so far
    assert fb.read_cursor(engine) == first.cursor is not None

    acme.acknowledge(delivery["id"], note="got it")
    acme.add_comment(delivery["id"], "Line 3 looks wrong", visibility="partner")
    hook.add_comment(delivery["id"], "Looking into it", visibility="partner")  # ours
    hook.add_comment(delivery["id"], "internal note", visibility="internal")  # ours, internal
    report = tmp_path / "issues.csv"
    report.write_bytes(b"line,issue\n3,price\n")
    acme.attach_file(delivery["id"], str(report))
    acme.transition(delivery["id"], "disputed")
    globex.transition(catalog["id"], "disputed", comment="Prices for GTIN 123 are off")
    acme.acknowledge(untracked["id"])
    acme.add_comment(untracked["id"], "not tracked by us", visibility="partner")

    batch = fb.sync_feedback(engine, hook)
    d, c = delivery["id"], catalog["id"]
    assert _changes(batch) == [(d, "acknowledged", "acknowledged"), (d, "comment", "acknowledged"),
                               (d, "attachment", "acknowledged"), (d, "status", "disputed"),
                               (c, "comment", "open"), (c, "status", "disputed")]
    assert batch.events_read == 10 and batch.requests == 1
    assert [ch.item_id for ch in batch.for_use_case(CATALOG)] == [c, c]
    ack, comment, attachment, dispute = batch.for_use_case(DD)
    assert (ack.actor, ack.previous_status, ack.data) == ("acme-portal", "open", {"note": "got it"})
    assert comment.data["body"] == "Line 3 looks wrong" and comment.data["visibility"] == "partner"
    assert attachment.data["filename"] == "issues.csv" and attachment.data["size"] == report.stat().st_size
    assert (dispute.previous_status, dispute.kind, dispute.subject_key) == ("acknowledged", DD, f"subject:{delivery['external_ref']}")
    assert batch.for_use_case(CATALOG)[0].data["body"] == "Prices for GTIN 123 are off"
    assert fb.FeedbackBatch.from_dict(json.loads(json.dumps(batch.to_dict()))) == batch

    rows = {r.item_id: r for r in it.tracked_items(engine)}
    assert (rows[d].status, rows[d].acknowledged, rows[c].status, rows[c].acknowledged) == ("disputed", True, "disputed", False)
    assert rows[d].last_change_seen == hook.get_item(d)["updated_at"] == rows[d].tg_updated_at
    assert untracked["id"] not in rows
    assert [j.event for j in item_journey(engine, d)] == ["acknowledged", "commented", "attachment_added", "disputed"]
    assert item_journey(engine, untracked["id"]) == []

    hook.transition(c, "resolved", comment="Corrected list loaded")  # our own move: applied, not reported
    after_ours = fb.sync_feedback(engine, hook)
    assert after_ours.changes == () and after_ours.events_read == 2
    assert it.tracked_items(engine, item_ids=[c])[0].status == "resolved"

    quiet = fb.sync_feedback(engine, hook)
    assert (quiet.events_read, quiet.requests, quiet.changes, quiet.cursor) == (0, 1, (), after_ours.cursor)



class _FaultsAfterFirstPage(TradingGridHook):
    """TG starts answering 503 once the first page has been handed over (and committed by the sync)."""

    def __init__(self, sandbox, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sandbox = sandbox

    def iter_event_pages(self, cursor=None, *, limit=None):
        for number, page in enumerate(super().iter_event_pages(cursor, limit=limit)):
            yield page
            if number == 0:
                self._sandbox.set_faults(error_rate=1.0)


def _six_acknowledgements(hook, engine, acme) -> list[str]:
    """Six tracked items acknowledged by the partner after a first sync: two pages of three events."""
    posted = _post(hook, engine, DD, 6)
    fb.sync_feedback(engine, hook)
    for item in posted:
        acme.acknowledge(item["id"])
    return [item["id"] for item in posted]


def _journal_item_ids(engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(journal_table.c.item_id).order_by(journal_table.c.id)).scalars())


def test_a_sync_interrupted_after_page_one_resumes_with_page_two_only(engine, hook, acme, tg):
    ids = _six_acknowledgements(hook, engine, acme)
    gives_up = RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_max=0.02, max_retry_time=5.0)
    with _FaultsAfterFirstPage(tg, retry_policy=gives_up) as failing:
        with pytest.raises(fb.FeedbackSyncInterrupted) as stopped:
            fb.sync_feedback(engine, failing, page_size=3)
    kept = stopped.value.batch
    assert [c.item_id for c in kept.changes] == ids[:3] and fb.read_cursor(engine) == kept.cursor
    assert {r.item_id for r in it.tracked_items(engine, statuses=["acknowledged"])} == set(ids[:3])

    tg.clear_faults()
    resumed = fb.sync_feedback(engine, hook, page_size=3)
    assert [c.item_id for c in resumed.changes] == ids[3:] and resumed.events_read == 3
    assert _journal_item_ids(engine) == ids  # each acknowledgement journaled once
    assert {r.item_id for r in it.tracked_items(engine, statuses=["acknowledged"])} == set(ids)


def test_a_crash_while_committing_page_two_rolls_that_page_back_and_it_is_read_again(engine, hook, acme):
    ids = _six_acknowledgements(hook, engine, acme)
    cursor_moves = []

    def crash_on_second_cursor_move(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("UPDATE EXCHANGE_SYNC_STATE"):
            cursor_moves.append(statement)
            if len(cursor_moves) == 2:
                raise ConnectionError("worker killed")

    event.listen(engine, "before_cursor_execute", crash_on_second_cursor_move)
    try:
        with pytest.raises(fb.FeedbackSyncInterrupted) as stopped:
            fb.sync_feedback(engine, hook, page_size=3)
    finally:
        event.remove(engine, "before_cursor_execute", crash_on_second_cursor_move)
    assert [c.item_id for c in stopped.value.batch.changes] == ids[:3]
    # page two's status updates and journal lines went with its cursor move
    assert {r.item_id for r in it.tracked_items(engine, statuses=["acknowledged"])} == set(ids[:3])
    assert _journal_item_ids(engine) == ids[:3]

    resumed = fb.sync_feedback(engine, hook, page_size=3)
    assert [c.item_id for c in resumed.changes] == ids[3:]
    assert _journal_item_ids(engine) == ids


def test_a_second_sync_that_lost_the_cursor_race_reports_nothing(engine, hook, acme):
    ids = _six_acknowledgements(hook, engine, acme)
    start = fb.read_cursor(engine)

    class OvertakenAfterFirstPage(TradingGridHook):
        """While this sync applies its first page, another sync (on its own hook) reads everything."""

        def iter_event_pages(self, cursor=None, *, limit=None):
            for page in super().iter_event_pages(cursor, limit=limit):
                if not other:
                    other.append(fb.sync_feedback(engine, hook, page_size=3))
                yield page

    other: list[fb.FeedbackBatch] = []
    with OvertakenAfterFirstPage(retry_policy=FAST_RETRIES) as late:
        lost = fb.sync_feedback(engine, late, page_size=3)
    assert lost.changes == () and lost.cursor == start
    assert [c.item_id for c in other[0].changes] == ids
    assert _journal_item_ids(engine) == ids


@pytest.mark.slow
def test_after_10000_tracked_items_50_partner_changes_cost_one_request(engine, hook, acme, globex):
    deliveries = _post(hook, engine, DD, 5000)
    catalogs = _post(hook, engine, CATALOG, 5000)
    untracked = _post(hook, engine, DD, 1, track=False)[0]
    assert len(it.tracked_items(engine)) == 10_000
    first = fb.sync_feedback(engine, hook)
    assert first.events_read >= 10_001 and first.requests >= 21

    for item in deliveries[::250]:  # 20 acknowledgements
        acme.acknowledge(item["id"])
    for item in catalogs[::250]:  # 20 disputes
        globex.transition(item["id"], "disputed")
    for n in range(10):  # 10 comments on an item we do not track
        acme.add_comment(untracked["id"], f"question {n}", visibility="partner")

    before = hook.stats["requests"]
    batch = fb.sync_feedback(engine, hook)
    assert hook.stats["requests"] - before == batch.requests == 1  # 50 events: one page of 500
    assert batch.events_read == 50
    assert [c.item_id for c in batch.for_use_case(DD)] == [i["id"] for i in deliveries[::250]]
    assert {c.change for c in batch.for_use_case(DD)} == {"acknowledged"}
    assert [c.item_id for c in batch.for_use_case(CATALOG)] == [i["id"] for i in catalogs[::250]]
    assert {(c.change, c.status) for c in batch.for_use_case(CATALOG)} == {("status", "disputed")}
    assert len(batch.changes) == 40
    assert len(it.tracked_items(engine, use_case=CATALOG, statuses=["disputed"])) == 20


def test_read_events_returns_where_to_resume_and_what_it_cost(hook):
    to_now = hook.read_events(limit=500)
    assert to_now.resume_cursor and to_now.requests >= 1
    quiet = hook.read_events(to_now.resume_cursor)
    assert (quiet.events, quiet.resume_cursor, quiet.requests) == ((), to_now.resume_cursor, 1)

    for _ in range(3):
        hook.create_item(make_payload("P-ACME"))
    news = hook.read_events(to_now.resume_cursor, limit=2)
    assert [e["kind"] for e in news.events] == ["item.created"] * 3 and news.requests == 2
    assert hook.read_events(news.resume_cursor).events == ()


def test_each_use_case_syncs_its_own_items_on_its_own_cursor(engine, hook, acme, globex):
    """Two DAGs on their own schedules: neither takes the other's changes, each change is journaled once."""
    delivery, catalog = _post(hook, engine, DD, 1)[0], _post(hook, engine, CATALOG, 1)[0]
    assert fb.sync_feedback(engine, hook, use_case=DD).changes == ()
    acme.transition(delivery["id"], "disputed")
    globex.acknowledge(catalog["id"])

    dd_batch = fb.sync_feedback(engine, hook, use_case=DD)
    assert _changes(dd_batch) == [(delivery["id"], "status", "disputed")]
    assert {r.item_id: r.status for r in it.tracked_items(engine)}[catalog["id"]] == "open"  # not dd's to apply
    # The catalog's first sync reads the feed from the start, and gets exactly its own change.
    cat_batch = fb.sync_feedback(engine, hook, use_case=CATALOG)
    assert _changes(cat_batch) == [(catalog["id"], "acknowledged", "acknowledged")]
    assert fb.read_cursor(engine) is None  # the shared cursor is untouched

    assert fb.sync_feedback(engine, hook, use_case=DD).changes == ()
    assert fb.sync_feedback(engine, hook, use_case=CATALOG).changes == ()
    assert [j.event for j in item_journey(engine, delivery["id"])] == ["disputed"]
    assert [j.event for j in item_journey(engine, catalog["id"])] == ["acknowledged"]
