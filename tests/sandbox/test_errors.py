"""Every error is JSON {"error": {"code", "message", "request_id"}}, whatever produced it."""
from __future__ import annotations

import requests

from .conftest import assert_error


def test_unknown_route_and_wrong_method_are_json(tg_sandbox, enterprise):
    assert_error(requests.get(tg_sandbox.base_url + "/no/such/route"), 404, "not_found")
    resp = enterprise.http.delete(enterprise.items_url)
    assert_error(resp, 405, "method_not_allowed")
    assert {"GET", "POST"} & set(resp.headers["allow"].replace(" ", "").split(","))
    assert_error(enterprise.http.put(enterprise.item_url("itm_x")), 405)


def test_request_ids_are_unique_and_echoed(enterprise):
    ids = {assert_error(enterprise.get("itm_missing"), 404)["request_id"] for _ in range(5)}
    assert len(ids) == 5


def test_healthz_and_openapi(tg_sandbox):
    assert requests.get(tg_sandbox.base_url + "/healthz").json() == {"status": "ok"}
    doc = requests.get(tg_sandbox.base_url + "/openapi.json").json()
    paths = doc["paths"]
    assert "/v1/communities/{community_id}/items" in paths
    assert "/tenants/{tenant_id}/oauth2/token" in paths
    assert not any(p.startswith(("/_sandbox", "/portal")) for p in paths)
    create = paths["/v1/communities/{community_id}/items"]["post"]["responses"]
    assert set(create) == {"200", "201", "400", "401", "403", "404", "409", "413", "422", "429", "503"}
    assert "HTTPValidationError" not in doc["components"]["schemas"]


def test_nul_in_the_url_is_400_not_a_database_error(enterprise):
    assert_error(enterprise.http.get(enterprise.items_url, params={"external_ref": "a\x00b"}), 400, "validation_error")
    assert_error(enterprise.http.get(enterprise.items_url + "/itm_%00x"), 400, "validation_error")
