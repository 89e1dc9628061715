"""Fixtures for the Trading Grid integration tests: connections to the real sandbox over loopback HTTP.

The hook reads its connection the way Airflow does, from ``AIRFLOW_CONN_<ID>`` (JSON); the sandbox
fixture (tests/support/tg_sandbox.py) renders that JSON for the enterprise client or a partner client.
"""
from __future__ import annotations

import json
import re
import uuid

import pytest

from trading_grid.hooks.trading_grid import RetryPolicy, TradingGridHook

# Small waits so fault tests stay fast; many attempts so 30 % failures never exhaust them.
FAST_RETRIES = RetryPolicy(max_attempts=15, backoff_base=0.01, backoff_max=0.2, max_retry_time=60.0)
TOKEN_RE = re.compile(r"tg1\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+")


def conn_env_name(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


@pytest.fixture
def tg(tg_sandbox, monkeypatch):
    """The session sandbox, without faults, with ``trading_grid_default`` pointing at it as enterprise."""
    tg_sandbox.clear_faults()
    monkeypatch.setenv(conn_env_name("trading_grid_default"), tg_sandbox.airflow_conn_json())
    yield tg_sandbox
    tg_sandbox.clear_faults()


@pytest.fixture
def hook(tg):
    with TradingGridHook(retry_policy=FAST_RETRIES) as h:
        yield h


@pytest.fixture
def partner_hook_factory(tg, monkeypatch):
    """``factory(partner_id)`` → a hook on a connection bound to that partner's client."""
    hooks = []

    def factory(partner_id: str) -> TradingGridHook:
        conn_id = f"tg_partner_{partner_id.replace('-', '_').lower()}"
        monkeypatch.setenv(conn_env_name(conn_id), tg.airflow_conn_json(client=tg.partners[partner_id]))
        h = TradingGridHook(conn_id, retry_policy=FAST_RETRIES)
        hooks.append(h)
        return h

    yield factory
    for h in hooks:
        h.close()


def make_payload(partner_id: str = "P-ACME", *, subject: str | None = None, reason: str = "notify", **over) -> dict:
    """A valid item body with a fresh, properly derived external_ref."""
    from trading_grid.refs import external_ref

    subject = subject or f"test-{uuid.uuid4().hex[:12]}"
    payload = {
        "external_ref": external_ref("document_delivery", partner_id, subject, reason),
        "partner_id": partner_id,
        "type": "notification",
        "category": "document_delivery",
        "title": f"Delivery {subject}",
        "body": "A file was delivered.",
        "severity": "info",
        "requires_ack": True,
        "metadata": {"file_name": f"{subject}.csv", "run_id": "manual__1"},
    }
    payload.update(over)
    return payload


def connection_secret(tg, client=None) -> str:
    return json.loads(tg.airflow_conn_json(client=client))["password"]
