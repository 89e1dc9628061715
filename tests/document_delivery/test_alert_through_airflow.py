"""A task failing inside Airflow's own task runner (``dag.test()``) fires the failure callback, and the
alert mail reaches a real SMTP server (aiosmtpd) — scrubbed of the secrets in the exception."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PROBE_DAG = textwrap.dedent('''
    from datetime import datetime
    from airflow.sdk import dag, task
    from include.alerts import task_failure_alert

    @dag(schedule=None, start_date=datetime(2026, 1, 1), catchup=False, tags=["test"], doc_md="alert probe",
         default_args={"owner": "test", "retries": 0, "on_failure_callback": task_failure_alert})
    def failing_alert_probe():
        @task
        def fetch_partner_files():
            raise ConnectionError("sftp://bob:pw-Secret-123@10.0.0.1 refused; token=tok-Secret-456")
        fetch_partner_files()

    probe = failing_alert_probe()

    if __name__ == "__main__":
        print("RUN_STATE", probe.test().state)
''')


@pytest.mark.slow
def test_task_failure_in_airflow_mails_the_alert(tmp_path, smtp_inbox):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "failing_alert_probe.py").write_text(PROBE_DAG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins")]),
        "AIRFLOW_HOME": str(tmp_path / "home"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'home' / 'airflow.db'}",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_inbox.port),
        "ALERT_EMAIL_TO": "oncall@example.com",
    })
    (tmp_path / "home").mkdir()
    migrate = subprocess.run(["airflow", "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stderr[-2000:]

    run = subprocess.run([sys.executable, str(dags / "failing_alert_probe.py")], env=env, capture_output=True,
                         text=True, timeout=400, cwd=tmp_path)
    received = smtp_inbox.wait_for(1)
    assert "RUN_STATE failed" in run.stdout, (run.stdout[-2000:], run.stderr[-2000:])
    assert len(received) == 1, run.stdout[-3000:]
    mail = received[0].content.decode("utf-8", "replace")
    assert received[0].rcpt_tos == ["oncall@example.com"]
    assert "Subject: [Airflow] failing_alert_probe.fetch_partner_files failed" in mail
    assert "ConnectionError" in mail and "10.0.0.1 refused" in mail
    assert "pw-Secret-123" not in mail and "tok-Secret-456" not in mail
    # Our alert's own log line is scrubbed too (Airflow's traceback of the task is Airflow's business).
    alert_lines = [line for line in (run.stdout + run.stderr).splitlines() if "Task failed: [Airflow]" in line]
    assert alert_lines and not any("pw-Secret-123" in line or "tok-Secret-456" in line for line in alert_lines)
