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
    create_engine,
    event,
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
    Index("ix_tg_events_feed", "community_id", "id"),
    Index("ix_tg_events_partner_feed", "community_id", "partner_id", "id"),
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
