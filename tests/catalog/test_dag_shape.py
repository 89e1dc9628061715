"""The catalog_sync DAG file as the dag-processor parses it: schedule, catchup, callbacks, gate."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dags():
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / "catalog_sync.py"))
    assert bag.import_errors == {}
    return bag.dags


def test_one_dag_per_cycle_with_catchup_over_data_intervals(dags):
    from airflow.sdk import CronDataIntervalTimetable

    # include/config/partners.yaml: acme daily (the default DAG), initech "0 6 * * *" (its own DAG).
    assert set(dags) == {"catalog_sync", "catalog_sync__initech"}
    for dag_id, cron in (("catalog_sync", "0 0 * * *"), ("catalog_sync__initech", "0 6 * * *")):
        dag = dags[dag_id]
        assert isinstance(dag.timetable, CronDataIntervalTimetable) and dag.timetable.expression == cron
        assert dag.catchup is True
        assert "catalog_sync" in dag.tags and len(dag.doc_md) > 200


def test_tasks_retry_alert_and_the_load_is_gated(dags):
    from include.alerts import task_failure_alert
    from include.catalog.ack_sensor import CatalogAckSensor

    dag = dags["catalog_sync"]
    for task in dag.tasks:
        callbacks = task.on_failure_callback if isinstance(task.on_failure_callback, list) else [task.on_failure_callback]
        assert task_failure_alert in callbacks and task.retries >= 1 and task.owner == "partner-exchange"
    sensor = dag.get_task("confirm_and_load.await_acknowledgement")
    assert isinstance(sensor, CatalogAckSensor) and sensor.deferrable and sensor.on_timeout == "escalate"
    assert set(sensor.statuses) == {"acknowledged", "resolved", "closed", "disputed"}
    assert "confirm_and_load.await_acknowledgement" in dag.get_task("confirm_and_load.load").upstream_task_ids
    assert dag.get_task("sync_partner.receive").max_active_tis_per_dag == 1


def test_every_post_goes_through_the_bulk_post_operator(dags):
    """plan -> TradingGridBulkPostOperator -> record per partner: the only TG writer is the operator."""
    from trading_grid.operators.bulk import TradingGridBulkPostOperator

    dag = dags["catalog_sync"]
    posting = [task.task_id for task in dag.tasks if isinstance(task, TradingGridBulkPostOperator)]
    assert posting == ["sync_partner.post_items"]
    assert dag.get_task("sync_partner.plan_posts").task_id in dag.get_task("sync_partner.post_items").upstream_task_ids
    assert "sync_partner.post_items" in dag.get_task("sync_partner.record_posts").upstream_task_ids
    assert "sync_partner.receive" in dag.get_task("sync_partner.plan_posts").upstream_task_ids


def test_versions_to_confirm_takes_one_partner_unwrapped_or_several_as_a_list():
    """Airflow 3.3 hands a mapped group's single instance value unwrapped to a task outside it."""
    from include.catalog.runtime import versions_to_confirm

    a, b, c = ({"version_id": n, "item_id": f"itm_{n}", "deadline_hours": 48} for n in range(3))
    assert versions_to_confirm({"partner_key": "acme", "waits": [a, b]}) == [a, b]
    assert versions_to_confirm([{"partner_key": "acme", "waits": [a]}, {"partner_key": "initech", "waits": [b, c]}]) == [a, b, c]
    assert versions_to_confirm([]) == []
