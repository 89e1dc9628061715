"""catalog_sync's receive and publish steps without Airflow: real OpenSSH sshd, the TG sandbox over
HTTP, PostgreSQL.

- a good price list, a bad one and a file no catalog kind matches, in one interval: the good one
  becomes a version (archived), the two others are quarantined; receive posts nothing and returns
  their validation_failure cases; publishing posts them and the diff item once (a rerun converges);
  every item is in the kit's ``tg_items``, the ledger knows the cases;
- a retried receive carries on from the staged copy an earlier attempt fetched
  (``PartnerInbox.fetched_file``), or fetches again when the copy is gone;
- the journal command prints a catalog file's journey in order (good, bad, superseded, escalated);
- a diff above the inline cap is attached truncated, and says so.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from include.catalog import store
from include.catalog import tables as t
from include.catalog.receive import receive
from tests.catalog.steps import catalog_run, publish

REPO = Path(__file__).resolve().parents[2]
INBOUND = "/partners/acme/inbound/catalog"
HEADER = ["SKU", "Net Price", "Currency", "Valid From"]  # acme's names, mapped by the registry
DAY1 = (datetime(2026, 11, 21, tzinfo=timezone.utc), datetime(2026, 11, 22, tzinfo=timezone.utc))
DAY2 = (datetime(2026, 11, 22, tzinfo=timezone.utc), datetime(2026, 11, 23, tzinfo=timezone.utc))


@pytest.fixture
def sftp(clean_partner_folders, monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_CONN_SFTP_DEFAULT", clean_partner_folders.airflow_conn_json())
    clean_partner_folders.local_path(INBOUND).mkdir(parents=True, exist_ok=True)
    return clean_partner_folders


@pytest.fixture
def run_of(db, acme, tmp_path):
    """``run_of(run_id)``: the run a task of that DAG run builds (quick polls, staging under tmp_path)."""
    return lambda run_id: catalog_run(db, acme, run_id, poll_interval=0.01, max_polls=4, staging_root=str(tmp_path))


def put(sshd, name: str, rows, mtime: str, header=HEADER) -> str:
    """A file in acme's catalog folder, sent at ``mtime``; rows get a unique SKU (content is new each test)."""
    local = sshd.local_path(f"{INBOUND}/{name}")
    with open(local, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows([*rows, (f"U-{uuid.uuid4().hex[:8]}", "1.00", "EUR", "2026-12-01")])
    stamp = datetime.fromisoformat(mtime).timestamp()
    os.utime(local, (stamp, stamp))
    return name


GOOD = [("A-1", "10.00", "EUR", "2026-12-01"), ("B-2", "4.00", "EUR", "2026-12-01")]
BAD = [("A-1", "-3.00", "EUR", "2026-12-01")]  # a negative price fails the suite


def names_in(sshd, role: str) -> list[str]:
    return sorted(p.name for p in sshd.local_path(f"/partners/acme/{role}/catalog").iterdir())


def test_receive_moves_files_and_returns_the_cases_that_publish_posts_once(db, sftp, run_of, hooks, acme):
    from include.exchange.items import tracked_items

    enterprise, _ = hooks
    good = put(sftp, "price_list_good.csv", GOOD, "2026-11-21T08:00:00+00:00")
    bad = put(sftp, "price_list_bad.csv", BAD, "2026-11-21T09:00:00+00:00")
    stray = put(sftp, "readme.txt", [], "2026-11-21T10:00:00+00:00")
    run = run_of("scheduled__1")
    received = receive(run, DAY1)

    (version_id,) = received.version_ids
    assert store.get_version(db, version_id)["file_name"] == good
    assert [n.split(".csv")[0] for n in names_in(sftp, "archive")] == ["price_list_good"]
    assert sorted(n.split(".")[0] for n in names_in(sftp, "quarantine")) == ["price_list_bad", "readme"]
    assert [c["payload"]["category"] for c in received.cases] == ["validation_failure"] * 2
    by_file = {c["payload"]["metadata"]["file_name"]: c for c in received.cases}
    assert set(by_file) == {bad, stray}
    assert "expect_column_values_to_be_between" in by_file[bad]["attachments"][0]["text"]  # the stored report
    assert not enterprise.list_items(external_ref=by_file[bad]["payload"]["external_ref"])  # receive posts nothing

    waits = publish(run, enterprise, received)
    assert [w["version_id"] for w in waits] == [version_id] and waits[0]["item_id"]
    case = enterprise.find_by_external_ref(by_file[bad]["payload"]["external_ref"])
    assert case["requires_ack"] and case["title"].startswith(f"Price list {bad} failed its checks")
    assert [a["filename"] for a in enterprise.list_attachments(case["id"])] == ["check-report-price_list_bad.csv.json"]
    tracked = {i.kind: i for i in tracked_items(db, use_case="catalog_sync", item_ids=[waits[0]["item_id"], case["id"]])}
    assert tracked["catalog_sync"].file_name == good and tracked["validation_failure"].file_name == bad
    assert tracked["catalog_sync"].subject_key == f"price_list-{store.get_version(db, version_id)['sha256'][:16]}"

    # The same run again (a cleared task): the cases were announced, the version is already posted.
    again = receive(run, DAY1)
    assert again.version_ids == [version_id] and again.cases == []
    assert publish(run, enterprise, again) == waits
    for ref in [c["payload"]["external_ref"] for c in received.cases]:
        assert len(enterprise.list_items(external_ref=ref)) == 1


def test_a_case_lost_before_posting_is_sent_again_by_the_next_attempt(db, sftp, run_of, hooks):
    """receive quarantined the file, then the run died before the operator posted: the retried
    receive returns the same case (built from what was stored), and it is posted once."""
    enterprise, _ = hooks
    bad = put(sftp, "price_list_lost.csv", BAD, "2026-11-21T09:00:00+00:00")
    stray = put(sftp, "notes_lost.txt", [], "2026-11-21T10:00:00+00:00")
    run = run_of("scheduled__lost")
    first = receive(run, DAY1)
    time.sleep(1.1)  # not a race: the rebuilt cases must not depend on the moment they are built (due_at)
    retried = receive(run, DAY1)
    assert retried.cases == first.cases and len(retried.cases) == 2
    assert sorted(c["payload"]["metadata"]["file_name"] for c in retried.cases) == sorted([bad, stray])
    publish(run, enterprise, retried)
    assert receive(run, DAY1).cases == []


def test_a_retry_carries_on_from_the_staged_copy_or_fetches_again(db, sftp, run_of, acme):
    from include.catalog.intake import IntervalListing, catalog_partner
    from include.exchange.run import poll_until_ready, sftp_session

    name = put(sftp, "price_list_retry.csv", GOOD, "2026-11-21T08:00:00+00:00")
    run = run_of("scheduled__retry")
    view = catalog_partner(acme)
    # The first attempt polled and fetched, then died before the checks.
    with sftp_session("sftp_default") as session:
        inbox = run.inbox(session, partner=view, listing=IntervalListing(session, view.folders.inbound, *DAY1))
        poll_until_ready(run, inbox, polls=4)
        (ready,) = [e for e in run.ledger.entries(view.key, open_only=True) if e.file_name == name]
        fetched = inbox.fetch(ready.id)
        again = inbox.fetched_file(ready.id)
    assert again == type(fetched)(**{**fetched.to_dict(), "seconds": 0.0})
    fetched_at = run.ledger.get(ready.id).fetched_at

    (version_id,) = receive(run, DAY1).version_ids
    entry = run.ledger.get(ready.id)
    assert entry.status == "archived" and entry.fetched_at == fetched_at  # not fetched a second time
    assert store.get_version(db, version_id)["row_count"] == 3

    # A second file whose staged copy is gone (another worker) is fetched again.
    other = put(sftp, "price_list_retry2.csv", GOOD, "2026-11-21T11:00:00+00:00")
    with sftp_session("sftp_default") as session:
        inbox = run.inbox(session, partner=view, listing=IntervalListing(session, view.folders.inbound, *DAY1))
        poll_until_ready(run, inbox, polls=4)
        (ready,) = [e for e in run.ledger.entries(view.key, open_only=True) if e.file_name == other]
        Path(inbox.fetch(ready.id).local_path).unlink()
    assert len(receive(run, DAY1).version_ids) == 2
    assert run.ledger.get(ready.id).status == "archived"


def journey(db_url: str, file_name: str) -> list[str]:
    """The events the journal command prints for a file, in order."""
    out = subprocess.run([sys.executable, "-m", "include.exchange.journal", "--file", file_name, "--db", db_url,
                          "--json"], capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert out.returncode == 0, out.stderr[-3000:]
    return [e["event"] for e in json.loads(out.stdout)["events"]]


def test_the_journal_command_prints_a_catalog_files_journey_in_order(db, sftp, run_of, hooks, acme, pg_url, monkeypatch):
    from include.catalog.ack_sensor import CatalogAckSensor
    from include.catalog.decision import decide_and_load

    enterprise, portal = hooks
    monkeypatch.setenv("EXCHANGE_DB_URL", pg_url)  # where the ack sensor writes its escalation line
    first = put(sftp, "price_list_j1.csv", GOOD, "2026-11-21T08:00:00+00:00")
    bad = put(sftp, "price_list_j1_bad.csv", BAD, "2026-11-21T09:00:00+00:00")
    run1 = run_of("scheduled__j1")
    publish(run1, enterprise, receive(run1, DAY1))
    second = put(sftp, "price_list_j2.csv", [("A-1", "11.00", "EUR", "2026-12-01")], "2026-11-22T08:00:00+00:00")
    run2 = run_of("scheduled__j2")
    (wait,) = publish(run2, enterprise, receive(run2, DAY2))  # supersedes the first, still unanswered
    sensor = CatalogAckSensor(task_id="await_acknowledgement", version=wait)
    sensor._apply_version()
    sensor.escalate(None)
    portal.acknowledge(wait["item_id"], note="fine")
    assert decide_and_load(db, enterprise, wait["version_id"])["loaded"]

    moved = ["received", "staged", "checked", "archived", "item_posted"]
    assert journey(pg_url, first) == [*moved, "superseded", "commented"]
    assert journey(pg_url, bad) == ["received", "checked", "quarantined", "item_posted"]
    assert journey(pg_url, second) == [*moved, "escalated", "acknowledged", "loaded"]
    assert store.get_version(db, wait["version_id"])["status"] == t.LOADED


def test_a_diff_above_the_inline_cap_is_attached_truncated_and_says_so(acme):
    from trading_grid.posts import MAX_INLINE_BYTES, ItemPost

    from include.catalog.diff import CatalogDiff
    from include.catalog.payloads import diff_post
    from include.exchange.run import RunContext

    added = [f"SKU-{n:07d}-{'x' * 40}" for n in range(40_000)]  # ~2 MB of CSV
    diff = CatalogDiff(kind="price_list", threshold_pct=20, rows_before=0, rows_after=len(added), added=added)
    version = {"id": 7, "kind": "price_list", "file_name": "price_list_big.csv", "sha256": "ab" * 32, "size": 1,
               "row_count": len(added), "received_at": datetime(2026, 11, 21, tzinfo=timezone.utc)}
    post = ItemPost.from_dict(diff_post(acme, version, diff, RunContext(dag_id="catalog_sync", run_id="r")))
    (attachment,) = post.attachments
    full = diff.to_csv()
    assert len(full) > MAX_INLINE_BYTES >= len(attachment.content) and full.startswith(attachment.content)
    assert attachment.content.endswith(b"\n") and attachment.filename == "acme_price_list_v7_diff_truncated.csv"
    shown = attachment.content.count(b"\n") - 1
    assert f"holds the first {shown} of {len(added)} change lines" in post.payload["body"]
    small = CatalogDiff(kind="price_list", threshold_pct=20, rows_before=0, rows_after=1, added=["A"])
    plain = ItemPost.from_dict(diff_post(acme, version, small, RunContext(dag_id="catalog_sync", run_id="r")))
    assert plain.attachments[0].content == small.to_csv() and "truncated" not in plain.payload["body"]
