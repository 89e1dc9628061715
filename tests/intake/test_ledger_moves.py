"""Ledger (duplicates, claims), archive/quarantine moves, crash recovery, unsafe names."""
from __future__ import annotations

import os
import re
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from include.intake import Ledger, LedgerStateError, MoveError, PartnerInbox, intake_files, rename_retry_safe

INBOUND = "/partners/acme/inbound"
ARCHIVE = "/partners/acme/archive"
QUARANTINE = "/partners/acme/quarantine"
SUFFIX = re.compile(r"^(?P<name>.+)\.(?P<ts>\d{8}T\d{12}Z)\.(?P<sha8>[0-9a-f]{8}|nosha)$")


def deliver(inbox, drop, name, data, polls=2):
    drop.put(f"{INBOUND}/{name}", data)
    ready = []
    for _ in range(polls):
        ready = inbox.poll().ready
    return ready


def process(inbox, ready):
    fetched = inbox.fetch(ready)
    if fetched.outcome == "fetched":
        inbox.mark_validated(fetched, tg_item_id="TG-1")
        inbox.archive(fetched)
    return fetched


def test_identical_redelivery_is_a_duplicate_archived_and_announced_once(make_partner, make_inbox, drop, ledger):
    inbox = make_inbox(make_partner())
    first = process(inbox, deliver(inbox, drop, "INV-1.csv", "id\n1\n")[0])
    again = process(inbox, deliver(inbox, drop, "INV-1.csv", "id\n1\n")[0])
    assert first.outcome == "fetched"
    assert again.outcome == "duplicate" and again.duplicate_of == first.entry_id
    assert again.entry_id != first.entry_id
    entry = ledger.get(again.entry_id)
    assert entry.status == "duplicate" and entry.closed_at is not None and entry.duplicate_of == first.entry_id
    assert entry.final_path.startswith(ARCHIVE + "/INV-1.csv.")
    assert drop.names(INBOUND) == [] and len(drop.names(ARCHIVE)) == 2  # both kept, nothing deleted
    assert inbox.claim_announcement(again) is True
    assert inbox.claim_announcement(again) is False  # a rerun does not announce it again
    with pytest.raises(LedgerStateError):
        inbox.mark_validated(again)  # never processed as a new document


def test_same_content_under_another_name_is_a_duplicate(make_partner, make_inbox, drop):
    inbox = make_inbox(make_partner())
    drop.put(f"{INBOUND}/INV-1.csv", "id\n1\n")
    drop.put(f"{INBOUND}/INV-2.csv", "id\n1\n")
    inbox.poll()
    outcomes = sorted(inbox.fetch(r).outcome for r in inbox.poll().ready)
    assert outcomes == ["duplicate", "fetched"]


def test_changed_file_with_the_same_name_is_a_new_file(make_partner, make_inbox, drop, ledger):
    inbox = make_inbox(make_partner())
    first = process(inbox, deliver(inbox, drop, "INV-1.csv", "id\n1\n")[0])
    second = process(inbox, deliver(inbox, drop, "INV-1.csv", "id\n1\n2\n")[0])
    assert second.outcome == "fetched" and second.entry_id != first.entry_id and second.sha256 != first.sha256
    assert [e.status for e in ledger.entries(inbox.partner.key)] == ["archived", "archived"]


def test_only_one_run_claims_a_file(make_partner, make_inbox, drop, ledger, sshd_server):
    partner = make_partner()
    drop.put(f"{INBOUND}/INV-1.csv", "id\n1\n")
    run_a = make_inbox(partner, claimed_by="run-a")
    other = sshd_server.sftp_client()
    try:
        run_b = make_inbox(partner, client=other, claimed_by="run-b")
        # overlapping runs polling in turns: the sightings add up, the claim goes to one of them
        results = {"run-a": [], "run-b": []}
        for _ in range(3):
            results["run-a"].append(run_a.poll())
            results["run-b"].append(run_b.poll())
    finally:
        other.close()
    claims = [(run, r.file_name) for run, polls in results.items() for p in polls for r in p.ready]
    assert len(claims) == 1
    winner = claims[0][0]
    loser = "run-b" if winner == "run-a" else "run-a"
    assert results[loser][-1].in_progress == ["INV-1.csv"]
    assert ledger.entries(partner.key)[0].claimed_by == winner


def test_claim_is_a_database_compare_and_set(make_partner, ledger):
    partner = make_partner()
    entry = ledger.observe(partner.key, f"{INBOUND}/INV-1.csv", "INV-1.csv", 10, 1)
    barrier = threading.Barrier(8)
    wins = []

    def claim(i):
        barrier.wait()
        wins.append(ledger.claim(entry.id, f"run-{i}", doc_type="invoice", companions=[]))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 7 + [True]


def test_concurrent_first_sightings_make_one_entry(make_partner, ledger):
    partner = make_partner()
    barrier = threading.Barrier(6)
    ids = []

    def observe():
        barrier.wait()
        ids.append(ledger.observe(partner.key, f"{INBOUND}/INV-1.csv", "INV-1.csv", 10, 1).id)

    threads = [threading.Thread(target=observe) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1 and len(ledger.entries(partner.key)) == 1


def test_archive_and_quarantine_use_unique_suffixes_and_never_delete(make_partner, make_inbox, drop, ledger):
    inbox = make_inbox(make_partner())
    names = []
    for content in ("id\n1\n", "id\n2\n", "id\n3\n"):
        ready = deliver(inbox, drop, "INV-1.csv", content)[0]
        fetched = inbox.fetch(ready)
        if content == "id\n3\n":
            final = inbox.quarantine(fetched, "amount column missing")
        else:
            inbox.mark_validated(fetched)
            final = inbox.archive(fetched)
        names.append(final)
        match = SUFFIX.match(final.rsplit("/", 1)[1])
        assert match and match["name"] == "INV-1.csv" and match["sha8"] == fetched.sha256[:8]
    assert len(set(names)) == 3
    assert len(drop.names(ARCHIVE)) == 2 and len(drop.names(QUARANTINE)) == 1
    quarantined = ledger.entries(inbox.partner.key, status="quarantined")[0]
    assert quarantined.error == "amount column missing" and quarantined.final_path == names[2]
    # archiving again is idempotent: same path, nothing moved twice
    assert inbox.archive(ledger.entries(inbox.partner.key, status="archived")[0]) == names[0]


def test_rename_never_overwrites_and_is_retry_safe(drop, sftp):
    drop.put(f"{INBOUND}/a.csv", "new")
    drop.put(f"{ARCHIVE}/a.csv.x", "old")
    with pytest.raises(MoveError, match="already exists"):
        rename_retry_safe(sftp, f"{INBOUND}/a.csv", f"{ARCHIVE}/a.csv.x")
    assert drop.server.local_path(f"{ARCHIVE}/a.csv.x").read_text() == "old"
    assert rename_retry_safe(sftp, f"{INBOUND}/a.csv", f"{ARCHIVE}/a.csv.y") == "renamed"
    assert rename_retry_safe(sftp, f"{INBOUND}/a.csv", f"{ARCHIVE}/a.csv.y") == "already_done"
    with pytest.raises(MoveError, match="not a plain absolute path"):
        rename_retry_safe(sftp, f"{INBOUND}/../../etc/x", f"{QUARANTINE}/x")
    with pytest.raises(MoveError):
        rename_retry_safe(sftp, f"{INBOUND}/gone.csv", f"{ARCHIVE}/gone.csv.z")


def test_crash_after_intent_before_rename_is_finished_by_next_run(make_partner, make_inbox, drop, ledger):
    partner = make_partner(marker="done")
    inbox = make_inbox(partner)
    drop.put(f"{INBOUND}/INV-1.csv.done", "")
    ready = deliver(inbox, drop, "INV-1.csv", "id\n1\n")[0]
    fetched = inbox.fetch(ready)
    inbox.mark_validated(fetched)
    # the run records its intent, then dies before renaming
    entry = ledger.record_move_intent(fetched.entry_id, target_status="archived",
                                      final_path=f"{ARCHIVE}/INV-1.csv.20261125T000000000000Z.{fetched.sha256[:8]}")
    assert entry.move_pending and drop.names(INBOUND) == ["INV-1.csv", "INV-1.csv.done"]
    # the file is not offered again meanwhile
    assert inbox.poll().ready == []
    report = make_inbox(partner, claimed_by="next-run").resume_unfinished()
    assert [e.id for e in report.completed_moves] == [fetched.entry_id]
    done = ledger.get(fetched.entry_id)
    assert done.status == "archived" and done.closed_at is not None
    assert drop.names(INBOUND) == []
    assert drop.names(ARCHIVE) == [entry.final_path.rsplit("/", 1)[1], entry.final_path.rsplit("/", 1)[1] + ".done"]


def test_crash_after_rename_before_confirmation_is_closed_by_next_run(make_partner, make_inbox, drop, ledger, sftp):
    partner = make_partner()
    inbox = make_inbox(partner)
    fetched = inbox.fetch(deliver(inbox, drop, "INV-1.csv", "id\n1\n")[0])
    entry = ledger.record_move_intent(fetched.entry_id, target_status="quarantined",
                                      final_path=f"{QUARANTINE}/INV-1.csv.20261125T000000000000Z.abcdef12",
                                      reason="bad rows")
    sftp.posix_rename(entry.remote_path, entry.final_path)  # renamed, then the worker died
    report = make_inbox(partner).resume_unfinished()
    assert [e.status for e in report.completed_moves] == ["quarantined"]
    assert ledger.get(entry.id).error == "bad rows"
    assert drop.names(QUARANTINE) == ["INV-1.csv.20261125T000000000000Z.abcdef12"]
    assert make_inbox(partner).resume_unfinished().completed_moves == []  # nothing left to do


def test_stale_claims_are_taken_over(make_partner, make_inbox, drop, ledger):
    partner = make_partner()
    inbox = make_inbox(partner, claimed_by="dead-run")
    ready = deliver(inbox, drop, "INV-1.csv", "id\n1\n")[0]
    fresh = make_inbox(partner, claimed_by="new-run")
    assert fresh.resume_unfinished().reclaimed == []  # still fresh: not taken
    with ledger.engine.begin() as conn:
        conn.execute(update(intake_files).where(intake_files.c.id == ready.entry_id)
                     .values(claimed_at=intake_files.c.claimed_at - timedelta(hours=2)))
    report = fresh.resume_unfinished()
    assert [e.claimed_by for e in report.reclaimed] == ["new-run"]
    assert fresh.fetch(fresh.ready_file(report.reclaimed[0])).outcome == "fetched"


class InjectingClient:
    """The real client whose listing also shows names a hostile or broken server could send."""

    def __init__(self, real, extra_names):
        self._real = real
        self._extra = extra_names

    def __getattr__(self, name):
        return getattr(self._real, name)

    def listdir_attr(self, path):
        attrs = self._real.listdir_attr(path)
        import paramiko

        for name in self._extra:
            attr = paramiko.SFTPAttributes()
            attr.filename, attr.st_size, attr.st_mtime, attr.st_mode = name, 10, 1, 0o100644
            attrs.append(attr)
        return attrs


def test_traversal_names_are_recorded_not_followed(make_partner, make_inbox, drop, ledger, sftp, staging, sshd_server):
    victim = sshd_server.local_path("/partners/acme/x")  # what ../x would reach
    victim.write_text("not yours")
    client = InjectingClient(sftp, ["../x", "../../etc/passwd", "a/b.csv", "bad\ufffd.csv"])
    inbox = make_inbox(make_partner(), client=client)
    result = inbox.poll()
    reasons = {r.file_name: r for r in result.rejected}
    assert set(reasons) == {"../x", "../../etc/passwd", "a/b.csv", "bad\ufffd.csv"}
    assert "path separator (path traversal)" in reasons["../x"].reason
    assert "not valid UTF-8" in reasons["bad\ufffd.csv"].reason
    assert all(r.final_path is None for r in result.rejected)  # left alone, never renamed
    assert victim.read_text() == "not yours" and drop.names(QUARANTINE) == []
    assert {e.status for e in ledger.entries(inbox.partner.key)} == {"quarantined"}
    assert inbox.poll().rejected == []  # recorded once, not re-reported every poll
    assert not staging.exists() or all(p.is_relative_to(staging) for p in staging.rglob("*"))
    victim.unlink()


def test_odd_but_real_names_are_quarantined_or_staged_safely(make_partner, make_inbox, drop, ledger, sshd_server, staging):
    inbound = sshd_server.local_path(INBOUND)
    (inbound / "INV-line\nbreak.csv").write_text("id\n1\n")
    (inbound / "INV-bell\x07.csv").write_text("id\n1\n")
    (inbound / "INV-rtl\u202egnp.csv").write_text("id\n1\n")
    (inbound / "INV-back\\slash.csv").write_text("id\n1\n")
    os.utime(inbound / "INV-back\\slash.csv", (1, 1))
    with open(os.fsencode(inbound) + b"/INV-latin1-\xe9.csv", "wb") as handle:  # not UTF-8
        handle.write(b"id\n1\n")
    (inbound / "INV-$(rm -rf ~) ;'\"`.csv").write_text("id\n2\n")
    inbox = make_inbox(make_partner())
    first = inbox.poll()
    assert len(first.rejected) == 5
    assert all(r.final_path and r.final_path.startswith(QUARANTINE + "/") for r in first.rejected)
    for name in drop.names(QUARANTINE):
        assert re.fullmatch(r"[A-Za-z0-9._+=@,-]+", name), name  # sanitised: no control characters
    ready = inbox.poll().ready
    assert [r.file_name for r in ready] == ["INV-$(rm -rf ~) ;'\"`.csv"]  # odd but harmless: processed
    fetched = inbox.fetch(ready[0])
    local = Path(fetched.local_path)
    assert local.parent == staging / inbox.partner.key and local.read_text() == "id\n2\n"
    assert drop.names(INBOUND) == ["INV-$(rm -rf ~) ;'\"`.csv"]
    assert len(drop.names(QUARANTINE)) == 5


def test_unknown_document_type_is_quarantined_once_complete(make_partner, make_inbox, drop, ledger):
    inbox = make_inbox(make_partner())
    drop.put(f"{INBOUND}/holiday-photo.jpg", b"\xff\xd8")
    assert inbox.poll().rejected == []  # not complete yet: might still be renamed
    rejected = inbox.poll().rejected
    assert [r.file_name for r in rejected] == ["holiday-photo.jpg"]
    assert "no document type" in rejected[0].reason
    assert drop.names(QUARANTINE)[0].startswith("holiday-photo.jpg.")


def test_sqlite_ledger_works_end_to_end(make_partner, drop, sftp, tmp_path):
    from include.db import get_engine

    ledger = Ledger(get_engine(f"sqlite:///{tmp_path}/ledger.db"))
    inbox = PartnerInbox(make_partner(), sftp, ledger, tmp_path / "staging")
    first = process(inbox, deliver(inbox, drop, "INV-1.csv", "id\n1\n")[0])
    again = process(inbox, deliver(inbox, drop, "INV-1.csv", "id\n1\n")[0])
    assert (first.outcome, again.outcome, again.duplicate_of) == ("fetched", "duplicate", first.entry_id)
    entries = ledger.entries(inbox.partner.key)
    assert [e.status for e in entries] == ["archived", "duplicate"]
    assert entries[0].tg_item_id == "TG-1" and entries[0].closed_at.tzinfo is not None


def test_undecodable_names_round_trip_through_the_ledger(make_partner, ledger, sftp, drop, sshd_server):
    from include.intake.ledger import db_text, from_db_text

    raw_name = b"PO-\xe9t\xe9.csv".decode("utf-8", "surrogateescape")
    for value in (raw_name, "plain.csv", "nul\x00.csv", "=?b64?looks-encoded"):
        assert from_db_text(db_text(value)) == value
    assert db_text("plain/\\path.csv") == "plain/\\path.csv"  # clean names are stored as they are
    partner = make_partner()
    with open(os.fsencode(sshd_server.local_path(INBOUND)) + b"/PO-\xe9t\xe9.csv", "wb") as handle:
        handle.write(b"x")
    entry = ledger.register_rejected(partner.key, f"{INBOUND}/{raw_name}", raw_name, 1, 1, "not UTF-8", "run")
    stored = ledger.get(entry.id)
    assert stored.remote_path == f"{INBOUND}/{raw_name}" and stored.file_name == raw_name
    # a crashed run's recorded move can be finished from the stored path alone
    rename_retry_safe(sftp, stored.remote_path, f"{QUARANTINE}/PO-_t_.csv.x")
    assert drop.names(QUARANTINE) == ["PO-_t_.csv.x"] and drop.names(INBOUND) == []
