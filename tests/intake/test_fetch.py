"""Fetch: streamed to staging with the right sha256, bounded memory and time, one session per batch."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from include.intake import TransferError, TransferTimeout, fetch_to_file

INBOUND = "/partners/acme/inbound"
REPO = Path(__file__).resolve().parents[2]


class MinimalClient:
    """Only the documented protocol (no paramiko internals): exercises the sequential path."""

    def __init__(self, real):
        self._real = real

    def listdir_attr(self, path):
        return self._real.listdir_attr(path)

    def open(self, path, mode="r"):
        return self._real.open(path, mode)

    def stat(self, path):
        return self._real.stat(path)

    def posix_rename(self, source, target):
        return self._real.posix_rename(source, target)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 3 * 1024 * 1024 + 17])
def test_fetch_to_file_streams_with_correct_sha256(drop, sftp, tmp_path, size):
    source = drop.put(f"{INBOUND}/blob.bin", os.urandom(size))
    result = fetch_to_file(sftp, f"{INBOUND}/blob.bin", tmp_path / "out.bin", expected_size=size)
    assert result.method == "pipelined"
    assert result.size == size
    assert result.sha256 == sha256_of(source)
    assert sha256_of(tmp_path / "out.bin") == result.sha256
    assert not (tmp_path / "out.bin.partial").exists()


def test_sequential_fallback_for_plain_clients(drop, sftp, tmp_path):
    source = drop.put(f"{INBOUND}/blob.bin", os.urandom(300_001))
    result = fetch_to_file(MinimalClient(sftp), f"{INBOUND}/blob.bin", tmp_path / "out.bin")
    assert result.method == "sequential" and result.sha256 == sha256_of(source)


def test_session_stays_usable_after_fetch(drop, sftp, tmp_path):
    drop.put(f"{INBOUND}/a.bin", os.urandom(1_000_000))
    drop.put(f"{INBOUND}/b.bin", b"second")
    fetch_to_file(sftp, f"{INBOUND}/a.bin", tmp_path / "a.bin")
    # no stray answers left on the session: the next requests get their own responses
    assert sorted(sftp.listdir(INBOUND)) == ["a.bin", "b.bin"]
    with sftp.open(f"{INBOUND}/b.bin", "rb") as handle:
        assert handle.read() == b"second"


def test_changed_size_is_a_transfer_error(drop, sftp, tmp_path):
    drop.put(f"{INBOUND}/grow.bin", os.urandom(5000))
    with pytest.raises(TransferError, match="changed while fetching: listed 4000 bytes"):
        fetch_to_file(sftp, f"{INBOUND}/grow.bin", tmp_path / "grow.bin", expected_size=4000)
    assert not (tmp_path / "grow.bin").exists() and not (tmp_path / "grow.bin.partial").exists()


def test_shrunk_file_is_a_transfer_error(drop, sftp, tmp_path):
    drop.put(f"{INBOUND}/shrink.bin", os.urandom(3000))
    # the handle check (FSTAT) sees the other size before any byte is read
    with pytest.raises(TransferError, match="changed while fetching: listed 4000 bytes"):
        fetch_to_file(sftp, f"{INBOUND}/shrink.bin", tmp_path / "shrink.bin", expected_size=4000)


def test_server_read_cap_is_learnt(drop, sftp, tmp_path):
    source = drop.put(f"{INBOUND}/capped.bin", os.urandom(3 * 1024 * 1024 + 5))
    # OpenSSH answers at most ~255 KiB per read: 1 MiB requests come back short and the reader adapts
    result = fetch_to_file(sftp, f"{INBOUND}/capped.bin", tmp_path / "capped.bin", expected_size=source.stat().st_size,
                           request_size=1024 * 1024, max_requests=4)
    assert result.sha256 == sha256_of(source)


def test_vanished_file_is_a_transfer_error(sftp, tmp_path, clean_partner_folders):
    with pytest.raises(TransferError, match="vanished"):
        fetch_to_file(sftp, f"{INBOUND}/nothing.bin", tmp_path / "x.bin")


def test_time_bound_raises_transfer_timeout(drop, sftp, tmp_path):
    drop.put(f"{INBOUND}/big.bin", os.urandom(16 * 1024 * 1024))
    with pytest.raises(TransferTimeout, match="exceeded its time bound"):
        fetch_to_file(sftp, f"{INBOUND}/big.bin", tmp_path / "big.bin", timeout=0.001)
    assert not (tmp_path / "big.bin").exists()
    assert sftp.get_channel().closed and not sftp.get_channel().get_transport().is_active()  # dropped


def test_inbox_fetch_records_sha_and_staging_path(make_partner, make_inbox, drop, ledger, staging):
    source = drop.put(f"{INBOUND}/INV-7.csv", b"id,amount\n7,70\n")
    inbox = make_inbox(make_partner())
    inbox.poll()
    ready = inbox.poll().ready[0]
    fetched = inbox.fetch(ready)
    assert fetched.outcome == "fetched" and fetched.sha256 == sha256_of(source)
    assert Path(fetched.local_path) == staging / inbox.partner.key / f"{ready.entry_id}-INV-7.csv"
    entry = ledger.get(ready.entry_id)
    assert (entry.status, entry.sha256, entry.size, entry.local_path) == (
        "fetched", fetched.sha256, 15, fetched.local_path)
    assert type(fetched).from_dict(json.loads(json.dumps(fetched.to_dict()))) == fetched  # XCom-safe


def test_inbox_fetch_timeout_keeps_entry_claimed_with_error(make_partner, make_inbox, drop, ledger, sshd_server):
    drop.put(f"{INBOUND}/INV-big.csv", os.urandom(8 * 1024 * 1024))
    client = sshd_server.sftp_client()
    try:
        inbox = make_inbox(make_partner(), client=client)
        inbox.poll()
        ready = inbox.poll().ready[0]
        with pytest.raises(TransferTimeout):
            inbox.fetch(ready, timeout=0.001)
        # dropped by the fetch itself, whether the timeout cut a packet or not (see test_fetch_cut_packet.py)
        assert client.get_channel().closed and not client.get_channel().get_transport().is_active()
    finally:
        client.close()
    entry = ledger.get(ready.entry_id)
    assert entry.status == "ready" and "time bound" in entry.error
    assert drop.names(INBOUND) == ["INV-big.csv"]  # nothing moved, nothing lost


def test_file_rewritten_after_claim_goes_back_to_readiness(make_partner, make_inbox, drop, ledger):
    from include.intake import FileChangedError

    inbox = make_inbox(make_partner())
    drop.put(f"{INBOUND}/INV-5.csv", "id\n5\n")
    inbox.poll()
    ready = inbox.poll().ready[0]
    drop.put(f"{INBOUND}/INV-5.csv", "id\n5\n6\n")  # the partner uploads again over it
    with pytest.raises(FileChangedError):
        inbox.fetch(ready)
    entry = ledger.get(ready.entry_id)
    assert entry.status == "seen" and entry.claimed_by is None and "changed while fetching" in entry.error
    with pytest.raises(FileChangedError):  # retried at once: still the transfer error
        inbox.fetch(ready)
    inbox.poll()
    again = inbox.poll().ready
    assert [r.entry_id for r in again] == [ready.entry_id] and again[0].size == len("id\n5\n6\n")
    assert inbox.fetch(again[0]).outcome == "fetched"


def test_file_withdrawn_after_claim_is_closed_as_vanished(make_partner, make_inbox, drop, ledger, sshd_server):
    from include.intake import FileVanishedError

    inbox = make_inbox(make_partner())
    drop.put(f"{INBOUND}/INV-6.csv", "id\n6\n")
    inbox.poll()
    ready = inbox.poll().ready[0]
    sshd_server.local_path(f"{INBOUND}/INV-6.csv").unlink()
    with pytest.raises(FileVanishedError):
        inbox.fetch(ready)
    entry = ledger.get(ready.entry_id)
    assert entry.status == "vanished" and entry.closed_at is not None
    with pytest.raises(FileVanishedError):  # a retry gets the same transfer error, not a state error
        inbox.fetch(ready)


def _accepted_logins(server) -> int:
    return (server.workdir / "sshd.log").read_text(errors="replace").count("Accepted publickey")


def test_batch_of_small_files_reuses_one_session(make_partner, make_inbox, drop, sshd_server, ledger):
    for i in range(150):
        drop.put(f"{INBOUND}/INV-{i:04}.csv", f"id,amount\n{i},{i * 10}\n")
    client = sshd_server.sftp_client()
    logins_before = _accepted_logins(sshd_server)
    try:
        inbox = make_inbox(make_partner(), client=client)
        inbox.poll()
        ready = inbox.poll().ready
        assert len(ready) == 150
        fetched, errors = inbox.fetch_all(ready)
    finally:
        client.close()
    assert errors == {}
    assert len(fetched) == 150 and {f.outcome for f in fetched} == {"fetched"}
    assert _accepted_logins(sshd_server) == logins_before  # no new SSH connection for the batch
    for item in fetched[:5]:
        assert hashlib.sha256(Path(item.local_path).read_bytes()).hexdigest() == item.sha256


RSS_PROBE = textwrap.dedent("""
    import json, sys, threading, time
    sys.path.insert(0, sys.argv[1])
    import paramiko
    from include.intake import fetch_to_file

    args = json.loads(sys.argv[2])
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.load_host_keys(args["known_hosts"])
    client.connect(args["host"], port=args["port"], username=args["user"], key_filename=args["key"],
                   look_for_keys=False, allow_agent=False)
    sftp = client.open_sftp()

    def rss():
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024

    baseline = rss()
    peak = [baseline]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    result = fetch_to_file(sftp, args["remote"], args["local"], expected_size=args["size"])
    done.set()
    sampler.join()
    print(json.dumps({"baseline": baseline, "peak": peak[0], "sha256": result.sha256, "size": result.size}))
""")


@pytest.mark.slow
def test_large_file_is_streamed_without_rss_growth(drop, sshd_server, tmp_path):
    size = 96 * 1024 * 1024
    local_source = sshd_server.local_path(f"{INBOUND}/large.bin")
    with open(local_source, "wb") as out:
        for _ in range(size // (1 << 20)):
            out.write(os.urandom(1 << 20))
    args = {"known_hosts": str(sshd_server.known_hosts_path), "host": sshd_server.host, "port": sshd_server.port,
            "user": sshd_server.username, "key": str(sshd_server.private_key_path),
            "remote": f"{INBOUND}/large.bin", "local": str(tmp_path / "large.bin"), "size": size}
    probe = subprocess.run([sys.executable, "-c", RSS_PROBE, str(REPO), json.dumps(args)],
                           capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr[-2000:]
    report = json.loads(probe.stdout.strip().splitlines()[-1])
    assert report["size"] == size and report["sha256"] == sha256_of(local_source)
    growth = report["peak"] - report["baseline"]
    assert growth < 32 * 1024 * 1024, f"RSS grew by {growth / 2**20:.1f} MiB while fetching 96 MiB"
