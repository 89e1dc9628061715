"""Partner page sessions over HTTP: signing out revokes the cookie (also across a restart), the sign-in
form needs its login CSRF token and a same-origin request, pages carry a no-script CSP."""
from __future__ import annotations

import re

import pytest
import requests

from tests.support.tg_sandbox import start_sandbox

from .conftest import Api, login_form_token, portal_session


def page_csrf(http: requests.Session, base_url: str) -> str:
    """The signed-in page's form CSRF token (the sign-out form carries it)."""
    page = http.get(f"{base_url}/portal/", timeout=30)
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def signed_in(http: requests.Session, base_url: str) -> bool:
    page = http.get(f"{base_url}/portal/", timeout=30)
    assert page.status_code == 200
    return 'id="sign-out"' in page.text and 'name="login_csrf"' not in page.text


def with_cookie(cookie: str) -> requests.Session:
    http = requests.Session()
    http.cookies.set("tg_portal", cookie, path="/portal")
    return http


def test_sign_out_revokes_the_cookie_even_after_a_restart(tmp_path):
    with start_sandbox(tmp_path) as server:
        item = Api(server, server.enterprise).create_ok(partner_id="P-ACME")
        http = portal_session(server, server.partners["P-ACME"])
        cookie, csrf = http.cookies.get("tg_portal"), page_csrf(http, server.base_url)
        assert signed_in(with_cookie(cookie), server.base_url)

        out = http.post(f"{server.base_url}/portal/logout", data={"csrf": csrf}, timeout=30)
        assert out.status_code == 200 and http.cookies.get("tg_portal") is None
        replay = with_cookie(cookie)  # someone kept a copy of the cookie
        assert not signed_in(replay, server.base_url)
        acted = replay.post(f"{server.base_url}/portal/items/{item['id']}/acknowledge", data={"csrf": csrf}, timeout=30)
        assert "notice=expired" in acted.url
        server.restart()
        assert not signed_in(with_cookie(cookie), server.base_url)
        assert Api(server, server.enterprise).get(item["id"]).json()["acknowledged_at"] is None
        again = portal_session(server, server.partners["P-ACME"])  # signing in again works
        assert signed_in(again, server.base_url) and again.cookies.get("tg_portal") != cookie


def test_sign_out_needs_the_forms_csrf_token(tg_sandbox):
    http = portal_session(tg_sandbox, tg_sandbox.partners["P-ACME"])
    cookie = http.cookies.get("tg_portal")
    forged = http.post(f"{tg_sandbox.base_url}/portal/logout", data={"csrf": "forged"}, timeout=30)
    assert "notice=csrf" in forged.url
    assert signed_in(with_cookie(cookie), tg_sandbox.base_url)  # not revoked


def attempt_login(server, *, token: str | None, nonce_cookie: bool = True, **headers) -> requests.Response:
    http = requests.Session()
    real = login_form_token(http, server.base_url)
    if not nonce_cookie:
        http.cookies.clear()
    client_id, secret = server.partners["P-ACME"]
    data = {"client_id": client_id, "client_secret": secret}
    if token is not None:
        data["login_csrf"] = real if token == "real" else token
    resp = http.post(f"{server.base_url}/portal/login", data=data, headers=headers, timeout=30, allow_redirects=False)
    resp.session = http
    return resp


@pytest.mark.parametrize("case", [
    dict(token=None),
    dict(token="0" * 32),
    dict(token="real", nonce_cookie=False),
    dict(token="real", Origin="http://evil.example"),
    dict(token="real", Origin="null"),
    dict(token="real", Referer="http://evil.example/page"),
], ids=["no token", "wrong token", "no nonce cookie", "foreign origin", "null origin", "foreign referer"])
def test_login_csrf_refusals_are_403_and_set_no_session(tg_sandbox, case):
    resp = attempt_login(tg_sandbox, **case)
    assert resp.status_code == 403
    assert "came from another site" in resp.text and 'name="login_csrf"' in resp.text  # a fresh form to retry
    assert "tg_portal" not in resp.cookies and resp.session.cookies.get("tg_portal") is None


def test_login_with_its_token_from_this_origin_signs_in(tg_sandbox):
    own = tg_sandbox.base_url
    for headers in ({}, {"Origin": own}, {"Referer": own + "/portal/"}):
        resp = attempt_login(tg_sandbox, token="real", **headers)
        assert resp.status_code == 303 and resp.cookies.get("tg_portal"), headers


def test_a_token_is_bound_to_its_own_nonce(tg_sandbox):
    first, second = requests.Session(), requests.Session()
    login_form_token(first, tg_sandbox.base_url)
    other_token = login_form_token(second, tg_sandbox.base_url)
    client_id, secret = tg_sandbox.partners["P-ACME"]
    resp = first.post(f"{tg_sandbox.base_url}/portal/login", timeout=30, allow_redirects=False,
                      data={"client_id": client_id, "client_secret": secret, "login_csrf": other_token})
    assert resp.status_code == 403


def test_pages_carry_a_no_script_content_security_policy(tg_sandbox):
    http = portal_session(tg_sandbox, tg_sandbox.partners["P-ACME"])
    for page in (requests.get(f"{tg_sandbox.base_url}/portal/", timeout=30), http.get(f"{tg_sandbox.base_url}/portal/")):
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp and "form-action 'self'" in csp
        assert page.headers["x-content-type-options"] == "nosniff"
