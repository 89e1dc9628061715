"""Airflow's real scheduler, dag-processor, triggerer and api-server, for end-to-end tests.

Each component runs as its own ``airflow …`` subprocess in its own process group (so a component's
children — LocalExecutor workers, uvicorn workers — are stopped with it), with LocalExecutor, a small
parallelism (2 cores are shared), a fresh PostgreSQL metadata database, the repository's dags/ and
plugins/, and the api-server on a free port with the execution API URL moved along with it.

REST access uses the simple auth manager with one admin user whose password we write ourselves:
``POST /auth/token`` gives the JWT for ``Authorization: Bearer``.

Usage::

    with start_airflow_stack(tmp_path, extra_env={"AIRFLOW_CONN_SFTP_DEFAULT": ...}) as stack:
        run_id = stack.trigger_dag("document_delivery")
        run = stack.wait_for_run("document_delivery", run_id)

or the ``airflow_stack_factory`` fixture, which stops every stack it started at teardown.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.postgres import create_database, drop_database

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
COMPONENTS = ("scheduler", "dag-processor", "triggerer")
ADMIN_USER = "e2e-admin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class AirflowStack:
    """A running Airflow: its base URL, environment, component processes and their logs."""

    home: Path
    base_url: str
    env: dict[str, str]
    password: str
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    _token: str | None = None

    # -- REST API ------------------------------------------------------------------------------
    def token(self) -> str:
        import requests

        if self._token is None:
            resp = requests.post(
                f"{self.base_url}/auth/token",
                json={"username": ADMIN_USER, "password": self.password},
                timeout=30,
            )
            resp.raise_for_status()
            self._token = resp.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, attempts: int = 3, **kwargs: Any):
        """Call ``/api/v2{path}`` with the admin JWT; returns the ``requests`` response.

        A timeout or refused connection is retried (the api-server has one worker on a loaded
        2-core machine); only idempotent reads should rely on that, so POSTs get one attempt.
        """
        import requests

        headers = {"Authorization": f"Bearer {self.token()}", **kwargs.pop("headers", {})}
        if method.upper() not in ("GET", "HEAD"):
            attempts = 1
        for attempt in range(1, attempts + 1):
            try:
                return requests.request(method, f"{self.base_url}/api/v2{path}", headers=headers, timeout=60, **kwargs)
            except (requests.Timeout, requests.ConnectionError):
                if attempt == attempts:
                    raise
                self.assert_running()
                time.sleep(2 * attempt)
        raise AssertionError("unreachable")

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> dict:
        """Wait until the dag-processor has serialised ``dag_id`` and the API knows it."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            self.assert_running()
            resp = self.api("GET", f"/dags/{dag_id}")
            if resp.status_code == 200:
                return resp.json()
            last = resp.text
            time.sleep(2)
        raise TimeoutError(f"DAG {dag_id} not parsed within {timeout}s: {last}\n{self.tail_logs()}")

    def import_errors(self) -> list[dict]:
        return self.api("GET", "/importErrors").json().get("import_errors", [])

    def trigger_dag(self, dag_id: str, conf: dict | None = None, logical_date: str | None = None) -> str:
        body: dict[str, Any] = {"logical_date": logical_date, "conf": conf or {}}
        resp = self.api("POST", f"/dags/{dag_id}/dagRuns", json=body)
        assert resp.status_code in (200, 201), resp.text
        return resp.json()["dag_run_id"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        resp = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})
        resp.raise_for_status()
        return resp.json()["task_instances"]

    def wait_for_run(
        self,
        dag_id: str,
        run_id: str,
        timeout: float = 300,
        on_poll: Callable[[list[dict]], None] | None = None,
        poll_seconds: float = 2.0,
    ) -> dict:
        """Poll the run until it ends; ``on_poll`` sees the task instances at every poll."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.assert_running()
            run = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}").json()
            if on_poll is not None:
                on_poll(self.task_instances(dag_id, run_id))
            if run.get("state") in ("success", "failed"):
                return run
            time.sleep(poll_seconds)
        states = [(t["task_id"], t.get("map_index"), t["state"]) for t in self.task_instances(dag_id, run_id)]
        raise TimeoutError(f"run {run_id} not finished in {timeout}s; tasks: {states}\n{self.tail_logs()}")

    def task_log(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1, try_number: int = 1) -> str:
        resp = self.api(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"map_index": map_index, "full_content": "true"},
            headers={"Accept": "text/plain"},
        )
        return resp.text

    # -- processes and logs --------------------------------------------------------------------
    def log_path(self, component: str) -> Path:
        return self.home / "component-logs" / f"{component}.log"

    def log_text(self, component: str) -> str:
        path = self.log_path(component)
        return path.read_text(errors="replace") if path.exists() else ""

    def tail_logs(self, lines: int = 30) -> str:
        out = []
        for name in self.processes:
            text = self.log_text(name).splitlines()[-lines:]
            out.append(f"--- {name} ---\n" + "\n".join(text))
        return "\n".join(out)

    def assert_running(self) -> None:
        dead = {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}
        if dead:
            raise RuntimeError(f"Airflow components exited: {dead}\n{self.tail_logs()}")

    def stop(self, grace: float = 20) -> None:
        """SIGTERM every component's process group, then SIGKILL whatever is left."""
        for proc in self.processes.values():
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.processes.values():
            _signal_group(proc, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    # Every component was started with start_new_session=True: its pid is its process group id.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def airflow_env(home: Path, db_url: str, api_port: int, password_file: Path, **extra: str) -> dict[str, str]:
    """The environment every component shares (one place, so they agree on secrets and URLs)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "plugins")]),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
            "AIRFLOW__CORE__FERNET_KEY": "",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            # Tasks get JWTs signed by the scheduler and checked by the api-server: one shared secret.
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(password_file),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            # Tests trigger the runs they assert on; no cron runs (of this or any other DAG) in between.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "600",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__TRIGGERER__CAPACITY": "50",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            # The log servers default to fixed ports (8793, 8794): other stacks may run on this machine.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        }
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def start_airflow_stack(
    workdir: Path,
    extra_env: dict[str, str] | None = None,
    startup_timeout: float = 240,
) -> Iterator[AirflowStack]:
    """Migrate a fresh metadata database, start the four components, wait until the API answers."""
    home = Path(workdir) / "airflow-home"
    (home / "component-logs").mkdir(parents=True, exist_ok=True)
    db_url = create_database("airflow_e2e")
    api_port = free_port()
    password = secrets.token_urlsafe(16)
    password_file = home / "simple_auth_manager_passwords.json"
    password_file.write_text(json.dumps({ADMIN_USER: password}))
    env = airflow_env(home, db_url, api_port, password_file, **(extra_env or {}))
    stack = AirflowStack(home=home, base_url=f"http://127.0.0.1:{api_port}", env=env, password=password)
    try:
        migrate = subprocess.run(
            ["airflow", "db", "migrate"], env=env, cwd=home, capture_output=True, text=True, timeout=600
        )
        if migrate.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{migrate.stdout[-3000:]}\n{migrate.stderr[-3000:]}")
        # The api-server first: tasks reach it through the execution API, and one started before it
        # listens fails with "Connection refused".
        _start(stack, "api-server", ["airflow", "api-server", "--host", "127.0.0.1", "--port", str(api_port),
                                     "--workers", "1"])
        _wait_for_health(stack, startup_timeout, need_scheduler=False)
        for name in COMPONENTS:
            _start(stack, name, ["airflow", name])
        _wait_for_health(stack, startup_timeout)
        yield stack
    finally:
        stack.stop()
        drop_database(db_url)


def _start(stack: AirflowStack, name: str, cmd: list[str]) -> None:
    log_file = open(stack.log_path(name), "ab")  # noqa: SIM115 - the child keeps its own descriptor
    stack.processes[name] = subprocess.Popen(
        cmd, env=stack.env, cwd=stack.home, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
    )
    log_file.close()


def _wait_for_health(stack: AirflowStack, timeout: float, need_scheduler: bool = True) -> None:
    import requests

    deadline = time.monotonic() + timeout
    last: str | None = None
    while time.monotonic() < deadline:
        stack.assert_running()
        try:
            resp = requests.get(f"{stack.base_url}/api/v2/monitor/health", timeout=5)
            if resp.status_code == 200:
                health = resp.json()
                if not need_scheduler or health.get("scheduler", {}).get("status") == "healthy":
                    return
                last = json.dumps(health)
        except requests.RequestException as exc:
            last = repr(exc)
        time.sleep(2)
    raise TimeoutError(f"Airflow not healthy within {timeout}s: {last}\n{stack.tail_logs()}")


@pytest.fixture
def airflow_stack_factory(tmp_path):
    """Start Airflow stacks with ``factory(extra_env)``; all are stopped (process groups) at teardown."""
    with contextlib.ExitStack() as stacks:

        def factory(extra_env: dict[str, str] | None = None, workdir: Path | None = None) -> AirflowStack:
            return stacks.enter_context(start_airflow_stack(workdir or tmp_path, extra_env=extra_env))

        yield factory


def airflow_available() -> bool:
    return shutil.which("airflow", path=str(VENV_BIN)) is not None
