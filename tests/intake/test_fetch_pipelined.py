"""fetch_many's cross-file pipeline (include/intake/fetch.py: fetch_many_to_files) against the real
sshd: byte-identical copies, the per-file rules of fetch_to_file, timeouts, and that requests of
several files really are in flight together (counted, not timed)."""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from include.intake import FileChangedError, FileVanishedError, NotAttempted, TransferError, TransferTimeout
from include.intake.fetch import (
    DEFAULT_REQUEST_SIZE,
    DEFAULT_STALL_TIMEOUT,
    PIPELINE_MAX_SIZE,
    SINGLE_READ_MAX,
    FetchJob,
    PipelineStats,
    fetch_many_to_files,
    supports_batch_pipelining,
)

INBOUND = "/partners/acme/inbound"
#: "Ends at all": a hang would wait DEFAULT_STALL_TIMEOUT (60 s) or for ever; a busy machine may be
#: slow, so no tighter wall-clock bound (what ended the wait is asserted from the error itself).
ENDS_WITHIN = DEFAULT_STALL_TIMEOUT / 2

SIZES = [0, 1, 600, SINGLE_READ_MAX, SINGLE_READ_MAX + 1, 65536, DEFAULT_REQUEST_SIZE, DEFAULT_REQUEST_SIZE + 1,
         3 * DEFAULT_REQUEST_SIZE - 1, PIPELINE_MAX_SIZE]
ODD_NAMES = ["INV-with space.csv", "INV-ümlaut-€.csv", "INV-'quote\".csv", "INV-#hash%20.csv", "INV--dash.csv",
             "INV-" + "x" * 200 + ".csv"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def claim(inbox, drop, files: dict[str, bytes]):
    for name, data in files.items():
        drop.put(f"{INBOUND}/{name}", data)
    inbox.poll()
    ready = {r.file_name: r for r in inbox.poll().ready}
    assert sorted(ready) == sorted(files)
    return ready


def assert_session_clean(sftp):
    """Every request answered (nothing left for the next caller) and the session still works."""
    assert sftp._expecting == {}
    sftp.listdir(INBOUND)


def test_small_files_of_every_edge_size_are_byte_identical(drop, sftp, tmp_path):
    blobs = {f"{INBOUND}/s{size}.bin": os.urandom(size) for size in SIZES}
    for path, data in blobs.items():
        drop.put(path, data)
    stats = PipelineStats()
    jobs = [FetchJob(path, tmp_path / f"out-{i}", len(data)) for i, (path, data) in enumerate(blobs.items())]
    results = list(fetch_many_to_files(sftp, jobs, stats=stats))
    assert [index for index, _ in results] == list(range(len(jobs)))
    for (index, result), data in zip(results, blobs.values()):
        assert not isinstance(result, Exception), result
        assert result.size == len(data) and result.sha256 == sha(data)
        assert Path(result.local_path).read_bytes() == data
    assert not list(tmp_path.glob("*.partial"))
    assert stats.files == len(jobs) and stats.handles_opened == stats.handles_closed == len(jobs)
    assert stats.max_files_in_flight > 1 and stats.max_requests_in_flight > 1
    assert_session_clean(sftp)


def test_server_read_cap_inside_the_pipeline(drop, sftp, tmp_path):
    # OpenSSH answers at most ~255 KiB per read: 1 MiB requests come back short and the rest is asked for
    data = os.urandom(PIPELINE_MAX_SIZE)
    drop.put(f"{INBOUND}/capped.bin", data)
    drop.put(f"{INBOUND}/next.bin", b"next")
    jobs = [FetchJob(f"{INBOUND}/capped.bin", tmp_path / "capped", len(data)),
            FetchJob(f"{INBOUND}/next.bin", tmp_path / "next", 4)]
    results = dict(fetch_many_to_files(sftp, jobs, request_size=PIPELINE_MAX_SIZE))
    assert results[0].sha256 == sha(data) and (tmp_path / "capped").read_bytes() == data
    assert (tmp_path / "next").read_bytes() == b"next"
    assert_session_clean(sftp)


def test_fetch_many_pipelines_small_files_with_odd_names(make_partner, make_inbox, drop, ledger):
    inbox = make_inbox(make_partner())
    files = {f"INV-{i:03}.csv": os.urandom(600) for i in range(80)}
    files.update({name: os.urandom(100 + i) for i, name in enumerate(ODD_NAMES)})
    files["INV-empty.csv"] = b""
    files["INV-exact.csv"] = os.urandom(DEFAULT_REQUEST_SIZE)
    files["INV-over.csv"] = os.urandom(DEFAULT_REQUEST_SIZE + 1)
    ready = claim(inbox, drop, files)
    fetched, errors = inbox.fetch_many(list(ready.values()))
    assert errors == {}
    assert [f.file_name for f in fetched] == list(ready)  # in the order given
    for f in fetched:
        assert f.outcome == "fetched" and f.sha256 == sha(files[f.file_name]) and f.size == len(files[f.file_name])
        assert Path(f.local_path).read_bytes() == files[f.file_name]
    stored = ledger.get_many([f.entry_id for f in fetched])
    assert {(e.status, e.sha256) for e in stored.values()} == {("fetched", f.sha256) for f in fetched}
    stats = inbox.last_pipeline
    assert stats.files == len(files) and stats.handles_opened == stats.handles_closed == len(files)
    assert stats.max_files_in_flight >= 16 and stats.max_requests_in_flight >= 16  # really pipelined
    assert_session_clean(inbox.sftp)


def test_vanished_file_inside_a_batch(make_partner, make_inbox, drop, ledger, sshd_server):
    inbox = make_inbox(make_partner())
    files = {f"INV-{i:02}.csv": f"id\n{i}\n".encode() for i in range(20)}
    ready = claim(inbox, drop, files)
    sshd_server.local_path(f"{INBOUND}/INV-05.csv").unlink()
    fetched, errors = inbox.fetch_many(list(ready.values()))
    gone = ready["INV-05.csv"].entry_id
    assert list(errors) == [gone] and isinstance(errors[gone], FileVanishedError)
    assert [f.file_name for f in fetched] == [n for n in ready if n != "INV-05.csv"]
    assert ledger.get(gone).status == "vanished"
    assert inbox.last_pipeline.handles_opened == inbox.last_pipeline.handles_closed == 19
    assert_session_clean(inbox.sftp)


def test_grown_and_shrunk_files_inside_a_batch(make_partner, make_inbox, drop, ledger, staging):
    inbox = make_inbox(make_partner())
    files = {"INV-a.csv": os.urandom(500), "INV-grow.csv": os.urandom(500), "INV-shrink.csv": os.urandom(500),
             "INV-growbig.csv": os.urandom(65536), "INV-shrinkbig.csv": os.urandom(65536),
             "INV-b.csv": os.urandom(700)}
    ready = claim(inbox, drop, files)
    drop.put(f"{INBOUND}/INV-grow.csv", files["INV-grow.csv"] + b"x")
    drop.put(f"{INBOUND}/INV-shrink.csv", files["INV-shrink.csv"][:300])
    drop.put(f"{INBOUND}/INV-growbig.csv", files["INV-growbig.csv"] + b"x")  # piecewise reads + probe
    drop.put(f"{INBOUND}/INV-shrinkbig.csv", files["INV-shrinkbig.csv"][:40000])
    fetched, errors = inbox.fetch_many(list(ready.values()))
    assert [f.file_name for f in fetched] == ["INV-a.csv", "INV-b.csv"]
    changed = {name: errors[ready[name].entry_id] for name in ("INV-grow.csv", "INV-shrink.csv", "INV-growbig.csv",
                                                               "INV-shrinkbig.csv")}
    assert set(errors) == {ready[name].entry_id for name in changed}
    assert all(isinstance(exc, FileChangedError) for exc in changed.values())
    # the handle check (FSTAT: not the listed size) refuses them before any byte of theirs is used
    for name, size in (("INV-grow.csv", 500), ("INV-shrink.csv", 500), ("INV-growbig.csv", 65536),
                       ("INV-shrinkbig.csv", 65536)):
        assert f"changed while fetching: listed {size} bytes" in str(changed[name])
    for name in changed:
        entry = ledger.get(ready[name].entry_id)
        assert entry.status == "seen" and entry.claimed_by is None  # readiness starts over
    assert not list(staging.rglob("*.partial"))
    assert not [p for p in staging.rglob("*") if "grow" in p.name or "shrink" in p.name]
    assert inbox.last_pipeline.handles_opened == inbox.last_pipeline.handles_closed == 6
    assert_session_clean(inbox.sftp)


def test_stalled_server_times_out_the_batch_without_hanging(make_partner, make_inbox, drop, ledger, sshd_server):
    """A FIFO in place of a claimed file: the server blocks in its OPEN, the session stalls."""
    partner = make_partner()
    client = sshd_server.sftp_client()
    fifo = sshd_server.local_path(f"{INBOUND}/INV-04.csv")
    try:
        inbox = make_inbox(partner, client=client)
        ready = claim(inbox, drop, {f"INV-{i:02}.csv": f"id\n{i}\n".encode() for i in range(12)})
        fifo.unlink()
        os.mkfifo(fifo)
        order = list(ready.values())
        started = time.monotonic()
        fetched, errors = inbox.fetch_many(order, timeout=0.5)
        elapsed = time.monotonic() - started
        assert client.get_channel().closed  # dropped before the error was handed out
    finally:
        client.close()  # a timed-out session is dropped, as documented
        try:  # let the server's blocked open return
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
    assert elapsed < ENDS_WITHIN, elapsed
    names = [r.file_name for r in order]
    stalled = ready["INV-04.csv"].entry_id
    assert isinstance(errors[stalled], TransferTimeout) and "time bound" in str(errors[stalled])
    assert "no answer to its OPEN" in str(errors[stalled])
    # everything else is either fetched (before the stall) or not attempted, entries untouched
    assert {f.file_name for f in fetched} | {n for n in names if ready[n].entry_id in errors} == set(names)
    for name in names:
        if name == "INV-04.csv" or ready[name].entry_id not in errors:
            continue
        assert isinstance(errors[ready[name].entry_id], NotAttempted)
        entry = ledger.get(ready[name].entry_id)
        assert entry.status == "ready" and entry.error is None and entry.claimed_by == inbox.claimed_by
    assert ledger.get(stalled).status == "ready" and "time bound" in ledger.get(stalled).error
    # the next run over a new session gets the others
    fifo.unlink()
    retry, again = make_inbox(partner).fetch_many([r for r in order if r.file_name != "INV-04.csv"])
    assert again == {} and len(retry) == 11


def test_tiny_timeout_with_many_files(make_partner, make_inbox, drop, ledger, sshd_server):
    partner = make_partner()
    client = sshd_server.sftp_client()
    try:
        inbox = make_inbox(partner, client=client)
        ready = claim(inbox, drop, {f"INV-{i:03}.csv": os.urandom(600) for i in range(200)})
        order = list(ready.values())
        started = time.monotonic()
        fetched, errors = inbox.fetch_many(order, timeout=0.00001)
        elapsed = time.monotonic() - started
        assert client.get_channel().closed
    finally:
        client.close()
    assert elapsed < ENDS_WITHIN, elapsed
    timeouts = [i for i, exc in errors.items() if isinstance(exc, TransferTimeout)]
    assert len(timeouts) == 1
    assert all(isinstance(exc, NotAttempted) for i, exc in errors.items() if i != timeouts[0])
    assert len(fetched) + len(errors) == 200
    position = [r.entry_id for r in order].index(timeouts[0])
    assert all(r.entry_id in errors for r in order[position:])  # nothing after the timeout is handed out


def test_consumer_stopping_early_leaves_no_handle_or_partial(drop, sftp, tmp_path):
    for i in range(40):
        drop.put(f"{INBOUND}/f{i}.bin", os.urandom(2000))
    stats = PipelineStats()
    batch = fetch_many_to_files(sftp, [FetchJob(f"{INBOUND}/f{i}.bin", tmp_path / f"f{i}", 2000) for i in range(40)],
                                stats=stats)
    index, result = next(batch)
    assert index == 0 and result.size == 2000
    batch.close()
    assert stats.handles_opened == stats.handles_closed > 1
    assert not list(tmp_path.glob("*.partial"))
    assert_session_clean(sftp)


def test_local_write_error_is_a_transfer_error_of_that_file(drop, sftp, tmp_path):
    drop.put(f"{INBOUND}/a.bin", b"a")
    drop.put(f"{INBOUND}/b.bin", b"b")
    (tmp_path / "not-a-dir").write_text("")
    results = dict(fetch_many_to_files(sftp, [FetchJob(f"{INBOUND}/a.bin", tmp_path / "not-a-dir" / "a", 1),
                                              FetchJob(f"{INBOUND}/b.bin", tmp_path / "b", 1)]))
    assert isinstance(results[0], TransferError) and not isinstance(results[0], TransferTimeout)
    assert (tmp_path / "b").read_bytes() == b"b"
    assert_session_clean(sftp)


def test_lost_session_fails_the_rest_without_hanging(drop, sshd_server, tmp_path, clean_partner_folders):
    count = 300  # more than a window: some are not even opened when the connection goes
    for i in range(count):
        drop.put(f"{INBOUND}/f{i}.bin", os.urandom(100))
    client = sshd_server.sftp_client()
    try:
        batch = fetch_many_to_files(client, [FetchJob(f"{INBOUND}/f{i}.bin", tmp_path / f"f{i}", 100)
                                             for i in range(count)])
        first = next(batch)
        client.get_channel().get_transport().close()
        started = time.monotonic()
        rest = list(batch)
        elapsed = time.monotonic() - started
    finally:
        client.close()
    assert elapsed < ENDS_WITHIN, elapsed
    assert first[0] == 0 and not isinstance(first[1], Exception)
    assert [i for i, _ in rest] == list(range(1, count))
    failed = [r for _, r in rest if isinstance(r, Exception)]
    assert failed and all(isinstance(r, TransferError) and not isinstance(r, TransferTimeout) for r in failed)
    assert isinstance(rest[-1][1], TransferError)
    assert not list(tmp_path.glob("*.partial"))


class OpenWrapper:
    """Changes how files are opened: must keep the per-file path."""

    def __init__(self, real):
        self._real = real
        self.opened = []

    def __getattr__(self, name):
        return getattr(self._real, name)

    def open(self, path, *args, **kwargs):
        self.opened.append(path)
        return self._real.open(path, *args, **kwargs)


class Forwarder:
    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)


def test_which_clients_get_the_cross_file_pipeline(make_partner, make_inbox, drop, sftp):
    assert supports_batch_pipelining(sftp) and supports_batch_pipelining(Forwarder(sftp))
    wrapper = OpenWrapper(sftp)
    assert not supports_batch_pipelining(wrapper)
    inbox = make_inbox(make_partner(), client=wrapper)
    ready = claim(inbox, drop, {"INV-1.csv": b"id\n1\n", "INV-2.csv": b"id\n2\n"})
    fetched, errors = inbox.fetch_many(list(ready.values()))
    assert errors == {} and len(fetched) == 2
    assert inbox.last_pipeline is None and wrapper.opened == [f"{INBOUND}/INV-1.csv", f"{INBOUND}/INV-2.csv"]


def test_big_files_between_small_ones_keep_the_order(make_partner, make_inbox, drop):
    inbox = make_inbox(make_partner())
    big = os.urandom(PIPELINE_MAX_SIZE + 1)
    ready = claim(inbox, drop, {"INV-1.csv": b"1", "INV-2.csv": b"22", "INV-big.csv": big, "INV-3.csv": b"333"})
    order = [ready[n] for n in ("INV-1.csv", "INV-big.csv", "INV-2.csv", "INV-3.csv")]
    fetched, errors = inbox.fetch_many(order)
    assert errors == {} and [f.file_name for f in fetched] == ["INV-1.csv", "INV-big.csv", "INV-2.csv", "INV-3.csv"]
    assert fetched[1].sha256 == sha(big) and inbox.last_pipeline.files == 3


@pytest.mark.parametrize("window", [1, 3])
def test_small_windows(drop, sftp, tmp_path, window):
    blobs = [os.urandom(n) for n in (0, 10, 40000, 5, 600_000, 7)]
    for i, data in enumerate(blobs):
        drop.put(f"{INBOUND}/w{i}.bin", data)
    stats = PipelineStats()
    results = list(fetch_many_to_files(sftp, [FetchJob(f"{INBOUND}/w{i}.bin", tmp_path / f"w{i}", len(d))
                                              for i, d in enumerate(blobs)], window_files=window,
                                       window_bytes=64 * 1024, stats=stats))
    assert [r.sha256 for _, r in results] == [sha(d) for d in blobs]
    assert stats.max_files_in_flight <= window
    assert_session_clean(sftp)
