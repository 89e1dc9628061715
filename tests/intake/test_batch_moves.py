"""Batched archive/quarantine: intents in one transaction before any rename, pipelined renames that
never overwrite, companions moved along, entries closed in one transaction, crash recovery."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import event

from include.intake import (
    Ledger,
    LedgerStateError,
    MoveBatchError,
    MoveError,
    PartnerInbox,
    refuses_overwrite,
    rename_many,
)

INBOUND = "/partners/acme/inbound"
ARCHIVE = "/partners/acme/archive"
QUARANTINE = "/partners/acme/quarantine"
SUFFIX = re.compile(r"^(?P<name>.+)\.(?P<ts>\d{8}T\d{12}Z)\.(?P<sha8>[0-9a-f]{8}|nosha)(?P<ending>\.done)?$")


class CountingClient:
    """The real paramiko client, counting the public SFTP calls made through it."""

    def __init__(self, real):
        self._real = real
        self.calls: list[str] = []

    def __getattr__(self, name):
        attr = getattr(self._real, name)
        if name.startswith("_") or not callable(attr):
            return attr

        def wrapper(*args, **kwargs):
            self.calls.append(name)
            return attr(*args, **kwargs)

        return wrapper


def fetched_batch(inbox, drop, count, *, marker=False, prefix="INV"):
    for i in range(count):
        drop.put(f"{INBOUND}/{prefix}-{i:03}.csv", f"id\n{i}\n")
        if marker:
            drop.put(f"{INBOUND}/{prefix}-{i:03}.csv.done", "")
    inbox.poll()
    ready = inbox.poll().ready
    assert len(ready) == count
    fetched, errors = inbox.fetch_all(ready)
    assert errors == {}
    return fetched


def test_archive_many_moves_files_and_companions_and_closes_entries(make_partner, make_inbox, drop, ledger):
    inbox = make_inbox(make_partner(marker="done"))
    fetched = fetched_batch(inbox, drop, 6, marker=True)
    ledger.mark_validated_many([f.entry_id for f in fetched[:4]])
    moved = inbox.archive_many(fetched[:4])
    quarantined = inbox.quarantine_many([(f, f"bad rows in {f.file_name}") for f in fetched[4:]])
    assert list(moved) == [f.entry_id for f in fetched[:4]]
    assert list(quarantined) == [f.entry_id for f in fetched[4:]]
    assert drop.names(INBOUND) == []
    archived = drop.names(ARCHIVE)
    assert len(archived) == 8 and sorted(archived) == sorted(
        [p.rsplit("/", 1)[1] for p in moved.values()] + [p.rsplit("/", 1)[1] + ".done" for p in moved.values()])
    assert len(drop.names(QUARANTINE)) == 4
    for f in fetched:
        final = {**moved, **quarantined}[f.entry_id]
        match = SUFFIX.match(final.rsplit("/", 1)[1])
        assert match and match["name"] == f.file_name and match["sha8"] == f.sha256[:8]
        entry = ledger.get(f.entry_id)
        assert entry.closed_at is not None and entry.final_path == final
    assert len(set(moved.values()) | set(quarantined.values())) == 6
    assert {ledger.get(i).status for i in moved} == {"archived"}
    assert [ledger.get(i).error for i in quarantined] == [f"bad rows in {f.file_name}" for f in fetched[4:]]
    # again: idempotent, same paths, nothing moved twice
    assert inbox.archive_many(fetched[:4]) == moved
    assert inbox.quarantine_many([(f, "again") for f in fetched[4:]]) == quarantined
    assert len(drop.names(ARCHIVE)) == 8


def test_archive_many_refuses_unfinished_entries_before_moving_anything(make_partner, make_inbox, drop, ledger):
    inbox = make_inbox(make_partner())
    drop.put(f"{INBOUND}/INV-1.csv", "id\n1\n")
    drop.put(f"{INBOUND}/INV-2.csv", "id\n2\n")
    inbox.poll()
    ready = inbox.poll().ready
    fetched = inbox.fetch(ready[0])
    with pytest.raises(LedgerStateError, match="only fetched or validated"):
        inbox.archive_many([fetched, ready[1]])  # the second is only 'ready'
    assert drop.names(INBOUND) == ["INV-1.csv", "INV-2.csv"] and drop.names(ARCHIVE) == []
    assert ledger.get(fetched.entry_id).final_path is None  # no intent recorded either


def test_batch_moves_use_a_constant_number_of_statements_and_no_stat(make_partner, make_inbox, drop, ledger, sftp):
    counts = []
    for n, count in enumerate((4, 40)):
        client = CountingClient(sftp)
        inbox = make_inbox(make_partner(), client=client)
        fetched = fetched_batch(inbox, drop, count, prefix=f"INV-B{n}")
        statements = []
        listener = lambda *args: statements.append(args[2])  # noqa: E731
        event.listen(ledger.engine, "before_cursor_execute", listener)
        client.calls.clear()
        try:
            inbox.archive_many(fetched)
        finally:
            event.remove(ledger.engine, "before_cursor_execute", listener)
        counts.append(len(statements))
        # renames go out as pipelined requests: no stat, no posix_rename, no per-file call at all
        assert [c for c in client.calls if c != "get_channel"] == []
        assert len(drop.names(ARCHIVE)) == sum((4, 40)[: n + 1])
    assert counts[0] == counts[1] and counts[1] <= 6, counts


def test_the_server_refuses_a_plain_rename_onto_an_existing_target(drop, sftp):
    """What rename_many relies on: OpenSSH's SSH_FXP_RENAME fails when the target exists, where
    posix-rename@openssh.com would replace it."""
    assert refuses_overwrite(sftp)
    drop.put(f"{INBOUND}/a.csv", "new")
    drop.put(f"{ARCHIVE}/a.csv.x", "old")
    with pytest.raises(OSError):
        sftp.rename(f"{INBOUND}/a.csv", f"{ARCHIVE}/a.csv.x")
    assert drop.server.local_path(f"{ARCHIVE}/a.csv.x").read_text() == "old"
    assert drop.server.local_path(f"{INBOUND}/a.csv").read_text() == "new"


def test_rename_many_never_overwrites_and_is_retry_safe(drop, sftp):
    drop.put(f"{INBOUND}/a.csv", "new")
    drop.put(f"{ARCHIVE}/a.csv.x", "old")
    drop.put(f"{INBOUND}/b.csv", "b")
    drop.put(f"{INBOUND}/c.csv", "c")
    results = rename_many(sftp, [
        (f"{INBOUND}/a.csv", f"{ARCHIVE}/a.csv.x"),  # target exists
        (f"{INBOUND}/b.csv", f"{ARCHIVE}/b.csv.y"),
        (f"{INBOUND}/gone.csv", f"{ARCHIVE}/gone.csv.z"),  # nothing to move
        (f"{INBOUND}/../../etc/x", f"{QUARANTINE}/x"),
        (f"{INBOUND}/c.csv", f"{ARCHIVE}/c.csv.y"),
    ], window=2)
    assert isinstance(results[0], MoveError) and "already exists" in str(results[0])
    assert results[1] == "renamed" and results[4] == "renamed"
    assert isinstance(results[2], MoveError)
    assert isinstance(results[3], MoveError) and "not a plain absolute path" in str(results[3])
    assert drop.server.local_path(f"{ARCHIVE}/a.csv.x").read_text() == "old"  # never overwritten
    assert drop.server.local_path(f"{INBOUND}/a.csv").read_text() == "new"  # source untouched
    assert drop.names(INBOUND) == ["a.csv"]
    again = rename_many(sftp, [(f"{INBOUND}/b.csv", f"{ARCHIVE}/b.csv.y"), (f"{INBOUND}/c.csv", f"{ARCHIVE}/c.csv.y")])
    assert again == ["already_done", "already_done"]
    # the session is still in step: the next request gets its own answer
    assert sorted(sftp.listdir(ARCHIVE)) == ["a.csv.x", "b.csv.y", "c.csv.y"]


def test_failed_renames_in_a_batch_leave_their_intent_and_the_rest_is_done(make_partner, make_inbox, drop, ledger):
    inbox = make_inbox(make_partner())
    fetched = fetched_batch(inbox, drop, 3)
    # someone else moved INV-001.csv away meanwhile
    victim = drop.server.local_path(f"{INBOUND}/INV-001.csv")
    moved_away = victim.with_name("elsewhere.csv")
    victim.rename(moved_away)
    with pytest.raises(MoveBatchError) as caught:
        inbox.archive_many(fetched)
    assert set(caught.value.done) == {fetched[0].entry_id, fetched[2].entry_id}
    assert set(caught.value.errors) == {fetched[1].entry_id}
    stuck = ledger.get(fetched[1].entry_id)
    assert stuck.move_pending and stuck.status == "fetched"
    assert [ledger.get(f.entry_id).status for f in (fetched[0], fetched[2])] == ["archived", "archived"]
    moved_away.rename(victim)  # back: the next run finishes it with the recorded target
    report = make_inbox(inbox.partner).resume_unfinished()
    assert [e.id for e in report.completed_moves] == [fetched[1].entry_id]
    assert ledger.get(fetched[1].entry_id).final_path == stuck.final_path
    assert drop.names(INBOUND) == []


def test_crash_after_batch_intents_is_completed_by_resume(make_partner, make_inbox, drop, ledger):
    partner = make_partner(marker="done")
    inbox = make_inbox(partner)
    fetched = fetched_batch(inbox, drop, 5, marker=True)
    # the run records all intents in one transaction, then dies before renaming anything
    intents = [(f.entry_id, "archived" if i < 3 else "quarantined",
                f"{ARCHIVE if i < 3 else QUARANTINE}/{f.file_name}.20261125T00000000000{i}Z.{f.sha256[:8]}",
                None if i < 3 else "bad") for i, f in enumerate(fetched)]
    stored = ledger.record_move_intents(intents)
    assert all(e.move_pending for e in stored.values())
    assert [e.status for e in stored.values()] == ["fetched"] * 3 + ["quarantined"] * 2
    assert len(drop.names(INBOUND)) == 10
    assert inbox.poll().ready == []  # not offered again meanwhile
    # recording the same intents again keeps the first targets
    again = ledger.record_move_intents([(i, t, p + ".other", r) for i, t, p, r in intents])
    assert [e.final_path for e in again.values()] == [p for _, _, p, _ in intents]
    report = make_inbox(partner, claimed_by="next-run").resume_unfinished()
    assert sorted(e.id for e in report.completed_moves) == sorted(f.entry_id for f in fetched)
    assert drop.names(INBOUND) == []
    assert sorted(drop.names(ARCHIVE)) == sorted(
        [p.rsplit("/", 1)[1] + end for _, _, p, _ in intents[:3] for end in ("", ".done")])
    assert len(drop.names(QUARANTINE)) == 4
    assert [ledger.get(f.entry_id).status for f in fetched] == ["archived"] * 3 + ["quarantined"] * 2


def test_batch_moves_on_sqlite(make_partner, drop, sftp, tmp_path):
    from include.db import get_engine

    led = Ledger(get_engine(f"sqlite:///{tmp_path}/ledger.db"))
    inbox = PartnerInbox(make_partner(), sftp, led, tmp_path / "staging")
    fetched = fetched_batch(inbox, drop, 4)
    assert set(led.mark_validated_many([f.entry_id for f in fetched[:2]])) == {f.entry_id for f in fetched[:2]}
    led.set_tg_items({fetched[0].entry_id: "TG-1", fetched[1].entry_id: "TG-2"})
    moved = inbox.archive_many(fetched[:2])
    quarantined = inbox.quarantine_many([(fetched[2], "x"), (fetched[3], "y")])
    assert len(moved) == 2 and len(quarantined) == 2 and drop.names(INBOUND) == []
    entries = led.get_many([f.entry_id for f in fetched])
    assert [e.status for e in entries.values()] == ["archived", "archived", "quarantined", "quarantined"]
    assert [e.tg_item_id for e in entries.values()][:2] == ["TG-1", "TG-2"]
    assert [e.error for e in entries.values()][2:] == ["x", "y"]


def test_mark_validated_many_is_all_or_nothing(make_partner, make_inbox, drop, ledger):
    inbox = make_inbox(make_partner())
    fetched = fetched_batch(inbox, drop, 3)
    inbox.archive(fetched[2])  # closed: cannot be validated any more
    with pytest.raises(LedgerStateError, match=f"entry {fetched[2].entry_id} is archived"):
        ledger.mark_validated_many([f.entry_id for f in fetched])
    assert [ledger.get(f.entry_id).status for f in fetched[:2]] == ["fetched", "fetched"]
    done = ledger.mark_validated_many([f.entry_id for f in fetched[:2]])
    assert [e.status for e in done.values()] == ["validated", "validated"]
    ledger.set_tg_items({fetched[0].entry_id: "TG-7", fetched[1].entry_id: "TG-8"})
    assert [ledger.get(f.entry_id).tg_item_id for f in fetched[:2]] == ["TG-7", "TG-8"]
