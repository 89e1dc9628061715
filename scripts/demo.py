"""The newcomer demo: Airflow + Trading Grid sandbox + embedded SFTP server, one command.

Run through ``bash scripts/demo.sh`` (it prepares .venv and PYTHONPATH). Everything lives under
``var/`` (delete it to start over). Each service runs in its own process group so that stopping
the demo stops their children too (LocalExecutor workers, uvicorn, the standalone's components).

``--check`` is the smoke test of the demo: start everything, play the walk-through of docs/demo.md
through the REST API (deliver samples, trigger document_delivery, check archive/quarantine and the
sandbox's items and cases, re-send the bad files corrected, trigger again, check the cases
resolved), stop; exit 0 only if every check passed.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VAR = REPO / "var"
LOGS = VAR / "logs"
AIRFLOW_HOME = VAR / "airflow"
SFTP_ROOT = VAR / "sftp-root"
HOST_KEY = VAR / "ssh_host_ed25519"
CLIENT_PUB = VAR / "demo_client.pub"
CLIENT_KEY = VAR / "demo_client"
PASSWORD_FILE = AIRFLOW_HOME / "simple_auth_manager_passwords.json.generated"
SANDBOX_SEED = REPO / "include" / "tg_sandbox" / "demo_seed.yaml"
DAG_ID = "document_delivery"

SFTP_USER = "demo"
# The demo identities seeded by include/tg_sandbox/demo_seed.yaml (demo secrets only).
TG_TENANT, TG_COMMUNITY = "demo-tenant", "demo-community"
TG_ENTERPRISE_CLIENT = ("enterprise-demo", "enterprise-demo-secret")
TG_PARTNER_LOGIN = ("acme-portal", "acme-portal-secret")

DEFAULT_PORTS = {"airflow": 8080, "sandbox": 8090, "sftp": 2222}


def say(message: str) -> None:
    print(f"demo: {message}", flush=True)


# -- ports ---------------------------------------------------------------------------------------
def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def choose_port(name: str, preferred: int) -> int:
    """The documented port if free, else any free one (the machine may run something else there)."""
    if port_is_free(preferred):
        return preferred
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    say(f"port {preferred} ({name}) is busy, using {port} instead")
    return port


# -- processes -----------------------------------------------------------------------------------
class Services:
    """Background services, each in its own session (process group), with a log file each."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        LOGS.mkdir(parents=True, exist_ok=True)
        log = open(LOGS / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def assert_running(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}; see {LOGS / (name + '.log')}\n"
                                   + tail(LOGS / f"{name}.log"))

    def stop_all(self) -> None:
        """SIGTERM to every group (each Airflow component shuts down on it), then SIGKILL what is left."""
        for name, proc in reversed(list(self.procs.items())):
            if proc.poll() is None:
                say(f"stopping {name}")
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_group_alive(p) for p in self.procs.values()):
            for proc in self.procs.values():
                proc.poll()  # reap the leader so its group can be seen empty
            time.sleep(0.5)
        for proc in self.procs.values():
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=10)
        self.procs.clear()


def _group_alive(proc: subprocess.Popen) -> bool:
    try:
        os.killpg(proc.pid, 0)
    except ProcessLookupError:
        return False
    return True


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the session leader's pid is the group id
    except ProcessLookupError:
        pass


def tail(path: Path, lines: int = 25) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def wait_until(what: str, probe, services: Services, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        services.assert_running()
        try:
            if probe():
                return
        except Exception:  # noqa: BLE001 - not up yet: connection refused, 503, ...
            pass
        time.sleep(1)
    raise TimeoutError(f"{what} not up after {timeout:.0f}s")


def http_ok(url: str) -> bool:
    import requests

    return requests.get(url, timeout=5).status_code == 200


# -- environment and connections -----------------------------------------------------------------
def demo_environment(ports: dict[str, int], check: bool = False) -> dict[str, str]:
    venv_bin = REPO / ".venv" / "bin"
    env = dict(os.environ)
    env.update({
        "PATH": f"{venv_bin}:{env.get('PATH', '')}",
        "PYTHONPATH": f"{REPO}:{REPO / 'plugins'}",
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        # Paused until the api-server answers, then unpaused through the API: a run started earlier
        # fails its first tasks with "connection refused" (they report to the api-server).
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        # Loopback only, like the other services: the demo's admin password sits in a plain file.
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(ports["airflow"]),
        # Tasks talk to the api-server here: it must move with the port (and not try ::1 first).
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{ports['airflow']}/execution/",
        "EXCHANGE_DB_URL": f"sqlite:///{VAR / 'exchange.db'}",
        "EXCHANGE_STAGING_DIR": str(VAR / "staging"),
        # The default 5 s is too short for an api-server on SQLite sharing 2 busy cores: a task's
        # first call timed out and it failed its first try.
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
    })
    # A quiet partner's sensor gives up after this long (the DAG's default is 10 minutes); the check
    # wants its empty runs over quickly.
    env.setdefault("DOCUMENT_DELIVERY_WAIT_SECONDS", "30" if check else "120")
    return env


def connection_env(ports: dict[str, int]) -> dict[str, str]:
    """The Airflow connections, as AIRFLOW_CONN_* JSON (architecture.md: connection ids)."""
    from include.sftp_server.connection import sftp_connection

    # Host key pinned (checking stays on), key file auth, AES-GCM preferred.
    sftp = sftp_connection("127.0.0.1", ports["sftp"], SFTP_USER, HOST_KEY, CLIENT_KEY)
    client_id, client_secret = TG_ENTERPRISE_CLIENT
    trading_grid = {
        "conn_type": "http",
        "host": "127.0.0.1",
        "port": ports["sandbox"],
        "schema": "http",
        "login": client_id,
        "password": client_secret,
        # No ui_base_url: item links then point at the sandbox's own /portal/items/{id} page.
        "extra": {"tenant_id": TG_TENANT, "community_id": TG_COMMUNITY},
    }
    return {
        "AIRFLOW_CONN_SFTP_DEFAULT": json.dumps(sftp),
        "AIRFLOW_CONN_TRADING_GRID_DEFAULT": json.dumps(trading_grid),
    }


# -- the services --------------------------------------------------------------------------------
def start_sandbox(services: Services, env: dict[str, str], port: int) -> str:
    url = f"http://127.0.0.1:{port}"
    services.start("tg-sandbox", [
        sys.executable, "-m", "include.tg_sandbox", "--host", "127.0.0.1", "--port", str(port),
        "--seed", str(SANDBOX_SEED), "--db", f"sqlite:///{VAR / 'tg-sandbox.db'}",
    ], env)
    wait_until("TG sandbox", lambda: http_ok(f"{url}/healthz"), services, timeout=60)
    return url


def start_sftp(services: Services, env: dict[str, str], port: int) -> None:
    from include.sftp_server import ensure_client_key, ensure_host_key

    # Keys first (the server would create them too) so the connection can pin the host key now.
    ensure_host_key(HOST_KEY)
    ensure_client_key(CLIENT_PUB)
    services.start("sftp-server", [
        sys.executable, "-m", "include.sftp_server", "--host", "127.0.0.1", "--port", str(port),
        "--root", str(SFTP_ROOT), "--host-key", str(HOST_KEY), "--authorized-keys", str(CLIENT_PUB),
        "--user", SFTP_USER,
    ], env)
    wait_until("SFTP server", lambda: sftp_reachable(port), services, timeout=30)


def sftp_reachable(port: int) -> bool:
    """Log in as the demo connection does, host key pinned, and list the root."""
    from include.sftp_server.client import connect_pinned

    client = connect_pinned("127.0.0.1", port, HOST_KEY, SFTP_USER, key_file=CLIENT_KEY, timeout=5)
    try:
        client.open_sftp().listdir("/")
        return True
    finally:
        client.close()


def start_airflow(services: Services, env: dict[str, str], port: int) -> str:
    url = f"http://127.0.0.1:{port}"
    services.start("airflow", ["airflow", "standalone"], env)
    # First start migrates the metadata database: give it time on 2 shared cores.
    wait_until("Airflow api-server", lambda: http_ok(f"{url}/api/v2/monitor/health"), services, timeout=300)
    return url


# -- Airflow REST API ----------------------------------------------------------------------------
class AirflowAPI:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._token: str | None = None

    def token(self) -> str:
        import requests

        if self._token is None:
            username, password = admin_credentials()
            resp = requests.post(f"{self.base_url}/auth/token",
                                 json={"username": username, "password": password}, timeout=30)
            resp.raise_for_status()
            self._token = resp.json()["access_token"]
        return self._token

    def call(self, method: str, path: str, attempts: int = 5, **kwargs):
        """One API call; a timeout or refused connection is retried (SQLite under load answers slowly)."""
        import requests

        for attempt in range(1, attempts + 1):
            try:
                return requests.request(method, f"{self.base_url}/api/v2{path}", timeout=60,
                                        headers={"Authorization": f"Bearer {self.token()}"}, **kwargs)
            except (requests.ConnectionError, requests.Timeout):
                if attempt == attempts:
                    raise
                time.sleep(2 * attempt)


def admin_credentials() -> tuple[str, str]:
    """The admin user and password `airflow standalone` generated (simple auth manager)."""
    users = json.loads(PASSWORD_FILE.read_text())
    username = "admin" if "admin" in users else next(iter(users))
    return username, users[username]


def wait_for_dag(api: AirflowAPI, services: Services, timeout: float = 240) -> bool:
    """Wait until the dag-processor has parsed the DAG; report import errors instead of hanging."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        services.assert_running()
        if api.call("GET", f"/dags/{DAG_ID}").status_code == 200:
            return True
        errors = api.call("GET", "/importErrors").json().get("import_errors", [])
        if errors:
            for error in errors:
                say(f"import error in {error.get('filename')}:\n{error.get('stack_trace', '')[-2000:]}")
            return False
        time.sleep(2)
    return False


def unpause(api: AirflowAPI) -> None:
    # Needed when var/airflow was created by an earlier start that had the DAG paused.
    api.call("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False}).raise_for_status()


# -- Trading Grid sandbox ------------------------------------------------------------------------
def sandbox_items(sandbox_url: str) -> list[dict]:
    """Every item of the demo community, read as the enterprise client."""
    import requests

    client_id, client_secret = TG_ENTERPRISE_CLIENT
    token = requests.post(
        f"{sandbox_url}/tenants/{TG_TENANT}/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": client_secret},
        timeout=30,
    )
    token.raise_for_status()
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    items, cursor = [], None
    while True:
        params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        page = requests.get(f"{sandbox_url}/v1/communities/{TG_COMMUNITY}/items", params=params,
                            headers=headers, timeout=30)
        page.raise_for_status()
        body = page.json()
        items.extend(body["items"])
        cursor = body.get("next_cursor")
        if not cursor:
            return items


# -- main ----------------------------------------------------------------------------------------
def print_banner(airflow_url: str, sandbox_url: str, sftp_port: int) -> None:
    username, _ = admin_credentials()
    partner, secret = TG_PARTNER_LOGIN
    print(f"""
================================================================================
 The demo is running (Ctrl-C stops everything).

 Airflow UI        {airflow_url}/
                   user {username!r}, password in {PASSWORD_FILE.relative_to(REPO)}
                   DAG: {airflow_url}/dags/{DAG_ID}
 Trading Grid      {sandbox_url}/portal/
   sandbox page    log in as a partner: {partner} / {secret}
 SFTP server       sftp://{SFTP_USER}@127.0.0.1:{sftp_port}/   (key {CLIENT_KEY.relative_to(REPO)})
                   files: {SFTP_ROOT.relative_to(REPO)}/partners/<partner>/inbound|archive|quarantine
 Logs              {LOGS.relative_to(REPO)}/

 A run starts by itself in a minute; trigger more from the UI. Then, as the partners:
 Send corrected files:    .venv/bin/python -m include.demo correct   (resolves the cases)
 Drop more sample files:  .venv/bin/python -m include.demo samples
 Walk-through:            docs/demo.md        Start over: stop, then rm -rf var/
================================================================================
""", flush=True)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run(check: bool) -> int:
    from include.demo import prepare_exchange
    from include.demo.samples import create_partner_folders

    ports = {name: choose_port(name, port) for name, port in DEFAULT_PORTS.items()}
    services = Services()
    # Ctrl-C arrives as KeyboardInterrupt; a plain `kill` (SIGTERM) of this script cleans up the same way.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    env = demo_environment(ports, check)
    try:
        VAR.mkdir(exist_ok=True)
        say("starting the Trading Grid sandbox")
        sandbox_url = start_sandbox(services, env, ports["sandbox"])
        say("starting the embedded SFTP server")
        start_sftp(services, env, ports["sftp"])
        env.update(connection_env(ports))
        if check:  # the check drops its samples itself, right before its own run
            create_partner_folders(SFTP_ROOT)
        else:
            say(f"sample files waiting in the inbound folders: {len(prepare_exchange(SFTP_ROOT))}")
        say("starting Airflow (standalone; the first start migrates its database, ~1 minute)")
        airflow_url = start_airflow(services, env, ports["airflow"])
        api = AirflowAPI(airflow_url)
        dag_ready = wait_for_dag(api, services)
        if not dag_ready:
            say(f"DAG {DAG_ID} is not (yet) available in Airflow")
        elif not check:
            unpause(api)  # the scheduler starts the latest 15-minute run at once: it takes the samples
        print_banner(airflow_url, sandbox_url, ports["sftp"])
        if check:
            return smoke_check(api, services, sandbox_url, ports["sftp"], dag_ready)
        while True:
            services.assert_running()
            time.sleep(2)
    except KeyboardInterrupt:
        print()
        return 0
    except (RuntimeError, TimeoutError) as exc:
        say(f"failed: {exc}")
        return 1
    finally:
        services.stop_all()
        say("stopped")


def smoke_check(api: AirflowAPI, services: Services, sandbox_url: str, sftp_port: int, dag_ready: bool) -> int:
    """Play the walk-through of docs/demo.md through the REST API and check each outcome.

    Unpausing lets the scheduler start its latest 15-minute run at once; the check waits for it
    (nothing to fetch yet, so its sensors give up quickly) so that the run it triggers itself is the
    one that takes the samples, which the items' ``metadata.run_id`` then shows. Then, as the
    partners, it re-sends the bad files corrected, triggers again and checks the cases resolved.
    """
    from include.demo import correct_quarantined, drop_samples

    checks = {
        "Airflow UI answers": http_ok(f"{api.base_url}/"),
        "sandbox partner page answers": http_ok(f"{sandbox_url}/portal/"),
        "SFTP server reachable (host key pinned)": sftp_reachable(sftp_port),
        f"DAG {DAG_ID} parsed": dag_ready,
    }
    if dag_ready:
        unpause(api)
        say("waiting for the scheduler's own first run to end")
        wait_until_idle(api, services)

        dropped = drop_samples(SFTP_ROOT)
        say(f"partners deliver {len(dropped)} sample files")
        before = {item["id"] for item in sandbox_items(sandbox_url)}
        run_id = trigger(api)
        checks[f"run {run_id} succeeded"] = wait_for_run(api, services, run_id) == "success"
        checks.update(sample_outcomes(dropped, "samples"))
        items = sandbox_items(sandbox_url)
        print_items(items)
        new = [item for item in items if item["id"] not in before]
        checks[f"{len(new)} new items, all posted by run {run_id}"] = bool(new) and all(
            (item.get("metadata") or {}).get("run_id") == run_id for item in new)
        partners_with_items = {item["partner_id"] for item in new}
        checks["new items for every partner"] = partners_with_items >= {"P-ACME", "P-GLOBEX", "P-INITECH"}
        bad_partners = {f"P-{s.partner.upper()}" for s in dropped if s.expected_reason}
        cases = {item["partner_id"] for item in new if item["category"] == "validation_failure"}
        checks["a validation_failure case per bad sample's partner"] = bool(bad_partners) and bad_partners <= cases
        checks[f"{TG_PARTNER_LOGIN[0]} sees its items on the partner page, no one else's"] = partner_page_shows(
            sandbox_url, items, "P-ACME")

        # Act as the partners: send corrected files; the next run must resolve their cases.
        corrections = correct_quarantined(SFTP_ROOT)
        say(f"partners re-send {len(corrections)} corrected files")
        run_id = trigger(api)
        checks[f"run {run_id} (corrections) succeeded"] = wait_for_run(api, services, run_id) == "success"
        checks.update(sample_outcomes(corrections, "corrected files"))
        items = sandbox_items(sandbox_url)
        print_items(items)
        open_cases = [item for item in items if item["category"] == "validation_failure" and item["status"] != "resolved"]
        checks["every validation_failure case resolved by its corrected file"] = bool(corrections) and not open_cases
    width = max(len(name) for name in checks)
    print()
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name:<{width}}")
    passed = all(checks.values())
    say("smoke check " + ("PASSED" if passed else "FAILED"))
    return 0 if passed else 1


def wait_until_idle(api: AirflowAPI, services: Services, settle: float = 20, timeout: float = 600) -> None:
    """Give the scheduler ``settle`` seconds to create its runs, then wait until none is queued or running."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        services.assert_running()
        runs = api.call("GET", f"/dags/{DAG_ID}/dagRuns", params={"state": ["queued", "running"]}).json()
        if not runs.get("dag_runs") and time.monotonic() - started >= settle:
            return
        time.sleep(3)
    raise TimeoutError(f"{DAG_ID} still has active runs after {timeout:.0f}s")


def trigger(api: AirflowAPI) -> str:
    resp = api.call("POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": {}})
    resp.raise_for_status()
    run_id = resp.json()["dag_run_id"]
    say(f"triggered {DAG_ID} run {run_id}")
    return run_id


def print_items(items: list[dict]) -> None:
    by = Counter((item["partner_id"], item["category"], item["type"], item["status"]) for item in items)
    say(f"the sandbox holds {len(items)} items:")
    for (partner, category, kind, status), count in sorted(by.items()):
        print(f"    {partner:<10} {category:<20} {kind:<12} {status:<12} {count}")


def partner_page_shows(sandbox_url: str, items: list[dict], partner_id: str) -> bool:
    """Log in to /portal/ as the demo partner, as a person would; its item titles show, others' do not."""
    import html
    import re

    import requests

    client_id, client_secret = TG_PARTNER_LOGIN
    with requests.Session() as browser:
        login_form = browser.get(f"{sandbox_url}/portal/", timeout=30).text  # its login CSRF token and cookie
        token = re.search(r'name="login_csrf" value="([^"]+)"', login_form).group(1)
        browser.post(f"{sandbox_url}/portal/login", timeout=30, data={
            "client_id": client_id, "client_secret": client_secret, "login_csrf": token}).raise_for_status()
        page = browser.get(f"{sandbox_url}/portal/", timeout=30).text
    own = [html.escape(i["title"], quote=False) for i in items if i["partner_id"] == partner_id]
    others = [html.escape(i["title"], quote=False) for i in items if i["partner_id"] != partner_id]
    return bool(own) and all(t in page for t in own) and not any(t in page for t in others if t not in own)


def sample_outcomes(dropped: list, label: str) -> dict[str, bool]:
    """Each sample left inbound/ for archive/ (good) or quarantine/ (bad), under a suffixed name."""
    from include.partners import load_registry

    registry = load_registry()
    misplaced = []
    for sample in dropped:
        folders = registry.get(sample.partner).folders
        name = sample.remote_path.rsplit("/", 1)[1]
        target = folders.archive if sample.expected_reason is None else folders.quarantine
        target_dir = SFTP_ROOT / target.lstrip("/")
        still_inbound = (SFTP_ROOT / sample.remote_path.lstrip("/")).exists()
        # The intake renames to "<name>.<timestamp>.<sha8>" so a later file of the same name never clashes.
        landed = target_dir.is_dir() and any(p.name.startswith(name) for p in target_dir.iterdir())
        if still_inbound or not landed:
            misplaced.append(f"{sample.remote_path} (expected in {target}; still in inbound: {still_inbound})")
    for line in misplaced:
        say(f"  not where expected: {line}")
    good = sum(1 for s in dropped if s.expected_reason is None)
    return {f"{label}: {good} archived, {len(dropped) - good} quarantined, none left in inbound":
            bool(dropped) and not misplaced}


def wait_for_run(api: AirflowAPI, services: Services, run_id: str, timeout: float = 900) -> str:
    """Poll the run until it ends; print each task's state as it changes."""
    seen: dict[tuple[str, int], str] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        services.assert_running()
        tis = api.call("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})
        for ti in tis.json().get("task_instances", []):
            key = (ti["task_id"], ti.get("map_index", -1))
            if ti.get("state") and seen.get(key) != ti["state"]:
                seen[key] = ti["state"]
                suffix = f"[{key[1]}]" if key[1] not in (-1, None) else ""
                say(f"  {ti['task_id']}{suffix}: {ti['state']}")
        state = api.call("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}").json().get("state")
        if state in ("success", "failed"):
            say(f"run {run_id}: {state}")
            return state
        time.sleep(2)
    say(f"run {run_id} did not finish within {timeout:.0f}s")
    return "timeout"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="start, run document_delivery once, verify the sandbox got items, stop")
    args = parser.parse_args(argv)
    return run(check=args.check)


if __name__ == "__main__":
    sys.exit(main())
