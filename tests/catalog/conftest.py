"""Fixtures for the catalog tests: the project's tables on a real PostgreSQL database."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def catalog_engine(pg_url):
    from sqlalchemy import create_engine

    from include.schema import ensure_schema

    engine = create_engine(pg_url)
    ensure_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def db(catalog_engine):
    """The engine, with every catalog table emptied after the test.

    The journal is append-only and stays: version ids come from a sequence, so a later test's
    version never reads an earlier test's lines (they name ``catalog_version:<id>``)."""
    from include.catalog import tables as t

    yield catalog_engine
    with catalog_engine.begin() as conn:
        for table in (*t.DOWNSTREAM.values(), t.catalog_accepted, t.catalog_version_rows):
            conn.execute(table.delete())
        conn.execute(t.catalog_versions.update().values(superseded_by=None))
        conn.execute(t.catalog_versions.delete())


@pytest.fixture
def hooks(tg_sandbox, monkeypatch):
    """(enterprise, acme's portal client) hooks on the TG sandbox; ``trading_grid_default`` points at it."""
    from trading_grid.hooks.trading_grid import RetryPolicy, TradingGridHook

    fast = RetryPolicy(max_attempts=10, backoff_base=0.01, backoff_max=0.2, max_retry_time=30.0)
    monkeypatch.setenv("AIRFLOW_CONN_TRADING_GRID_DEFAULT", tg_sandbox.airflow_conn_json())
    monkeypatch.setenv("AIRFLOW_CONN_TG_ACME_PORTAL", tg_sandbox.airflow_conn_json(client="P-ACME"))
    with TradingGridHook(retry_policy=fast) as enterprise, TradingGridHook("tg_acme_portal", retry_policy=fast) as portal:
        yield enterprise, portal


@pytest.fixture
def acme():
    from include.partners import load_registry

    return load_registry().get("acme")
