"""include.db: URL resolution order, engine cache, idempotent schema creation."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import inspect

from include import db
from include.schema import ensure_schema


@pytest.fixture(autouse=True)
def no_env_url(monkeypatch):
    monkeypatch.delenv("EXCHANGE_DB_URL", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_EXCHANGE_DB", raising=False)


def test_explicit_url_wins_over_env(monkeypatch, tmp_path):
    monkeypatch.setenv("EXCHANGE_DB_URL", f"sqlite:///{tmp_path}/env.db")
    assert db.resolve_url(f"sqlite:///{tmp_path}/explicit.db").endswith("explicit.db")
    assert db.resolve_url().endswith("env.db")


def test_airflow_connection_extra_sqlalchemy_url(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_CONN_EXCHANGE_DB", json.dumps(
        {"conn_type": "postgres", "host": "ignored", "extra": {"sqlalchemy_url": f"sqlite:///{tmp_path}/x.db"}}))
    assert db.resolve_url() == f"sqlite:///{tmp_path}/x.db"


def test_airflow_connection_uri_is_converted(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_EXCHANGE_DB", json.dumps(
        {"conn_type": "postgres", "host": "db.example", "port": 5433, "login": "ex", "password": "pw",
         "schema": "exchange"}))
    assert db.resolve_url() == "postgresql+psycopg2://ex:pw@db.example:5433/exchange"


def test_uri_conversion():
    assert db.to_sqlalchemy_url("postgres://u:p@h:5432/d?__extra__=%7B%7D") == "postgresql+psycopg2://u:p@h:5432/d"
    assert db.to_sqlalchemy_url("postgresql://h/d") == "postgresql+psycopg2://h/d"
    with pytest.raises(ValueError):
        db.to_sqlalchemy_url("not a uri")


def test_engine_is_cached_per_url(tmp_path):
    one = db.get_engine(f"sqlite:///{tmp_path}/a.db")
    assert db.get_engine(f"sqlite:///{tmp_path}/a.db") is one
    assert db.get_engine(f"sqlite:///{tmp_path}/b.db") is not one


def test_ensure_schema_is_idempotent_on_postgres(pg_url):
    engine = db.get_engine(pg_url)
    ensure_schema(engine)
    ensure_schema(engine)
    inspector = inspect(engine)
    assert {"intake_files", "catalog_versions", "downstream_prices", "exchange_journal"} <= set(inspector.get_table_names())
    indexes = {ix["name"]: ix for ix in inspector.get_indexes("intake_files")}
    assert indexes["uq_intake_files_open_path"]["unique"]
    assert any(c["name"] == "uq_intake_files_partner_key_content_key" for c in inspector.get_unique_constraints("intake_files"))
