"""Missed cycles backfilled with ``airflow backfill create`` through Airflow's real scheduler,
dag-processor, triggerer and api-server (LocalExecutor), with OpenSSH sshd, the TG sandbox and
PostgreSQL: each interval is run once and takes exactly its own file; a second backfill over the
same dates (``--reprocess-behavior completed``) posts no second item and loads nothing twice.
"""
from __future__ import annotations

import subprocess
import time

import pytest

from tests.catalog.test_dag_cycles import INBOUND, Retailer, catalog_task_env, db_state, items_for, put_price_list
from tests.support.airflow_stack import start_airflow_stack
from tests.support.postgres import create_database, drop_database

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FILES = {
    # file name → (mtime, rows): one file per missed daily cycle, distinct content (distinct TG items)
    "price_list_bf_2026-11-20.csv": ("2026-11-20T10:00:00+00:00", [("BF-1", "3.00", "EUR", "2026-12-01")]),
    "price_list_bf_2026-11-21.csv": ("2026-11-21T10:00:00+00:00", [("BF-1", "3.10", "EUR", "2026-12-01"), ("BF-2", "9.00", "EUR", "2026-12-01")]),
}


def backfill(stack, *extra: str) -> None:
    proc = subprocess.run(
        ["airflow", "backfill", "create", "--dag-id", "catalog_sync", "--from-date", "2026-11-20",
         "--to-date", "2026-11-21", *extra],
        env=stack.env, cwd=stack.home, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def wait_for_backfills(stack, count: int, timeout: float = 900) -> list[dict]:
    """Wait until ``count`` backfills exist and all are completed; return the DAG's runs."""
    deadline = time.monotonic() + timeout
    backfills: list = []
    while time.monotonic() < deadline:
        stack.assert_running()
        backfills = stack.api("GET", "/backfills", params={"dag_id": "catalog_sync"}).json()["backfills"]
        if len(backfills) >= count and all(b["completed_at"] for b in backfills):
            return stack.api("GET", "/dags/catalog_sync/dagRuns", params={"limit": 100}).json()["dag_runs"]
        time.sleep(3)
    runs = stack.api("GET", "/dags/catalog_sync/dagRuns", params={"limit": 100}).json()["dag_runs"]
    raise TimeoutError(f"backfills {backfills} not completed in {timeout}s; runs "
                       f"{[(r['run_id'], r['state']) for r in runs]}\n{stack.tail_logs()}")


@pytest.mark.timeout(2400)
def test_backfill_runs_each_missed_interval_exactly_once(tmp_path, sshd_server, tg_sandbox):
    project_db = create_database("catbf")
    inbound = sshd_server.local_path(INBOUND)
    inbound.mkdir(parents=True, exist_ok=True)
    for leftover in inbound.iterdir():
        leftover.unlink()
    for name, (mtime, rows) in FILES.items():
        put_price_list(sshd_server, name, rows, mtime)
    retailers = [Retailer(tg_sandbox, name, "acknowledge") for name in FILES]
    for retailer in retailers:
        retailer.start()
    env = catalog_task_env(tg_sandbox, sshd_server, project_db, tmp_path / "staging")
    try:
        with start_airflow_stack(tmp_path, extra_env=env) as stack:
            stack.wait_for_dag("catalog_sync")
            # One cycle after the other, as docs/catalog-sync.md says to backfill missed cycles that should
            # each be loaded: overlapping runs would let the newer file supersede the older one (by design).
            backfill(stack, "--max-active-runs", "1")
            runs = wait_for_backfills(stack, 1)
            assert [r["state"] for r in runs] == ["success", "success"], [(r["run_id"], r["state"]) for r in runs]
            assert all(r["run_type"] == "backfill" for r in runs)
            intervals = sorted((r["data_interval_start"][:10], r["data_interval_end"][:10]) for r in runs)
            assert intervals == [("2026-11-20", "2026-11-21"), ("2026-11-21", "2026-11-22")]
            for retailer in retailers:
                retailer.join(timeout=30)
                assert retailer.error is None and retailer.item_id

            prices, history = db_state(project_db)
            by_name = {v["file_name"]: v for v in history}
            assert set(by_name) == set(FILES)
            for name, version in by_name.items():
                assert version["interval_start"].isoformat()[:10] == FILES[name][0][:10]  # its own interval
                assert version["status"] == "loaded"
            assert prices == {"BF-1": 3.1, "BF-2": 9.0}

            # The same dates again, completed runs reprocessed: converges, nothing posted or loaded twice.
            backfill(stack, "--reprocess-behavior", "completed")
            runs = wait_for_backfills(stack, 2)
            assert len(runs) == 2 and all(r["state"] == "success" for r in runs), [(r["run_id"], r["state"]) for r in runs]
            _, again = db_state(project_db)
            assert [(v["file_name"], v["status"]) for v in again] == [(v["file_name"], v["status"]) for v in history]
            for version in again:
                assert [e["event"] for e in version["events"]].count("loaded") == 1
            for name in FILES:
                assert len(items_for(tg_sandbox, name)) == 1
    finally:
        drop_database(project_db)
