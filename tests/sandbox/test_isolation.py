"""A partner client sees only its partner's items: others are 404 (never 403); no internal comments."""
from __future__ import annotations

import pytest

from .conftest import assert_error


@pytest.fixture(scope="module")
def two_items(enterprise):
    acme_item = enterprise.create_ok(partner_id="P-ACME", title="for acme")
    globex_item = enterprise.create_ok(partner_id="P-GLOBEX", title="for globex")
    enterprise.http.post(enterprise.item_url(acme_item["id"], "comments"), json={"body": "secret", "visibility": "internal"})
    enterprise.http.post(enterprise.item_url(globex_item["id"], "comments"), json={"body": "hello globex"})
    enterprise.http.post(enterprise.item_url(globex_item["id"], "attachments"), files={"file": ("g.txt", b"g")})
    return acme_item, globex_item


def test_list_shows_only_own_items(acme, globex, enterprise, two_items):
    acme_item, globex_item = two_items
    acme_ids = {i["id"] for i in acme.list_all(limit=200)}
    assert acme_item["id"] in acme_ids and globex_item["id"] not in acme_ids
    assert {i["partner_id"] for i in acme.list_all(limit=200)} == {"P-ACME"}
    assert acme.list_all(partner_id="P-GLOBEX") == []
    assert globex_item["id"] in {i["id"] for i in globex.list_all(limit=200)}
    everyone = {i["partner_id"] for i in enterprise.list_all(limit=200)}
    assert {"P-ACME", "P-GLOBEX"} <= everyone


def test_other_partners_item_is_404_everywhere(acme, enterprise, two_items):
    _, other = two_items
    attachment_id = enterprise.http.get(enterprise.item_url(other["id"], "attachments")).json()["attachments"][0]["id"]
    calls = [
        acme.http.get(acme.item_url(other["id"])),
        acme.http.post(acme.item_url(other["id"], "transitions"), json={"to": "disputed"}),
        acme.http.post(acme.item_url(other["id"], "acknowledgements")),
        acme.http.get(acme.item_url(other["id"], "comments")),
        acme.http.post(acme.item_url(other["id"], "comments"), json={"body": "peek"}),
        acme.http.get(acme.item_url(other["id"], "attachments")),
        acme.http.post(acme.item_url(other["id"], "attachments"), files={"file": ("x", b"x")}),
        acme.http.get(acme.item_url(other["id"], "attachments", attachment_id, "content")),
    ]
    for resp in calls:
        error = assert_error(resp, 404, "not_found")
        assert other["id"] not in error["message"]
    # Nothing happened to it.
    assert enterprise.get(other["id"]).json() == enterprise.get(other["id"]).json()
    assert enterprise.get(other["id"]).json()["status"] == "open"
    # Missing and foreign look the same.
    missing = acme.http.get(acme.item_url("itm_000000000000000000000000"))
    assert missing.json()["error"]["message"] == calls[0].json()["error"]["message"]


def test_partner_never_sees_internal_comments_nor_their_events(acme, enterprise, two_items):
    acme_item, _ = two_items
    bodies = [c["body"] for c in acme.http.get(acme.item_url(acme_item["id"], "comments")).json()["comments"]]
    assert "secret" not in bodies
    assert "secret" in [c["body"] for c in enterprise.http.get(enterprise.item_url(acme_item["id"], "comments")).json()["comments"]]
    enterprise_events = enterprise.events(item_id=acme_item["id"])
    internal = [e for e in enterprise_events if e["kind"] == "comment.added" and e["data"]["visibility"] == "internal"]
    assert internal
    partner_events = acme.events(item_id=acme_item["id"])
    # Partner event ids are the partner's own sequence (test_event_privacy.py): compare what happened.
    seen = lambda events: [(e["kind"], e["at"], e["data"]) for e in events]  # noqa: E731
    assert seen(partner_events) == seen(e for e in enterprise_events if e not in internal)


def test_partner_events_are_only_their_own(acme, two_items):
    _, globex_item = two_items
    events = acme.events(limit=500)
    assert events and {e["partner_id"] for e in events} == {"P-ACME"}
    assert globex_item["id"] not in {e["item_id"] for e in events}
    assert acme.events(item_id=globex_item["id"]) == []


def test_partner_can_work_on_own_item(acme, two_items):
    acme_item, _ = two_items
    assert acme.move(acme_item["id"], "disputed", comment="wrong totals").status_code == 200
    assert acme.http.post(acme.item_url(acme_item["id"], "comments"), json={"body": "details"}).status_code == 201
    assert acme.http.post(acme.item_url(acme_item["id"], "attachments"), files={"file": ("p.txt", b"p")}).status_code == 201
    assert acme.move(acme_item["id"], "resolved").status_code == 200
