"""A timeout that cuts an SFTP packet mid-read ends as TransferTimeout with the session dropped.

The stall is made by bytes, not by the clock: the sshd is reached through a relay
(tests.support.sshd.HoldingRelay) that forwards CUT bytes of the server's answers after the fetch
starts, then holds the rest until the test releases it. CUT is far inside the first 252 KiB read
answer (the OPEN answer before it is ~100 bytes), so the client has taken in part of an SFTP
packet when its timeout fires, every run. Once released, the rest of that packet would reach an
SFTP client still reading the session as garbage ("Garbage packet received"): the session must
be closed before the error surfaces, and no later call may read from it.
"""
from __future__ import annotations

import os

import pytest

from include.intake import NotAttempted, TransferTimeout, fetch_to_file
from include.intake.fetch import DEFAULT_REQUEST_SIZE, FetchJob, fetch_many_to_files

INBOUND = "/partners/acme/inbound"
CUT = 100_000  # bytes of the server's answers let through: inside the first read answer
FILE_SIZE = 8 * 1024 * 1024  # needs far more than CUT bytes of answers


def session_dropped(sftp) -> bool:
    channel = sftp.get_channel()
    return channel.closed and not channel.get_transport().is_active()


def assert_unusable_after_release(relay, sftp) -> None:
    """Once the held bytes flow again, the old session answers nothing: it is closed (OSError,
    EOFError), never desynchronised (paramiko's SFTPError "Garbage packet received")."""
    relay.release()
    with pytest.raises((OSError, EOFError)):
        sftp.listdir(INBOUND)


@pytest.fixture
def cut_session(sshd_server, sshd_relay, clean_partner_folders):
    """An SFTP session through the relay; closed at the end whatever the test did to it."""
    client = sshd_server.sftp_client(port=sshd_relay.port)
    yield client
    sshd_relay.release()
    client.close()


@pytest.mark.parametrize("bound", ["deadline", "stall"])
def test_cut_mid_packet_is_a_timeout_and_drops_the_session(drop, sshd_relay, cut_session, tmp_path, bound):
    drop.put(f"{INBOUND}/big.bin", os.urandom(FILE_SIZE))
    limits = {"timeout": 0.5} if bound == "deadline" else {"stall_timeout": 0.5}
    sshd_relay.hold_after(CUT)
    with pytest.raises(TransferTimeout) as raised:
        fetch_to_file(cut_session, f"{INBOUND}/big.bin", tmp_path / "big.bin", expected_size=FILE_SIZE, **limits)
    assert sshd_relay.held.is_set()  # the answers really were cut, not merely slow
    assert ("exceeded its time bound" if bound == "deadline" else "stalled") in str(raised.value)
    assert session_dropped(cut_session)
    assert not (tmp_path / "big.bin").exists() and not (tmp_path / "big.bin.partial").exists()
    assert_unusable_after_release(sshd_relay, cut_session)


def test_inbox_fetch_cut_mid_packet_keeps_entry_claimed_with_error(make_partner, make_inbox, drop, ledger,
                                                                   sshd_server, sshd_relay, cut_session):
    drop.put(f"{INBOUND}/INV-big.csv", os.urandom(FILE_SIZE))
    inbox = make_inbox(make_partner(), client=cut_session)
    inbox.poll()
    ready = inbox.poll().ready[0]
    sshd_relay.hold_after(CUT)
    with pytest.raises(TransferTimeout):
        inbox.fetch(ready, timeout=0.5)
    assert sshd_relay.held.is_set() and session_dropped(cut_session)
    entry = ledger.get(ready.entry_id)
    assert entry.status == "ready" and "time bound" in entry.error and entry.claimed_by == inbox.claimed_by
    assert drop.names(INBOUND) == ["INV-big.csv"]  # nothing moved, nothing lost
    assert_unusable_after_release(sshd_relay, cut_session)
    # a new session fetches it
    fresh = sshd_server.sftp_client()
    try:
        assert make_inbox(inbox.partner, client=fresh).fetch(ready).outcome == "fetched"
    finally:
        fresh.close()


def test_pipelined_batch_cut_mid_packet_is_a_timeout_and_drops_the_session(drop, sshd_relay, cut_session, tmp_path):
    size = 4 * DEFAULT_REQUEST_SIZE  # pipelined (<= 1 MiB); its first read answer is cut
    names = [f"f{i}.bin" for i in range(4)]
    for name in names:
        drop.put(f"{INBOUND}/{name}", os.urandom(size))
    jobs = [FetchJob(f"{INBOUND}/{name}", tmp_path / name, size, timeout=0.5) for name in names]
    sshd_relay.hold_after(CUT)
    results = dict(fetch_many_to_files(cut_session, jobs))
    assert sshd_relay.held.is_set()
    assert isinstance(results[0], TransferTimeout) and "no answer to its READ" in str(results[0])
    assert all(isinstance(results[i], NotAttempted) for i in results if i != 0)  # the window behind it
    assert session_dropped(cut_session)
    assert not list(tmp_path.iterdir())  # nothing written, no .partial
    assert_unusable_after_release(sshd_relay, cut_session)


def test_inbox_fetch_many_cut_mid_packet(make_partner, make_inbox, drop, ledger, sshd_relay, cut_session):
    inbox = make_inbox(make_partner(), client=cut_session)
    for i in range(3):
        drop.put(f"{INBOUND}/INV-{i}.csv", os.urandom(2 * 1024 * 1024))  # per file (> 1 MiB): fetch_to_file
    inbox.poll()
    ready = sorted(inbox.poll().ready, key=lambda r: r.file_name)
    sshd_relay.hold_after(CUT)
    fetched, errors = inbox.fetch_many(ready, timeout=0.5)
    assert fetched == [] and sshd_relay.held.is_set()
    first, *rest = ready
    assert isinstance(errors[first.entry_id], TransferTimeout)
    assert all(isinstance(errors[r.entry_id], NotAttempted) for r in rest)
    assert session_dropped(cut_session)
    assert "time bound" in ledger.get(first.entry_id).error
    assert all(ledger.get(r.entry_id).error is None for r in rest)  # not attempted: untouched
    assert_unusable_after_release(sshd_relay, cut_session)
