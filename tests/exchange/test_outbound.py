"""Outbound delivery against the real OpenSSH sshd (chrooted internal-sftp) and PostgreSQL.

Each test gets its own partner key over the demo folders of ``acme`` (its ledger rows and journal
lines cannot meet another test's) and emptied partner folders. What the server holds is checked on
its local side (``sshd_server.local_path``), not through the client under test.

Nothing here races a transfer: what must happen mid-upload (a listing, a frozen server) is done by
the uploading thread itself, between two chunks (:func:`between_chunks`) or around the client's
rename (:func:`around_renames`), so every run sees the same sequence.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import signal
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from include.exchange import outbound
from include.exchange.outbound import (OutboundConflict, OutboundFile, OutboundRefused, SentFile, deliver,
                                       observe_pickups, overdue_sends, sent_files, set_sent_item)
from include.intake.errors import TransferTimeout
from include.intake.fetch import DEFAULT_REQUEST_SIZE
from include.intake.names import manifest_digest
from include.partners import load_registry

OUTBOUND = "/partners/acme/outbound"
BIG = 200 * 1024 * 1024


@pytest.fixture(scope="module")
def engine(pg_url):
    from include.db import get_engine
    from include.schema import ensure_schema

    engine = get_engine(pg_url)
    ensure_schema(engine)
    return engine


@pytest.fixture
def make_partner():
    base = load_registry().get("acme")

    def make(marker: str = "none", pickup: str = "removes", alert_hours: int = 24, **folders):
        delivery = base.delivery.model_copy(update={"marker": marker, "pickup": pickup,
                                                    "pickup_alert_hours": alert_hours})
        return base.model_copy(update={"key": f"t{uuid.uuid4().hex[:10]}", "delivery": delivery,
                                       "folders": base.folders.model_copy(update=folders)})

    return make


@pytest.fixture
def sftp(clean_partner_folders):
    client = clean_partner_folders.sftp_client()
    yield client
    client.close()


@pytest.fixture
def outbox(clean_partner_folders) -> Path:
    return clean_partner_folders.local_path(OUTBOUND)


@pytest.fixture
def local(tmp_path):
    def write(name: str, data: bytes) -> str:
        path = tmp_path / "out" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return str(path)

    return write


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> tuple[str, str]:
    """200 MB of random bytes (written piecewise) and their sha256."""
    path = tmp_path_factory.mktemp("big") / "big.bin"
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        for _ in range(BIG // (8 << 20)):
            chunk = os.urandom(8 << 20)
            digest.update(chunk)
            out.write(chunk)
    return str(path), digest.hexdigest()


class _ChunkHook:
    """The upload's local file, calling ``before(n)`` in the uploading thread before its n-th read
    (1-based; one read per write request, the last one finds the end of the file)."""

    def __init__(self, raw, before) -> None:
        self.raw, self.before, self.reads = raw, before, 0

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        self.before(self.reads)
        return self.raw.read(size)

    def __enter__(self) -> _ChunkHook:
        return self

    def __exit__(self, *exc) -> None:
        self.raw.close()


def between_chunks(monkeypatch, before) -> None:
    """Make every upload call ``before(n)`` before it reads chunk n (``n - 1`` chunks sent by then)."""
    real = outbound._open_local
    monkeypatch.setattr(outbound, "_open_local", lambda path: _ChunkHook(real(path), before))


def around_renames(monkeypatch, client, look) -> list[tuple[str, str]]:
    """Make ``client.rename`` call ``look()`` before and after each rename; returns the renames done."""
    done: list[tuple[str, str]] = []
    real = client.rename

    def rename(source: str, target: str) -> None:
        look()
        real(source, target)
        done.append((source, target))
        look()

    monkeypatch.setattr(client, "rename", rename)
    return done


def outgoing(partner, local_path: str, name: str, **kwargs) -> OutboundFile:
    return OutboundFile(partner_key=partner.key, use_case="test_outbound", local_path=local_path, file_name=name,
                        **kwargs)


def rows(engine, partner) -> list:
    with engine.connect() as conn:
        return conn.execute(select(sent_files).where(sent_files.c.partner_key == partner.key)
                            .order_by(sent_files.c.id)).all()


def journal(engine, partner) -> list[tuple[str, str]]:
    from include.exchange.journal import partner_journal

    return [(line.event, line.file_name) for line in partner_journal(engine, partner.key)]


# ---- atomic placement ------------------------------------------------------------------------------
LOOK_EVERY = 8  # chunks between two listings: ~100 of them over the upload


def test_lister_never_sees_a_partial_file_under_the_final_name(make_partner, sftp, sshd_server, outbox, engine,
                                                                  big_file, monkeypatch):
    """A partner listing before every LOOK_EVERY-th chunk, and right before and after the rename, sees
    the upload only under its temporary dot-name, and the final name only complete."""
    partner = make_partner()
    path, sha = big_file
    lister = sshd_server.sftp_client()
    observations: list[dict[str, int]] = []

    def look() -> None:
        observations.append({a.filename: a.st_size for a in lister.listdir_attr(OUTBOUND)})

    between_chunks(monkeypatch, lambda n: look() if n % LOOK_EVERY == 1 else None)
    renames = around_renames(monkeypatch, sftp, look)
    try:
        sent = deliver(sftp, partner, engine, outgoing(partner, path, "products_big.csv"), run_id="r1")
    finally:
        lister.close()
    observations.append({p.name: p.stat().st_size for p in outbox.iterdir()})
    assert sent.created and sent.size == BIG and sent.sha256 == sha
    assert sent.remote_path == f"{OUTBOUND}/products_big.csv"
    final_sizes = [seen["products_big.csv"] for seen in observations if "products_big.csv" in seen]
    assert final_sizes and set(final_sizes) == {BIG}  # under its final name only ever complete
    in_progress = [seen for seen in observations if any(n.startswith(".products_big.csv.") and size < BIG
                                                         for n, size in seen.items())]
    # every look before a chunk saw it in progress (a chunk still to come: the size is short of BIG)
    assert len(in_progress) >= BIG // DEFAULT_REQUEST_SIZE // LOOK_EVERY
    assert all("products_big.csv" not in seen for seen in in_progress)
    assert all(n.endswith(".part") for seen in in_progress for n in seen if n != "products_big.csv")
    (temp, final), = renames
    before_rename = observations[-3]  # look(), rename, look(), then the local listing above
    assert before_rename == {posixpath.basename(temp): BIG} and final == f"{OUTBOUND}/products_big.csv"
    assert sorted(p.name for p in outbox.iterdir()) == ["products_big.csv"]  # no temporary file left
    assert hashlib.sha256((outbox / "products_big.csv").read_bytes()).hexdigest() == sha


def test_the_same_bytes_again_is_a_no_op(make_partner, sftp, outbox, engine, local):
    partner = make_partner()
    path = local("INV-1.csv", b"id,amount\n1,10\n")
    first = deliver(sftp, partner, engine, outgoing(partner, path, "INV-1.csv", subject_key="inv:1"), run_id="r1")
    before = os.stat(outbox / "INV-1.csv")
    again = deliver(sftp, partner, engine, outgoing(partner, path, "INV-1.csv", subject_key="inv:1"), run_id="r2")
    after = os.stat(outbox / "INV-1.csv")
    assert first.created and not again.created
    assert again.id == first.id and again.run_id == "r1" and again.subject_key == "inv:1"
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert len(rows(engine, partner)) == 1
    assert journal(engine, partner) == [("sent", "INV-1.csv")]


def test_a_different_file_under_a_taken_name_gets_the_next_free_name(make_partner, sftp, outbox, engine, local):
    partner = make_partner()
    (outbox / "INV-1.csv").write_bytes(b"the partner's own bytes")
    second = deliver(sftp, partner, engine, outgoing(partner, local("a", b"ours, version A"), "INV-1.csv"), run_id="r")
    third = deliver(sftp, partner, engine, outgoing(partner, local("b", b"ours, version B"), "INV-1.csv"), run_id="r")
    again = deliver(sftp, partner, engine, outgoing(partner, local("a", b"ours, version A"), "INV-1.csv"), run_id="r")
    assert (second.file_name, third.file_name) == ("INV-1~2.csv", "INV-1~3.csv")
    assert again.id == second.id and not again.created  # known under its variant name
    assert (outbox / "INV-1.csv").read_bytes() == b"the partner's own bytes"
    assert (outbox / "INV-1~2.csv").read_bytes() == b"ours, version A"
    assert (outbox / "INV-1~3.csv").read_bytes() == b"ours, version B"
    assert sorted(p.name for p in outbox.iterdir()) == ["INV-1.csv", "INV-1~2.csv", "INV-1~3.csv"]


def test_refuse_leaves_the_taken_name_alone(make_partner, sftp, outbox, engine, local):
    partner = make_partner()
    (outbox / "INV-1.csv").write_bytes(b"the partner's own bytes")
    with pytest.raises(OutboundConflict, match="holds a different file"):
        deliver(sftp, partner, engine, outgoing(partner, local("a", b"ours"), "INV-1.csv"), run_id="r",
                on_conflict="refuse")
    assert (outbox / "INV-1.csv").read_bytes() == b"the partner's own bytes"
    assert [p.name for p in outbox.iterdir()] == ["INV-1.csv"]
    assert rows(engine, partner) == []


def test_the_server_refuses_a_plain_rename_onto_an_existing_file(sftp, outbox):
    """The guarantee the delivery builds on: SSH_FXP_RENAME never overwrites (posix-rename would)."""
    (outbox / "a").write_bytes(b"a")
    (outbox / "b").write_bytes(b"b")
    with pytest.raises(OSError):
        sftp.rename(f"{OUTBOUND}/a", f"{OUTBOUND}/b")
    assert (outbox / "b").read_bytes() == b"b" and (outbox / "a").read_bytes() == b"a"


def test_a_crash_after_the_rename_converges_without_a_second_upload(make_partner, sftp, outbox, engine, local):
    """The file (and no marker) is in place from a run that died before recording it."""
    partner = make_partner(marker="done")
    data = b"id\n1\n"
    (outbox / "INV-7.csv").write_bytes(data)
    before = os.stat(outbox / "INV-7.csv")
    sent = deliver(sftp, partner, engine, outgoing(partner, local("INV-7.csv", data), "INV-7.csv"), run_id="r2")
    after = os.stat(outbox / "INV-7.csv")
    assert sent.created and sent.file_name == "INV-7.csv" and sent.sha256 == hashlib.sha256(data).hexdigest()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(p.name for p in outbox.iterdir()) == ["INV-7.csv", "INV-7.csv.done"]
    assert len(rows(engine, partner)) == 1


# ---- markers -------------------------------------------------------------------------------------
def test_done_marker_is_written_after_the_file(make_partner, sftp, outbox, engine, local, monkeypatch):
    partner = make_partner(marker="done")
    seen: list[list[str]] = []
    renames = around_renames(monkeypatch, sftp, lambda: seen.append(sorted(p.name for p in outbox.iterdir())))
    deliver(sftp, partner, engine, outgoing(partner, local("x", b"id\n1\n"), "INV-2.csv"), run_id="r")
    assert [posixpath.basename(target) for _, target in renames] == ["INV-2.csv", "INV-2.csv.done"]
    assert "INV-2.csv" in seen[2] and "INV-2.csv.done" not in seen[2]  # the file in place, its marker not yet
    assert sorted(p.name for p in outbox.iterdir()) == ["INV-2.csv", "INV-2.csv.done"]
    assert (outbox / "INV-2.csv.done").read_bytes() == b""


def test_manifest_names_the_file_and_its_sha256(make_partner, sftp, outbox, engine, local):
    partner = make_partner(marker="manifest")
    (outbox / "INV-3.csv").write_bytes(b"taken")
    sent = deliver(sftp, partner, engine, outgoing(partner, local("x", b"id\n1\n"), "INV-3.csv"), run_id="r")
    assert sent.file_name == "INV-3~2.csv"
    assert sorted(p.name for p in outbox.iterdir()) == ["INV-3.csv", "INV-3~2.csv", "INV-3~2.csv.sha256"]
    text = (outbox / "INV-3~2.csv.sha256").read_text()
    assert text == f"{sent.sha256}  INV-3~2.csv\n"
    assert manifest_digest(text, "INV-3~2.csv") == hashlib.sha256(b"id\n1\n").hexdigest()  # what intake reads


def test_a_stale_marker_makes_the_name_taken(make_partner, sftp, outbox, engine, local):
    """A marker whose file the partner took must not vouch for a new file under that name."""
    partner = make_partner(marker="done")
    (outbox / "INV-4.csv.done").write_bytes(b"")
    sent = deliver(sftp, partner, engine, outgoing(partner, local("x", b"new"), "INV-4.csv"), run_id="r")
    assert sent.file_name == "INV-4~2.csv"
    assert sorted(p.name for p in outbox.iterdir()) == ["INV-4.csv.done", "INV-4~2.csv", "INV-4~2.csv.done"]


# ---- isolation -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a/b.csv", "../INV-1.csv", "..", "", ".hidden.csv", "INV-1.csv.part", "INV\n.csv"])
def test_unsafe_or_temporary_names_are_refused(make_partner, sftp, outbox, engine, local, name):
    partner = make_partner()
    with pytest.raises(OutboundRefused):
        deliver(sftp, partner, engine, outgoing(partner, local("x", b"x"), name), run_id="r")
    assert list(outbox.iterdir()) == [] and rows(engine, partner) == []


def test_another_partners_file_is_refused(sftp, outbox, engine, local):
    acme = load_registry().get("acme")
    file = OutboundFile(partner_key="globex", use_case="test_outbound", local_path=local("x", b"x"),
                        file_name="INV-1.csv")
    with pytest.raises(OutboundRefused, match="belongs to partner 'globex', not to 'acme'"):
        deliver(sftp, acme, engine, file, run_id="r")
    assert list(outbox.iterdir()) == []


@pytest.mark.parametrize("kind", ["symlink", "file", "missing"])
def test_an_outbound_folder_that_is_no_real_directory_is_refused(make_partner, sftp, sshd_server, engine, local,
                                                                 kind):
    partner = make_partner(outbound="/partners/acme/outbound_alias")
    alias = sshd_server.local_path("/partners/acme/outbound_alias")
    if kind == "symlink":
        alias.symlink_to("/partners/globex/outbound")  # resolves inside the chroot, to another partner
    elif kind == "file":
        alias.write_bytes(b"")
    try:
        with pytest.raises(OutboundRefused, match={"symlink": "is a symbolic link", "file": "is not a directory",
                                                   "missing": "does not exist"}[kind]):
            deliver(sftp, partner, engine, outgoing(partner, local("x", b"x"), "INV-1.csv"), run_id="r")
    finally:
        if alias.is_symlink() or alias.exists():
            alias.unlink()
    assert list(sshd_server.local_path("/partners/globex/outbound").iterdir()) == []
    assert rows(engine, partner) == []


def test_a_missing_local_file_is_refused(make_partner, sftp, engine, tmp_path):
    partner = make_partner()
    with pytest.raises(OutboundRefused, match="cannot be read"):
        deliver(sftp, partner, engine, outgoing(partner, str(tmp_path / "nope"), "INV-1.csv"), run_id="r")


# ---- bounded time ----------------------------------------------------------------------------------
def _children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry))
    return found


def _state(pid: int) -> str | None:
    """The process's state letter (``T``: stopped), None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _until(condition, what: str, bound: float = 30.0) -> None:
    """Wait for a condition (never for a time); the bound only says it never came."""
    give_up = time.monotonic() + bound
    while not condition():
        assert time.monotonic() < give_up, f"{what}: not within {bound:.0f}s"
        time.sleep(0.001)


def _freeze(pid: int) -> None:
    """SIGSTOP ``pid`` and return once it is stopped (the signal alone is asynchronous)."""
    os.kill(pid, signal.SIGSTOP)
    _until(lambda: _state(pid) in ("T", None), f"process {pid} stopping")


def _resume(pid: int) -> None:
    os.kill(pid, signal.SIGCONT)
    _until(lambda: _state(pid) != "T", f"process {pid} resuming")


def _connect_with_server_process(server):
    """A new client and the pid of the sshd process serving its internal-sftp (listener -> monitor -> it)."""
    before = _children(server.process.pid)
    client = server.sftp_client()
    client.listdir(".")  # the subsystem is running
    (monitor,) = _children(server.process.pid) - before
    (worker,) = _children(monitor)
    return client, worker


STOP_AFTER_CHUNKS = 16  # >= 9 of them answered (8 in flight at most): over 2 MiB on the server


def test_a_server_stalled_mid_upload_ends_in_bounded_time(make_partner, sshd_server, clean_partner_folders, outbox,
                                                         engine, big_file, monkeypatch):
    """The server freezes after exactly STOP_AFTER_CHUNKS chunks, frozen by the uploading thread before
    the next one. The wait for its answer is the stall timeout (5 s), well inside the time bound."""
    partner = make_partner()
    client, worker = _connect_with_server_process(sshd_server)
    at_stop: list[dict[str, int]] = []

    def freeze_after_some_chunks(n: int) -> None:
        if n == STOP_AFTER_CHUNKS + 1:
            _freeze(worker)
            at_stop.append({p.name: p.stat().st_size for p in outbox.iterdir()})

    between_chunks(monkeypatch, freeze_after_some_chunks)
    started = time.monotonic()
    try:
        with pytest.raises(TransferTimeout, match="session dropped"):
            deliver(client, partner, engine, outgoing(partner, big_file[0], "products_big.csv"), run_id="r",
                    timeout=120.0, stall_timeout=5.0)
        elapsed = time.monotonic() - started
        transport_active = client.get_channel().get_transport().is_active()
    finally:
        if _state(worker) == "T":
            _resume(worker)
        client.close()
    (frozen,) = at_stop  # frozen once, mid-upload
    (temp, written), = frozen.items()  # only the temporary file, no final name yet
    assert temp.startswith(".products_big.csv.") and temp.endswith(".part")
    assert 1 << 20 <= written < BIG
    assert _state(worker) != "T"  # resumed (or gone with its closed session)
    assert elapsed < 60  # "ends at all": the stall timeout fired, not the 120 s bound
    assert not transport_active
    names = [p.name for p in outbox.iterdir()]
    assert names == [temp]  # the temporary file stays, never renamed
    assert rows(engine, partner) == []


def test_a_server_stalled_before_the_call_ends_in_bounded_time(make_partner, sshd_server, clean_partner_folders,
                                                              outbox, engine, local):
    partner = make_partner()
    client, worker = _connect_with_server_process(sshd_server)
    _freeze(worker)
    try:
        with pytest.raises(TransferTimeout):
            deliver(client, partner, engine, outgoing(partner, local("x", b"x"), "INV-1.csv"), run_id="r",
                    timeout=1.0)
        transport_active = client.get_channel().get_transport().is_active()
    finally:
        _resume(worker)
        client.close()
    assert not transport_active
    assert list(outbox.iterdir()) == [] and rows(engine, partner) == []


# ---- pickup and the ledger -----------------------------------------------------------------------
def test_pickup_is_observed_and_the_rest_becomes_overdue(make_partner, sftp, outbox, engine, local):
    partner = make_partner(marker="done", alert_hours=24)
    taken = deliver(sftp, partner, engine, outgoing(partner, local("a", b"a"), "INV-1.csv"), run_id="r")
    waiting = deliver(sftp, partner, engine, outgoing(partner, local("b", b"b"), "INV-2.csv"), run_id="r")
    (outbox / "INV-1.csv").unlink()  # the partner took it (and left the marker)
    now = waiting.sent_at + timedelta(hours=25)
    picked = observe_pickups(sftp, partner, engine, now=now)
    assert [(p.id, p.status, p.picked_up_at) for p in picked] == [(taken.id, "picked_up", now)]
    assert observe_pickups(sftp, partner, engine, now=now) == []  # marked once
    by_id = {row.id: row for row in rows(engine, partner)}
    assert by_id[taken.id].status == "picked_up" and by_id[waiting.id].status == "sent"
    assert by_id[waiting.id].last_checked_at == now
    assert overdue_sends(engine, partner, now=waiting.sent_at + timedelta(hours=1)) == []
    (late,) = overdue_sends(engine, partner, now=now)
    assert late.sent.id == waiting.id
    assert "INV-2.csv" in late.message and "not picked up after 24 hours" in late.message
    assert journal(engine, partner) == [("sent", "INV-1.csv"), ("sent", "INV-2.csv"), ("picked_up", "INV-1.csv")]


def test_partners_that_keep_files_are_never_picked_up_nor_overdue(make_partner, sftp, outbox, engine, local):
    partner = make_partner(pickup="keeps")
    sent = deliver(sftp, partner, engine, outgoing(partner, local("a", b"a"), "INV-1.csv"), run_id="r")
    (outbox / "INV-1.csv").unlink()
    later = sent.sent_at + timedelta(days=30)
    assert observe_pickups(sftp, partner, engine, now=later) == []
    assert overdue_sends(engine, partner, now=later) == []
    assert [row.status for row in rows(engine, partner)] == ["sent"]


def test_set_sent_item_links_one_item(make_partner, sftp, engine, local):
    partner = make_partner()
    sent = deliver(sftp, partner, engine, outgoing(partner, local("a", b"a"), "INV-1.csv"), run_id="r")
    set_sent_item(engine, sent.id, "ITEM-1")
    set_sent_item(engine, sent.id, "ITEM-1")  # a rerun converging on the same item
    with pytest.raises(Exception, match="already linked to TG item ITEM-1"):
        set_sent_item(engine, sent.id, "ITEM-2")
    with pytest.raises(KeyError):
        set_sent_item(engine, 10**9, "ITEM-1")
    assert [row.tg_item_id for row in rows(engine, partner)] == ["ITEM-1"]
    again = deliver(sftp, partner, engine, outgoing(partner, local("a", b"a"), "INV-1.csv"), run_id="r2")
    assert again.tg_item_id == "ITEM-1"
    assert SentFile.from_dict(again.to_dict()) == again


def test_the_ledger_refuses_a_second_row_for_the_same_send(make_partner, sftp, engine, local):
    partner = make_partner()
    sent = deliver(sftp, partner, engine, outgoing(partner, local("a", b"a"), "INV-1.csv"), run_id="r")
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(sent_files.insert().values(use_case="u", partner_key=partner.key, remote_path=sent.remote_path,
                                                file_name="INV-1.csv", sha256=sent.sha256, size=1, status="sent",
                                                sent_at=sent.sent_at))
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(sent_files)
                            .where(sent_files.c.partner_key == partner.key)).scalar() == 1
