"""Batched poll: a constant number of ledger statements per poll, the same readiness and claim rules
as the per-file path (Ledger.observe / Ledger.claim), and no double claims between overlapping runs."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import pytest
from sqlalchemy import event

from include.intake import Ledger, PartnerInbox
from include.intake import ledger as L

INBOUND = "/partners/acme/inbound"


@contextmanager
def counting_statements(engine):
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


def reference_poll(inbox: PartnerInbox) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """The per-file poll this change replaced (one observe + one claim per file), as an oracle.

    Returns (ready names, waiting (name, reason), in-progress names).
    """
    from include.intake.listing import list_folder
    from include.intake.names import classify_name

    partner = inbox.partner
    entries = list_folder(inbox.sftp, partner.folders.inbound)
    names = {e.name for e in entries}
    now = inbox.clock()
    candidates = [e for e in entries if e.is_file
                  and classify_name(e.name, partner.readiness.temp_suffixes, names).kind == "file"]
    open_entries = inbox.ledger.open_entries(partner.key)
    ready, waiting, busy = [], [], []
    for remote in candidates:
        existing = open_entries.get(remote.path)
        if existing is not None and existing.status != L.SEEN:
            busy.append(remote.name)
            continue
        entry = inbox.ledger.observe(partner.key, remote.path, remote.name, remote.size, remote.mtime)
        if entry.status != L.SEEN:
            busy.append(remote.name)
            continue
        reason = inbox._not_ready_reason(remote, entry, names, now)
        if reason:
            waiting.append((remote.name, reason))
            continue
        doc_type = partner.document_type_for(remote.name)
        assert doc_type is not None  # the scenario only uses known types
        if inbox.ledger.claim(entry.id, inbox.claimed_by, doc_type=doc_type.type,
                              companions=inbox._companions(remote.name, names)):
            ready.append(remote.name)
        else:
            busy.append(remote.name)
    inbox.ledger.mark_vanished(partner.key, {c.path for c in candidates})
    return ready, waiting, busy


def summary(result):
    return ([r.file_name for r in result.ready], [(w.file_name, w.reason) for w in result.waiting],
            result.in_progress)


@pytest.mark.parametrize("marker,stable_polls,min_age", [("none", 2, 0), ("done", 1, 0), ("none", 3, 300)])
def test_batch_poll_claims_what_the_per_file_poll_claims(make_partner, make_inbox, drop, marker, stable_polls, min_age):
    clock = {"now": time.time()}
    batch = make_inbox(make_partner(marker=marker, stable_polls=stable_polls, min_age_seconds=min_age),
                       clock=lambda: clock["now"])
    oracle = make_inbox(make_partner(marker=marker, stable_polls=stable_polls, min_age_seconds=min_age),
                        clock=lambda: clock["now"])
    for i in range(12):
        drop.put(f"{INBOUND}/INV-{i:02}.csv", f"id\n{i}\n", age=30 if i % 3 == 0 else 3600)
        if i % 2 == 0:
            drop.put(f"{INBOUND}/INV-{i:02}.csv.done", "")
    drop.put(f"{INBOUND}/INV-99.csv.filepart", "partial")
    drop.put(f"{INBOUND}/.INV-98.csv", "hidden")
    claimed = {"batch": [], "oracle": []}
    for poll in range(4):
        if poll == 1:
            drop.put(f"{INBOUND}/INV-05.csv", "id\n5\n55\n")  # still being written: count restarts
            drop.put(f"{INBOUND}/INV-01.csv.done", "")  # a marker arrives late
        if poll == 2:
            clock["now"] += 600
        got = batch.poll()
        ready, waiting, busy = reference_poll(oracle)
        assert summary(got) == (ready, waiting, busy), f"poll {poll}"
        assert sorted(got.temporary) == [".INV-98.csv", "INV-99.csv.filepart"]
        claimed["batch"] += [r.file_name for r in got.ready]
        claimed["oracle"] += ready
    assert claimed["batch"] == claimed["oracle"] and claimed["batch"]
    by_name = {e.file_name: e for e in batch.ledger.entries(batch.partner.key)}
    oracle_by_name = {e.file_name: e for e in oracle.ledger.entries(oracle.partner.key)}
    for name, entry in by_name.items():
        twin = oracle_by_name[name]
        assert (entry.status, entry.stable_count, entry.size, entry.companions, entry.doc_type) == (
            twin.status, twin.stable_count, twin.size, twin.companions, twin.doc_type), name


def test_poll_costs_a_constant_number_of_statements(make_partner, make_inbox, drop, ledger):
    inbox = make_inbox(make_partner(stable_polls=2))
    counts = []
    for files in (5, 60):
        for i in range(files):
            drop.put(f"{INBOUND}/INV-{files}-{i:03}.csv", f"id\n{i}\n")
        polls = []
        for _ in range(3):  # insert, count + claim, nothing new
            with counting_statements(ledger.engine) as statements:
                inbox.poll()
            polls.append(len(statements))
        counts.append(polls)
        assert len(ledger.entries(inbox.partner.key, status="ready")) >= files
    assert counts[0] == counts[1], counts
    assert max(counts[1]) <= 8, counts


def test_vanished_and_rewritten_files_between_batch_polls(make_partner, make_inbox, drop, ledger, sshd_server):
    inbox = make_inbox(make_partner(stable_polls=2))
    for name in ("INV-1.csv", "INV-2.csv", "INV-3.csv"):
        drop.put(f"{INBOUND}/{name}", "id\n1\n")
    assert inbox.poll().ready == []
    sshd_server.local_path(f"{INBOUND}/INV-2.csv").unlink()  # withdrawn before it was ready
    drop.put(f"{INBOUND}/INV-3.csv", "id\n1\n2\n")  # rewritten
    second = inbox.poll()
    assert [r.file_name for r in second.ready] == ["INV-1.csv"]
    assert [w.file_name for w in second.waiting] == ["INV-3.csv"]
    statuses = {e.file_name: (e.status, e.stable_count) for e in ledger.entries(inbox.partner.key)}
    assert statuses == {"INV-1.csv": ("ready", 2), "INV-2.csv": ("vanished", 1), "INV-3.csv": ("seen", 1)}


def test_overlapping_batch_polls_never_claim_a_file_twice(make_partner, make_inbox, drop, ledger, sshd_server):
    partner = make_partner(stable_polls=1)
    for i in range(80):
        drop.put(f"{INBOUND}/INV-{i:03}.csv", f"id\n{i}\n")
    clients = [sshd_server.sftp_client() for _ in range(3)]
    inboxes = [make_inbox(partner, client=c, claimed_by=f"run-{n}") for n, c in enumerate(clients)]
    claims: dict[str, list[int]] = {inbox.claimed_by: [] for inbox in inboxes}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(inboxes))

    def run(inbox):
        try:
            for _ in range(3):
                barrier.wait()
                claims[inbox.claimed_by] += [r.entry_id for r in inbox.poll().ready]
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(inbox,)) for inbox in inboxes]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for c in clients:
            c.close()
    assert errors == []
    all_claims = [i for ids in claims.values() for i in ids]
    assert len(all_claims) == len(set(all_claims)) == 80  # every file once, by exactly one run
    entries = ledger.entries(partner.key)
    assert len(entries) == 80  # one entry per file: concurrent first sightings did not duplicate rows
    for run, ids in claims.items():
        assert all(e.claimed_by == run for e in entries if e.id in ids)


def test_claim_many_is_a_compare_and_set(make_partner, ledger):
    partner = make_partner()
    seen = ledger.observe_many(partner.key, [(f"{INBOUND}/INV-{i}.csv", f"INV-{i}.csv", 10, 1) for i in range(20)])
    ids = [e.id for e in seen.values()]
    barrier = threading.Barrier(6)
    won: dict[int, set[int]] = {}

    def claim(n):
        barrier.wait()
        # each run claims all of them, in its own order
        order = ids[n:] + ids[:n]
        won[n] = ledger.claim_many([(i, "invoice", []) for i in order], f"run-{n}")

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for ids_won in won.values() for i in ids_won]
    assert sorted(winners) == sorted(ids)  # each entry claimed exactly once
    assert ledger.claim_many([(i, "invoice", []) for i in ids], "late") == set()


@pytest.fixture(params=["postgresql", "sqlite"])
def any_ledger(request, ledger, tmp_path):
    if request.param == "postgresql":
        return ledger
    from include.db import get_engine

    return Ledger(get_engine(f"sqlite:///{tmp_path}/ledger.db"))


def test_observe_many_and_claim_many_follow_the_single_row_rules(make_partner, any_ledger):
    led = any_ledger
    key = make_partner().key
    path = lambda n: f"{INBOUND}/INV-{n}.csv"  # noqa: E731
    first = led.observe_many(key, [(path(n), f"INV-{n}.csv", 10, 1) for n in range(4)])
    assert [e.stable_count for e in first.values()] == [1, 1, 1, 1]
    again = led.observe_many(key, [(path(0), "INV-0.csv", 10, 1), (path(1), "INV-1.csv", 11, 1),
                                   (path(2), "INV-2.csv", 10, 2), (path(3), "INV-3.csv", 10, 1)])
    assert [(e.stable_count, e.size, e.mtime) for e in again.values()] == [(2, 10, 1), (1, 11, 1), (1, 10, 2), (2, 10, 1)]
    assert led.claim_many([(again[path(0)].id, "invoice", ["INV-0.csv.done"])], "run-a") == {again[path(0)].id}
    claimed = led.get(again[path(0)].id)
    assert (claimed.status, claimed.claimed_by, claimed.doc_type, claimed.companions) == (
        "ready", "run-a", "invoice", ["INV-0.csv.done"])
    third = led.observe_many(key, [(path(0), "INV-0.csv", 10, 1), (path(3), "INV-3.csv", 10, 1),
                                   (path(4), "INV-4.csv", 5, 1)])
    assert third[path(0)] == claimed  # claimed entries come back unchanged
    assert third[path(3)].stable_count == 3 and third[path(4)].stable_count == 1
    # the single-row path agrees with what the batch stored
    assert led.observe(key, path(3), "INV-3.csv", 10, 1).stable_count == 4
    assert led.claim_many([(claimed.id, "invoice", [])], "run-b") == set()
    assert set(led.get_many([claimed.id, third[path(4)].id])) == {claimed.id, third[path(4)].id}
    with pytest.raises(LookupError):
        led.get_many([claimed.id, 10**9])


def test_claimed_unannounced_lists_only_this_runs_unfinished_or_unannounced_entries(make_partner, any_ledger):
    led = any_ledger
    key = make_partner().key
    seen = led.observe_many(key, [(f"{INBOUND}/INV-{n}.csv", f"INV-{n}.csv", 10, 1) for n in range(5)])
    ids = sorted(e.id for e in seen.values())
    assert led.claim_many([(i, "invoice", []) for i in ids[:4]], "run-a") == set(ids[:4])
    # ids[0]: archived and announced; ids[1]: archived, not announced yet; ids[2], ids[3]: still open
    for entry_id in ids[:2]:
        led.mark_fetched(entry_id, sha256=f"{entry_id:064d}", size=10, local_path="/tmp/x")
        led.record_move_intent(entry_id, target_status="archived", final_path=f"/a/{entry_id}")
        led.mark_moved(entry_id)
    led.set_tg_items({ids[0]: "itm_done"})
    assert led.claimed_unannounced(key, "run-a") == ids[1:4]
    assert led.claimed_unannounced(key, "run-b") == []  # ids[4] is seen, not claimed by anyone
    assert led.claimed_unannounced("other-partner", "run-a") == []
