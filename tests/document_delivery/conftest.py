"""Fixtures for the document_delivery orchestration tests: real sshd, real TG sandbox, real PostgreSQL.

Each test gets a fresh project database and a fresh sandbox (so refs and duplicates of one test
never meet another's), the session sshd with emptied partner folders, and a registry of one
partner (``acme``/``P-ACME``) whose invoice type matches any ``*.csv`` name (``PRODUCTS_*`` names are
product files) and whose readiness needs two stable polls and no minimum age (polls 0.2 s apart).
"""
from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from include.document_delivery import RunContext
from include.document_delivery.runtime import DAG_ID
from tests.support.postgres import create_database, drop_database
from tests.support.tg_sandbox import start_sandbox

PARTNER = "acme"
TG_PARTNER = "P-ACME"


def registry_data(partner_key: str = PARTNER, tg_partner_id: str = TG_PARTNER) -> dict:
    base = f"/partners/{partner_key}"
    return {"partners": [{
        "key": partner_key,
        "name": f"{partner_key.title()} Test Partner",
        "tg_partner_id": tg_partner_id,
        "sftp_conn_id": "sftp_default",
        "folders": {role: f"{base}/{role}" for role in ("inbound", "outbound", "archive", "quarantine")},
        "document_types": [
            # before the invoices' catch-all globs (the first match wins): the product corpus's files
            {"type": "product_file", "patterns": ["PRODUCTS_*.csv"], "format": "csv"},
            {"type": "product_sheet", "patterns": ["PRODUCTS_*.xlsx"], "suite": "product_file", "format": "xlsx"},
            {"type": "invoice", "patterns": ["*.csv", "*.csv."], "format": "csv"},
            {"type": "invoice_sheet", "patterns": ["*.xlsx"], "suite": "invoice", "format": "xlsx"},
        ],
        "readiness": {"min_age_seconds": 0, "stable_polls": 2, "marker": "none"},
        "contacts": [{"name": "Ops", "email": "ops@acme.example"},
                     {"name": "Our ACME desk", "email": "acme-desk@example.com", "role": "alerts"}],
    }]}


@dataclass
class DeliveryEnv:
    ctx: RunContext
    sshd: object
    sandbox: object
    tmp: Path

    @property
    def inbound(self) -> Path:
        return self.sshd.local_path(f"/partners/{PARTNER}/inbound")

    @property
    def archive(self) -> Path:
        return self.sshd.local_path(f"/partners/{PARTNER}/archive")

    @property
    def quarantine(self) -> Path:
        return self.sshd.local_path(f"/partners/{PARTNER}/quarantine")

    def drop(self, name: str | bytes, content: bytes | str | Path) -> Path:
        """Put a file into the partner's inbound folder (as the partner's upload would)."""
        if isinstance(content, Path):
            content = content.read_bytes()
        if isinstance(content, str):
            content = content.encode("utf-8")
        target = os.path.join(os.fsencode(self.inbound), name if isinstance(name, bytes) else os.fsencode(name))
        with open(target, "wb") as fh:
            fh.write(content)
        return Path(os.fsdecode(target))

    def names(self, folder: Path) -> list[str]:
        return sorted(os.listdir(folder))

    def context(self, run_id: str | None = None) -> RunContext:
        return RunContext(dag_id=self.ctx.dag_id, run_id=run_id or self.ctx.run_id, staging_root=self.ctx.staging_root,
                          db_url=self.ctx.db_url, registry_path=self.ctx.registry_path, poll_interval=0.2,
                          fetch_attempts=self.ctx.fetch_attempts, retry_backoff=self.ctx.retry_backoff)

    def tracked(self, kind: str | None = None, **filters) -> list[dict]:
        """This use case's rows of the kit's item tracking, as dicts."""
        from include.db import get_engine
        from include.exchange.items import tracked_items

        return [t.to_dict() for t in tracked_items(get_engine(self.ctx.db_url), use_case="document_delivery",
                                                   kinds=(kind,) if kind else None, **filters)]

    # -- the intake's steps one by one, each over a session of its own (as a test needs them) --------
    def check_readiness(self, ctx: RunContext | None = None, max_polls: int | None = None) -> list[int]:
        from dataclasses import replace

        from include.document_delivery.intake import check_readiness
        from include.exchange.run import lost_on_connection_error, open_run, sftp_session

        run = open_run(PARTNER, replace(ctx or self.ctx, max_polls=max_polls))
        with lost_on_connection_error(run.partner), sftp_session(run.partner.sftp_conn_id) as sftp:
            return check_readiness(run, run.inbox(sftp))

    def fetch_and_validate(self, entry_ids: list[int], ctx: RunContext | None = None):
        from include.document_delivery.intake import fetch_and_validate
        from include.exchange.run import lost_on_connection_error, open_run, sftp_session

        run = open_run(PARTNER, ctx or self.ctx)
        with lost_on_connection_error(run.partner), sftp_session(run.partner.sftp_conn_id) as sftp:
            return fetch_and_validate(run, run.inbox(sftp), sftp, entry_ids)

    def publish(self, outcomes, ctx: RunContext | None = None) -> dict:
        """plan → post → record: a cleared publish step of the same run."""
        from trading_grid.hooks.trading_grid import TradingGridHook

        from include.document_delivery import publish
        from include.exchange.run import open_run

        with TradingGridHook() as hook:
            return publish(open_run(PARTNER, ctx or self.ctx), outcomes, hook)

    # -- TG, read with the enterprise client over the API ------------------------------------------
    def _headers(self) -> dict:
        return {"Authorization": "Bearer " + self.sandbox.token(*self.sandbox.enterprise)}

    def items(self, **filters) -> list[dict]:
        params = {"limit": 200, **filters}
        out, cursor = [], None
        while True:
            if cursor:
                params["cursor"] = cursor
            page = requests.get(self.sandbox.items_url(), params=params, headers=self._headers(), timeout=30).json()
            out += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return out

    def comments(self, item_id: str) -> list[dict]:
        resp = requests.get(f"{self.sandbox.items_url()}/{item_id}/comments", headers=self._headers(), timeout=30)
        resp.raise_for_status()
        body = resp.json()
        return body.get("comments", body.get("items", [])) if isinstance(body, dict) else body

    def attachments(self, item_id: str) -> list[dict]:
        resp = requests.get(f"{self.sandbox.items_url()}/{item_id}/attachments", headers=self._headers(), timeout=30)
        resp.raise_for_status()
        body = resp.json()
        return body.get("attachments", body.get("items", [])) if isinstance(body, dict) else body

    def item(self, item_id: str) -> dict:
        resp = requests.get(f"{self.sandbox.items_url()}/{item_id}", headers=self._headers(), timeout=30)
        resp.raise_for_status()
        return resp.json()

    def as_partner(self, method: str, path: str, **kwargs) -> requests.Response:
        token = self.sandbox.token(*self.sandbox.partners[TG_PARTNER])
        return requests.request(method, f"{self.sandbox.items_url()}{path}", timeout=30,
                                headers={"Authorization": f"Bearer {token}"}, **kwargs)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def delivery_env(tmp_path, sshd_server, clean_partner_folders, monkeypatch):
    db_url = create_database("dd")
    registry = tmp_path / "partners.yaml"
    registry.write_text(yaml.safe_dump(registry_data()))
    with start_sandbox(tmp_path / "sandbox") as sandbox:
        monkeypatch.setenv("AIRFLOW_CONN_SFTP_DEFAULT", sshd_server.airflow_conn_json())
        monkeypatch.setenv("AIRFLOW_CONN_TRADING_GRID_DEFAULT", sandbox.airflow_conn_json())
        monkeypatch.setenv("EXCHANGE_DB_URL", db_url)
        monkeypatch.setenv("PARTNER_REGISTRY", str(registry))
        ctx = RunContext(dag_id=DAG_ID, run_id=f"manual__{uuid.uuid4().hex[:8]}", staging_root=str(tmp_path / "staging"),
                         db_url=db_url, registry_path=str(registry), poll_interval=0.2, fetch_attempts=2,
                         retry_backoff=0.1)
        try:
            yield DeliveryEnv(ctx=ctx, sshd=sshd_server, sandbox=sandbox, tmp=tmp_path)
        finally:
            from include.db import dispose_engines

            dispose_engines()
            drop_database(db_url)
