"""Readiness: stable across polls, old enough, not temporary, marker/manifest present; one listing per poll."""
from __future__ import annotations

import hashlib
import time

import pytest

from include.intake import is_temporary_name, list_folder

INBOUND = "/partners/acme/inbound"


class CountingClient:
    """The real paramiko client, counting every SFTP call the intake makes."""

    def __init__(self, real):
        self._real = real
        self.calls: list[tuple[str, str]] = []

    def __getattr__(self, name):
        attr = getattr(self._real, name)
        if name.startswith("_") or not callable(attr):
            return attr

        def wrapper(*args, **kwargs):
            self.calls.append((name, str(args[0]) if args else ""))
            return attr(*args, **kwargs)

        return wrapper

    def count(self, name: str) -> int:
        return sum(1 for called, _ in self.calls if called == name)


def test_size_changing_between_polls_is_not_ready(make_partner, make_inbox, drop):
    inbox = make_inbox(make_partner(stable_polls=2))
    drop.put(f"{INBOUND}/INV-1.csv", "id\n1\n")
    assert inbox.poll().ready == []
    drop.put(f"{INBOUND}/INV-1.csv", "id\n1\n2\n")  # still being written
    second = inbox.poll()
    assert second.ready == []
    assert second.waiting[0].reason.startswith("size/mtime stable for 1 of 2")
    third = inbox.poll()
    assert [r.file_name for r in third.ready] == ["INV-1.csv"]
    assert third.ready[0].size == len("id\n1\n2\n")


def test_mtime_change_with_same_size_restarts_the_count(make_partner, make_inbox, drop):
    inbox = make_inbox(make_partner(stable_polls=2))
    drop.put(f"{INBOUND}/INV-1.csv", "abc", age=600)
    inbox.poll()
    drop.put(f"{INBOUND}/INV-1.csv", "xyz", age=500)  # rewritten in place, same size
    assert inbox.poll().ready == []
    assert len(inbox.poll().ready) == 1


def test_stable_polls_three_needs_three_polls(make_partner, make_inbox, drop):
    inbox = make_inbox(make_partner(stable_polls=3))
    drop.put(f"{INBOUND}/INV-1.csv", "id\n1\n")
    assert inbox.poll().ready == [] and inbox.poll().ready == []
    assert len(inbox.poll().ready) == 1


def test_too_young_is_not_ready_until_old_enough(make_partner, make_inbox, drop):
    clock = {"now": time.time()}
    inbox = make_inbox(make_partner(min_age_seconds=300), clock=lambda: clock["now"])
    drop.put(f"{INBOUND}/INV-1.csv", "id\n1\n", age=10)
    inbox.poll()
    result = inbox.poll()
    assert result.ready == [] and "needs 300s" in result.waiting[0].reason
    clock["now"] += 300
    assert len(inbox.poll().ready) == 1


@pytest.mark.parametrize("name", [
    "INV-1.csv.filepart", "INV-1.csv.part", "INV-1.csv.tmp", "INV-1.csv.partial", "~INV-1.csv",
    "INV-1.csv~", ".INV-1.csv", "INV-1.csv.crdownload", "INV-1.CSV.PART", "INV-1.csv.part.3",
])
def test_temporary_names_are_never_ready_nor_quarantined(make_partner, make_inbox, drop, name):
    inbox = make_inbox(make_partner())
    drop.put(f"{INBOUND}/{name}", "id\n1\n")
    for _ in range(3):
        result = inbox.poll()
        assert result.ready == [] and result.rejected == []
    assert result.temporary == [name]
    assert drop.names(INBOUND) == [name]  # left where it is


def test_temporary_name_rule():
    suffixes = (".filepart", ".part", ".tmp")
    assert is_temporary_name("a.csv.filepart", suffixes)
    assert not is_temporary_name("partners.csv", suffixes)
    assert not is_temporary_name("report.parts.csv", suffixes)
    assert not is_temporary_name("INV-1.csv", suffixes)


def test_done_marker_required(make_partner, make_inbox, drop):
    inbox = make_inbox(make_partner(marker="done"))
    drop.put(f"{INBOUND}/INV-1.csv", "id\n1\n")
    inbox.poll()
    result = inbox.poll()
    assert result.ready == [] and result.waiting[0].reason == "waiting for marker INV-1.csv.done"
    drop.put(f"{INBOUND}/INV-1.csv.done", "")
    ready = inbox.poll().ready
    assert [r.file_name for r in ready] == ["INV-1.csv"]
    assert ready[0].companions == ["INV-1.csv.done"]
    # the marker travels with the file into the archive
    fetched = inbox.fetch(ready[0])
    inbox.mark_validated(fetched)
    final = inbox.archive(fetched)
    assert drop.names(INBOUND) == []
    assert drop.names("/partners/acme/archive") == sorted([final.rsplit("/", 1)[1], final.rsplit("/", 1)[1] + ".done"])


def test_manifest_match_is_fetched(make_partner, make_inbox, drop):
    data = b"id,amount\n1,10\n"
    inbox = make_inbox(make_partner(marker="manifest"))
    drop.put(f"{INBOUND}/INV-1.csv", data)
    inbox.poll()
    assert inbox.poll().waiting[0].reason == "waiting for manifest INV-1.csv.sha256"
    drop.put(f"{INBOUND}/INV-1.csv.sha256", f"{hashlib.sha256(data).hexdigest()}  INV-1.csv\n")
    ready = inbox.poll().ready
    fetched = inbox.fetch(ready[0])
    assert fetched.outcome == "fetched" and fetched.sha256 == hashlib.sha256(data).hexdigest()


def test_manifest_mismatch_is_quarantined_with_reason(make_partner, make_inbox, drop, ledger):
    inbox = make_inbox(make_partner(marker="manifest"))
    drop.put(f"{INBOUND}/INV-1.csv", b"id,amount\n1,10\n")
    drop.put(f"{INBOUND}/INV-1.csv.sha256", hashlib.sha256(b"something else").hexdigest() + "\n")
    inbox.poll()
    fetched = inbox.fetch(inbox.poll().ready[0])
    assert fetched.outcome == "quarantined"
    assert fetched.reason.startswith("sha256 mismatch: manifest INV-1.csv.sha256 says")
    entry = ledger.get(fetched.entry_id)
    assert entry.status == "quarantined" and entry.closed_at is not None and "sha256 mismatch" in entry.error
    assert drop.names(INBOUND) == []
    quarantined = drop.names("/partners/acme/quarantine")
    assert len(quarantined) == 2 and quarantined[1].endswith(".sha256")  # manifest kept beside the file
    # the corrupt transfer does not make a corrected re-delivery a "duplicate"
    assert entry.content_key is None


def test_lone_marker_and_subfolders_are_ignored(make_partner, make_inbox, drop, sshd_server):
    inbox = make_inbox(make_partner(marker="done"))
    drop.put(f"{INBOUND}/INV-9.csv.done", "")
    sshd_server.local_path(f"{INBOUND}/subdir.csv").mkdir()
    for _ in range(3):
        result = inbox.poll()
        assert result.ready == [] and result.rejected == [] and result.waiting == []


def test_one_listdir_per_poll_and_no_stat(make_partner, make_inbox, drop, sftp):
    counting = CountingClient(sftp)
    inbox = make_inbox(make_partner(marker="done"), client=counting)
    for i in range(40):
        drop.put(f"{INBOUND}/INV-{i:03}.csv", f"id\n{i}\n")
        drop.put(f"{INBOUND}/INV-{i:03}.csv.done", "")
    drop.put(f"{INBOUND}/INV-999.csv.part", "partial")
    for poll in range(3):
        counting.calls.clear()
        result = inbox.poll()
        assert counting.count("listdir_attr") == 1, counting.calls
        assert counting.count("stat") == 0 and counting.count("lstat") == 0
        assert counting.calls == [("listdir_attr", INBOUND)]
    assert len(result.ready) == 0  # claimed on poll 2
    assert len(inbox.ledger.entries(inbox.partner.key, status="ready")) == 40


def test_list_folder_reports_files_and_dirs(drop, sftp, sshd_server):
    local = drop.put(f"{INBOUND}/b.csv", "12345", age=100)
    sshd_server.local_path(f"{INBOUND}/a-dir").mkdir()
    entries = list_folder(sftp, INBOUND)
    assert [(e.name, e.is_file, e.is_dir) for e in entries] == [("a-dir", False, True), ("b.csv", True, False)]
    assert entries[1].size == 5 and entries[1].path == f"{INBOUND}/b.csv"
    assert entries[1].mtime == int(local.stat().st_mtime)  # what was set, not a window around the clock
