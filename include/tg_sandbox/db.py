"""Storage: SQLAlchemy Core tables and an engine tuned for SQLite (WAL) or PostgreSQL.

Timestamps are stored as integer microseconds since the Unix epoch (UTC): they sort the same on every
database, need no time-zone handling and make the (updated_at, id) keyset cursor exact.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    create_engine,
    event,
    inspect,
    select,
    text,
    update,
)

metadata = MetaData()

communities = Table(
    "tg_communities",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("tenant_id", String(100), nullable=False),
    # Last timestamp handed out to a write. Every write takes this row's lock and moves it forward, so
    # updated_at values are unique and commit in order: a keyset cursor can never skip a later write.
    Column("clock_us", BigInteger, nullable=False, default=0),
)

items = Table(
    "tg_items",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("community_id", String(100), ForeignKey("tg_communities.id"), nullable=False),
    Column("partner_id", String(100), nullable=False),
    Column("type", String(20), nullable=False),
    Column("category", String(40), nullable=False),
    Column("status", String(20), nullable=False),
    Column("title", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("severity", String(10), nullable=False),
    Column("due_at_us", BigInteger),
    Column("requires_ack", Boolean, nullable=False),
    Column("acknowledged_at_us", BigInteger),
    Column("acknowledged_by", String(200)),
    Column("external_ref", String(255)),
    Column("metadata_json", Text, nullable=False),
    Column("idempotency_key", String(255), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
    Column("version", Integer, nullable=False),
    UniqueConstraint("community_id", "idempotency_key", name="uq_tg_items_idempotency_key"),
    UniqueConstraint("community_id", "external_ref", name="uq_tg_items_external_ref"),
    Index("ix_tg_items_feed", "community_id", "updated_us", "id"),
    Index("ix_tg_items_partner_feed", "community_id", "partner_id", "updated_us", "id"),
)

comments = Table(
    "tg_comments",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("item_id", String(40), ForeignKey("tg_items.id"), nullable=False, index=True),
    Column("author", String(200), nullable=False),
    Column("author_kind", String(20), nullable=False),
    Column("body", Text, nullable=False),
    Column("visibility", String(20), nullable=False),
    Column("created_us", BigInteger, nullable=False),
)

attachments = Table(
    "tg_attachments",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("item_id", String(40), ForeignKey("tg_items.id"), nullable=False, index=True),
    Column("filename", String(255), nullable=False),
    Column("content_type", String(200), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("uploaded_by", String(200), nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("content", LargeBinary, nullable=False),
)

events = Table(
    "tg_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("community_id", String(100), nullable=False),
    Column("item_id", String(40), nullable=False),
    Column("partner_id", String(100), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("at_us", BigInteger, nullable=False),
    Column("data_json", Text, nullable=False),
    # Events about internal comments: never shown to partner clients.
    Column("internal", Boolean, nullable=False, default=False),
    # The event's number in its partner's own feed (1, 2, 3, ... over the partner-visible events;
    # NULL for internal ones): what partner clients see as the id, so gaps in it never count other
    # partners' activity or internal comments. Enterprise clients see the global id.
    Column("partner_seq", Integer),
    Index("ix_tg_events_feed", "community_id", "id"),
    Index("ix_tg_events_partner_feed", "community_id", "partner_id", "id"),
    Index("ux_tg_events_partner_seq", "community_id", "partner_id", "partner_seq", unique=True),
)

portal_revocations = Table(
    "tg_portal_revocations",
    metadata,
    # sha256 of a signed-out portal session cookie; kept until the cookie would have expired anyway.
    Column("session_hash", String(64), primary_key=True),
    Column("expires_us", BigInteger, nullable=False, index=True),
)


def make_engine(url: str) -> Engine:
    """One engine per process. SQLite gets WAL, a busy timeout and BEGIN IMMEDIATE for writes."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=16,
            max_overflow=32,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_on_connect(dbapi_conn, _record):
            # Let SQLAlchemy's "begin" hook below decide how a transaction starts (pysqlite's own
            # implicit BEGIN is DEFERRED, which fails instead of waiting when a reader later writes).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_on_begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("tg_write") else "BEGIN")

    else:
        engine = create_engine(url, pool_size=16, max_overflow=32)
    return engine


def make_write_lock(engine: Engine) -> contextlib.AbstractContextManager:
    """The lock this process's writers take before a write transaction (SQLite only).

    SQLite's busy handler waits by sleeping (up to 100 ms a try); a lock hands over at once. Other
    processes still meet BEGIN IMMEDIATE and the busy timeout. PostgreSQL needs none."""
    return threading.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()


@contextlib.contextmanager
def write_tx(engine: Engine, lock: contextlib.AbstractContextManager) -> Iterator[Connection]:
    """A write transaction (SQLite: BEGIN IMMEDIATE, so concurrent writers queue instead of failing)."""
    with lock:
        with engine.connect() as conn:
            conn.execution_options(tg_write=True)
            with conn.begin():
                yield conn


@contextlib.contextmanager
def read_tx(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn:
        with conn.begin():
            yield conn


def add_partner_sequence(conn: Connection) -> None:
    """A database written before ``tg_events.partner_seq`` existed: add the column, number the existing
    partner-visible events per partner in id order, then create its unique index. Idempotent."""
    if "partner_seq" in {c["name"] for c in inspect(conn).get_columns(events.name)}:
        return
    conn.execute(text(f"ALTER TABLE {events.name} ADD COLUMN partner_seq INTEGER"))
    counters: dict[tuple[str, str], int] = {}
    numbered = []
    rows = conn.execute(select(events.c.id, events.c.community_id, events.c.partner_id)
                        .where(events.c.internal.is_(False)).order_by(events.c.id))
    for row in rows:
        key = (row.community_id, row.partner_id)
        counters[key] = counters.get(key, 0) + 1
        numbered.append({"event_id": row.id, "seq": counters[key]})
    if numbered:
        conn.execute(update(events).where(events.c.id == bindparam("event_id")).values(partner_seq=bindparam("seq")),
                     numbered)
    next(ix for ix in events.indexes if ix.name == "ux_tg_events_partner_seq").create(conn)
