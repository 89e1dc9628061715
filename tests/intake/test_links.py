"""Never follow a link: links in inbound, files swapped for links, symlinked folders (real sshd, chroot).

Inside the sshd's chroot a link target is a path of the chroot, so ``/partners/globex/...`` points
at the other partner's real files, as a hostile partner's link would. Every test checks that none
of globex's bytes (nor their digest) reach acme's staging copies, reports or ledger, that nothing
is deleted, and that the ledger never records a path the file did not reach.

The FSTAT of the handle cannot tell a link to a file of the same size and mtime from the listed
file (SFTP v3 has no inode): the LSTAT sent with the OPEN does, tested here. What remains, a swap
between that LSTAT and the OPEN, is shown with a client that swaps right there.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from include.intake import MoveBatchError, MoveError
from include.intake.fetch import PIPELINE_MAX_SIZE
from include.intake.errors import FolderRefused, NotRegularFile, RefusedInPlace
from include.intake.links import folder_problems

ACME = "/partners/acme"
INBOUND = f"{ACME}/inbound"
GLOBEX = "/partners/globex"
SECRET = b"GLOBEX-CONFIDENTIAL-" * 10  # 200 bytes


@pytest.fixture
def swap_for_link(sshd_server):
    """Replace a folder of the chroot by a symlink (the real one set aside); restored afterwards."""
    swapped: list[tuple[Path, Path]] = []

    def swap(remote_folder: str, link_target: str) -> None:
        local = sshd_server.local_path(remote_folder)
        aside = local.with_name(local.name + ".real")
        local.rename(aside)
        os.symlink(link_target, local)
        swapped.append((local, aside))

    yield swap
    for local, aside in reversed(swapped):
        local.unlink()
        aside.rename(local)


def globex_file(drop, name: str = "SECRET_invoice.csv", data: bytes = SECRET, age: float = 7200) -> str:
    path = f"{GLOBEX}/inbound/{name}"
    drop.put(path, data, age=age)
    return path


def link(sshd_server, remote_path: str, target: str) -> Path:
    local = sshd_server.local_path(remote_path)
    if local.exists() or local.is_symlink():
        local.unlink()
    os.symlink(target, local)
    return local


def assert_no_secret_anywhere(staging: Path, ledger, partner_key: str) -> None:
    digest = hashlib.sha256(SECRET).hexdigest()
    for path in staging.rglob("*") if staging.exists() else []:
        if path.is_file():
            data = path.read_bytes()
            assert SECRET[:20] not in data and digest.encode() not in data, path  # staged copies and reports
    for entry in ledger.entries(partner_key):
        assert entry.sha256 != digest
        assert "GLOBEX-CONFIDENTIAL" not in (entry.error or "") and digest not in (entry.error or "")


def claimed(inbox, drop, files: dict[str, bytes]) -> dict:
    for name, data in files.items():
        drop.put(f"{inbox.folders.inbound}/{name}", data)
    return {ready.file_name: ready for ready in inbox.poll().ready}


# ---- listing ------------------------------------------------------------------------------------
def test_a_link_in_inbound_is_refused_at_listing_and_left_in_place(make_partner, make_inbox, drop, ledger, staging,
                                                                  sshd_server):
    target = globex_file(drop)
    inbox = make_inbox(make_partner(marker="done", stable_polls=1))
    drop.put(f"{INBOUND}/INV-1.csv", "id\n1\n")
    drop.put(f"{INBOUND}/INV-1.csv.done", "")
    drop.put(f"{INBOUND}/INV-2.csv", "id\n2\n")
    local_link = link(sshd_server, f"{INBOUND}/INV-9.csv", target)
    link(sshd_server, f"{INBOUND}/INV-2.csv.done", f"{GLOBEX}/inbound")  # a link is no marker either

    result = inbox.poll()
    assert [r.file_name for r in result.ready] == ["INV-1.csv"]
    assert [w.file_name for w in result.waiting] == ["INV-2.csv"]
    rejected = {r.file_name: r for r in result.rejected}
    assert set(rejected) == {"INV-9.csv", "INV-2.csv.done"}
    for r in rejected.values():
        assert r.final_path is None and "symbolic link" in r.reason and "left in place" in r.reason
        entry = ledger.get(r.entry_id)
        assert entry.status == "quarantined" and entry.final_path is None and entry.closed_at is not None
        assert entry.error == r.reason
    assert local_link.is_symlink() and sshd_server.local_path(target).read_bytes() == SECRET  # nothing moved
    with pytest.raises(RefusedInPlace, match="symbolic link"):  # a retry gets the refusal, not a state error
        inbox.fetch(rejected["INV-9.csv"].entry_id)
    assert inbox.poll().rejected == []  # recorded once
    assert_no_secret_anywhere(staging, ledger, inbox.partner.key)


# ---- the handle check ---------------------------------------------------------------------------
@pytest.mark.parametrize("mtime", ["its_own", "the_listed_one"])
@pytest.mark.parametrize("how", ["fetch_many", "fetch", "fetch_many_big"])
def test_a_file_swapped_for_a_same_size_link_is_refused_at_fetch(make_partner, make_inbox, drop, ledger, staging,
                                                                 sshd_server, how, mtime):
    """``the_listed_one``: the partner set its file's mtime to the target's (read through the link),
    so the handle's FSTAT matches the listing in every field SFTP v3 has; the LSTAT refuses it."""
    secret = SECRET * (PIPELINE_MAX_SIZE // len(SECRET) + 1) if how == "fetch_many_big" else SECRET
    target = globex_file(drop, data=secret)
    inbox = make_inbox(make_partner(stable_polls=1))
    ready = claimed(inbox, drop, {"INV-1.csv": b"i" * len(secret), "INV-2.csv": b"id\n2\n"})
    assert set(ready) == {"INV-1.csv", "INV-2.csv"}
    listed = ledger.get(ready["INV-1.csv"].entry_id)
    local_link = link(sshd_server, f"{INBOUND}/INV-1.csv", target)  # same size, after the claim
    if mtime == "the_listed_one":
        os.utime(sshd_server.local_path(target), (listed.mtime, listed.mtime))
        opened = inbox.sftp.stat(f"{INBOUND}/INV-1.csv")  # what an FSTAT of the opened link shows
        assert (opened.st_size, opened.st_mtime) == (listed.size, listed.mtime)

    if how == "fetch":
        with pytest.raises(NotRegularFile, match="replaced by a symbolic link") as caught:
            inbox.fetch(ready["INV-1.csv"])
        error = caught.value
        assert inbox.fetch(ready["INV-2.csv"]).outcome == "fetched"
    else:
        fetched, errors = inbox.fetch_many([ready["INV-1.csv"], ready["INV-2.csv"]])
        assert [f.file_name for f in fetched] == ["INV-2.csv"]
        error = errors[ready["INV-1.csv"].entry_id]
        assert isinstance(error, NotRegularFile) and not error.session_dropped
    assert "left in place" in str(error)
    entry = ledger.get(ready["INV-1.csv"].entry_id)
    assert (entry.status, entry.final_path, entry.sha256, entry.local_path) == ("quarantined", None, None, None)
    assert entry.closed_at is not None and entry.error == str(error)
    assert local_link.is_symlink() and sshd_server.local_path(target).read_bytes() == secret  # nothing deleted
    assert sorted(p.name for p in (staging / inbox.partner.key).iterdir()) == [f"{ready['INV-2.csv'].entry_id}-INV-2.csv"]
    assert_no_secret_anywhere(staging, ledger, inbox.partner.key)
    _, again = inbox.fetch_many([ready["INV-1.csv"]])  # a retry (fetch_with_retries) gets the refusal again
    assert isinstance(again[ready["INV-1.csv"].entry_id], RefusedInPlace)


class SwapBetweenLstatAndOpen:
    """The real client, whose ``open`` of one path first takes the answer of the LSTAT sent ahead of
    it (the path was checked: a regular file), then swaps the path for a link, then opens: the
    window that remains, made by order rather than by timing."""

    def __init__(self, real, path, swap):
        self._real, self._path, self._swap = real, path, swap

    def __getattr__(self, name):
        return getattr(self._real, name)

    def open(self, path, *args, **kwargs):
        if path == self._path:
            if self._real._expecting:  # the LSTAT's answer, handed to the fetch's own receiver
                self._real._read_response()
            self._swap()
        return self._real.open(path, *args, **kwargs)


def test_a_swap_between_the_lstat_and_the_open_is_caught_by_the_handle(make_partner, make_inbox, drop, ledger,
                                                                       staging, sshd_server, sftp):
    """The FSTAT must match the LSTAT: a link to a file of another mtime opened in the window is still
    refused as a link (a link to a file of the same size and mtime there is the residual documented in
    include/intake/links.py)."""
    target = globex_file(drop)
    partner = make_partner(stable_polls=1)
    inbox = make_inbox(partner)
    ready = claimed(inbox, drop, {"INV-1.csv": b"i" * len(SECRET)})
    local = sshd_server.local_path(f"{INBOUND}/INV-1.csv")
    swapping = make_inbox(partner, client=SwapBetweenLstatAndOpen(sftp, f"{INBOUND}/INV-1.csv",
                                                                  lambda: link(sshd_server, f"{INBOUND}/INV-1.csv",
                                                                               target)))
    with pytest.raises(NotRegularFile, match="replaced by a symbolic link"):
        swapping.fetch(ready["INV-1.csv"])
    assert local.is_symlink() and ledger.get(ready["INV-1.csv"].entry_id).status == "quarantined"
    assert_no_secret_anywhere(staging, ledger, partner.key)


def test_a_rewritten_file_is_changed_not_refused(make_partner, make_inbox, drop, ledger):
    """The handle check's other side: a regular file with another mtime is being rewritten (readiness
    starts over), not a link."""
    inbox = make_inbox(make_partner(stable_polls=1))
    ready = claimed(inbox, drop, {"INV-1.csv": b"id\n1\n"})
    drop.put(f"{INBOUND}/INV-1.csv", b"id\n7\n", age=10)  # same size, new mtime
    fetched, errors = inbox.fetch_many(list(ready.values()))
    error = errors[ready["INV-1.csv"].entry_id]
    assert fetched == [] and "modification time" in str(error) and not isinstance(error, NotRegularFile)
    assert ledger.get(ready["INV-1.csv"].entry_id).status == "seen"


def test_a_manifest_swapped_for_a_link_does_not_vouch(make_partner, make_inbox, drop, ledger, staging, sshd_server):
    data = b"id\n1\n"
    foreign_digest = hashlib.sha256(b"something of globex").hexdigest()
    target = globex_file(drop, "INV-1.csv.sha256", f"{foreign_digest}  INV-1.csv\n".encode())
    inbox = make_inbox(make_partner(marker="manifest", stable_polls=1))
    ready = claimed(inbox, drop, {"INV-1.csv": data,
                                  "INV-1.csv.sha256": f"{hashlib.sha256(data).hexdigest()}  INV-1.csv\n".encode()})
    own = sshd_server.local_path(f"{INBOUND}/INV-1.csv.sha256").stat()
    assert own.st_size == sshd_server.local_path(target).stat().st_size
    os.utime(sshd_server.local_path(target), (own.st_mtime, own.st_mtime))  # same size, same mtime
    link(sshd_server, f"{INBOUND}/INV-1.csv.sha256", target)
    fetched, errors = inbox.fetch_many(list(ready.values()))
    assert errors == {} and fetched[0].outcome == "quarantined"
    assert "symbolic link" in fetched[0].reason and foreign_digest not in fetched[0].reason
    assert sshd_server.local_path(target).exists()


# ---- folders ------------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ["archive", "quarantine"])
def test_a_symlinked_move_folder_refuses_the_move(make_partner, make_inbox, drop, ledger, sshd_server, swap_for_link,
                                                  role):
    inbox = make_inbox(make_partner(stable_polls=1))
    ready = claimed(inbox, drop, {"INV-1.csv": b"id\n1\n", "INV-2.csv": b"id\n2\n"})
    fetched, errors = inbox.fetch_many(list(ready.values()))
    assert errors == {}
    swap_for_link(f"{ACME}/{role}", f"{GLOBEX}/{role}")

    with pytest.raises(MoveBatchError) as caught:
        if role == "archive":
            inbox.archive_many(fetched)
        else:
            inbox.quarantine_many([(f, "checks failed") for f in fetched])
    assert caught.value.done == {} and set(caught.value.errors) == {f.entry_id for f in fetched}
    with pytest.raises(MoveError, match=f"{ACME}/{role} is a symbolic link"):
        (inbox.archive if role == "archive" else lambda f: inbox.quarantine(f, "checks failed"))(fetched[0])
    assert drop.names(INBOUND) == ["INV-1.csv", "INV-2.csv"]  # stay where they are
    assert os.listdir(sshd_server.local_path(f"{GLOBEX}/{role}")) == []
    for f in fetched:
        entry = ledger.get(f.entry_id)
        assert entry.closed_at is None and entry.status != "archived"  # not closed with a path it did not reach
        assert entry.target_status is not None  # the intent stays, for resume_unfinished
    assert os.listdir(sshd_server.local_path(f"{ACME}/{role}.real")) == []  # the real folder (set aside) too


def test_moves_converge_once_the_folder_is_real_again(make_partner, make_inbox, drop, ledger, sshd_server):
    inbox = make_inbox(make_partner(stable_polls=1))
    ready = claimed(inbox, drop, {"INV-1.csv": b"id\n1\n"})
    fetched, _ = inbox.fetch_many(list(ready.values()))
    archive = sshd_server.local_path(f"{ACME}/archive")
    aside = archive.with_name("archive.real")
    archive.rename(aside)
    os.symlink(f"{GLOBEX}/archive", archive)
    try:
        with pytest.raises(MoveError, match="symbolic link"):
            inbox.archive(fetched[0])
    finally:
        archive.unlink()
        aside.rename(archive)
    fresh = make_inbox(inbox.partner)  # a new session checks the folder again
    report = fresh.resume_unfinished()
    assert [e.id for e in report.completed_moves] == [fetched[0].entry_id]
    entry = ledger.get(fetched[0].entry_id)
    assert entry.status == "archived" and entry.final_path.startswith(f"{ACME}/archive/")
    assert sshd_server.local_path(entry.final_path).read_bytes() == b"id\n1\n"
    assert os.listdir(sshd_server.local_path(f"{GLOBEX}/archive")) == []


def test_a_symlinked_catalog_subfolder_refuses_the_move(make_partner, make_inbox, drop, ledger, sshd_server):
    from include.catalog.intake import catalog_partner

    partner = catalog_partner(make_partner(stable_polls=1))
    for role in ("inbound", "archive", "quarantine", "outbound"):
        sshd_server.local_path(f"{ACME}/{role}").joinpath("catalog").mkdir(exist_ok=True)
    sub = sshd_server.local_path(f"{ACME}/archive/catalog")
    sub.rmdir()
    os.symlink(f"{GLOBEX}/archive", sub)
    inbox = make_inbox(partner)
    ready = claimed(inbox, drop, {"catalog_1.csv": b"sku\n1\n"})
    fetched, errors = inbox.fetch_many(list(ready.values()))
    assert errors == {}
    with pytest.raises(MoveBatchError) as caught:
        inbox.archive_many(fetched)
    assert "archive/catalog is a symbolic link" in str(caught.value.errors[fetched[0].entry_id])
    assert drop.names(f"{INBOUND}/catalog") == ["catalog_1.csv"]
    assert os.listdir(sshd_server.local_path(f"{GLOBEX}/archive")) == []


def test_a_symlinked_inbound_folder_is_not_listed(make_partner, make_inbox, drop, ledger, swap_for_link):
    globex_file(drop, "INV-7.csv")
    partner = make_partner(stable_polls=1)
    swap_for_link(INBOUND, f"{GLOBEX}/inbound")
    inbox = make_inbox(partner)
    with pytest.raises(FolderRefused, match=f"{INBOUND} is a symbolic link"):
        inbox.poll()
    assert ledger.entries(partner.key) == []


def test_folder_problems_walk_down_from_the_tree(sftp, sshd_server):
    """Every component under the partner's root, pipelined on paramiko or one lstat at a time."""
    nested = sshd_server.local_path(f"{ACME}/archive").joinpath("sub")
    nested.mkdir()
    os.symlink(f"{GLOBEX}/archive", nested / "linked")
    (nested / "file").write_text("x")
    folders = [f"{ACME}/archive/sub", f"{ACME}/archive/sub/linked", f"{ACME}/archive/sub/linked/deeper",
               f"{ACME}/archive/sub/file", f"{ACME}/archive/none", f"{GLOBEX}/archive", f"{ACME}/../globex"]
    expected = {
        f"{ACME}/archive/sub": None,
        f"{ACME}/archive/sub/linked": f"{ACME}/archive/sub/linked is a symbolic link",
        f"{ACME}/archive/sub/linked/deeper": f"{ACME}/archive/sub/linked is a symbolic link",
        f"{ACME}/archive/sub/file": f"{ACME}/archive/sub/file is not a directory",
        f"{ACME}/archive/none": f"{ACME}/archive/none does not exist",
        f"{GLOBEX}/archive": f"{GLOBEX}/archive is outside the partner's tree {ACME}",
        f"{ACME}/../globex": f"'{ACME}/../globex' is not an absolute plain path",
    }

    class LstatOnly:
        def lstat(self, path):
            return sftp.lstat(path)

    assert folder_problems(sftp, folders, ACME) == expected
    assert folder_problems(LstatOnly(), folders, ACME) == expected
