"""A partner client cannot count other partners' activity from its events feed.

Partner clients see their partner's own sequence as event ids (1, 2, 3, ... with no gaps, whatever
other partners or internal comments do) and page with cursors of that sequence; enterprise clients
keep the global ids. A database from before the sequence existed is numbered at start."""
from __future__ import annotations

import sqlite3

import requests

from tests.support.tg_sandbox import start_sandbox

from .conftest import Api, assert_error


def feed_page(api: Api, **params) -> dict:
    resp = api.http.get(api.events_url, params=params, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def busy_elsewhere(enterprise: Api, acme_item: dict) -> None:
    """Activity an ACME client must not be able to detect: another partner's items, an internal comment."""
    for _ in range(3):
        globex_item = enterprise.create_ok(partner_id="P-GLOBEX")
        enterprise.move(globex_item["id"], "in_progress")
    enterprise.http.post(enterprise.item_url(acme_item["id"], "comments"), json={"body": "internal", "visibility": "internal"})


def test_partner_event_ids_have_no_gaps_and_others_activity_changes_nothing(enterprise, acme):
    first = enterprise.create_ok(partner_id="P-ACME")
    busy_elsewhere(enterprise, first)
    second = enterprise.create_ok(partner_id="P-ACME")

    mine = acme.events()
    ids = [e["id"] for e in mine]
    assert ids == list(range(1, len(ids) + 1))  # the partner's own sequence: no gap to count others by
    assert {first["id"], second["id"]} <= {e["item_id"] for e in mine}
    assert ids[-1] - ids[-2] == 1 and mine[-2]["item_id"] == first["id"] and mine[-1]["item_id"] == second["id"]

    end = acme.resume_cursor_at_end()
    busy_elsewhere(enterprise, first)
    # Nothing visible happened for ACME: the feed from its position is empty and the position the same string.
    assert feed_page(acme, cursor=end) == {"events": [], "next_cursor": None, "resume_cursor": end}

    acme.move(second["id"], "disputed")
    news = feed_page(acme, cursor=end)
    assert [(e["id"], e["kind"]) for e in news["events"]] == [(ids[-1] + 1, "item.transitioned")]


def test_enterprise_keeps_global_ids_and_cursors_do_not_cross_client_kinds(enterprise, acme):
    item = enterprise.create_ok(partner_id="P-ACME")
    busy_elsewhere(enterprise, item)
    everything = enterprise.events(limit=500)
    global_ids = [e["id"] for e in everything]
    assert global_ids == sorted(set(global_ids))
    partners = {e["partner_id"] for e in everything}
    assert {"P-ACME", "P-GLOBEX"} <= partners  # the enterprise sees every partner, in global order
    internal = [e for e in everything if e["kind"] == "comment.added" and e["data"]["visibility"] == "internal"]
    assert internal and len(acme.events()) == sum(1 for e in everything if e["partner_id"] == "P-ACME") - sum(
        1 for e in internal if e["partner_id"] == "P-ACME")

    enterprise_cursor = feed_page(enterprise, limit=1)["next_cursor"]
    partner_cursor = feed_page(acme, limit=1)["next_cursor"]
    assert_error(acme.http.get(acme.events_url, params={"cursor": enterprise_cursor}), 400, "invalid_cursor")
    assert_error(enterprise.http.get(enterprise.events_url, params={"cursor": partner_cursor}), 400, "invalid_cursor")


def test_partner_pages_walk_the_whole_own_feed_once(enterprise, acme, globex):
    for _ in range(3):
        enterprise.create_ok(partner_id="P-GLOBEX")
        enterprise.create_ok(partner_id="P-ACME")
    whole = acme.events(limit=500)
    paged = acme.events(limit=2)
    assert [e["id"] for e in paged] == [e["id"] for e in whole]
    assert {e["partner_id"] for e in globex.events()} == {"P-GLOBEX"}
    globex_ids = [e["id"] for e in globex.events()]
    assert globex_ids == list(range(1, len(globex_ids) + 1))


def test_a_database_from_before_partner_sequences_is_numbered_at_start(tmp_path):
    with start_sandbox(tmp_path) as server:
        enterprise = Api(server, server.enterprise)
        acme_items = [enterprise.create_ok(partner_id="P-ACME") for _ in range(2)]
        enterprise.create_ok(partner_id="P-GLOBEX")
        enterprise.http.post(enterprise.item_url(acme_items[0]["id"], "comments"),
                             json={"body": "internal", "visibility": "internal"})
        enterprise.move(acme_items[1]["id"], "in_progress")
        before = enterprise.events()
        server.stop()
        # Back to the old schema: no partner_seq column (and so no index on it).
        with sqlite3.connect(tmp_path / "tg-sandbox.db") as db:
            db.execute("DROP INDEX ux_tg_events_partner_seq")
            db.execute("ALTER TABLE tg_events DROP COLUMN partner_seq")
        server.start()

        enterprise = Api(server, server.enterprise)
        acme = Api(server, server.partners["P-ACME"])
        assert enterprise.events() == before  # the enterprise view is untouched
        mine = acme.events()
        assert [e["id"] for e in mine] == [1, 2, 3]  # two creates and the move; the internal comment is not there
        assert [e["item_id"] for e in mine] == [acme_items[0]["id"], acme_items[1]["id"], acme_items[1]["id"]]
        acme.move(acme_items[0]["id"], "disputed")
        assert [e["id"] for e in acme.events()] == [1, 2, 3, 4]
        assert requests.get(server.base_url + "/healthz", timeout=10).status_code == 200
