"""Helpers for the sandbox tests: an authenticated client per identity, over real HTTP."""
from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
import requests

from tests.support.tg_sandbox import SandboxServer


class Api:
    """A requests session that carries one client's bearer token, with shortcuts for the contract paths."""

    def __init__(self, server: SandboxServer, client: tuple[str, str]):
        self.server = server
        self.client_id = client[0]
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {server.token(*client)}"
        self.items_url = server.items_url()
        self.events_url = f"{server.base_url}/v1/communities/{server.community_id}/events"

    def item_url(self, item_id: str, *rest: str) -> str:
        return "/".join([self.items_url, item_id, *rest])

    def create(self, key: str | None = None, **fields: Any) -> requests.Response:
        body = new_item_body(**fields)
        return self.http.post(self.items_url, json=body, headers={"Idempotency-Key": key or uuid.uuid4().hex}, timeout=30)

    def create_ok(self, **fields: Any) -> dict:
        resp = self.create(**fields)
        assert resp.status_code == 201, resp.text
        return resp.json()

    def get(self, item_id: str) -> requests.Response:
        return self.http.get(self.item_url(item_id), timeout=30)

    def move(self, item_id: str, to: str, comment: str | None = None) -> requests.Response:
        body = {"to": to} if comment is None else {"to": to, "comment": comment}
        return self.http.post(self.item_url(item_id, "transitions"), json=body, timeout=30)

    def list_all(self, **params: Any) -> list[dict]:
        """Every page of GET items, following next_cursor."""
        return self._all_pages(self.items_url, "items", params)

    def events(self, **params: Any) -> list[dict]:
        """Every page of GET events, following next_cursor."""
        return self._all_pages(self.events_url, "events", params)

    def resume_cursor_at_end(self, **params: Any) -> str:
        """The events feed read to its end: the resume_cursor of its last page."""
        cursor = None
        while True:
            resp = self.http.get(self.events_url, params={**params, "limit": 500, **({"cursor": cursor} if cursor else {})},
                                 timeout=30)
            assert resp.status_code == 200, resp.text
            page = resp.json()
            if page["next_cursor"] is None:
                return page["resume_cursor"]
            cursor = page["next_cursor"]

    def _all_pages(self, url: str, key: str, params: dict) -> list[dict]:
        out, cursor = [], None
        while True:
            resp = self.http.get(url, params={**params, **({"cursor": cursor} if cursor else {})}, timeout=30)
            assert resp.status_code == 200, resp.text
            page = resp.json()
            out += page[key]
            cursor = page["next_cursor"]
            if cursor is None:
                return out


def login_form_token(http: requests.Session, base_url: str) -> str:
    """Open the sign-in page as a browser would: its login CSRF token (its nonce cookie lands in ``http``)."""
    page = http.get(f"{base_url}/portal/", timeout=30)
    assert page.status_code == 200, page.text
    return re.search(r'name="login_csrf" value="([^"]+)"', page.text).group(1)


def portal_session(server: SandboxServer, client: tuple[str, str]) -> requests.Session:
    """A requests session signed in to the partner page as ``client`` (through the real sign-in form)."""
    http = requests.Session()
    token = login_form_token(http, server.base_url)
    resp = http.post(f"{server.base_url}/portal/login", timeout=30,
                     data={"client_id": client[0], "client_secret": client[1], "login_csrf": token})
    assert resp.status_code == 200 and http.cookies.get("tg_portal"), resp.text
    return http


def new_item_body(**fields: Any) -> dict:
    body = {
        "partner_id": "P-ACME",
        "type": "task",
        "category": "document_delivery",
        "title": "Invoice file received",
        "body": "The file **INV-1.csv** arrived.",
        "severity": "medium",
        "requires_ack": True,
        "external_ref": f"test:{uuid.uuid4().hex}",
        "metadata": {"file_name": "INV-1.csv", "size": 120},
    }
    body.update(fields)
    return body


def assert_error(resp: requests.Response, status: int, code: str | None = None) -> dict:
    """The response has ``status`` and the contract's error shape (and ``code`` when given)."""
    assert resp.status_code == status, f"{resp.status_code} {resp.text}"
    assert resp.headers["content-type"].startswith("application/json")
    error = resp.json()["error"]
    assert set(error) >= {"code", "message", "request_id"}
    assert error["request_id"] == resp.headers["x-request-id"]
    if code is not None:
        assert error["code"] == code
    return error


@pytest.fixture(scope="session")
def enterprise(tg_sandbox) -> Api:
    return Api(tg_sandbox, tg_sandbox.enterprise)


@pytest.fixture(scope="session")
def acme(tg_sandbox) -> Api:
    return Api(tg_sandbox, tg_sandbox.partners["P-ACME"])


@pytest.fixture(scope="session")
def globex(tg_sandbox) -> Api:
    return Api(tg_sandbox, tg_sandbox.partners["P-GLOBEX"])
