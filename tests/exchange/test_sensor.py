"""The kit's inbound sensor trigger against the real sshd: folders never count as delivered files."""
from __future__ import annotations

import asyncio

import pytest

from include.exchange.sensor import PartnerInboundSensor, wait_seconds
from include.exchange.triggers import PartnerFilesTrigger, regular_files_matching

INBOUND = "/partners/acme/inbound"


@pytest.fixture
def sftp_conn(sshd_server, clean_partner_folders, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SFTP_DEFAULT", sshd_server.airflow_conn_json())
    return sshd_server


def _listing(sshd) -> list:
    from airflow.providers.sftp.hooks.sftp import SFTPHookAsync

    async def read():
        return await SFTPHookAsync(sftp_conn_id="sftp_default").read_directory(INBOUND)

    return asyncio.run(read())


def test_a_sub_folder_is_not_a_delivery_but_a_file_is(sftp_conn):
    inbound = sftp_conn.local_path(INBOUND)
    (inbound / "catalog").mkdir()
    (inbound / "INV-1.csv.d").mkdir()  # a folder whose name looks like a file
    listing = _listing(sftp_conn)
    names = {e.filename for e in listing}
    assert {"catalog", "INV-1.csv.d", ".", ".."} <= names  # the server lists them all ...
    assert regular_files_matching(listing, PartnerInboundSensor.DEFAULT_PATTERN) == []  # ... none is a file

    (inbound / "INV-2.csv").write_text("a,b\n1,2\n")
    (inbound / ".INV-3.csv.part").write_text("uploading")
    assert regular_files_matching(_listing(sftp_conn), PartnerInboundSensor.DEFAULT_PATTERN) == ["INV-2.csv"]

    async def first_event():
        trigger = PartnerFilesTrigger(path=INBOUND, file_pattern=PartnerInboundSensor.DEFAULT_PATTERN,
                                      sftp_conn_id="sftp_default", poke_interval=0.1)
        async for event in trigger.run():
            return event.payload

    event = asyncio.run(asyncio.wait_for(first_event(), timeout=60))
    assert event["status"] == "success" and "INV-2.csv" in event["message"] and "catalog" not in event["message"]


def test_paramiko_listings_are_filtered_the_same_way(sftp_conn):
    inbound = sftp_conn.local_path(INBOUND)
    (inbound / "catalog").mkdir()
    (inbound / "PO-9.csv").write_text("x\n")
    sftp = sftp_conn.sftp_client()
    try:
        assert regular_files_matching(sftp.listdir_attr(INBOUND), "[!.]*") == ["PO-9.csv"]
    finally:
        sftp.close()


def test_trigger_serializes_to_its_own_class():
    path, kwargs = PartnerFilesTrigger(path=INBOUND, file_pattern="*.csv", poke_interval=5).serialize()
    assert path == "include.exchange.triggers.PartnerFilesTrigger"
    assert PartnerFilesTrigger(**kwargs).serialize() == (path, kwargs)


def test_wait_seconds_reads_the_environment(monkeypatch):
    monkeypatch.setenv("X_WAIT", "42")
    assert wait_seconds("X_WAIT", 600) == 42
    monkeypatch.setenv("X_WAIT", "soon")
    assert wait_seconds("X_WAIT", 600) == 600
