"""Concurrent posts with one Idempotency-Key (or one external_ref) create exactly one item,
on SQLite and on PostgreSQL; list pagination stays complete while items change."""
from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.support.tg_sandbox import start_sandbox

from .conftest import Api, new_item_body

THREADS = 16


@pytest.fixture(scope="module")
def pg_sandbox(pg_url, tmp_path_factory):
    with start_sandbox(tmp_path_factory.mktemp("tg_pg"), db_url=pg_url) as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request, tg_sandbox):
    return tg_sandbox if request.param == "sqlite" else request.getfixturevalue("pg_sandbox")


def post_together(server, bodies_and_keys):
    """Post all at once (a barrier releases the threads together); each thread has its own connection."""
    token = server.token(*server.enterprise)
    barrier = threading.Barrier(len(bodies_and_keys))

    def post(arg):
        body, key = arg
        session = requests.Session()
        session.get(server.base_url + "/healthz")  # connect before the barrier
        barrier.wait()
        return session.post(server.items_url(), json=body, timeout=60,
                            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key})

    with ThreadPoolExecutor(len(bodies_and_keys)) as pool:
        return list(pool.map(post, bodies_and_keys))


def test_concurrent_same_key_creates_exactly_one_item(server):
    body, key = new_item_body(), uuid.uuid4().hex
    answers = post_together(server, [(body, key)] * THREADS)
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] * (THREADS - 1) + [201], [r.text for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    found = Api(server, server.enterprise).list_all(external_ref=body["external_ref"])
    assert [i["id"] for i in found] == [answers[0].json()["id"]]


def test_concurrent_same_external_ref_other_keys_one_item_rest_409(server):
    body = new_item_body()
    answers = post_together(server, [(body, uuid.uuid4().hex) for _ in range(THREADS)])
    created = [r for r in answers if r.status_code == 201]
    conflicts = [r for r in answers if r.status_code == 409]
    assert len(created) == 1 and len(conflicts) == THREADS - 1, [r.text for r in answers]
    assert {r.json()["error"]["item_id"] for r in conflicts} == {created[0].json()["id"]}


def test_concurrent_distinct_items_all_created(server):
    bodies = [(new_item_body(), uuid.uuid4().hex) for _ in range(THREADS)]
    answers = post_together(server, bodies)
    assert [r.status_code for r in answers] == [201] * THREADS
    assert len({r.json()["id"] for r in answers}) == THREADS


def test_concurrent_transitions_serialise(server):
    api = Api(server, server.enterprise)
    item = api.create_ok()
    token = server.token(*server.enterprise)
    barrier = threading.Barrier(8)

    def move(_):
        barrier.wait()
        return requests.post(api.item_url(item["id"], "transitions"), json={"to": "resolved"},
                             headers={"Authorization": f"Bearer {token}"}, timeout=60)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(move, range(8)))
    # open -> resolved once; resolved -> resolved is illegal for the others.
    assert sorted(r.status_code for r in answers) == [200] + [409] * 7
    assert api.get(item["id"]).json()["version"] == 2


def test_pagination_is_complete_while_items_change(server):
    api = Api(server, server.enterprise)
    tag = uuid.uuid4().hex
    made = [api.create_ok(metadata={"tag": tag}) for _ in range(30)]
    since = made[0]["updated_at"]
    seen: list[dict] = []
    touched_after_seen: set[str] = set()
    cursor = None
    pages = 0
    while True:
        params = {"limit": 7, "updated_since": since, **({"cursor": cursor} if cursor else {})}
        page = api.http.get(api.items_url, params=params).json()
        batch = [i for i in page["items"] if i["metadata"].get("tag") == tag]
        keys = [(i["updated_at"], i["id"]) for i in page["items"]]
        assert keys == sorted(keys)
        seen += batch
        pages += 1
        # Between pages, change one item already seen and one not yet seen.
        seen_ids = {i["id"] for i in seen}
        unseen = [m for m in made if m["id"] not in seen_ids]
        if seen_ids and pages <= 3:
            first = next(m for m in made if m["id"] in seen_ids and m["id"] not in touched_after_seen)
            api.http.patch(api.item_url(first["id"]), headers={"If-Match": "*"}, json={"body": f"page {pages}"})
            touched_after_seen.add(first["id"])
        if unseen and pages <= 3:
            api.http.patch(api.item_url(unseen[-1]["id"]), headers={"If-Match": "*"}, json={"body": "moved"})
        cursor = page["next_cursor"]
        if cursor is None:
            break
    ids = [i["id"] for i in seen]
    assert set(ids) == {m["id"] for m in made}, "an item was skipped"
    repeated = {i for i in ids if ids.count(i) > 1}
    # An item shows up again only if it changed after it was seen (a change feed shows the newer version).
    assert touched_after_seen and repeated == touched_after_seen
    for item_id in repeated:
        versions = [i["version"] for i in seen if i["id"] == item_id]
        assert versions == sorted(versions) and len(set(versions)) == len(versions)


def test_concurrent_creates_number_each_partners_feed_without_gaps_or_repeats(server):
    bodies = [(new_item_body(partner_id=partner), uuid.uuid4().hex) for partner in ("P-ACME", "P-GLOBEX") * 8]
    answers = post_together(server, bodies)
    assert sorted(r.status_code for r in answers) == [201] * len(bodies), [r.text for r in answers]
    for partner in ("P-ACME", "P-GLOBEX"):
        feed = Api(server, server.partners[partner]).events(limit=500)
        assert [e["id"] for e in feed] == list(range(1, len(feed) + 1))
        assert {r.json()["id"] for r in answers if r.json()["partner_id"] == partner} <= {e["item_id"] for e in feed}
