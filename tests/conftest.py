"""Shared pytest configuration.

Fixtures for the real services live in tests/support/ as pytest plugins, one module per service,
so each can be owned and evolved on its own:

- tests.support.sshd          OpenSSH sshd on a loopback port (``sshd_server``)
- tests.support.tg_sandbox    the Trading Grid sandbox over HTTP (``tg_sandbox``)
- tests.support.postgres      a throw-away PostgreSQL database (``pg_url``)
- tests.support.airflow_stack Airflow's real scheduler, dag-processor, triggerer and api-server
- tests.support.smtp          a real SMTP server that keeps what it receives (``smtp_inbox``)
"""
import os

# Airflow reads its config at import time: keep every test run away from ~/airflow and examples.
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")

pytest_plugins = [
    "tests.support.postgres",
    "tests.support.sshd",
    "tests.support.tg_sandbox",
    "tests.support.airflow_stack",
    "tests.support.smtp",
]
