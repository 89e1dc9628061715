"""The Trading Grid sandbox as a real HTTP service, for tests and benchmark scripts.

``start_sandbox(workdir, seed=None, db_url=None, **cli_flags)`` runs ``python -m include.tg_sandbox`` in
its own process group on a free loopback port and yields a :class:`SandboxServer`; it is a plain
context manager, usable outside pytest. Fixtures:

- ``tg_sandbox`` (session): the demo seed (include/tg_sandbox/demo_seed.yaml) on a SQLite file.
  Token lifetime: env ``TG_SANDBOX_TOKEN_TTL`` (seconds, default 3600).
- ``tg_faults_cleared`` (function): the session sandbox, with its faults cleared after the test.

Keyword flags map to command-line flags: ``token_ttl=2`` → ``--token-ttl 2``, ``error_rate=0.1`` →
``--error-rate 0.1``, ``fault_seed=7`` → ``--fault-seed 7``.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_SEED = REPO_ROOT / "include" / "tg_sandbox" / "demo_seed.yaml"


class SandboxServer:
    """A running sandbox: where it is, who may call it, and handles to faults, tokens and restarts."""

    def __init__(self, workdir: Path, seed_path: Path, db_url: str, cli_flags: dict[str, Any]):
        self.workdir = Path(workdir)
        self.seed_path = seed_path
        self.db_url = db_url
        self.cli_flags = dict(cli_flags)
        seed = yaml.safe_load(seed_path.read_text())
        self.tenant_id: str = seed["tenant_id"]
        self.community_id: str = seed["community_id"]
        self.admin_token: str = seed["admin_token"]
        self.enterprise: tuple[str, str] | None = None
        self.partners: dict[str, tuple[str, str]] = {}
        for client in seed.get("clients", []):
            pair = (client["client_id"], client["client_secret"])
            if client["kind"] == "enterprise" and self.enterprise is None:
                self.enterprise = pair
            elif client["kind"] == "partner":
                self.partners.setdefault(client["partner_id"], pair)
        self.port: int | None = None
        self.base_url = ""
        self._proc: subprocess.Popen | None = None
        self._log_path = self.workdir / "tg-sandbox.log"

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> "SandboxServer":
        port_file = self.workdir / "tg-sandbox.port"
        port_file.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "include.tg_sandbox", "--host", "127.0.0.1",
               "--port", str(self.port or 0), "--port-file", str(port_file),
               "--seed", str(self.seed_path), "--db", self.db_url]
        for key, value in self.cli_flags.items():
            if value is None or value is False:
                continue
            cmd.append("--" + key.replace("_", "-"))
            if value is not True:
                cmd.append(str(value))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "plugins")])}
        log = open(self._log_path, "ab")
        self._proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"tg sandbox exited with {self._proc.returncode}:\n{self.log_tail()}")
            if port_file.exists() and port_file.read_text().strip():
                self.port = int(port_file.read_text())
                self.base_url = f"http://127.0.0.1:{self.port}"
                try:
                    if requests.get(self.base_url + "/healthz", timeout=1).status_code == 200:
                        return self
                except requests.RequestException:
                    pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"tg sandbox did not become healthy in {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def restart(self) -> None:
        """Stop and start again on the same port and database (persistence tests)."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> "SandboxServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- helpers ------------------------------------------------------------------------------------
    def token(self, client_id: str, client_secret: str) -> str:
        resp = requests.post(f"{self.base_url}/tenants/{self.tenant_id}/oauth2/token", timeout=10,
                             data={"grant_type": "client_credentials", "client_id": client_id,
                                   "client_secret": client_secret})
        resp.raise_for_status()
        return resp.json()["access_token"]

    def set_faults(self, **faults: Any) -> dict:
        """Replace the fault settings (unnamed ones go back to 0)."""
        resp = requests.put(f"{self.base_url}/_sandbox/faults", json=faults, timeout=10,
                            headers={"X-Sandbox-Admin": self.admin_token})
        resp.raise_for_status()
        return resp.json()

    def clear_faults(self) -> dict:
        return self.set_faults()

    def items_url(self) -> str:
        return f"{self.base_url}/v1/communities/{self.community_id}/items"

    def airflow_conn_json(self, client: tuple[str, str] | str | None = None) -> str:
        """JSON for AIRFLOW_CONN_TRADING_GRID_DEFAULT; ``client`` is a (id, secret) pair, a TG partner id
        (its partner client) or None (the enterprise client)."""
        if client is None:
            client = self.enterprise
        elif isinstance(client, str):
            client = self.partners[client]
        login, password = client
        return json.dumps({
            "conn_type": "http", "host": "127.0.0.1", "port": self.port, "schema": "http",
            "login": login, "password": password,
            "extra": {"tenant_id": self.tenant_id, "community_id": self.community_id},
        })


@contextlib.contextmanager
def start_sandbox(workdir: Path, seed: dict | Path | None = None, db_url: str | None = None,
                  **cli_flags: Any) -> Iterator[SandboxServer]:
    """Run a sandbox until the block ends. ``seed``: a mapping (written to workdir), a YAML path, or the demo seed."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if seed is None:
        seed_path = DEMO_SEED
    elif isinstance(seed, dict):
        seed_path = workdir / "tg-seed.yaml"
        seed_path.write_text(yaml.safe_dump(seed))
    else:
        seed_path = Path(seed)
    server = SandboxServer(workdir, seed_path, db_url or f"sqlite:///{workdir / 'tg-sandbox.db'}", cli_flags)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tg_sandbox(tmp_path_factory) -> Iterator[SandboxServer]:
    """The demo-seeded sandbox for the whole session (token lifetime: env TG_SANDBOX_TOKEN_TTL, default 3600 s)."""
    ttl = int(os.environ.get("TG_SANDBOX_TOKEN_TTL", "3600"))
    with start_sandbox(tmp_path_factory.mktemp("tg_sandbox"), token_ttl=ttl) as server:
        yield server


@pytest.fixture
def tg_faults_cleared(tg_sandbox) -> Iterator[SandboxServer]:
    """The session sandbox; whatever faults the test sets are cleared afterwards."""
    yield tg_sandbox
    tg_sandbox.clear_faults()
