"""Hostile input gets a 4xx with the contract's JSON error shape, never a 500, and nothing is stored:
cursors (length, alphabet, encoding, shape, bounds), metadata (depth, size, after a merge), request
bodies (declared or chunked, on every write route)."""
from __future__ import annotations

import base64
import json
import uuid

import pytest
import requests

from include.tg_sandbox.schemas import METADATA_MAX_BYTES, METADATA_MAX_DEPTH, json_size

from .conftest import assert_error, new_item_body


def b64(text: str | bytes) -> str:
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


BAD_CURSORS = {
    "too long": "A" * 501,
    "far too long": "A" * 20_000,
    "outside the alphabet": "W10*",
    "padded": b64("[1]") + "=",
    "not UTF-8": b64(b"\xff\xfe[1]"),
    "not JSON": b64("hello"),
    "huge int": b64("[1" + "0" * 30 + "]"),
    "negative int": b64("[-5]"),
    "float": b64("[1.5]"),
    "overflowing float": b64("[1e400]"),
    "bool": b64("[true]"),
    "nested": b64("[" * 180 + "]" * 180),
    "lone surrogate": b64('[1,"\\ud800"]'),
    "NUL in id": b64('[1,"itm_\\u0000"]'),
    "long id": b64(json.dumps([1, "x" * 200])),
    "object": b64('{"a":1}'),
    "wrong tag": b64('["q",1]'),
}


@pytest.mark.parametrize("name", list(BAD_CURSORS))
@pytest.mark.parametrize("route", ["items", "events"])
@pytest.mark.parametrize("who", ["enterprise", "acme"])
def test_bad_cursor_is_400_json(request, who, route, name):
    api = request.getfixturevalue(who)
    url = api.items_url if route == "items" else api.events_url
    error = assert_error(api.http.get(url, params={"cursor": BAD_CURSORS[name]}, timeout=30), 400)
    assert error["code"] in ("invalid_cursor", "validation_error")


@pytest.mark.parametrize("raw", ["%FF%FE", "%C0%80", "%ED%A0%80", "%00"])
def test_non_utf8_percent_encoded_cursor_is_400_json(enterprise, raw):
    for url in (enterprise.items_url, enterprise.events_url):
        assert_error(enterprise.http.get(f"{url}?cursor={raw}", timeout=30), 400)


def test_cursors_the_server_hands_out_still_work(enterprise, acme):
    enterprise.create_ok(partner_id="P-ACME")
    enterprise.create_ok(partner_id="P-ACME")
    for api in (enterprise, acme):
        assert [i["id"] for i in api.list_all(limit=1)][-2:] == [i["id"] for i in api.list_all(limit=200)][-2:]
        assert [e["id"] for e in api.events(limit=3)] == [e["id"] for e in api.events(limit=500)]


def nested(depth: int) -> dict:
    """A metadata object ``depth`` levels deep (the object itself is level 1)."""
    value: dict = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def test_metadata_depth_is_capped(enterprise):
    assert enterprise.create(metadata=nested(METADATA_MAX_DEPTH)).status_code == 201
    for depth in (METADATA_MAX_DEPTH + 1, 500):
        body = new_item_body(metadata=nested(depth))
        resp = enterprise.create(**body)
        assert_error(resp, 422, "metadata_too_deep")
        assert enterprise.list_all(external_ref=body["external_ref"]) == []
    lists = {"a": json.loads("[" * 40 + "]" * 40)}
    assert_error(enterprise.create(metadata=lists), 422, "metadata_too_deep")


def test_json_nested_beyond_the_parser_is_a_clear_400(enterprise):
    body = json.dumps(new_item_body())[:-1] + ', "metadata": ' + '{"a":' * 100_000 + "1" + "}" * 100_000 + "}"
    resp = enterprise.http.post(enterprise.items_url, data=body, timeout=60,
                                headers={"Content-Type": "application/json", "Idempotency-Key": uuid.uuid4().hex})
    assert_error(resp, 400)


def metadata_of_size(size: int) -> dict:
    value = {"x": ""}
    value["x"] = "a" * (size - json_size(value))
    assert json_size(value) == size
    return value


def test_metadata_size_is_capped(enterprise):
    assert enterprise.create(metadata=metadata_of_size(METADATA_MAX_BYTES)).status_code == 201
    body = new_item_body(metadata=metadata_of_size(METADATA_MAX_BYTES + 1))
    assert_error(enterprise.create(**body), 413, "payload_too_large")
    assert_error(enterprise.create(metadata={"x": "é" * (METADATA_MAX_BYTES // 2 + 1)}), 413)  # counted in bytes
    assert enterprise.list_all(external_ref=body["external_ref"]) == []


def test_patch_metadata_is_capped_after_the_merge(enterprise):
    item = enterprise.create_ok(metadata={"first": "a" * (METADATA_MAX_BYTES // 2)})
    patch = {"metadata": {"second": "b" * (METADATA_MAX_BYTES // 2)}}  # each half fits; merged they do not
    resp = enterprise.http.patch(enterprise.item_url(item["id"]), json=patch, headers={"If-Match": "*"}, timeout=30)
    assert_error(resp, 413, "payload_too_large")
    deep = enterprise.http.patch(enterprise.item_url(item["id"]), json={"metadata": nested(METADATA_MAX_DEPTH + 1)},
                                 headers={"If-Match": "*"}, timeout=30)
    assert_error(deep, 422, "metadata_too_deep")
    assert enterprise.get(item["id"]).json() == item  # unchanged, same version


def test_a_60_mb_metadata_is_refused_unread_and_the_client_gets_the_answer(enterprise):
    body = new_item_body(metadata={"blob": "x" * 60_000_000})
    error = assert_error(enterprise.create(**body), 413, "payload_too_large")
    assert "bytes" in error["message"]
    assert enterprise.list_all(external_ref=body["external_ref"]) == []
    assert enterprise.create_ok()["version"] == 1  # the server is fine


def chunks(data: bytes, size: int = 64 * 1024):
    for start in range(0, len(data), size):
        yield data[start:start + size]


def test_chunked_bodies_are_counted_too(enterprise):
    small = new_item_body()
    resp = enterprise.http.post(enterprise.items_url, data=chunks(json.dumps(small).encode()), timeout=60,
                                headers={"Content-Type": "application/json", "Idempotency-Key": uuid.uuid4().hex})
    assert resp.status_code == 201, resp.text  # chunked is fine ...
    big = new_item_body(metadata={"blob": "x" * 3_000_000})
    resp = enterprise.http.post(enterprise.items_url, data=chunks(json.dumps(big).encode()), timeout=60,
                                headers={"Content-Type": "application/json", "Idempotency-Key": uuid.uuid4().hex})
    assert_error(resp, 413, "payload_too_large")  # ... up to the limit
    assert enterprise.list_all(external_ref=big["external_ref"]) == []


def test_every_write_route_limits_its_body(tg_sandbox, enterprise):
    item = enterprise.create_ok()
    huge = json.dumps({"body": "x" * 3_000_000})
    writes = [
        ("post", enterprise.item_url(item["id"], "comments")),
        ("post", enterprise.item_url(item["id"], "transitions")),
        ("post", enterprise.item_url(item["id"], "acknowledgements")),
        ("patch", enterprise.item_url(item["id"])),
    ]
    for method, url in writes:
        resp = getattr(enterprise.http, method)(url, data=huge, timeout=60,
                                                headers={"Content-Type": "application/json", "If-Match": "*"})
        assert_error(resp, 413, "payload_too_large")
    token = requests.post(f"{tg_sandbox.base_url}/tenants/{tg_sandbox.tenant_id}/oauth2/token", timeout=60,
                          data={"grant_type": "client_credentials", "client_id": "x" * 3_000_000, "client_secret": "y"})
    assert_error(token, 413, "payload_too_large")
    assert enterprise.get(item["id"]).json() == item
