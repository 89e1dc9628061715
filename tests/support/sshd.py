"""A real OpenSSH sshd on a free loopback port, for tests and scripts (pytest plugin).

``start_sshd(workdir)`` starts Debian's ``/usr/sbin/sshd`` (as root, its own sshd_config) with:

- a generated ed25519 host key and a generated ed25519 client key, key authentication only;
- ``Subsystem sftp internal-sftp`` forced for every session, chrooted into a fresh directory under
  ``/srv/tg-test-sftp/`` (a chroot must be root-owned and no path component group/other-writable,
  so it cannot live under /tmp), so the remote path ``/partners/acme/inbound`` is
  ``<root>/partners/acme/inbound`` locally;
- the folders of every partner in the demo registry (include/config/partners.yaml) created.

Fixtures:

- ``sshd_server`` (session): the running :class:`SshdServer`.
- ``clean_partner_folders`` (function): empties every partner folder before the test.
- ``sshd_relay`` (function): a :class:`HoldingRelay` in front of the sshd. It holds the server's
  bytes after a byte count, so a test can stall a session in the middle of an SFTP packet every
  time (a stall made by timing cuts packets wherever the clock says).

Connection for Airflow: ``AIRFLOW_CONN_SFTP_DEFAULT=server.airflow_conn_json()`` (host key checking
on; ``host_key`` is the full ``ssh-ed25519 AAAA...`` line, which SSHHook needs for non-RSA keys).
"""
from __future__ import annotations

import contextlib
import getpass
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from include.sftp_server.connection import PREFER_AES_GCM  # one cipher policy for every sftp_default

SSHD_BIN = os.environ.get("SSHD_BIN", "/usr/sbin/sshd")
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
CHROOT_PARENT = Path(os.environ.get("TEST_SFTP_CHROOT_PARENT", "/srv/tg-test-sftp"))
PARTNER_FOLDER_ROLES = ("inbound", "outbound", "archive", "quarantine")


@dataclass
class SshdServer:
    """A running sshd. Remote paths are absolute inside the chroot ``root``."""

    host: str
    port: int
    username: str
    private_key_path: Path
    host_key: str  # "ssh-ed25519 AAAA..." (no comment)
    root: Path
    workdir: Path
    known_hosts_path: Path
    process: subprocess.Popen = field(repr=False)
    partner_folders: list[str] = field(default_factory=list)

    def local_path(self, remote_path: str) -> Path:
        """Local path of a remote absolute path; refuses paths escaping the chroot."""
        if not remote_path.startswith("/"):
            raise ValueError("remote path must be absolute")
        local = (self.root / remote_path.lstrip("/")).resolve()
        if local != self.root.resolve() and self.root.resolve() not in local.parents:
            raise ValueError(f"{remote_path!r} escapes the chroot")
        return local

    def ssh_client(self, port: int | None = None):
        """A connected paramiko SSHClient that checks the host key (RejectPolicy for unknown keys).

        ``port``: connect there instead (e.g. a :class:`HoldingRelay`); the same host key is expected."""
        import paramiko
        from paramiko.hostkeys import HostKeyEntry

        port = port or self.port
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.load_host_keys(str(self.known_hosts_path))
        if port != self.port:
            entry = HostKeyEntry.from_line(f"[{self.host}]:{port} {self.host_key}")
            client.get_host_keys().add(entry.hostnames[0], entry.key.get_name(), entry.key)
        client.connect(
            self.host,
            port=port,
            username=self.username,
            key_filename=str(self.private_key_path),
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
            disabled_algorithms=PREFER_AES_GCM,
        )
        return client

    def sftp_client(self, port: int | None = None):
        """A bare paramiko SFTPClient (host key checked). Closing it closes its SSH connection too."""
        client = self.ssh_client(port)
        sftp = client.open_sftp()
        # Keep the SSHClient alive as long as the SFTP client; close both together.
        sftp._tg_ssh_client = client  # type: ignore[attr-defined]
        original_close = sftp.close

        def close() -> None:
            original_close()
            client.close()

        sftp.close = close  # type: ignore[method-assign]
        return sftp

    def airflow_conn(self) -> dict:
        return {
            "conn_type": "sftp",
            "host": self.host,
            "port": self.port,
            "login": self.username,
            "extra": {
                "key_file": str(self.private_key_path),
                "host_key": self.host_key,
                "no_host_key_check": False,
                "disabled_algorithms": PREFER_AES_GCM,
            },
        }

    def airflow_conn_json(self) -> str:
        """JSON for env ``AIRFLOW_CONN_SFTP_DEFAULT`` (host key checking on)."""
        return json.dumps(self.airflow_conn())

    def clean_partner_folders(self) -> None:
        """Empty every partner folder (files and sub-folders), keeping the folders themselves."""
        for remote in self.partner_folders:
            folder = self.local_path(remote)
            folder.mkdir(parents=True, exist_ok=True)
            for child in folder.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()

    def sftp_batch_args(self) -> list[str]:
        """Options for OpenSSH's ``sftp`` client talking to this server with host key checking."""
        return [
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts_path}",
            "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes",
            "-i", str(self.private_key_path),
            "-P", str(self.port),
        ]


class HoldingRelay:
    """A TCP relay on loopback in front of ``(host, port)`` that can hold the server's bytes.

    ``hold_after(n)``: forward ``n`` more bytes from the server to the client(s), then hold the
    rest (the server is left unread) until :meth:`release`. The bytes are SSH ciphertext, so with
    ``n`` well inside a large SFTP response the client's transport has delivered part of that
    response and waits for the rest: a session stalled in the middle of an SFTP packet, at the
    same byte every run. ``held`` is set once the hold has engaged (there was more to forward).
    The client's bytes to the server are never held.
    """

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self._listener.getsockname()[:2]
        self._lock = threading.Lock()
        self._budget: int | None = None  # server bytes still forwarded before holding; None: no hold
        self._released = threading.Event()
        self._released.set()
        self.held = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, name="sshd-relay-accept", daemon=True).start()

    def hold_after(self, nbytes: int) -> None:
        with self._lock:
            self._budget = nbytes
            self.held.clear()
            self._released.clear()

    def release(self) -> None:
        with self._lock:
            self._budget = None
            self._released.set()

    def close(self) -> None:
        self.release()
        self._listener.close()
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
                server = socket.create_connection(self._target, timeout=10)
            except OSError:
                return  # closed
            server.settimeout(None)
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._sockets.append(sock)
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _split(self, data: bytes) -> tuple[bytes, bytes]:
        with self._lock:
            if self._budget is None:
                return data, b""
            allowed = min(self._budget, len(data))
            self._budget -= allowed
            return data[:allowed], data[allowed:]

    def _pump(self, source: socket.socket, target: socket.socket, from_server: bool) -> None:
        try:
            while data := source.recv(65536):
                if from_server:
                    allowed, data = self._split(data)
                    if allowed:
                        target.sendall(allowed)
                    if data:  # the budget is spent: hold here, the server stays unread
                        self.held.set()
                        self._released.wait()
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _keygen(path: Path, comment: str) -> str:
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, capture_output=True)
    return path.with_suffix(".pub").read_text().split()[:2]  # type: ignore[return-value]


def _demo_partner_folders() -> list[str]:
    try:
        from include.partners import load_registry

        registry = load_registry(os.environ.get("SSHD_PARTNER_REGISTRY") or None)
    except Exception:  # a broken registry must not hide the sshd: fall back to the demo layout
        return [f"/partners/{key}/{role}" for key in ("acme", "globex", "initech") for role in PARTNER_FOLDER_ROLES]
    return [path for partner in registry for path in partner.folders.all().values()]


def _wait_for_banner(host: str, port: int, process: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("sshd exited during start-up")
        try:
            with socket.create_connection((host, port), timeout=1) as sock:
                if sock.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd did not answer on {host}:{port} within {timeout}s")


@contextlib.contextmanager
def start_sshd(workdir: str | os.PathLike | None = None, *, partner_folders: list[str] | None = None) -> Iterator[SshdServer]:
    """Run sshd until the context exits; keys and config live in ``workdir`` (a temp dir if None).

    The chroot is ``/srv/tg-test-sftp/<random>`` (removed on exit). Usable from scripts::

        with start_sshd() as server:
            sftp = server.sftp_client()
    """
    if not Path(SSHD_BIN).exists():
        raise RuntimeError(f"{SSHD_BIN} not found: apt-get install -y openssh-server")
    own_workdir = workdir is None
    work = Path(tempfile.mkdtemp(prefix="tg-sshd-")) if own_workdir else Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir sshd insists on

    CHROOT_PARENT.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chmod(CHROOT_PARENT, 0o755)
    root = CHROOT_PARENT / secrets.token_hex(6)
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)

    host_key_path = work / "ssh_host_ed25519_key"
    client_key_path = work / "client_ed25519"
    for path in (host_key_path, client_key_path, host_key_path.with_suffix(".pub"), client_key_path.with_suffix(".pub")):
        path.unlink(missing_ok=True)
    host_key_type, host_key_b64 = _keygen(host_key_path, "tg-test-host")
    client_type, client_b64 = _keygen(client_key_path, "tg-test-client")
    authorized_keys = work / "authorized_keys"
    authorized_keys.write_text(f"{client_type} {client_b64} tg-test-client\n")
    os.chmod(authorized_keys, 0o600)

    folders = partner_folders if partner_folders is not None else _demo_partner_folders()
    for remote in folders:
        (root / remote.lstrip("/")).mkdir(parents=True, exist_ok=True)

    username = getpass.getuser()
    host = "127.0.0.1"
    log_path = work / "sshd.log"
    process = None
    port = 0
    for _attempt in range(5):
        port = _free_port()
        config = work / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {port}",
                    f"ListenAddress {host}",
                    f"HostKey {host_key_path}",
                    f"PidFile {work / 'sshd.pid'}",
                    f"AuthorizedKeysFile {authorized_keys}",
                    "AuthenticationMethods publickey",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "UsePAM no",
                    "StrictModes no",
                    f"AllowUsers {username}",
                    "Subsystem sftp internal-sftp",
                    "ForceCommand internal-sftp",
                    f"ChrootDirectory {root}",
                    "AllowTcpForwarding no",
                    "AllowAgentForwarding no",
                    "X11Forwarding no",
                    "PermitTTY no",
                    "MaxSessions 50",
                    "MaxStartups 100:30:200",
                    "LogLevel INFO",
                    "",
                ]
            )
        )
        log = open(log_path, "ab")
        process = subprocess.Popen([SSHD_BIN, "-D", "-e", "-f", str(config)], stdout=log, stderr=log,
                                   start_new_session=True)
        log.close()
        try:
            _wait_for_banner(host, port, process)
            break
        except RuntimeError:
            if process.poll() is None:
                process.terminate()
                process.wait(5)
            if b"Address already in use" in log_path.read_bytes():
                continue  # the free port was taken in between: try another
            raise RuntimeError(f"sshd failed to start; log:\n{log_path.read_text(errors='replace')[-2000:]}")
    else:
        raise RuntimeError("sshd could not find a free port")

    known_hosts = work / "known_hosts"
    known_hosts.write_text(f"[{host}]:{port} {host_key_type} {host_key_b64}\n")
    server = SshdServer(
        host=host,
        port=port,
        username=username,
        private_key_path=client_key_path,
        host_key=f"{host_key_type} {host_key_b64}",
        root=root,
        workdir=work,
        known_hosts_path=known_hosts,
        process=process,
        partner_folders=list(folders),
    )
    try:
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        # The listener is gone; session children may linger briefly with their own pids, so
        # stop only the ones in sshd's process group (started with a new session above).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, 15)
        shutil.rmtree(root, ignore_errors=True)
        if own_workdir:
            shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory) -> Iterator[SshdServer]:
    """A real OpenSSH sshd for the whole test session (see module docstring)."""
    with start_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture
def sshd_relay(sshd_server: SshdServer) -> Iterator[HoldingRelay]:
    """A :class:`HoldingRelay` in front of the session's sshd; connect with
    ``sshd_server.sftp_client(port=sshd_relay.port)``."""
    relay = HoldingRelay(sshd_server.host, sshd_server.port)
    try:
        yield relay
    finally:
        relay.close()


@pytest.fixture
def clean_partner_folders(sshd_server: SshdServer) -> SshdServer:
    """Empty every partner folder before the test; returns the server."""
    sshd_server.clean_partner_folders()
    return sshd_server
