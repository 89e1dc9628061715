"""Which Trading Grid item we posted for what, and its state in TG: the ``tg_items`` table
(``exchange_tg_items`` in the database).

Every use case posts items (notifications, validation_failure / transfer_failure cases, catalog diffs)
and needs to find them again: to resolve a case when a corrected file arrives, to see what a partner
acknowledged or disputed. One row per item, keyed by its ``external_ref`` (the idempotency handle every
post carries), holding what the use case knows (:class:`ItemRecord`: partner, kind, the subject in the
use case's own terms, file, ledger entry, run) next to what TG says (status, acknowledged,
``tg_updated_at``, and ``last_change_seen``: the TG time of the newest feed event
:mod:`include.exchange.feedback` applied to the row; events that change nothing, such as our own
``item.created``, are not written).

Writes never move an item back in time: TG timestamps are RFC 3339 strings of one fixed format, so they
compare as text, and a write carrying an older ``tg_updated_at`` than the row's leaves the TG state as it
is (an item response read before a partner's dispute cannot undo the dispute).

Functions take an engine or a connection (then they run in the caller's transaction). IN lists are
sent in chunks of :data:`CHUNK` (SQLite's cap on bound parameters, PostgreSQL's plan size).
"""
from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Any

from sqlalchemy import (
    Boolean, Column, DateTime, Index, Integer, String, Table, Text, and_, literal, or_, select, update,
)
from sqlalchemy.engine import Connection, Engine

from include.db import metadata

OPEN_STATUSES = ("open", "acknowledged", "in_progress", "disputed")
CHUNK = 500

# Not "tg_items": that is the TG sandbox's own table, and the sandbox may be pointed at the same database.
tg_items = Table(
    "exchange_tg_items",
    metadata,
    Column("external_ref", String(200), primary_key=True),
    Column("use_case", String(64), nullable=False),
    Column("partner_key", String(64), nullable=False),
    # The TG category: document_delivery | validation_failure | transfer_failure | catalog_sync | ...
    Column("kind", String(32), nullable=False),
    # What the item is about in the use case's terms: document key, catalog version, requirement + period.
    Column("subject_key", Text, nullable=False),
    Column("item_id", String(128), nullable=False, unique=True),
    Column("status", String(32), nullable=False),
    Column("acknowledged", Boolean, nullable=False, default=False),
    Column("file_name", Text),
    Column("sha256", String(64)),
    Column("ledger_entry_id", Integer),
    Column("run_id", Text),
    Column("resolved_by_item_id", String(128)),
    Column("tg_updated_at", String(64)),
    Column("last_change_seen", String(64)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_exchange_tg_items_use_case_partner_kind_status", "use_case", "partner_key", "kind", "status"),
    Index("ix_exchange_tg_items_partner_subject", "partner_key", "subject_key"),
)


@dataclass(frozen=True)
class ItemRecord:
    """What we know about an item we posted (its facts: kept as first recorded)."""

    use_case: str
    partner_key: str
    kind: str
    subject_key: str
    file_name: str | None = None
    sha256: str | None = None
    ledger_entry_id: int | None = None
    run_id: str | None = None


@dataclass(frozen=True)
class TrackedItem:
    """One row of ``tg_items``."""

    external_ref: str
    use_case: str
    partner_key: str
    kind: str
    subject_key: str
    item_id: str
    status: str
    acknowledged: bool
    file_name: str | None
    sha256: str | None
    ledger_entry_id: int | None
    run_id: str | None
    resolved_by_item_id: str | None
    tg_updated_at: str | None
    last_change_seen: str | None
    created_at: dt.datetime
    updated_at: dt.datetime

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["created_at"], out["updated_at"] = self.created_at.isoformat(), self.updated_at.isoformat()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrackedItem:
        values = {f.name: data[f.name] for f in fields(cls)}
        for key in ("created_at", "updated_at"):
            if isinstance(values[key], str):
                values[key] = dt.datetime.fromisoformat(values[key])
        return cls(**values)

    @classmethod
    def from_row(cls, row: Any) -> TrackedItem:
        values = dict(row._mapping)
        values["acknowledged"] = bool(values["acknowledged"])
        return cls(**values)


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@contextmanager
def transaction(engine_or_conn: Engine | Connection) -> Iterator[Connection]:
    """A connection in a transaction: the caller's (a Connection is used as is) or a new one, committed."""
    if isinstance(engine_or_conn, Connection):
        yield engine_or_conn
    else:
        with engine_or_conn.begin() as conn:
            yield conn


def not_older(incoming: Any):
    """SQL condition: the row's TG state is not newer than ``incoming`` (a column or a value)."""
    return or_(tg_items.c.tg_updated_at.is_(None), incoming.is_(None), tg_items.c.tg_updated_at <= incoming)


def remember_items(engine_or_conn: Engine | Connection, rows: Sequence[tuple[Mapping[str, Any], ItemRecord]]) -> None:
    """Upsert rows for posted TG items: one statement per :data:`CHUNK` rows (bulk runs post hundreds).

    ``item`` is the TG item (``id``, ``external_ref``, ``status``, ``updated_at``, ``acknowledged_at``).
    A known ``external_ref`` keeps its facts and takes the item's status, acknowledgement and
    ``tg_updated_at`` unless the row already holds a newer TG state.
    """
    if not rows:
        return
    stamp = now()
    by_ref: dict[str, dict[str, Any]] = {}  # the same item twice in one call (a reused item) is one row
    for item, record in rows:
        by_ref[item["external_ref"]] = dict(
            external_ref=item["external_ref"], item_id=str(item["id"]), status=item.get("status") or "open",
            acknowledged=bool(item.get("acknowledged_at")), tg_updated_at=item.get("updated_at"),
            created_at=stamp, updated_at=stamp, **asdict(record))
    values = list(by_ref.values())
    with transaction(engine_or_conn) as conn:
        insert = _dialect_insert(conn)
        for start in range(0, len(values), CHUNK):
            statement = insert(tg_items).values(values[start:start + CHUNK])
            new = statement.excluded
            conn.execute(statement.on_conflict_do_update(
                index_elements=["external_ref"],
                set_={"status": new.status, "acknowledged": new.acknowledged, "tg_updated_at": new.tg_updated_at,
                      "updated_at": new.updated_at},
                where=not_older(new.tg_updated_at)))


def _dialect_insert(conn: Connection):
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise NotImplementedError(f"tg_items upsert supports PostgreSQL and SQLite, not {conn.dialect.name}")
    return insert


def tracked_items(engine_or_conn: Engine | Connection, *, use_case: str | None = None, partner_key: str | None = None,
                  kinds: Iterable[str] | None = None, statuses: Iterable[str] | None = None,
                  subject_keys: Iterable[str] | None = None, item_ids: Iterable[str] | None = None) -> list[TrackedItem]:
    """Rows matching every filter given, oldest first. A list filter that is given but empty matches nothing."""
    conds = [column == value for column, value in ((tg_items.c.use_case, use_case), (tg_items.c.partner_key, partner_key))
             if value is not None]
    lists = [(column, sorted(set(values))) for column, values in (
        (tg_items.c.kind, kinds), (tg_items.c.status, statuses), (tg_items.c.subject_key, subject_keys),
        (tg_items.c.item_id, item_ids)) if values is not None]
    if any(not values for _, values in lists):
        return []
    # Every combination of chunks: only a long list (subject keys, item ids) has more than one.
    chunked = [[(column, values[i:i + CHUNK]) for i in range(0, len(values), CHUNK)] for column, values in lists]
    found: dict[str, TrackedItem] = {}
    with transaction(engine_or_conn) as conn:
        for combination in itertools.product(*chunked):
            query = select(tg_items).where(*conds, *(column.in_(chunk) for column, chunk in combination))
            for row in conn.execute(query):
                found[row.external_ref] = TrackedItem.from_row(row)
    return sorted(found.values(), key=lambda item: (item.created_at, item.external_ref))


def set_status(engine_or_conn: Engine | Connection, external_ref: str, status: str, *, tg_updated_at: str | None = None,
               resolved_by: str | None = None, acknowledged: bool | None = None) -> None:
    """Record an item's status as TG answered it (e.g. after our own transition).

    With ``tg_updated_at``, a row already holding a newer TG state keeps it; ``resolved_by`` (the item
    that resolved this one) is recorded either way.
    """
    values: dict[str, Any] = dict(status=status, updated_at=now())
    if tg_updated_at is not None:
        values["tg_updated_at"] = tg_updated_at
    if acknowledged is not None:
        values["acknowledged"] = acknowledged
    target = tg_items.c.external_ref == external_ref
    if tg_updated_at is not None:
        target = and_(target, not_older(literal(tg_updated_at, String(64))))
    with transaction(engine_or_conn) as conn:
        conn.execute(update(tg_items).where(target).values(**values))
        if resolved_by is not None:
            conn.execute(update(tg_items).where(tg_items.c.external_ref == external_ref)
                         .values(resolved_by_item_id=resolved_by))


__all__ = ["CHUNK", "OPEN_STATUSES", "ItemRecord", "TrackedItem", "remember_items", "set_status", "tg_items",
           "tracked_items", "transaction"]
