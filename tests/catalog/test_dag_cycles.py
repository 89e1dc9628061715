"""The catalog_sync DAG end to end with ``dag.test()``: real OpenSSH sshd, the TG sandbox over HTTP,
PostgreSQL as the project database. A thread plays the retailer on Trading Grid.

Cycles (data intervals of the daily DAG), in order:

1. a clean cycle: price list received, diff posted, acknowledged, loaded; then the same interval is
   run again (a rerun): no second item, no second load;
2. a price jump of +150 % that the retailer disputes: the load is skipped;
3. the partner's corrected file in the next cycle supersedes the disputed version (its item is
   resolved and says so), is acknowledged and loaded;
4. two missed cycles run afterwards, oldest first (what a backfill does): each interval takes
   exactly its own file, once.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from tests.support.postgres import create_database, drop_database

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
INBOUND = "/partners/acme/inbound/catalog"
HEADER = ["SKU", "Net Price", "Currency", "Valid From"]  # acme's names, mapped by the registry


@pytest.fixture(scope="module")
def project_db():
    url = create_database("catdag")
    yield url
    drop_database(url)


def catalog_task_env(tg_sandbox, sshd_server, project_db: str, staging: Path) -> dict[str, str]:
    """What the catalog tasks need: connections, the project database, quick polls (also for e2e)."""
    return {
        "AIRFLOW_CONN_TRADING_GRID_DEFAULT": tg_sandbox.airflow_conn_json(),
        "AIRFLOW_CONN_SFTP_DEFAULT": sshd_server.airflow_conn_json(),
        "EXCHANGE_DB_URL": project_db,
        "CATALOG_POLL_SECONDS": "0.5",
        "CATALOG_MAX_POLLS": "4",
        "CATALOG_ACK_POLL_SECONDS": "1",
        "EXCHANGE_STAGING_DIR": str(staging),
    }


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory, sshd_server, tg_sandbox, project_db):
    home = tmp_path_factory.mktemp("catalog_airflow_home")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins")]),
        **catalog_task_env(tg_sandbox, sshd_server, project_db, home / "staging"),
    }
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], env=env, check=True,
                   capture_output=True, timeout=300)
    sshd_server.local_path(INBOUND).mkdir(parents=True, exist_ok=True)
    return env


def run_cycle(env, logical_date: str) -> dict:
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "catalog" / "dag_runner.py"), logical_date],
                          env=env, capture_output=True, text=True, timeout=600, cwd=str(REPO))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-5000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT="))
    result = json.loads(line.removeprefix("RESULT="))
    result["output"] = output
    return result


def put_price_list(sshd, name: str, rows, mtime: str) -> None:
    local = sshd.local_path(f"{INBOUND}/{name}")
    with open(local, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        writer.writerows(rows)
    stamp = datetime.fromisoformat(mtime).timestamp()
    os.utime(local, (stamp, stamp))


class Retailer(threading.Thread):
    """Acts on the catalog_sync item of ``file_name`` as soon as it appears: acknowledge / dispute / resolve."""

    def __init__(self, tg, file_name: str, action: str):
        super().__init__(daemon=True)
        self.tg, self.file_name, self.action = tg, file_name, action
        self.item_id = None
        self.error = None

    def run(self):
        from trading_grid.hooks.trading_grid import TradingGridHook

        os.environ["AIRFLOW_CONN_TG_RETAILER"] = self.tg.airflow_conn_json(client="P-ACME")
        try:
            with TradingGridHook("tg_retailer") as portal:
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline and self.item_id is None:
                    for item in portal.list_items(category="catalog_sync", status="open"):
                        if item["metadata"].get("file_name") == self.file_name:
                            time.sleep(1.5)  # let the sensor defer first
                            if self.action == "acknowledge":
                                portal.acknowledge(item["id"], note="prices confirmed")
                            else:
                                portal.transition(item["id"], self.action, comment=f"{self.action} by the retailer test")
                            self.item_id = item["id"]
                            break
                    time.sleep(0.5)
        except Exception as exc:  # surfaced by the test
            self.error = exc


def db_state(url):
    from include.catalog import store
    from include.catalog import tables as t

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            prices = {s: float(p) for s, p in conn.execute(
                select(t.downstream_prices.c.sku, t.downstream_prices.c.price).where(t.downstream_prices.c.partner_key == "acme"))}
        return prices, store.history(engine, "acme")
    finally:
        engine.dispose()


def items_for(tg, file_name: str) -> list[dict]:
    from trading_grid.hooks.trading_grid import TradingGridHook

    os.environ["AIRFLOW_CONN_TG_CHECK"] = tg.airflow_conn_json()
    with TradingGridHook("tg_check") as hook:
        return [i for i in hook.list_items(category="catalog_sync", partner_id="P-ACME")
                if i["metadata"].get("file_name") == file_name]


BASE = [("A-1", "10.00", "EUR", "2026-12-01"), ("B-2", "4.00", "EUR", "2026-12-01"), ("C-3", "7.25", "EUR", "2026-12-01")]


# The cycles build on each other (pytest runs them in file order); each dag.test run takes 1-2 min
# on the shared 2 cores, so each step has its own timeout.
STEP = pytest.mark.timeout(900)


@STEP
def test_1_clean_cycle_and_a_rerun_without_duplicates(airflow_env, sshd_server, tg_sandbox, project_db):
    env, sshd = airflow_env, sshd_server
    put_price_list(sshd, "price_list_2026-11-21.csv", BASE, "2026-11-21T09:00:00+00:00")
    retailer = Retailer(tg_sandbox, "price_list_2026-11-21.csv", "acknowledge")
    retailer.start()
    first = run_cycle(env, "2026-11-22T00:00:00+00:00")
    retailer.join(timeout=10)
    assert retailer.error is None and retailer.item_id
    assert first["state"].endswith("success"), first["output"][-5000:]
    assert first["interval"] == ["2026-11-21T00:00:00+00:00", "2026-11-22T00:00:00+00:00"]
    assert first["tasks"]["confirm_and_load.load[0]"].endswith("success")
    assert first["tasks"]["sync_partner.post_items[0]"].endswith("success")  # the diff went out through the operator
    assert "running trigger in line" in first["output"]  # the ack sensor really deferred
    prices, history = db_state(project_db)
    assert prices == {"A-1": 10.0, "B-2": 4.0, "C-3": 7.25}
    assert [(v["file_name"], v["status"]) for v in history] == [("price_list_2026-11-21.csv", "loaded")]
    assert not sshd.local_path(f"{INBOUND}/price_list_2026-11-21.csv").exists()  # archived
    assert list(sshd.local_path("/partners/acme/archive/catalog").glob("price_list_2026-11-21.csv.*"))

    rerun = run_cycle(env, "2026-11-22T00:00:00+00:00")
    assert rerun["state"].endswith("success"), rerun["output"][-5000:]
    # The rerun finds the interval's version again, sees it loaded: nothing to post, wait for or load.
    received = rerun["xcoms"]["sync_partner.receive[0]"]
    assert {k: received[k] for k in ("partner_key", "version_ids")} == {"partner_key": "acme", "version_ids": [history[0]["id"]]}
    assert rerun["xcoms"]["sync_partner.record_posts[0]"]["waits"] == [] and rerun["xcoms"]["versions_to_confirm[-1]"] == []
    assert rerun["xcoms"]["sync_partner.post_items[0]"] == []  # nothing to post
    assert rerun["tasks"].get("confirm_and_load.load[-1]", "skipped").endswith("skipped"), rerun["tasks"]
    assert len(items_for(tg_sandbox, "price_list_2026-11-21.csv")) == 1
    _, history = db_state(project_db)
    assert [e["event"] for e in history[0]["events"]].count("loaded") == 1



@STEP
def test_2_price_jump_disputed_is_not_loaded(airflow_env, sshd_server, tg_sandbox, project_db):
    env, sshd = airflow_env, sshd_server
    jump = [("A-1", "25.00", "EUR", "2026-12-01"), ("B-2", "4.00", "EUR", "2026-12-01"), ("C-3", "7.25", "EUR", "2026-12-01")]
    put_price_list(sshd, "price_list_2026-11-22.csv", jump, "2026-11-22T09:00:00+00:00")
    retailer = Retailer(tg_sandbox, "price_list_2026-11-22.csv", "disputed")
    retailer.start()
    disputed = run_cycle(env, "2026-11-23T00:00:00+00:00")
    retailer.join(timeout=10)
    assert disputed["state"].endswith("success"), disputed["output"][-5000:]
    assert disputed["tasks"]["confirm_and_load.load[0]"].endswith("skipped")
    (item,) = items_for(tg_sandbox, "price_list_2026-11-22.csv")
    assert "price changes above threshold" in item["title"] and "| A\\-1 |" not in item["body"]
    assert "+150.00%" in item["body"]
    prices, _ = db_state(project_db)
    assert prices["A-1"] == 10.0  # the disputed price was not loaded



FIXED = [("A-1", "10.50", "EUR", "2026-12-01"), ("B-2", "4.00", "EUR", "2026-12-01"), ("C-3", "7.25", "EUR", "2026-12-01")]


@STEP
def test_3_corrected_file_resolves_the_dispute(airflow_env, sshd_server, tg_sandbox, project_db):
    env, sshd = airflow_env, sshd_server
    fixed = [("A-1", "10.50", "EUR", "2026-12-01"), ("B-2", "4.00", "EUR", "2026-12-01"), ("C-3", "7.25", "EUR", "2026-12-01")]
    put_price_list(sshd, "price_list_2026-11-23_corrected.csv", fixed, "2026-11-23T08:00:00+00:00")
    retailer = Retailer(tg_sandbox, "price_list_2026-11-23_corrected.csv", "acknowledge")
    retailer.start()
    corrected = run_cycle(env, "2026-11-24T00:00:00+00:00")
    retailer.join(timeout=10)
    assert corrected["state"].endswith("success"), corrected["output"][-5000:]
    (old,) = items_for(tg_sandbox, "price_list_2026-11-22.csv")
    assert old["status"] == "resolved" and old["title"].startswith("[Superseded]")
    prices, history = db_state(project_db)
    assert prices == {"A-1": 10.5, "B-2": 4.0, "C-3": 7.25}
    assert [(v["file_name"], v["status"], v["decided_status"]) for v in history] == [
        ("price_list_2026-11-21.csv", "loaded", "acknowledged"),
        ("price_list_2026-11-22.csv", "superseded", "disputed"),
        ("price_list_2026-11-23_corrected.csv", "loaded", "acknowledged"),
    ]



@STEP
def test_4_missed_cycles_run_oldest_first_take_their_own_file_once(airflow_env, sshd_server, tg_sandbox, project_db):
    env, sshd = airflow_env, sshd_server
    fixed = FIXED
    # File mtimes must be in the past (readiness wants files old enough): the cycles of 11-24 and 11-25.
    put_price_list(sshd, "price_list_2026-11-24.csv", [*fixed, ("D-4", "1.00", "EUR", "2026-12-01")], "2026-11-24T07:00:00+00:00")
    put_price_list(sshd, "price_list_2026-11-25.csv", [*fixed, ("E-5", "2.00", "EUR", "2026-12-01")], "2026-11-25T07:00:00+00:00")
    for name, logical in (("price_list_2026-11-24.csv", "2026-11-25T00:00:00+00:00"),
                          ("price_list_2026-11-25.csv", "2026-11-26T00:00:00+00:00")):
        retailer = Retailer(tg_sandbox, name, "acknowledge")
        retailer.start()
        result = run_cycle(env, logical)
        retailer.join(timeout=10)
        assert result["state"].endswith("success"), result["output"][-5000:]
        assert len(result["xcoms"]["sync_partner.receive[0]"]["version_ids"]) == 1, result["output"][-8000:]
    prices, history = db_state(project_db)
    by_name = {v["file_name"]: v for v in history}
    assert by_name["price_list_2026-11-24.csv"]["interval_start"].isoformat() == "2026-11-24T00:00:00+00:00"
    assert by_name["price_list_2026-11-25.csv"]["interval_start"].isoformat() == "2026-11-25T00:00:00+00:00"
    assert by_name["price_list_2026-11-25.csv"]["status"] == "loaded"
    assert set(prices) == {"A-1", "B-2", "C-3", "E-5"}  # the newest accepted version is downstream

    # The audit trail, as the CLI prints it.
    out = subprocess.run([sys.executable, "-m", "include.catalog.history", "--partner", "acme", "--db", project_db],
                         env=env, capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("status LOADED") == 4 and "status SUPERSEDED" in out.stdout
    assert "disputed by acme-portal" in out.stdout
