"""The sshd fixture is a real, host-key-checked OpenSSH server that Airflow's SFTPHook can use."""
from __future__ import annotations

import json
import os
import subprocess

import paramiko
import pytest


def test_chroot_maps_remote_paths_and_is_safe(sshd_server):
    root = sshd_server.root
    assert root.stat().st_uid == 0 and (root.stat().st_mode & 0o022) == 0  # sshd's ChrootDirectory rules
    assert str(root).startswith("/srv/tg-test-sftp/")
    for key in ("acme", "globex", "initech"):
        for role in ("inbound", "outbound", "archive", "quarantine"):
            assert sshd_server.local_path(f"/partners/{key}/{role}").is_dir()
    with pytest.raises(ValueError):
        sshd_server.local_path("/../../etc/passwd")


def test_bare_paramiko_client_sees_the_chroot(sshd_server, clean_partner_folders):
    sshd_server.local_path("/partners/acme/inbound/hello.csv").write_text("a\n")
    sftp = sshd_server.sftp_client()
    try:
        assert sftp.listdir("/") == ["partners"]  # nothing of the host's file system is visible
        assert sftp.listdir("/partners/acme/inbound") == ["hello.csv"]
    finally:
        sftp.close()
    assert sshd_server.airflow_conn()["extra"]["host_key"].startswith("ssh-ed25519 AAAA")


def test_clean_partner_folders_empties_folders(sshd_server):
    sshd_server.local_path("/partners/globex/archive/old.csv").write_text("x")
    (sshd_server.local_path("/partners/globex/archive") / "sub").mkdir()
    sshd_server.clean_partner_folders()
    assert list(sshd_server.local_path("/partners/globex/archive").iterdir()) == []


def test_openssh_client_checks_the_host_key(sshd_server, clean_partner_folders, tmp_path):
    sshd_server.local_path("/partners/acme/outbound/ping.txt").write_text("pong")
    result = subprocess.run(
        ["sftp", "-q", *sshd_server.sftp_batch_args(), "-b", "-", f"{sshd_server.username}@{sshd_server.host}"],
        input=f"get /partners/acme/outbound/ping.txt {tmp_path}/ping.txt\n".encode(), capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ping.txt").read_text() == "pong"


def test_password_auth_is_refused(sshd_server):
    transport = paramiko.Transport((sshd_server.host, sshd_server.port))
    try:
        transport.start_client(timeout=10)
        with pytest.raises(paramiko.SSHException):
            transport.auth_password(sshd_server.username, "secret")
    finally:
        transport.close()


def _hook(monkeypatch, conn: dict):
    from airflow.providers.sftp.hooks.sftp import SFTPHook

    monkeypatch.setenv("AIRFLOW_CONN_SFTP_DEFAULT", json.dumps(conn))
    return SFTPHook(ssh_conn_id="sftp_default", conn_retry_attempts=1)


def test_sftp_hook_connects_with_the_fixture_connection(sshd_server, clean_partner_folders, monkeypatch):
    sshd_server.local_path("/partners/acme/inbound/INV-1.csv").write_text("id\n1\n")
    monkeypatch.setenv("AIRFLOW_CONN_SFTP_DEFAULT", sshd_server.airflow_conn_json())
    from airflow.providers.sftp.hooks.sftp import SFTPHook

    hook = SFTPHook(ssh_conn_id="sftp_default")
    assert hook.no_host_key_check is False and hook.host_key is not None
    with hook.get_managed_conn() as sftp:
        assert sftp.get_channel().get_transport().remote_cipher == "aes128-gcm@openssh.com"
        assert [a.filename for a in sftp.listdir_attr("/partners/acme/inbound")] == ["INV-1.csv"]
        sftp.posix_rename("/partners/acme/inbound/INV-1.csv", "/partners/acme/archive/INV-1.csv.x")
    assert sshd_server.local_path("/partners/acme/archive/INV-1.csv.x").exists()


def test_sftp_hook_rejects_a_wrong_host_key(sshd_server, monkeypatch, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    conn = sshd_server.airflow_conn()
    conn["extra"]["host_key"] = " ".join(other.with_suffix(".pub").read_text().split()[:2])
    hook = _hook(monkeypatch, conn)
    with pytest.raises(paramiko.BadHostKeyException):
        with hook.get_managed_conn():
            pass


def test_sftp_hook_without_host_key_refuses_unknown_server(sshd_server, monkeypatch):
    conn = sshd_server.airflow_conn()
    del conn["extra"]["host_key"]
    monkeypatch.setenv("HOME", "/nonexistent-home")  # no ~/.ssh/known_hosts to fall back on
    hook = _hook(monkeypatch, conn)
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        with hook.get_managed_conn():
            pass
