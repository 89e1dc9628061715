"""Failures and partner feedback: a lost SFTP session, the failure alert e-mail, disputes synced back."""
from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest

from include import alerts
from include import document_delivery as dd
from include.document_delivery.runtime import transfer_failure_callback
from tests.data.bad_inputs import make_valid_file
from tests.document_delivery.conftest import PARTNER, TG_PARTNER
from tests.support.sshd import start_sshd


def _failure_context(env, exc: BaseException, task_id: str = "deliver.intake") -> dict:
    """What Airflow hands a task's on_failure_callback (the parts our callbacks read)."""
    ti = SimpleNamespace(dag_id="document_delivery", task_id=task_id, run_id=env.ctx.run_id, map_index=0,
                         try_number=3, log_url="http://airflow.example/log")
    return {"task_instance": ti, "ti": ti, "dag": SimpleNamespace(dag_id="document_delivery"),
            "task": SimpleNamespace(task_id=task_id, op_kwargs={"partner_key": PARTNER}),
            "run_id": env.ctx.run_id, "exception": exc}


def test_lost_session_opens_a_transfer_failure_case_and_recovery_resolves_it(delivery_env, tmp_path, monkeypatch):
    env = delivery_env
    with start_sshd(tmp_path / "sshd2") as doomed:
        monkeypatch.setenv("AIRFLOW_CONN_SFTP_DEFAULT", doomed.airflow_conn_json())
        inbound = doomed.local_path(f"/partners/{PARTNER}/inbound")
        (inbound / "INV-5001.csv").write_bytes(
            make_valid_file(env.tmp / "src", "invoice", rows=3, name="s.csv").read_bytes())
        claimed = env.check_readiness()
        assert len(claimed) == 1
        doomed.process.terminate()  # the server goes away between readiness and transfer
        doomed.process.wait(timeout=10)
        with pytest.raises(dd.SessionLost) as lost:
            env.fetch_and_validate(claimed)

    # Airflow calls the task's failure callbacks after the last retry failed.
    transfer_failure_callback(_failure_context(env, lost.value))
    (case,) = env.items(category="transfer_failure")
    assert case["type"] == "case" and case["partner_id"] == TG_PARTNER and case["status"] == "open"
    assert "SessionLost" in case["body"] and "acme" in case["metadata"]["error"]
    transfer_failure_callback(_failure_context(env, lost.value))  # a second failing run: same case
    assert len(env.items(category="transfer_failure")) == 1

    # Back on the working server: the next delivery goes through and closes the session case.
    monkeypatch.setenv("AIRFLOW_CONN_SFTP_DEFAULT", env.sshd.airflow_conn_json())
    env.drop("INV-5002.csv", make_valid_file(env.tmp / "src", "invoice", rows=3, name="t.csv", seed=5))
    dd.run_partner_once(PARTNER, env.context("scheduled__after"))
    assert env.item(case["id"])["status"] == "resolved"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_failed_task_sends_an_alert_mail_without_secrets(delivery_env, smtp_inbox, monkeypatch):
    env = delivery_env
    monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("SMTP_PORT", str(smtp_inbox.port))
    monkeypatch.setenv("ALERT_EMAIL_TO", "ops@example.com, oncall@example.com")
    # A real failure: the partner's SFTP server refuses connections; its URL carries a password.
    closed = _free_port()
    monkeypatch.setenv("AIRFLOW_CONN_SFTP_DEFAULT",
                       f'{{"conn_type": "sftp", "host": "127.0.0.1", "port": {closed}, "login": "u", '
                       f'"password": "pw-Secret-123", "extra": {{"no_host_key_check": true}}}}')
    with pytest.raises(Exception) as failure:
        env.check_readiness(max_polls=1)
    exc = ConnectionError(f"{type(failure.value).__name__}: {failure.value} (while using "
                          f"sftp://u:pw-Secret-123@127.0.0.1:{closed}, password=pw-Secret-123)")
    alerts.task_failure_alert(_failure_context(env, exc, task_id="deliver.check_readiness"))
    received = smtp_inbox.wait_for(1)
    assert len(received) == 1
    mail = received[0]
    text = mail.content.decode("utf-8", "replace")
    # env recipients + the partner's contact marked for alerts (not its operations contact)
    assert sorted(mail.rcpt_tos) == ["acme-desk@example.com", "oncall@example.com", "ops@example.com"]
    assert "document_delivery.deliver.check_readiness[0] failed" in text
    assert env.ctx.run_id in text and "Unable to connect" in text
    assert "pw-Secret-123" not in text


def _engine():
    from include.db import get_engine

    return get_engine()


def _sync() -> dict:
    from trading_grid.hooks.trading_grid import TradingGridHook

    with TradingGridHook() as hook:
        return dd.sync_partner_feedback(_engine(), hook)


def test_partner_dispute_is_tracked_until_resolved(delivery_env):
    env = delivery_env
    env.drop("INV-6001.csv", make_valid_file(env.tmp / "src", "invoice", rows=3, name="p.csv"))
    dd.run_partner_once(PARTNER, env.ctx)
    (note,) = env.items(category="document_delivery")
    assert dd.open_disputes(_engine()) == []

    resp = env.as_partner("POST", f"/{note['id']}/transitions",
                          json={"to": "disputed", "comment": "Amounts differ from our ERP"})
    assert resp.status_code in (200, 201), resp.text
    synced = _sync()
    assert synced["status_changes"] == 1
    assert [d.item_id for d in dd.open_disputes(_engine())] == [note["id"]]
    assert synced["open_disputes"] == [note["id"]]

    resp = env.as_partner("POST", f"/{note['id']}/transitions", json={"to": "resolved", "comment": "Our mistake"})
    assert resp.status_code in (200, 201), resp.text
    synced = _sync()
    assert synced["open_disputes"] == [] and dd.open_disputes(_engine()) == []
    (row,) = env.tracked(partner_key=PARTNER)
    assert row["status"] == "resolved"
