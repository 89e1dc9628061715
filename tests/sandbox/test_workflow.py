"""Status transitions (every pair), acknowledgements, comments, attachments, events."""
from __future__ import annotations

import hashlib
import itertools

import pytest

from include.tg_sandbox.service import STATUSES

from .conftest import assert_error

ALLOWED = {
    "open": {"acknowledged", "in_progress", "disputed", "resolved"},
    "acknowledged": {"in_progress", "disputed", "resolved"},
    "in_progress": {"disputed", "resolved"},
    "disputed": {"in_progress", "resolved"},
    "resolved": {"closed", "open"},
    "closed": set(),
}
PATH_TO = {"open": [], "acknowledged": ["acknowledged"], "in_progress": ["in_progress"], "disputed": ["disputed"],
           "resolved": ["resolved"], "closed": ["resolved", "closed"]}


def item_in(api, status: str) -> dict:
    item = api.create_ok()
    for step in PATH_TO[status]:
        resp = api.move(item["id"], step)
        assert resp.status_code == 200, resp.text
        item = resp.json()
    assert item["status"] == status
    return item


def test_the_contract_table_is_what_the_sandbox_enforces():
    # The table above is copied from the contract; the test below checks the server against it.
    assert set(ALLOWED) == set(STATUSES)


@pytest.mark.parametrize("source", STATUSES)
def test_every_move_from(enterprise, source):
    for target in STATUSES:
        item = item_in(enterprise, source)
        resp = enterprise.move(item["id"], target)
        if target in ALLOWED[source]:
            assert resp.status_code == 200, f"{source}->{target}: {resp.text}"
            moved = resp.json()
            assert moved["status"] == target and moved["version"] == item["version"] + 1
            assert resp.headers["etag"] == f'"{moved["version"]}"'
        else:
            assert_error(resp, 409, "illegal_transition")
            assert enterprise.get(item["id"]).json() == item, f"{source}->{target} changed the item"


def test_transition_body_is_validated(enterprise):
    item = enterprise.create_ok()
    assert_error(enterprise.http.post(enterprise.item_url(item["id"], "transitions"), json={"to": "done"}), 400)
    assert_error(enterprise.http.post(enterprise.item_url(item["id"], "transitions"), json={}), 400)
    assert_error(enterprise.move("itm_missing", "resolved"), 404)


def test_transition_comment_becomes_a_partner_visible_comment(enterprise, acme):
    item = enterprise.create_ok(partner_id="P-ACME")
    assert enterprise.move(item["id"], "disputed", comment="Totals do not match").status_code == 200
    comments = acme.http.get(acme.item_url(item["id"], "comments")).json()["comments"]
    assert [(c["body"], c["visibility"], c["author"]) for c in comments] == [("Totals do not match", "partner", enterprise.client_id)]
    kinds = [e["kind"] for e in enterprise.events(item_id=item["id"])]
    assert kinds == ["item.created", "comment.added", "item.transitioned"]


def test_acknowledgement_moves_open_to_acknowledged(acme, enterprise):
    item = enterprise.create_ok(partner_id="P-ACME")
    resp = acme.http.post(acme.item_url(item["id"], "acknowledgements"), json={"note": "on it"})
    assert resp.status_code == 200, resp.text
    acked = resp.json()
    assert acked["status"] == "acknowledged"
    assert acked["acknowledged_by"] == acme.client_id and acked["acknowledged_at"]
    assert acked["version"] == 2
    # Again: nothing changes (no new version, no new event).
    again = acme.http.post(acme.item_url(item["id"], "acknowledgements"))
    assert again.status_code == 200 and again.json() == acked
    events = enterprise.events(item_id=item["id"])
    assert [e["kind"] for e in events] == ["item.created", "item.acknowledged"]
    assert events[1]["data"] == {"status": "acknowledged", "note": "on it"} and events[1]["actor"] == acme.client_id


def test_acknowledgement_on_other_statuses_only_sets_the_ack_fields(enterprise):
    item = item_in(enterprise, "in_progress")
    acked = enterprise.http.post(enterprise.item_url(item["id"], "acknowledgements"), json={}).json()
    assert acked["status"] == "in_progress" and acked["acknowledged_at"] and acked["version"] == item["version"] + 1
    closed = item_in(enterprise, "closed")
    assert_error(enterprise.http.post(enterprise.item_url(closed["id"], "acknowledgements")), 409, "illegal_transition")


def test_comments_visibility_and_versioning(enterprise, acme):
    item = enterprise.create_ok(partner_id="P-ACME")
    url = enterprise.item_url(item["id"], "comments")
    public = enterprise.http.post(url, json={"body": "Please resend"})
    assert public.status_code == 201
    assert set(public.json()) == {"id", "item_id", "author", "author_kind", "body", "visibility", "created_at"}
    assert public.json()["visibility"] == "partner" and public.json()["author_kind"] == "enterprise"
    after_public = enterprise.get(item["id"]).json()
    assert after_public["version"] == 2
    internal = enterprise.http.post(url, json={"body": "They always do this", "visibility": "internal"})
    assert internal.status_code == 201
    # Internal comments leave the item untouched: a partner cannot infer them from version or updated_at.
    assert enterprise.get(item["id"]).json() == after_public
    reply = acme.http.post(acme.item_url(item["id"], "comments"), json={"body": "Resent at 10:00"})
    assert reply.status_code == 201 and reply.json()["author_kind"] == "partner"
    assert [c["body"] for c in enterprise.http.get(url).json()["comments"]] == [
        "Please resend", "They always do this", "Resent at 10:00"]
    assert [c["body"] for c in acme.http.get(acme.item_url(item["id"], "comments")).json()["comments"]] == [
        "Please resend", "Resent at 10:00"]
    assert_error(acme.http.post(acme.item_url(item["id"], "comments"), json={"body": "x", "visibility": "internal"}), 403)
    assert_error(enterprise.http.post(url, json={"body": ""}), 400)
    assert_error(enterprise.http.post(url, json={"body": "x", "visibility": "public"}), 400)


def test_attachments_round_trip_with_sha256(enterprise, acme):
    item = enterprise.create_ok(partner_id="P-ACME")
    data = b"GTIN;QTY\n4006381333931;12\n" * 100
    digest = hashlib.sha256(data).hexdigest()
    url = acme.item_url(item["id"], "attachments")
    resp = acme.http.post(url, files={"file": ("proof.csv", data, "text/csv")}, data={"sha256": digest.upper()})
    assert resp.status_code == 201, resp.text
    meta = resp.json()
    assert (meta["filename"], meta["size"], meta["sha256"], meta["content_type"], meta["uploaded_by"]) == (
        "proof.csv", len(data), digest, "text/csv", acme.client_id)
    no_digest = acme.http.post(url, files={"file": ("../../etc/passwd", b"second")})
    assert no_digest.status_code == 201 and no_digest.json()["filename"] == "passwd"
    listed = enterprise.http.get(enterprise.item_url(item["id"], "attachments")).json()["attachments"]
    assert [a["id"] for a in listed] == [meta["id"], no_digest.json()["id"]]
    content = enterprise.http.get(enterprise.item_url(item["id"], "attachments", meta["id"], "content"))
    assert content.status_code == 200 and content.content == data
    assert content.headers["content-type"] == "application/octet-stream"
    assert 'filename="proof.csv"' in content.headers["content-disposition"]
    assert enterprise.get(item["id"]).json()["version"] == 3
    assert_error(enterprise.http.get(enterprise.item_url(item["id"], "attachments", "att_nope", "content")), 404)


def test_attachment_sha256_mismatch_is_422_and_stores_nothing(enterprise):
    item = enterprise.create_ok()
    url = enterprise.item_url(item["id"], "attachments")
    resp = enterprise.http.post(url, files={"file": ("a.txt", b"abc")}, data={"sha256": hashlib.sha256(b"abd").hexdigest()})
    assert_error(resp, 422, "sha256_mismatch")
    assert_error(enterprise.http.post(url, files={"file": ("a.txt", b"abc")}, data={"sha256": "xyz"}), 400)
    assert_error(enterprise.http.post(url, data={"sha256": "0" * 64}), 400)
    assert enterprise.http.get(url).json()["attachments"] == []
    assert enterprise.get(item["id"]).json()["version"] == 1


def test_attachment_over_the_limit_is_413(tmp_path):
    from tests.support.tg_sandbox import start_sandbox

    from .conftest import Api

    with start_sandbox(tmp_path, attachment_max_bytes=1024) as server:
        api = Api(server, server.enterprise)
        item = api.create_ok()
        url = api.item_url(item["id"], "attachments")
        assert api.http.post(url, files={"file": ("ok.bin", b"x" * 1024)}).status_code == 201
        assert_error(api.http.post(url, files={"file": ("big.bin", b"x" * 1025)}), 413, "payload_too_large")
        assert_error(api.http.post(url, files={"file": ("huge.bin", b"x" * 3_000_000)}), 413)
        assert len(api.http.get(url).json()["attachments"]) == 1


def test_events_trail_in_order_with_cursor(enterprise):
    item = enterprise.create_ok()
    enterprise.move(item["id"], "in_progress")
    enterprise.http.post(enterprise.item_url(item["id"], "comments"), json={"body": "c"})
    enterprise.http.post(enterprise.item_url(item["id"], "acknowledgements"))
    enterprise.http.post(enterprise.item_url(item["id"], "attachments"), files={"file": ("f", b"1")})
    enterprise.http.patch(enterprise.item_url(item["id"]), headers={"If-Match": "*"}, json={"title": "t2"})
    mine = enterprise.events(item_id=item["id"], limit=2)
    assert [e["kind"] for e in mine] == ["item.created", "item.transitioned", "comment.added", "item.acknowledged",
                                         "attachment.added", "item.updated"]
    assert set(mine[0]) == {"id", "item_id", "partner_id", "kind", "actor", "at", "data"}
    assert [e["id"] for e in mine] == sorted(e["id"] for e in mine)
    assert [e["at"] for e in mine] == sorted(e["at"] for e in mine)
    assert mine[1]["data"] == {"from": "open", "to": "in_progress"}
    everything = enterprise.events(limit=500)
    ids = [e["id"] for e in everything]
    assert ids == sorted(set(ids))
    assert {e["id"] for e in mine} <= set(ids)
    for a, b in itertools.pairwise(everything):
        assert a["at"] <= b["at"]
    assert_error(enterprise.http.get(enterprise.events_url, params={"cursor": "bad"}), 400, "invalid_cursor")


def test_events_page_always_says_where_to_resume(enterprise, acme):
    def page(api, **params):
        resp = api.http.get(api.events_url, params=params, timeout=30)
        assert resp.status_code == 200, resp.text
        return resp.json()

    cursor, current = None, None
    while True:  # to the end of the feed, two events a page
        current = page(enterprise, limit=2, **({"cursor": cursor} if cursor else {}))
        if current["next_cursor"] is None:
            break
        assert current["resume_cursor"] == current["next_cursor"]  # where the next page starts
        cursor = current["next_cursor"]
    end = current["resume_cursor"]
    assert isinstance(end, str) and end
    assert page(enterprise, cursor=end) == {"events": [], "next_cursor": None, "resume_cursor": end}
    acme_end = acme.resume_cursor_at_end()  # a partner's cursors are its own (per-partner sequence)

    item = enterprise.create_ok()
    acme.move(item["id"], "disputed")
    later = page(enterprise, cursor=end)
    assert [e["kind"] for e in later["events"]] == ["item.created", "item.transitioned"]
    assert later["next_cursor"] is None and later["resume_cursor"] != end
    assert page(enterprise, cursor=later["resume_cursor"])["events"] == []
    assert [e["kind"] for e in page(acme, cursor=acme_end)["events"]] == ["item.created", "item.transitioned"]

    nothing = page(enterprise, item_id="itm_none")  # an empty feed from its beginning still gives a position
    assert nothing["events"] == [] and nothing["next_cursor"] is None
    assert page(enterprise, item_id="itm_none", cursor=nothing["resume_cursor"])["events"] == []
