"""DAG integrity: every file in dags/ imports cleanly and every DAG declares what operations needs.

Parsed the way the dag-processor does it (DagBag over the repository's dags/ folder, examples off via
AIRFLOW__CORE__LOAD_EXAMPLES=False — ``DagBag(include_examples=False)`` raises TypeError in 3.3).
The heavy-import check runs in a fresh interpreter, because this test process may already hold
pandas & co. from other tests.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO / "dags"
HEAVY_MODULES = ("pandas", "great_expectations", "paramiko", "asyncssh")
DAG_FILES = sorted(p for p in DAGS_FOLDER.glob("*.py") if not p.name.startswith("_"))


@pytest.fixture(scope="module")
def dagbag():
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))


def test_dags_folder_has_dag_files():
    assert DAG_FILES, "no DAG files in dags/"


def test_every_dag_file_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}, "\n".join(f"{k}: {v}" for k, v in dagbag.import_errors.items())
    files_with_dags = {Path(dag.fileloc).name for dag in dagbag.dags.values()}
    assert {p.name for p in DAG_FILES} <= files_with_dags, "a file in dags/ defines no DAG"


def test_document_delivery_is_there(dagbag):
    assert "document_delivery" in dagbag.dags


def _dags(dagbag):
    return sorted(dagbag.dags.values(), key=lambda d: d.dag_id)


def test_every_dag_declares_owner_tags_doc(dagbag):
    for dag in _dags(dagbag):
        assert dag.tags, f"{dag.dag_id}: no tags"
        assert dag.doc_md and len(dag.doc_md.strip()) > 40, f"{dag.dag_id}: no doc_md"
        for task in dag.tasks:
            assert task.owner and task.owner.lower() != "airflow", f"{dag.dag_id}.{task.task_id}: default owner"


def test_every_task_retries_and_alerts_on_failure(dagbag):
    from include.alerts import task_failure_alert

    for dag in _dags(dagbag):
        for task in dag.tasks:
            where = f"{dag.dag_id}.{task.task_id}"
            assert task.retries and task.retries >= 1, f"{where}: no retries"
            callbacks = task.on_failure_callback
            callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
            assert any(cb is not None for cb in callbacks), f"{where}: no on_failure_callback"
            if dag.dag_id == "document_delivery":
                assert task_failure_alert in callbacks, f"{where}: task_failure_alert missing"


def test_document_delivery_shape(dagbag):
    """Mapped by partner (a task group), deferrable sensor that skips when nothing came, no catchup."""
    from airflow.sdk import CronTriggerTimetable

    dag = dagbag.dags["document_delivery"]
    assert dag.catchup is False
    assert isinstance(dag.timetable, CronTriggerTimetable)
    assert dag.max_active_runs == 1
    sensor = dag.get_task("deliver.wait_for_files")
    assert sensor.soft_fail is True
    assert 0 < sensor.timeout < 15 * 60, "the wait must end before the next 15-minute run"
    # The async SFTP listing includes '.' and '..': a pattern matching them fires on an empty folder.
    from fnmatch import fnmatch

    assert not fnmatch(".", sensor.file_pattern) and not fnmatch("..", sensor.file_pattern)
    assert fnmatch("INV-1.csv", sensor.file_pattern)
    fetch = dag.get_task("deliver.intake")
    # One mapped group per partner: tasks inside are expanded with the group, never per file.
    from airflow.sdk.definitions.taskgroup import MappedTaskGroup

    assert isinstance(fetch.task_group, MappedTaskGroup)
    assert {t.task_id for t in dag.tasks} == {
        "enabled_partners",
        "deliver.wait_for_files",
        "deliver.intake",
        "deliver.plan_posts",
        "deliver.post_items",
        "deliver.record_posts",
        "sync_partner_feedback",
    }
    # Posts go through the plugin's operator (its extra link shows what it posted), not a hook in a task.
    from trading_grid.operators.bulk import TradingGridBulkPostOperator

    post = dag.get_task("deliver.post_items")
    assert isinstance(post, TradingGridBulkPostOperator)
    assert [link.name for link in post.operator_extra_links] == ["Trading Grid items"]


def test_document_delivery_dag_file_imports_no_use_case_module_at_parse_time():
    """The sensor comes from the kit (include.exchange.sensor), not from the use case's package."""
    dag_file = REPO / "dags" / "document_delivery.py"
    code = f"""
import json, os, sys
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder={str(dag_file)!r})
print(json.dumps({{"errors": {{k: str(v) for k, v in bag.import_errors.items()}},
                  "use_case": sorted(m for m in sys.modules if m.startswith("include.document_delivery"))}}))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins")])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["errors"] == {} and result["use_case"] == []


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_parsing_imports_no_heavy_module(dag_file):
    code = f"""
import json, os, sys
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder={str(dag_file)!r})
print(json.dumps({{"errors": {{k: str(v) for k, v in bag.import_errors.items()}},
                  "dags": sorted(bag.dags),
                  "heavy": [m for m in {list(HEAVY_MODULES)!r} if m in sys.modules]}}))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins")])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}
    assert result["dags"], f"{dag_file.name} defines no DAG"
    assert result["heavy"] == [], f"parsing {dag_file.name} imported {result['heavy']}"
