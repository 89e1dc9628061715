"""The intake ledger: one row per file version seen in a partner's inbound folder.

Table ``intake_files`` (SQLAlchemy Core on :data:`include.db.metadata`). Life of an entry::

    seen ──► ready ──► fetched ──► validated ──► archived
      │        │          ├──────► duplicate (moved to archive, points at the original)
      │        └──────────┴──────► quarantined (any open status; with a reason)
      └──► vanished (disappeared before it was ready)

An entry is *open* while ``closed_at`` is NULL. Two database constraints carry the concurrency rules:

- ``uq_intake_files_open_path``: at most one open entry per (partner, remote path). Poll inserts the
  ``seen`` row; :meth:`Ledger.claim` moves it to ``ready`` with a compare-and-set, so two
  overlapping runs can never both claim a file. Once the file is archived/quarantined the path is
  free again, so a changed file uploaded under the same name later is a new entry.
- ``uq_intake_files_partner_key_content_key``: ``content_key`` (= sha256) is set on the first entry
  of a partner with that content; a second identical delivery fails this constraint and is
  recorded as ``duplicate`` with ``duplicate_of`` pointing at the original.

Moves are two-phase: :meth:`Ledger.record_move_intent` stores the target (``target_status``,
``final_path``) before the rename on the server, :meth:`Ledger.mark_moved` closes the entry after.
A crash in between leaves an open entry with ``final_path`` set, which
:meth:`include.intake.inbox.PartnerInbox.resume_unfinished` completes.
"""
from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    or_,
    case,
    cast,
    column,
    func,
    insert,
    literal,
    select,
    text,
    update,
    values,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from include.db import create_tables, metadata
from include.intake.errors import LedgerStateError
from include.textsafe import safe_text

SEEN = "seen"
READY = "ready"
FETCHED = "fetched"
VALIDATED = "validated"
ARCHIVED = "archived"
QUARANTINED = "quarantined"
DUPLICATE = "duplicate"
VANISHED = "vanished"

OPEN_STATUSES = (SEEN, READY, FETCHED, VALIDATED, DUPLICATE)
STATUSES = (SEEN, READY, FETCHED, VALIDATED, ARCHIVED, QUARANTINED, DUPLICATE, VANISHED)

intake_files = Table(
    "intake_files",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("partner_key", String(64), nullable=False),
    Column("remote_path", Text, nullable=False),
    Column("file_name", Text, nullable=False),
    Column("size", BigInteger),
    Column("mtime", BigInteger),
    Column("sha256", String(64)),
    Column("content_key", String(64)),
    Column("doc_type", String(64)),
    Column("status", String(16), nullable=False),
    Column("stable_count", Integer, nullable=False, default=1),
    Column("companions", JSON, nullable=False, default=list),
    Column("duplicate_of", Integer, ForeignKey("intake_files.id")),
    Column("tg_item_id", String(128)),
    Column("error", Text),
    Column("claimed_by", String(128)),
    Column("claimed_at", DateTime(timezone=True)),
    Column("local_path", Text),
    Column("target_status", String(16)),
    Column("final_path", Text),
    Column("first_seen_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
    Column("ready_at", DateTime(timezone=True)),
    Column("fetched_at", DateTime(timezone=True)),
    Column("validated_at", DateTime(timezone=True)),
    Column("announced_at", DateTime(timezone=True)),
    Column("closed_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("partner_key", "content_key"),
    Index(
        "uq_intake_files_open_path",
        "partner_key",
        "remote_path",
        unique=True,
        postgresql_where=text("closed_at IS NULL"),
        sqlite_where=text("closed_at IS NULL"),
    ),
    Index("ix_intake_files_partner_status", "partner_key", "status"),
    Index("ix_intake_files_partner_sha256", "partner_key", "sha256"),
    Index("ix_intake_files_claimed_by", "claimed_by"),
)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


_RAW_PREFIX = "=?b64?"
#: Longest error text a ledger row keeps.
MAX_MESSAGE_CHARS = 4000


def db_text(value: str) -> str:
    """A path or name as stored: unchanged when it is clean UTF-8 without NUL (the normal case);
    otherwise ``=?b64?`` + base64 of its bytes, so undecodable names survive PostgreSQL (which
    rejects NUL and invalid UTF-8) and come back byte-exact through :func:`from_db_text`."""
    try:
        value.encode("utf-8")
        clean = "\x00" not in value
    except UnicodeEncodeError:
        clean = False
    if clean and not value.startswith(_RAW_PREFIX):
        return value
    return _RAW_PREFIX + base64.urlsafe_b64encode(value.encode("utf-8", "surrogateescape")).decode("ascii")


def from_db_text(value: str | None) -> str | None:
    if value is None or not value.startswith(_RAW_PREFIX):
        return value
    return base64.urlsafe_b64decode(value[len(_RAW_PREFIX):]).decode("utf-8", "surrogateescape")


def db_message(value: str) -> str:
    """Free text (errors, reasons) safe for every backend; lossy is fine here (:func:`include.textsafe.safe_text`)."""
    return safe_text(value, MAX_MESSAGE_CHARS)


@dataclass(frozen=True)
class LedgerEntry:
    """A row of ``intake_files``, as a plain immutable value."""

    id: int
    partner_key: str
    remote_path: str
    file_name: str
    size: int | None
    mtime: int | None
    sha256: str | None
    content_key: str | None
    doc_type: str | None
    status: str
    stable_count: int
    companions: list
    duplicate_of: int | None
    tg_item_id: str | None
    error: str | None
    claimed_by: str | None
    claimed_at: datetime | None
    local_path: str | None
    target_status: str | None
    final_path: str | None
    first_seen_at: datetime
    last_seen_at: datetime
    ready_at: datetime | None
    fetched_at: datetime | None
    validated_at: datetime | None
    announced_at: datetime | None
    closed_at: datetime | None
    updated_at: datetime

    @property
    def is_open(self) -> bool:
        return self.closed_at is None

    @property
    def move_pending(self) -> bool:
        """An archive/quarantine move was decided but not confirmed done."""
        return self.closed_at is None and self.final_path is not None

    @classmethod
    def from_row(cls, row: Any) -> LedgerEntry:
        data = dict(row._mapping)
        for key in ("first_seen_at", "last_seen_at", "ready_at", "fetched_at", "validated_at",
                    "announced_at", "closed_at", "updated_at", "claimed_at"):
            value = data.get(key)
            if value is not None and value.tzinfo is None:  # SQLite drops the zone
                data[key] = value.replace(tzinfo=timezone.utc)
        data["companions"] = [from_db_text(name) for name in data.get("companions") or []]
        data["remote_path"] = from_db_text(data["remote_path"])
        data["file_name"] = from_db_text(data["file_name"])
        return cls(**{f.name: data[f.name] for f in fields(cls)})


#: Rows per statement of the batch methods (one transaction whatever the number of chunks).
BATCH_CHUNK = 1000


def _chunks(items: Sequence, size: int = BATCH_CHUNK):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _entries_by_id(conn: Any, ids: Sequence[int]) -> dict[int, LedgerEntry]:
    """The stored entries of ``ids`` (those that exist), by id, read in chunks."""
    found: dict[int, LedgerEntry] = {}
    for chunk in _chunks(ids):
        for row in conn.execute(select(intake_files).where(intake_files.c.id.in_(chunk))):
            found[row.id] = LedgerEntry.from_row(row)
    return found


def _update_returning(conn: Any, ids: Sequence[int], conditions: Sequence[Any], values: dict) -> dict[int, LedgerEntry]:
    """``UPDATE intake_files SET values WHERE id IN ids AND conditions RETURNING *`` in chunks:
    the entries that matched, by id."""
    changed: dict[int, LedgerEntry] = {}
    for chunk in _chunks(ids):
        statement = update(intake_files).where(intake_files.c.id.in_(chunk), *conditions).values(**values)
        for row in conn.execute(statement.returning(*intake_files.c)):
            changed[row.id] = LedgerEntry.from_row(row)
    return changed


def _is_postgres(conn: Any) -> bool:
    return conn.dialect.name == "postgresql"


def _update_rows(conn: Any, rows: Sequence[dict], types: dict[str, Any],
                 build: Callable[[Any], tuple[list, dict]], returning: Sequence[Any] = ()) -> list:
    """One UPDATE of ``intake_files`` with per-row values, matched on ``id``.

    On PostgreSQL a single ``UPDATE ... FROM (VALUES ...)`` per :data:`BATCH_CHUNK` rows (one round
    trip); elsewhere (SQLite: in-process, no round trip) one statement per row in the caller's
    transaction. ``build(src)`` gets ``src`` whose attributes are the row's values as SQL
    expressions (``src.id``, ...) and returns (extra WHERE clauses, SET values); SET expressions
    see the row's values before the update, as in any UPDATE. Returns the ``returning`` columns of
    the updated rows.
    """
    names = list(types)
    out: list = []

    def run(src: SimpleNamespace) -> None:
        where, assignments = build(src)
        stmt = update(intake_files).where(intake_files.c.id == src.id, *where).values(**assignments)
        if returning:
            out.extend(conn.execute(stmt.returning(*returning)).all())
        else:
            conn.execute(stmt)

    if _is_postgres(conn):
        for chunk in _chunks(rows):
            batch = values(*(column(name, types[name]) for name in names), name="batch").data(
                [tuple(row[name] for name in names) for row in chunk])
            run(SimpleNamespace(**{name: cast(batch.c[name], types[name]) for name in names}))
    else:
        for row in rows:
            run(SimpleNamespace(**{name: literal(row[name], types[name]) for name in names}))
    return out


def _lock_rows(conn: Any, query: Any) -> list:
    """Run ``query`` (rows of ``intake_files``) with ``FOR UPDATE`` in id order on PostgreSQL.

    Batch writers lock their rows up front in one deterministic order, so two overlapping runs
    queue behind each other instead of deadlocking on rows they touch in different orders.
    """
    query = query.order_by(intake_files.c.id)
    if _is_postgres(conn):
        query = query.with_for_update()
    return conn.execute(query).all()


class Ledger:
    """Access to ``intake_files``. Every method is one short transaction on ``engine``.

    The ``*_many`` methods do the same for many entries in one transaction with a constant number
    of statements (per :data:`BATCH_CHUNK` rows), with the same rules as their single-entry twins.
    """

    def __init__(self, engine: Any, *, create_schema: bool = True) -> None:
        self.engine = engine
        if create_schema:
            # Only its own table: the whole schema is include.schema's job (which imports this module).
            create_tables(engine, [intake_files])

    # ---- reading ---------------------------------------------------------------------------
    def get(self, entry_id: int) -> LedgerEntry:
        with self.engine.connect() as conn:
            row = conn.execute(select(intake_files).where(intake_files.c.id == entry_id)).first()
        if row is None:
            raise LookupError(f"no intake ledger entry {entry_id}")
        return LedgerEntry.from_row(row)

    def get_many(self, entry_ids: Iterable[int]) -> dict[int, LedgerEntry]:
        """Entries by id, in one query. :raises LookupError: an id has no entry."""
        ids = list(dict.fromkeys(int(i) for i in entry_ids))
        found: dict[int, LedgerEntry] = {}
        if ids:
            with self.engine.connect() as conn:
                found = _entries_by_id(conn, ids)
        missing = [i for i in ids if i not in found]
        if missing:
            raise LookupError(f"no intake ledger entries {missing}")
        return {i: found[i] for i in ids}

    def entries(self, partner_key: str, *, status: str | None = None, open_only: bool = False) -> list[LedgerEntry]:
        query = select(intake_files).where(intake_files.c.partner_key == partner_key)
        if status:
            query = query.where(intake_files.c.status == status)
        if open_only:
            query = query.where(intake_files.c.closed_at.is_(None))
        with self.engine.connect() as conn:
            return [LedgerEntry.from_row(row) for row in conn.execute(query.order_by(intake_files.c.id))]

    def claimed_unannounced(self, partner_key: str, claimed_by: str) -> list[int]:
        """Ids (ascending) of the entries ``claimed_by`` holds that still need work or a TG item: open
        ones, and archived/quarantined ones without a TG item. One query, whatever the history."""
        query = select(intake_files.c.id).where(and_(
            intake_files.c.partner_key == partner_key,
            intake_files.c.claimed_by == claimed_by,
            or_(intake_files.c.closed_at.is_(None),
                and_(intake_files.c.status.in_((ARCHIVED, QUARANTINED)), intake_files.c.tg_item_id.is_(None))),
        )).order_by(intake_files.c.id)
        with self.engine.connect() as conn:
            return [row[0] for row in conn.execute(query)]

    def open_entries(self, partner_key: str) -> dict[str, LedgerEntry]:
        """Open entries of a partner by remote path."""
        return {entry.remote_path: entry for entry in self.entries(partner_key, open_only=True)}

    def find_original(self, partner_key: str, sha256: str) -> LedgerEntry | None:
        """The first entry of ``partner_key`` whose content had this digest (the one holding content_key)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(intake_files).where(
                    and_(intake_files.c.partner_key == partner_key, intake_files.c.content_key == sha256)
                )
            ).first()
        return LedgerEntry.from_row(row) if row else None

    def pending_moves(self, partner_key: str) -> list[LedgerEntry]:
        """Open entries with a recorded move intent (crash between intent and confirmation)."""
        return [entry for entry in self.entries(partner_key, open_only=True) if entry.final_path is not None]

    def stale_claims(self, partner_key: str, older_than: timedelta) -> list[LedgerEntry]:
        """Claimed open entries without a move intent whose claim is older than ``older_than``."""
        cutoff = utcnow() - older_than
        return [
            entry
            for entry in self.entries(partner_key, open_only=True)
            if entry.status in (READY, FETCHED, VALIDATED, DUPLICATE)
            and entry.final_path is None
            and entry.claimed_at is not None
            and entry.claimed_at < cutoff
        ]

    # ---- observing (poll) --------------------------------------------------------------------
    def observe(self, partner_key: str, remote_path: str, file_name: str, size: int, mtime: int) -> LedgerEntry:
        """Record one sighting of a candidate file and return its open entry.

        A new path gets a ``seen`` entry with ``stable_count`` 1. For a ``seen`` entry the count
        grows by one when size and mtime are unchanged since the last poll and restarts at 1 when
        they changed. Claimed entries are returned unchanged.
        """
        now = utcnow()
        with self.engine.begin() as conn:
            row = conn.execute(self._open_path_query(partner_key, remote_path)).first()
            if row is None:
                try:
                    with conn.begin_nested():
                        conn.execute(
                            insert(intake_files).values(
                                partner_key=partner_key,
                                remote_path=db_text(remote_path),
                                file_name=db_text(file_name),
                                size=size,
                                mtime=mtime,
                                status=SEEN,
                                stable_count=1,
                                companions=[],
                                first_seen_at=now,
                                last_seen_at=now,
                                updated_at=now,
                            )
                        )
                except IntegrityError:
                    pass  # an overlapping poll inserted it first; read theirs below
                row = conn.execute(self._open_path_query(partner_key, remote_path)).first()
                return LedgerEntry.from_row(row)
            entry = LedgerEntry.from_row(row)
            if entry.status != SEEN:
                return entry
            unchanged = entry.size == size and entry.mtime == mtime
            conn.execute(
                update(intake_files)
                .where(intake_files.c.id == entry.id)
                .values(
                    size=size,
                    mtime=mtime,
                    stable_count=(intake_files.c.stable_count + 1) if unchanged else 1,
                    last_seen_at=now,
                    updated_at=now,
                )
            )
            row = conn.execute(select(intake_files).where(intake_files.c.id == entry.id)).first()
            return LedgerEntry.from_row(row)

    def observe_many(self, partner_key: str,
                     sightings: Iterable[tuple[str, str, int, int]]) -> dict[str, LedgerEntry]:
        """:meth:`observe` for many files of one listing, in one transaction: returns the open
        entry of each remote path.

        ``sightings`` are ``(remote_path, file_name, size, mtime)``. New paths get their ``seen``
        rows in one ``INSERT ... ON CONFLICT DO NOTHING`` (a row an overlapping poll inserted first is
        read back and returned as it is, like :meth:`observe` does); the ``seen`` entries among the
        others get their stable counts in one UPDATE (size and mtime unchanged: +1, else 1); claimed
        entries are returned unchanged.
        """
        by_path = {path: (path, name, size, mtime) for path, name, size, mtime in sightings}
        if not by_path:
            return {}
        now = utcnow()
        out: dict[str, LedgerEntry] = {}
        with self.engine.begin() as conn:
            for chunk in _chunks(sorted(by_path)):
                for row in _lock_rows(conn, self._open_paths_query(partner_key, chunk)):
                    entry = LedgerEntry.from_row(row)
                    out[entry.remote_path] = entry
            # Inserted in path order: overlapping polls (same sorted listing) wait on each other's
            # uncommitted rows in one order, never crosswise.
            new = [by_path[path] for path in sorted(by_path) if path not in out]
            inserted = self._insert_seen(conn, partner_key, new, now)
            out.update(inserted)
            lost = [path for path, *_ in new if path not in inserted]
            for chunk in _chunks(lost):
                for row in conn.execute(self._open_paths_query(partner_key, chunk)):
                    entry = LedgerEntry.from_row(row)
                    out[entry.remote_path] = entry
            seen = [entry for entry in out.values() if entry.status == SEEN and entry.remote_path not in inserted
                    and entry.remote_path not in lost]
            c = intake_files.c
            rows = _update_rows(
                conn,
                [dict(id=e.id, size=by_path[e.remote_path][2], mtime=by_path[e.remote_path][3]) for e in seen],
                {"id": Integer, "size": BigInteger, "mtime": BigInteger},
                lambda src: ([c.status == SEEN, c.closed_at.is_(None)], dict(
                    size=src.size, mtime=src.mtime,
                    stable_count=case((and_(c.size == src.size, c.mtime == src.mtime), c.stable_count + 1), else_=1),
                    last_seen_at=now, updated_at=now)),
                returning=list(intake_files.c),
            )
            for row in rows:
                entry = LedgerEntry.from_row(row)
                out[entry.remote_path] = entry
        return {path: out[path] for path in by_path if path in out}

    def _open_paths_query(self, partner_key: str, remote_paths: Sequence[str]):
        return select(intake_files).where(
            and_(intake_files.c.partner_key == partner_key,
                 intake_files.c.remote_path.in_([db_text(p) for p in remote_paths]),
                 intake_files.c.closed_at.is_(None)))

    def _insert_seen(self, conn: Any, partner_key: str, new: list[tuple[str, str, int, int]],
                     now: datetime) -> dict[str, LedgerEntry]:
        """Insert ``seen`` rows, skipping paths that already have an open row (unique index); returns
        the inserted entries by path."""
        inserted: dict[str, LedgerEntry] = {}

        def row_values(path: str, name: str, size: int, mtime: int) -> dict:
            return dict(partner_key=partner_key, remote_path=db_text(path), file_name=db_text(name), size=size,
                        mtime=mtime, status=SEEN, stable_count=1, companions=[], first_seen_at=now,
                        last_seen_at=now, updated_at=now)

        dialect = conn.dialect.name
        if dialect in ("postgresql", "sqlite"):
            make_insert = pg_insert if dialect == "postgresql" else sqlite_insert
            for chunk in _chunks(new, 500 if dialect == "sqlite" else BATCH_CHUNK):
                stmt = (make_insert(intake_files).values([row_values(*item) for item in chunk])
                        .on_conflict_do_nothing().returning(*intake_files.c))
                for row in conn.execute(stmt):
                    entry = LedgerEntry.from_row(row)
                    inserted[entry.remote_path] = entry
            return inserted
        for item in new:  # other backends: one savepoint per row
            try:
                with conn.begin_nested():
                    new_id = conn.execute(insert(intake_files).values(row_values(*item))
                                          .returning(intake_files.c.id)).scalar_one()
            except IntegrityError:
                continue
            row = conn.execute(select(intake_files).where(intake_files.c.id == new_id)).first()
            inserted[item[0]] = LedgerEntry.from_row(row)
        return inserted

    def _open_path_query(self, partner_key: str, remote_path: str):
        return select(intake_files).where(
            and_(
                intake_files.c.partner_key == partner_key,
                intake_files.c.remote_path == db_text(remote_path),
                intake_files.c.closed_at.is_(None),
            )
        )

    def mark_vanished(self, partner_key: str, present_paths: set[str]) -> list[LedgerEntry]:
        """Close ``seen`` entries whose file is no longer listed (renamed or withdrawn by the partner)."""
        now = utcnow()
        present = set(present_paths)
        vanished = [e for e in self.entries(partner_key, status=SEEN, open_only=True) if e.remote_path not in present]
        with self.engine.begin() as conn:
            for entry in vanished:
                conn.execute(
                    update(intake_files)
                    .where(and_(intake_files.c.id == entry.id, intake_files.c.status == SEEN))
                    .values(status=VANISHED, closed_at=now, updated_at=now)
                )
        return vanished

    def claim(self, entry_id: int, claimed_by: str, *, doc_type: str | None, companions: list[str]) -> bool:
        """Move a ``seen`` entry to ``ready`` for ``claimed_by``. False if another run got it first."""
        now = utcnow()
        with self.engine.begin() as conn:
            result = conn.execute(
                update(intake_files)
                .where(and_(intake_files.c.id == entry_id, intake_files.c.status == SEEN,
                            intake_files.c.closed_at.is_(None)))
                .values(status=READY, claimed_by=claimed_by, claimed_at=now, ready_at=now,
                        doc_type=doc_type, companions=[db_text(c) for c in companions], updated_at=now)
            )
        return result.rowcount == 1

    def claim_many(self, claims: Iterable[tuple[int, str | None, list[str]]], claimed_by: str) -> set[int]:
        """:meth:`claim` for many entries: one compare-and-set UPDATE (``status = 'seen'`` and open)
        in one transaction. ``claims`` are ``(entry_id, doc_type, companions)``. Returns the ids this
        call claimed; any other was taken by another run first (or is no longer ``seen``)."""
        claims = list(claims)
        if not claims:
            return set()
        now = utcnow()
        c = intake_files.c
        with self.engine.begin() as conn:
            ids = sorted({entry_id for entry_id, _, _ in claims})
            for chunk in _chunks(ids):
                _lock_rows(conn, select(c.id).where(c.id.in_(chunk), c.status == SEEN, c.closed_at.is_(None)))
            rows = _update_rows(
                conn,
                [dict(id=entry_id, doc_type=doc_type, companions=[db_text(x) for x in companions])
                 for entry_id, doc_type, companions in claims],
                {"id": Integer, "doc_type": String(64), "companions": JSON},
                lambda src: ([c.status == SEEN, c.closed_at.is_(None)], dict(
                    status=READY, claimed_by=claimed_by, claimed_at=now, ready_at=now, doc_type=src.doc_type,
                    companions=src.companions, updated_at=now)),
                returning=[c.id],
            )
        return {row.id for row in rows}

    def set_companions(self, entry_id: int, companions: list[str]) -> LedgerEntry:
        """Record the marker/manifest names that travel with the file."""
        with self.engine.begin() as conn:
            conn.execute(update(intake_files).where(intake_files.c.id == entry_id)
                         .values(companions=[db_text(c) for c in companions], updated_at=utcnow()))
        return self.get(entry_id)

    def reclaim(self, entry_id: int, claimed_by: str, older_than: timedelta) -> bool:
        """Take over a stale claim (its run died). Compare-and-set on the old claim time."""
        now = utcnow()
        with self.engine.begin() as conn:
            result = conn.execute(
                update(intake_files)
                .where(and_(intake_files.c.id == entry_id, intake_files.c.closed_at.is_(None),
                            intake_files.c.final_path.is_(None),
                            intake_files.c.claimed_at < now - older_than))
                .values(claimed_by=claimed_by, claimed_at=now, updated_at=now)
            )
        return result.rowcount == 1

    def register_rejected(self, partner_key: str, remote_path: str, file_name: str, size: int | None,
                          mtime: int | None, reason: str, claimed_by: str, *, final_path: str | None = None,
                          companions: Sequence[str] = ()) -> LedgerEntry | None:
        """Insert a claimed entry for a file judged bad from its listing (unsafe name, unknown type),
        together with its quarantine in ONE statement: the move to ``final_path`` as an intent (a run
        killed before the rename leaves a pending move that :meth:`pending_moves` hands to the next
        run), or, without a ``final_path`` (the name cannot be addressed), closed as quarantined in place.

        Returns None when an open entry for the path already exists (being handled) or when the same
        unmovable entry (same path, size and mtime) was already closed as quarantined.
        """
        now = utcnow()
        quarantine = dict(status=QUARANTINED, target_status=QUARANTINED, final_path=final_path,
                          closed_at=None if final_path else now)
        with self.engine.begin() as conn:
            previous = conn.execute(
                select(intake_files.c.id).where(
                    and_(intake_files.c.partner_key == partner_key,
                         intake_files.c.remote_path == db_text(remote_path),
                         intake_files.c.status == QUARANTINED,
                         intake_files.c.final_path.is_(None),
                         intake_files.c.size == size, intake_files.c.mtime == mtime)
                )
            ).first()
            if previous is not None:
                return None
            try:
                with conn.begin_nested():
                    new_id = conn.execute(
                        insert(intake_files).values(
                            partner_key=partner_key, remote_path=db_text(remote_path),
                            file_name=db_text(file_name), size=size, mtime=mtime, stable_count=0,
                            companions=list(companions), error=db_message(reason), claimed_by=claimed_by,
                            claimed_at=now, ready_at=now, first_seen_at=now, last_seen_at=now, updated_at=now,
                            **quarantine,
                        ).returning(intake_files.c.id)
                    ).scalar_one()
            except IntegrityError:
                existing = conn.execute(self._open_path_query(partner_key, remote_path)).first()
                entry = LedgerEntry.from_row(existing) if existing else None
                # A 'seen' entry of the same path (e.g. type unknown only now) is claimed instead.
                if entry is None or entry.status != SEEN:
                    return None
                result = conn.execute(
                    update(intake_files).where(and_(intake_files.c.id == entry.id, intake_files.c.status == SEEN))
                    .values(claimed_by=claimed_by, claimed_at=now, ready_at=now, companions=list(companions),
                            error=db_message(reason), updated_at=now, **quarantine)
                )
                if result.rowcount != 1:
                    return None
                new_id = entry.id
        return self.get(new_id)

    # ---- fetch / validate ----------------------------------------------------------------------
    def mark_fetched(self, entry_id: int, *, sha256: str, size: int, local_path: str) -> LedgerEntry:
        """Record a completed fetch and decide original vs duplicate in one constraint-guarded step.

        The entry takes the partner's ``content_key`` for this digest; if another entry holds it, this
        one becomes ``duplicate`` with ``duplicate_of`` set (same partner + same sha256).
        """
        now = utcnow()
        entry = self.get(entry_id)
        if entry.status not in (READY, FETCHED) or not entry.is_open:
            raise LedgerStateError(f"entry {entry_id} is {entry.status}, cannot record a fetch")
        values = dict(sha256=sha256, size=size, local_path=local_path, fetched_at=now, error=None, updated_at=now)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    update(intake_files).where(intake_files.c.id == entry_id)
                    .values(status=FETCHED, content_key=sha256, **values)
                )
        except IntegrityError:
            original = self.find_original(entry.partner_key, sha256)
            with self.engine.begin() as conn:
                conn.execute(
                    update(intake_files).where(intake_files.c.id == entry_id)
                    .values(status=DUPLICATE, content_key=None,
                            duplicate_of=original.id if original else None, **values)
                )
        return self.get(entry_id)

    def mark_fetched_many(self, fetches: Sequence[tuple[int, str, int, str]]) -> dict[int, LedgerEntry]:
        """:meth:`mark_fetched` for many entries in one transaction; ``fetches`` are
        ``(entry_id, sha256, size, local_path)`` in the order the files were received.

        Same rules: an entry becomes ``fetched`` and takes the partner's ``content_key`` for its
        digest, or ``duplicate`` with ``duplicate_of`` = the entry holding that key; within the batch
        the first entry with a digest is the original and the later ones its duplicates. Should the
        batched write still meet the unique constraint (an overlapping run recorded the same content
        meanwhile), the batch is rolled back and recorded entry by entry with :meth:`mark_fetched`.

        :raises LedgerStateError: an entry is not ``ready``/``fetched`` and open (nothing is written).
        """
        fetches = list(fetches)
        if not fetches:
            return {}
        ids = [int(f[0]) for f in fetches]
        if len(set(ids)) != len(ids):
            raise ValueError("mark_fetched_many: an entry id appears twice")
        now = utcnow()
        c = intake_files.c
        try:
            with self.engine.begin() as conn:
                entries: dict[int, LedgerEntry] = {}
                for chunk in _chunks(sorted(ids)):
                    for row in _lock_rows(conn, select(intake_files).where(c.id.in_(chunk))):
                        entries[row.id] = LedgerEntry.from_row(row)
                missing = [i for i in ids if i not in entries]
                if missing:
                    raise LookupError(f"no intake ledger entries {missing}")
                bad = [f"{i} ({entries[i].status})" for i in ids
                       if entries[i].status not in (READY, FETCHED) or not entries[i].is_open]
                if bad:
                    raise LedgerStateError(f"entries {', '.join(bad)} cannot record a fetch")
                holders: dict[tuple[str, str], int] = {}
                partners = sorted({e.partner_key for e in entries.values()})
                digests = sorted({f[1] for f in fetches})
                for chunk in _chunks(digests):
                    for row in conn.execute(select(c.id, c.partner_key, c.content_key).where(
                            c.partner_key.in_(partners), c.content_key.in_(chunk))):
                        holders[(row.partner_key, row.content_key)] = row.id
                rows = []
                for entry_id, sha256, size, local_path in fetches:
                    entry = entries[entry_id]
                    old_key = (entry.partner_key, entry.content_key)
                    holder = holders.get((entry.partner_key, sha256))
                    if entry.content_key is not None and entry.content_key != sha256 and holders.get(old_key) == entry_id:
                        del holders[old_key]  # this entry's update gives its former digest up
                    if holder is None or holder == entry_id:
                        holders[(entry.partner_key, sha256)] = entry_id
                        rows.append(dict(id=entry_id, status=FETCHED, content_key=sha256, duplicate_of=None,
                                         sha256=sha256, size=size, local_path=local_path))
                    else:
                        rows.append(dict(id=entry_id, status=DUPLICATE, content_key=None, duplicate_of=holder,
                                         sha256=sha256, size=size, local_path=local_path))
                updated = _update_rows(
                    conn, rows,
                    {"id": Integer, "status": String(16), "content_key": String(64), "duplicate_of": Integer,
                     "sha256": String(64), "size": BigInteger, "local_path": Text},
                    lambda src: ([c.closed_at.is_(None)], dict(
                        status=src.status, content_key=src.content_key,
                        duplicate_of=func.coalesce(src.duplicate_of, c.duplicate_of), sha256=src.sha256,
                        size=src.size, local_path=src.local_path, fetched_at=now, error=None, updated_at=now)),
                    returning=list(intake_files.c),
                )
                result = {row.id: LedgerEntry.from_row(row) for row in updated}
        except IntegrityError:
            return {entry_id: self.mark_fetched(entry_id, sha256=sha256, size=size, local_path=local_path)
                    for entry_id, sha256, size, local_path in fetches}
        return {i: result[i] for i in ids}

    def release_claim(self, entry_id: int, error: str) -> None:
        """Put a claimed entry back to ``seen`` (the file changed under us): readiness starts over."""
        with self.engine.begin() as conn:
            conn.execute(update(intake_files)
                         .where(and_(intake_files.c.id == entry_id, intake_files.c.status.in_((READY, FETCHED)),
                                     intake_files.c.closed_at.is_(None), intake_files.c.final_path.is_(None)))
                         .values(status=SEEN, stable_count=0, claimed_by=None, claimed_at=None,
                                 error=db_message(error), updated_at=utcnow()))

    def close_vanished(self, entry_id: int, error: str) -> None:
        """Close an open entry whose file disappeared before we took it."""
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(update(intake_files)
                         .where(and_(intake_files.c.id == entry_id, intake_files.c.closed_at.is_(None),
                                     intake_files.c.final_path.is_(None)))
                         .values(status=VANISHED, closed_at=now, error=db_message(error), updated_at=now))

    def record_unverified_fetch(self, entry_id: int, *, sha256: str, size: int, local_path: str, error: str) -> None:
        """Record a transfer whose integrity check failed: digest and staged copy are kept for the
        operator, but no ``content_key`` is taken, so a corrected delivery is not a duplicate."""
        with self.engine.begin() as conn:
            conn.execute(update(intake_files).where(intake_files.c.id == entry_id).values(
                sha256=sha256, size=size, local_path=local_path, fetched_at=utcnow(), error=db_message(error),
                updated_at=utcnow()))

    def record_error(self, entry_id: int, error: str) -> None:
        """Keep the last error of an entry (the entry stays where it is, to be retried)."""
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(update(intake_files).where(intake_files.c.id == entry_id)
                         .values(error=db_message(error), updated_at=now))

    def release_content_key(self, entry_id: int) -> None:
        """Forget that this entry's content was received (its transfer proved corrupt), so a
        corrected delivery of the right bytes is not taken for a duplicate."""
        with self.engine.begin() as conn:
            conn.execute(update(intake_files).where(intake_files.c.id == entry_id).values(content_key=None))

    def mark_validated(self, entry_id: int, *, tg_item_id: str | None = None) -> LedgerEntry:
        now = utcnow()
        values: dict = dict(status=VALIDATED, validated_at=now, updated_at=now)
        if tg_item_id is not None:
            values["tg_item_id"] = tg_item_id
        with self.engine.begin() as conn:
            result = conn.execute(
                update(intake_files)
                .where(and_(intake_files.c.id == entry_id, intake_files.c.status.in_((FETCHED, VALIDATED)),
                            intake_files.c.closed_at.is_(None)))
                .values(**values)
            )
        if result.rowcount != 1:
            raise LedgerStateError(f"entry {entry_id} is {self.get(entry_id).status}, cannot mark it validated")
        return self.get(entry_id)

    def set_tg_item(self, entry_id: int, tg_item_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(intake_files).where(intake_files.c.id == entry_id)
                         .values(tg_item_id=tg_item_id, updated_at=utcnow()))

    def mark_validated_many(self, entry_ids: Iterable[int]) -> dict[int, LedgerEntry]:
        """:meth:`mark_validated` for many entries: one UPDATE in one transaction, all or nothing.

        :raises LedgerStateError: an entry is not ``fetched``/``validated`` and open (none is marked).
        """
        ids = list(dict.fromkeys(int(i) for i in entry_ids))
        if not ids:
            return {}
        now = utcnow()
        c = intake_files.c
        with self.engine.begin() as conn:
            done = _update_returning(conn, ids, [c.status.in_((FETCHED, VALIDATED)), c.closed_at.is_(None)],
                                     dict(status=VALIDATED, validated_at=now, updated_at=now))
            bad = [i for i in ids if i not in done]
            if bad:
                statuses = {row.id: row.status for row in conn.execute(
                    select(c.id, c.status).where(c.id.in_(bad)))}
                raise LedgerStateError("cannot mark validated: " + ", ".join(
                    f"entry {i} is {statuses.get(i, 'unknown')}" for i in bad))
        return {i: done[i] for i in ids}

    def set_tg_items(self, items: dict[int, str]) -> None:
        """:meth:`set_tg_item` for many entries (``{entry_id: tg_item_id}``) in one transaction."""
        if not items:
            return
        now = utcnow()
        with self.engine.begin() as conn:
            _update_rows(conn, [dict(id=int(i), tg_item_id=str(item)) for i, item in items.items()],
                         {"id": Integer, "tg_item_id": String(128)},
                         lambda src: ([], dict(tg_item_id=src.tg_item_id, updated_at=now)))

    def claim_announcement(self, entry_id: int) -> bool:
        """True exactly once per entry: lets the caller announce (TG comment, e-mail) a quarantine or
        duplicate once, whatever the number of reruns."""
        now = utcnow()
        with self.engine.begin() as conn:
            result = conn.execute(
                update(intake_files)
                .where(and_(intake_files.c.id == entry_id, intake_files.c.announced_at.is_(None)))
                .values(announced_at=now, updated_at=now)
            )
        return result.rowcount == 1

    # ---- moves ---------------------------------------------------------------------------------
    def record_move_intent(self, entry_id: int, *, target_status: str, final_path: str | None,
                           reason: str | None = None) -> LedgerEntry:
        """Store where the file is about to be moved, before touching the server.

        Idempotent: if an intent is already recorded it is kept (its ``final_path`` is the one the
        retry must use), and the stored entry is returned.
        """
        if target_status not in (ARCHIVED, QUARANTINED, DUPLICATE):
            raise ValueError(f"bad target status {target_status!r}")
        now = utcnow()
        values: dict = dict(target_status=target_status, final_path=final_path, updated_at=now)
        if reason is not None:
            values["error"] = db_message(reason)
        if target_status == QUARANTINED:
            values["status"] = QUARANTINED
        with self.engine.begin() as conn:
            conn.execute(
                update(intake_files)
                .where(and_(intake_files.c.id == entry_id, intake_files.c.closed_at.is_(None),
                            intake_files.c.target_status.is_(None)))
                .values(**values)
            )
        entry = self.get(entry_id)
        if entry.closed_at is not None and entry.target_status is None:
            raise LedgerStateError(f"entry {entry_id} is closed ({entry.status})")
        return entry

    def mark_moved(self, entry_id: int) -> LedgerEntry:
        """Close the entry after its move was confirmed: status becomes the intended one."""
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                update(intake_files)
                .where(and_(intake_files.c.id == entry_id, intake_files.c.closed_at.is_(None),
                            intake_files.c.target_status.is_not(None)))
                .values(status=intake_files.c.target_status, closed_at=now, updated_at=now)
            )
        return self.get(entry_id)

    def record_move_intents(self, intents: Iterable[tuple[int, str, str | None, str | None]]) -> dict[int, LedgerEntry]:
        """:meth:`record_move_intent` for many entries in one transaction; ``intents`` are
        ``(entry_id, target_status, final_path, reason)``. An intent already recorded is kept.

        Returns the stored entries; unlike :meth:`record_move_intent` it does not raise for an entry
        that was closed without an intent (``closed_at`` set, ``target_status`` None): the caller
        checks.
        """
        intents = list(intents)
        for _, target_status, _, _ in intents:
            if target_status not in (ARCHIVED, QUARANTINED, DUPLICATE):
                raise ValueError(f"bad target status {target_status!r}")
        if not intents:
            return {}
        now = utcnow()
        c = intake_files.c
        ids = [int(i) for i, _, _, _ in intents]
        with self.engine.begin() as conn:
            for chunk in _chunks(sorted(set(ids))):
                _lock_rows(conn, select(c.id).where(c.id.in_(chunk)))
            _update_rows(
                conn,
                [dict(id=int(i), target_status=target, final_path=final,
                      error=db_message(reason) if reason is not None else None,
                      new_status=QUARANTINED if target == QUARANTINED else None)
                 for i, target, final, reason in intents],
                {"id": Integer, "target_status": String(16), "final_path": Text, "error": Text,
                 "new_status": String(16)},
                lambda src: ([c.closed_at.is_(None), c.target_status.is_(None)], dict(
                    target_status=src.target_status, final_path=src.final_path,
                    error=func.coalesce(src.error, c.error), status=func.coalesce(src.new_status, c.status),
                    updated_at=now)),
            )
            stored = _entries_by_id(conn, ids)
        return {i: stored[i] for i in ids if i in stored}

    def mark_moved_many(self, entry_ids: Iterable[int]) -> dict[int, LedgerEntry]:
        """:meth:`mark_moved` for many entries, in one transaction; returns the stored entries."""
        ids = list(dict.fromkeys(int(i) for i in entry_ids))
        if not ids:
            return {}
        now = utcnow()
        c = intake_files.c
        with self.engine.begin() as conn:
            out = _update_returning(conn, ids, [c.closed_at.is_(None), c.target_status.is_not(None)],
                                    dict(status=c.target_status, closed_at=now, updated_at=now))
            out.update(_entries_by_id(conn, [i for i in ids if i not in out]))
        return {i: out[i] for i in ids if i in out}
