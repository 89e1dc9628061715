"""Fixtures for the catalog tests: the catalog tables on a real PostgreSQL database."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def catalog_engine(pg_url):
    from sqlalchemy import create_engine

    from include.catalog import tables as t

    engine = create_engine(pg_url)
    tables = [t.catalog_versions, t.catalog_version_rows, t.catalog_accepted, t.catalog_events, *t.DOWNSTREAM.values()]
    t.metadata.create_all(engine, tables=tables)
    yield engine
    engine.dispose()


@pytest.fixture
def db(catalog_engine):
    """The engine, with every catalog table emptied after the test."""
    from include.catalog import tables as t

    yield catalog_engine
    with catalog_engine.begin() as conn:
        for table in (*t.DOWNSTREAM.values(), t.catalog_accepted, t.catalog_events, t.catalog_version_rows):
            conn.execute(table.delete())
        conn.execute(t.catalog_versions.update().values(superseded_by=None))
        conn.execute(t.catalog_versions.delete())
