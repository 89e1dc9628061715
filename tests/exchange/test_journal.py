"""The exchange journal on real PostgreSQL and SQLite: writing, append-only, journeys, the command.

Each test writes under its own partner key, so tests sharing the session's PostgreSQL database
(whose journal nobody can empty, by design) never read each other's lines.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Column, MetaData, Table, create_engine, inspect, select, text
from sqlalchemy.exc import DBAPIError

from include.exchange import journal, journal_chain
from include.exchange.journal import JournalEvent, file_journey, item_journey, partner_journal, record
from include.schema import ensure_schema
from tests.support.postgres import create_database, drop_database

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=timezone.utc)
DD = "document_delivery"


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'exchange.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    engine = create_engine(url)
    ensure_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def partner():
    return f"j{uuid.uuid4().hex[:10]}"


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def events_of(rows) -> list[str]:
    return [row.event for row in rows]


def test_record_appends_in_order_in_chunks_and_counts(engine, partner):
    many = [JournalEvent("received", DD, partner, file_name=f"f{i}.csv", data={"seq": i}, at=T0) for i in range(1203)]
    assert record(engine, many) == 1203  # three INSERT statements of <= 500 rows
    assert record(engine, []) == 0
    rows = partner_journal(engine, partner)
    assert [row.data["seq"] for row in rows] == list(range(1203))  # same time: the id keeps the order
    assert [row.id for row in rows] == sorted(row.id for row in rows)
    assert rows[0].at == T0 and rows[0].file_name == "f0.csv" and rows[0].use_case == DD


def test_unknown_events_and_bad_input_are_refused_and_nothing_is_written(engine, partner):
    with pytest.raises(ValueError, match="unknown journal event 'recieved'"):
        JournalEvent("recieved", DD, partner)
    with pytest.raises(ValueError, match="timezone-aware"):
        JournalEvent("received", DD, partner, at=datetime(2026, 11, 24, 8, 0))
    with pytest.raises(ValueError, match="needs a use_case and a partner_key"):
        JournalEvent("received", DD, "")
    good = JournalEvent("received", DD, partner, file_name="ok.csv")
    bad = JournalEvent("checked", DD, partner, data={"report": object()})
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        record(engine, [good, bad])
    assert partner_journal(engine, partner) == []


def test_a_line_written_on_the_callers_connection_shares_its_transaction(engine, partner):
    with pytest.raises(RuntimeError):
        with engine.begin() as conn:
            record(conn, [JournalEvent("archived", DD, partner, file_name="a.csv")])
            raise RuntimeError("the state change failed")
    assert partner_journal(engine, partner) == []
    with engine.begin() as conn:
        assert record(conn, [JournalEvent("archived", DD, partner, file_name="a.csv")]) == 1
    assert events_of(partner_journal(engine, partner)) == ["archived"]


def test_the_journal_refuses_update_and_delete(engine, partner):
    record(engine, [JournalEvent("received", DD, partner, file_name="keep.csv", at=T0)])
    statements = [
        f"UPDATE exchange_journal SET event = 'archived' WHERE partner_key = '{partner}'",
        f"DELETE FROM exchange_journal WHERE partner_key = '{partner}'",
        "DELETE FROM exchange_journal",
    ]
    if engine.dialect.name == "postgresql":
        statements.append("TRUNCATE exchange_journal")
    for statement in statements:
        with pytest.raises(DBAPIError, match="exchange_journal is append-only"):
            with engine.begin() as conn:
                conn.execute(text(statement))
    rows = partner_journal(engine, partner)
    assert [(row.event, row.file_name) for row in rows] == [("received", "keep.csv")]
    assert not hasattr(journal, "update") and not hasattr(journal, "delete")


def content_sha(partner: str, which: str) -> str:
    """A sha256 no other test writes (the PostgreSQL journal is shared by the session)."""
    return hashlib.sha256(f"{partner}/{which}".encode()).hexdigest()


def write_bad_then_corrected(engine, partner) -> dict[str, str]:
    """A file quarantined with a case, its corrected revision archived with a notification that
    resolves the case, and a same-named file of another partner."""
    bad, good = f"{partner}_invoice_7.csv", f"{partner}_invoice_7_v2.csv"
    bad_sha, good_sha = content_sha(partner, "bad"), content_sha(partner, "good")
    case, note = f"CASE-{partner}", f"NOTE-{partner}"
    other = f"{partner}x"
    record(engine, [
        JournalEvent("received", DD, partner, file_name=bad, sha256=bad_sha, remote_path=f"/in/{bad}", at=at(0)),
        JournalEvent("checked", DD, partner, file_name=bad, sha256=bad_sha, detail="2 failed expectations",
                     data={"passed": False}, at=at(1)),
        JournalEvent("quarantined", DD, partner, file_name=bad, sha256=bad_sha, at=at(2)),
        JournalEvent("item_posted", DD, partner, file_name=bad, sha256=bad_sha, item_id=case,
                     data={"kind": "validation_failure"}, at=at(3)),
        JournalEvent("received", DD, other, file_name=bad, sha256=content_sha(other, "bad"), at=at(4)),
        JournalEvent("received", DD, partner, file_name=good, sha256=good_sha, at=at(10)),
        JournalEvent("checked", DD, partner, file_name=good, sha256=good_sha, data={"passed": True}, at=at(11)),
        JournalEvent("archived", DD, partner, file_name=good, sha256=good_sha, at=at(12)),
        JournalEvent("item_posted", DD, partner, file_name=good, sha256=good_sha, item_id=note,
                     data={"kind": "notification"}, at=at(13)),
        JournalEvent("resolved", DD, partner, file_name=good, sha256=good_sha, item_id=case,
                     detail="corrected file received", at=at(14)),
    ])
    # Written later but happened earlier (a partner's answer synced back): ordered by time.
    record(engine, [JournalEvent("acknowledged", DD, partner, item_id=note, actor="anna@acme.example", at=at(13.5))])
    return {"bad": bad, "good": good, "bad_sha": bad_sha, "good_sha": good_sha, "case": case, "note": note, "other": other}


def test_file_journey_by_name_includes_its_case_resolved_by_the_corrected_file(engine, partner):
    s = write_bad_then_corrected(engine, partner)
    rows = file_journey(engine, file_name=s["bad"], partner_key=partner)
    assert [(r.event, r.file_name, r.item_id) for r in rows] == [
        ("received", s["bad"], None),
        ("checked", s["bad"], None),
        ("quarantined", s["bad"], None),
        ("item_posted", s["bad"], s["case"]),
        ("resolved", s["good"], s["case"]),
    ]
    assert rows[0].remote_path == f"/in/{s['bad']}" and rows[1].data == {"passed": False}
    # Exact name: the corrected revision's own lines are not the bad file's; another partner's file
    # of the same name is, when no partner is given.
    everyone = file_journey(engine, file_name=s["bad"])
    assert {r.partner_key for r in everyone} == {partner, s["other"]} and len(everyone) == 6


def test_file_journey_by_sha256_includes_the_items_later_events(engine, partner):
    s = write_bad_then_corrected(engine, partner)
    rows = file_journey(engine, sha256=s["good_sha"].upper())
    assert [(r.event, r.item_id) for r in rows] == [
        ("item_posted", s["case"]),  # the case its resolution names, posted for the bad file
        ("received", None),
        ("checked", None),
        ("archived", None),
        ("item_posted", s["note"]),
        ("acknowledged", s["note"]),
        ("resolved", s["case"]),
    ]
    assert rows[5].actor == "anna@acme.example"
    with pytest.raises(ValueError, match="exactly one"):
        file_journey(engine, file_name="x", sha256="y")


def test_item_journey_and_partner_journal_over_a_period(engine, partner):
    s = write_bad_then_corrected(engine, partner)
    assert [(r.event, r.file_name) for r in item_journey(engine, s["case"])] == [
        ("item_posted", s["bad"]), ("resolved", s["good"])]
    record(engine, [JournalEvent("loaded", "catalog_sync", partner, at=at(12))])
    period = partner_journal(engine, partner, since=at(10), until=at(13))
    assert events_of(period) == ["received", "checked", "archived", "loaded"]  # until is exclusive
    assert events_of(partner_journal(engine, partner, since=at(10), until=at(13), use_case=DD)) == [
        "received", "checked", "archived"]
    assert len(partner_journal(engine, partner)) == 11


def test_undecodable_names_come_back_byte_exact_and_print(engine, partner):
    name = "rapport_\udce9t\udce9.csv"  # Latin-1 bytes in a name, as os.listdir hands them over
    record(engine, [JournalEvent("received", DD, partner, file_name=name, remote_path=f"/in/{name}", at=T0)])
    (row,) = file_journey(engine, file_name=name)
    assert row.file_name == name and row.remote_path == f"/in/{name}"
    printed = journal.format_text([row], "t")
    printed.encode("utf-8")  # a terminal can print it
    assert "rapport_\\udce9t\\udce9.csv" in printed
    assert json.loads(json.dumps(row.to_dict()))["file_name"] == name


def test_the_command_prints_text_and_json(engine, partner, capsys):
    s = write_bad_then_corrected(engine, partner)
    url = engine.url.render_as_string(hide_password=False)
    assert journal.main(["--file", s["bad"], "--db", url]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Journey of file {s['bad']}: 6 event(s)")
    assert "2026-11-24 08:02:00Z  document_delivery  quarantined" in out
    assert f"item {s['case']}" in out and "corrected file received" in out

    assert journal.main(["--item", s["note"], "--json", "--db", url]) == 0
    parsed = json.loads(capsys.readouterr().out)
    assert parsed["count"] == 2 and [e["event"] for e in parsed["events"]] == ["item_posted", "acknowledged"]
    assert parsed["events"][1]["at"] == "2026-11-24T08:13:30+00:00"

    assert journal.main(["--partner", partner, "--since", "2026-11-24T08:10", "--until", "2026-11-24T08:12",
                         "--use-case", DD, "--json", "--db", url]) == 0
    assert [e["event"] for e in json.loads(capsys.readouterr().out)["events"]] == ["received", "checked"]


# ---- the command's defaults, as a user runs it: a subprocess with no environment, cwd elsewhere ----


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory):
    """The repository's layout (include/ and var/) in a temp dir: its var/exchange.db is the demo's."""
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(REPO / "include", root / "include", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "var").mkdir()
    return root


def run_command(repo_root: Path, tmp_path: Path, *args: str, module="include.exchange.journal", **env):
    home = tmp_path / "home"
    elsewhere = tmp_path / "elsewhere"
    home.mkdir(exist_ok=True)
    elsewhere.mkdir(exist_ok=True)
    bare_env = {"PATH": os.environ["PATH"], "HOME": str(home), "PYTHONPATH": str(repo_root), **env}
    return subprocess.run([sys.executable, "-m", module, *args], env=bare_env, cwd=elsewhere,
                          capture_output=True, text=True, timeout=300)


def sqlite_journal(path: Path, partner: str) -> str:
    url = f"sqlite:///{path}"
    engine = create_engine(url)
    ensure_schema(engine)
    write_bad_then_corrected(engine, partner)
    engine.dispose()
    return url


def test_command_falls_back_to_the_demo_database_then_fails_clearly(repo_copy, tmp_path, partner):
    demo_db = repo_copy / "var" / "exchange.db"
    sqlite_journal(demo_db, partner)
    try:
        found = run_command(repo_copy, tmp_path, "--item", f"CASE-{partner}")
        assert found.returncode == 0, found.stderr
        assert f"Journey of TG item CASE-{partner}: 2 event(s)" in found.stdout
        assert f"using the demo database {demo_db}" in found.stderr
    finally:
        demo_db.unlink()
    nothing = run_command(repo_copy, tmp_path, "--item", f"CASE-{partner}")
    assert nothing.returncode == 2 and nothing.stdout == ""
    for way in ("--db", "EXCHANGE_DB_URL", "exchange_db"):
        assert way in nothing.stderr
    assert "Traceback" not in nothing.stderr and "isn't defined" not in nothing.stderr
    assert not demo_db.exists()


def test_command_reads_the_env_and_the_airflow_connection(repo_copy, tmp_path, partner):
    url = sqlite_journal(tmp_path / "project.db", partner)
    by_env = run_command(repo_copy, tmp_path, "--file", f"{partner}_invoice_7.csv", EXCHANGE_DB_URL=url)
    assert by_env.returncode == 0, by_env.stderr
    assert "6 event(s)" in by_env.stdout
    connection = json.dumps({"conn_type": "sqlite", "extra": {"sqlalchemy_url": url}})
    by_conn = run_command(repo_copy, tmp_path, "--sha256", content_sha(partner, "good"), "--json", AIRFLOW_CONN_EXCHANGE_DB=connection)
    assert by_conn.returncode == 0, by_conn.stderr
    assert json.loads(by_conn.stdout)["count"] == 7


def test_command_creates_nothing_where_there_is_no_journal(repo_copy, tmp_path):
    empty = tmp_path / "other.db"
    sqlite3.connect(empty).close()
    no_table = run_command(repo_copy, tmp_path, "--partner", "acme", "--db", f"sqlite:///{empty}")
    assert no_table.returncode == 1 and "has no journal" in no_table.stderr and "nothing was created" in no_table.stderr
    with sqlite3.connect(empty) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)
    missing = tmp_path / "missing.db"
    no_file = run_command(repo_copy, tmp_path, "--partner", "acme", "--db", f"sqlite:///{missing}")
    assert no_file.returncode == 1 and "no database file" in no_file.stderr and not missing.exists()


def test_catalog_history_command_uses_the_same_defaults(repo_copy, tmp_path):
    """The catalog's alias finds the demo database too; before, it failed on the undefined connection."""
    demo_db = repo_copy / "var" / "exchange.db"
    engine = create_engine(f"sqlite:///{demo_db}")
    ensure_schema(engine)
    engine.dispose()
    try:
        out = run_command(repo_copy, tmp_path, "--partner", "nobody", module="include.catalog.history")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "No catalog versions for partner nobody."
    finally:
        demo_db.unlink()
    nothing = run_command(repo_copy, tmp_path, "--partner", "nobody", module="include.catalog.history")
    assert nothing.returncode == 2 and "EXCHANGE_DB_URL" in nothing.stderr and "Traceback" not in nothing.stderr


# ---- the hash chain: tamper evidence, concurrent appends, the upgrade of older databases ----------

CONTENT = ("at", "use_case", "partner_key", "event", "file_name", "sha256", "remote_path", "item_id",
           "subject_key", "run_id", "actor", "detail", "ledger_entry_id", "data")


def chain_of(engine, partner) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(select(journal.journal_table).where(journal.journal_table.c.partner_key == partner)
                            .order_by(journal.journal_table.c.id)).mappings()
        return [dict(row) for row in rows]


def expected_hash(prev: str | None, row: dict) -> str:
    """The documented formula, written out again: sha256(prev_hash + sorted-key ASCII JSON of the content)."""
    content = {name: row[name] for name in CONTENT}
    at = content["at"] if content["at"].tzinfo else content["at"].replace(tzinfo=timezone.utc)
    content["at"] = at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
    payload = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(((prev or "") + payload).encode("ascii")).hexdigest()


def as_attacker(engine, *statements: tuple[str, dict]) -> None:
    """Change the journal with its append-only triggers out of the way, as someone with DB access can.

    PostgreSQL: disabled and re-enabled in the same transaction (DDL is transactional there), so the
    session's shared database never runs without them; SQLite (a file per test): dropped.
    """
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE exchange_journal DISABLE TRIGGER USER"))
        else:
            conn.execute(text("DROP TRIGGER IF EXISTS exchange_journal_no_update"))
            conn.execute(text("DROP TRIGGER IF EXISTS exchange_journal_no_delete"))
        for statement, params in statements:
            conn.execute(text(statement), params)
        if engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE exchange_journal ENABLE TRIGGER USER"))


def verify_command(engine, *args: str) -> int:
    return journal.main(["verify", *args, "--db", engine.url.render_as_string(hide_password=False)])


def test_each_line_carries_the_hash_of_its_partners_previous_line(engine, partner):
    s = write_bad_then_corrected(engine, partner)
    for owner, count in ((partner, 10), (s["other"], 1)):
        rows = chain_of(engine, owner)
        assert len(rows) == count and rows[0]["prev_hash"] is None
        for before, row in zip([None, *rows], rows):
            assert row["prev_hash"] == (before and before["entry_hash"])
            assert row["entry_hash"] == expected_hash(row["prev_hash"], row)
    report = journal_chain.verify(engine, journal.journal_table, partner)
    assert (report.ok, report.entries, report.chains, report.unhashed) == (True, 10, 1, 0)
    assert report.heads == {partner: chain_of(engine, partner)[-1]["entry_hash"]}


def test_an_untouched_journal_verifies(engine, partner, capsys):
    write_bad_then_corrected(engine, partner)
    assert verify_command(engine, "--partner", partner) == 0
    assert capsys.readouterr().out == "ok, 10 entries in 1 chains\n"
    if engine.dialect.name == "sqlite":  # the whole database: only this test's lines are in it
        assert verify_command(engine) == 0
        assert capsys.readouterr().out == "ok, 11 entries in 2 chains\n"


def bad_entry(engine, partner) -> journal_chain.ChainBreak:
    report = journal_chain.verify(engine, journal.journal_table, partner)
    assert not report.ok and len(report.breaks) == 1
    return report.breaks[0]


def test_verify_names_an_edited_line(engine, partner, capsys):
    write_bad_then_corrected(engine, partner)
    ids = [row["id"] for row in chain_of(engine, partner)]
    as_attacker(engine, ("UPDATE exchange_journal SET detail = 'all good' WHERE id = :id", {"id": ids[3]}))
    assert bad_entry(engine, partner) == journal_chain.ChainBreak(
        partner, ids[3], "edited: its content does not match its entry_hash")
    assert verify_command(engine, "--partner", partner) == 1
    out = capsys.readouterr().out
    assert f"partner {partner}: entry {ids[3]}: edited" in out and "BROKEN: 1 of 1 chains" in out


def test_verify_names_the_line_after_a_removed_one(engine, partner):
    s = write_bad_then_corrected(engine, partner)
    ids = [row["id"] for row in chain_of(engine, partner)]
    as_attacker(engine, ("DELETE FROM exchange_journal WHERE id = :id", {"id": ids[4]}))
    broken = bad_entry(engine, partner)
    assert broken.entry_id == ids[5] and broken.reason.startswith("the entry before it was removed")
    assert f"entry {ids[3]}" in broken.reason  # the last intact one
    assert journal_chain.verify(engine, journal.journal_table, s["other"]).ok  # other chains unaffected


def test_verify_names_the_first_line_when_the_first_is_removed(engine, partner):
    write_bad_then_corrected(engine, partner)
    ids = [row["id"] for row in chain_of(engine, partner)]
    as_attacker(engine, ("DELETE FROM exchange_journal WHERE id = :id", {"id": ids[0]}))
    assert bad_entry(engine, partner).entry_id == ids[1]


def swap(ids: tuple[int, int], columns) -> list[tuple[str, dict]]:
    """Statements that exchange ``columns`` of two rows (through a scratch copy, on both backends)."""
    first, second = ids
    assignments = ", ".join(f"{name} = (SELECT {name} FROM journal_swap WHERE id = :other)" for name in columns)
    return [
        ("CREATE TEMPORARY TABLE journal_swap AS SELECT * FROM exchange_journal WHERE id IN (:a, :b)",
         {"a": first, "b": second}),
        (f"UPDATE exchange_journal SET {assignments} WHERE id = :id", {"id": first, "other": second}),
        (f"UPDATE exchange_journal SET {assignments} WHERE id = :id", {"id": second, "other": first}),
        ("DROP TABLE journal_swap", {}),
    ]


def test_verify_names_the_first_of_two_lines_whose_content_was_swapped(engine, partner):
    write_bad_then_corrected(engine, partner)
    ids = [row["id"] for row in chain_of(engine, partner)]
    as_attacker(engine, *swap((ids[2], ids[6]), [c for c in CONTENT if c != "partner_key"]))
    assert bad_entry(engine, partner) == journal_chain.ChainBreak(
        partner, ids[2], "edited: its content does not match its entry_hash")


def test_verify_names_the_first_of_two_reordered_lines(engine, partner):
    """Whole lines swapped, their hashes with them: each line is intact, the order is not."""
    write_bad_then_corrected(engine, partner)
    ids = [row["id"] for row in chain_of(engine, partner)]
    as_attacker(engine, *swap((ids[2], ids[3]), [*CONTENT, "prev_hash", "entry_hash"]))
    broken = bad_entry(engine, partner)
    assert broken.entry_id == ids[2]
    assert broken.reason == f"out of order: it links to entry {ids[3]}, which comes after it (entries were reordered)"


def test_verify_names_a_line_inserted_around_record(engine, partner):
    write_bad_then_corrected(engine, partner)
    rows = chain_of(engine, partner)
    forged = {**rows[-1], "detail": "forged", "prev_hash": rows[-1]["prev_hash"]}
    forged.pop("id")
    forged["entry_hash"] = expected_hash(forged["prev_hash"], forged)  # a correct hash, the wrong place
    with engine.begin() as conn:
        conn.execute(journal.journal_table.insert(), forged)
    broken = bad_entry(engine, partner)
    assert broken.entry_id > rows[-1]["id"]
    assert broken.reason.startswith(f"links to entry {rows[-2]['id']}, not to entry {rows[-1]['id']}")


def test_concurrent_appends_of_one_partner_form_one_chain(engine, partner):
    """4 threads, 25 transactions of 10 lines each, the same partner: 1,000 lines, one unbroken chain."""
    if engine.dialect.name == "sqlite":
        engine = create_engine(engine.url, connect_args={"timeout": 60})  # writers queue for the file's lock

    def append(thread: int) -> None:
        for batch in range(25):
            record(engine, [JournalEvent("received", DD, partner, file_name=f"t{thread}_b{batch}_{i}.csv")
                            for i in range(10)])

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(append, range(4)))
    rows = chain_of(engine, partner)
    assert len(rows) == 1000 and len({row["prev_hash"] for row in rows}) == 1000  # no two lines share a parent
    report = journal_chain.verify(engine, journal.journal_table, partner)
    assert (report.ok, report.entries, report.chains) == (True, 1000, 1)


def test_a_second_writer_waits_for_the_firsts_commit_and_links_to_its_line(pg_url, partner):
    """PostgreSQL: the advisory lock per partner, shown without timing: B waits on A's lock, then links to A."""
    engine = create_engine(pg_url)
    ensure_schema(engine)
    with engine.connect() as watcher, ThreadPoolExecutor(max_workers=1) as pool:
        conn_a = engine.connect()
        transaction = conn_a.begin()
        record(conn_a, [JournalEvent("received", DD, partner, file_name="a.csv")])
        b = pool.submit(record, engine, [JournalEvent("received", DD, partner, file_name="b.csv")])
        waiting = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                       "AND classid::bigint = :cls")
        while not b.done() and not watcher.execute(waiting, {"cls": journal_chain.CHAIN_LOCK_CLASS}).scalar():
            watcher.rollback()  # a fresh snapshot of pg_locks each time
        assert not b.done()  # B could not write before A committed
        transaction.commit()
        conn_a.close()
        assert b.result(timeout=60) == 1
    a_row, b_row = chain_of(engine, partner)
    assert (a_row["file_name"], b_row["file_name"]) == ("a.csv", "b.csv")
    assert b_row["prev_hash"] == a_row["entry_hash"]
    engine.dispose()


def test_locks_of_different_partners_do_not_collide_for_the_demo_partners():
    keys = [journal_chain.chain_lock_key(p) for p in ("acme", "globex", "initech")]
    assert len(set(keys)) == 3 and all(-2**31 <= key < 2**31 for key in keys)


# ---- upgrade: a journal created before the chain ---------------------------------------------------


def old_journal(url: str, partner: str, lines: int):
    """A database whose exchange_journal was created before the hash columns, with ``lines`` lines."""
    old = MetaData()
    columns = [Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
               for c in journal.journal_table.columns if c.name not in ("prev_hash", "entry_hash")]
    table = Table("exchange_journal", old, *columns)
    engine = create_engine(url)
    old.create_all(engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), [{"at": at(i), "use_case": DD, "partner_key": partner, "event": "received",
                                       "file_name": f"old{i}.csv"} for i in range(lines)])
    return engine


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    url = create_database("journalup")
    yield url
    drop_database(url)


def test_ensure_schema_upgrades_an_older_journal_and_the_chain_begins_after_its_lines(empty_db_url, partner, capsys):
    engine = old_journal(empty_db_url, partner, lines=3)
    assert journal.main(["verify", "--db", empty_db_url]) == 1
    assert "predates its hash chain" in capsys.readouterr().err

    ensure_schema(engine)  # what a task run or the demo does: adds the columns and the chain index
    ensure_schema(engine)  # and again: nothing more to add
    with engine.connect() as conn:
        assert journal_chain.missing_hash_columns(conn, journal.journal_table) == []
        indexes = {index["name"] for index in inspect(conn).get_indexes("exchange_journal")}
    assert "ix_exchange_journal_partner_key_id" in indexes
    record(engine, [JournalEvent("archived", DD, partner, file_name="new.csv", at=at(10))])
    assert journal.main(["verify", "--db", empty_db_url]) == 0
    assert capsys.readouterr().out == "ok, 1 entries in 1 chains (3 older entries without a hash not covered)\n"
    assert [r.file_name for r in partner_journal(engine, partner)] == ["old0.csv", "old1.csv", "old2.csv", "new.csv"]

    # A line without a hash after the chain began (an old worker, a hand-made INSERT) breaks it.
    with engine.begin() as conn:
        conn.execute(journal.journal_table.insert(), {"at": at(11), "use_case": DD, "partner_key": partner,
                                                      "event": "archived", "file_name": "sneaked.csv"})
    broken = bad_entry(engine, partner)
    assert broken.reason.startswith("has no entry_hash but follows hashed entry")
    engine.dispose()
