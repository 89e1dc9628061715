"""document_delivery through Airflow's real scheduler, dag-processor, triggerer and api-server.

Two partners: ``acme`` gets a good and a bad invoice (and a temporary upload that must be left
alone), ``globex`` gets nothing — its sensor waits deferred in the triggerer and is skipped when the
wait ends, which must not fail the run. The run is triggered through the REST API; afterwards the
TG sandbox (over its API) and the SFTP folders show what happened.
"""
from __future__ import annotations

import re
import time

import pytest
import requests
import yaml

from tests.data.bad_inputs import csv_text, make_valid_file, valid_rows
from tests.support.postgres import create_database, drop_database
from tests.support.tg_sandbox import start_sandbox

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

QUIET_WAIT_SECONDS = 15


def _registry() -> dict:
    def partner(key: str, tg_id: str, patterns: list[str]) -> dict:
        return {
            "key": key, "name": key.title(), "tg_partner_id": tg_id, "sftp_conn_id": "sftp_default",
            "folders": {role: f"/partners/{key}/{role}" for role in ("inbound", "outbound", "archive", "quarantine")},
            "document_types": [{"type": "invoice", "patterns": patterns}],
            "readiness": {"min_age_seconds": 0, "stable_polls": 2, "marker": "none"},
        }

    return {"partners": [partner("acme", "P-ACME", ["INV-*.csv"]), partner("globex", "P-GLOBEX", ["*_invoice.csv"])]}


TOKEN = re.compile(r"tg1\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")  # a TG bearer token (not a tg1: external ref)


def _assert_no_secrets(log_files, sandbox, sshd, token: str) -> None:
    key_lines = [line for line in sshd.private_key_path.read_text().splitlines() if line and "PRIVATE KEY" not in line]
    secrets = {sandbox.enterprise[1], sandbox.admin_token, token, *(s for _, s in sandbox.partners.values()),
               *key_lines}
    files = [*log_files, sandbox.workdir / "tg-sandbox.log"]
    scanned = 0
    for path in files:
        text = path.read_text(errors="replace")
        scanned += len(text)
        leaked = [s[:6] + "…" for s in secrets if s and s in text]
        assert not leaked, f"{path}: secrets {leaked} in the log"
        assert not TOKEN.search(text), f"{path}: a bearer token in the log"
    assert len(files) > 10 and scanned > 10_000, (len(files), scanned)  # the logs were there to scan


def test_document_delivery_through_the_scheduler(tmp_path, sshd_server, clean_partner_folders, airflow_stack_factory):
    exchange_db = create_database("dd_e2e")
    registry = tmp_path / "partners.yaml"
    registry.write_text(yaml.safe_dump(_registry()))
    inbound = sshd_server.local_path("/partners/acme/inbound")
    good = make_valid_file(tmp_path / "src", "invoice", rows=7, name="good.csv")
    (inbound / "INV-E2E-1.csv").write_bytes(good.read_bytes())
    header, rows = valid_rows("invoice", 6, seed=11)
    rows[2][header.index("amount")] = "-1.00"
    (inbound / "INV-E2E-2.csv").write_text(csv_text(header, rows))
    (inbound / "INV-E2E-3.csv.part").write_text("still uploading")
    # A sub-folder (catalog sync's) is not a delivery: the quiet partner must stay quiet.
    sshd_server.local_path("/partners/globex/inbound/catalog").mkdir(exist_ok=True)

    try:
        with start_sandbox(tmp_path / "sandbox") as sandbox:
            stack = airflow_stack_factory({
                "AIRFLOW_CONN_SFTP_DEFAULT": sshd_server.airflow_conn_json(),
                "AIRFLOW_CONN_TRADING_GRID_DEFAULT": sandbox.airflow_conn_json(),
                "EXCHANGE_DB_URL": exchange_db,
                "PARTNER_REGISTRY": str(registry),
                "DOCUMENT_DELIVERY_WAIT_SECONDS": str(QUIET_WAIT_SECONDS),
                "EXCHANGE_STAGING_DIR": str(tmp_path / "staging"),
            })
            stack.wait_for_dag("document_delivery")
            assert stack.import_errors() == []
            run_id = stack.trigger_dag("document_delivery")

            seen: dict[tuple[str, int], set[str]] = {}

            def record(task_instances: list[dict]) -> None:
                for ti in task_instances:
                    seen.setdefault((ti["task_id"], ti.get("map_index", -1)), set()).add(ti["state"] or "none")

            run = stack.wait_for_run("document_delivery", run_id, timeout=300, on_poll=record)
            final = {(t["task_id"], t["map_index"]): t["state"] for t in stack.task_instances("document_delivery", run_id)}
            assert run["state"] == "success", (final, stack.tail_logs())

            # Mapped by partner: 2 partners → 2 instances of each task of the group, whatever the files.
            assert final[("deliver.record_posts", 0)] == "success"
            assert final[("deliver.wait_for_files", 1)] == "skipped", "the quiet partner is skipped, not failed"
            assert final[("deliver.record_posts", 1)] == "skipped"
            assert sum(1 for task_id, _ in final if task_id == "deliver.intake") == 2
            # The sensor waited in the triggerer: seen deferred through the API, and the trigger ran there.
            assert "deferred" in seen[("deliver.wait_for_files", 1)], seen
            # The triggerer writes each trigger's log next to the task's log: it ran there and polled SFTP.
            trigger_logs = list(stack.home.glob(
                "logs/dag_id=document_delivery/run_id=*/task_id=deliver.wait_for_files/map_index=1/*trigger*"))
            assert trigger_logs, "no trigger log for the quiet partner's sensor"
            trigger_text = "".join(p.read_text(errors="replace") for p in trigger_logs)
            assert "starting" in trigger_text and "Connected to SSH server" in trigger_text

            token = sandbox.token(*sandbox.enterprise)
            items = requests.get(sandbox.items_url(), params={"limit": 200}, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"}).json()["items"]
            by_file = {(i["category"], i["metadata"]["file_name"]): i for i in items}
            assert len(items) == 2, items
            note = by_file[("document_delivery", "INV-E2E-1.csv")]
            assert note["requires_ack"] is True and note["partner_id"] == "P-ACME"
            assert note["metadata"]["run_id"] == run_id and note["metadata"]["rows"] == 7
            case = by_file[("validation_failure", "INV-E2E-2.csv")]
            assert case["type"] == "case" and case["metadata"]["reason_code"] == "expectations_failed"

            archive = sorted(p.name for p in sshd_server.local_path("/partners/acme/archive").iterdir())
            quarantine = sorted(p.name for p in sshd_server.local_path("/partners/acme/quarantine").iterdir())
            assert [n.split(".csv.")[0] for n in archive] == ["INV-E2E-1"]
            assert [n.split(".csv.")[0] for n in quarantine] == ["INV-E2E-2"]
            assert sorted(p.name for p in inbound.iterdir()) == ["INV-E2E-3.csv.part"]

            # The same interval again (a manual rerun) posts nothing new.
            rerun = stack.trigger_dag("document_delivery")
            assert stack.wait_for_run("document_delivery", rerun, timeout=300)["state"] == "success"
            again = requests.get(sandbox.items_url(), params={"limit": 200}, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"}).json()["items"]
            assert sorted(i["id"] for i in again) == sorted(i["id"] for i in items)

            # R5: no secret or token of the run in any task, component or trigger log, nor in the sandbox's.
            _assert_no_secrets(stack.home.rglob("*.log"), sandbox, sshd_server, token)
    finally:
        drop_database(exchange_db)
