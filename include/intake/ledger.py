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
import uuid
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
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
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from include.db import metadata
from include.intake.errors import LedgerStateError

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
)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


_RAW_PREFIX = "=?b64?"


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
    """Free text (errors, reasons) safe for every backend; lossy is fine here."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")[:4000]


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


class Ledger:
    """Access to ``intake_files``. Every method is one short transaction on ``engine``."""

    def __init__(self, engine: Any, *, create_schema: bool = True) -> None:
        self.engine = engine
        if create_schema:
            from include.db import ensure_schema

            ensure_schema(engine)

    # ---- reading ---------------------------------------------------------------------------
    def get(self, entry_id: int) -> LedgerEntry:
        with self.engine.connect() as conn:
            row = conn.execute(select(intake_files).where(intake_files.c.id == entry_id)).first()
        if row is None:
            raise LookupError(f"no intake ledger entry {entry_id}")
        return LedgerEntry.from_row(row)

    def entries(self, partner_key: str, *, status: str | None = None, open_only: bool = False) -> list[LedgerEntry]:
        query = select(intake_files).where(intake_files.c.partner_key == partner_key)
        if status:
            query = query.where(intake_files.c.status == status)
        if open_only:
            query = query.where(intake_files.c.closed_at.is_(None))
        with self.engine.connect() as conn:
            return [LedgerEntry.from_row(row) for row in conn.execute(query.order_by(intake_files.c.id))]

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
                          mtime: int | None, reason: str, claimed_by: str) -> LedgerEntry | None:
        """Insert a claimed entry for a file judged bad from its listing (unsafe name, unknown type).

        Returns None when an open entry for the path already exists (being handled) or when the same
        unmovable entry (same path, size and mtime) was already closed as quarantined.
        """
        now = utcnow()
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
                            file_name=db_text(file_name), size=size, mtime=mtime, status=READY,
                            stable_count=0, companions=[], error=db_message(reason), claimed_by=claimed_by,
                            claimed_at=now, ready_at=now, first_seen_at=now, last_seen_at=now, updated_at=now,
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
                    .values(status=READY, claimed_by=claimed_by, claimed_at=now, ready_at=now,
                            error=db_message(reason), updated_at=now)
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

    @staticmethod
    def new_claim_token(prefix: str = "run") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:12]}"
