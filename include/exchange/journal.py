"""The exchange journal: one append-only table of what happened to every file and TG item.

Every use case writes its lines through :func:`record` (ONE write path: it also chains them). A line names what it is about: the
file (``file_name``, ``sha256``, ``remote_path``, ``ledger_entry_id``), the TG item (``item_id``),
or a use case's own subject (``subject_key``, e.g. ``catalog_version:12``). The event names are a
closed vocabulary (:data:`EVENTS`): a typo fails where it is written, not in a report months later.

Nothing changes a line once written: there is no update or delete function, and the table carries
a trigger (PostgreSQL and SQLite) that refuses UPDATE and DELETE (and TRUNCATE on PostgreSQL). And
it is tamper-evident: each line carries the hash of its partner's previous line
(:mod:`include.exchange.journal_chain`: the chain, the upgrade of older databases, verification).

Readers: :func:`file_journey` (a file by exact name or sha256, plus every line of the TG items its
lines name: the case posted for a bad file is resolved later by its corrected file),
:func:`item_journey`, :func:`partner_journal`; :func:`format_text` prints them, and

    python -m include.exchange.journal --file NAME | --sha256 HEX | --item ID | --partner KEY
        [--since ISO] [--until ISO] [--use-case UC] [--json] [--db URL]

prints them for people, and

    python -m include.exchange.journal verify [--partner KEY] [--json] [--db URL]

walks the chains: "ok, N entries in M chains" (exit 0), else each broken chain's first bad line,
its id and why (exit 1). Database: ``--db``, env EXCHANGE_DB_URL, the Airflow connection
``exchange_db``, else the demo's ``var/exchange.db`` (see :mod:`include.exchange.cli`).
"""
from __future__ import annotations

import sys

if __name__ == "__main__":
    # Run as a script, this module is "__main__": alias it so a later import of its real name gets
    # this module instead of declaring the table a second time.
    sys.modules.setdefault("include.exchange.journal", sys.modules[__name__])

import argparse
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import PurePath
from typing import Any

from sqlalchemy import DDL, Column, DateTime, Index, Integer, String, Table, Text, event, insert, or_, select
from sqlalchemy.engine import Connection

from include.db import metadata
from include.exchange import journal_chain
from include.intake.ledger import db_message, db_text, from_db_text

EVENTS = (
    "received", "duplicate", "rejected", "checked", "staged", "archived", "quarantined", "transfer_failed",
    "item_posted", "item_reused", "acknowledged", "disputed", "commented", "attachment_added",
    "status_changed", "resolved", "superseded", "escalated", "loaded", "sent", "picked_up", "not_picked_up",
)

#: Events per INSERT statement: 500 x 15 columns stays far below SQLite's bound-parameter cap.
RECORD_CHUNK = 500

journal_table = Table(
    "exchange_journal",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),  # the order of the journal
    Column("at", DateTime(timezone=True), nullable=False),
    Column("use_case", String(64), nullable=False),
    Column("partner_key", String(64), nullable=False),
    Column("event", String(32), nullable=False),
    Column("file_name", Text),  # as the intake ledger stores names (db_text: undecodable ones survive)
    Column("sha256", String(64)),
    Column("remote_path", Text),
    Column("item_id", String(128)),
    Column("subject_key", String(255)),
    Column("run_id", String(250)),
    Column("actor", Text),
    Column("detail", Text),
    Column("ledger_entry_id", Integer),  # intake_files.id; no foreign key: the journal outlives any row
    Column("data", Text),  # JSON object, keys sorted
    Column("prev_hash", String(64)),  # the partner's previous line's entry_hash; NULL for its first
    Column("entry_hash", String(64)),  # sha256(prev_hash + content): include.exchange.journal_chain
    Index(None, "sha256"),
    Index(None, "file_name"),
    Index(None, "item_id"),
    Index(None, "subject_key"),
    Index(None, "partner_key", "at"),
    Index(None, "partner_key", "id"),  # a chain in order, and its head
)

_REFUSAL = "exchange_journal is append-only"
event.listen(journal_table, "after_create", DDL(
    "CREATE OR REPLACE FUNCTION exchange_journal_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ "
    f"BEGIN RAISE EXCEPTION USING MESSAGE = '{_REFUSAL}: ' || TG_OP || ' refused'; END $$"
).execute_if(dialect="postgresql"))
event.listen(journal_table, "after_create", DDL(
    "CREATE TRIGGER exchange_journal_append_only BEFORE UPDATE OR DELETE ON exchange_journal "
    "FOR EACH ROW EXECUTE FUNCTION exchange_journal_refuse_change()"
).execute_if(dialect="postgresql"))
event.listen(journal_table, "after_create", DDL(
    "CREATE TRIGGER exchange_journal_no_truncate BEFORE TRUNCATE ON exchange_journal "
    "FOR EACH STATEMENT EXECUTE FUNCTION exchange_journal_refuse_change()"
).execute_if(dialect="postgresql"))
for _operation in ("UPDATE", "DELETE"):
    event.listen(journal_table, "after_create", DDL(
        f"CREATE TRIGGER exchange_journal_no_{_operation.lower()} BEFORE {_operation} ON exchange_journal "
        f"BEGIN SELECT RAISE(ABORT, '{_REFUSAL}: {_operation} refused'); END"
    ).execute_if(dialect="sqlite"))


@event.listens_for(metadata, "after_create")
def _upgrade_older_journal(target, connection, **kw) -> None:
    """After every create_all (ensure_schema): a journal made before the chain gets its columns."""
    journal_chain.upgrade_table(connection, journal_table)


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes for timezone-aware columns: they were stored as UTC."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class JournalEvent:
    """One line to write. ``at`` defaults to the time of :func:`record`; ``data`` must be JSON-able."""

    event: str
    use_case: str
    partner_key: str
    file_name: str | None = None
    sha256: str | None = None
    remote_path: str | None = None
    item_id: str | None = None
    subject_key: str | None = None
    run_id: str | None = None
    actor: str | None = None
    detail: str | None = None
    ledger_entry_id: int | None = None
    data: Mapping[str, Any] | None = None
    at: datetime | None = None

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValueError(f"unknown journal event {self.event!r}; known: {', '.join(EVENTS)}")
        if not self.use_case or not self.partner_key:
            raise ValueError(f"journal event {self.event!r} needs a use_case and a partner_key")
        if self.at is not None and self.at.tzinfo is None:
            raise ValueError(f"journal event {self.event!r}: 'at' must be timezone-aware, got {self.at!r}")


def _json_default(value: Any) -> Any:
    """Times, dates, decimals and paths as text; anything else is a mistake, not a string to guess."""
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (Decimal, PurePath)):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _values(item: JournalEvent, now: datetime) -> dict[str, Any]:
    try:
        data = None if item.data is None else json.dumps(dict(item.data), sort_keys=True, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"journal event {item.event!r}: data is not JSON-serialisable ({exc})") from None
    return {
        # UTC: SQLite keeps the wall time and drops the offset, and the hash covers the stored value.
        "at": journal_chain.utc(item.at or now), "use_case": item.use_case, "partner_key": item.partner_key, "event": item.event,
        "file_name": None if item.file_name is None else db_text(item.file_name),
        "sha256": item.sha256,
        "remote_path": None if item.remote_path is None else db_text(item.remote_path),
        "item_id": item.item_id, "subject_key": item.subject_key, "run_id": item.run_id,
        "actor": None if item.actor is None else db_message(item.actor),
        "detail": None if item.detail is None else db_message(item.detail),
        "ledger_entry_id": item.ledger_entry_id, "data": data,
    }


def record(target, events: Iterable[JournalEvent]) -> int:
    """Append ``events`` in order; returns how many were written.

    :param target: an Engine (the lines commit in their own transaction) or a Connection (the
        caller's transaction: a state change and its journal line commit or roll back together).
    """
    now = datetime.now(timezone.utc)
    rows = [_values(item, now) for item in events]  # all validated before anything is written
    if not rows:
        return 0
    if isinstance(target, Connection):
        _insert(target, rows)
    else:
        with target.begin() as conn:
            _insert(conn, rows)
    return len(rows)


def _insert(conn: Connection, rows: list[dict[str, Any]]) -> None:
    journal_chain.chain_rows(conn, journal_table, rows)  # locks the partners' chains until the commit
    # executemany: SQLAlchemy sends multi-row INSERTs of RECORD_CHUNK rows from one cached statement
    # ("insertmanyvalues"); building a literal VALUES list per call compiled 500 rows each time (~0.1 s).
    conn.execution_options(insertmanyvalues_page_size=RECORD_CHUNK).execute(insert(journal_table), rows)


@dataclass(frozen=True)
class JournalRow:
    """A written line, names decoded back to what the partner sent."""

    id: int
    at: datetime
    use_case: str
    partner_key: str
    event: str
    file_name: str | None
    sha256: str | None
    remote_path: str | None
    item_id: str | None
    subject_key: str | None
    run_id: str | None
    actor: str | None
    detail: str | None
    ledger_entry_id: int | None
    data: dict[str, Any] | None

    @classmethod
    def from_db(cls, row: Mapping[str, Any]) -> JournalRow:
        values = {f.name: row[f.name] for f in fields(cls)}
        values["at"] = _aware(values["at"])
        values["file_name"] = from_db_text(values["file_name"])
        values["remote_path"] = from_db_text(values["remote_path"])
        values["data"] = None if values["data"] is None else json.loads(values["data"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``at`` in ISO 8601; undecodable names keep their escapes (``\\udcxx``)."""
        return asdict(self) | {"at": self.at.isoformat()}


def _read(engine, condition) -> list[JournalRow]:
    query = select(journal_table).where(condition).order_by(journal_table.c.at, journal_table.c.id)
    with engine.connect() as conn:
        return [JournalRow.from_db(row) for row in conn.execute(query).mappings()]


def file_journey(engine, *, file_name: str | None = None, sha256: str | None = None,
                 partner_key: str | None = None) -> list[JournalRow]:
    """The lines of one file (exact name, or exact sha256) and of every TG item those lines name."""
    if (file_name is None) == (sha256 is None):
        raise ValueError("file_journey needs exactly one of file_name or sha256")
    c = journal_table.c
    of_file = c.file_name == db_text(file_name) if file_name is not None else c.sha256 == sha256.lower()
    if partner_key is not None:
        of_file = of_file & (c.partner_key == partner_key)
    items_named = select(c.item_id).where(of_file, c.item_id.is_not(None))
    condition = or_(of_file, c.item_id.in_(items_named))
    if partner_key is not None:
        condition = condition & (c.partner_key == partner_key)
    return _read(engine, condition)


def item_journey(engine, item_id: str) -> list[JournalRow]:
    """Every line about one TG item, in time order."""
    return _read(engine, journal_table.c.item_id == item_id)


def partner_journal(engine, partner_key: str, *, since: datetime | None = None, until: datetime | None = None,
                    use_case: str | None = None) -> list[JournalRow]:
    """A partner's lines from ``since`` (inclusive) to ``until`` (exclusive), optionally of one use case."""
    c = journal_table.c
    condition = c.partner_key == partner_key
    if since is not None:
        condition = condition & (c.at >= since)
    if until is not None:
        condition = condition & (c.at < until)
    if use_case is not None:
        condition = condition & (c.use_case == use_case)
    return _read(engine, condition)


def _printable(text: str) -> str:
    """Undecodable bytes of a name as ``\\udcxx`` escapes: a terminal can print them, a reader can tell."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def format_text(rows: Iterable[JournalRow], title: str) -> str:
    """One line per event: time, use case, event, file, item, detail (and who, when known)."""
    rows = list(rows)
    lines = [f"{title}: {len(rows)} event(s)"]
    for row in rows:
        who = f" [{row.actor}]" if row.actor else ""
        detail = f"  {row.detail}" if row.detail else ""
        lines.append(
            f"{row.at.astimezone(timezone.utc):%Y-%m-%d %H:%M:%SZ}  {row.use_case:<18} {row.event:<16} "
            f"{row.file_name or '-'}  item {row.item_id or '-'}{who}{detail}"
        )
    return _printable("\n".join(lines))


# ---- the command -------------------------------------------------------------------------------


def _iso(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO date or time: {value!r}") from None
    return _aware(parsed)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m include.exchange.journal",
                                     description="Print the journey of a file, a TG item or a partner from the exchange journal.",
                                     epilog="Check the journal's hash chains: python -m include.exchange.journal verify --help")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--file", metavar="NAME", help="exact file name")
    what.add_argument("--sha256", metavar="HEX", help="sha256 of the file's content")
    what.add_argument("--item", metavar="ID", help="TG item id")
    what.add_argument("--partner", metavar="KEY", help="partner registry key (with --since/--until/--use-case)")
    parser.add_argument("--since", type=_iso, help="from (inclusive), ISO 8601; naive means UTC")
    parser.add_argument("--until", type=_iso, help="to (exclusive), ISO 8601; naive means UTC")
    parser.add_argument("--use-case", help="only this use case (with --partner)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--db", metavar="URL", help="SQLAlchemy URL of the project database")
    return parser


def _query(engine, args) -> tuple[list[JournalRow], str]:
    if args.file is not None:
        return file_journey(engine, file_name=args.file), f"Journey of file {args.file}"
    if args.sha256 is not None:
        return file_journey(engine, sha256=args.sha256), f"Journey of content sha256 {args.sha256}"
    if args.item is not None:
        return item_journey(engine, args.item), f"Journey of TG item {args.item}"
    period = "".join(f" {label} {value.isoformat()}" for label, value in (("from", args.since), ("until", args.until)) if value)
    scope = f" ({args.use_case})" if args.use_case else ""
    return (partner_journal(engine, args.partner, since=args.since, until=args.until, use_case=args.use_case),
            f"Journal of partner {args.partner}{scope}{period}")


def _verify_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m include.exchange.journal verify",
                                     description="Walk the journal's hash chains (one per partner) and name the first "
                                                 "entry of each that was edited, removed or reordered.")
    parser.add_argument("--partner", metavar="KEY", help="only this partner's chain")
    parser.add_argument("--json", action="store_true", help="print JSON (with each intact chain's head)")
    parser.add_argument("--db", metavar="URL", help="SQLAlchemy URL of the project database")
    return parser


def _verify_main(argv: list[str]) -> int:
    """``verify``: 0 when every chain holds, 1 when one does not (or there is nothing to read), 2 unconfigured."""
    from include.exchange.cli import CommandError, open_command_db, require_tables

    args = _verify_parser().parse_args(argv)
    try:
        engine = open_command_db(args.db)
        require_tables(engine, journal_table.name, what="journal")
        if missing := journal_chain.missing_hash_columns(engine, journal_table):
            raise CommandError(
                f"the journal predates its hash chain (no column {', '.join(missing)}); ensure_schema adds them "
                "(any task run, or: python -c 'from include.schema import ensure_schema; ensure_schema()'); "
                "nothing was changed", exit_code=1)
        report = journal_chain.verify(engine, journal_table, args.partner)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    from include.exchange.cli import CommandError, open_command_db, require_tables

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["verify"]:
        return _verify_main(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.since or args.until or args.use_case) and args.partner is None:
        parser.error("--since, --until and --use-case go with --partner")
    try:
        engine = open_command_db(args.db)
        require_tables(engine, journal_table.name, what="journal")
        rows, title = _query(engine, args)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        print(json.dumps({"title": title, "count": len(rows), "events": [r.to_dict() for r in rows]}, indent=2))
    else:
        print(format_text(rows, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
