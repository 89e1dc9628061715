"""Fault injection: rates roughly honoured, 5xx/429 before any work, answers dropped after the commit,
latency that does not block other requests; never on /healthz, /_sandbox or /portal."""
from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.support.tg_sandbox import start_sandbox

from .conftest import Api, assert_error, new_item_body


def test_error_rate_is_roughly_honoured(tg_faults_cleared, enterprise):
    tg_faults_cleared.set_faults(error_rate=0.3, seed=11)
    statuses = [enterprise.http.get(enterprise.items_url, params={"limit": 1}).status_code for _ in range(300)]
    share = statuses.count(503) / len(statuses)
    assert 0.2 < share < 0.4, share
    assert set(statuses) == {200, 503}


def test_faults_answer_before_any_work(tg_faults_cleared, enterprise):
    body = new_item_body()
    tg_faults_cleared.set_faults(error_rate=1.0)
    resp = enterprise.http.post(enterprise.items_url, json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
    assert_error(resp, 503, "sandbox_fault")
    tg_faults_cleared.set_faults(rate_limit_rate=1.0, retry_after_seconds=7)
    resp = enterprise.http.post(enterprise.items_url, json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
    assert_error(resp, 429, "rate_limited")
    assert resp.headers["retry-after"] == "7"
    tg_faults_cleared.clear_faults()
    assert enterprise.list_all(external_ref=body["external_ref"]) == []


def test_token_endpoint_gets_faults_too(tg_faults_cleared):
    tg_faults_cleared.set_faults(rate_limit_rate=1.0, retry_after_seconds=2)
    with pytest.raises(requests.HTTPError) as info:
        tg_faults_cleared.token(*tg_faults_cleared.enterprise)
    assert info.value.response.status_code == 429


def test_dropped_after_commit_leaves_a_committed_item_and_no_answer(tg_faults_cleared, enterprise):
    body, key = new_item_body(), uuid.uuid4().hex
    tg_faults_cleared.set_faults(drop_after_commit_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        enterprise.http.post(enterprise.items_url, json=body, headers={"Idempotency-Key": key}, timeout=10)
    # Reads are never dropped.
    assert enterprise.http.get(enterprise.items_url, params={"limit": 1}).status_code == 200
    tg_faults_cleared.clear_faults()
    found = enterprise.list_all(external_ref=body["external_ref"])
    assert len(found) == 1, "the write was not committed"
    # The client's recovery: the same key and body replay the committed item.
    replay = enterprise.http.post(enterprise.items_url, json=body, headers={"Idempotency-Key": key})
    assert replay.status_code == 200 and replay.json()["id"] == found[0]["id"]


def test_drop_rate_is_roughly_honoured(tg_faults_cleared, enterprise):
    tg_faults_cleared.set_faults(drop_after_commit_rate=0.5, seed=3)
    tag = uuid.uuid4().hex
    dropped = 0
    for _ in range(60):
        try:
            requests.post(enterprise.items_url, json=new_item_body(metadata={"tag": tag}), timeout=10,
                          headers={"Idempotency-Key": uuid.uuid4().hex, **enterprise.http.headers})
        except requests.ConnectionError:
            dropped += 1
    tg_faults_cleared.clear_faults()
    assert 15 <= dropped <= 45, dropped
    created = [i for i in enterprise.list_all(limit=200, partner_id="P-ACME") if i["metadata"].get("tag") == tag]
    assert len(created) == 60


def test_latency_does_not_block_other_requests(tg_faults_cleared, enterprise):
    tg_faults_cleared.set_faults(latency_ms=400)
    started = time.perf_counter()
    assert enterprise.http.get(enterprise.items_url, params={"limit": 1}).status_code == 200
    assert time.perf_counter() - started >= 0.4
    headers = dict(enterprise.http.headers)

    def get(_):
        return requests.get(enterprise.items_url, params={"limit": 1}, headers=headers, timeout=30).status_code

    started = time.perf_counter()
    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(get, range(20)))
    elapsed = time.perf_counter() - started
    assert statuses == [200] * 20
    # One after another they would take 8 s; the sleeps overlap.
    assert elapsed < 4.0, elapsed


def test_slow_rate_delays_a_share(tg_faults_cleared, enterprise):
    tg_faults_cleared.set_faults(slow_rate=0.5, slow_ms=300, seed=5)
    times = []
    for _ in range(20):
        started = time.perf_counter()
        enterprise.http.get(enterprise.items_url, params={"limit": 1})
        times.append(time.perf_counter() - started)
    slow = sum(t >= 0.3 for t in times)
    assert 3 <= slow <= 17, times


def test_faults_never_touch_health_admin_or_portal(tg_faults_cleared):
    tg_faults_cleared.set_faults(error_rate=1.0, drop_after_commit_rate=1.0)
    base = tg_faults_cleared.base_url
    for _ in range(10):
        assert requests.get(base + "/healthz").status_code == 200
        assert requests.get(base + "/portal/").status_code == 200
        assert requests.get(base + "/_sandbox/faults", headers={"X-Sandbox-Admin": tg_faults_cleared.admin_token}).status_code == 200
    assert requests.get(base + "/openapi.json").status_code == 200


def test_fault_settings_need_the_admin_token_and_valid_values(tg_faults_cleared):
    url = tg_faults_cleared.base_url + "/_sandbox/faults"
    assert_error(requests.put(url, json={"error_rate": 1}), 401)
    assert_error(requests.put(url, json={"error_rate": 1}, headers={"X-Sandbox-Admin": "guess"}), 401)
    assert_error(requests.get(url), 401)
    admin = {"X-Sandbox-Admin": tg_faults_cleared.admin_token}
    assert_error(requests.put(url, json={"error_rate": 2}, headers=admin), 400)
    assert_error(requests.put(url, json={"typo_rate": 0.1}, headers=admin), 400)
    assert requests.put(url, json={"slow_rate": 0.25, "slow_ms": 10}, headers=admin).json()["slow_rate"] == 0.25
    # PUT replaces: what is not named goes back to 0.
    settings = requests.put(url, json={"latency_ms": 1}, headers=admin).json()
    assert settings["slow_rate"] == 0 and settings["latency_ms"] == 1


def test_faults_from_command_line_flags(tmp_path):
    with start_sandbox(tmp_path, error_rate=1.0, retry_after_seconds=3, latency_ms=5, fault_seed=9) as server:
        settings = requests.get(server.base_url + "/_sandbox/faults", headers={"X-Sandbox-Admin": server.admin_token}).json()
        assert (settings["error_rate"], settings["retry_after_seconds"], settings["latency_ms"], settings["seed"]) == (1.0, 3, 5, 9)
        token_resp = requests.post(f"{server.base_url}/tenants/{server.tenant_id}/oauth2/token",
                                   data={"grant_type": "client_credentials", "client_id": server.enterprise[0],
                                         "client_secret": server.enterprise[1]})
        assert_error(token_resp, 503, "sandbox_fault")
        server.clear_faults()
        assert Api(server, server.enterprise).http.get(server.items_url()).status_code == 200
