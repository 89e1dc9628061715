"""The TG contract through TradingGridHook, against the sandbox over loopback HTTP (no mocked HTTP)."""
from __future__ import annotations

import hashlib
import os
import time
import tracemalloc

import pytest

from tests.trading_grid.conftest import FAST_RETRIES, connection_secret, make_payload
from trading_grid.exceptions import (
    TradingGridAuthError,
    TradingGridConflict,
    TradingGridNotFound,
    TradingGridPermissionDenied,
    TradingGridValidationError,
)
from trading_grid.hooks.trading_grid import TradingGridHook
from trading_grid.refs import external_ref, idempotency_key


def test_refs_are_deterministic_safe_and_bounded():
    ref = external_ref("document_delivery", "P-ACME", "invoice-2026-11-25.csv", "notify")
    assert ref == "tg1:document_delivery:P-ACME:invoice-2026-11-25.csv:notify"
    long_subject = "orders/2026/11/" + "x" * 300 + " with spaces"
    hashed = external_ref("document_delivery", "P-ACME", long_subject, "notify")
    assert hashed == external_ref("document_delivery", "P-ACME", long_subject, "notify")
    assert hashed.split(":")[3] == "h-" + hashlib.sha256(long_subject.encode()).hexdigest()[:40]
    assert len(hashed) <= 200
    with pytest.raises(ValueError):
        external_ref("document delivery", "P-ACME", "s", "notify")
    with pytest.raises(ValueError):
        external_ref("document_delivery", "P:ACME", "s", "notify")
    body = {"a": 1, "metadata": {"run_id": "r1"}}
    assert idempotency_key(ref, body) == idempotency_key(ref, {"metadata": {"run_id": "r1"}, "a": 1})
    assert idempotency_key(ref, body) != idempotency_key(ref, {**body, "metadata": {"run_id": "r2"}})


def test_create_replay_and_changed_body_converge_on_one_item(hook):
    payload = make_payload()
    item, created = hook.create_item(payload)
    assert created is True
    assert item["external_ref"] == payload["external_ref"] and item["status"] == "open"

    replay, created_again = hook.create_item(payload)  # same key, same body → 200 replay
    assert (replay["id"], created_again) == (item["id"], False)

    rerun = {**payload, "metadata": {**payload["metadata"], "run_id": "scheduled__2"}, "title": "changed"}
    converged, created_rerun = hook.create_item(rerun)  # new key, same ref → 409 → existing item
    assert (converged["id"], created_rerun) == (item["id"], False)
    assert converged["title"] == payload["title"]  # the first item is kept, not overwritten

    assert [i["id"] for i in hook.list_items(external_ref=payload["external_ref"])] == [item["id"]]


def test_get_find_and_not_found(hook):
    item, _ = hook.create_item(make_payload())
    assert hook.get_item(item["id"])["id"] == item["id"]
    assert hook.find_by_external_ref(item["external_ref"])["id"] == item["id"]
    assert hook.find_by_external_ref("tg1:document_delivery:P-ACME:nothing-here:notify") is None
    with pytest.raises(TradingGridNotFound):
        hook.get_item("itm_does_not_exist")


def test_list_follows_cursor_pages_with_filters(hook):
    first, _ = hook.create_item(make_payload("P-GLOBEX"))
    ids = {first["id"]} | {hook.create_item(make_payload("P-GLOBEX"))[0]["id"] for _ in range(6)}
    hook.create_item(make_payload("P-ACME"))  # must be filtered out
    before = hook.stats["requests"]
    listed = hook.list_items(partner_id="P-GLOBEX", updated_since=first["updated_at"], page_size=3)
    listed_ids = [i["id"] for i in listed]
    assert len(listed_ids) == len(set(listed_ids)), "a page boundary repeated an item"
    assert ids <= set(listed_ids)
    assert {i["partner_id"] for i in listed} == {"P-GLOBEX"}
    assert hook.stats["requests"] - before >= 3  # 7+ items at 3 per page
    keys = [(i["updated_at"], i["id"]) for i in listed]
    assert keys == sorted(keys)


def test_transitions_are_idempotent_and_illegal_moves_fail(hook):
    item, _ = hook.create_item(make_payload())
    assert hook.transition(item["id"], "in_progress", comment="working on it")["status"] == "in_progress"
    assert hook.transition(item["id"], "in_progress")["status"] == "in_progress"  # rerun: success
    with pytest.raises(TradingGridConflict):
        hook.transition(item["id"], "acknowledged")  # in_progress → acknowledged is not allowed
    hook.transition(item["id"], "resolved")
    assert hook.transition(item["id"], "closed")["status"] == "closed"
    assert hook.transition(item["id"], "closed")["status"] == "closed"
    with pytest.raises(TradingGridConflict):
        hook.transition(item["id"], "open")


def test_acknowledge_sets_ack_and_is_idempotent(hook):
    item, _ = hook.create_item(make_payload())
    acked = hook.acknowledge(item["id"], note="seen")
    assert acked["status"] == "acknowledged" and acked["acknowledged_at"]
    again = hook.acknowledge(item["id"])
    assert again["acknowledged_at"] == acked["acknowledged_at"]


def test_update_item_uses_if_match_and_survives_a_stale_version(hook):
    item, _ = hook.create_item(make_payload())
    hook.update_item(item["id"], {"title": "someone else was here"})  # bumps the version
    updated = hook.update_item(item["id"], {"severity": "high", "metadata": {"note": "x"}}, version=item["version"])
    assert updated["severity"] == "high" and updated["version"] > item["version"] + 1
    assert updated["metadata"]["note"] == "x" and updated["metadata"]["run_id"] == "manual__1"  # merged


def test_comments_are_not_repeated_on_rerun(hook):
    item, _ = hook.create_item(make_payload())
    first, created = hook.add_comment(item["id"], "File received, checks passed.")
    second, created_again = hook.add_comment(item["id"], "File received, checks passed.")
    assert created and not created_again and second["id"] == first["id"]
    hook.add_comment(item["id"], "internal note", visibility="internal")
    hook.add_comment(item["id"], "File received, checks passed.", dedupe=False)
    bodies = [c["body"] for c in hook.list_comments(item["id"])]
    assert bodies.count("File received, checks passed.") == 2 and "internal note" in bodies


def test_attachment_is_streamed_with_sha256_and_not_uploaded_twice(hook, tmp_path):
    path = tmp_path / "delivery.bin"
    size = 6 * 1024 * 1024
    path.write_bytes(os.urandom(size))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    item, _ = hook.create_item(make_payload())

    tracemalloc.start()
    try:
        attachment, created = hook.attach_file(item["id"], str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert created and attachment["sha256"] == digest and attachment["size"] == size
    assert peak < size / 2, f"upload held {peak} bytes in memory for a {size}-byte file: not streamed"

    again, created_again = hook.attach_file(item["id"], str(path), filename="other-name.bin")
    assert not created_again and again["id"] == attachment["id"]
    assert len(hook.list_attachments(item["id"])) == 1
    assert hook.get_attachment_content(item["id"], attachment["id"]) == path.read_bytes()


def test_attachment_over_the_limit_is_a_clear_error(tmp_path):
    from tests.support.tg_sandbox import start_sandbox

    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 5000)
    with start_sandbox(tmp_path / "sbx", attachment_max_bytes=4096) as sbx:
        os.environ["AIRFLOW_CONN_TG_SMALL_LIMIT"] = sbx.airflow_conn_json()
        try:
            with TradingGridHook("tg_small_limit", retry_policy=FAST_RETRIES) as h:
                item, _ = h.create_item(make_payload())
                with pytest.raises(TradingGridValidationError) as err:
                    h.attach_file(item["id"], str(big))
                assert err.value.status == 413
                assert h.list_attachments(item["id"]) == []
        finally:
            del os.environ["AIRFLOW_CONN_TG_SMALL_LIMIT"]


def test_events_trail_in_order_with_pagination(hook, tmp_path):
    item, _ = hook.create_item(make_payload())
    hook.acknowledge(item["id"])
    hook.transition(item["id"], "in_progress")
    hook.add_comment(item["id"], "event trail comment")
    (tmp_path / "a.txt").write_text("hello")
    hook.attach_file(item["id"], str(tmp_path / "a.txt"))
    events = list(hook.iter_events(item_id=item["id"], limit=2))
    assert [e["kind"] for e in events] == [
        "item.created",
        "item.acknowledged",
        "item.transitioned",
        "comment.added",
        "attachment.added",
    ]
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    everything = list(hook.iter_events(limit=200))
    assert {e["id"] for e in events} <= {e["id"] for e in everything}


def test_partner_client_sees_only_its_own_items(hook, partner_hook_factory):
    mine, _ = hook.create_item(make_payload("P-ACME"))
    theirs, _ = hook.create_item(make_payload("P-GLOBEX"))
    hook.add_comment(mine["id"], "internal only", visibility="internal")
    acme = partner_hook_factory("P-ACME")
    assert acme.get_item(mine["id"])["id"] == mine["id"]
    with pytest.raises(TradingGridNotFound):
        acme.get_item(theirs["id"])
    with pytest.raises(TradingGridNotFound):
        acme.acknowledge(theirs["id"])
    assert {i["partner_id"] for i in acme.list_items()} == {"P-ACME"}
    assert all(c["visibility"] == "partner" for c in acme.list_comments(mine["id"]))
    assert {e["partner_id"] for e in acme.iter_events()} == {"P-ACME"}
    with pytest.raises(TradingGridPermissionDenied):
        acme.create_item(make_payload("P-ACME"))
    acme.acknowledge(mine["id"])
    assert hook.get_item(mine["id"])["acknowledged_by"] == acme.settings.client_id


def test_token_is_renewed_before_expiry_and_after_a_401(tmp_path):
    from tests.support.tg_sandbox import start_sandbox

    with start_sandbox(tmp_path / "sbx", token_ttl=2) as sbx:
        os.environ["AIRFLOW_CONN_TG_SHORT_TTL"] = sbx.airflow_conn_json()
        try:
            with TradingGridHook("tg_short_ttl", retry_policy=FAST_RETRIES) as h:
                item, _ = h.create_item(make_payload())
                assert h.stats["token_fetches"] == 1
                time.sleep(2.2)  # past the lifetime: renewed before use, no 401 seen
                h.get_item(item["id"])
                assert (h.stats["token_fetches"], h.stats["renewals_on_401"]) == (2, 0)
                # Pretend our clock thinks the (now expired) token is still fresh: TG answers 401,
                # the hook renews once and the call succeeds.
                time.sleep(2.2)
                h._token_renew_at = time.monotonic() + 3600
                assert h.get_item(item["id"])["id"] == item["id"]
                assert (h.stats["token_fetches"], h.stats["renewals_on_401"]) == (3, 1)
        finally:
            del os.environ["AIRFLOW_CONN_TG_SHORT_TTL"]


def test_wrong_secret_is_an_auth_error_without_the_secret(tg, monkeypatch):
    import json

    conn = json.loads(tg.airflow_conn_json())
    conn["password"] = "wrong-secret-value-123"
    monkeypatch.setenv("AIRFLOW_CONN_TG_WRONG", json.dumps(conn))
    with TradingGridHook("tg_wrong", retry_policy=FAST_RETRIES) as h:
        with pytest.raises(TradingGridAuthError) as err:
            h.get_item("itm_x")
    assert err.value.status == 401
    assert "wrong-secret-value-123" not in str(err.value)
    assert connection_secret(tg) not in str(err.value)


def test_bulk_keeps_order_and_reports_the_failed_slot(hook):
    good = [make_payload() for _ in range(5)]
    bad = make_payload(partner_id="P-NOBODY")  # unknown partner: 400, not retried
    payloads = good[:2] + [bad] + good[2:]
    results = hook.create_items(payloads, max_concurrency=3, return_exceptions=True)
    assert isinstance(results[2], TradingGridValidationError) and results[2].status == 400
    assert [r[0]["external_ref"] for i, r in enumerate(results) if i != 2] == [p["external_ref"] for p in good]
    from trading_grid.exceptions import TradingGridBulkError

    with pytest.raises(TradingGridBulkError) as err:
        hook.create_items(payloads, max_concurrency=3)
    assert len(err.value.results) == 6 and err.value.results[0][1] is False  # the good ones now replay


def test_a_reused_caller_key_with_another_body_converges(hook):
    payload = make_payload()
    item, _ = hook.create_item(payload, idempotency_key="caller-chosen-key-" + payload["external_ref"][-20:])
    changed = {**payload, "title": "another body"}
    again, created = hook.create_item(changed, idempotency_key="caller-chosen-key-" + payload["external_ref"][-20:])
    assert (again["id"], created) == (item["id"], False)


def test_connection_test_and_ui_behaviour(hook):
    assert hook.test_connection()[0] is True
    behaviour = TradingGridHook.get_ui_field_behaviour()
    assert behaviour["relabeling"]["login"] == "Client ID" and "tenant_id" in behaviour["placeholders"]["extra"]
