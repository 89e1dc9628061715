"""The project's own database: one SQLAlchemy engine per URL and one shared ``metadata``.

The project keeps its own tables (the intake ledger, catalog versions, ...) apart from Airflow's
metadata database. Where that database lives is resolved in this order:

1. an explicit ``url`` argument (tests, scripts),
2. the environment variable ``EXCHANGE_DB_URL`` (tests, demo),
3. the Airflow connection ``exchange_db``: its ``extra.sqlalchemy_url`` if set, else the connection
   URI converted to a SQLAlchemy URL (``postgres://`` becomes ``postgresql+psycopg2://``).

Airflow is imported only for step 3, so this module works in plain Python (tests, scripts).

Every project table is declared on :data:`metadata` by the module that owns it;
``include.schema.ensure_schema`` imports those modules and creates what is missing (through
:func:`create_tables`). This module imports no table module, so any of them can import it.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import MetaData, create_engine

if TYPE_CHECKING:
    from sqlalchemy import Table
    from sqlalchemy.engine import Engine

EXCHANGE_DB_CONN_ID = "exchange_db"
EXCHANGE_DB_URL_ENV = "EXCHANGE_DB_URL"
# The one advisory lock every schema creation takes (any constant works; it only must be shared).
SCHEMA_LOCK_KEY = 742017

# Deterministic constraint names keep migrations and error messages readable on every backend.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def _sqlalchemy_url_from_airflow_connection(conn_id: str = EXCHANGE_DB_CONN_ID) -> str:
    """Read the ``exchange_db`` Airflow connection and turn it into a SQLAlchemy URL."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    extra = conn.extra_dejson or {}
    if extra.get("sqlalchemy_url"):
        return str(extra["sqlalchemy_url"])
    return to_sqlalchemy_url(conn.get_uri())


def to_sqlalchemy_url(uri: str) -> str:
    """Convert an Airflow connection URI into a URL SQLAlchemy understands.

    Airflow writes ``postgres://`` (its conn_type) which SQLAlchemy 2 rejects; the driver is made
    explicit so the installed psycopg2 is used. Query parameters (e.g. ``__extra__``) are dropped.
    """
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise ValueError("exchange_db connection has no URI scheme")
    rest = rest.split("?", 1)[0]
    scheme = {
        "postgres": "postgresql+psycopg2",
        "postgresql": "postgresql+psycopg2",
        "sqlite": "sqlite",
        "mysql": "mysql+pymysql",
    }.get(scheme, scheme)
    if scheme == "sqlite" and not rest.startswith("/"):
        rest = "/" + rest
    return f"{scheme}://{rest}"


def resolve_url(url: str | None = None) -> str:
    """Return the SQLAlchemy URL to use: explicit ``url`` > env EXCHANGE_DB_URL > connection exchange_db."""
    if url:
        return url
    env_url = os.environ.get(EXCHANGE_DB_URL_ENV)
    if env_url:
        return env_url
    return _sqlalchemy_url_from_airflow_connection()


def get_engine(url: str | None = None) -> Engine:
    """Return the (cached, one per URL) SQLAlchemy engine of the project database.

    :param url: SQLAlchemy URL; when omitted, env ``EXCHANGE_DB_URL`` and then the Airflow
        connection ``exchange_db`` are used.
    """
    resolved = resolve_url(url)
    with _engines_lock:
        engine = _engines.get(resolved)
        if engine is None:
            kwargs: dict = {}
            if resolved.startswith("sqlite"):
                # Tasks may hand the engine between threads (e.g. a fetch timeout watchdog).
                kwargs["connect_args"] = {"check_same_thread": False}
            else:
                kwargs["pool_pre_ping"] = True
            engine = create_engine(resolved, **kwargs)
            _engines[resolved] = engine
        return engine


def dispose_engines() -> None:
    """Dispose every cached engine (tests dropping their database, forked workers)."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def create_tables(engine: Engine, tables: Sequence[Table] | None = None) -> None:
    """Create the given tables of :data:`metadata` (all declared so far when ``None``) that are missing.

    Idempotent; on PostgreSQL it holds a transaction-level advisory lock, because parallel tasks
    creating the same tables at once fail on ``pg_type`` races otherwise.
    """
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY})")
        metadata.create_all(conn, tables=tables, checkfirst=True)
