"""The operators and the deferrable sensor executed for real: a tiny DAG run with ``dag.test()``.

``dag.test()`` runs every task through the task SDK (templating, XCom, operator extra links pushed by
the task runner) and runs a deferred task's trigger inline, so the sensor → trigger → sensor round
trip, including the trigger's serialize/deserialize, happens here. It needs an Airflow metadata DB:
a temporary AIRFLOW_HOME with SQLite, migrated once per module. The DAG runs twice to prove a rerun
converges: same item, ``created=False``, no second comment or attachment.

All output of both runs (stdout, stderr, log files) is then searched for the client secret and for
anything shaped like a TG token.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.trading_grid.conftest import FAST_RETRIES, TOKEN_RE
from trading_grid.hooks.trading_grid import TradingGridHook
from trading_grid.refs import external_ref

REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

DAG_FILE = textwrap.dedent(
    '''
    """Test DAG: create → comment → attach → transition → wait (deferrable)."""
    import json
    import os

    from airflow.sdk import DAG
    from trading_grid.operators.trading_grid import (
        TradingGridAttachFileOperator,
        TradingGridCommentOperator,
        TradingGridCreateItemOperator,
        TradingGridTransitionOperator,
    )
    from trading_grid.sensors.trading_grid import TradingGridItemSensor

    ITEM_ID = "{{ ti.xcom_pull(task_ids='create_item')['item_id'] }}"

    with DAG("tg_operators_test", schedule=None, params={"subject": os.environ.get("TG_TEST_SUBJECT", "x")}) as dag:
        create = TradingGridCreateItemOperator(
            task_id="create_item",
            partner_id="P-ACME",
            category="document_delivery",
            title="Delivery {{ params.subject }}",
            body="Delivered in run {{ run_id }}",
            subject="{{ params.subject }}",
            requires_ack=True,
            metadata={"file_name": "{{ params.subject }}.csv"},
        )
        comment = TradingGridCommentOperator(task_id="comment", item_id=ITEM_ID, body="Checks passed for {{ params.subject }}.")
        attach = TradingGridAttachFileOperator(task_id="attach", item_id=ITEM_ID, path=os.environ["TG_TEST_FILE"])
        start = TradingGridTransitionOperator(task_id="start_work", item_id=ITEM_ID, to_status="in_progress")
        # Waits (deferred; dag.test runs the trigger inline) until the partner acknowledges.
        wait = TradingGridItemSensor(task_id="wait", item_id=ITEM_ID, statuses=["resolved"], poke_interval=1, timeout=120)
        create >> comment >> attach >> start >> wait

    if __name__ == "__main__":
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        run = dag.test()
        with create_session() as session:
            rows = session.query(XComModel).filter_by(dag_id=dag.dag_id, run_id=run.run_id).all()
            xcoms = {f"{r.task_id}:{r.key}": XComModel.deserialize_value(r) for r in rows}
        print("RESULT=" + json.dumps({"state": str(run.state), "xcoms": xcoms}, default=str))
    '''
)


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow_home")
    (home / "dags").mkdir()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "plugins")]),
    }
    subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        env=env, check=True, capture_output=True, timeout=300,
    )
    (home / "dags" / "tg_operators_test.py").write_text(DAG_FILE)
    return home, env


def _run_dag(airflow_home, conn_json: str, subject: str, attachment: Path) -> tuple[dict, str]:
    home, env = airflow_home
    env = {
        **env,
        "AIRFLOW_CONN_TRADING_GRID_DEFAULT": conn_json,
        "TG_TEST_SUBJECT": subject,
        "TG_TEST_FILE": str(attachment),
    }
    proc = subprocess.run(
        [sys.executable, str(home / "dags" / "tg_operators_test.py")],
        env=env, capture_output=True, text=True, timeout=300, cwd=str(home),
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT="))
    result = json.loads(line.removeprefix("RESULT="))
    assert result["state"].endswith("success"), output[-6000:]
    return result, output


def _partner_acknowledges_once_work_started(tg, subject: str) -> None:
    """Plays the partner: when the DAG has moved the item to in_progress, acknowledge it (as P-ACME)."""
    os.environ["AIRFLOW_CONN_TG_DAGTEST_PARTNER"] = tg.airflow_conn_json(client="P-ACME")
    ref = external_ref("document_delivery", "P-ACME", subject, "notify")
    try:
        with TradingGridHook("tg_dagtest_partner", retry_policy=FAST_RETRIES) as partner:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                item = partner.find_by_external_ref(ref)
                if item and item["status"] == "in_progress":
                    time.sleep(2)  # let the sensor defer first
                    partner.acknowledge(item["id"], note="seen by the partner")
                    return
                time.sleep(0.5)
    finally:
        del os.environ["AIRFLOW_CONN_TG_DAGTEST_PARTNER"]


def test_dag_runs_operators_for_real_and_a_rerun_converges(tg, airflow_home, tmp_path, monkeypatch):
    subject = f"dagtest-{uuid.uuid4().hex[:10]}"
    attachment = tmp_path / f"{subject}.csv"
    attachment.write_text("sku;qty\nA-1;5\n")
    conn_json = tg.airflow_conn_json()
    # Faults during the run: the task logs then contain retries too (searched for secrets below).
    tg.set_faults(error_rate=0.2, rate_limit_rate=0.1, retry_after_seconds=0, seed=3)

    partner = threading.Thread(target=_partner_acknowledges_once_work_started, args=(tg, subject), daemon=True)
    partner.start()
    first, out1 = _run_dag(airflow_home, conn_json, subject, attachment)
    partner.join(timeout=5)
    assert "running trigger in line" in out1  # the sensor really deferred, the trigger really ran
    second, out2 = _run_dag(airflow_home, conn_json, subject, attachment)
    tg.clear_faults()

    for run in (first, second):
        assert run["state"].endswith("success"), run
    created1 = first["xcoms"]["create_item:return_value"]
    created2 = second["xcoms"]["create_item:return_value"]
    assert created1["created"] is True and created2["created"] is False
    assert created1["item_id"] == created2["item_id"]
    item_id = created1["item_id"]
    url = f"{tg.base_url}/portal/items/{item_id}"
    assert created1["url"] == url
    # The extra link, as the task runner stored it for the UI.
    assert first["xcoms"]["create_item:_link_TradingGridItemLink"] == url
    assert first["xcoms"]["wait:_link_TradingGridItemLink"] == url
    assert first["xcoms"]["comment:return_value"]["created"] is True
    assert second["xcoms"]["comment:return_value"]["created"] is False
    assert first["xcoms"]["attach:return_value"]["created"] is True
    assert second["xcoms"]["attach:return_value"]["created"] is False
    assert second["xcoms"]["start_work:return_value"]["status"] == "in_progress"
    waited = first["xcoms"]["wait:return_value"]
    assert waited["status"] == "in_progress" and waited["acknowledged_by"] == tg.partners["P-ACME"][0]

    with TradingGridHook() as hook:
        item = hook.get_item(item_id)
        assert item["status"] == "in_progress" and item["metadata"]["dag_id"] == "tg_operators_test"
        assert [c["body"] for c in hook.list_comments(item_id)] == [f"Checks passed for {subject}."]
        assert len(hook.list_attachments(item_id)) == 1
        assert len(hook.list_items(external_ref=item["external_ref"])) == 1

    # No secret and no token anywhere in what the runs printed or logged.
    home, _ = airflow_home
    logs = out1 + out2 + "".join(p.read_text(errors="replace") for p in home.rglob("*.log"))
    assert "Trading Grid" in logs and "retrying in" in logs  # real task output, retries included
    assert tg.enterprise[1] not in logs
    assert not TOKEN_RE.search(logs), TOKEN_RE.search(logs)
