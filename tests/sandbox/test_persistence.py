"""A restart loses nothing: items, comments, attachments, events, idempotency records and tokens."""
from __future__ import annotations

import pytest

from tests.support.tg_sandbox import start_sandbox

from .conftest import Api, new_item_body


@pytest.mark.slow
def test_restart_keeps_everything(tmp_path):
    with start_sandbox(tmp_path) as server:
        api = Api(server, server.enterprise)
        body = new_item_body()
        created = api.http.post(api.items_url, json=body, headers={"Idempotency-Key": "persist-1"}).json()
        api.move(created["id"], "in_progress", comment="working")
        api.http.post(api.item_url(created["id"], "comments"), json={"body": "internal", "visibility": "internal"})
        api.http.post(api.item_url(created["id"], "attachments"), files={"file": ("a.bin", b"\x00\x01payload")})
        before = {
            "item": api.get(created["id"]).json(),
            "comments": api.http.get(api.item_url(created["id"], "comments")).json(),
            "attachments": api.http.get(api.item_url(created["id"], "attachments")).json(),
            "events": api.events(),
        }
        port = server.port

        server.restart()

        assert server.port == port
        # The old token still works: tokens are signed with a key derived from the seed.
        assert api.get(created["id"]).json() == before["item"]
        assert api.http.get(api.item_url(created["id"], "comments")).json() == before["comments"]
        assert api.http.get(api.item_url(created["id"], "attachments")).json() == before["attachments"]
        assert api.events() == before["events"]
        aid = before["attachments"]["attachments"][0]["id"]
        assert api.http.get(api.item_url(created["id"], "attachments", aid, "content")).content == b"\x00\x01payload"
        # The idempotency record survived: the same key and body replay the item.
        replay = api.http.post(api.items_url, json=body, headers={"Idempotency-Key": "persist-1"})
        assert replay.status_code == 200 and replay.json()["id"] == created["id"]
        # Writes after the restart still sort after the earlier ones.
        moved = api.move(created["id"], "resolved").json()
        assert moved["updated_at"] > before["item"]["updated_at"]


def test_seeding_twice_keeps_data_and_new_clients_apply(tmp_path):
    import yaml

    from tests.support.tg_sandbox import DEMO_SEED

    seed = yaml.safe_load(DEMO_SEED.read_text())
    with start_sandbox(tmp_path, seed=seed) as server:
        item = Api(server, server.enterprise).create_ok()
    seed["clients"].append({"client_id": "auditor", "client_secret": "auditor-secret", "kind": "enterprise"})
    with start_sandbox(tmp_path, seed=seed) as server:
        api = Api(server, ("auditor", "auditor-secret"))
        assert api.get(item["id"]).json()["id"] == item["id"]
        assert len(api.list_all()) == 1
