"""fetch_many: the rules of fetch (duplicates, changed/vanished files, manifests, timeouts) for a
batch over one session, with the ledger bookkeeping in a constant number of statements."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from sqlalchemy import event

from include.intake import (
    FileChangedError,
    FileVanishedError,
    Ledger,
    LedgerStateError,
    NotAttempted,
    PartnerInbox,
    TransferTimeout,
)

INBOUND = "/partners/acme/inbound"
ARCHIVE = "/partners/acme/archive"
QUARANTINE = "/partners/acme/quarantine"


def claim_all(inbox, drop, files: dict[str, bytes | str]):
    for name, data in files.items():
        drop.put(f"{INBOUND}/{name}", data)
    inbox.poll()
    ready = inbox.poll().ready
    assert sorted(r.file_name for r in ready) == sorted(n for n in files if not n.endswith((".sha256", ".done")))
    return {r.file_name: r for r in ready}


def test_fetch_many_sorts_out_duplicates_changes_and_vanished_files(make_partner, make_inbox, drop, ledger, sshd_server):
    inbox = make_inbox(make_partner())
    earlier = claim_all(inbox, drop, {"INV-0.csv": "id\n0\n"})["INV-0.csv"]
    first, errors = inbox.fetch_many([earlier])
    assert errors == {} and first[0].outcome == "fetched"
    inbox.archive(first[0])
    ready = claim_all(inbox, drop, {
        "INV-1.csv": "id\n1\n", "INV-2.csv": "id\n2\n", "INV-3.csv": "id\n2\n",  # 3 = same bytes as 2
        "INV-4.csv": "id\n0\n",  # same bytes as the archived INV-0.csv
        "INV-5.csv": "id\n5\n", "INV-6.csv": "id\n6\n"})
    drop.put(f"{INBOUND}/INV-5.csv", "id\n5\n55\n")  # rewritten after the claim
    sshd_server.local_path(f"{INBOUND}/INV-6.csv").unlink()  # withdrawn after the claim
    order = [ready[n] for n in ("INV-1.csv", "INV-2.csv", "INV-3.csv", "INV-4.csv", "INV-5.csv", "INV-6.csv")]
    fetched, errors = inbox.fetch_many(order)
    by_name = {f.file_name: f for f in fetched}
    assert [f.file_name for f in fetched] == ["INV-1.csv", "INV-2.csv", "INV-3.csv", "INV-4.csv"]
    assert {n: f.outcome for n, f in by_name.items()} == {
        "INV-1.csv": "fetched", "INV-2.csv": "fetched", "INV-3.csv": "duplicate", "INV-4.csv": "duplicate"}
    assert by_name["INV-3.csv"].duplicate_of == ready["INV-2.csv"].entry_id  # first in the batch is the original
    assert by_name["INV-4.csv"].duplicate_of == earlier.entry_id  # against an earlier delivery
    assert set(errors) == {ready["INV-5.csv"].entry_id, ready["INV-6.csv"].entry_id}
    assert isinstance(errors[ready["INV-5.csv"].entry_id], FileChangedError)
    assert isinstance(errors[ready["INV-6.csv"].entry_id], FileVanishedError)
    stored = ledger.get_many([r.entry_id for r in order])
    statuses = {e.file_name: (e.status, e.is_open) for e in stored.values()}
    assert statuses == {"INV-1.csv": ("fetched", True), "INV-2.csv": ("fetched", True),
                        "INV-3.csv": ("duplicate", False), "INV-4.csv": ("duplicate", False),
                        "INV-5.csv": ("seen", True), "INV-6.csv": ("vanished", False)}
    assert stored[ready["INV-5.csv"].entry_id].claimed_by is None
    assert stored[ready["INV-2.csv"].entry_id].content_key == hashlib.sha256(b"id\n2\n").hexdigest()
    assert stored[ready["INV-3.csv"].entry_id].content_key is None
    # duplicates went to the archive (nothing deleted), the originals and the rewritten file stay
    assert drop.names(INBOUND) == ["INV-1.csv", "INV-2.csv", "INV-5.csv"]
    assert by_name["INV-3.csv"].final_path.startswith(ARCHIVE + "/INV-3.csv.")
    assert len(drop.names(ARCHIVE)) == 3
    for f in fetched:
        assert hashlib.sha256(Path(f.local_path).read_bytes()).hexdigest() == f.sha256
    # a rerun of the same batch: the transfer errors again, not state errors
    _, again = inbox.fetch_many([ready["INV-5.csv"], ready["INV-6.csv"]])
    assert isinstance(again[ready["INV-5.csv"].entry_id], FileChangedError)
    assert isinstance(again[ready["INV-6.csv"].entry_id], FileVanishedError)
    _, closed = inbox.fetch_many([ready["INV-3.csv"]])
    assert isinstance(closed[ready["INV-3.csv"].entry_id], LedgerStateError)


def test_fetch_many_checks_manifests(make_partner, make_inbox, drop, ledger):
    inbox = make_inbox(make_partner(marker="manifest"))
    good, bad = b"id,amount\n1,10\n", b"id,amount\n2,20\n"
    ready = claim_all(inbox, drop, {
        "INV-1.csv": good, "INV-1.csv.sha256": hashlib.sha256(good).hexdigest() + "  INV-1.csv\n",
        "INV-2.csv": bad, "INV-2.csv.sha256": hashlib.sha256(b"other").hexdigest() + "\n"})
    fetched, errors = inbox.fetch_many([ready["INV-1.csv"], ready["INV-2.csv"]])
    assert errors == {}
    assert [(f.file_name, f.outcome) for f in fetched] == [("INV-1.csv", "fetched"), ("INV-2.csv", "quarantined")]
    assert fetched[1].reason.startswith("sha256 mismatch") and fetched[1].final_path.startswith(QUARANTINE + "/")
    entry = ledger.get(fetched[1].entry_id)
    assert entry.status == "quarantined" and entry.closed_at is not None and entry.content_key is None
    assert entry.sha256 == hashlib.sha256(bad).hexdigest()
    quarantined = drop.names(QUARANTINE)
    assert len(quarantined) == 2 and quarantined[1].endswith(".sha256")  # the manifest went along
    assert drop.names(INBOUND) == ["INV-1.csv", "INV-1.csv.sha256"]


class StallingOpenClient:
    """The real client (connected through ``relay``), whose open of one path stalls the server for
    good: the relay holds every answer from then on, until the test releases it. A stall made by
    bytes, not by a sleep racing the time bound."""

    def __init__(self, real, relay, stalled_path):
        self._real, self._relay, self._stalled = real, relay, stalled_path

    def __getattr__(self, name):
        return getattr(self._real, name)

    def open(self, path, *args, **kwargs):
        if path == self._stalled:
            self._relay.hold_after(0)
        return self._real.open(path, *args, **kwargs)


def test_timeout_stops_the_batch_and_defers_its_moves(make_partner, make_inbox, drop, ledger, sshd_server, sshd_relay):
    partner = make_partner()
    client = sshd_server.sftp_client(port=sshd_relay.port)
    try:
        inbox = make_inbox(partner, client=StallingOpenClient(client, sshd_relay, f"{INBOUND}/INV-3.csv"))
        ready = claim_all(inbox, drop, {"INV-1.csv": "id\n1\n", "INV-2.csv": "id\n1\n",
                                        "INV-3.csv": "id\n3\n", "INV-4.csv": "id\n4\n"})
        order = [ready[f"INV-{i}.csv"] for i in (1, 2, 3, 4)]
        fetched, errors = inbox.fetch_many(order, timeout=2.0)  # generous for the files that are not stalled
        assert sshd_relay.held.is_set()
        assert client.get_channel().closed  # dropped by the fetch, not by the test
    finally:
        sshd_relay.release()
        client.close()
    assert [(f.file_name, f.outcome) for f in fetched] == [("INV-1.csv", "fetched"), ("INV-2.csv", "duplicate")]
    assert isinstance(errors[ready["INV-3.csv"].entry_id], TransferTimeout)
    assert isinstance(errors[ready["INV-4.csv"].entry_id], NotAttempted)
    stored = ledger.get_many([r.entry_id for r in order])
    assert stored[ready["INV-3.csv"].entry_id].status == "ready" and "time bound" in stored[ready["INV-3.csv"].entry_id].error
    untouched = stored[ready["INV-4.csv"].entry_id]
    assert untouched.status == "ready" and untouched.error is None and untouched.claimed_by == inbox.claimed_by
    # the duplicate's move was recorded but not done over the dead session ...
    duplicate = stored[ready["INV-2.csv"].entry_id]
    assert duplicate.move_pending and duplicate.final_path == fetched[1].final_path
    assert "INV-2.csv" in drop.names(INBOUND)
    # ... and the next run, over a new session, finishes it
    report = make_inbox(partner).resume_unfinished()
    assert [e.id for e in report.completed_moves] == [duplicate.id]
    assert ledger.get(duplicate.id).status == "duplicate" and "INV-2.csv" not in drop.names(INBOUND)
    retry, errors = make_inbox(partner).fetch_many([ready["INV-3.csv"], ready["INV-4.csv"]])
    assert errors == {} and [f.outcome for f in retry] == ["fetched", "fetched"]


def test_fetch_many_costs_a_constant_number_of_statements(make_partner, make_inbox, drop, ledger):
    counts = []
    for n, count in enumerate((4, 40)):
        inbox = make_inbox(make_partner())
        files = {f"INV-{n}-{i:03}.csv": f"id\n{n}{i}\n" for i in range(count)}
        files[f"INV-{n}-dup.csv"] = f"id\n{n}0\n"  # one duplicate each time
        ready = claim_all(inbox, drop, files)
        statements = []
        listener = lambda *args: statements.append(args[2])  # noqa: E731
        event.listen(ledger.engine, "before_cursor_execute", listener)
        try:
            fetched, errors = inbox.fetch_many(list(ready.values()))
        finally:
            event.remove(ledger.engine, "before_cursor_execute", listener)
        assert errors == {} and sorted(f.outcome for f in fetched).count("duplicate") == 1
        counts.append(len(statements))
        inbox.archive_many([f for f in fetched if f.outcome == "fetched"])
    assert counts[0] == counts[1] and counts[1] <= 12, counts


def test_fetch_many_on_sqlite_with_a_duplicate_inside_the_batch(make_partner, drop, sftp, tmp_path):
    from include.db import get_engine

    led = Ledger(get_engine(f"sqlite:///{tmp_path}/ledger.db"))
    inbox = PartnerInbox(make_partner(), sftp, led, tmp_path / "staging")
    ready = claim_all(inbox, drop, {"INV-1.csv": "id\n1\n", "INV-2.csv": "id\n1\n", "INV-3.csv": "id\n3\n"})
    fetched, errors = inbox.fetch_many([ready["INV-1.csv"], ready["INV-2.csv"], ready["INV-3.csv"]])
    assert errors == {}
    assert [(f.outcome, f.duplicate_of) for f in fetched] == [
        ("fetched", None), ("duplicate", ready["INV-1.csv"].entry_id), ("fetched", None)]
    assert led.get(ready["INV-2.csv"].entry_id).closed_at is not None


def test_mark_fetched_many_re_recording_follows_the_single_row_rules(make_partner, ledger):
    """An entry re-fetched with other bytes gives its digest up; a later entry of the batch with the
    old bytes then becomes the original (as mark_fetched one after the other would decide)."""
    partner = make_partner()
    seen = ledger.observe_many(partner.key, [(f"{INBOUND}/INV-{i}.csv", f"INV-{i}.csv", 5, 1) for i in range(3)])
    a, b, c = (e.id for e in seen.values())
    assert ledger.claim_many([(i, "invoice", []) for i in (a, b, c)], "run") == {a, b, c}
    ledger.mark_fetched(a, sha256="x" * 64, size=5, local_path="/tmp/a")
    result = ledger.mark_fetched_many([(a, "y" * 64, 5, "/tmp/a"), (b, "x" * 64, 5, "/tmp/b"), (c, "y" * 64, 5, "/tmp/c")])
    assert [(e.status, e.content_key, e.duplicate_of) for e in result.values()] == [
        ("fetched", "y" * 64, None), ("fetched", "x" * 64, None), ("duplicate", None, a)]
    with pytest.raises(LedgerStateError):
        ledger.mark_fetched_many([(c, "z" * 64, 5, "/tmp/c")])  # a duplicate is not fetchable any more


def test_fetch_many_large_and_small_files_together(make_partner, make_inbox, drop):
    inbox = make_inbox(make_partner())
    big = os.urandom(3 * 1024 * 1024 + 7)
    ready = claim_all(inbox, drop, {"INV-big.csv": big, "INV-small.csv": "id\n1\n", "INV-empty.csv": b""})
    fetched, errors = inbox.fetch_many(list(ready.values()))
    assert errors == {}
    by_name = {f.file_name: f for f in fetched}
    assert by_name["INV-big.csv"].sha256 == hashlib.sha256(big).hexdigest()
    assert by_name["INV-empty.csv"].size == 0 and by_name["INV-small.csv"].size == 5
