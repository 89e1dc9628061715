"""Items: create with Idempotency-Key rules, get with ETag, patch with If-Match, list filters."""
from __future__ import annotations

import datetime as dt
import uuid

import pytest

from .conftest import assert_error, new_item_body

ITEM_FIELDS = {"id", "community_id", "partner_id", "type", "category", "status", "title", "body", "severity",
               "due_at", "requires_ack", "acknowledged_at", "acknowledged_by", "external_ref", "metadata",
               "created_at", "updated_at", "version"}


def test_create_returns_every_contract_field(enterprise, tg_sandbox):
    body = new_item_body(due_at="2030-01-02T03:04:05+01:00")
    resp = enterprise.http.post(enterprise.items_url, json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
    assert resp.status_code == 201, resp.text
    item = resp.json()
    assert set(item) == ITEM_FIELDS
    assert item["status"] == "open"
    assert item["version"] == 1
    assert resp.headers["etag"] == '"1"'
    assert item["community_id"] == tg_sandbox.community_id
    assert item["due_at"] == "2030-01-02T02:04:05.000000Z"
    assert item["acknowledged_at"] is None and item["acknowledged_by"] is None
    for key in ("partner_id", "type", "category", "title", "body", "severity", "requires_ack", "external_ref", "metadata"):
        assert item[key] == body[key]
    assert dt.datetime.fromisoformat(item["created_at"]) == dt.datetime.fromisoformat(item["updated_at"])


def test_same_key_same_body_replays_the_item(enterprise):
    key, body = uuid.uuid4().hex, new_item_body()
    first = enterprise.http.post(enterprise.items_url, json=body, headers={"Idempotency-Key": key})
    again = enterprise.http.post(enterprise.items_url, json=body, headers={"Idempotency-Key": key})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert len(enterprise.list_all(external_ref=body["external_ref"])) == 1


def test_same_key_other_body_is_422(enterprise):
    key, body = uuid.uuid4().hex, new_item_body()
    first = enterprise.http.post(enterprise.items_url, json=body, headers={"Idempotency-Key": key}).json()
    resp = enterprise.http.post(enterprise.items_url, json={**body, "title": "changed"}, headers={"Idempotency-Key": key})
    error = assert_error(resp, 422, "idempotency_key_reused")
    assert error["item_id"] == first["id"]
    assert enterprise.get(first["id"]).json()["title"] == body["title"]


def test_external_ref_taken_by_another_key_is_409_with_the_existing_id(enterprise):
    body = new_item_body()
    first = enterprise.create_ok(**body)
    resp = enterprise.create(key=uuid.uuid4().hex, **{**body, "metadata": {"run_id": "rerun"}})
    error = assert_error(resp, 409, "external_ref_conflict")
    assert error["item_id"] == first["id"]


def test_items_without_external_ref_do_not_conflict(enterprise):
    a = enterprise.create_ok(external_ref=None)
    b = enterprise.create_ok(external_ref=None)
    assert a["id"] != b["id"] and a["external_ref"] is None


@pytest.mark.parametrize("change", [
    {"type": "memo"},
    {"category": "other"},
    {"severity": "urgent"},
    {"title": ""},
    {"title": None},
    {"partner_id": "P-UNKNOWN"},
    {"due_at": "tomorrow"},
    {"due_at": "2030-01-01T00:00:00"},  # no offset: ambiguous
    {"metadata": ["not", "an", "object"]},
    {"unexpected": 1},
    {"title": "nul \x00 inside"},
])
def test_invalid_bodies_are_400(enterprise, change):
    body = {k: v for k, v in {**new_item_body(), **change}.items()}
    resp = enterprise.http.post(enterprise.items_url, json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
    assert_error(resp, 400, "validation_error")


def test_missing_required_field_and_key_are_400(enterprise):
    body = new_item_body()
    del body["title"]
    assert_error(enterprise.http.post(enterprise.items_url, json=body, headers={"Idempotency-Key": "k"}), 400)
    assert_error(enterprise.http.post(enterprise.items_url, json=new_item_body()), 400, "validation_error")
    assert_error(enterprise.http.post(enterprise.items_url, data="{not json", headers={
        "Idempotency-Key": uuid.uuid4().hex, "Content-Type": "application/json"}), 400)


def test_partner_clients_cannot_create_items(acme):
    assert_error(acme.create(), 403, "forbidden")


def test_unknown_community_is_404(enterprise, tg_sandbox):
    url = f"{tg_sandbox.base_url}/v1/communities/other-community/items"
    assert_error(enterprise.http.get(url), 404, "not_found")


def test_get_has_etag_and_unknown_id_is_404(enterprise):
    item = enterprise.create_ok()
    resp = enterprise.get(item["id"])
    assert resp.status_code == 200
    assert resp.json() == item
    assert resp.headers["etag"] == '"1"'
    assert_error(enterprise.get("itm_doesnotexist"), 404, "not_found")


def test_patch_with_if_match_changes_fields_and_merges_metadata(enterprise):
    item = enterprise.create_ok(metadata={"file_name": "a.csv", "nested": {"x": 1, "y": 2}, "drop": True})
    resp = enterprise.http.patch(enterprise.item_url(item["id"]), headers={"If-Match": '"1"'}, json={
        "title": "New title", "severity": "high", "due_at": "2031-05-01T12:00:00Z",
        "metadata": {"run_id": "r2", "nested": {"y": None, "z": 3}, "drop": None}})
    assert resp.status_code == 200, resp.text
    changed = resp.json()
    assert changed["version"] == 2 and resp.headers["etag"] == '"2"'
    assert changed["title"] == "New title" and changed["severity"] == "high"
    assert changed["due_at"] == "2031-05-01T12:00:00.000000Z"
    assert changed["metadata"] == {"file_name": "a.csv", "nested": {"x": 1, "z": 3}, "run_id": "r2"}
    assert changed["updated_at"] > item["updated_at"]
    assert enterprise.get(item["id"]).json() == changed
    # Unquoted and weak forms of the version work too; null clears due_at.
    resp = enterprise.http.patch(enterprise.item_url(item["id"]), headers={"If-Match": "2"}, json={"due_at": None})
    assert resp.status_code == 200 and resp.json()["due_at"] is None and resp.json()["version"] == 3
    resp = enterprise.http.patch(enterprise.item_url(item["id"]), headers={"If-Match": 'W/"3"'}, json={"body": "b"})
    assert resp.status_code == 200 and resp.json()["version"] == 4


def test_patch_without_change_keeps_the_version(enterprise):
    item = enterprise.create_ok()
    resp = enterprise.http.patch(enterprise.item_url(item["id"]), headers={"If-Match": '"1"'}, json={"title": item["title"]})
    assert resp.status_code == 200 and resp.json()["version"] == 1


def test_patch_stale_version_is_412_and_missing_if_match_is_428(enterprise):
    item = enterprise.create_ok()
    url = enterprise.item_url(item["id"])
    assert enterprise.http.patch(url, headers={"If-Match": '"1"'}, json={"title": "one"}).status_code == 200
    resp = enterprise.http.patch(url, headers={"If-Match": '"1"'}, json={"title": "two"})
    assert_error(resp, 412, "precondition_failed")
    assert resp.headers["etag"] == '"2"'
    assert_error(enterprise.http.patch(url, headers={"If-Match": "garbage"}, json={"title": "two"}), 412)
    assert_error(enterprise.http.patch(url, json={"title": "two"}), 428, "precondition_required")
    assert enterprise.get(item["id"]).json()["title"] == "one"


@pytest.mark.parametrize("body", [{"title": None}, {"severity": "huge"}, {"status": "closed"}, {"metadata": None}])
def test_patch_invalid_body_is_400(enterprise, body):
    item = enterprise.create_ok()
    assert_error(enterprise.http.patch(enterprise.item_url(item["id"]), headers={"If-Match": '"1"'}, json=body), 400)


def test_partner_cannot_patch(enterprise, acme):
    item = enterprise.create_ok(partner_id="P-ACME")
    assert_error(acme.http.patch(acme.item_url(item["id"]), headers={"If-Match": '"1"'}, json={"title": "x"}), 403)


def test_list_filters(enterprise):
    tag = uuid.uuid4().hex
    made = [
        enterprise.create_ok(partner_id="P-ACME", category="missing_file", type="case", metadata={"t": tag}),
        enterprise.create_ok(partner_id="P-GLOBEX", category="missing_file", type="task", metadata={"t": tag}),
        enterprise.create_ok(partner_id="P-GLOBEX", category="catalog_sync", type="task", metadata={"t": tag}),
    ]
    since = made[0]["updated_at"]
    enterprise.move(made[2]["id"], "resolved")

    def ids(**params):
        return {i["id"] for i in enterprise.list_all(updated_since=since, **params) if i["metadata"].get("t") == tag}

    assert ids() == {m["id"] for m in made}
    assert ids(partner_id="P-GLOBEX") == {made[1]["id"], made[2]["id"]}
    assert ids(category="missing_file") == {made[0]["id"], made[1]["id"]}
    assert ids(type="case") == {made[0]["id"]}
    assert ids(status="resolved") == {made[2]["id"]}
    assert ids(status="open", partner_id="P-GLOBEX") == {made[1]["id"]}
    assert [i["id"] for i in enterprise.list_all(external_ref=made[1]["external_ref"])] == [made[1]["id"]]
    later = enterprise.get(made[2]["id"]).json()["updated_at"]
    recent = {i["id"] for i in enterprise.list_all(updated_since=later)}
    assert made[2]["id"] in recent and made[0]["id"] not in recent


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 201}, {"status": "lost"}, {"cursor": "nonsense"},
                                    {"cursor": "WzEsMiwzXQ"}, {"updated_since": "yesterday"}])
def test_list_rejects_bad_parameters(enterprise, params):
    assert_error(enterprise.http.get(enterprise.items_url, params=params), 400)


def test_list_limit_200_is_accepted(enterprise):
    resp = enterprise.http.get(enterprise.items_url, params={"limit": 200})
    assert resp.status_code == 200 and len(resp.json()["items"]) <= 200


def test_metadata_round_trips_exotic_json(enterprise):
    metadata = {"nul": "a\x00b", "emoji": "📦", "nested": {"list": [1, 2.5, None, True]}, "big": 2**70}
    item = enterprise.create_ok(metadata=metadata)
    assert item["metadata"] == metadata
    assert enterprise.get(item["id"]).json()["metadata"] == metadata
