"""The document_delivery task functions end to end against real sshd, TG sandbox and PostgreSQL.

No scheduler: each test calls the functions the DAG's tasks call, in the DAG's order
(``run_partner_once`` = intake [check_readiness → fetch_and_validate → move_files, one SFTP
session] → publish_results).
"""
from __future__ import annotations

import json

import pytest

from include import document_delivery as dd
from tests.data.bad_inputs import make_valid_file, valid_rows, csv_text
from tests.document_delivery.conftest import PARTNER, TG_PARTNER, sha256_of


def _bad_invoice(rows: int = 5, seed: int = 3) -> str:
    header, data = valid_rows("invoice", rows, seed=seed)
    data[1][header.index("amount")] = "-5.00"  # fails amount > 0
    return csv_text(header, data)


def test_happy_path_archives_and_notifies_with_metadata(delivery_env):
    env = delivery_env
    source = make_valid_file(env.tmp / "src", "invoice", rows=12, name="INV-1001.csv")
    env.drop("INV-1001.csv", source)

    summary = dd.run_partner_once(PARTNER, env.ctx)

    assert env.names(env.inbound) == []
    archived = env.names(env.archive)
    assert len(archived) == 1 and archived[0].startswith("INV-1001.csv.")
    assert (env.archive / archived[0]).read_bytes() == source.read_bytes()
    items = env.items(partner_id=TG_PARTNER)
    assert len(items) == 1
    item = items[0]
    assert (item["type"], item["category"], item["requires_ack"]) == ("notification", "document_delivery", True)
    meta = item["metadata"]
    assert meta["document_type"] == "invoice"
    assert meta["file_name"] == "INV-1001.csv"
    assert meta["sha256"] == sha256_of(source)
    assert meta["size"] == source.stat().st_size
    assert meta["rows"] == 12
    assert meta["dag_id"] == "document_delivery" and meta["run_id"] == env.ctx.run_id
    assert summary["notifications"] == [item["id"]]
    staged = [p.name for p in (env.ctx.staging_dir() / PARTNER).iterdir()]
    assert staged and all(name.endswith(".report.json") for name in staged), "staged copies removed once published"
    tracked = env.tracked(partner_key=PARTNER)
    assert [(t["item_id"], t["kind"], t["status"]) for t in tracked] == [(item["id"], "document_delivery", "open")]


def _sessions_accepted(sshd) -> int:
    return (sshd.workdir / "sshd.log").read_text(errors="replace").count("Accepted publickey")


def test_a_run_opens_one_sftp_session_per_partner_whatever_the_number_of_files(delivery_env):
    env = delivery_env
    for i in range(5):
        env.drop(f"INV-17{i:02d}.csv", make_valid_file(env.tmp / "src", "invoice", rows=3, name=f"s{i}.csv", seed=i))
    env.drop("INV-1799.csv", _bad_invoice())
    before = _sessions_accepted(env.sshd)

    summary = dd.run_partner_once(PARTNER, env.ctx)

    assert len(summary["notifications"]) == 5 and len(summary["validation_cases"]) == 1
    assert len(env.names(env.archive)) == 5 and len(env.names(env.quarantine)) == 1
    assert _sessions_accepted(env.sshd) - before == 1  # readiness, fetch, moves: one session; TG needs none


def test_rerun_and_new_run_post_nothing_new(delivery_env):
    env = delivery_env
    env.drop("INV-1002.csv", make_valid_file(env.tmp / "src", "invoice", rows=3, name="x.csv"))
    env.drop("INV-1003.csv", _bad_invoice())
    first = dd.run_partner_once(PARTNER, env.ctx)
    assert first["created"] == 2
    before = {i["id"]: i["updated_at"] for i in env.items()}

    # Clearing publish_results: same run, same outcomes, posted again → converges, nothing new.
    again = env.publish(first["outcomes"])
    assert again["created"] == 0 and again["reused"] == 2
    # The same run cleared as a whole, and the next scheduled run: nothing left to do.
    assert dd.run_partner_once(PARTNER, env.ctx)["created"] == 0
    assert dd.run_partner_once(PARTNER, env.context("scheduled__next"))["created"] == 0
    after = env.items()
    assert sorted(i["id"] for i in after) == sorted(before)
    case = next(i for i in after if i["category"] == "validation_failure")
    assert len(env.attachments(case["id"])) == 1, "report attached once, not per rerun"


def test_bad_inputs_end_in_quarantine_with_clear_cases(delivery_env):
    """The whole bad-input corpus at once (invoices, product files, invoices with checksum manifests):
    bad files quarantined with a case each, good ones archived, temporary names untouched, nothing
    lost, no crash."""
    from tests.data.bad_inputs import (
        ODD_NAMES,
        TEMP_NAMES,
        make_bad_inputs,
        make_manifest_bad_inputs,
        make_product_bad_inputs,
    )

    env = delivery_env
    corpus = make_bad_inputs(env.tmp / "corpus")
    corpus.update(make_product_bad_inputs(env.tmp / "products"))
    manifested = make_manifest_bad_inputs(env.tmp / "manifests")
    corpus.update(manifested)
    expected: dict[str, str | None] = {}
    for name, (path, code) in corpus.items():
        if name.startswith("odd_name_"):
            continue
        expected[path.name] = code
        env.drop(path.name, path)
    for path, _ in manifested.values():  # each manifest next to its file, moved with it
        env.drop(path.name + ".sha256", path.with_name(path.name + ".sha256"))
    good = corpus["valid"][0]
    for odd in ODD_NAMES:
        env.drop(odd, good.read_bytes().replace(b"INV-", f"INV{ODD_NAMES.index(odd)}-".encode()))
    for temp in TEMP_NAMES:
        env.drop(temp, b"still uploading")
    # Names no partner tool should send: backslash traversal and bytes that are not UTF-8.
    env.drop("..\\..\\windows\\win.ini", good.read_bytes().replace(b"INV-", b"INVW-"))
    env.drop(b"caf\xe9-latin1.csv", good.read_bytes().replace(b"INV-", b"INVL-"))
    # Same bytes as valid.csv (listed earlier): a re-delivery, archived as duplicate, never re-checked.
    duplicates = {name for name in expected if name != "valid.csv"
                  and (env.inbound / name).read_bytes() == good.read_bytes()}
    assert duplicates == {"xlsx_is_csv.xlsx"}

    summary = dd.run_partner_once(PARTNER, env.ctx)

    from include.intake.names import classify_name
    from include.partners import DEFAULT_TEMP_SUFFIXES

    # The intake's rule decides what is temporary (Thumbs.db is not, for it: a complete file of no
    # document type, so it is refused with a case like any unknown file).
    temporary = [n for n in TEMP_NAMES if classify_name(n, DEFAULT_TEMP_SUFFIXES).kind == "temporary"]
    assert len(temporary) >= len(TEMP_NAMES) - 1
    inbound = env.names(env.inbound)
    assert sorted(inbound) == sorted(temporary), "temporary names are left alone, everything else is handled"
    cases = {i["metadata"]["file_name"]: i for i in env.items(category="validation_failure")}
    notified = {i["metadata"]["file_name"]: i for i in env.items(category="document_delivery")}
    quarantined = env.names(env.quarantine)
    for file_name, code in expected.items():
        if file_name in duplicates:
            assert file_name not in cases and file_name not in notified
            assert any(a.startswith(file_name + ".") for a in env.names(env.archive))
            continue
        if code is None:
            assert file_name in notified, f"{file_name} should pass"
            continue
        assert file_name in cases, f"{file_name}: no validation_failure case"
        case = cases[file_name]
        assert case["type"] == "case" and case["status"] == "open"
        assert case["metadata"]["reason_code"] == code, file_name
        assert code in case["title"] and case["body"].strip(), file_name
        assert [a for a in env.attachments(case["id"]) if a.get("filename", "").endswith(".json")], file_name
        assert any(q.startswith(file_name + ".") for q in quarantined), f"{file_name} not in quarantine"
    # Odd but harmless names pass under their own name; names the intake refuses get a case instead.
    for odd in ODD_NAMES:
        assert odd in notified or odd in cases, f"{odd!r} neither announced nor refused"
    assert "..\\..\\windows\\win.ini" in cases
    assert cases["..\\..\\windows\\win.ini"]["metadata"]["reason_code"]
    # Nothing is lost: every file that came in is in archive or quarantine (or still inbound).
    total_in = len(expected) + len(manifested) + len(ODD_NAMES) + len(TEMP_NAMES) + 2
    assert len(env.names(env.archive)) + len(quarantined) + len(inbound) == total_in
    assert not summary["errors"]


def test_duplicate_redelivery_is_announced_once(delivery_env):
    env = delivery_env
    content = make_valid_file(env.tmp / "src", "invoice", rows=4, name="d.csv").read_bytes()
    env.drop("INV-2001.csv", content)
    dd.run_partner_once(PARTNER, env.ctx)
    env.drop("INV-2001 (copy).csv", content)
    second = dd.run_partner_once(PARTNER, env.context("scheduled__2"))
    assert second["duplicates"] == 1 and second["created"] == 0
    dd.run_partner_once(PARTNER, env.context("scheduled__3"))

    notifications = env.items(category="document_delivery")
    assert len(notifications) == 1
    notes = [c for c in env.comments(notifications[0]["id"]) if "delivered again" in c["body"]]
    assert len(notes) == 1 and "`INV-2001 (copy).csv`" in notes[0]["body"]
    assert len(env.names(env.archive)) == 2 and env.names(env.inbound) == []


def test_corrected_file_resolves_the_case_with_a_link(delivery_env):
    env = delivery_env
    env.drop("INV-3001.csv", _bad_invoice())
    dd.run_partner_once(PARTNER, env.ctx)
    (case,) = env.items(category="validation_failure")
    assert case["metadata"]["document_key"] == "invoice:inv-3001"

    fixed = make_valid_file(env.tmp / "src", "invoice", rows=5, name="f.csv", seed=3)
    env.drop("INV-3001_corrected.csv", fixed)
    summary = dd.run_partner_once(PARTNER, env.context("scheduled__2"))

    (notification,) = env.items(category="document_delivery")
    assert summary["resolved"] == [case["id"]]
    assert env.item(case["id"])["status"] == "resolved"
    links = [c for c in env.comments(case["id"]) if notification["id"] in c["body"]]
    assert len(links) == 1 and "INV-3001_corrected.csv" in links[0]["body"]
    assert env.tracked(kind="validation_failure", partner_key=PARTNER)[0]["resolved_by_item_id"] == notification["id"]


def test_file_that_vanishes_before_fetch_opens_a_transfer_failure_case(delivery_env):
    env = delivery_env
    path = env.drop("INV-4001.csv", make_valid_file(env.tmp / "src", "invoice", rows=3, name="v.csv"))
    claimed = env.check_readiness()
    assert len(claimed) == 1
    path.unlink()  # the partner withdrew it, or the server lost it, between listing and transfer

    outcomes = env.fetch_and_validate(claimed)
    assert [o.kind for o in outcomes] == [dd.TRANSFER_FAILED]
    assert "vanished" in outcomes[0].reason and "INV-4001.csv" in outcomes[0].reason
    env.publish(outcomes)

    (case,) = env.items(category="transfer_failure")
    assert case["type"] == "case" and case["partner_id"] == TG_PARTNER
    assert "INV-4001.csv" in case["title"] and outcomes[0].reason[:40] in case["body"]
    assert case["metadata"]["error"]
    assert env.items(category="document_delivery") == []


def test_temporary_upload_is_left_alone_until_renamed(delivery_env):
    env = delivery_env
    content = make_valid_file(env.tmp / "src", "invoice", rows=3, name="u.csv", seed=9).read_bytes()
    partial = env.drop("INV-7001.csv.filepart", content)
    first = dd.run_partner_once(PARTNER, env.ctx)
    assert first["outcomes"] == [] and env.names(env.inbound) == ["INV-7001.csv.filepart"]
    assert env.items() == [] and env.names(env.quarantine) == []

    partial.rename(env.inbound / "INV-7001.csv")  # the upload tool renames when done
    second = dd.run_partner_once(PARTNER, env.context("scheduled__2"))
    assert [o.kind for o in second["outcomes"]] == [dd.PASSED]
    (note,) = env.items(category="document_delivery")
    assert note["metadata"]["file_name"] == "INV-7001.csv"
    assert env.names(env.inbound) == []


def test_a_file_swapped_for_a_link_after_its_claim_gets_a_validation_case_not_a_transfer_retry(delivery_env):
    """The intake refuses a link in place (another partner's bytes never read); the partner is told once."""
    env = delivery_env
    other = env.sshd.local_path("/partners/globex/inbound") / "SECRET-globex.csv"
    other.write_bytes(make_valid_file(env.tmp / "src", "invoice", rows=3, name="g.csv", seed=77).read_bytes())
    path = env.drop("INV-9001.csv", b"x" * other.stat().st_size)  # same size as the other partner's file
    claimed = env.check_readiness()
    path.unlink()
    path.symlink_to("/partners/globex/inbound/SECRET-globex.csv")  # a path inside the server's chroot

    outcomes = env.fetch_and_validate(claimed)
    assert [o.kind for o in outcomes] == [dd.REJECTED]
    assert "link" in outcomes[0].reason
    summary = env.publish(outcomes)
    (case,) = env.items(category="validation_failure")
    assert summary["validation_cases"] == [case["id"]] and env.items(category="transfer_failure") == []
    assert "SECRET" not in json.dumps(case) and "link" in case["body"]
    assert path.is_symlink() and other.exists()  # nothing moved, nothing deleted
