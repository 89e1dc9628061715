"""OAuth2 client credentials and bearer checks."""
from __future__ import annotations

import time

import pytest
import requests

from tests.support.tg_sandbox import start_sandbox

from .conftest import Api, assert_error, portal_session


def token_url(server) -> str:
    return f"{server.base_url}/tenants/{server.tenant_id}/oauth2/token"


def test_token_has_the_contract_shape(tg_sandbox):
    resp = requests.post(token_url(tg_sandbox), data={"grant_type": "client_credentials",
                                                      "client_id": tg_sandbox.enterprise[0],
                                                      "client_secret": tg_sandbox.enterprise[1]})
    assert resp.status_code == 200
    body = resp.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] > 0
    assert body["access_token"]
    assert resp.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("form, status, code", [
    ({"client_secret": "wrong"}, 401, "invalid_client"),
    ({"client_id": "nobody"}, 401, "invalid_client"),
    ({"grant_type": "password"}, 400, "unsupported_grant_type"),
    ({"client_secret": None}, 400, "validation_error"),
])
def test_token_refusals(tg_sandbox, form, status, code):
    data = {"grant_type": "client_credentials", "client_id": tg_sandbox.enterprise[0],
            "client_secret": tg_sandbox.enterprise[1], **form}
    data = {k: v for k, v in data.items() if v is not None}
    error = assert_error(requests.post(token_url(tg_sandbox), data=data), status, code)
    assert tg_sandbox.enterprise[1] not in error["message"]


def test_unknown_tenant_is_404(tg_sandbox):
    resp = requests.post(f"{tg_sandbox.base_url}/tenants/other/oauth2/token",
                         data={"grant_type": "client_credentials", "client_id": tg_sandbox.enterprise[0],
                               "client_secret": tg_sandbox.enterprise[1]})
    assert_error(resp, 404, "not_found")


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer not-a-token", "Basic abc", "Bearer tg1.e30.AAAA"])
def test_v1_needs_a_valid_bearer(tg_sandbox, header):
    headers = {"Authorization": header} if header else {}
    resp = requests.get(tg_sandbox.items_url(), headers=headers)
    assert_error(resp, 401, "unauthorized")
    assert resp.headers["www-authenticate"].startswith("Bearer")


def test_token_signed_for_another_seed_is_refused(tg_sandbox, tmp_path):
    seed = {"tenant_id": tg_sandbox.tenant_id, "community_id": tg_sandbox.community_id,
            "admin_token": "another-admin-token",
            "clients": [{"client_id": tg_sandbox.enterprise[0], "client_secret": tg_sandbox.enterprise[1],
                         "kind": "enterprise"}]}
    with start_sandbox(tmp_path, seed=seed) as other:
        foreign = other.token(*other.enterprise)
    resp = requests.get(tg_sandbox.items_url(), headers={"Authorization": f"Bearer {foreign}"})
    assert_error(resp, 401)


def test_portal_session_cookie_is_not_an_api_token(tg_sandbox):
    cookie = portal_session(tg_sandbox, tg_sandbox.partners["P-ACME"]).cookies.get("tg_portal")
    assert cookie
    assert_error(requests.get(tg_sandbox.items_url(), headers={"Authorization": f"Bearer {cookie}"}), 401)


@pytest.mark.slow
def test_tokens_expire(tmp_path):
    with start_sandbox(tmp_path, token_ttl=2) as server:
        resp = requests.post(token_url(server), data={"grant_type": "client_credentials",
                                                      "client_id": server.enterprise[0],
                                                      "client_secret": server.enterprise[1]})
        assert resp.json()["expires_in"] == 2
        api = Api(server, server.enterprise)
        assert api.http.get(api.items_url).status_code == 200
        time.sleep(2.5)
        assert_error(api.http.get(api.items_url), 401, "unauthorized")
        # A fresh token works again.
        assert Api(server, server.enterprise).http.get(api.items_url).status_code == 200
