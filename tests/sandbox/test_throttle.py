"""Failed sign-in throttle: the policy on an injected clock, then the real server's token endpoint and
partner page (each HTTP test on a sandbox of its own, so its lockouts touch nobody else)."""
from __future__ import annotations

import pytest
import requests

from include.tg_sandbox.throttle import LoginThrottle, ThrottlePolicy, Throttled
from tests.support.tg_sandbox import start_sandbox

from .conftest import assert_error, login_form_token


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fail(throttle: LoginThrottle, client_id: str = "acme-portal", address: str = "10.0.0.1") -> None:
    assert throttle.attempt(client_id, address, lambda: None) is None


def succeed(throttle: LoginThrottle, client_id: str = "acme-portal", address: str = "10.0.0.1") -> str:
    return throttle.attempt(client_id, address, lambda: "client")


def retry_after(throttle: LoginThrottle, client_id: str = "acme-portal", address: str = "10.0.0.1") -> int | None:
    return throttle.retry_after(client_id, address)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def throttle(clock):
    return LoginThrottle(ThrottlePolicy(free_failures=3, base_lockout_seconds=2, max_lockout_seconds=10,
                                        forget_after_seconds=60),
                         ThrottlePolicy(free_failures=6, base_lockout_seconds=2, max_lockout_seconds=10,
                                        forget_after_seconds=60), clock=clock)


def test_free_failures_then_doubling_lockouts_up_to_the_cap(throttle, clock):
    for _ in range(3):
        fail(throttle)
    assert retry_after(throttle) is None  # the free failures lock nothing
    lockouts = []
    for _ in range(5):
        fail(throttle)
        lockouts.append(retry_after(throttle))
        clock.now += lockouts[-1]  # wait exactly the Retry-After
        assert retry_after(throttle) is None
    assert lockouts == [2, 4, 8, 10, 10]


def test_retry_after_counts_down_in_whole_seconds(throttle, clock):
    for _ in range(4):
        fail(throttle)
    assert retry_after(throttle) == 2
    clock.now += 1.5
    assert retry_after(throttle) == 1  # 0.5 s left: rounded up, never 0
    clock.now += 0.5
    assert retry_after(throttle) is None


def test_a_success_resets_and_only_failures_count(throttle, clock):
    for _ in range(1000):  # the hook fetching tokens with the right secret, all day long
        assert succeed(throttle) == "client"
    for _ in range(50):  # failures that are each followed by a success never add up
        fail(throttle)
        fail(throttle)
        fail(throttle)
        assert succeed(throttle) == "client"
    assert retry_after(throttle) is None


def test_lockout_blocks_the_right_secret_too(throttle, clock):
    for _ in range(4):
        fail(throttle)
    checked = []
    with pytest.raises(Throttled) as locked:  # no oracle: while locked, the secret is not checked at all
        throttle.attempt("acme-portal", "10.0.0.1", lambda: checked.append(1) or "client")
    assert locked.value.retry_after == 2 and checked == []


def test_failures_are_forgotten_after_a_quiet_while(throttle, clock):
    for _ in range(3):
        fail(throttle)
    clock.now += 61
    fail(throttle)  # the first failure of a new series: still free
    assert retry_after(throttle) is None


def test_client_id_is_locked_from_every_address(throttle):
    for n in range(4):
        fail(throttle, address=f"10.0.0.{n}")  # a spread-out guesser
    assert retry_after(throttle, address="10.9.9.9") == 2
    assert retry_after(throttle, client_id="globex-portal", address="10.9.9.9") is None


def test_address_is_locked_for_every_client_id(throttle):
    for n in range(7):
        fail(throttle, client_id=f"guess-{n}")  # one failure per id: no client key reaches its limit
    assert retry_after(throttle, client_id="enterprise-demo") == 2
    assert retry_after(throttle, client_id="enterprise-demo", address="10.0.0.2") is None


def test_unknown_ids_lock_like_known_ones_and_the_table_stays_bounded(clock):
    throttle = LoginThrottle(ThrottlePolicy(free_failures=1), ThrottlePolicy(free_failures=10**9), clock=clock,
                             max_keys=100)
    fail(throttle, client_id="no-such-client")
    fail(throttle, client_id="no-such-client")
    assert retry_after(throttle, client_id="no-such-client") == 1  # a lockout does not tell which ids exist
    for n in range(1000):
        fail(throttle, client_id=f"spray-{n}", address="10.0.0.1")
    assert len(throttle._records) <= 100
    fail(throttle, client_id="x" * 1_000_000)  # kept as a digest, not a megabyte key
    assert max(len(key[1]) for key in throttle._records) < 300


# -- over HTTP ----------------------------------------------------------------------------------------

def token_post(server, client_id: str, secret: str, **headers) -> requests.Response:
    return requests.post(f"{server.base_url}/tenants/{server.tenant_id}/oauth2/token", timeout=30, headers=headers,
                         data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret})


# Lockouts of 10 minutes: within one test nothing expires, whatever the machine's load.
STRICT = {"login_free_failures": 2, "login_lockout_seconds": 600}


def test_token_endpoint_answers_429_with_retry_after_after_the_free_failures(tmp_path):
    with start_sandbox(tmp_path, **STRICT) as server:
        client_id, secret = server.enterprise
        for _ in range(200):  # right secrets: never throttled
            assert token_post(server, client_id, secret).status_code == 200
        for _ in range(3):
            assert_error(token_post(server, client_id, "guess"), 401, "invalid_client")
        locked = token_post(server, client_id, "guess")
        error = assert_error(locked, 429, "rate_limited")
        assert 1 <= int(locked.headers["retry-after"]) <= 600
        assert secret not in error["message"]
        assert_error(token_post(server, client_id, secret), 429)  # locked: the right secret waits too
        # Another client from the same address is not locked (the address allows 4x as many failures).
        partner_id, partner_secret = server.partners["P-ACME"]
        assert token_post(server, partner_id, partner_secret).status_code == 200


def test_one_address_guessing_many_ids_is_locked_and_x_forwarded_for_does_not_help(tmp_path):
    with start_sandbox(tmp_path, **STRICT) as server:
        for n in range(9):  # the address allows 4 x 2 = 8 free failures
            assert_error(token_post(server, f"guess-{n}", "x"), 401)
        assert_error(token_post(server, "guess-last", "x"), 429)
        partner_id, partner_secret = server.partners["P-ACME"]
        assert_error(token_post(server, partner_id, partner_secret, **{"X-Forwarded-For": "203.0.113.7"}), 429)


def test_portal_sign_in_shares_the_throttle_and_answers_429(tmp_path):
    with start_sandbox(tmp_path, **STRICT) as server:
        partner_id, partner_secret = server.partners["P-ACME"]
        for _ in range(3):  # failures at the token endpoint ...
            assert_error(token_post(server, partner_id, "guess"), 401)
        browser = requests.Session()
        token = login_form_token(browser, server.base_url)
        resp = browser.post(f"{server.base_url}/portal/login", timeout=30, allow_redirects=False,
                            data={"client_id": partner_id, "client_secret": partner_secret, "login_csrf": token})
        assert resp.status_code == 429  # ... lock the partner page's sign-in for that client too
        assert 1 <= int(resp.headers["retry-after"]) <= 600
        assert "Too many failed sign-ins" in resp.text and "tg_portal" not in resp.cookies


def test_portal_wrong_secrets_count(tmp_path):
    with start_sandbox(tmp_path, **STRICT) as server:
        partner_id, partner_secret = server.partners["P-ACME"]
        browser = requests.Session()
        answers = []
        for _ in range(4):
            token = login_form_token(browser, server.base_url)
            answers.append(browser.post(f"{server.base_url}/portal/login", timeout=30, allow_redirects=False,
                                        data={"client_id": partner_id, "client_secret": "guess",
                                              "login_csrf": token}).status_code)
        assert answers == [303, 303, 303, 429]
        assert_error(token_post(server, partner_id, partner_secret), 429)
