"""Glue between Airflow's task context and catalog_sync's functions (imported inside tasks only).

Resolves, once per task, what the plain functions take: the run context (dag and run id; staging
from EXCHANGE_STAGING_DIR, the database from EXCHANGE_DB_URL or connection ``exchange_db``), the
partner and the ledger (:func:`include.exchange.run.open_run`), the run's data interval, and for the
load gate's read the TG hook (``trading_grid_default``). Posting is not done here: the DAG's
``TradingGridBulkPostOperator`` posts what :func:`plan_posts` returns.

Tunables for tests and demos, from the environment: CATALOG_POLL_SECONDS (between readiness polls),
CATALOG_MAX_POLLS, CATALOG_CHUNKSIZE (rows per chunk of the checks and the staging).
"""
from __future__ import annotations

import logging
import os
from typing import Any

from include.exchange.run import RunContext

log = logging.getLogger(__name__)


def _env_number(name: str, kind: type):
    value = os.environ.get(name)
    return kind(value) if value else None


def _context():
    from airflow.sdk import get_current_context

    return get_current_context()


def run_context() -> RunContext:
    """The :class:`RunContext` of the running Airflow task, with the catalog's poll tunables."""
    context = _context()
    return RunContext(dag_id=context["dag"].dag_id, run_id=context["run_id"],
                      poll_interval=_env_number("CATALOG_POLL_SECONDS", float),
                      max_polls=_env_number("CATALOG_MAX_POLLS", int))


def engine():
    from include.db import get_engine
    from include.schema import ensure_schema

    db = get_engine()
    ensure_schema(db)
    return db


def receive(partner_key: str) -> dict[str, Any]:
    from include.catalog.receive import receive as receive_files
    from include.exchange.run import open_run

    context = _context()
    interval = (context["data_interval_start"], context["data_interval_end"])
    received = receive_files(open_run(partner_key, run_context()), interval,
                             chunksize=_env_number("CATALOG_CHUNKSIZE", int))
    log.info("%s: interval %s – %s has %d validated catalog version(s) %s, %d case(s) to post", partner_key,
             *interval, len(received.version_ids), received.version_ids, len(received.cases))
    return received.to_dict()


def plan_posts(partner_key: str, received: dict[str, Any]) -> dict[str, Any]:
    from include.catalog.publish import plan_posts as plan
    from include.catalog.receive import Received
    from include.exchange.run import open_run

    return plan(open_run(partner_key, run_context()), Received.from_dict(received)).to_dict()


def record_posts(partner_key: str, plan: dict[str, Any], posted: list[dict] | None) -> dict[str, Any]:
    """``{"partner_key", "waits"}``: a dict, so the per-partner results stay recognisable (below)."""
    from include.catalog.publish import CatalogPlan
    from include.catalog.publish import record_posts as record
    from include.exchange.run import open_run

    waits = record(open_run(partner_key, run_context()), CatalogPlan.from_dict(plan), posted or [])
    return {"partner_key": partner_key, "waits": waits}


def versions_to_confirm(recorded: dict[str, Any] | list[dict[str, Any]]) -> list[dict]:
    """Every partner's waits, for the per-version mapping. Pulled from outside the mapped group,
    Airflow 3.3 hands one map instance's value unwrapped (``xcom_pull``: a single XCom is returned as
    it is), several as a list: both shapes are accepted."""
    per_partner = [recorded] if isinstance(recorded, dict) else list(recorded or [])
    return [wait for result in per_partner for wait in result["waits"]]


def load(version: dict[str, Any]) -> dict[str, Any]:
    from airflow.sdk.exceptions import AirflowSkipException
    from trading_grid.hooks.trading_grid import TradingGridHook

    from include.catalog.decision import LoadBlocked, decide_and_load

    with TradingGridHook() as hook:
        try:
            return decide_and_load(engine(), hook, version["version_id"])
        except LoadBlocked as exc:
            raise AirflowSkipException(str(exc)) from None


def print_history(partner_keys: list[str]) -> dict[str, int]:
    from include.catalog import store
    from include.catalog.history import format_history

    db = engine()
    counts = {}
    for key in partner_keys:
        versions = store.history(db, key)
        log.info("\n%s", format_history(key, versions))
        counts[key] = len(versions)
    return counts
