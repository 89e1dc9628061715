"""The embedded demo SFTP server, run as its own process and used through real clients:
paramiko with host key checking on, and Airflow's SFTPHook configured the way the demo configures it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import io
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
USER = "demo"


@pytest.fixture(scope="module")
def sftp_server(tmp_path_factory):
    """Start ``python -m include.sftp_server`` on a free port; yield its address, root and key files."""
    base = tmp_path_factory.mktemp("sftp")
    root = base / "root"
    files = {
        "host_key": base / "ssh_host_ed25519",
        "authorized_keys": base / "demo_client.pub",
    }
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "include.sftp_server", "--host", "127.0.0.1", "--port", "0",
            "--root", str(root), "--host-key", str(files["host_key"]),
            "--authorized-keys", str(files["authorized_keys"]), "--user", USER,
            "--password-env", "DEMO_SFTP_TEST_PASSWORD",
        ],
        cwd=REPO,
        env={**os.environ, "DEMO_SFTP_TEST_PASSWORD": "demo-pass"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()  # the server prints one line once it listens
    if "listening on" not in line:
        proc.kill()
        pytest.fail(f"server did not start: {line!r} {proc.stderr.read()}")
    port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
    yield {
        "port": port,
        "root": root,
        "host_key": files["host_key"],
        "client_key": base / "demo_client",
        "base": base,
    }
    proc.terminate()
    proc.wait(timeout=10)


def _paramiko_sftp(server, key_path=None, password=None, username=USER, host_key=None):
    """Connect with paramiko, trusting only the server's own host key (or ``host_key`` instead)."""
    from include.sftp_server.client import connect_pinned

    client = connect_pinned("127.0.0.1", server["port"], host_key or server["host_key"], username,
                            key_file=key_path, password=password)
    return client, client.open_sftp()


def test_generates_keys_on_first_start(sftp_server):
    assert (sftp_server["host_key"].stat().st_mode & 0o777) == 0o600
    assert (sftp_server["client_key"].stat().st_mode & 0o777) == 0o600
    assert sftp_server["base"].joinpath("demo_client.pub").read_text().startswith("ssh-ed25519 ")


def test_list_put_get_and_posix_rename(sftp_server, tmp_path):
    (sftp_server["root"] / "partners" / "acme" / "inbound").mkdir(parents=True)
    local = tmp_path / "po.csv"
    local.write_bytes(b"po_number,amount\nPO-1,10.00\n")
    client, sftp = _paramiko_sftp(sftp_server, key_path=sftp_server["client_key"])
    try:
        assert sftp.listdir("/") == ["partners"]
        sftp.put(str(local), "/partners/acme/inbound/po.csv")
        assert sftp.listdir("/partners/acme/inbound") == ["po.csv"]
        assert (sftp_server["root"] / "partners/acme/inbound/po.csv").read_bytes() == local.read_bytes()

        sftp.mkdir("/partners/acme/archive")
        # posix_rename overwrites an existing target, which plain SFTP rename refuses.
        sftp.putfo(io.BytesIO(b"old"), "/partners/acme/archive/po.csv")
        sftp.posix_rename("/partners/acme/inbound/po.csv", "/partners/acme/archive/po.csv")
        assert sftp.listdir("/partners/acme/inbound") == []
        fetched = tmp_path / "fetched.csv"
        sftp.get("/partners/acme/archive/po.csv", str(fetched))
        assert fetched.read_bytes() == local.read_bytes()
        assert sftp.normalize(".") == "/"
    finally:
        client.close()


def test_cannot_escape_the_root(sftp_server):
    outside = sftp_server["base"] / "outside-secret.txt"
    outside.write_text("not for clients")
    client, sftp = _paramiko_sftp(sftp_server, key_path=sftp_server["client_key"])
    try:
        # ".." at the top maps back onto the root, never above it.
        assert sftp.normalize("/../..") == "/"
        assert "outside-secret.txt" not in sftp.listdir("/../..")
        with pytest.raises(FileNotFoundError):
            sftp.stat("../outside-secret.txt")
        with pytest.raises(FileNotFoundError):
            sftp.open("/../../outside-secret.txt").read()
        # A link is the way to point inside at outside: refused.
        with pytest.raises(PermissionError):
            sftp.symlink(str(outside), "/escape")
        assert not (sftp_server["root"] / "escape").exists()
    finally:
        client.close()


def test_wrong_key_and_wrong_user_are_rejected(sftp_server, tmp_path):
    import paramiko

    from include.sftp_server import ensure_client_key

    ensure_client_key(tmp_path / "stranger.pub")
    with pytest.raises(paramiko.AuthenticationException):
        _paramiko_sftp(sftp_server, key_path=tmp_path / "stranger")
    with pytest.raises(paramiko.AuthenticationException):
        _paramiko_sftp(sftp_server, password="wrong")

    # The right key under another user name is not a login either.
    with pytest.raises(paramiko.AuthenticationException):
        _paramiko_sftp(sftp_server, key_path=sftp_server["client_key"], username="mallory")


def test_password_login_when_enabled(sftp_server):
    client, sftp = _paramiko_sftp(sftp_server, password="demo-pass")
    try:
        assert sftp.normalize(".") == "/"
    finally:
        client.close()


def test_no_shell_or_exec(sftp_server):
    import paramiko

    client, _ = _paramiko_sftp(sftp_server, key_path=sftp_server["client_key"])
    try:
        with pytest.raises(paramiko.SSHException):
            client.exec_command("id")
        chan = client.get_transport().open_session()
        with pytest.raises(paramiko.SSHException):
            chan.invoke_shell()
    finally:
        client.close()


def test_client_with_a_different_host_key_refuses(sftp_server, tmp_path):
    import paramiko

    from include.sftp_server import ensure_host_key

    ensure_host_key(tmp_path / "other_host_key")
    with pytest.raises(paramiko.BadHostKeyException):
        _paramiko_sftp(sftp_server, key_path=sftp_server["client_key"], host_key=tmp_path / "other_host_key")


def sftp_connection_json(server) -> str:
    """The ``sftp_default`` connection exactly as the demo writes it."""
    from include.sftp_server.connection import sftp_connection

    return json.dumps(sftp_connection("127.0.0.1", server["port"], USER, server["host_key"], server["client_key"]))


def test_airflow_sftp_hook_with_pinned_host_key(sftp_server, monkeypatch):
    from airflow.providers.sftp.hooks.sftp import SFTPHook

    (sftp_server["root"] / "partners" / "globex" / "inbound").mkdir(parents=True, exist_ok=True)
    (sftp_server["root"] / "partners/globex/inbound/inv.csv").write_text("invoice_id\nI-1\n")
    monkeypatch.setenv("AIRFLOW_CONN_SFTP_DEFAULT", sftp_connection_json(sftp_server))

    hook = SFTPHook(ssh_conn_id="sftp_default")
    assert hook.no_host_key_check is False and hook.host_key is not None
    with hook.get_managed_conn() as sftp:
        # disabled_algorithms steers paramiko to AES-GCM, which the server offers.
        assert "gcm" in sftp.get_channel().get_transport().remote_cipher
        assert hook.list_directory("/partners/globex/inbound") == ["inv.csv"]
        hook.create_directory("/partners/globex/archive")
        sftp.posix_rename("/partners/globex/inbound/inv.csv", "/partners/globex/archive/inv.csv")
    assert (sftp_server["root"] / "partners/globex/archive/inv.csv").read_text() == "invoice_id\nI-1\n"


def test_airflow_sftp_hook_rejects_a_server_with_another_host_key(sftp_server, monkeypatch, tmp_path):
    from airflow.providers.sftp.hooks.sftp import SFTPHook
    import paramiko

    from include.sftp_server import ensure_host_key, public_key_line

    ensure_host_key(tmp_path / "impostor")
    conn = json.loads(sftp_connection_json(sftp_server))
    conn["extra"]["host_key"] = public_key_line(tmp_path / "impostor")
    monkeypatch.setenv("AIRFLOW_CONN_SFTP_DEFAULT", json.dumps(conn))
    with pytest.raises(paramiko.SSHException):
        SFTPHook(ssh_conn_id="sftp_default").list_directory("/")


def test_airflow_async_sftp_hook_with_pinned_host_key(sftp_server, monkeypatch):
    """The deferrable SFTPSensor's trigger uses SFTPHookAsync (asyncssh client): same connection works."""
    import asyncio

    from airflow.providers.sftp.hooks.sftp import SFTPHookAsync

    (sftp_server["root"] / "partners" / "initech" / "inbound").mkdir(parents=True, exist_ok=True)
    (sftp_server["root"] / "partners/initech/inbound/asn.csv").write_text("shipment_id\nS-1\n")
    monkeypatch.setenv("AIRFLOW_CONN_SFTP_DEFAULT", sftp_connection_json(sftp_server))

    async def list_inbound():
        return await SFTPHookAsync(sftp_conn_id="sftp_default").list_directory("/partners/initech/inbound")

    # Like OpenSSH's sshd, the server lists "." and ".."; the async hook passes them through.
    assert sorted(asyncio.run(list_inbound())) == [".", "..", "asn.csv"]
