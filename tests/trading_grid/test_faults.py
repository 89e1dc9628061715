"""The hook against a misbehaving TG: 503s, 429s with Retry-After, answers dropped after the commit."""
from __future__ import annotations

import uuid

import pytest

from tests.trading_grid.conftest import FAST_RETRIES, make_payload
from trading_grid.exceptions import TradingGridRetryExhausted
from trading_grid.hooks.trading_grid import RetryPolicy, TradingGridHook


def test_dropped_answer_after_commit_is_looked_up_not_posted_again(tg, hook):
    payload = make_payload()
    hook._get_token()  # before the faults, so only the POST is dropped
    tg.set_faults(drop_after_commit_rate=1.0)
    item, created = hook.create_item(payload)
    tg.clear_faults()
    assert created is True  # our own dropped attempt made it
    assert hook.stats["recovered"] == 1
    assert [i["id"] for i in hook.list_items(external_ref=payload["external_ref"])] == [item["id"]]


def test_dropped_comment_is_not_duplicated(tg, hook):
    item, _ = hook.create_item(make_payload())
    tg.set_faults(drop_after_commit_rate=1.0)
    comment, created = hook.add_comment(item["id"], "posted once even if the answer is lost", dedupe=False)
    tg.clear_faults()
    assert created
    bodies = [c["body"] for c in hook.list_comments(item["id"])]
    assert bodies.count("posted once even if the answer is lost") == 1


def test_retries_are_bounded(tg):
    tg.set_faults(error_rate=1.0)
    policy = RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.05, max_retry_time=10)
    with TradingGridHook(retry_policy=policy) as h:
        with pytest.raises(TradingGridRetryExhausted) as err:
            h.get_item("itm_whatever")
    assert "3 attempts" in str(err.value) and "HTTP 503" in str(err.value)
    assert h.stats["requests"] == 3


def test_retry_after_is_honoured_by_every_thread(tg):
    """One 429 with Retry-After: 1 closes the shared gate: no request of the hook goes out for a second."""
    import threading
    import time

    with TradingGridHook(retry_policy=FAST_RETRIES) as h:
        h._get_token()
        tg.set_faults(rate_limit_rate=1.0, retry_after_seconds=1)
        sent_at: list[float] = []
        answered_429: list[float] = []
        # Every request of the hook, whichever path sends it, goes through the session's urllib3 pool.
        pool = h.get_conn().get_adapter(tg.base_url).poolmanager.connection_from_url(tg.base_url)
        original = pool.urlopen

        def recording(*args, **kwargs):
            sent_at.append(time.monotonic())
            response = original(*args, **kwargs)
            if response.status == 429:
                answered_429.append(time.monotonic())
            return response

        pool.urlopen = recording  # observe the real requests; the HTTP stays real
        threading.Timer(0.3, tg.clear_faults).start()
        results = h.create_items([make_payload() for _ in range(4)], max_concurrency=4)
    assert all(created for _, created in results)
    # Once the first 429 is in, nothing else goes out until its Retry-After (1 s) passed; requests
    # already on the wire when it arrived are not the gate's to stop. (Ordering, not a time window.)
    first_429 = min(answered_429)
    sent_after = sorted(t - first_429 for t in sent_at if t > first_429)
    assert sent_after and all(t >= 1.0 - 0.01 for t in sent_after), sent_after


def test_1000_creates_with_30_percent_faults_give_exactly_1000_items(tg):
    tag = uuid.uuid4().hex[:8]
    payloads = [make_payload(subject=f"bulk-{tag}-{n:04d}") for n in range(1000)]
    with TradingGridHook(retry_policy=FAST_RETRIES) as h:
        h._get_token()
        t0 = h.create_item(make_payload(subject=f"bulk-{tag}-marker"))[0]["updated_at"]
        tg.set_faults(error_rate=0.10, rate_limit_rate=0.10, retry_after_seconds=0, drop_after_commit_rate=0.10, seed=7)
        results = h.create_items(payloads, max_concurrency=16)
        tg.clear_faults()
        assert len(results) == 1000
        ids = [item["id"] for item, _ in results]
        assert len(set(ids)) == 1000
        assert all(created for _, created in results)
        assert [item["external_ref"] for item, _ in results] == [p["external_ref"] for p in payloads]  # in order
        assert h.stats["retries"] > 150 and h.stats["recovered"] > 20, h.stats  # the faults did happen

        listed = [i for i in h.iter_items(updated_since=t0) if f"bulk-{tag}-" in i["external_ref"] and not i["external_ref"].endswith("marker:notify")]
    assert len(listed) == 1000
    assert {i["id"] for i in listed} == set(ids)
    assert len({i["external_ref"] for i in listed}) == 1000
