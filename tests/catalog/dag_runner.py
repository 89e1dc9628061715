"""Run the catalog_sync DAG once with ``dag.test()`` for a logical date; print the outcome as JSON.

    python tests/catalog/dag_runner.py 2026-11-24T00:00:00+00:00

Used by test_dag_cycles.py in a subprocess (dag.test needs its own AIRFLOW_HOME and metadata DB).
"""
import json
import sys
from datetime import datetime

if __name__ == "__main__":
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    logical_date = datetime.fromisoformat(sys.argv[1])
    dag = DagBag(dag_folder=sys.argv[2] if len(sys.argv) > 2 else None).dags["catalog_sync"]
    run = dag.test(logical_date=logical_date)
    with create_session() as session:
        tis = session.query(TaskInstance).filter_by(dag_id=dag.dag_id, run_id=run.run_id).all()
        states = {f"{ti.task_id}[{ti.map_index}]": str(ti.state) for ti in tis}
        rows = session.query(XComModel).filter_by(dag_id=dag.dag_id, run_id=run.run_id, key="return_value").all()
        xcoms = {f"{r.task_id}[{r.map_index}]": XComModel.deserialize_value(r) for r in rows}
    print("RESULT=" + json.dumps({
        "state": str(run.state), "run_id": run.run_id,
        "interval": [run.data_interval_start.isoformat(), run.data_interval_end.isoformat()],
        "tasks": states, "xcoms": xcoms,
    }, default=str))
