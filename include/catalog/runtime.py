"""Glue between Airflow's task context and the catalog task functions (imported inside tasks only).

Resolves what :mod:`include.catalog.tasks` takes as arguments: the project database (env
EXCHANGE_DB_URL or connection ``exchange_db``), the TG hook (``trading_grid_default``), the
partner registry (env PARTNER_REGISTRY or include/config/partners.yaml), the SFTP session
(the partner's ``sftp_conn_id``) and the run's data interval. Tunables for tests and demos come from
the environment: CATALOG_POLL_SECONDS, CATALOG_MAX_POLLS, CATALOG_STAGING_DIR, CATALOG_CHUNKSIZE.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _env_float(name: str) -> float | None:
    value = os.environ.get(name)
    return float(value) if value else None


def engine():
    from include.db import get_engine
    from include.schema import ensure_schema

    db = get_engine()
    ensure_schema(db)
    return db


def tg_hook():
    from trading_grid.hooks.trading_grid import TradingGridHook

    return TradingGridHook()


def partner(key: str):
    from include.partners import load_registry

    return load_registry().get(key)


def _context():
    from airflow.sdk import get_current_context

    return get_current_context()


def staging_dir(dag_id: str, run_id: str) -> Path:
    root = os.environ.get("CATALOG_STAGING_DIR") or os.path.join(tempfile.gettempdir(), "catalog_staging")
    path = Path(root) / dag_id / re.sub(r"[^A-Za-z0-9._-]", "_", run_id)[:100]
    path.mkdir(parents=True, exist_ok=True)
    return path


def receive(partner_key: str) -> dict[str, Any]:
    from airflow.providers.sftp.hooks.sftp import SFTPHook

    from include.catalog import tasks

    ctx = _context()
    dag_id, run_id = ctx["dag"].dag_id, ctx["run_id"]
    start, end = ctx["data_interval_start"], ctx["data_interval_end"]
    who = partner(partner_key)
    max_polls = os.environ.get("CATALOG_MAX_POLLS")
    chunksize = os.environ.get("CATALOG_CHUNKSIZE")
    with tg_hook() as hook, SFTPHook(ssh_conn_id=who.sftp_conn_id).get_managed_conn() as sftp:
        version_ids = tasks.receive(
            engine(), hook, who, sftp, interval_start=start, interval_end=end, dag_id=dag_id, run_id=run_id,
            staging_dir=staging_dir(dag_id, run_id), poll_interval=_env_float("CATALOG_POLL_SECONDS"),
            max_polls=int(max_polls) if max_polls else None, chunksize=int(chunksize) if chunksize else None,
        )
    log.info("%s: interval %s – %s has %d validated catalog version(s): %s", partner_key, start, end, len(version_ids), version_ids)
    return {"partner_key": partner_key, "version_ids": version_ids}


def post_diffs(received: dict[str, Any]) -> list[dict[str, Any]]:
    from include.catalog import tasks

    ctx = _context()
    who = partner(received["partner_key"])
    waits = []
    with tg_hook() as hook:
        for version_id in received["version_ids"]:
            posted = tasks.post_diff(engine(), hook, who, version_id, dag_id=ctx["dag"].dag_id, run_id=ctx["run_id"])
            if posted:
                waits.append(posted)
    return waits


def load(version: dict[str, Any]) -> dict[str, Any]:
    from airflow.sdk.exceptions import AirflowSkipException

    from include.catalog import tasks

    with tg_hook() as hook:
        try:
            return tasks.decide_and_load(engine(), hook, version["version_id"])
        except tasks.LoadBlocked as exc:
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
